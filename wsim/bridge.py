"""The PyTorch bridge: the one place where torch tensors and Warp arrays meet.

A *tape program* is any object with

- ``device``: the Warp device it runs on,
- ``input_dtypes``: ``{name: warp dtype}`` for every input it accepts (``wp.float32``, ``wp.vec3``,
  ``wp.quat``, ``wp.mat33``...); a torch tensor of shape ``[..., k]`` becomes an array of ``k``-vectors,
- ``record(inputs) -> tuple[wp.array, ...]``: launches its kernels (recorded on the active ``wp.Tape``)
  reading the given input arrays and returns freshly allocated output arrays,
- optionally ``after_forward(outputs)``: a check run once after the forward pass (e.g. NaN detection).

:func:`run_tape_program` turns such a program into a differentiable torch operation: the forward pass
aliases the torch inputs as Warp arrays (``wp.from_torch``, zero-copy), runs the program on a tape and
returns the outputs as torch views of the Warp arrays (``wp.to_torch``, zero-copy). The backward pass
seeds the tape with the incoming gradients (``tape.backward(grads=...)``) and hands back the gradient
of every input. On CUDA the Warp work is issued on torch's current stream, so no host synchronisation
is needed between the two libraries.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import torch
import warp as wp


_TURN = threading.RLock()
_tapes = threading.local()
_per_thread = False  # whether per_thread_tape() has switched Warp over (at init_warp)


def per_thread_tape() -> bool:
    """Make Warp's active tape one per thread. Warp keeps one for the whole process (``runtime.tape``,
    set by ``with wp.Tape()`` and read by every ``wp.launch``), so a launch from one thread while another
    records would land on the other's tape. Replacing the attribute by a property over a
    ``threading.local`` gives each thread its own. False when this Warp keeps its tape elsewhere."""
    try:
        from warp._src import context
    except ImportError:
        return False
    global _per_thread
    runtime = context.runtime
    if _per_thread or runtime is None or "tape" not in vars(runtime):
        return _per_thread
    type(runtime).tape = property(lambda self: getattr(_tapes, "tape", None),
                                  lambda self, value: setattr(_tapes, "tape", value))
    _per_thread = True
    return True


def warp_turn(device: str):
    """Hold while Warp records or replays a tape. On the CPU, with per-thread tapes, threads
    (:mod:`wsim.sysid.lockstep`) run their Warp work at once (a CPU kernel releases the GIL); on CUDA,
    where the stream Warp launches on is one per device, or when Warp's tape could not be made per
    thread, they take turns."""
    if _per_thread and str(device).startswith("cpu"):
        return nullcontext()
    return _TURN


def stream_scope(device: str):
    if device.startswith("cuda"):
        return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(torch.device(device))))
    return nullcontext()


def to_warp(tensor: torch.Tensor, dtype=wp.float32, requires_grad: bool = False) -> wp.array:
    """Alias a torch tensor as a Warp array (zero-copy; a non-contiguous tensor is copied first).

    ``dtype`` is a Warp scalar, vector, quaternion or matrix type; for a vector type of length ``k``
    the tensor's trailing dimension(s) must match it (``[N, 3]`` for ``wp.vec3``, ``[N, 3, 3]`` for
    ``wp.mat33``). A 0-d tensor becomes an array of length 1.
    """
    tensor = tensor.detach()
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    if tensor.dtype != torch.float32 and dtype in (wp.float32, wp.vec2, wp.vec3, wp.vec4, wp.quat, wp.mat22, wp.mat33):
        tensor = tensor.float()
    tensor = tensor.contiguous()
    return wp.from_torch(tensor, dtype=dtype, requires_grad=requires_grad)


def to_torch(array: wp.array) -> torch.Tensor:
    """View a Warp array as a torch tensor (zero-copy); vectors become a trailing dimension."""
    return wp.to_torch(array, requires_grad=False)


class _TapeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, program, names, record_tape, *tensors):
        device = program.device
        inputs = {}
        for name, tensor in zip(names, tensors):
            inputs[name] = to_warp(tensor, program.input_dtypes[name], requires_grad=tensor.requires_grad)
        # A pass that no gradient will follow records no tape: the launches skip the tape's bookkeeping
        # and nothing keeps the intermediate states alive past the call.
        tape = wp.Tape() if record_tape else None
        with warp_turn(device), stream_scope(device):
            with tape if tape is not None else nullcontext():
                outputs = program.record(inputs)
            if hasattr(program, "after_forward"):
                program.after_forward(outputs)
        ctx.tape = tape
        ctx.names = names
        ctx.inputs = inputs
        ctx.outputs = outputs
        ctx.device = device
        ctx.shapes = [t.shape for t in tensors]
        return tuple(to_torch(out) for out in outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        tape = ctx.tape
        seeds = {}
        for out, grad in zip(ctx.outputs, grad_outputs):
            if grad is None:
                continue
            seeds[out] = to_warp(grad, out.dtype)
        with warp_turn(ctx.device), stream_scope(ctx.device):
            tape.zero()
            if seeds:
                tape.backward(grads=seeds)
        grads = []
        for name, shape in zip(ctx.names, ctx.shapes):
            array = ctx.inputs[name]
            if array.grad is None or not seeds:
                grads.append(None)
            else:
                grads.append(to_torch(array.grad).clone().reshape(shape))
        # The tape holds every intermediate state; drop it as soon as its gradients are out.
        ctx.tape = None
        ctx.inputs = None
        ctx.outputs = None
        return (None, None, None, *grads)


def run_tape_program(program, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Run a tape program on ``inputs`` as one differentiable torch operation (see module docstring).

    Inputs that require grad receive gradients; outputs alias Warp memory (no copy). Each call records
    a fresh tape, so two forward passes may be alive at the same time; under ``torch.no_grad()``, or
    when no input requires grad, nothing is recorded.
    """
    unknown = sorted(set(inputs) - set(program.input_dtypes))
    if unknown:
        raise KeyError(f"unknown input(s) {unknown}; this program accepts {sorted(program.input_dtypes)}")
    names = tuple(inputs)
    record_tape = torch.is_grad_enabled() and any(inputs[n].requires_grad for n in names)
    return _TapeFunction.apply(program, names, record_tape, *(inputs[n] for n in names))

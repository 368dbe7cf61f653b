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

:class:`GraphedProgram` runs a program's forward and backward passes as two captured Warp graphs
(``wp.ScopedCapture``: CUDA graphs on a GPU, a replayed operation stream on the CPU), captured once on
buffers that stay allocated and replayed by every later call: no Python per launch.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager, nullcontext

import torch
import warp as wp


_TURN = threading.RLock()
_tapes = threading.local()
_per_thread = False  # whether per_thread_tape() has switched Warp over (at init_warp)
_paused = [0]  # how many captures_paused() scopes are open (guarded by _PAUSE)
_PAUSE = threading.Lock()


@contextmanager
def captures_paused():
    """While open, no :class:`GraphedProgram` captures: a call that would (new input names or shapes)
    runs on a tape instead, with the same results. Warp 1.19 records a CPU capture globally
    (``runtime._apic_capture``), so a launch from another thread during a capture would land in the
    graph; threads that compute at once (:mod:`wsim.sysid.lockstep`) open this."""
    with _PAUSE:
        _paused[0] += 1
    try:
        yield
    finally:
        with _PAUSE:
            _paused[0] -= 1


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
                # no copy: the gradient buffers were allocated for this call (to_warp of a detached
                # tensor) and the tape that could zero them is dropped below; the view keeps them alive
                grads.append(to_torch(array.grad).reshape(shape))
        # The tape holds every intermediate state; drop it as soon as its gradients are out.
        ctx.tape = None
        ctx.inputs = None
        ctx.outputs = None
        return (None, None, None, *grads)


class GraphedProgram:
    """A tape program (module docstring) whose passes are captured as Warp graphs and replayed.

    The first call with a given set of input names and shapes runs the program once as usual (loading
    its kernels), then captures its forward pass (``program.record`` on a tape: the buffers it allocates
    are allocated once, and their zero-fill is part of the graph, so every replay starts as a fresh
    record does) and the tape's backward pass into two graphs. Every later call copies its inputs into
    the captured input buffers and replays; other input names or shapes capture again (one capture is
    kept). Results and gradients equal the tape program's (bit for bit on the CPU: the same kernels in
    the same order). The buffers are shared by all calls, so a backward pass must come before the next
    forward pass; one that comes later raises instead of returning the gradients of another call. Not
    for concurrent use from several threads.
    """

    def __init__(self, program):
        self.program = program
        self.device = program.device
        self.input_dtypes = program.input_dtypes
        self.key = None  # ((name, shape), ...) the graphs were captured for
        self.generation = 0  # forward replays so far
        self.captures = 0  # how many times the graphs were (re)captured
        self.backed = False  # whether the last forward replay was differentiated already
        self.failed: str | None = None  # why capture failed (the calls then run on tapes)

    def _capture(self, names: tuple, tensors: tuple, key: tuple) -> None:
        program, device = self.program, self.device
        # every float input gets a gradient: one capture serves calls with and without requires_grad
        # fresh tensors with standard strides (an expanded size-1 tensor keeps stride 0 through .contiguous())
        self.tensors = {n: torch.empty(t.shape, dtype=torch.float32 if t.is_floating_point() else t.dtype,
                                       device=t.device).copy_(t.detach()) for n, t in zip(names, tensors)}
        self.inputs = {n: to_warp(t, self.input_dtypes[n], requires_grad=t.is_floating_point())
                       for n, t in self.tensors.items()}
        warm = wp.Tape()  # loads every forward and adjoint kernel outside the capture
        with warm:
            outputs = program.record(self.inputs)
        warm.backward(grads={out: wp.ones_like(out) for out in outputs})
        self.tape = wp.Tape()
        with wp.ScopedCapture(device=device) as forward:
            with self.tape:
                self.outputs = program.record(self.inputs)
        self.seeds = [wp.zeros_like(out) for out in self.outputs]
        with wp.ScopedCapture(device=device) as backward:
            # the other gradients start at zero anyway: the forward replay zero-fills every buffer (and its
            # gradient) that the captured record allocated, as a fresh record would
            for array in self.inputs.values():
                if array.grad is not None:
                    array.grad.zero_()
            self.tape.backward(grads=dict(zip(self.outputs, self.seeds)))
        self.forward_graph, self.backward_graph = forward.graph, backward.graph
        self.key = key
        self.captures += 1

    def ready(self, names: tuple, tensors: tuple) -> bool:
        """Capture for these inputs unless captured already; False (with a warning, once) where this
        Warp cannot capture the program here, and the calls then run on tapes; False, for this call only,
        where a capture is needed while :func:`captures_paused` is open."""
        key = tuple((n, tuple(t.shape)) for n, t in zip(names, tensors))
        if self.failed is None and key != self.key:
            if _paused[0]:
                return False  # this call runs on a tape; a later one, outside the pause, captures
            try:
                with warp_turn(self.device), stream_scope(self.device):
                    self._capture(names, tensors, key)
            except (RuntimeError, NotImplementedError) as error:
                self.failed = f"{type(error).__name__}: {error}"
                warnings.warn(f"graph capture is not available here ({self.failed}); rollouts run on tapes",
                              RuntimeWarning, stacklevel=3)
        return self.failed is None

    def forward(self, names: tuple, tensors: tuple) -> list:
        """Replay the forward pass on ``tensors`` (captured by :meth:`ready`); returns the program's
        (shared) output arrays."""
        for name, tensor in zip(names, tensors):
            self.tensors[name].copy_(tensor.detach())
        wp.capture_launch(self.forward_graph)
        self.generation += 1
        self.backed = False  # the state gradients are zero (the replay's zero-fill) until a backward pass
        if hasattr(self.program, "after_forward"):
            self.program.after_forward(self.outputs)
        return self.outputs

    def backward(self, generation: int, grads: tuple, names: tuple) -> list:
        """Replay the backward pass seeded with ``grads`` (torch, one per output, None for none);
        returns the gradient of every input in ``names`` as a torch tensor."""
        if generation != self.generation or self.backed:
            raise RuntimeError("a graphed rollout's backward pass must follow its own forward pass, once: "
                               "another rollout ran on the same buffers, or this one was differentiated "
                               "already; run backward before the next rollout, or do without graphs")
        self.backed = True
        for seed, grad in zip(self.seeds, grads):
            to_torch(seed).copy_(grad.reshape(to_torch(seed).shape) if grad is not None else 0.0)
        wp.capture_launch(self.backward_graph)
        return [to_torch(self.inputs[n].grad).clone().reshape(self.tensors[n].shape) for n in names]


class _GraphFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graphed, names, *tensors):
        with warp_turn(graphed.device), stream_scope(graphed.device):
            outputs = graphed.forward(names, tensors)
        ctx.graphed, ctx.generation, ctx.names = graphed, graphed.generation, names
        return tuple(to_torch(out).clone() for out in outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        graphed = ctx.graphed
        with warp_turn(graphed.device), stream_scope(graphed.device):
            grads = graphed.backward(ctx.generation, grad_outputs, ctx.names)
        return (None, None, *(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad[2:])))


def run_tape_program(program, inputs: dict[str, torch.Tensor],
                     graphed: GraphedProgram | None = None) -> tuple[torch.Tensor, ...]:
    """Run a tape program on ``inputs`` as one differentiable torch operation (see module docstring).

    Inputs that require grad receive gradients; outputs alias Warp memory (no copy). Each call records
    a fresh tape, so two forward passes may be alive at the same time; under ``torch.no_grad()``, or
    when no input requires grad, nothing is recorded. With ``graphed`` (the program's
    :class:`GraphedProgram`) the call replays its captured graphs instead, and the outputs are copies.
    """
    unknown = sorted(set(inputs) - set(program.input_dtypes))
    if unknown:
        raise KeyError(f"unknown input(s) {unknown}; this program accepts {sorted(program.input_dtypes)}")
    names = tuple(inputs)
    if graphed is not None and graphed.ready(names, tuple(inputs[n] for n in names)):
        return _GraphFunction.apply(graphed, names, *(inputs[n] for n in names))
    record_tape = torch.is_grad_enabled() and any(inputs[n].requires_grad for n in names)
    return _TapeFunction.apply(program, names, record_tape, *(inputs[n] for n in names))

"""Gradient checkpointing of :class:`wsim.simulation.Simulation` rollouts (``checkpoint_every=K``).

The single tape keeps every physics step's State (values and adjoints), memory linear in
``frames * substeps``. Here the rollout is cut into segments of ``K`` frame intervals: the forward pass
keeps only the State at each segment start (plus the vertex output), and the backward pass re-simulates
one segment at a time on a fresh tape, seeded with the gradient of that segment's vertices and the
adjoint of its end State handed back by the later segment. The step kernels, their order and the
float32 accumulation of every adjoint are the single tape's, so outputs and gradients match it (bit for
bit on CPU), at the price of a second forward pass. The frame states are replayed from the saved starts. These functions drive the Simulation's own step
machinery (``_allocate``, ``_initialise``, ``_load``, ``_advance``), so both paths launch the same kernels."""

from __future__ import annotations

import numpy as np
import torch
import warp as wp

from .bridge import stream_scope, to_torch, to_warp, warp_turn
from .errors import SimulationError

# The fields of a State carried from one step to the next; the force accumulators (``*_f``, ``body_t``)
# start at zero every step, so a segment restarts from these alone.
CARRIED = ("particle_q", "particle_qd", "body_q", "body_r", "body_v", "body_w", "body_l")


def checkpointed_forward(sim, params: dict) -> wp.array:
    """The forward pass of a checkpointed rollout, on no tape: the vertices of every frame; saves the
    State at every segment start and runs the runaway check segment by segment."""
    segments = sim._segments()
    longest = max(last - first for first, last in segments)
    buffers = sim._allocate(longest * sim.substeps + 1, requires_grad=False)
    vertices = wp.zeros((sim.frames, sim.model.vertex_count), dtype=wp.vec3, device=sim.device)
    sim._bad_step = sim._new_flag()
    sim.last_buffers = None
    sim._last_params = params
    sim._runaway_message, sim._runaway_ratios = None, None
    starts, end = [], None
    for first, last in segments:
        sim._zero_forces(buffers)
        row0 = sim._row(buffers, 0)
        if first == 0:
            sim._initialise(params, row0)
        else:
            sim._load(end, row0)
        starts.append({name: wp.clone(getattr(row0, name)) for name in CARRIED if getattr(row0, name) is not None})
        final = sim._advance(params, buffers, first, last, vertices[first:last], sim._bad_step)
        if last == sim.frames - 1:
            sim._write_vertices(final, vertices[last])
        # the next segment starts from this end State (a row of the same buffers, read before reuse)
        end = {name: getattr(final, name) for name in starts[-1]}
        _check_segment_runaway(sim, params, buffers, first, last, starts[0])
    sim._segment_starts, sim._last_segments = starts, segments
    return vertices

def _check_segment_runaway(sim, params, buffers, first, last, initial) -> None:
    if not (sim.check_runaway and sim.steps) or sim._runaway_message is not None:
        return
    rows = (last - first) * sim.substeps + 1
    views = {name: to_torch(array)[: rows] for name, array in buffers.items() if array is not None}
    if first == 0:
        message = sim.runaway_check().check(params, views)
    else:
        # row 0 of the buffers repeats the previous segment's last row: judge only the new rows
        views = {name: value[1:] for name, value in views.items()}
        message = sim.runaway_check().check(params, views, initial=initial, first_row=first * sim.substeps + 1)
    ratios = sim.runaway_check().last_ratios
    sim._runaway_ratios = ratios if sim._runaway_ratios is None else [
        torch.maximum(a, b) for a, b in zip(sim._runaway_ratios, ratios)]
    sim._runaway_message = message

def checkpointed_backward(sim, params: dict, inputs: dict, grad_vertices: torch.Tensor, segments: list,
                           starts: list) -> None:
    """Fill the ``.grad`` of every input array by re-simulating the segments last to first, each on
    its own tape. The parameter adjoints accumulate across the tapes in the single tape's order (no
    per-segment partial sums), which keeps them equal to its gradients to the last bit on CPU."""
    longest = max(last - first for first, last in segments)
    buffers = sim._allocate(longest * sim.substeps + 1, requires_grad=True)
    scratch_flag = sim._new_flag()
    for array in inputs.values():
        if array.grad is not None:
            array.grad.zero_()
    end_adjoint = None
    for index in reversed(range(len(segments))):
        first, last = segments[index]
        final_frame = last == sim.frames - 1
        sim._zero_forces(buffers)
        for array in buffers.values():
            if array is not None:
                array.grad.zero_()
        count = last - first + (1 if final_frame else 0)
        vertices = wp.zeros((count, sim.model.vertex_count), dtype=wp.vec3, device=sim.device,
                            requires_grad=True)
        start = None
        tape = wp.Tape()
        with tape:
            row0 = sim._row(buffers, 0)
            if first == 0:
                sim._initialise(params, row0)
            else:
                start = {name: wp.clone(array, requires_grad=True) for name, array in starts[index].items()}
                sim._load(start, row0)
            final = sim._advance(params, buffers, first, last, vertices, scratch_flag)
            if final_frame:
                sim._write_vertices(final, vertices[count - 1])
        seeds = {vertices: to_warp(grad_vertices[first:first + count], wp.vec3)}
        if end_adjoint is not None:
            seeds.update({getattr(final, name): adjoint for name, adjoint in end_adjoint.items()})
        tape.backward(grads=seeds)
        end_adjoint = None if start is None else {name: array.grad for name, array in start.items()}
        # dropped, not reset: Tape.reset() would zero the parameter adjoints accumulated so far
        del tape, seeds, vertices, final


def after_checkpointed_forward(sim) -> None:
    sim._check_nan()
    if sim._runaway_ratios is not None:
        sim.runaway_check().last_ratios = sim._runaway_ratios
    if sim._runaway_message is not None:
        raise SimulationError(sim._runaway_message)


def replayed_frame_states(sim) -> dict[str, np.ndarray]:
    """The frame states of a checkpointed rollout, re-simulated from its saved segment starts (on
    CUDA, where contact forces are summed by atomics in no fixed order, they may differ from the
    rollout's by float32 round-off)."""
    segments = sim._last_segments
    longest = max(last - first for first, last in segments)
    buffers = sim._allocate(longest * sim.substeps + 1, requires_grad=False)
    flag = sim._new_flag()
    frames = {name: [] for name in sim._segment_starts[0]}
    with stream_scope(sim.device):
        for (first, last), start in zip(segments, sim._segment_starts):
            sim._zero_forces(buffers)
            sim._load(start, sim._row(buffers, 0))
            sim._advance(sim._last_params, buffers, first, last, None, flag)
            final_frame = last == sim.frames - 1
            rows = slice(0, (last - first) * sim.substeps + (1 if final_frame else 0), sim.substeps)
            for name in frames:
                frames[name].append(to_torch(buffers[name])[rows].cpu().numpy().copy())  # the buffers are reused
    return {name: np.concatenate(parts) for name, parts in frames.items()}


class CheckpointedRollout(torch.autograd.Function):
    """``Simulation.rollout`` with gradient checkpointing (see the module docstring): the same contract
    as :func:`wsim.bridge.run_tape_program`, without a tape over the whole rollout."""

    @staticmethod
    def forward(ctx, sim, names, *tensors):
        inputs = {name: to_warp(tensor, sim.input_dtypes[name], requires_grad=tensor.requires_grad)
                  for name, tensor in zip(names, tensors)}
        params = dict(sim._defaults)
        params.update(inputs)
        with warp_turn(sim.device), stream_scope(sim.device):
            vertices = checkpointed_forward(sim, params)
            after_checkpointed_forward(sim)
        # What the backward pass needs; the Simulation's own copies are replaced by its next rollout.
        ctx.sim, ctx.names, ctx.inputs, ctx.params = sim, names, inputs, params
        ctx.starts, ctx.segments = sim._segment_starts, sim._last_segments
        ctx.shapes = [tensor.shape for tensor in tensors]
        return to_torch(vertices)

    @staticmethod
    def backward(ctx, grad_vertices):
        sim = ctx.sim
        if grad_vertices is None or not any(array.requires_grad for array in ctx.inputs.values()):
            return (None, None, *([None] * len(ctx.names)))
        with warp_turn(sim.device), stream_scope(sim.device):
            checkpointed_backward(sim, ctx.params, ctx.inputs, grad_vertices.contiguous(), ctx.segments, ctx.starts)
        grads = []
        for name, shape in zip(ctx.names, ctx.shapes):
            array = ctx.inputs[name]
            grads.append(None if array.grad is None else to_torch(array.grad).clone().reshape(shape))
        ctx.inputs = ctx.params = ctx.starts = None
        return (None, None, *grads)

"""System-identification instances in lockstep: each runs in its own thread, exactly as alone, while
every rollout any of them asks for is served by one batched rollout (:mod:`wsim.batch`).

A thread that needs a rollout hands in its resolved parameters and waits; when no thread of the batch
is left computing (each waits for a rollout, for its gradient, or has finished its optimisation), the
last one to arrive runs one forward pass for every waiting request (or one backward pass for every
waiting gradient) and wakes them all. Between rollouts each thread renders, computes its loss and
steps its optimiser on its own, so optimisers with different step counts, line searches, restarts
and escalation rounds all work unchanged; instances that ask at the same time share the launches.
The physics a batch computes is bit for bit a single rollout's on the CPU, so a batched run gives
the same estimates as the instances run one by one.

A request alone (the others busy elsewhere or finished), a request that sets a global parameter
(``gravity``: one value for a whole batch), or a batch that could not be formed, runs the instance's own
Simulation in its own thread, as without a batch.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext

import torch
import warp as wp

from ..batch import BatchedSimulation
from ..bridge import captures_paused, stream_scope, to_torch, to_warp, warp_turn
from ..parameters import PARAMETERS

ALONE = object()  # the answer "run this request on your own Simulation"


class _Record:
    """One batched forward pass that a gradient may follow: its tape, inputs and output, and which
    batch members (``members``, by index) it served."""

    def __init__(self, batch: BatchedSimulation, members: list[int], tape, inputs: dict, vertices):
        self.batch, self.members, self.tape, self.inputs, self.vertices = batch, members, tape, inputs, vertices
        self.grads: dict[int, dict] = {}

    def backward(self, items: list[tuple[int, torch.Tensor]]) -> None:
        """The gradients of every member in ``items`` ((position in the batch, d loss / d vertices))
        from one backward pass of the tape."""
        seed = torch.zeros(to_torch(self.vertices).shape, dtype=torch.float32, device=items[0][1].device)
        for k, grad in items:
            seed[:, self.batch._vertex_rows[k]] = grad.to(torch.float32)
        device = self.batch.simulation.device
        with warp_turn(device), stream_scope(device):
            self.tape.zero()
            self.tape.backward(grads={self.vertices: to_warp(seed, wp.vec3)})
        for k, _ in items:
            self.grads[self.members[k]] = {
                name: self.batch.member_part(name, k, to_torch(array.grad)).clone()
                for name, array in self.inputs.items() if array.grad is not None}


class _MemberGradient(torch.autograd.Function):
    """A member's share of a batched rollout: forward hands out its vertices; backward hands its
    gradient to the lockstep and waits for the batched backward pass."""

    @staticmethod
    def forward(ctx, lockstep, record, position, names, vertices, *tensors):
        ctx.lockstep, ctx.record, ctx.position, ctx.names = lockstep, record, position, names
        ctx.shapes = [t.shape for t in tensors]
        return vertices

    @staticmethod
    def backward(ctx, grad_vertices):
        grads = ctx.lockstep.gradient(ctx.record, ctx.position, grad_vertices)
        out = [grads[name].reshape(shape) if name in grads else None for name, shape in zip(ctx.names, ctx.shapes)]
        ctx.record = None
        return (None, None, None, None, None, *out)


class Member:
    """Stands in for one instance's Simulation inside :meth:`Lockstep.joined`: ``rollout`` goes
    through the lockstep; everything else is the instance's own Simulation."""

    def __init__(self, lockstep: Lockstep, index: int, simulation):
        self.lockstep, self.index, self.simulation = lockstep, index, simulation

    def __getattr__(self, name):
        return getattr(self.simulation, name)

    def rollout(self, params: dict | None = None, control=None) -> torch.Tensor:
        sim = self.simulation
        if control is not None:
            return sim.rollout(params, control)
        resolved = sim.resolve(dict(params or {}))
        if any(PARAMETERS[name].per == "global" for name in resolved):
            answer = self.lockstep.request(self.index, None, False)
        else:
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in resolved.values())
            answer = self.lockstep.request(self.index, {k: v.detach() for k, v in resolved.items()}, needs_grad)
        if answer is ALONE:
            return sim.rollout(params)
        vertices, record, position = answer
        if record is None or not torch.is_grad_enabled():
            return vertices
        names = tuple(resolved)
        return _MemberGradient.apply(self.lockstep, record, position, names, vertices,
                                     *(resolved[name] for name in names))


class Lockstep:
    """The lockstep of ``instances`` (:class:`wsim.sysid.instance.Instance`); one thread per instance
    calls :meth:`joined` around its optimisation and leaves when done. ``served`` counts the rollouts
    that ran batched (``batched``) and alone (``alone``), and the batched passes (``forward_passes``,
    ``backward_passes``)."""

    def __init__(self, instances: list, setup: list[float] | None = None, cores: int | None = None):
        """``setup``: the seconds each instance took to build (reported in its results); ``cores``: how
        many members compute at a time (default: the CPUs this process may use)."""
        self.instances = list(instances)
        # Members compute (render, loss, optimiser) in turns of at most `cores` at a time: more threads
        # than cores only fight over the GIL, which each Warp launch and torch operation releases and
        # takes back (measured, 8 instances on 2 cores: 1.33 cores busy for 36 s of CPU where one at a
        # time needed 29 s). A member holds a turn from when it joins to when it waits for the batch.
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._turns = threading.Semaphore(max(1, cores))
        self.setup = list(setup) if setup is not None else [0.0] * len(self.instances)
        self.simulations = [inst.sim for inst in self.instances]
        self._cond = threading.Condition()
        self._running = set(range(len(self.instances)))  # threads that are neither waiting nor finished
        self._requests: dict[int, tuple] = {}
        self._answers: dict[int, object] = {}
        self._deposits: list[tuple[_Record, int, torch.Tensor]] = []
        self._batches: dict[tuple, BatchedSimulation] = {}
        self._interrupted = False
        self.served = {"batched": 0, "alone": 0, "forward_passes": 0, "backward_passes": 0}

    @contextmanager
    def joined(self, index: int):
        """Route instance ``index``'s rollouts through the lockstep while the body runs; on exit (or
        when the thread never enters) it stops counting as a member the others wait for."""
        instance = self.instances[index]
        instance.simulator = Member(self, index, instance.sim)
        self._turns.acquire()
        try:
            yield
        finally:
            instance.simulator = instance.sim
            self.leave(index)
            self._turns.release()

    def leave(self, index: int) -> None:
        with self._cond:
            self._running.discard(index)
            self._serve_if_idle()

    def interrupt(self) -> None:
        """Make every waiting and later request raise KeyboardInterrupt in its thread."""
        with self._cond:
            self._interrupted = True
            for index in list(self._requests):
                self._answers[index] = KeyboardInterrupt()
                self._running.add(index)
            self._requests.clear()
            self._cond.notify_all()

    # -- waiting --------------------------------------------------------------------------------------
    def request(self, index: int, resolved: dict | None, needs_grad: bool):
        """Wait for the next batched forward pass; ALONE or ``(vertices, record or None, position)``."""
        with self._cond:
            if self._interrupted:
                raise KeyboardInterrupt
            self._requests[index] = (resolved, needs_grad)
            self._wait(lambda: index in self._answers, index)
            answer = self._answers.pop(index)
        self._turns.acquire()  # outside the condition: a member that holds a turn may need it
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def gradient(self, record: _Record, position: int, grad: torch.Tensor) -> dict:
        member = record.members[position]
        with self._cond:
            record.grads.pop(member, None)
            self._deposits.append((record, position, grad))
            self._wait(lambda: member in record.grads, member)
            grads = record.grads.pop(member)
        self._turns.acquire()
        return grads

    def _wait(self, ready, index: int) -> None:
        self._running.discard(index)
        self._serve_if_idle()  # the batched passes, if this was the last member computing
        self._turns.release()
        while not ready():
            self._cond.wait()

    def _serve_if_idle(self) -> None:
        """With every member waiting (or gone): serve all waiting gradients, then all waiting requests."""
        if self._running or not (self._requests or self._deposits):
            return
        deposits, self._deposits = self._deposits, []
        by_record: dict[int, list] = {}
        for record, position, grad in deposits:
            by_record.setdefault(id(record), [record, []])[1].append((position, grad))
        for record, items in by_record.values():
            record.backward(items)
            self.served["backward_passes"] += 1
        requests, self._requests = self._requests, {}
        if requests:
            self._answers.update(self._forward(requests))
        # the served threads count as computing from now on, not from when they wake: a flush must not
        # run before they have had their turn
        self._running.update(requests)
        self._running.update(record.members[position] for record, position, _ in deposits)
        self._cond.notify_all()

    # -- the batched forward pass -----------------------------------------------------------------------
    def _forward(self, requests: dict) -> dict:
        members = sorted(i for i, (resolved, _) in requests.items() if resolved is not None)
        answers = {i: ALONE for i in requests if i not in members}
        if len(members) < 2:
            answers.update({i: ALONE for i in members})
            self.served["alone"] += len(requests)
            return answers
        try:
            batch = self._batch(tuple(members))
            resolved = [requests[i][0] for i in members]
            inputs = batch.concatenate(resolved)
        except Exception:  # members that cannot share a batch run alone, and raise their own errors there
            self.served["alone"] += len(requests)
            return {i: ALONE for i in requests}
        needs_grad = any(requests[i][1] for i in members)
        sim = batch.simulation
        arrays = {name: to_warp(value, sim.input_dtypes[name], requires_grad=needs_grad)
                  for name, value in inputs.items()}
        tape = wp.Tape() if needs_grad else None
        with warp_turn(sim.device), stream_scope(sim.device), (tape if tape is not None else nullcontext()):
            (vertices,) = sim.record(arrays)
        errors = batch.check(resolved)
        record = _Record(batch, members, tape, arrays, vertices) if needs_grad else None
        per_scene = batch.split(to_torch(vertices))
        for position, index in enumerate(members):
            if position in errors:
                answers[index] = errors[position]
            else:
                answers[index] = (per_scene[position].clone(), record if requests[index][1] else None, position)
        self.served["batched"] += len(members)
        self.served["alone"] += len(requests) - len(members)
        self.served["forward_passes"] += 1
        return answers

    def _batch(self, members: tuple) -> BatchedSimulation:
        if members not in self._batches:
            self._batches[members] = BatchedSimulation([self.simulations[i] for i in members])
        return self._batches[members]


def run_batch(config, jobs: list[tuple], options) -> list[dict]:
    """Run the instances of ``jobs`` (``(seed, folder, fingerprint)``) in lockstep, one thread each;
    their results, as :func:`wsim.sysid.experiment.run_instance` returns them. Methods without an
    optimisation through the simulator (average, random, pybullet) run one after the other."""
    import time

    from ..harness import output_folder
    from .experiment import run_instance
    from .instance import Instance

    def one(seed, folder, stamp, **batch):
        return run_instance(config, seed, folder, options.device, options.base, options.resume, options.progress,
                            options.write_outputs, stamp=stamp, **batch)

    if config.method not in ("gradsim", "diffphysics") or len(jobs) < 2:
        return [one(*job) for job in jobs]
    instances, setup = [], []
    for seed, folder, stamp in jobs:
        started = time.perf_counter()
        instances.append(Instance(config, seed, output_folder(folder), options.device, options.base, stamp=stamp))
        setup.append(time.perf_counter() - started)
    lockstep = Lockstep(instances, setup)
    results: list = [None] * len(jobs)
    failures: list = [None] * len(jobs)

    def work(k: int) -> None:
        try:
            results[k] = one(*jobs[k], lockstep=lockstep, index=k)
        except BaseException as error:  # re-raised in the calling thread below
            failures[k] = error
        finally:
            lockstep.leave(k)

    threads = [threading.Thread(target=work, args=(k,), name=f"wsim-seed-{jobs[k][0]}", daemon=True)
               for k in range(len(jobs))]
    with captures_paused():  # the members' graphs were captured with their instances, above
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:  # only the main thread sees Ctrl-C: stop the members at their next rollout
            lockstep.interrupt()
            for thread in threads:
                thread.join()
            raise
    for failure in failures:
        if failure is not None:
            raise failure
    return results

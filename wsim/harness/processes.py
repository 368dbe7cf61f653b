"""The instances of an experiment in worker processes of this machine: ``wsim run EXP --instances N
--workers K``.

On a CPU one process computes one instance at a time on one core: Warp's CPU kernels are
single-threaded, and the Python between launches holds the GIL, so threads do not help (the lockstep of
``--batch`` shares launches, not cores). :class:`ProcessExecutor` runs up to ``workers`` instances at
once, each in a process of its own, and merges them into the same summary as a run here: 16 rigid-mass
instances on 2 cores take 1.5-1.6x less time than one after the other (``benchmarks/results/batch_rigid-mass.md``).
Ray (:mod:`wsim.harness.executor`) does the same over several machines; on one it costs more (1.34x).

* workers are started with ``spawn`` (a fork would copy Warp's and torch's threads and device state) and
  are kept for the whole run: each pays its imports and its Warp kernel loads once;
* each instance goes through :func:`wsim.harness.executor.run_task`, the body of a Ray task: the local code
  path, with resume and claims, writing into its folder of ``--out``;
* no more instances are handed out than there are workers, so that a worker that dies (killed, out of
  memory) takes down only what the pool was running (the pool then stops every worker): those instances run
  again in a fresh pool, up to ``retries`` times each, resuming from their checkpoints;
* torch's CPU threads are shared out (``cpus // workers`` per worker) unless ``OMP_NUM_THREADS`` is set;
* Ctrl-C (the driver's, or the terminal's, which reaches every worker) interrupts the running instances
  (each writes its ``interrupted`` results and keeps its checkpoint) and stops the run; an idle worker
  ignores it. A worker whose driver is gone (killed) exits within a second.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from ..errors import ConfigError
from .executor import CANCEL_WAIT_S, KILL_HOOK, RETRIES, WorkerLost, run_task
from .runner import CLAIM_POLL_S, Experiment, RunOptions, finished_result, progress_bar

_running = False  # in a worker: whether a task runs (Ctrl-C interrupts it) or the worker waits (ignored)


def _on_interrupt(signum, frame):
    global _running
    if _running:  # once: a second Ctrl-C must not break the writing of the interrupted results
        _running = False
        raise KeyboardInterrupt


def _exit_with(parent: int) -> None:
    """End this worker once its driver is gone (killed, say): an orphan would go on computing for no one."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _start_worker(threads: int | None) -> None:
    signal.signal(signal.SIGINT, _on_interrupt)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True, name="wsim-orphan-watch").start()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _call(fn, args):
    """``fn(*args)`` in a worker, interruptible by SIGINT while it runs."""
    global _running
    _running = True
    try:
        return fn(*args)
    finally:
        _running = False


class ProcessExecutor:
    """Runs the instances of :func:`wsim.harness.run_experiment` (and RISP's data shards, :meth:`map`) in
    ``workers`` local processes (see the module's docstring); ``progress``: a bar of instances done with the ETA."""

    def __init__(self, workers: int, retries: int = RETRIES, progress: bool = True):
        if int(workers) != workers or workers < 2:
            raise ConfigError(f"--workers must be an integer >= 2 for worker processes, got {workers}")
        self.workers, self.retries, self.progress = int(workers), int(retries), progress

    def _pool(self) -> ProcessPoolExecutor:
        threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // self.workers)
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(threads,))

    def _drive(self, calls: list, label: str, initial: int, done) -> None:
        """Run ``calls`` (``(index, fn, args_of(attempt), name)``), at most ``workers`` at a time; ``done(index,
        value, bar)`` takes each value and returns None, or a delay after which to make the call again."""
        queue = [(call, 0, 0.0) for call in calls]  # (call, attempt, not before)
        bar = progress_bar(initial + len(calls), label, initial=initial, enabled=self.progress)
        pool, pending = self._pool(), {}
        try:
            while queue or pending:
                now = time.monotonic()
                for item in [q for q in queue if q[2] <= now][:self.workers - len(pending)]:
                    queue.remove(item)
                    call, attempt, _ = item
                    pending[pool.submit(_call, call[1], call[2](attempt))] = (call, attempt)
                if not pending:
                    time.sleep(max(0.0, min(q[2] for q in queue) - now))
                    continue
                finished, _ = wait(list(pending), timeout=0.25, return_when=FIRST_COMPLETED)
                lost = []
                for future in finished:
                    call, attempt = pending.pop(future)
                    try:
                        value = future.result()
                    except BrokenProcessPool:
                        lost.append((call, attempt))
                        continue
                    again = done(call[0], value, bar)
                    if again is None:
                        bar.update(1)
                    else:
                        queue.append((call, 0, time.monotonic() + again))
                if lost:  # the pool stopped every worker: what they ran runs again, in a new pool
                    lost += pending.values()
                    pending.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    for call, attempt in lost:
                        if attempt >= self.retries:
                            raise WorkerLost(f"{call[3]}: its worker process died {attempt + 1} times; the finished "
                                             "results are kept in the output folder: continue with --resume")
                        bar.write(f"{call[3]}: a worker process died (its own, or another of the pool, which then "
                                  "stops them all); running it again, from its checkpoint if it wrote one "
                                  f"(retry {attempt + 1} of {self.retries})", file=sys.stderr)
                        queue.append((call, attempt + 1, 0.0))
                    pool = self._pool()
        except BaseException:
            self._stop(pool, pending)
            raise
        finally:
            bar.close()
        pool.shutdown()

    def _stop(self, pool: ProcessPoolExecutor, pending: dict) -> None:
        """Interrupt the running calls (each writes its interrupted results), wait a while, and stop the pool."""
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGINT)
            except (ProcessLookupError, TypeError):
                pass
        if pending:
            wait(list(pending), timeout=CANCEL_WAIT_S)
        pool.shutdown(wait=False, cancel_futures=True)

    def __call__(self, experiment: Experiment, config, jobs: list, options: RunOptions) -> list[dict]:
        started = time.time()
        results = [finished_result(folder / "results.json", stamp) if options.resume else None
                   for _, folder, stamp in jobs]
        worker_options = replace(options, progress=False)
        marker = os.environ.get(KILL_HOOK) or None
        calls = [(index, run_task, lambda attempt, job=job: (experiment, config, job, worker_options, attempt, started,
                                                               marker), f"seed {job[0]}")
                 for index, job in enumerate(jobs) if results[index] is None]
        waiting = []

        def done(index, result, bar):
            if result is None:  # another process holds its claim: ask again later
                if not waiting:
                    bar.write(f"waiting for seed {jobs[index][0]}, run by another process", file=sys.stderr)
                waiting.append(index)
                return CLAIM_POLL_S
            results[index] = result
            return None

        print(f"{self.workers} worker processes on {os.cpu_count()} CPU(s)", file=sys.stderr, flush=True)
        self._drive(calls, "instances", len(jobs) - len(calls), done)
        return results

    def map(self, fn, arguments: list[tuple], label: str) -> list:
        """``fn(*args)`` for every ``args`` of ``arguments`` in the workers, in order; a call whose worker dies
        runs again, up to ``retries`` times, so ``fn`` must be safe to repeat (a shard rewritten atomically is)."""
        values = [None] * len(arguments)

        def done(index, value, bar):
            values[index] = value
            return None

        calls = [(index, fn, lambda attempt, args=args: args, f"{label} {index}")
                 for index, args in enumerate(arguments)]
        self._drive(calls, label, 0, done)
        return values

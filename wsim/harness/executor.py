"""The instances of an experiment on a Ray cluster: ``wsim run EXP --instances N --executor ray``.

:class:`RayExecutor` is an executor of :func:`wsim.harness.run_experiment` (set with
:func:`wsim.harness.runner.executing`). Each Ray task runs exactly one instance through
:func:`wsim.harness.runner.run_job`, the code path of a local run, writing into the instance's folder
of the same ``--out``; the driver collects the results and :func:`~wsim.harness.run_experiment` builds
the summary from them as it does locally. So the workers must see ``--out`` (and the config's relative
paths) at the same path as the driver: true for the local cluster started on demand, a shared
filesystem for a cluster of several machines, where every node also needs the same wsim installed.

* the cluster: a local one (``ray.init``, ``workers`` CPUs, no dashboard, a small object store) started
  for the run and stopped after it, or an existing one at ``address`` (``auto``, ``HOST:PORT``,
  ``ray://HOST:PORT``); a Ray session already open in this process is used as it is;
* one CPU per task; one GPU per task when ``device`` is ``cuda`` (``cuda:N`` too: Ray picks the GPU), or
  ``auto`` on a cluster that has GPUs;
* a worker that dies mid-instance (killed, out of memory, its node lost) is retried up to ``retries``
  times; the retry resumes from the instance's checkpoint (files older than a run started without
  ``--resume`` are removed first: they are not this run's);
* ``resume``: finished instances are reused without a task; an instance claimed by another live process
  (two drivers on one ``--out``) is asked for again every :data:`~wsim.harness.runner.CLAIM_POLL_S`;
* Ctrl-C or an error cancels the running tasks (each writes its ``interrupted`` results and keeps its
  checkpoint) and stops; a worker lost more than ``retries`` times stops the run with an error.

Test hook: when ``WSIM_TEST_KILL_WORKER`` names a file path in the driver's environment, the first
attempt of every task watches its folder and, as soon as ``checkpoint.pt`` appears, creates that file
(exclusively) and kills its own worker process with SIGKILL; so exactly one worker dies mid-instance
per run (the file's existence says it happened). It exists for tests/test_executors.py only; the worker
processes of :mod:`wsim.harness.processes` honour it too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, WsimError
from .runner import CLAIM_POLL_S, Experiment, RunOptions, finished_result, progress_bar, run_job

KILL_HOOK = "WSIM_TEST_KILL_WORKER"
RETRIES = 3
OBJECT_STORE_BYTES = 128 * 1024 ** 2  # results are small JSON-like dicts; the outputs go to files
CANCEL_WAIT_S = 30.0  # how long cancelled tasks get to write their interrupted results
FORWARDED_ENV = ("OMP_NUM_THREADS",)  # and every WSIM_* variable: to the workers of an existing cluster


class WorkerLost(WsimError):
    """An instance's Ray worker died more often than the retries allow."""


def import_ray():
    """The ``ray`` module, or a :class:`ConfigError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, which is not installed: pip install 'wsim[ray]'") from None
    return ray


def _kill_when_checkpointed(folder: Path, marker: str, stop: threading.Event) -> None:
    """The test hook (see the module's docstring)."""
    def watch():
        while not stop.wait(0.02):
            if (folder / "checkpoint.pt").exists():
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return  # another worker died already in this run
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="wsim-test-kill").start()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A clear error, in seconds rather than Ray's minutes of retries, when nothing listens at HOST:PORT."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except ValueError:
        raise ConfigError(f"--address {address}: give auto, HOST:PORT or ray://HOST:PORT") from None
    except OSError as error:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({error.strerror or error}); start "
                          "one with `ray start --head` or check the address") from None


def run_task(experiment: Experiment, config, job: tuple, options: RunOptions, attempt: int, started: float,
             kill_marker: str | None = None) -> dict | None:
    """The body of a Ray task: instance ``job`` through :func:`run_job`. A retry (``attempt`` > 0)
    removes the claim of the worker that died, and what predates a run without resume, and then
    resumes from the checkpoint."""
    seed, folder, stamp = job
    if attempt > 0:
        (folder / "claimed.lock").unlink(missing_ok=True)
        if not options.resume:
            for path in [folder / "results.json", *folder.glob("*.pt")]:
                if path.is_file() and path.stat().st_mtime < started:
                    path.unlink(missing_ok=True)
        options = replace(options, resume=True)
    stop = threading.Event()
    if kill_marker and attempt == 0:
        _kill_when_checkpointed(folder, kill_marker, stop)
    try:
        return run_job(experiment, config, job, options)
    finally:
        stop.set()


class RayExecutor:
    """Runs the instances of :func:`wsim.harness.run_experiment` as Ray tasks (see the module's docstring).
    ``address``: an existing cluster (None: a local one of ``workers`` CPUs, default all of them);
    ``progress``: a bar of instances done / total with the ETA on stderr."""

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = RETRIES,
                 progress: bool = True):
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if workers is not None and address:
            raise ConfigError("--workers sizes the local Ray cluster; with --address the cluster decides")
        self.ray = import_ray()
        self.address, self.workers, self.retries, self.progress = address, workers, int(retries), progress

    def __call__(self, experiment: Experiment, config, jobs: list, options: RunOptions) -> list[dict]:
        ray = self.ray
        own = not ray.is_initialized()
        if own:
            self._start()
        try:
            return self._run(experiment, config, jobs, options)
        finally:
            if own:
                ray.shutdown()

    def map(self, fn, arguments: list[tuple], label: str) -> list:
        """``fn(*args)`` for every ``args`` of ``arguments`` as Ray tasks of one CPU each (RISP's data
        shards), in order; a task whose worker dies is run again by Ray, up to ``retries`` times, so
        ``fn`` must be safe to repeat (a shard rewritten atomically is)."""
        ray = self.ray
        own = not ray.is_initialized()
        if own:
            self._start()
        try:
            task = ray.remote(fn).options(num_cpus=1, max_retries=self.retries)
            refs = [task.remote(*args) for args in arguments]
            done, pending = {}, list(refs)
            bar = progress_bar(len(refs), label, enabled=self.progress)
            try:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    for ref in ready:
                        try:
                            done[ref] = ray.get(ref)
                        except ray.exceptions.RayTaskError as error:
                            cause = getattr(error, "cause", None)
                            if isinstance(cause, WsimError):
                                raise cause from None
                            raise
                        bar.update(1)
            except BaseException:
                self._cancel(pending)
                raise
            finally:
                bar.close()
            return [done[ref] for ref in refs]
        finally:
            if own:
                ray.shutdown()

    def _start(self) -> None:
        common = {"logging_level": logging.WARNING, "log_to_driver": True}
        if self.address:
            _check_reachable(self.address)
            env = {k: v for k, v in os.environ.items() if k.startswith("WSIM_") or k in FORWARDED_ENV}
            try:
                self.ray.init(address=self.address, runtime_env={"env_vars": env}, **common)
            except (ConnectionError, RuntimeError, ValueError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                hint = "" if "RAY_AUTH_MODE" in os.environ else (
                    "; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token and its token "
                    "(~/.ray/auth_token or RAY_AUTH_TOKEN) here too")
                raise ConfigError(f"--address {self.address}: cannot join a Ray cluster there ({reason}){hint}") from None
        else:
            self.ray.init(address="local", num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False,
                          object_store_memory=OBJECT_STORE_BYTES, **common)

    def _placement(self, device: str | None, gpus: float) -> tuple[int, str | None]:
        """(GPUs per task, the device name the task uses)."""
        name = "auto" if device is None else str(device).strip().lower()
        if name.startswith("cuda"):
            if not gpus:
                raise ConfigError(f"--device {device}: the Ray cluster has no GPU")
            return 1, "cuda"
        if name == "auto":
            return (1, "cuda") if gpus else (0, "cpu")
        return 0, device  # cpu (or a bad name, which the task reports as a config error)

    def _run(self, experiment: Experiment, config, jobs: list, options: RunOptions) -> list[dict]:
        ray = self.ray
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        gpus, device = self._placement(options.device, resources.get("GPU", 0))
        print(f"ray: {int(resources.get('CPU', 0))} CPU(s), {int(resources.get('GPU', 0))} GPU(s) on {nodes} "
              f"node(s) ({self.address or 'local cluster'}); {gpus} GPU(s) per instance", file=sys.stderr, flush=True)
        started = time.time()
        results = [finished_result(folder / "results.json", stamp) if options.resume else None
                   for _, folder, stamp in jobs]
        task = ray.remote(run_task).options(num_cpus=1, num_gpus=gpus, max_retries=0)
        worker_options = replace(options, progress=False, device=device)
        config_ref = ray.put(config)
        marker = os.environ.get(KILL_HOOK) or None
        pending: dict = {}

        def submit(index: int, attempt: int) -> None:
            ref = task.remote(experiment, config_ref, jobs[index], worker_options, attempt, started, marker)
            pending[ref] = (index, attempt)

        for index, result in enumerate(results):
            if result is None:
                submit(index, 0)
        died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.LocalRayletDiedError)
        later: dict = {}  # index -> when to ask again for an instance another process holds
        bar = progress_bar(len(jobs), "instances", initial=sum(r is not None for r in results), enabled=self.progress)
        try:
            while pending or later:
                for index in [i for i, when in later.items() if when <= time.monotonic()]:
                    del later[index]
                    submit(index, 0)
                if not pending:
                    time.sleep(0.2)
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                for ref in ready:
                    index, attempt = pending.pop(ref)
                    seed = jobs[index][0]
                    try:
                        result = ray.get(ref)
                    except died as error:
                        if attempt >= self.retries:
                            raise WorkerLost(f"seed {seed}: its Ray worker died {attempt + 1} times "
                                             f"({type(error).__name__}); the finished instances are kept in "
                                             "the output folder: continue with --resume") from None
                        bar.write(f"seed {seed}: its Ray worker died ({type(error).__name__}); running it again, "
                                  f"from its checkpoint if it wrote one (retry {attempt + 1} of {self.retries})",
                                  file=sys.stderr)
                        submit(index, attempt + 1)
                        continue
                    except ray.exceptions.RayTaskError as error:
                        cause = getattr(error, "cause", None)
                        if isinstance(cause, (WsimError, KeyboardInterrupt)):
                            raise cause from None
                        raise
                    if result is None:
                        if not later:
                            bar.write(f"waiting for seed {seed}, run by another process", file=sys.stderr)
                        later[index] = time.monotonic() + CLAIM_POLL_S
                        continue
                    results[index] = result
                    bar.update(1)
        except BaseException:
            self._cancel(list(pending))
            raise
        finally:
            bar.close()
        return results

    def _cancel(self, refs: list) -> None:
        """Interrupt the tasks still running (each writes its results as ``interrupted``) and wait a while."""
        if not refs:
            return
        for ref in refs:
            try:
                self.ray.cancel(ref, force=False)
            except Exception:  # already finished, or the cluster is gone: nothing to cancel
                pass
        try:
            self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        except Exception:
            pass


def executor_for(kind: str, address: str | None = None, workers: int | None = None, batch: int | None = None,
                 progress: bool = True):
    """The executor of the command-line flags: None (here, one after the other),
    :class:`~wsim.harness.runner.Batched` (``--batch N``), :class:`~wsim.harness.processes.ProcessExecutor`
    (``--workers K``, K >= 2) or :class:`RayExecutor` (``--executor ray``); a ConfigError for a flag that does
    not go with ``kind``, or a value out of range."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if batch is not None and kind == "ray":
        raise ConfigError("--batch goes with the local executor, not --executor ray")
    if kind == "ray":
        return RayExecutor(address, workers, progress=progress)
    if address is not None:
        raise ConfigError("--address goes with --executor ray")
    if batch is not None and (workers or 1) > 1:
        raise ConfigError("--batch and --workers: choose one (each lockstep already keeps every CPU busy; "
                          "together they were slower than either, benchmarks/results/batch_rigid-mass.md)")
    if (workers or 1) > 1:
        from .processes import ProcessExecutor

        return ProcessExecutor(workers, progress=progress)
    from .runner import Batched

    return None if batch is None else Batched(batch)

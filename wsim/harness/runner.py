"""The experiment harness: seeded instances, resume, progress, atomic outputs and summary tables.

Every experiment family (system identification, control, and what comes next) is an
:class:`Experiment`: how one instance runs and how results are summarised. :func:`run_experiment`
does the rest the same way for all of them:

* instance ``i`` runs with seed ``config.seed + i`` in the folder the family names for it;
* each instance's ``results.json`` carries the fingerprint of the config and seed
  (:func:`wsim.harness.checkpoint.fingerprint`) and a ``status``: ``done``, ``not_converged`` or
  ``interrupted``;
* with ``resume`` a finished result is reused only when its fingerprint matches (otherwise a clear
  error: the folder holds another config's result), and an interrupted one continues from its
  checkpoint;
* with ``resume`` several processes may work on one output folder at once: each instance is claimed
  (``claimed.lock``) by the process that runs it, and every process ends with the whole summary;
* the instances run here one after the other, in worker processes (:mod:`wsim.harness.processes`) or on a
  Ray cluster (:mod:`wsim.harness.executor`), set with :func:`executing`: either way each goes through
  :func:`run_job`, and the summary is built here;
* several instances get ``summary.json`` and ``summary.md``; ``ok`` is false when any instance did
  not converge, and the command line then exits non-zero.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from ..config import to_dict
from ..errors import ConfigError
from ..export import write_json, write_text
from .checkpoint import fingerprint

FINAL_STATUSES = ("done", "not_converged")


@dataclass
class RunOptions:
    """How instances run: ``device`` (None: auto), ``base`` (the folder relative config paths start
    from), ``resume``, ``progress`` (a progress bar on stderr) and ``write_outputs`` (plots, videos, USD)."""

    device: str | None = None
    base: Path | None = None
    resume: bool = False
    progress: bool = True
    write_outputs: bool = True


class Experiment:
    """An experiment family. Subclasses set ``kind`` and implement :meth:`run_instance`,
    :meth:`summarize` and :meth:`format_summary`; the rest has defaults."""

    kind = "experiment"
    summary_always = False  # write summary files for a single instance too

    def folder(self, out: Path, index: int, seed: int, count: int) -> Path:
        return out if count == 1 else out / f"instance_{index:03d}"

    def run_instance(self, config, seed: int, folder: Path, stamp: str, options: RunOptions) -> dict:
        raise NotImplementedError

    def summarize(self, results: list[dict], config) -> dict:
        raise NotImplementedError

    def format_summary(self, summary: dict, config) -> str:
        raise NotImplementedError

    def write_extras(self, out: Path, results: list[dict], summary: dict, config) -> None:
        """Figures over all instances (none by default)."""

    def run_batch(self, config, jobs: list[tuple[int, Path, str]], options: RunOptions) -> list[dict]:
        """Run ``jobs`` (claimed, not finished) together, one result per job (:class:`Batched`)."""
        raise ConfigError(f"--batch is not available for {self.kind} experiments (system identification only)")


def output_folder(out) -> Path:
    """``out`` as a folder that exists, or a clear error (a file of that name, a path that cannot be made)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; give a folder for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out '{out}' cannot be created: {error.strerror or error}") from None
    return out


def finished_result(path: Path, stamp: str) -> dict | None:
    """The finished result at ``path`` when it belongs to ``stamp``; None when there is none (or it was
    interrupted); :class:`ConfigError` when it belongs to another config or seed, or is not JSON."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"'{path}' is not valid JSON; remove it or run without --resume") from None
    if not isinstance(record, dict) or record.get("fingerprint") != stamp:
        raise ConfigError(f"'{path}' holds the result of a different config or seed; use another --out, "
                          "remove it, or run without --resume")
    return record if record.get("status") in FINAL_STATUSES else None


# How often a process that ran out of unclaimed instances looks again at those other processes hold. A
# look is a few file reads; at 10 s, two processes sharing 16 rigid-mass instances spent 11 of their 33 s
# asleep after the last instance was done.
CLAIM_POLL_S = 0.5


@contextmanager
def claim(folder: Path, enabled: bool = True):
    """Hold ``folder/claimed.lock`` (this process's id) while the body runs; yields False when another
    live process holds it. A lock whose process is gone (killed, or on a machine that rebooted) is taken
    over. Disabled: always yields True and writes nothing."""
    if not enabled:
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "claimed.lock"
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _holder_alive(lock):
                yield False
                return
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(handle, "w") as stream:
            stream.write(f"{os.getpid()} {socket.gethostname()}\n")
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False


def _holder_alive(lock: Path) -> bool:
    try:
        pid, host = lock.read_text().split()
    except (OSError, ValueError):
        return False  # unreadable or half-written: treated as stale
    if host != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def progress_bar(total: int, description: str, initial: int = 0, enabled: bool = True):
    """A tqdm bar on stderr (loss and estimates go in its postfix; tqdm shows the rate and ETA)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=min(initial, total), disable=not enabled or total == 0, desc=description,
                leave=False, dynamic_ncols=True, file=sys.stderr)


def plan(experiment: Experiment, config, out: Path, count: int) -> list[tuple[int, Path, str]]:
    """``(seed, folder, fingerprint)`` of each of the ``count`` instances of ``config`` under ``out``."""
    data = to_dict(config)
    return [(int(config.seed) + index, experiment.folder(out, index, int(config.seed) + index, count),
             fingerprint(data, int(config.seed) + index, experiment.kind)) for index in range(count)]


def run_job(experiment: Experiment, config, job: tuple[int, Path, str], options: RunOptions) -> dict | None:
    """One instance, the same way wherever it runs (here, or in a worker of :mod:`wsim.harness.executor`):
    with ``resume`` its finished result is reused, or it is claimed and run (continuing from its
    checkpoint); None when another live process holds its claim."""
    seed, folder, stamp = job
    previous = finished_result(folder / "results.json", stamp) if options.resume else None
    if previous is None:
        with claim(folder, enabled=options.resume) as mine:
            if not mine:
                return None
            previous = experiment.run_instance(config, seed, folder, stamp, options)
    return previous


def _run_here(experiment: Experiment, config, jobs: list, options: RunOptions) -> list[dict]:
    results = [None] * len(jobs)
    # with resume, several processes may share one --out: each claims the instances it runs, skips the
    # ones another live process holds, and at the end waits for them (or runs them if their holder died)
    rounds = 0
    while any(r is None for r in results):
        for index, job in enumerate(jobs):
            if results[index] is None:
                results[index] = run_job(experiment, config, job, options)
        if any(r is None for r in results):
            rounds += 1
            if rounds == 1:
                waiting = [jobs[i][0] for i, r in enumerate(results) if r is None]
                print(f"waiting for seed(s) {', '.join(map(str, waiting))}, run by another process", file=sys.stderr)
            time.sleep(CLAIM_POLL_S)
    return results


class Batched:
    """An executor that runs up to ``size`` instances together through :meth:`Experiment.run_batch`
    (system identification: :mod:`wsim.sysid.lockstep`), with the local executor's resume and claims."""

    def __init__(self, size: int):
        if int(size) != size or size < 1:
            raise ConfigError(f"--batch must be an integer >= 1, got {size}")
        self.size = int(size)

    def __call__(self, experiment: Experiment, config, jobs: list, options: RunOptions) -> list[dict]:
        from contextlib import ExitStack

        results = [finished_result(job[1] / "results.json", job[2]) if options.resume else None for job in jobs]
        todo = [i for i, r in enumerate(results) if r is None]
        for start in range(0, len(todo), self.size):
            group = todo[start:start + self.size]
            with ExitStack() as stack:
                mine = [i for i in group if stack.enter_context(claim(jobs[i][1], enabled=options.resume))]
                if mine:
                    for i, result in zip(mine, experiment.run_batch(config, [jobs[i] for i in mine], options)):
                        results[i] = result
        if any(r is None for r in results):  # held by other processes: wait for them as the local executor does
            rest = [i for i, r in enumerate(results) if r is None]
            for i, result in zip(rest, _run_here(experiment, config, [jobs[i] for i in rest], options)):
                results[i] = result
        return results


# where the instances of run_experiment run: None (here, one after the other) or an executor, a callable
# (experiment, config, jobs, options) -> results that runs run_job elsewhere (wsim.harness.executor)
_executor: ContextVar = ContextVar("wsim_executor", default=None)


@contextmanager
def executing(executor):
    """Run the instances of every :func:`run_experiment` in the body with ``executor`` (None: here)."""
    token = _executor.set(executor)
    try:
        yield
    finally:
        _executor.reset(token)


def _on_cpu(device) -> bool:
    try:
        from ..device import resolve_device

        return resolve_device(device) == "cpu"
    except ConfigError:
        return False  # a bad device name: the instance reports it


def run_experiment(experiment: Experiment, config, out, options: RunOptions | None = None,
                   instances: int | None = None) -> dict:
    """Run ``instances`` (default ``config.instances``) seeded instances of ``config`` into ``out``.

    Returns ``{"results": [...], "summary": {...}, "text": str, "ok": bool}``; ``ok`` is false when any
    instance ended ``not_converged`` (``summary["not_converged"]`` lists their seeds)."""
    options = options or RunOptions()
    out = output_folder(out)
    count = int(instances or config.instances)
    if count < 1:
        raise ConfigError(f"the number of instances must be >= 1, got {count}")
    jobs = plan(experiment, config, out, count)
    executor = _executor.get()
    cpus = os.cpu_count() or 1
    if executor is None and count > 1 and cpus > 1 and options.progress and _on_cpu(options.device):
        print(f"{count} instances one after the other, on one of {cpus} CPUs; --workers {min(cpus, count)} runs "
              f"{min(cpus, count)} at once", file=sys.stderr, flush=True)
    results = executor(experiment, config, jobs, options) if executor is not None else _run_here(
        experiment, config, jobs, options)
    summary = experiment.summarize(results, config)
    summary["not_converged"] = [r.get("seed") for r in results if r.get("status") != "done"]
    text = experiment.format_summary(summary, config)
    if summary["not_converged"]:
        text += (f"\nNOT CONVERGED: seed(s) {', '.join(str(s) for s in summary['not_converged'])} "
                 "(see each results.json: 'convergence')")
    if count > 1 or experiment.summary_always:
        write_json(out / "summary.json", summary)
        write_text(out / "summary.md", text + "\n")
        experiment.write_extras(out, results, summary, config)
    return {"results": results, "summary": summary, "text": text, "ok": not summary["not_converged"]}

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
* several instances get ``summary.json`` and ``summary.md``; ``ok`` is false when any instance did
  not converge, and the command line then exits non-zero.
"""

from __future__ import annotations

import json
import sys
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


def progress_bar(total: int, description: str, initial: int = 0, enabled: bool = True):
    """A tqdm bar on stderr (loss and estimates go in its postfix; tqdm shows the rate and ETA)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=min(initial, total), disable=not enabled or total == 0, desc=description,
                leave=False, dynamic_ncols=True, file=sys.stderr)


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
    data = to_dict(config)
    results = []
    for index in range(count):
        seed = int(config.seed) + index
        folder = experiment.folder(out, index, seed, count)
        stamp = fingerprint(data, seed, experiment.kind)
        previous = finished_result(folder / "results.json", stamp) if options.resume else None
        if previous is None:
            previous = experiment.run_instance(config, seed, folder, stamp, options)
        results.append(previous)
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

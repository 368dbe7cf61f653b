"""System identification from video (paper Section 4.1): ``wsim run``.

:func:`run_experiment` runs one or more instances of an experiment config (``configs/experiments``):
each draws its ground truth, renders the target video (or reads one), draws a seeded initial guess
and optimises the parameters through the differentiable simulator and renderer (method ``gradsim``),
or through the simulator alone against 3D vertex positions (``diffphysics``), or predicts the range
mean (``average``) or a random draw (``random``).
"""

from __future__ import annotations

from pathlib import Path

from .config import ExperimentConfig, load_experiment, resolve_experiment_path
from .experiment import Instance, Optimisation, run_instance
from .outputs import format_summary, summarize, write_summary
from ..geometry.shapes import SHAPES, shape_mesh


def run_experiment(config: ExperimentConfig, out, device: str | None = None, instances: int | None = None,
                   resume: bool = False, progress: bool = True, base: Path | None = None,
                   write_outputs: bool = True) -> dict:
    """Run ``instances`` instances (seeds ``config.seed + i``) into ``out`` (one instance: directly in
    ``out``; several: ``out/instance_XXX`` plus ``summary.json``/``summary.md``). Returns
    ``{"results": [...], "summary": {...}}``. With ``resume``, finished instances are reused and an
    interrupted one continues from its checkpoint."""
    import json

    out = Path(out)
    count = int(instances or config.instances)
    results = []
    for i in range(count):
        folder = out if count == 1 else out / f"instance_{i:03d}"
        done = folder / "results.json"
        if resume and done.exists():
            previous = json.loads(done.read_text())
            if previous.get("status") == "done" and previous.get("seed") == config.seed + i:
                results.append(previous)
                continue
        results.append(run_instance(config, config.seed + i, folder, device, base, resume, progress, write_outputs))
    summary = write_summary(out, results, config) if count > 1 else summarize(results, config.paper)
    return {"results": results, "summary": summary}


__all__ = ["SHAPES", "ExperimentConfig", "Instance", "Optimisation", "format_summary", "load_experiment",
           "resolve_experiment_path", "run_experiment", "run_instance", "shape_mesh", "summarize"]

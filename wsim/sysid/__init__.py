"""System identification from video (paper Section 4.1): ``wsim run``.

:func:`run_experiment` runs one or more instances of an experiment config (``configs/experiments``)
on the harness (:mod:`wsim.harness`): each draws its ground truth, renders the target video (or reads
one), draws a seeded initial guess and optimises the parameters through the differentiable simulator
and renderer (method ``gradsim``), or through the simulator alone against 3D vertex positions
(``diffphysics``), or predicts the range mean (``average``) or a random draw (``random``).
"""

from __future__ import annotations

from pathlib import Path

from .config import ExperimentConfig, load_experiment, resolve_experiment_path
from .experiment import SystemIdentification, run_instance
from .instance import Instance
from .optimisation import Optimisation
from .outputs import format_summary, summarize
from ..geometry.shapes import SHAPES, shape_mesh


def run_experiment(config: ExperimentConfig, out, device: str | None = None, instances: int | None = None,
                   resume: bool = False, progress: bool = True, base: Path | None = None,
                   write_outputs: bool = True) -> dict:
    """Run ``instances`` instances (seeds ``config.seed + i``) into ``out`` (one instance: directly in
    ``out``; several: ``out/instance_XXX`` plus ``summary.json``/``summary.md``). Returns
    ``{"results": [...], "summary": {...}, "text": str, "ok": bool}`` (see
    :func:`wsim.harness.run_experiment`)."""
    from ..harness import RunOptions
    from ..harness import run_experiment as run

    options = RunOptions(device=device, base=base, resume=resume, progress=progress, write_outputs=write_outputs)
    return run(SystemIdentification(), config, out, options, instances)


__all__ = ["SHAPES", "ExperimentConfig", "Instance", "Optimisation", "SystemIdentification", "format_summary",
           "load_experiment", "resolve_experiment_path", "run_experiment", "run_instance", "shape_mesh", "summarize"]

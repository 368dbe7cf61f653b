"""How far an estimate is from the truth, and compact views of parameter values for logs and JSON."""

from __future__ import annotations

import numpy as np
import torch


def summary_of(value: torch.Tensor):
    """A tensor as a float (scalar) or nested list, for ``results.json``."""
    array = value.detach().cpu().numpy().astype(np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


def short(value: torch.Tensor) -> str:
    array = value.detach().cpu().numpy()
    return f"{float(array):.5g}" if array.ndim == 0 else f"mean {float(array.mean()):.4g}"


def _free_particles(instance) -> np.ndarray | None:
    """Indices of the particles that move (a pinned particle's mass or velocity leaves no trace)."""
    pinned = instance.scene.model.particle_pinned
    return None if pinned is None else np.flatnonzero(pinned.numpy() == 0)


def errors(instance, estimate: dict) -> dict:
    """Absolute and relative errors per parameter (vectors: norm of the difference per element, mean over
    elements; relative: divided by the norm of the true value) plus the derived body mass for density.
    Per-particle values are compared on the free (not pinned) particles."""
    if instance.truth is None:
        return {}
    from ..parameters import PARAMETERS

    result = {}
    for p in instance.params:
        if p.name not in instance.truth:  # an appearance value of a video wsim did not render
            continue
        true = instance.truth[p.name].detach().cpu().numpy().astype(np.float64)
        est = estimate[p.name].detach().cpu().numpy().astype(np.float64)
        full = np.broadcast_shapes(true.shape, est.shape)
        true_b, est_b = np.broadcast_to(true, full), np.broadcast_to(est, full)
        spec = PARAMETERS.get(p.name)
        free = _free_particles(instance)
        if (spec is not None and spec.per == "particle" and free is not None and true_b.ndim
                and true_b.shape[0] == instance.scene.model.particle_count):
            true_b, est_b = true_b[free], est_b[free]
        elem = len(instance.value_shape(p, "one")) if true_b.ndim else 0
        diff = np.abs(est_b - true_b)
        if elem:
            diff_n = np.linalg.norm((est_b - true_b).reshape(-1, *true_b.shape[-elem:]).reshape(-1, int(np.prod(true_b.shape[-elem:]))), axis=1)
            true_n = np.linalg.norm(true_b.reshape(-1, int(np.prod(true_b.shape[-elem:]))), axis=1)
        else:
            diff_n, true_n = diff.reshape(-1), np.abs(true_b).reshape(-1)
        result[p.name] = {"abs": float(diff_n.mean()), "rel": float(np.mean(diff_n / np.maximum(true_n, 1e-12)))}
        if p.name == "density":
            volume = np.asarray(instance.scene.model.body_volume, dtype=np.float64)
            true_m, est_m = np.broadcast_to(true, volume.shape) * volume, np.broadcast_to(est, volume.shape) * volume
            result["mass"] = {"abs": float(np.abs(est_m - true_m).mean()),
                              "rel": float(np.mean(np.abs(est_m - true_m) / true_m)),
                              "true": true_m.tolist() if true_m.size > 1 else float(true_m[0]),
                              "estimate": est_m.tolist() if est_m.size > 1 else float(est_m[0])}
    return result

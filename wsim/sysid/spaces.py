"""The optimisation space of each estimated parameter: ``log`` (positive, relative steps), ``sigmoid``
(inside its bounds) or ``linear`` (clamped to its bounds), and the bounds themselves."""

from __future__ import annotations

import math

import torch

from .config import ParamConfig

MIN_POSITIVE = 1e-6


def bounds_of(p: ParamConfig) -> tuple[float, float]:
    """The hard bounds of a parameter (its range widened by half its width, positive in log space)."""
    if p.bounds is not None:
        return float(p.bounds[0]), float(p.bounds[1])
    width = max(p.high - p.low, 1e-12)
    lo, hi = p.low - 0.5 * width, p.high + 0.5 * width
    if p.space == "log" or p.low > 0:
        lo = max(lo, p.low * 0.25)
    return lo, hi


def to_space(p: ParamConfig, value: torch.Tensor) -> torch.Tensor:
    lo, hi = bounds_of(p)
    value = value.clamp(lo, hi)
    if p.space == "log":
        return torch.log(value.clamp_min(MIN_POSITIVE))
    if p.space == "sigmoid":
        x = ((value - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
        return torch.log(x) - torch.log1p(-x)
    return value.clone()


def from_space(p: ParamConfig, u: torch.Tensor) -> torch.Tensor:
    lo, hi = bounds_of(p)
    if p.space == "log":
        return torch.exp(u).clamp(lo, hi)
    if p.space == "sigmoid":
        return lo + (hi - lo) * torch.sigmoid(u)
    return u.clamp(lo, hi)



def space_bounds(p: ParamConfig) -> tuple[float, float] | None:
    """The bounds of ``p`` in its optimisation space (None for ``sigmoid``, which cannot leave them)."""
    if p.space == "sigmoid":
        return None
    lo, hi = bounds_of(p)
    if p.space == "log":
        return math.log(max(lo, MIN_POSITIVE)), math.log(hi)
    return lo, hi

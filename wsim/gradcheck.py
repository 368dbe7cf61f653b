"""Adjoint gradients against central finite differences, through a whole rollout.

The scalar loss is a fixed random projection of every vertex of every frame,
``L = sum_{f,v} w_fv . x_fv`` (weights seeded, scaled to O(1)), so every vertex and frame contributes.
For each parameter p, a random unit probe direction d (seeded) gives the directional derivative
``g . d`` from the adjoint and ``D(h) = (L(p + h d) - L(p - h d)) / 2h`` from central differences.

A parameter passes only if the adjoint agrees with the central differences at *two* steps, ``h`` and
``2h``. The simulator runs in float32, so ``D(h)`` carries a round-off error that grows as ``1/h`` and a
truncation error (curvature, contact events) that grows with ``h``; which steps are free of both depends
on the parameter. The pair is therefore chosen from the fixed ladder ``h = eps * max|p| * 2^k``
(``max|p|`` taken as 1 for a zero parameter; k = -5..5, tried outwards from 0): the first run of three
consecutive steps whose differences all agree with each other to ``consistency`` gives its closer-agreeing
adjacent pair; if no run does, the adjacent pair that agrees best over the whole ladder. (Taking the
best run of three there instead picks box-drop's biased k = -1, 0, 1 for gravity, spread 1.5 %, over
k = -5, -4, -3, spread 1.6 %, whose first two agree to 3e-4.) The choice looks
at the finite differences only, never at the adjoint, so a wrong adjoint cannot pass by a lucky step: it
has to match two differences that already agree. The relative error of a row is the larger of
``|adjoint - D| / max(|adjoint|, |D|)`` over the pair.

Why three, and why both directions (measured, eps 1e-2): two adjacent differences can agree by chance in
the round-off (a cloth's particle_velocity: k = -3, -2 agree to 5e-4 and both sit 1.9 % from the adjoint,
while k = 0..5 settle on it to 1e-3); and contact events bend the loss on the scale of eps (box-drop's
gravity: k = 0, -1 agree to 2e-3 and sit 4.5 % from the adjoint; going down they settle at k = -5, -4,
7e-3 from it, before round-off takes over below k = -7). A smooth parameter stops after three steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ParameterError, SimulationError
from .simulation import Simulation

LADDER = range(-5, 6)  # powers of two of eps; tried outwards from 0 (0, 1, -1, 2, -2, ...)


@dataclass
class GradcheckRow:
    """One parameter's check: the adjoint directional derivative, the central differences at ``step``
    and at ``2 step`` (``finite_difference_wide``), and the larger of their relative errors."""

    name: str
    adjoint: float
    finite_difference: float
    relative_error: float
    step: float
    finite_difference_wide: float = float("nan")

    def passed(self, tolerance: float) -> bool:
        return self.relative_error <= tolerance


def relative_error(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|)`` (0 when both are 0)."""
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def projection_loss(simulation: Simulation, seed: int):
    """The random-projection loss ``params -> L`` used by :func:`gradcheck` (float64 accumulation)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (simulation.frames, simulation.model.vertex_count, 3)
    weights = torch.randn(shape, generator=generator, dtype=torch.float64) / (shape[0] * shape[1]) ** 0.5
    weights = weights.to(simulation.torch_device)

    def loss(params: dict) -> torch.Tensor:
        return (simulation.rollout(params).double() * weights).sum()

    return loss


def gradcheck(simulation: Simulation, names: list[str], eps: float = 1e-2, seed: int = 0,
              base: dict | None = None, consistency: float = 2e-3) -> list[GradcheckRow]:
    """Compare adjoint and finite-difference directional derivatives for each parameter in ``names``.

    ``base`` optionally gives the parameter values to check at (default: the model's own values);
    ``eps`` is the first step relative to the parameter's largest magnitude; ``consistency`` is how
    closely two finite differences must agree with each other to be used (see the module docstring).
    """
    if not eps > 0:
        raise ParameterError(f"gradcheck eps must be > 0, got {eps}")
    loss = projection_loss(simulation, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    rows = []
    for name in names:
        value = (base or {}).get(name)
        value = simulation.default(name) if value is None else torch.as_tensor(value, dtype=torch.float32)
        value = value.detach().to(simulation.torch_device)
        direction = torch.randn(value.shape, generator=generator, dtype=torch.float32).to(value.device)
        direction = direction / direction.norm().clamp_min(1e-12)
        variable = value.clone().requires_grad_(True)
        loss({name: variable}).backward()
        adjoint = float((variable.grad * direction).sum())
        magnitude = float(value.abs().max())
        base_step = eps * (magnitude if magnitude > 0 else 1.0)
        # Parameters that must stay positive (masses, stiffnesses...) keep every probe inside their range.
        limit = float("inf")
        if _positive(simulation, name) and bool((value > 0).all()):
            moving = direction.abs() > 0
            limit = 0.5 * float((value[moving] / direction[moving].abs()).min())

        def difference(h: float) -> float:
            # a probe that leaves the stable region (a large step of a stiffness or of positions) gives no
            # difference at that step; the ladder goes on without it
            try:
                with torch.no_grad():
                    plus = float(loss({name: value + h * direction}))
                    minus = float(loss({name: value - h * direction}))
            except SimulationError:
                return math.nan
            return (plus - minus) / (2.0 * h)

        rows.append(_check_on_ladder(name, adjoint, difference, base_step, limit, consistency))
    return rows


def _check_on_ladder(name, adjoint, difference, base_step, limit, consistency) -> GradcheckRow:
    """The row of the ladder pair chosen from the finite differences alone (see the module docstring)."""
    powers = [k for k in sorted(LADDER, key=lambda k: (abs(k), -k)) if base_step * 2.0 ** k <= limit]
    if len(powers) < 2:  # the range limit leaves no pair: the largest step allowed, and half of it
        step = min(base_step, limit)
        narrow, wide = difference(0.5 * step), difference(step)
        error = max(relative_error(adjoint, narrow), relative_error(adjoint, wide))
        return GradcheckRow(name, adjoint, narrow, error, 0.5 * step, wide)
    computed: dict[int, float] = {}

    def best_pair(ks):
        pairs = [(relative_error(computed[k], computed[k + 1]), k) for k in ks if k in computed and k + 1 in computed]
        return min(pairs) if pairs else None

    def spread(low):
        return max(relative_error(computed[a], computed[b]) for a in (low, low + 1) for b in (low + 1, low + 2))

    chosen = None
    for k in powers:
        value = difference(base_step * 2.0 ** k)
        if not math.isfinite(value):
            continue
        computed[k] = value
        for low in (k - 2, k - 1, k):  # every run of three consecutive steps that k completes
            if all(j in computed for j in (low, low + 1, low + 2)) and spread(low) <= consistency:
                chosen = best_pair([low, low + 1])
                break
        if chosen is not None:
            break
    if chosen is None:
        chosen = best_pair(sorted(computed))
    if chosen is None:  # no two neighbouring steps gave a difference: nothing to compare with
        return GradcheckRow(name, adjoint, math.nan, math.nan, base_step, math.nan)
    low = chosen[1]
    narrow, wide = computed[low], computed[low + 1]
    error = max(relative_error(adjoint, narrow), relative_error(adjoint, wide))
    return GradcheckRow(name, adjoint, narrow, error, base_step * 2.0 ** low, wide)


def _positive(simulation: Simulation, name: str) -> bool:
    from .parameters import PARAMETERS
    from .simulation import ALIASES, CONVENIENCE

    key = ALIASES.get(name, name)
    if key in CONVENIENCE:
        low = CONVENIENCE[key][0]
    elif key in PARAMETERS:
        low = PARAMETERS[key].low
    else:
        return False
    return low is not None and low >= 0


def format_table(rows: list[GradcheckRow], tolerance: float) -> str:
    lines = [f"{'parameter':<24}{'adjoint':>16}{'fd (h)':>16}{'fd (2h)':>16}{'h':>10}{'rel. error':>12}  result"]
    for row in rows:
        verdict = "ok" if row.passed(tolerance) else "FAIL"
        lines.append(f"{row.name:<24}{row.adjoint:>16.6e}{row.finite_difference:>16.6e}"
                     f"{row.finite_difference_wide:>16.6e}{row.step:>10.3g}{row.relative_error:>12.2e}  {verdict}")
    return "\n".join(lines)

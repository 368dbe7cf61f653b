"""Adjoint gradients against central finite differences, through a whole rollout.

The scalar loss is a fixed random projection of every vertex of every frame,
``L = sum_{f,v} w_fv . x_fv`` (weights seeded, scaled to O(1)), so every vertex and frame contributes.
For each parameter p, a random unit probe direction d (seeded) gives the directional derivative
``g . d`` from the adjoint and ``(L(p + h d) - L(p - h d)) / 2h`` from central differences. The
simulator runs in float32, so a small ``h`` drowns the difference in round-off while a large one
meets the curvature of contact events; the check therefore sweeps
``h = eps * max|p| * {1, 0.3, 3, 0.1, 10, 30}`` (stopping early once they agree to 2e-3) (``max|p|`` taken as 1 for a zero parameter) and reports the step whose finite difference
agrees best (a wrong adjoint agrees with none of them). The relative error is
``|adjoint - fd| / max(|adjoint|, |fd|)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .simulation import Simulation


@dataclass
class GradcheckRow:
    name: str
    adjoint: float
    finite_difference: float
    relative_error: float
    step: float

    def passed(self, tolerance: float) -> bool:
        return self.relative_error <= tolerance


def projection_loss(simulation: Simulation, seed: int):
    """The random-projection loss ``params -> L`` used by :func:`gradcheck` (float64 accumulation)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (simulation.frames, simulation.model.vertex_count, 3)
    weights = torch.randn(shape, generator=generator, dtype=torch.float64) / (shape[0] * shape[1]) ** 0.5
    weights = weights.to(simulation.torch_device)

    def loss(params: dict) -> torch.Tensor:
        return (simulation.rollout(params).double() * weights).sum()

    return loss


STEP_FACTORS = (1.0, 0.3, 3.0, 0.1, 10.0, 30.0)  # most reliable first


def gradcheck(simulation: Simulation, names: list[str], eps: float = 1e-2, seed: int = 0,
              base: dict | None = None, step_factors=STEP_FACTORS, good_enough: float = 2e-3) -> list[GradcheckRow]:
    """Compare adjoint and finite-difference directional derivatives for each parameter in ``names``.

    ``base`` optionally gives the parameter values to check at (default: the model's own values).
    The sweep over step sizes stops at the first step whose relative error is below ``good_enough``.
    """
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
        scale = magnitude if magnitude > 0 else 1.0
        # Parameters that must stay positive (masses, stiffnesses...) keep every probe inside their range.
        limit = float("inf")
        if _positive(simulation, name) and bool((value > 0).all()):
            moving = direction.abs() > 0
            limit = 0.5 * float((value[moving] / direction[moving].abs()).min())
        best = None
        for factor in step_factors:
            step = min(eps * factor * scale, limit)
            with torch.no_grad():
                plus = float(loss({name: value + step * direction}))
                minus = float(loss({name: value - step * direction}))
            finite_difference = (plus - minus) / (2.0 * step)
            error = abs(adjoint - finite_difference) / max(abs(adjoint), abs(finite_difference), 1e-30)
            if best is None or error < best.relative_error:
                best = GradcheckRow(name, adjoint, finite_difference, error, step)
            if error < good_enough:
                break
        rows.append(best)
    return rows


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
    lines = [f"{'parameter':<24}{'adjoint':>16}{'finite diff':>16}{'step':>10}{'rel. error':>12}  result"]
    for row in rows:
        verdict = "ok" if row.passed(tolerance) else "FAIL"
        lines.append(f"{row.name:<24}{row.adjoint:>16.6e}{row.finite_difference:>16.6e}{row.step:>10.3g}"
                     f"{row.relative_error:>12.2e}  {verdict}")
    return "\n".join(lines)

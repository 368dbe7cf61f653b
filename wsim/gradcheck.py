"""Adjoint gradients against central finite differences, through a whole rollout.

The scalar loss is a fixed random projection of every vertex of every frame,
``L = sum_{f,v} w_fv . x_fv`` (weights seeded, scaled to O(1)), so every vertex and frame contributes.
For each parameter p, a random unit probe direction d (seeded) gives the directional derivative
``g . d`` from the adjoint and ``(L(p + h d) - L(p - h d)) / 2h`` from central differences.

The check uses two fixed steps, ``h = eps * max|p|`` and ``h / 2`` (``max|p|`` taken as 1 for a zero
parameter), and a parameter passes only if the adjoint agrees with *both* differences. One step alone
could agree with a wrong adjoint by chance (truncation and float32 round-off errors of opposite sign
cancelling); agreeing at two steps that differ by 2x leaves a wrong adjoint no such room, and a step
chosen after looking at the errors (the old best-of-six sweep) would. The relative error of a row is
the larger of the two, each ``|adjoint - fd| / max(|adjoint|, |fd|)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ParameterError
from .simulation import Simulation

HALVING = 0.5  # the second step, as a fraction of the first


@dataclass
class GradcheckRow:
    """One parameter's check: the adjoint directional derivative, the central differences at ``step``
    and at ``step / 2`` (``finite_difference_half``), and the larger of their relative errors."""

    name: str
    adjoint: float
    finite_difference: float
    relative_error: float
    step: float
    finite_difference_half: float = float("nan")

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
              base: dict | None = None) -> list[GradcheckRow]:
    """Compare adjoint and finite-difference directional derivatives for each parameter in ``names``.

    ``base`` optionally gives the parameter values to check at (default: the model's own values);
    ``eps`` is the first step relative to the parameter's largest magnitude.
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
        step = eps * (magnitude if magnitude > 0 else 1.0)
        # Parameters that must stay positive (masses, stiffnesses...) keep every probe inside their range.
        if _positive(simulation, name) and bool((value > 0).all()):
            moving = direction.abs() > 0
            step = min(step, 0.5 * float((value[moving] / direction[moving].abs()).min()))
        differences = []
        for h in (step, HALVING * step):
            with torch.no_grad():
                plus = float(loss({name: value + h * direction}))
                minus = float(loss({name: value - h * direction}))
            differences.append((plus - minus) / (2.0 * h))
        error = max(relative_error(adjoint, fd) for fd in differences)
        rows.append(GradcheckRow(name, adjoint, differences[0], error, step, differences[1]))
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
    lines = [f"{'parameter':<24}{'adjoint':>16}{'fd (h)':>16}{'fd (h/2)':>16}{'h':>10}{'rel. error':>12}  result"]
    for row in rows:
        verdict = "ok" if row.passed(tolerance) else "FAIL"
        lines.append(f"{row.name:<24}{row.adjoint:>16.6e}{row.finite_difference:>16.6e}"
                     f"{row.finite_difference_half:>16.6e}{row.step:>10.3g}{row.relative_error:>12.2e}  {verdict}")
    return "\n".join(lines)

"""Central finite differences of a vector function: the Jacobians of Levenberg-Marquardt and of the
video bound (:mod:`wsim.sysid.uncertainty`) come from here."""

from __future__ import annotations

import torch


def central_jacobian(function, x: torch.Tensor, steps) -> torch.Tensor:
    """``[N, K]`` float64 central differences ``(f(x + h_k e_k) - f(x - h_k e_k)) / (2 h_k)`` of the
    1-D output of ``function`` at the 1-D point ``x`` (``K`` values), with one step ``h_k`` per entry."""
    x = x.detach().double()
    columns = []
    for k in range(x.numel()):
        offset = torch.zeros_like(x)
        offset[k] = float(steps[k])
        plus = function(x + offset).detach().reshape(-1).double().cpu()
        minus = function(x - offset).detach().reshape(-1).double().cpu()
        columns.append((plus - minus) / (2.0 * float(steps[k])))
    return torch.stack(columns, dim=1)

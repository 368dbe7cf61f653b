"""A small dense BFGS optimiser with a backtracking (Armijo) line search, for polishing a few parameters.

torch's L-BFGS with its strong-Wolfe search stalls on the pixel losses here (tiny absolute losses and
gradients, and a first trial step of unit length in the parameter space that lands far outside the
basin). This one caps the first step (``max_step`` in the optimisation space), reuses the gradient of
the accepted trial point (one evaluation per step when the step is accepted) and stops once no step
along the quasi-Newton direction, nor then along the scaled steepest descent, decreases the loss.
"""

from __future__ import annotations

import math

import torch

from ..errors import SimulationError


class FlatOptimiser:
    """What the polishing optimisers share: their tensors seen as one float64 vector, and a checkpointable
    ``state`` dict (with ``converged``) in the shape of a torch optimiser's."""

    def __init__(self, params: list[torch.Tensor], state: dict):
        self.params = list(params)
        self.state = dict(state, converged=False)
        self.param_groups = [{"lr": 1.0}]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _flat(self, tensors=None):
        return torch.cat([t.detach().reshape(-1).double() for t in (self.params if tensors is None else tensors)])

    def _set(self, x: torch.Tensor):
        offset = 0
        with torch.no_grad():
            for p in self.params:
                n = p.numel()
                p.copy_(x[offset:offset + n].reshape(p.shape).to(p.dtype))
                offset += n

    def state_dict(self):
        return {"state": dict(self.state)}

    def load_state_dict(self, state):
        self.state.update(state["state"])


class BFGS(FlatOptimiser):
    def __init__(self, params: list[torch.Tensor], max_step: float = 0.05, shrink: float = 0.3, tries: int = 8,
                 armijo: float = 1e-4):
        super().__init__(params, {"H": None, "x": None, "f": None, "g": None})
        self.max_step, self.shrink, self.tries, self.armijo = max_step, shrink, tries, armijo

    def _eval(self, closure, x, trial: bool = False):
        self._set(x)
        try:
            f = float(closure())
        except SimulationError:
            if not trial:
                raise
            # a trial point outside the stable region: backtrack from it like from any other failure
            return math.inf, torch.zeros_like(x)
        g = self._flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params])
        return f, g

    def step(self, closure):
        s = self.state
        if s["converged"]:
            return s["f"]
        x = self._flat()
        if s["x"] is None or not torch.equal(x, s["x"]):
            s["f"], s["g"] = self._eval(closure, x)
            s["x"] = x
        f, g = s["f"], s["g"]
        n = x.numel()
        gmax = float(g.abs().max())
        if not gmax > 0 or not torch.isfinite(g).all():  # a stationary point (or no usable gradient)
            s["converged"] = True
            return f
        def restart():
            return torch.eye(n, dtype=torch.float64) * (self.max_step / gmax)

        fresh = s["H"] is None
        if fresh:
            s["H"] = restart()
        while True:
            d = -(s["H"] @ g)
            slope = float(g @ d)
            if not slope < 0 and not fresh:  # not a descent direction: restart from a scaled gradient step
                s["H"], fresh = restart(), True
                continue
            t = 1.0
            for _ in range(self.tries):
                x_new = x + t * d
                f_new, g_new = self._eval(closure, x_new, trial=True)
                if f_new <= f + self.armijo * t * slope:
                    step, change = x_new - x, g_new - g
                    sy = float(step @ change)
                    if sy > 1e-300 * max(float(step @ step), 1e-300):
                        rho = 1.0 / sy
                        eye = torch.eye(n, dtype=torch.float64)
                        v = eye - rho * torch.outer(step, change)
                        s["H"] = v @ s["H"] @ v.T + rho * torch.outer(step, step)
                    s["x"], s["f"], s["g"] = x_new, f_new, g_new
                    return f_new
                t *= self.shrink
            if fresh:
                break
            # the curvature model went stale (the search failed along it): forget it once and retry
            s["H"], fresh = restart(), True
        self._set(x)
        s["converged"] = True
        return f

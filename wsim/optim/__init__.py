"""One optimiser interface for every experiment: ``Optimiser(variables, method, lr).step(closure)``.

The closure evaluates the objective at the current values of ``variables`` and returns either the
scalar loss or the 1-D residual vector ``r`` of a least-squares loss ``mean(r^2)`` (with its autograd
graph; the optimiser calls ``backward`` itself when the method needs a gradient). Methods:

* ``adam``, ``sgd`` (momentum 0.5 unless given): one evaluation per step;
* ``lbfgs``: torch's L-BFGS with a strong-Wolfe line search, on the loss divided by its value where
  the method took over (its thresholds are absolute; a pixel loss of 1e-9 would look converged);
* ``bfgs``: dense BFGS with a capped first step and backtracking (:mod:`wsim.optim.bfgs`);
* ``lm``: Levenberg-Marquardt with a finite-difference Jacobian (:mod:`wsim.optim.levenberg_marquardt`),
  which needs the closure to return residuals.

Blow-up policy, the same for every method: a step whose evaluation raises
:class:`~wsim.errors.SimulationError`, or whose loss or gradient is not finite, is undone (the
variables go back to where the step started), the learning rate is halved, the method's internal
state (moments, curvature) is dropped and ``step`` returns NaN; ``blowups`` counts them.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, SimulationError

METHODS = ("adam", "sgd", "lbfgs", "bfgs", "lm")


class Optimiser:
    """``step(closure)`` over a list of leaf tensors (``requires_grad``), whatever the method.

    ``converged`` is true once a quasi-Newton method (bfgs, lm) finds no step that lowers the loss.
    ``state_dict()``/``load_state_dict()`` hold plain tensors and numbers (loadable with
    ``torch.load(weights_only=True)``)."""

    def __init__(self, variables: list[torch.Tensor], method: str = "adam", lr: float = 0.1,
                 momentum: float = 0.5, max_step: float = 0.05):
        if method not in METHODS:
            raise ConfigError(f"optimiser method must be one of {', '.join(METHODS)}, got {method!r}")
        self.variables = list(variables)
        self.method = method
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.max_step = float(max_step)
        self.blowups = 0
        self.loss_scale: float | None = None
        self.inner = self._build()

    def _build(self):
        if self.method == "adam":
            return torch.optim.Adam(self.variables, lr=self.lr)
        if self.method == "sgd":
            return torch.optim.SGD(self.variables, lr=self.lr, momentum=self.momentum)
        if self.method == "lbfgs":
            # max_iter=1 never moves (torch 2.13 checks its iteration budget before the first update);
            # 2 is the smallest budget that takes a step
            return torch.optim.LBFGS(self.variables, lr=self.lr, max_iter=2, history_size=20,
                                     line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)
        if self.method == "bfgs":
            from .bfgs import BFGS

            return BFGS(self.variables, max_step=self.max_step)
        from .levenberg_marquardt import LevenbergMarquardt

        return LevenbergMarquardt(self.variables)

    @property
    def converged(self) -> bool:
        return bool(getattr(self.inner, "state", {}).get("converged", False)) if self.method in ("bfgs", "lm") else False

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)
        for group in self.inner.param_groups:
            group["lr"] = self.lr

    def decay(self, factor: float) -> None:
        """Multiply the learning rate by ``factor`` (gradient methods; no effect on bfgs and lm)."""
        if factor != 1.0 and self.method in ("adam", "sgd", "lbfgs"):
            self.set_lr(self.lr * factor)

    # -- the step ---------------------------------------------------------------------------------
    def step(self, closure) -> float:
        """One step; returns the loss the method reports for it (the loss at the start point for adam
        and sgd, at the accepted point for bfgs and lm), or NaN for a step that blew up and was undone."""
        start = [v.detach().clone() for v in self.variables]
        try:
            loss = self._step(closure)
            if not math.isfinite(loss):
                raise SimulationError("the loss is not finite")
        except SimulationError:
            self.blowups += 1
            with torch.no_grad():
                for variable, value in zip(self.variables, start):
                    variable.copy_(value)
            self.set_lr(self.lr * 0.5)
            self.loss_scale = None
            self.inner = self._build()
            return float("nan")
        return loss

    def _step(self, closure) -> float:
        if self.method == "lm":
            def residuals():
                with torch.no_grad():
                    value = closure()
                if value.ndim != 1:
                    raise ConfigError("Levenberg-Marquardt needs a closure that returns the residual vector")
                return value

            return float(self.inner.step(residuals))
        if self.method in ("adam", "sgd"):
            self.inner.zero_grad()
            loss = _reduce(closure())
            loss.backward()
            self._check_gradient()
            self.inner.step()
            return float(loss.detach())
        seen = {}

        def scalar_closure():
            self.inner.zero_grad()
            loss = _reduce(closure())
            value = float(loss.detach())
            seen.setdefault("first", value)
            seen["last"] = value
            if self.method == "lbfgs":
                if self.loss_scale is None:
                    self.loss_scale = 1.0 / max(value, 1e-30)
                loss = loss * self.loss_scale
            loss.backward()
            self._check_gradient()
            return loss.detach()

        result = self.inner.step(scalar_closure)
        if self.method == "bfgs":
            return float(result)
        return seen.get("last", float("nan"))

    def _check_gradient(self) -> None:
        for v in self.variables:
            if v.grad is not None and not bool(torch.isfinite(v.grad).all()):
                raise SimulationError("the gradient is not finite")

    # -- checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"method": self.method, "lr": self.lr, "blowups": self.blowups, "loss_scale": self.loss_scale,
                "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["method"] != self.method:
            raise ConfigError(f"optimiser state is for {state['method']}, not {self.method}")
        self.lr, self.blowups, self.loss_scale = state["lr"], state["blowups"], state["loss_scale"]
        self.inner = self._build()
        self.inner.load_state_dict(state["inner"])
        self.set_lr(self.lr)


def _reduce(value: torch.Tensor) -> torch.Tensor:
    """A residual vector becomes its mean square; a scalar loss stays as it is."""
    return value if value.ndim == 0 else (value ** 2).mean()


__all__ = ["METHODS", "Optimiser"]

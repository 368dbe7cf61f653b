"""The local optimisation of one instance: a schedule of phases over one :class:`wsim.optim.Optimiser`.

Phases: the main optimiser (``optim.optimizer``: adam, sgd, lbfgs or lm) for ``optim.iterations``
steps, with the loss over a horizon that grows to the whole video (``loss.horizon_*``), then
``optim.polish_iterations`` steps of ``optim.polish`` (bfgs or lm) on the whole video; for the first
``optim.tied_iterations`` steps per-element estimates share their mean value.

The estimate is the lowest-loss values evaluated over the whole video (never a partial horizon's).
When the run ends, :meth:`Optimisation.convergence` says whether it converged and why: the loss fell
below ``optim.tolerance``, a quasi-Newton method (bfgs, lm) found no step that lowers it, or it changed by less than
:data:`PLATEAU_RTOL` over the last :data:`PLATEAU_WINDOW` steps; otherwise (the budget ran out while the
loss still fell, or the loss never covered the whole video) the instance is ``not_converged``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..errors import SimulationError
from ..harness import load_checkpoint, progress_bar, save_checkpoint, to_device
from ..optim import Optimiser
from .metrics import short, summary_of
from .spaces import from_space, space_bounds, to_space

PLATEAU_WINDOW = 5  # steps over the whole video
PLATEAU_RTOL = 1e-3  # relative change of the best loss over that window that counts as converged


class Optimisation:
    """The optimisation state of an instance: variables, optimiser, history, best estimate, checkpoint."""

    def __init__(self, instance, initial: dict | None = None, label: str | None = None,
                 fixed: tuple[str, ...] = (), polish_only: bool = False):
        """Start from ``initial`` (default: the instance's drawn initial guess); ``label`` names the run
        in the progress bar and the loss history (restarts, see :mod:`wsim.sysid.restarts`). The
        parameters named in ``fixed`` keep their initial values (a profile of the loss over them);
        ``polish_only`` runs the polish phase alone, on the whole video."""
        self.instance = instance
        self.label = label
        self.fixed = tuple(fixed)
        start = instance.initial if initial is None else initial
        self.variables = {p.name: to_space(p, start[p.name]).clone().requires_grad_(p.name not in self.fixed)
                          for p in instance.params}
        self.lr = instance.config.optim.lr
        self.iteration = instance.config.optim.iterations if polish_only else 0
        self.phase = self.current_phase()
        self.optimizer = self._optimizer()
        self.evaluations = 0
        self.history: list[dict] = []
        self.best: tuple[float, dict] | None = None  # (loss over the whole video, values)
        self.status = "running"
        self.blowups = 0
        self.elapsed = 0.0
        self.stopped_by = None  # why the loop ended early: "tolerance" or "converged"

    @property
    def total(self) -> int:
        config = self.instance.config
        if config.method not in ("gradsim", "diffphysics"):
            return 0
        return config.optim.iterations + config.optim.polish_iterations

    def polishing(self) -> bool:
        o = self.instance.config.optim
        return o.polish_iterations > 0 and self.iteration >= o.iterations

    def tied(self) -> bool:
        """Per-element estimates share their mean value for the first ``optim.tied_iterations`` steps."""
        return self.iteration < self.instance.config.optim.tied_iterations

    def current_phase(self) -> tuple[bool, bool]:
        return self.polishing(), self.tied()

    def method(self) -> str:
        o = self.instance.config.optim
        return o.polish if self.polishing() else o.optimizer

    def _optimizer(self, method: str | None = None) -> Optimiser:
        o = self.instance.config.optim
        free = [v for name, v in self.variables.items() if name not in self.fixed]
        return Optimiser(free, method or self.method(), lr=self.lr, max_step=o.polish_lr)

    def values(self, detach: bool = False) -> dict:
        out = {}
        tied = self.tied()
        for p in self.instance.params:
            u = self.variables[p.name]
            if tied and p.estimate_per == "all":
                # the mean over elements (keeping the element's own shape), so every element moves together
                u = u.mean(dim=0, keepdim=True).expand_as(u)
            v = from_space(p, u)
            out[p.name] = v.detach() if detach else v
        return out

    def residuals(self) -> torch.Tensor:
        """The residuals of the current values over the current horizon (recording the best values
        evaluated over the whole video); the closure of every optimiser step."""
        self.evaluations += 1
        values = self.values()
        residuals, _ = self.instance.residuals(values, self.iteration)
        value = float((residuals.detach() ** 2).mean())
        full = self.instance.horizon(self.iteration) == self.instance.frames - 1
        if full and math.isfinite(value) and (self.best is None or value < self.best[0]):
            self.best = (value, {k: v.detach().clone() for k, v in values.items()})
        return residuals

    # -- checkpoint -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"iteration": self.iteration, "phase": list(self.phase), "evaluations": self.evaluations,
                "lr": self.lr, "history": self.history, "elapsed": self.elapsed, "blowups": self.blowups,
                "variables": {k: v.detach().cpu() for k, v in self.variables.items()},
                "optimizer": self.optimizer.state_dict(), "stopped_by": self.stopped_by,
                "best": None if self.best is None else (self.best[0], {k: v.cpu() for k, v in self.best[1].items()})}

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.state(), self.instance.stamp)

    def load(self, path: Path) -> None:
        state = load_checkpoint(path, self.instance.stamp)
        with torch.no_grad():
            for name, value in state["variables"].items():
                self.variables[name].copy_(value.to(self.variables[name].device))
        self.iteration, self.evaluations, self.lr = state["iteration"], state["evaluations"], state["lr"]
        self.phase = tuple(state["phase"])
        # the optimiser of the saved phase: a checkpoint written after the last main step holds the main
        # optimiser's state; the next step switches to the polish, as it would have without the stop
        o = self.instance.config.optim
        self.optimizer = self._optimizer(o.polish if self.phase[0] else o.optimizer)
        self.optimizer.load_state_dict(state["optimizer"])
        self.history, self.elapsed, self.blowups = state["history"], state["elapsed"], state["blowups"]
        self.stopped_by = state["stopped_by"]
        self.best = to_device(state["best"], self.instance.torch_device)

    # -- loop -----------------------------------------------------------------------------------
    def step(self) -> float:
        o = self.instance.config.optim
        if self.current_phase() != self.phase:
            if self.phase[1] and not self.tied():  # untie: every element starts from the shared value
                with torch.no_grad():
                    for p in self.instance.params:
                        if p.estimate_per == "all":
                            u = self.variables[p.name]
                            u.copy_(u.mean(dim=0, keepdim=True).expand_as(u))
            self.phase = self.current_phase()
            self.optimizer = self._optimizer()
        blowups = self.optimizer.blowups
        loss = self.optimizer.step(self.residuals)
        self.blowups += self.optimizer.blowups - blowups
        self.lr = self.optimizer.lr
        self.project()
        if not self.polishing():
            self.optimizer.decay(o.lr_decay)
            self.lr = self.optimizer.lr
        return loss

    def project(self) -> None:
        """Put every variable back inside its parameter's bounds. The values are clamped there anyway,
        but a variable left beyond a bound sits where the clamp has no gradient and could never return."""
        with torch.no_grad():
            for p in self.instance.params:
                bounds = space_bounds(p)
                if bounds is not None:
                    self.variables[p.name].clamp_(*bounds)

    def run(self, checkpoint: Path | None, progress: bool = True) -> None:
        config = self.instance.config
        total = self.total
        description = f"{config.name} seed {self.instance.seed}" + (f" {self.label}" if self.label else "")
        bar = progress_bar(total, description, self.iteration, progress)
        try:
            while self.iteration < total and self.stopped_by is None:
                started = time.perf_counter()
                before = self.values(detach=True)
                full = self.instance.horizon(self.iteration) == self.instance.frames - 1
                loss = self.step()
                self.history.append({"iteration": self.iteration, "loss": loss, "full": full,
                                     "values": {k: summary_of(v) for k, v in before.items()}})
                self.iteration += 1
                self.elapsed += time.perf_counter() - started
                estimates = " ".join(f"{k}={short(v)}" for k, v in self.values(detach=True).items())
                bar.set_postfix_str(f"loss={loss:.3e} {estimates}")
                bar.update(1)
                if config.optim.tolerance > 0 and self.best is not None and self.best[0] < config.optim.tolerance:
                    self.stopped_by = "tolerance"
                elif self.optimizer.converged:  # a quasi-Newton method found no step that lowers the loss
                    if self.tied() and self.iteration < total:
                        self.iteration = config.optim.tied_iterations  # go on untied
                        bar.update(min(self.iteration, total) - bar.n)
                    elif self.instance.horizon(self.iteration) == self.instance.frames - 1:
                        self.stopped_by = "converged"
                    else:  # converged on a partial horizon: the curriculum goes on
                        self.optimizer = self._optimizer()
                if checkpoint is not None and (self.iteration % config.optim.checkpoint_every == 0
                                               or self.iteration >= total or self.stopped_by):
                    self.save(checkpoint)
        except KeyboardInterrupt:
            self.status = "interrupted"
            if checkpoint is not None:
                self.save(checkpoint)
            raise
        finally:
            bar.close()
        self.status = "done" if self.convergence()["converged"] else "not_converged"

    def convergence(self) -> dict:
        """``{"converged": bool, "reason": str}`` for the run as it stands (see the module docstring)."""
        config = self.instance.config
        if self.total == 0:
            return {"converged": True, "reason": f"baseline '{config.method}': no optimisation"}
        if self.best is None:
            return {"converged": False, "reason": "the loss never covered the whole video: the horizon curriculum "
                    f"(loss.horizon_iterations = {config.loss.horizon_iterations}) outlasted the "
                    f"{self.iteration} steps run, or every full-video evaluation failed"}
        best = self.best[0]
        if self.stopped_by == "tolerance":
            return {"converged": True, "reason": f"loss {best:.3e} < optim.tolerance {config.optim.tolerance:g}"}
        if self.stopped_by == "converged":
            return {"converged": True, "reason": f"{self.method()} found no step that lowers the loss {best:.3e}"}
        running = []  # the best full-video loss after each full-video step
        for h in self.history:
            if h.get("full") and math.isfinite(h["loss"]):
                running.append(min(h["loss"], running[-1]) if running else h["loss"])
        if len(running) > PLATEAU_WINDOW:
            before = running[-PLATEAU_WINDOW - 1]
            change = (before - running[-1]) / max(before, 1e-300)
            if change <= PLATEAU_RTOL:
                return {"converged": True, "reason": f"the loss changed by {change:.1e} (relative) over the last "
                        f"{PLATEAU_WINDOW} steps"}
            return {"converged": False, "unfinished": True,
                    "reason": f"the step budget ran out while the loss still fell "
                    f"({change:.1%} over the last {PLATEAU_WINDOW} steps): raise optim.iterations or "
                    "optim.polish_iterations"}
        return {"converged": False, "unfinished": True,
                "reason": f"only {len(running)} steps over the whole video (at least "
                f"{PLATEAU_WINDOW + 1} are needed to tell a plateau): raise optim.iterations or "
                "optim.polish_iterations"}

    def estimate(self) -> dict:
        """The estimate: the lowest-loss values seen (the current ones when nothing was evaluated)."""
        current = self.values(detach=True)
        if self.best is None:
            return current
        # the current values were not evaluated yet; evaluate them once so the best is honest
        with torch.no_grad():
            try:
                loss, _ = self.instance.loss(current)
                if math.isfinite(float(loss)) and float(loss) < self.best[0]:
                    self.best = (float(loss), current)
            except SimulationError:
                pass
        return self.best[1]

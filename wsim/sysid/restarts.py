"""Screened restarts: a global search around the local optimiser (``optim.restarts``).

A local optimiser (Adam, then BFGS or Levenberg-Marquardt) ends in the minimum of the basin it starts
in, and some experiments have several. Rigid contact is the example: a slide that slows down can be
explained by Coulomb friction (large ``kf``, small ``mu``) or by the viscous regime of the relaxed
friction law (small ``kf``, ``mu`` barely acting), and the two basins are separated by a ridge in the
loss even for 3D supervision. After the first optimisation, each of ``optim.restarts`` rounds

1. draws ``optim.restart_candidates`` points: the parameters named in ``optim.restart_params`` (all
   of them when empty) from a scrambled Sobol sequence over their sampling range ``[low, high]``
   (uniform in their optimisation space: log-uniform for ``space: log``), every other parameter at the
   best estimate so far;
2. evaluates the loss of each over the whole video (forward only: one rollout and render, no gradient);
3. runs the local optimisation again (the same schedule) from the ``optim.restart_starts`` lowest;
   with ``optim.restart_refine`` > 0, each of those is first refined by a forward-only Nelder-Mead
   search over the round's parameters (:meth:`Restarts._refine`) and the run from it is the polish;

and the estimate is the lowest-loss one of all runs. Every run uses only the video (or, for the
DiffPhysics baseline, its 3D targets), never the truth. Draws are seeded by the instance seed and the
round, so a run is reproducible, and an interrupted search resumes (``--resume``) from
``restarts.pt`` and the interrupted run's own checkpoint.

A profile search (``optim.profile``, :meth:`Restarts._profile`) comes first when configured: the polish
at ``optim.profile_points`` fixed values of one parameter, the others free, then a free polish from the
best of them (runs labelled ``profile``).

Escalation (``optim.escalate``, :meth:`Restarts.escalate`): when the best loss after these rounds is
above what the target's noise allows (:func:`wsim.sysid.uncertainty.noise_check`), ``optim.escalate``
further rounds draw *every* parameter, whatever ``restart_params`` says: the configured rounds
searched where a basin was expected, and the loss says the estimate is in none of them.

Final refinement (``optim.final_refine``, :meth:`Restarts.settle`): when the loss is still above the
noise allowance after that, a Nelder-Mead search over every parameter from each of the best runs, then
the polish (gradient polishes can stall short of a minimum the loss still has).

Extension (``optim.polish_extensions``, :meth:`Restarts.extend`): last, while the best run's step budget
ran out before it converged (its loss still falling), further polishes continue from it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import SimulationError
from ..harness import load_checkpoint, save_checkpoint, to_device
from .metrics import summary_of
from .optimisation import Optimisation
from .spaces import from_space, to_space


class Restarts:
    """The screened restarts of one instance after its first :class:`Optimisation` ``first``."""

    def __init__(self, instance, first: Optimisation, out: Path):
        self.instance = instance
        self.first = first
        self.out = Path(out)
        o = instance.config.optim
        self.rounds, self.candidates, self.starts = o.restarts, o.restart_candidates, o.restart_starts
        self.refine = o.restart_refine
        names = list(o.restart_params) or [p.name for p in instance.params]
        self.params = [p for p in instance.params if p.name in names]
        self.escalation_rounds = 0  # rounds over every parameter after the configured ones (escalate())
        self.profile = next((p for p in instance.params if p.name == o.profile), None)
        self.profile_points = o.profile_points
        self.check: dict | None = None  # the noise check that decided on escalation
        self.runs: list[dict] = []  # finished restart runs (without their histories)
        self.histories: list[list[dict]] = []
        self.screening_evaluations = 0
        self.elapsed = 0.0
        self.iterations = 0
        self.evaluations = 0
        self.best: dict | None = None  # the best restart run (see winner())
        self.estimates: list[tuple[float, dict]] = []  # (best loss, estimate) of every run after the first
        self.chosen: dict[int, list[tuple[float, dict]]] = {}  # per round: the screened starting points
        self._first: tuple[int, dict] | None = None  # (first run's iteration, its estimate)

    # -- candidates -------------------------------------------------------------------------
    def _round_params(self, round_index: int) -> list:
        return self.params if round_index < self.rounds else list(self.instance.params)

    def _label(self, round_index: int, k: int) -> str:
        if round_index < self.rounds:
            return f"restart {round_index + 1}.{k + 1}"
        return f"escalation {round_index - self.rounds + 1}.{k + 1}"

    def _draw(self, round_index: int, base: dict) -> list[dict]:
        """``restart_candidates`` starting points: the round's parameters from a scrambled Sobol
        sequence over their ranges (one dimension per scalar of the parameter's element), the rest
        at ``base``."""
        params = self._round_params(round_index)
        shapes = [self.instance.value_shape(p, "one") for p in params]
        sizes = [int(np.prod(s)) if s else 1 for s in shapes]
        engine = torch.quasirandom.SobolEngine(sum(sizes), scramble=True, seed=self.instance.seed * 1009 + round_index)
        draws = engine.draw(self.candidates).double()
        device = self.instance.torch_device
        points = []
        for row in draws:
            values = {k: v.detach().clone() for k, v in base.items()}
            column = 0
            for p, shape, size in zip(params, shapes, sizes):
                u = row[column:column + size].reshape(shape)
                column += size
                lo = to_space(p, torch.tensor(float(p.low), dtype=torch.float64))
                hi = to_space(p, torch.tensor(float(p.high), dtype=torch.float64))
                value = from_space(p, lo + (hi - lo) * u).float().to(device)
                values[p.name] = torch.broadcast_to(value, tuple(base[p.name].shape)).clone()
            points.append(values)
        return points

    def _loss(self, values: dict) -> float:
        """The loss of ``values`` over the whole video, forward only (inf for a blow-up)."""
        self.screening_evaluations += 1
        try:
            with torch.no_grad():
                loss = float(self.instance.loss(values)[0])
        except SimulationError:
            return math.inf
        return loss if math.isfinite(loss) else math.inf

    def _screen(self, points: list[dict]) -> list[tuple[float, int]]:
        return sorted((self._loss(values), index) for index, values in enumerate(points))

    def _refine(self, round_index: int, start: dict) -> tuple[float, dict]:
        """A Nelder-Mead search (forward only, at most ``optim.restart_refine`` rollouts) from ``start``
        over the round's parameters in their optimisation space, the others held. A screen of a few
        dozen points lands beside a narrow curved valley (rigid contact's kf-mu) more often than in
        it, and the gradient steps that follow leave a valley floor they start next to; the simplex,
        first as wide as half the screen's spacing, walks along it."""
        params = self._round_params(round_index)
        sizes = [int(np.prod(self.instance.value_shape(p, "one")) or 1) for p in params]
        spacing = self.candidates ** (-1.0 / sum(sizes))
        widths = [float(to_space(p, torch.tensor(float(p.high), dtype=torch.float64))
                        - to_space(p, torch.tensor(float(p.low), dtype=torch.float64))) for p in params]
        steps = np.concatenate([np.full(size, 0.5 * spacing * w) for size, w in zip(sizes, widths)])
        return self._nelder_mead(params, start, steps, self.refine)

    def _nelder_mead(self, params: list, start: dict, steps: np.ndarray, budget: int) -> tuple[float, dict]:
        """Nelder-Mead over ``params`` (one dimension per scalar of an element's value, added to every
        element) from ``start`` in their optimisation space, the first simplex ``steps`` wide, at most
        ``budget`` forward rollouts; returns the best loss and values."""
        from scipy.optimize import minimize

        shapes = [self.instance.value_shape(p, "one") for p in params]
        sizes = [int(np.prod(s)) if s else 1 for s in shapes]
        origin = {p.name: to_space(p, start[p.name].double()) for p in params}

        def values_at(x: np.ndarray) -> dict:
            values = {k: v.detach().clone() for k, v in start.items()}
            column = 0
            for p, shape, size in zip(params, shapes, sizes):
                delta = torch.as_tensor(x[column:column + size], dtype=torch.float64).reshape(shape)
                column += size
                values[p.name] = from_space(p, origin[p.name] + delta).to(start[p.name])
            return values

        simplex = np.vstack([np.zeros(len(steps)), np.diag(steps)])
        result = minimize(lambda x: self._loss(values_at(x)), np.zeros(len(steps)), method="Nelder-Mead",
                          options={"initial_simplex": simplex, "maxfev": budget, "xatol": 1e-7, "fatol": 0.0})
        return float(result.fun), values_at(result.x)

    def settle(self, resume: bool = False, progress: bool = True) -> None:
        """After :meth:`escalate`, when the best loss is still above what the target's noise allows and
        ``optim.final_refine`` > 0: a Nelder-Mead search over every parameter (forward only, that many
        rollouts, first steps 5 % of each log-space parameter) from each of the ``optim.restart_starts``
        lowest-loss runs, then the polish from it (runs labelled ``refine``). Gradient polishes can stall
        short of a minimum the loss still has (rigid contact on a many-toothed gear: BFGS and LM find no
        step at 3.7e-7 while a simplex walks on to 5e-13)."""
        budget = self.instance.config.optim.final_refine
        if not budget:
            return
        if "refine" not in self.chosen:
            from .uncertainty import noise_check

            check = noise_check(self.instance, self.winner()["loss"])
            starts = []
            if check["applicable"] and not check["explained"]:
                params = list(self.instance.params)
                steps = np.concatenate([np.full(int(np.prod(self.instance.value_shape(p, "one")) or 1),
                                                0.05 if p.space != "linear" else 0.01 * (p.high - p.low))
                                        for p in params])
                self.winner()  # fills self._first, the first run's estimate
                first_loss = self.first.best[0] if self.first.best is not None else math.inf
                pool = sorted(self.estimates + [(first_loss, self._first[1])], key=lambda item: item[0])
                seen = set()
                for loss, values in pool:
                    if len(starts) == self.starts or not math.isfinite(loss):
                        break
                    if loss not in seen:  # a polish that moved nothing repeats its start's estimate
                        seen.add(loss)
                        starts.append(self._nelder_mead(params, values, steps, budget))
            self.chosen["refine"] = starts
            self._save()
        done = {r["start"] for r in self.runs if r["round"] == "refine"}
        for k, (loss, start) in enumerate(self.chosen["refine"]):
            if k not in done:
                self._run_one("refine", k, loss, start, resume, progress, label=f"refine {k + 1}",
                              params=list(self.instance.params))

    # -- state ------------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.out / "restarts.pt"

    def _save(self) -> None:
        state = {"runs": self.runs, "histories": self.histories, "chosen": to_device(self.chosen, "cpu"),
                 "screening_evaluations": self.screening_evaluations, "elapsed": self.elapsed,
                 "iterations": self.iterations, "evaluations": self.evaluations,
                 "best": to_device(self.best, "cpu"), "escalation_rounds": self.escalation_rounds,
                 "estimates": to_device(self.estimates, "cpu"),
                 "check": self.check}
        save_checkpoint(self._state_path(), state, self.instance.stamp)

    def _load(self) -> None:
        if not self._state_path().exists():
            return
        state = load_checkpoint(self._state_path(), self.instance.stamp)
        device = self.instance.torch_device
        self.runs, self.histories = state["runs"], state["histories"]
        self.chosen = to_device(state["chosen"], device)
        self.screening_evaluations, self.elapsed = state["screening_evaluations"], state["elapsed"]
        self.iterations, self.evaluations = state["iterations"], state["evaluations"]
        self.best = to_device(state["best"], device)
        self.estimates = to_device(state.get("estimates", []), device)
        self.escalation_rounds, self.check = state.get("escalation_rounds", 0), state.get("check")

    # -- search -----------------------------------------------------------------------------
    def winner(self) -> dict:
        """The lowest-loss run so far, first run included: ``{"label", "loss", "values", "convergence"}``.
        The printed choice, the reported estimate and its status all come from this one record."""
        # Optimisation.estimate() evaluates the current values once: do it once per state of the first run
        if self._first is None or self._first[0] != self.first.iteration:
            self._first = (self.first.iteration, self.first.estimate())
        first_loss = self.first.best[0] if self.first.best is not None else math.inf
        if self.best is not None and (self.best["loss"] < first_loss or (
                self.best["loss"] == first_loss and self.best.get("round") == "extension")):
            return self.best
        return {"label": "first run", "loss": first_loss, "values": self._first[1],
                "convergence": self.first.convergence()}

    def _profile(self, resume: bool, progress: bool) -> None:
        """The profile search of ``optim.profile`` (see the module docstring); its grid and the best point
        are kept in ``chosen`` so that a resumed search goes on with the same ones."""
        p, tolerance = self.profile, self.instance.config.optim.tolerance
        done = {r["start"] for r in self.runs if r["round"] == "profile"}
        if "profile" not in self.chosen:
            winner = self.winner()
            if tolerance > 0 and winner["loss"] < tolerance:
                return
            lo = to_space(p, torch.tensor(float(p.low), dtype=torch.float64))
            hi = to_space(p, torch.tensor(float(p.high), dtype=torch.float64))
            points = []
            for u in torch.linspace(0.0, 1.0, self.profile_points, dtype=torch.float64):
                values = {k: v.detach().clone() for k, v in winner["values"].items()}
                value = from_space(p, lo + (hi - lo) * u).float().to(self.instance.torch_device)
                values[p.name] = torch.full_like(values[p.name], float(value))
                points.append((math.nan, values))
            self.chosen["profile"] = points
            self.chosen["profile_best"] = (math.inf, None)
            self._save()
        for k, (_, start) in enumerate(self.chosen["profile"]):
            if k in done:
                continue
            label = f"profile {p.name}={float(start[p.name].reshape(-1)[0]):.4g}"
            loss, estimate = self._run_one("profile", k, math.nan, start, resume, progress, label=label,
                                           fixed=(p.name,), params=[p])
            if loss < self.chosen["profile_best"][0]:
                self.chosen["profile_best"] = (loss, estimate)
                self._save()
        k = len(self.chosen["profile"])
        best = self.chosen["profile_best"][1]
        if k not in done and best is not None:
            self._run_one("profile", k, math.nan, best, resume, progress, label="profile polish",
                          params=list(self.instance.params))

    def run(self, resume: bool = False, progress: bool = True) -> None:
        if resume:
            self._load()
        if self.profile is not None:
            self._profile(resume, progress)
        tolerance = self.instance.config.optim.tolerance
        done = {(r["round"], r["start"]) for r in self.runs}
        for round_index in range(self.rounds + self.escalation_rounds):
            if all((round_index, k) in done for k in range(self.starts)):
                continue
            if round_index not in self.chosen:
                winner = self.winner()
                if tolerance > 0 and winner["loss"] < tolerance:
                    return
                started = time.perf_counter()
                points = self._draw(round_index, winner["values"])
                chosen = [(loss, points[index]) for loss, index in self._screen(points)[: self.starts]]
                if self.refine:
                    chosen = [self._refine(round_index, start) if math.isfinite(loss) else (loss, start)
                              for loss, start in chosen]
                self.chosen[round_index] = chosen
                self.elapsed += time.perf_counter() - started
                self._save()  # a resumed search restarts this round's runs from the same points
            for k, (screened_loss, start) in enumerate(self.chosen[round_index]):
                if (round_index, k) in done or not math.isfinite(screened_loss):
                    continue
                self._run_one(round_index, k, screened_loss, start, resume, progress)

    def escalate(self, progress: bool = True) -> None:
        """After :meth:`run`: check the best loss against the target's noise once (the decision is saved,
        so a resumed search makes the same one) and, when it is not explained and ``optim.escalate`` > 0,
        run that many further rounds over every parameter."""
        if self.check is None:
            from .uncertainty import noise_check

            self.check = noise_check(self.instance, self.winner()["loss"])
            if self.check["applicable"] and not self.check["explained"]:
                self.escalation_rounds = self.instance.config.optim.escalate
            self._save()
        if self.escalation_rounds:
            self.run(resume=False, progress=progress)  # a resumed search already finished its started runs

    def extend(self, resume: bool = False, progress: bool = True) -> None:
        """After :meth:`escalate`: while the best run's budget ran out before it converged (its loss still
        falling, or too few steps to tell: unfinished, not stuck), up to ``optim.polish_extensions``
        polishes continue from it."""
        done = {r["start"] for r in self.runs if r["round"] == "extension"}
        for k in range(self.instance.config.optim.polish_extensions):
            if k in done:
                continue
            convergence = self.winner()["convergence"]
            if convergence.get("converged") or not convergence.get("unfinished"):
                return
            self._run_one("extension", k, math.nan, self.winner()["values"], resume, progress,
                          label=f"extension {k + 1}", params=list(self.instance.params))

    def _run_one(self, round_index, k: int, screened_loss: float, start: dict, resume: bool, progress: bool,
                 label: str | None = None, fixed: tuple[str, ...] = (), params: list | None = None) -> tuple:
        """One local optimisation from ``start`` (the whole schedule; a profile run, ``round_index``
        "profile", with ``fixed`` held, an "extension" and a run from a refined start run the polish
        alone); returns
        its best loss and estimate."""
        polish_only = round_index in ("profile", "extension", "refine") or self.refine > 0
        label = label or self._label(round_index, k)
        optimisation = Optimisation(self.instance, initial=start, label=label, fixed=fixed, polish_only=polish_only)
        checkpoint = self.out / f"restart_{round_index}_{k}.pt"
        if resume and checkpoint.exists():
            optimisation.load(checkpoint)
        optimisation.run(checkpoint, progress)
        estimate = {name: v.detach().clone() for name, v in optimisation.estimate().items()}  # never changed in place
        loss = optimisation.best[0] if optimisation.best is not None else math.inf
        convergence = optimisation.convergence()
        # an extension continues the winner: at an equal loss it holds the same estimate, and its
        # convergence record (converged where the winner's budget ran out) is the newer one
        if self.best is None or loss < self.best["loss"] or (round_index == "extension" and loss <= self.best["loss"]):
            self.best = {"label": label, "round": round_index, "loss": loss, "convergence": convergence,
                         "values": estimate}
        self.estimates.append((loss, estimate))
        self.runs.append({"round": round_index, "start": k, "label": label, "screened_loss": screened_loss,
                          "start_values": {p.name: summary_of(start[p.name])
                                           for p in (params or self._round_params(round_index))},
                          "estimate": {name: summary_of(v) for name, v in estimate.items()},
                          "final_loss": loss, "iterations": optimisation.iteration,
                          "converged": convergence["converged"]})
        self.histories.append([dict(h, run=label) for h in optimisation.history])
        self.iterations += optimisation.iteration
        self.evaluations += optimisation.evaluations
        self.elapsed += optimisation.elapsed
        self._save()
        checkpoint.unlink(missing_ok=True)
        return loss, estimate

    def summary(self) -> dict:
        """The ``restarts`` entry of ``results.json``."""
        winner = self.winner()
        first_loss = self.first.best[0] if self.first.best is not None else None
        return {"rounds": self.rounds, "candidates": self.candidates, "starts": self.starts,
                "params": [p.name for p in self.params], "first_run_loss": first_loss, "final_loss": winner["loss"],
                "chosen": winner["label"], "runs": self.runs, "screening_evaluations": self.screening_evaluations,
                "time_s": self.elapsed, "escalation": {"rounds": self.escalation_rounds, "check": self.check},
                "profile": None if self.profile is None else {"param": self.profile.name,
                                                               "points": self.profile_points}}

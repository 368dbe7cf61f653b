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

and the estimate is the lowest-loss one of all runs. Every run uses only the video (or, for the
DiffPhysics baseline, its 3D targets), never the truth. Draws are seeded by the instance seed and the
round, so a run is reproducible, and an interrupted search resumes (``--resume``) from
``restarts.pt`` and the interrupted run's own checkpoint.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import SimulationError
from ..export import atomic_path
from .experiment import Optimisation, _summary_of, from_space, to_space


class Restarts:
    """The screened restarts of one instance after its first :class:`Optimisation` ``first``."""

    def __init__(self, instance, first: Optimisation, out: Path):
        self.instance = instance
        self.first = first
        self.out = Path(out)
        o = instance.config.optim
        self.rounds, self.candidates, self.starts = o.restarts, o.restart_candidates, o.restart_starts
        names = list(o.restart_params) or [p.name for p in instance.params]
        self.params = [p for p in instance.params if p.name in names]
        self.runs: list[dict] = []  # finished restart runs (without their histories)
        self.histories: list[list[dict]] = []
        self.screening_evaluations = 0
        self.elapsed = 0.0
        self.iterations = 0
        self.evaluations = 0
        self.best: tuple[float, dict] | None = None  # the best restart run's (loss, values)
        self.chosen: dict[int, list[tuple[float, dict]]] = {}  # per round: the screened starting points
        self._first: tuple[int, dict] | None = None  # (first run's iteration, its estimate)

    # -- candidates -------------------------------------------------------------------------
    def _draw(self, round_index: int, base: dict) -> list[dict]:
        """``restart_candidates`` starting points: the restart parameters from a scrambled Sobol
        sequence over their ranges (one dimension per scalar of the parameter's element), the rest
        at ``base``."""
        shapes = [self.instance._shape(p, "one") for p in self.params]
        sizes = [int(np.prod(s)) if s else 1 for s in shapes]
        engine = torch.quasirandom.SobolEngine(sum(sizes), scramble=True, seed=self.instance.seed * 1009 + round_index)
        draws = engine.draw(self.candidates).double()
        device = self.instance.torch_device
        points = []
        for row in draws:
            values = {k: v.detach().clone() for k, v in base.items()}
            column = 0
            for p, shape, size in zip(self.params, shapes, sizes):
                u = row[column:column + size].reshape(shape)
                column += size
                lo = to_space(p, torch.tensor(float(p.low), dtype=torch.float64))
                hi = to_space(p, torch.tensor(float(p.high), dtype=torch.float64))
                value = from_space(p, lo + (hi - lo) * u).float().to(device)
                values[p.name] = torch.broadcast_to(value, tuple(base[p.name].shape)).clone()
            points.append(values)
        return points

    def _screen(self, points: list[dict]) -> list[tuple[float, int]]:
        scored = []
        with torch.no_grad():
            for index, values in enumerate(points):
                self.screening_evaluations += 1
                try:
                    loss, _ = self.instance.loss(values)
                    loss = float(loss)
                except SimulationError:
                    loss = math.inf
                scored.append((loss if math.isfinite(loss) else math.inf, index))
        return sorted(scored)

    # -- state ------------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.out / "restarts.pt"

    def _save(self) -> None:
        chosen = {r: [(loss, {k: v.cpu() for k, v in point.items()}) for loss, point in points]
                  for r, points in self.chosen.items()}
        state = {"fingerprint": self.instance.fingerprint(), "runs": self.runs, "histories": self.histories,
                 "chosen": chosen,
                 "screening_evaluations": self.screening_evaluations, "elapsed": self.elapsed,
                 "iterations": self.iterations, "evaluations": self.evaluations,
                 "best": None if self.best is None else (self.best[0], {k: v.cpu() for k, v in self.best[1].items()})}
        with atomic_path(self._state_path()) as temporary:
            torch.save(state, temporary)

    def _load(self) -> None:
        path = self._state_path()
        if not path.exists():
            return
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.instance.fingerprint():
            return  # another config or seed: start the search afresh
        self.runs, self.histories = state["runs"], state["histories"]
        device = self.instance.torch_device
        self.chosen = {r: [(loss, {k: v.to(device) for k, v in point.items()}) for loss, point in points]
                       for r, points in state["chosen"].items()}
        self.screening_evaluations, self.elapsed = state["screening_evaluations"], state["elapsed"]
        self.iterations, self.evaluations = state["iterations"], state["evaluations"]
        if state["best"] is not None:
            self.best = (state["best"][0], {k: v.to(device) for k, v in state["best"][1].items()})

    # -- search -----------------------------------------------------------------------------
    def best_so_far(self) -> tuple[float, dict]:
        """The lowest-loss estimate of the first run and every finished restart."""
        # Optimisation.estimate() evaluates the current values once: do it once per state of the first run
        if self._first is None or self._first[0] != self.first.iteration:
            estimate = self.first.estimate()
            self._first = (self.first.iteration, estimate)
        first = self._first[1]
        first_loss = self.first.best[0] if self.first.best is not None else math.inf
        if self.best is not None and self.best[0] < first_loss:
            return self.best
        return first_loss, first

    def run(self, resume: bool = False, progress: bool = True) -> None:
        if resume:
            self._load()
        tolerance = self.instance.config.optim.tolerance
        done = {(r["round"], r["start"]) for r in self.runs}
        for round_index in range(self.rounds):
            if all((round_index, k) in done for k in range(self.starts)):
                continue
            if round_index not in self.chosen:
                best_loss, base = self.best_so_far()
                if tolerance > 0 and best_loss < tolerance:
                    return
                started = time.perf_counter()
                points = self._draw(round_index, base)
                self.chosen[round_index] = [(loss, points[index]) for loss, index in self._screen(points)[: self.starts]]
                self.elapsed += time.perf_counter() - started
                self._save()  # a resumed search restarts this round's runs from the same points
            for k, (screened_loss, start) in enumerate(self.chosen[round_index]):
                if (round_index, k) in done or not math.isfinite(screened_loss):
                    continue
                label = f"restart {round_index + 1}.{k + 1}"
                optimisation = Optimisation(self.instance, initial=start, label=label)
                checkpoint = self.out / f"restart_{round_index}_{k}.pt"
                if resume and checkpoint.exists():
                    optimisation.load(checkpoint)
                optimisation.run(checkpoint, progress)
                estimate = optimisation.estimate()
                loss = optimisation.best[0] if optimisation.best is not None else math.inf
                if self.best is None or loss < self.best[0]:
                    self.best = (loss, {name: v.detach().clone() for name, v in estimate.items()})
                self.runs.append({"round": round_index, "start": k, "label": label, "screened_loss": screened_loss,
                                  "start_values": {p.name: _summary_of(start[p.name]) for p in self.params},
                                  "final_loss": loss, "iterations": optimisation.iteration})
                self.histories.append([dict(h, run=label) for h in optimisation.history])
                self.iterations += optimisation.iteration
                self.evaluations += optimisation.evaluations
                self.elapsed += optimisation.elapsed
                self._save()
                checkpoint.unlink(missing_ok=True)

    def summary(self) -> dict:
        """The ``restarts`` entry of ``results.json``."""
        first_loss = self.first.best[0] if self.first.best is not None else None
        loss, _ = self.best_so_far()
        chosen = "first run"
        if self.best is not None and (first_loss is None or self.best[0] < first_loss):
            chosen = min(self.runs, key=lambda r: r["final_loss"])["label"]
        return {"rounds": self.rounds, "candidates": self.candidates, "starts": self.starts,
                "params": [p.name for p in self.params], "first_run_loss": first_loss, "final_loss": loss,
                "chosen": chosen, "runs": self.runs, "screening_evaluations": self.screening_evaluations,
                "time_s": self.elapsed}


"""Batched scenes: N independent scenes simulated as one Model, one kernel launch per step for the batch.

Every kernel of a rollout loops over entities (particles, bodies, tetrahedra...), and on a CPU a small
scene's step costs far more in launch overhead than in arithmetic. :func:`concat_models` stacks the
entities of N Models into one (index arrays shifted, one contact material set per scene), so one launch
advances every scene. Scenes never interact: wsim's only contact is with the ground plane, which
every scene of a batch must share (``ground``, ``ground_height``, ``contact_margin``,
``contact_smoothing``, ``gravity``: checked).

:class:`BatchedSimulation` runs N :class:`~wsim.simulation.Simulation` s (same ``dt``, ``substeps`` and
``frames``; meshes and parameters may differ) as one rollout: each scene's parameters are resolved by
its own Simulation (aliases, densities, defaults), concatenated along their entity axis, and the
vertices come back per scene. On a CPU every per-scene value equals a single rollout's bit for bit:
a kernel computes each entity alone, and the atomic sums into a body or particle receive one
scene's terms in the same order as in a single rollout. A scene that blows up (NaN, or a runaway of
:mod:`wsim.integrators.runaway`) is reported as that scene's error, judged against its own bounds.

:mod:`wsim.sysid.lockstep` uses the same pieces to run whole system-identification instances, each in
its own thread, with every rollout of the batch in one launch sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import warp as wp

from .bridge import run_tape_program, to_torch
from .errors import ParameterError, SimulationError
from .model_state import Model
from .parameters import PARAMETERS
from .simulation import Simulation

KINDS = ("particle", "spring", "body", "shape_vertex", "material", "rotor", "tet", "tri", "edge")

# Model array -> (the kind it is per, the kind its values index into or None)
ARRAYS = {
    "particle_radius": ("particle", None), "particle_pinned": ("particle", None),
    "particle_material": ("particle", "material"), "particle_push_start_step": ("particle", None),
    "particle_push_end_step": ("particle", None), "spring_indices": ("spring", "particle"),
    "body_material": ("body", "material"), "body_push_start_step": ("body", None),
    "body_push_end_step": ("body", None), "body_push_point": ("body", None),
    "shape_vertices": ("shape_vertex", None), "shape_vertex_body": ("shape_vertex", "body"),
    "rotor_body": ("rotor", "body"), "rotor_position": ("rotor", None), "rotor_axis": ("rotor", None),
    "rotor_spin": ("rotor", None), "rotor_torque_ratio": ("rotor", None), "rotor_max_thrust": ("rotor", None),
    "tet_indices": ("tet", "particle"), "tet_rest_inverse": ("tet", None), "tet_rest_volume": ("tet", None),
    "tri_indices": ("tri", "particle"), "tri_rest_inverse": ("tri", None), "tri_rest_area": ("tri", None),
    "edge_indices": ("edge", "particle"), "edge_rest_angle": ("edge", None), "edge_rest_weight": ("edge", None),
}
SHARED = ("device", "ground", "ground_height", "contact_margin", "contact_smoothing")
STATE_FINITE = ("particle_q", "particle_qd", "body_q", "body_r", "body_v", "body_w")


def entity_axis(spec) -> tuple[str, int]:
    """The kind of entity a non-global parameter is per, and the axis its entities lie along (1 for the
    ``interval_*`` schedules, whose axis 0 is the frame interval)."""
    if spec.per.startswith("interval_"):
        return spec.per[len("interval_"):], 1
    return spec.per, 0


def _count(model: Model, kind: str) -> int:
    return model.material_count if kind == "material" else int(getattr(model, f"{kind}_count"))


@dataclass
class BatchLayout:
    """Where each scene sits in the batched Model: ``offsets[i][kind]`` and ``counts[i][kind]`` for every
    kind of :data:`KINDS` (``shape_vertex`` counts body surface vertices)."""

    offsets: list[dict]
    counts: list[dict]

    def __len__(self) -> int:
        return len(self.counts)

    def columns(self, i: int, kind: str) -> slice:
        return slice(self.offsets[i][kind], self.offsets[i][kind] + self.counts[i][kind])

    def vertex_index(self, i: int, shape_vertex_total: int) -> np.ndarray:
        """Rows of the batched vertex buffer holding scene ``i``'s buffer (its body vertices, then its
        particles), in its own order."""
        body = np.arange(self.offsets[i]["shape_vertex"], self.offsets[i]["shape_vertex"]
                         + self.counts[i]["shape_vertex"])
        particles = shape_vertex_total + np.arange(self.offsets[i]["particle"], self.offsets[i]["particle"]
                                                   + self.counts[i]["particle"])
        return np.concatenate([body, particles])


def _shared_value(models: list[Model], name: str):
    values = [getattr(m, name) for m in models]
    if any(v != values[0] for v in values[1:]):
        raise ParameterError(f"a batch needs one '{name}' for every scene; got {sorted(set(map(str, values)))}")
    return values[0]


def concat_models(models: list[Model]) -> tuple[Model, BatchLayout]:
    """One Model holding every scene of ``models`` side by side, and where each one went."""
    if not models:
        raise ParameterError("a batch needs at least one scene")
    for i, m in enumerate(models):
        if m.extras.keys() - {"body_density"}:
            raise ParameterError(f"scene {i} of the batch has model extras {sorted(m.extras)} (articulated or "
                                 "robot scenes) that cannot be batched")
    shared = {name: _shared_value(models, name) for name in SHARED}
    counts = [{kind: _count(m, kind) for kind in KINDS} for m in models]
    offsets, running = [], dict.fromkeys(KINDS, 0)
    for c in counts:
        offsets.append(dict(running))
        running = {kind: running[kind] + c[kind] for kind in KINDS}
    layout = BatchLayout(offsets, counts)
    device = shared["device"]
    batched = Model(**shared, material_count=running["material"])
    for kind in KINDS:
        if kind != "material":
            setattr(batched, f"{kind}_count", running[kind])
    for name, (kind, indexes) in ARRAYS.items():
        if not running[kind]:
            continue
        parts = []
        for i, m in enumerate(models):
            if not counts[i][kind]:
                continue
            array = getattr(m, name)
            if array is None:  # a push window no entity of this scene has: empty (never active)
                parts.append(np.zeros(counts[i][kind], dtype=np.int32))
                continue
            value = array.numpy()
            parts.append(value + offsets[i][indexes] if indexes else value)
        if all(getattr(m, name) is None for m in models):
            continue
        dtype = next(getattr(m, name).dtype for m in models if getattr(m, name) is not None)
        setattr(batched, name, wp.array(np.concatenate(parts), dtype=dtype, device=device))
    if running["body"]:
        bodies = [m for m in models if m.body_count]
        batched.body_volume = np.concatenate([m.body_volume for m in bodies])
        batched.body_unit_inertia = np.concatenate([m.body_unit_inertia for m in bodies])
        batched.extras["body_density"] = np.concatenate([m.extras["body_density"] for m in bodies])
    for kind in ("body", "particle"):
        windows = [getattr(m, f"{kind}_push_window") for m, c in zip(models, counts) if c[kind]]
        opened = [w for w in windows if w is not None and w[1] > w[0]]
        setattr(batched, f"{kind}_push_window", None if None in windows else (
            (min(w[0] for w in opened), max(w[1] for w in opened)) if opened else (0, 0)))
    batched.body_names = [f"{i}/{name}" for i, m in enumerate(models) for name in m.body_names]
    batched.defaults = _concat_defaults(models, counts)
    _concat_render(batched, models, layout)
    return batched, layout


def _concat_defaults(models: list[Model], counts: list[dict]) -> dict:
    defaults = {}
    for name in sorted(set().union(*(m.defaults for m in models))):
        spec = PARAMETERS[name]
        if spec.per == "global":
            values = [np.asarray(m.defaults[name]) for m in models if name in m.defaults]
            if any(not np.array_equal(v, values[0]) for v in values[1:]):
                raise ParameterError(f"a batch needs one '{name}' for every scene (a global parameter)")
            defaults[name] = values[0]
            continue
        kind, axis = entity_axis(spec)
        parts = []
        for m, c in zip(models, counts):
            if not c[kind]:
                continue
            if name in m.defaults:
                parts.append(np.asarray(m.defaults[name], dtype=np.float64))
            else:  # an actuator this scene leaves off (a push it does not have): zero
                shape = (1, c[kind]) if axis else (c[kind],)
                parts.append(np.zeros(shape + spec.element_shape()))
        if axis:  # per-interval schedules: a single row stands for every interval, so rows must agree
            rows = {p.shape[0] for p in parts}
            if len(rows) > 1:
                parts = [p if p.shape[0] != 1 else np.repeat(p, max(rows), axis=0) for p in parts]
        defaults[name] = np.concatenate(parts, axis=axis)
    return defaults


def _concat_render(batched: Model, models: list[Model], layout: BatchLayout) -> None:
    """Faces into the batched vertex buffer (every scene in one picture) and per-body vertex starts."""
    total = batched.shape_vertex_count
    faces, starts = [], [0]
    for i, m in enumerate(models):
        rows = layout.vertex_index(i, total)
        if m.render_faces is not None and len(m.render_faces):
            faces.append(rows[np.asarray(m.render_faces, dtype=np.int64)])
        starts.extend(layout.offsets[i]["shape_vertex"] + np.asarray(m.body_vertex_start[1:]))
    batched.render_faces = (np.concatenate(faces) if faces else np.zeros((0, 3))).astype(np.int32)
    batched.body_vertex_start = np.asarray(starts)


class BatchedSimulation:
    """N Simulations rolled out together (see the module docstring).

    ``rollout(params_list)`` takes one parameter dict per scene (the names each scene's
    :meth:`Simulation.rollout` accepts; None: its defaults) and returns one ``[frames, vertices_i, 3]``
    tensor per scene, differentiable as a single rollout's. A scene that blows up raises
    :class:`BatchError`, which lists every failing scene's :class:`SimulationError` (``errors``).
    """

    def __init__(self, simulations: list[Simulation]):
        if not simulations:
            raise ParameterError("a batch needs at least one simulation")
        first = simulations[0]
        for i, s in enumerate(simulations):
            if (s.dt, s.substeps, s.frames) != (first.dt, first.substeps, first.frames):
                raise ParameterError(f"simulation {i} of the batch runs dt={s.dt}, substeps={s.substeps}, "
                                     f"frames={s.frames}; the batch runs dt={first.dt}, substeps={first.substeps}, "
                                     f"frames={first.frames}")
            if s.checkpoint_every is not None and s._segments() is not None:
                raise ParameterError(f"simulation {i} of the batch is checkpointed (checkpoint_every); a batch "
                                     "records one tape")
        self.members = list(simulations)
        model, self.layout = concat_models([s.model for s in simulations])
        # captured graphs when the scenes use them (their results are the tape's, bit for bit)
        self.simulation = Simulation(model, first.dt, first.substeps, first.frames, check_inputs=False,
                                     check_nan=False, check_runaway=False,
                                     graph=any(s.graphed is not None for s in simulations))
        self._vertex_rows = [torch.as_tensor(self.layout.vertex_index(i, model.shape_vertex_count),
                                             device=first.torch_device) for i in range(len(simulations))]

    def __len__(self) -> int:
        return len(self.members)

    def resolve(self, params_list: list[dict | None]) -> tuple[list[dict], dict]:
        """Each scene's resolved parameters, and the batched inputs: for every registry name that any
        scene sets, the scenes' values (or their defaults) concatenated along the entity axis."""
        if len(params_list) != len(self.members):
            raise ParameterError(f"the batch has {len(self.members)} scenes; got {len(params_list)} parameter sets")
        resolved = [sim.resolve(params or {}) for sim, params in zip(self.members, params_list)]
        return resolved, self.concatenate(resolved)

    def concatenate(self, resolved: list[dict]) -> dict:
        inputs = {}
        for name in sorted(set().union(*resolved)):
            spec = PARAMETERS[name]
            if spec.per == "global":
                values = [r.get(name, sim.default(name)) for r, sim in zip(resolved, self.members)]
                if any(not torch.equal(v.detach(), values[0].detach()) for v in values[1:]):
                    raise ParameterError(f"'{name}' is one value for the whole batch (a global parameter); "
                                         "the scenes give different ones")
                inputs[name] = values[0]
                continue
            kind, axis = entity_axis(spec)
            parts = [r[name] if name in r else sim.default(name)
                     for i, (r, sim) in enumerate(zip(resolved, self.members)) if self.layout.counts[i][kind]]
            inputs[name] = torch.cat([p.to(torch.float32) for p in parts], dim=axis)
        return inputs

    def member_part(self, name: str, i: int, value: torch.Tensor) -> torch.Tensor:
        """Scene ``i``'s part of a batched (non-global) parameter tensor ``value``, e.g. its gradient."""
        kind, axis = entity_axis(PARAMETERS[name])
        columns = self.layout.columns(i, kind)
        return value[:, columns] if axis else value[columns]

    def split(self, vertices: torch.Tensor) -> list[torch.Tensor]:
        """Per-scene views ``[frames, vertices_i, 3]`` of a batched vertex tensor (differentiable)."""
        return [vertices[:, rows] for rows in self._vertex_rows]

    def rollout(self, params_list: list[dict | None]) -> list[torch.Tensor]:
        resolved, inputs = self.resolve(params_list)
        (vertices,) = run_tape_program(self.simulation, inputs, self.simulation.graphed)
        errors = self.check(resolved)
        if errors:
            raise BatchError(errors)
        return self.split(vertices)

    # -- per-scene checks -------------------------------------------------------------------------
    def member_buffers(self, i: int) -> dict:
        """Scene ``i``'s columns of the last rollout's per-step buffers (torch views)."""
        out = {}
        for name, array in self.simulation.last_buffers.items():
            kind = name.split("_")[0]  # every State field is per "particle" or per "body"
            out[name] = None if array is None or not self.layout.counts[i][kind] else to_torch(array)[
                :, self.layout.columns(i, kind)]
        return out

    def check(self, resolved: list[dict]) -> dict[int, SimulationError]:
        """Every scene's NaN and runaway check on its part of the last rollout, as its own single
        rollout would run them: ``{scene index: error}`` for the scenes that failed."""
        errors = {}
        for i, sim in enumerate(self.members):
            if not (sim.check_nan or sim.check_runaway) or not sim.steps:
                continue
            buffers = self.member_buffers(i)
            if sim.check_nan:
                bad = first_bad_step(buffers)
                if bad is not None:
                    errors[i] = SimulationError(sim.blowup_message(bad))
                    continue
            if sim.check_runaway:
                params = dict(sim._defaults)
                params.update(resolved[i])
                message = sim.runaway_check().check(params, buffers)
                if message is not None:
                    errors[i] = SimulationError(message)
        return errors


def first_bad_step(buffers: dict) -> int | None:
    """The first physics step whose resulting state (row step + 1) is not finite, or None."""
    bad = None
    for name in STATE_FINITE:
        array = buffers.get(name)
        if array is None:
            continue
        rows = ~torch.isfinite(array.reshape(array.shape[0], -1)).all(dim=1)
        rows[0] = False
        if bool(rows.any()):
            step = int(torch.nonzero(rows)[0, 0]) - 1
            bad = step if bad is None else min(bad, step)
    return bad


class BatchError(SimulationError):
    """Scenes of a batch that blew up: ``errors`` maps a scene's index to its SimulationError."""

    def __init__(self, errors: dict[int, SimulationError]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"scene {i}: {e}" for i, e in sorted(self.errors.items())))

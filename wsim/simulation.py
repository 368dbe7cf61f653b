"""A differentiable rollout: torch parameters -> world-space vertices of every rendered frame.

:class:`Simulation` runs ``(frames - 1) * substeps`` physics steps of ``dt`` seconds; frame k is the
state after ``k * substeps`` steps (frame 0 is the initial state), so the render rate is independent
of the physics rate. Its :meth:`Simulation.rollout` maps a dict of torch parameters to a tensor
``[frames, vertices, 3]`` (body surface vertices first, body by body, then particles) through
:mod:`wsim.bridge`; ``loss.backward()`` fills the gradient of every parameter that requires one.
Every step keeps its own State, so the tape differentiates through time; the step loop does no host
synchronisation. After the forward pass one read of a flag
raises :class:`~wsim.errors.SimulationError` naming the first physics step whose state was not finite,
and :mod:`wsim.integrators.runaway` raises it naming the first step where a body or particle ran away
while staying finite (energy beyond what the scene can supply, a step longer than the scene).

Gradient checkpointing (``Simulation(..., checkpoint_every=K)``, :mod:`wsim.checkpointed`) keeps only
the State at every K-th frame and re-simulates one segment at a time in the backward pass: memory grows
with the segment, not the horizon, and outputs and gradients equal the single tape's (bit for bit on CPU).

Accepted parameter names are the registry's (:mod:`wsim.parameters`) plus these conveniences:
``density`` (kg/m^3, per body: sets ``body_mass = density * volume`` and scales ``body_inertia``),
``body_impulse`` (N s, per body: the push force is impulse / push duration), and short aliases
``ke, kd, kf, mu, mass, inertia, position, orientation, velocity, angular_velocity``. A ``body_mass``
given without ``body_inertia`` scales the default inertia by the same factor (a uniform body).
Scalars and smaller tensors broadcast to the full shape (a scalar ``ke`` is one value for every
material).

Deformable solids: ``young_modulus`` E (Pa) and ``poisson_ratio`` nu (per tetrahedron, 0 <= nu < 0.5)
are accepted instead of ``lame_mu``/``lame_lambda`` (``mu = E / (2 (1 + nu))``,
``lambda = E nu / ((1 + nu)(1 - 2 nu))``); one of the pair alone keeps the other at the value implied by
the model's Lame parameters. Their defaults derive from the model's Lame parameters.
"""

from __future__ import annotations

import numpy as np
import torch
import warp as wp

from . import models as force_models
from .bridge import GraphedProgram, run_tape_program, to_torch
from .checkpointed import CheckpointedRollout, replayed_frame_states
from .device import torch_device
from .errors import ParameterError, SimulationError, check_range
from .integrators import runaway, semi_implicit
from .model_state import Control, Model, State
from .parameters import PARAMETERS, ParameterSpec, declare
from .state_kernels import COPY, body_vertices_to_world, initial_angular_momentum, particles_to_vertices

PARAMETER_SPECS = declare(
    ParameterSpec("particle_position", wp.vec3, "particle", "initial particle position", "m"),
    ParameterSpec("particle_velocity", wp.vec3, "particle", "initial particle velocity", "m/s"),
    ParameterSpec("body_position", wp.vec3, "body", "initial centre-of-mass position", "m"),
    ParameterSpec("body_rotation", wp.quat, "body", "initial orientation, quaternion (x, y, z, w)"),
    ParameterSpec("body_velocity", wp.vec3, "body", "initial linear velocity", "m/s"),
    ParameterSpec("body_angular_velocity", wp.vec3, "body", "initial angular velocity (world)", "rad/s"),
)

ALIASES = {
    "ke": "contact_ke", "kd": "contact_kd", "kf": "contact_kf", "mu": "contact_mu",
    "mass": "body_mass", "inertia": "body_inertia", "position": "body_position",
    "orientation": "body_rotation", "velocity": "body_velocity", "angular_velocity": "body_angular_velocity",
    "impulse": "body_impulse",
}
CONVENIENCE = {"density": (0.0, None), "body_impulse": (None, None), "young_modulus": (0.0, None),
               "poisson_ratio": (0.0, 0.5)}


class Simulation:
    """A rollout of ``model`` over ``frames`` rendered frames with ``substeps`` steps of ``dt`` each.

    ``check_inputs`` validates parameter ranges before the rollout (one host read per parameter);
    ``check_nan`` raises :class:`SimulationError` after the rollout if any state became non-finite;
    ``check_runaway`` raises it if a body or particle ran away while staying finite (energy gained
    beyond what the scene can supply, a step longer than the scene, see :mod:`wsim.integrators.runaway`).

    ``checkpoint_every`` (a number of rendered-frame intervals, i.e. ``K * substeps`` physics steps, or
    None) turns on gradient checkpointing: the rollout is differentiated segment by segment, holding
    the States of at most ``K * substeps + 1`` steps at a time instead of all ``(frames - 1) * substeps + 1``,
    for one extra forward pass (see the module docstring). None (the default), or a ``K`` of at least
    ``frames - 1``, records the whole rollout on one tape. It may be changed between rollouts. With
    checkpointing, :attr:`last_buffers` is None after a rollout and :meth:`frame_states` re-simulates the
    frames from the saved segment starts.
    """

    def __init__(self, model: Model, dt: float, substeps: int, frames: int, check_inputs: bool = True,
                 check_nan: bool = True, check_runaway: bool = True, checkpoint_every: int | None = None,
                 graph: bool = False):
        check_range("sim.dt", dt, 0.0, None)
        if int(substeps) != substeps or substeps < 1:
            raise ParameterError(f"sim.substeps must be an integer >= 1, got {substeps}")
        if int(frames) != frames or frames < 1:
            raise ParameterError(f"sim.frames must be an integer >= 1, got {frames}")
        self.model = model
        self.device = model.device
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.frames = int(frames)
        self.steps = (self.frames - 1) * self.substeps
        self.check_inputs = check_inputs
        self.check_nan = check_nan
        self.check_runaway = check_runaway
        self._runaway = None
        self._last_params = None
        self.torch_device = torch_device(self.device)
        self.input_dtypes = {name: spec.dtype for name, spec in PARAMETERS.items() if self._applies(spec)}
        self._defaults = {}
        self._default_values = {}
        for name, value in model.defaults.items():
            spec = PARAMETERS[name]
            value = np.asarray(value, dtype=np.float32)
            if spec.per.startswith("interval_"):
                value = self._schedule(spec, value)
            self._default_values[name] = value
            self._defaults[name] = wp.array(value, dtype=spec.dtype, device=self.device)
        self.last_buffers = None
        self._bad_step = None
        self._push_seconds = None
        self.checkpoint_every = checkpoint_every
        self._segment_starts = None
        self._last_segments = None
        #: the captured forward and backward graphs that rollouts replay (``graph=True``; not with checkpointing)
        self.graphed = GraphedProgram(self) if graph else None

    @property
    def checkpoint_every(self) -> int | None:
        """Frame intervals per checkpointed segment, or None for one tape over the whole rollout."""
        return self._checkpoint_every

    @checkpoint_every.setter
    def checkpoint_every(self, value) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ParameterError(f"checkpoint_every must be None or an integer >= 1 (frame intervals), got {value}")
        self._checkpoint_every = None if value is None else int(value)

    def _segments(self) -> list[tuple[int, int]] | None:
        """``(first, last)`` frame of every checkpointed segment (it runs the intervals first..last - 1),
        or None when the rollout runs on one tape."""
        every, intervals = self._checkpoint_every, self.frames - 1
        if every is None or every >= intervals:
            return None
        return [(first, min(first + every, intervals)) for first in range(0, intervals, every)]

    # -- parameters -------------------------------------------------------------------------------
    def _applies(self, spec: ParameterSpec) -> bool:
        try:
            return int(np.prod(spec.count_shape(self.model, self.frames))) > 0
        except ParameterError:
            return False

    def _schedule(self, spec: ParameterSpec, value: np.ndarray) -> np.ndarray:
        """A model default of an ``interval_*`` parameter with one row per frame interval of this rollout
        (a single row is a constant schedule, repeated)."""
        shape = spec.count_shape(self.model, self.frames) + spec.element_shape()
        if value.shape[:1] == (1,) and shape[0] != 1:
            return np.ascontiguousarray(np.broadcast_to(value, shape))
        if value.shape != shape:
            raise ParameterError(
                f"the schedule of '{spec.name}' has {value.shape[0]} row(s); it needs one per frame interval "
                f"(sim.frames - 1 = {shape[0]}) or a single row for a constant value")
        return value

    def parameter_names(self) -> list[str]:
        """Every parameter name this simulation accepts (registry names and conveniences)."""
        return sorted(set(self.input_dtypes) | set(CONVENIENCE) | set(ALIASES))

    def default(self, name: str) -> torch.Tensor:
        """The model's value of a registry parameter as a torch tensor (a copy) of its full shape."""
        name = ALIASES.get(name, name)
        if name == "density":
            return torch.tensor(self.model.extras["body_density"], dtype=torch.float32, device=self.torch_device)
        if name == "body_impulse":
            force = self.default("body_push_force")
            return force * self._push_duration()[:, None]
        if name in ("young_modulus", "poisson_ratio") and "lame_mu" in self.model.defaults:
            from .models.fem import young_poisson_from_lame

            young, poisson = young_poisson_from_lame(self.default("lame_mu"), self.default("lame_lambda"))
            return young if name == "young_modulus" else poisson
        if name not in self._default_values:
            raise ParameterError(f"parameter '{name}' has no default in this model")
        return torch.tensor(self._default_values[name], device=self.torch_device)

    def resolve(self, params: dict) -> dict[str, torch.Tensor]:
        """Map user parameters (aliases, conveniences, broadcastable shapes) to full registry tensors."""
        resolved = {}
        for name, value in (params or {}).items():
            key = ALIASES.get(name, name)
            if key not in self.input_dtypes and key not in CONVENIENCE:
                raise ParameterError(f"unknown parameter '{name}'; allowed: {', '.join(self.parameter_names())}")
            if key in resolved:
                raise ParameterError(f"parameter '{key}' given twice (as '{name}' and another alias)")
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(np.asarray(value, dtype=np.float32))
            resolved[key] = value.to(device=self.torch_device, dtype=torch.float32)
        model = self.model
        volume = torch.tensor(model.body_volume if model.body_count else np.zeros(0), dtype=torch.float32,
                              device=self.torch_device)
        if "density" in resolved:
            if "body_mass" in resolved or "body_inertia" in resolved:
                raise ParameterError("give either 'density' or 'body_mass'/'body_inertia', not both")
            density = self._broadcast("density", resolved.pop("density"), (model.body_count,))
            if self.check_inputs:
                check_range("density", density, 0.0, None)
            unit_inertia = torch.tensor(model.body_unit_inertia, dtype=torch.float32, device=self.torch_device)
            resolved["body_mass"] = density * volume
            resolved["body_inertia"] = density[:, None, None] * unit_inertia
        elif "body_mass" in resolved and "body_inertia" not in resolved:
            mass = self._broadcast("body_mass", resolved["body_mass"], (model.body_count,))
            if self.check_inputs:
                check_range("body_mass", mass, 0.0, None)
            default_mass = self.default("body_mass")
            resolved["body_mass"] = mass
            resolved["body_inertia"] = self.default("body_inertia") * (mass / default_mass)[:, None, None]
        if "young_modulus" in resolved or "poisson_ratio" in resolved:
            self._resolve_young_poisson(resolved)
        if "body_impulse" in resolved:
            impulse = self._broadcast("body_impulse", resolved.pop("body_impulse"), (model.body_count, 3))
            resolved["body_push_force"] = impulse / self._push_duration()[:, None]
        if "body_rotation" in resolved:
            rotation = self._broadcast("body_rotation", resolved["body_rotation"], (model.body_count, 4))
            resolved["body_rotation"] = rotation / rotation.norm(dim=-1, keepdim=True)
        for key in list(resolved):
            spec = PARAMETERS[key]
            shape = spec.count_shape(model, self.frames) + spec.element_shape()
            resolved[key] = self._broadcast(key, resolved[key], shape)
            if self.check_inputs:
                spec.validate(resolved[key])
        return resolved

    def _resolve_young_poisson(self, resolved: dict) -> None:
        """Replace ``young_modulus``/``poisson_ratio`` by ``lame_mu``/``lame_lambda`` (torch ops)."""
        if "lame_mu" in resolved or "lame_lambda" in resolved:
            raise ParameterError("give either 'young_modulus'/'poisson_ratio' or 'lame_mu'/'lame_lambda', not both")
        shape = (self.model.tet_count,)
        if not shape[0]:
            raise ParameterError("young_modulus/poisson_ratio need tetrahedra in the model")
        young = resolved.pop("young_modulus", None)
        poisson = resolved.pop("poisson_ratio", None)
        young = self.default("young_modulus") if young is None else self._broadcast("young_modulus", young, shape)
        poisson = self.default("poisson_ratio") if poisson is None else self._broadcast("poisson_ratio", poisson,
                                                                                          shape)
        if self.check_inputs:
            check_range("young_modulus", young, 0.0, None)
            check_range("poisson_ratio", poisson, 0.0, 0.5, low_inclusive=True, high_inclusive=False)
        from .models.fem import lame_from_young_poisson

        resolved["lame_mu"], resolved["lame_lambda"] = lame_from_young_poisson(young, poisson)

    def _push_duration(self) -> torch.Tensor:
        """Duration (s) of every body's push window, read from the device once (no per-rollout copy)."""
        if self._push_seconds is None:
            steps = self.model.body_push_end_step.numpy() - self.model.body_push_start_step.numpy()
            self._push_seconds = torch.tensor(np.maximum(steps, 1) * self.dt, dtype=torch.float32,
                                              device=self.torch_device)
        return self._push_seconds

    @staticmethod
    def _broadcast(name: str, value: torch.Tensor, shape: tuple) -> torch.Tensor:
        try:
            return torch.broadcast_to(value, shape)
        except RuntimeError:
            raise ParameterError(f"parameter '{name}' has shape {tuple(value.shape)}, expected {shape} "
                                 "(or a shape that broadcasts to it)") from None

    # -- the tape program -------------------------------------------------------------------------
    def rollout(self, params: dict | None = None, control: Control | None = None) -> torch.Tensor:
        """World-space vertices of every frame, ``[frames, vertices, 3]`` float32, differentiable with
        respect to every tensor in ``params`` and ``control`` (:class:`~wsim.model_state.Control`)."""
        params = dict(params or {})
        if control is not None:
            for name, value in control.as_parameters().items():
                if name in params:
                    raise ParameterError(f"'{name}' given both as a parameter and in the Control")
                params[name] = value
        resolved = self.resolve(params)
        if self._segments() is None:
            (vertices,) = run_tape_program(self, resolved, self.graphed)
            return vertices
        if self.graphed is not None:
            raise ParameterError("a graphed Simulation (graph=True) cannot be checkpointed (checkpoint_every)")
        unknown = sorted(set(resolved) - set(self.input_dtypes))
        if unknown:
            raise KeyError(f"unknown input(s) {unknown}; this simulation accepts {sorted(self.input_dtypes)}")
        names = tuple(resolved)
        return CheckpointedRollout.apply(self, names, *(resolved[name] for name in names))

    def _allocate(self, rows: int, requires_grad: bool) -> dict:
        """Per-step State buffers ``[rows, N]`` (None for an empty kind)."""
        P, B = self.model.particle_count, self.model.body_count

        def buffer(count, dtype):
            if not count:
                return None
            return wp.zeros((rows, count), dtype=dtype, device=self.device, requires_grad=requires_grad)

        return {
            "particle_q": buffer(P, wp.vec3), "particle_qd": buffer(P, wp.vec3), "particle_f": buffer(P, wp.vec3),
            "body_q": buffer(B, wp.vec3), "body_r": buffer(B, wp.quat), "body_v": buffer(B, wp.vec3),
            "body_w": buffer(B, wp.vec3), "body_l": buffer(B, wp.vec3), "body_f": buffer(B, wp.vec3),
            "body_t": buffer(B, wp.vec3),
        }

    @staticmethod
    def _row(buffers: dict, k: int) -> State:
        return State(**{name: None if array is None else array[k] for name, array in buffers.items()})

    def _initialise(self, params: dict, first: State) -> None:
        """The initial State from the parameters (recorded on the active tape)."""
        P, B, device = self.model.particle_count, self.model.body_count, self.device
        for source, target, count in (
            ("particle_position", first.particle_q, P), ("particle_velocity", first.particle_qd, P),
            ("body_position", first.body_q, B), ("body_rotation", first.body_r, B),
            ("body_velocity", first.body_v, B), ("body_angular_velocity", first.body_w, B),
        ):
            if count:
                wp.launch(COPY[target.dtype], dim=count, inputs=[params[source]], outputs=[target], device=device)
        if B:
            wp.launch(initial_angular_momentum, dim=B, device=device,
                      inputs=[first.body_r, params["body_inertia"], first.body_w], outputs=[first.body_l])

    def _load(self, source: dict, target: State) -> None:
        """Copy a saved segment start (``{name: [N]}`` of :data:`wsim.checkpointed.CARRIED`) into ``target`` (recorded)."""
        for name, array in source.items():
            wp.launch(COPY[array.dtype], dim=array.shape[0], inputs=[array], outputs=[getattr(target, name)],
                      device=self.device)

    def _advance(self, params: dict, buffers: dict, first: int, last: int, vertices: wp.array | None,
                 bad_step: wp.array) -> State:
        """Step from frame ``first`` (row 0 of ``buffers``) to frame ``last``, writing the vertices of frames
        first..last - 1 into rows 0.. of ``vertices``; returns the State of frame ``last``. Step and frame
        numbers are global, so pushes, per-interval controls and the NaN flag see the whole rollout's."""
        model, substeps = self.model, self.substeps
        # Each State (a set of row views) is built once: view creation is a large share of a CPU step.
        current = self._row(buffers, 0)
        for frame in range(first, last):
            if vertices is not None:
                self._write_vertices(current, vertices[frame - first])
            for sub in range(substeps):
                following = self._row(buffers, (frame - first) * substeps + sub + 1)
                step = frame * substeps + sub
                force_models.apply_all_forces(model, current, params, step, frame)
                semi_implicit.integrate(model, current, following, params, self.dt, step, bad_step)
                current = following
        return current

    def _new_flag(self) -> wp.array:
        # a fill, not a copy from host memory: a captured graph replays it (wsim.bridge.GraphedProgram)
        return wp.full(1, np.iinfo(np.int32).max, dtype=wp.int32, device=self.device)

    def record(self, inputs: dict) -> tuple:
        params = dict(self._defaults)
        params.update(inputs)
        buffers = self._allocate(self.steps + 1, requires_grad=True)
        self._bad_step = self._new_flag()
        self._segment_starts = None
        first = self._row(buffers, 0)
        self._initialise(params, first)
        vertices = wp.zeros((self.frames, self.model.vertex_count), dtype=wp.vec3, device=self.device,
                            requires_grad=True)
        final = self._advance(params, buffers, 0, self.frames - 1, vertices, self._bad_step)
        self._write_vertices(final, vertices[self.frames - 1])
        self.last_buffers = buffers
        self._last_params = params
        return (vertices,)

    # -- checkpointed rollout ---------------------------------------------------------------------
    def _zero_forces(self, buffers: dict) -> None:
        # the accumulators of a reused buffer must start every step at zero, as fresh ones do
        for name in ("particle_f", "body_f", "body_t"):
            if buffers[name] is not None:
                buffers[name].zero_()

    def _write_vertices(self, state: State, out: wp.array) -> None:
        model = self.model
        if model.shape_vertex_count:
            wp.launch(body_vertices_to_world, dim=model.shape_vertex_count, device=self.device,
                      inputs=[state.body_q, state.body_r, model.shape_vertices, model.shape_vertex_body],
                      outputs=[out])
        if model.particle_count:
            wp.launch(particles_to_vertices, dim=model.particle_count, device=self.device,
                      inputs=[state.particle_q, model.shape_vertex_count], outputs=[out])

    def after_forward(self, outputs) -> None:
        self._check_nan()
        if self.check_runaway and self.steps:
            message = self.runaway_check().check(self._last_params, self.last_buffers)
            if message is not None:
                raise SimulationError(message)

    def runaway_check(self) -> runaway.RunawayCheck:
        """This scene's runaway bounds (built on first use)."""
        if self._runaway is None:
            self._runaway = runaway.RunawayCheck(self)
        return self._runaway

    def _check_nan(self) -> None:
        if self.check_nan:
            bad = int(self._bad_step.numpy()[0])
            if bad != np.iinfo(np.int32).max:
                raise SimulationError(self.blowup_message(bad))

    def blowup_message(self, bad: int) -> str:
        """The error of a rollout whose state first became NaN or infinite at physics step ``bad``."""
        return (f"the simulation blew up: the state became NaN or infinite at physics step {bad} "
                f"(t = {(bad + 1) * self.dt:.6g} s, between frames {bad // self.substeps} and "
                f"{bad // self.substeps + 1}); reduce sim.dt, raise sim.substeps or lower the stiffnesses")

    # -- inspection -------------------------------------------------------------------------------
    def frame_states(self) -> dict[str, np.ndarray]:
        """Per-frame states of the last rollout as numpy arrays ``[frames, N, ...]`` (host copies)."""
        if self.last_buffers is None and self._segment_starts is not None:
            return replayed_frame_states(self)
        if self.last_buffers is None:
            raise RuntimeError("no rollout has run yet")
        rows = slice(0, self.steps + 1, self.substeps)
        return {name: to_torch(array)[rows].detach().cpu().numpy()
                for name, array in self.last_buffers.items() if array is not None and not name.endswith(("_f", "_t"))}

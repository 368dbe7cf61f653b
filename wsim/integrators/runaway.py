"""Runaway detection: a rollout whose state stayed finite but left what the scene's physics allows.

An explicit step that is too long for the contact stiffness (or a body too thin for its contact
lever arms) pumps energy into the system every contact: the box of ``box-drop`` at ``dt = 0.02 s``
ends kilometres above the ground with every number finite. The checks below run once after the
forward pass, on detached views of the per-step buffers (torch reductions, and a Warp kernel for the
particles' per-step maxima, on the simulation's device; a few scalar host reads per rollout: about 1 ms
against 0.5 s for box-drop's forward pass on a CPU),
so they neither touch the tape nor synchronise inside the step loop (a checkpointed rollout, which
keeps no whole-rollout buffers, runs them once per segment against the same bounds). They are bounds,
deliberately loose, that no correct rollout of the scene can cross:

* **rigid-body energy** (per body): ``E = m |v|^2 / 2 + L . w / 2 - m g . x``. Ground contact (penalty
  springs that only store energy, dissipative damping and friction) can only lower ``E`` below its
  initial value plus the work of the known pushes and controls (rotors: their largest clamped thrust,
  summed per body, as a control force, with the lever arm plus the reaction ratio as its torque arm);
  the check fires when ``E - E0`` exceeds ``A``, twice the kinetic energy of the body moving at the
  fastest speed gravity, its initial velocity and every push could give it
  (``V = |v0| + (|J| + |F_c| T) / m + sqrt(2 |g_y| H) + |g_xz| T``, ``H`` the drop to the ground,
  ``|g| T`` without a ground) and spinning with every angular impulse added to its initial angular
  momentum, plus ``m |g| R`` (R its bounding radius). Physically
  ``E - E0`` stays below the push work, which is at most half of ``A`` (a push on a body at rest:
  ``J^2 / 2m`` against ``A >= J^2 / m``).
* **displacement per step** (bodies and particles): ``|v| dt > S + 2 V dt`` (``S`` the diagonal of the
  scene's initial bounding box, ``V`` the largest speed bound above): nothing in a scene crosses the
  whole scene in one step.
* **distance** (particles, whose elastic and activation energy has no cheap bound): farther from the
  scene's initial centre than ``10 S + V_p T + |g| T^2 / 2``.

Penetration into the ground is not checked on its own: a soft ground (small ``contact_ke``, which
system identification explores) lets a body sink deep legitimately, while a contact instability
that drives it deep returns the energy on the rebound and trips the energy bound.
"""

from __future__ import annotations

import numpy as np
import torch
import warp as wp

from ..bridge import stream_scope


def _torch(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    return wp.to_torch(array, requires_grad=False).detach()


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=-1)


@wp.kernel
def particle_row_maxima_kernel(q: wp.array2d(dtype=wp.vec3), qd: wp.array2d(dtype=wp.vec3), centre: wp.vec3,
                               distance2: wp.array(dtype=float), speed2: wp.array(dtype=float)):
    """Per row (physics step) of the particle buffers, the largest squared distance from ``centre`` and
    the largest squared speed: one pass over the buffers, a thread per row. Torch's norms over a trailing
    dimension of 3 (and its broadcast subtraction) made the whole check cost 1.0 ms for 41 rows of 2197
    particles, 25 us per physics step of a 10368-tet block whose step takes 370 us; with this kernel the
    check costs 0.35 ms. (A thread per particle, with atomic maxima or with torch's row maxima after it,
    was slower: 0.45-0.5 ms for this kernel alone.)"""
    row = wp.tid()
    d_max = float(0.0)
    s_max = float(0.0)
    for i in range(q.shape[1]):
        d = q[row, i] - centre
        d_max = wp.max(d_max, wp.dot(d, d))
        v = qd[row, i]
        s_max = wp.max(s_max, wp.dot(v, v))
    distance2[row] = d_max
    speed2[row] = s_max


def _vec3_rows(array) -> wp.array:
    if isinstance(array, torch.Tensor):
        return wp.from_torch(array.detach().float().contiguous(), dtype=wp.vec3)
    return array


class RunawayCheck:
    """Bounds of one :class:`~wsim.simulation.Simulation`; :meth:`check` inspects one rollout."""

    def __init__(self, simulation):
        self.sim = simulation
        model = simulation.model
        device = simulation.torch_device
        self.body_radius = torch.zeros(model.body_count, dtype=torch.float64, device=device)
        self.push_arm = torch.zeros(model.body_count, dtype=torch.float64, device=device)
        if model.body_count:
            vertices = model.shape_vertices.numpy()
            owner = model.shape_vertex_body.numpy()
            radius = np.zeros(model.body_count)
            np.maximum.at(radius, owner, np.linalg.norm(vertices, axis=1))
            self.body_radius = torch.tensor(radius, dtype=torch.float64, device=device)
            self.push_arm = _norm(torch.tensor(model.body_push_point.numpy(), dtype=torch.float64, device=device))
        if model.rotor_count:
            self.rotor_body = torch.tensor(model.rotor_body.numpy(), dtype=torch.long, device=device)
            self.rotor_max = torch.tensor(model.rotor_max_thrust.numpy(), dtype=torch.float64, device=device)
            # torque per newton of thrust: the lever arm plus the propeller's reaction
            self.rotor_arm = (_norm(torch.tensor(model.rotor_position.numpy(), dtype=torch.float64, device=device))
                              + torch.tensor(model.rotor_torque_ratio.numpy(), dtype=torch.float64, device=device))

    def check(self, params: dict, buffers: dict, initial: dict | None = None, first_row: int = 0) -> str | None:
        """A sentence naming the first physics step that ran away and why, or None.

        ``buffers`` hold per-step rows ``[rows, N]`` (Warp arrays or torch tensors) of the rollout from
        row ``first_row`` on (row k is the state after physics step k - 1). When ``first_row > 0`` (a
        segment of a checkpointed rollout), ``initial`` holds the rollout's row 0 (``{name: [N]}``): every
        bound refers to the initial state, so a segment is judged exactly as the whole rollout would be.
        """
        sim, model = self.sim, self.sim.model
        if first_row:
            buffers = {name: torch.cat([_torch(initial[name])[None], _torch(value)])
                       for name, value in buffers.items() if value is not None and name in initial}
        duration = sim.steps * sim.dt
        gravity = _torch(params["gravity"])[0]
        g = float(_norm(gravity))
        tests = []  # (value [rows, N], bound [N] or float, describe(row, index) -> str)
        speed_bounds = []
        first = []
        if model.body_count:
            radius = self.body_radius.float()[:, None]
            first.append(torch.cat([_torch(buffers["body_q"])[0] - radius, _torch(buffers["body_q"])[0] + radius]))
        if model.particle_count:
            first.append(_torch(buffers["particle_q"])[0])
        if not first:
            return None
        first = torch.cat(first)
        centre = 0.5 * (first.max(0).values + first.min(0).values)
        size = float(_norm(first.max(0).values - first.min(0).values))
        if model.body_count:
            body_tests, body_speed = self._bodies(params, buffers, gravity, duration)
            tests += body_tests
            speed_bounds.append(body_speed)
        particle_step = None
        if model.particle_count:
            particle_speed = self._particle_speed(params, buffers, gravity, duration)
            speed_bounds.append(particle_speed)
            far = 10.0 * size + particle_speed * duration + 0.5 * g * duration ** 2
            # tests on the rows' maxima ([rows, 1]); the particle is looked for only in a row that crossed
            distance2, speed2 = self._particle_row_maxima(buffers, centre)
            q = buffers["particle_q"]

            def far_particle(row, _, f=far):
                d = _norm(_torch(q)[row] - centre)
                i = int(torch.nonzero(d > f)[0, 0])
                return f"particle {i} is {float(d[i]):.3g} m from the scene's centre (bound {f:.3g} m)"

            tests.append((distance2.sqrt()[:, None], far, far_particle))
            particle_step = speed2.sqrt()[:, None] * sim.dt
        step_bound = size + 2.0 * max(speed_bounds) * sim.dt

        def step_message(label, length):
            return (f"{label} moved {length:.3g} m in one step, more than the scene's size plus twice its "
                    f"fastest plausible step ({step_bound:.3g} m)")

        if buffers.get("body_v") is not None:
            step_length = _norm(_torch(buffers["body_v"])) * sim.dt
            tests.append((step_length, step_bound, lambda row, i, s=step_length: (
                step_message(self._label("body", i), float(s[row, i])))))
        if particle_step is not None:
            qd = buffers["particle_qd"]

            def fast_particle(row, _):
                s = _norm(_torch(qd)[row]) * sim.dt
                i = int(torch.nonzero(s > step_bound)[0, 0])
                return step_message(self._label("particle", i), float(s[i]))

            tests.append((particle_step, step_bound, fast_particle))
        # A healthy rollout costs one reduction per test and one host read: a scalar bound is compared
        # with the test's maximum (division and comparison are monotonic, so the ratios and the verdict
        # are those of the element-wise ones); only a rollout that crossed a bound is searched row by row.
        ratios, crossed = [], []
        for value, bound, _ in tests:
            if isinstance(bound, torch.Tensor):
                ratios.append((value / bound).amax())
                crossed.append((value > bound).any())
            else:
                top = value.amax()
                ratios.append(top / bound)
                crossed.append(top > bound)
        self.last_ratios = ratios  # diagnostics, on the device
        if not bool(torch.stack(crossed).any()):
            return None
        flags = torch.stack([(value > bound).any(1) for value, bound, _ in tests]).any(0)
        local = int(torch.nonzero(flags)[0, 0])
        reasons = []
        for value, bound, describe in tests:
            hits = torch.nonzero(value[local] > bound)
            if len(hits):
                reasons.append(describe(local, int(hits[0, 0])))
        row = first_row + local - 1 if first_row and local else local
        step = row - 1  # row k holds the state after physics step k - 1
        frame = step // sim.substeps
        return (f"the simulation ran away at physics step {step} (t = {row * sim.dt:.6g} s, between frames "
                f"{frame} and {frame + 1}): {'; '.join(reasons)}. The explicit step is too long for the "
                f"contact or material stiffness: reduce sim.dt (now {sim.dt:g}) or raise sim.substeps, or "
                "soften the contact (contact.ke, contact.kd) or the material")

    @staticmethod
    def _particle_row_maxima(buffers, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[rows]`` largest squared distance from ``centre`` and squared speed of the particles."""
        q, qd = _vec3_rows(buffers["particle_q"]), _vec3_rows(buffers["particle_qd"])
        rows = q.shape[0]
        device = _torch(buffers["particle_q"]).device
        distance2 = torch.empty(rows, dtype=torch.float32, device=device)
        speed2 = torch.empty(rows, dtype=torch.float32, device=device)
        c = [float(x) for x in centre.tolist()]
        with stream_scope(str(q.device)):  # on CUDA, torch's stream, which wrote the buffers and reads the maxima
            wp.launch(particle_row_maxima_kernel, dim=rows, device=q.device, record_tape=False,
                      inputs=[q, qd, wp.vec3(*c), wp.from_torch(distance2), wp.from_torch(speed2)])
        return distance2, speed2

    def _label(self, kind: str, index: int) -> str:
        names = self.sim.model.body_names
        if kind == "body" and index < len(names):
            return f"body '{names[index]}'"
        return f"{kind} {index}"

    def _bodies(self, params, buffers, gravity, duration):
        sim, model = self.sim, self.sim.model
        # float64: a runaway reaches speeds whose square overflows float32
        q, v = _torch(buffers["body_q"]).double(), _torch(buffers["body_v"]).double()
        momentum, omega = _torch(buffers["body_l"]).double(), _torch(buffers["body_w"]).double()
        mass = _torch(params["body_mass"]).double().clamp_min(1e-30)
        energy = 0.5 * mass * (v * v).sum(-1) + 0.5 * (momentum * omega).sum(-1) - mass * (q @ gravity.double())
        gained = energy - energy[0]
        impulse = (_norm(_torch(params["body_push_force"])) * sim._push_duration()).double()
        force, torque = torch.zeros_like(mass), torch.zeros_like(mass)
        if "control_body_force" in params:
            force = _norm(_torch(params["control_body_force"])).amax(0).double()
        if "control_body_torque" in params:
            torque = _norm(_torch(params["control_body_torque"])).amax(0).double()
        if model.rotor_count and "control_rotor_thrust" in params:
            thrust = _torch(params["control_rotor_thrust"]).double().clamp_min(0.0).amax(0)
            thrust = torch.minimum(thrust, self.rotor_max)
            force = force.index_add(0, self.rotor_body, thrust)
            torque = torque.index_add(0, self.rotor_body, thrust * self.rotor_arm)
        g_vertical, g = abs(float(gravity[1])), float(_norm(gravity))
        speed = _norm(v[0]) + (impulse + force * duration) / mass
        if model.ground:
            drop = (q[0, :, 1] - model.ground_height + self.body_radius + model.contact_margin
                    + model.contact_smoothing).clamp_min(0.0)
            speed = speed + torch.sqrt(2.0 * g_vertical * drop) + (g ** 2 - g_vertical ** 2) ** 0.5 * duration
        else:
            speed = speed + g * duration
        inertia_min = torch.linalg.eigvalsh(_torch(params["body_inertia"]).double()).amin(-1).clamp_min(1e-30)
        spin = _norm(momentum[0]) + self.push_arm * impulse + torque * duration + self.body_radius * force * duration
        budget = mass * speed ** 2 + spin ** 2 / inertia_min + mass * g * self.body_radius
        tests = [(gained, budget, lambda row, b: (
            f"{self._label('body', b)} gained {float(gained[row, b]):.3g} J of energy, more than the "
            f"{float(budget[b]):.3g} J bound on what gravity, its initial motion and its pushes can supply (now "
            f"{float(_norm(v[row, b])):.3g} m/s at height {float(q[row, b, 1]):.3g} m)"))]
        return tests, float(speed.max())

    def _particle_speed(self, params, buffers, gravity, duration) -> float:
        mass = _torch(params["particle_mass"])
        moving = mass > 0
        if not bool(moving.any()):
            return 0.0
        speed = _norm(_torch(buffers["particle_qd"])[0])
        if "particle_push_force" in params:
            speed = speed + _norm(_torch(params["particle_push_force"])) * duration / mass.clamp_min(1e-30)
        if "control_particle_force" in params:
            force = _norm(_torch(params["control_particle_force"])).amax(0)
            speed = speed + force * duration / mass.clamp_min(1e-30)
        return float(speed[moving].max()) + float(_norm(gravity)) * duration

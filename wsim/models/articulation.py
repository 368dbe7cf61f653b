"""Articulated bodies in reduced coordinates: kinematic trees of links joined by revolute, prismatic,
fixed, ball and free joints, forward dynamics by the composite-rigid-body algorithm and a Cholesky solve.

Every link ``l`` hangs from its parent (or the world) by one joint. The joint frame sits at
``joint_position[l]`` (m) rotated by ``joint_rotation[l]`` (quaternion ``(x, y, z, w)``), both in the
parent link's frame (the world frame for a root); the link frame is the joint frame moved by the joint:
rotated by ``q`` (rad) about the unit ``joint_axis[l]`` (joint frame) for a revolute joint, translated by
``q`` (m) along it for a prismatic one, not at all for a fixed joint (no degree of freedom). This is
MuJoCo's body/joint convention with the joint at the body origin.

Ball and free joints have more coordinates than degrees of freedom, as in MuJoCo (``nq != nv``): q holds
``Q`` coordinates, qd and every per-dof parameter ``D``. A ball joint's coordinates are a unit quaternion
``(w, x, y, z)`` (MuJoCo's order) rotating the link about the joint frame's origin; its 3 velocities are
the angular velocity in the link (child) frame. A free joint (only on a root link) has 7 coordinates,
the link origin's position in the joint frame (the world by default) then a quaternion, and 6
velocities: the origin's linear velocity in the joint frame, then the angular velocity in the link
frame. Those are MuJoCo's conventions for ``qpos``/``qvel``, so loaded models compare exactly. The
quaternion advances by the exponential map, ``quat+ = normalise(quat exp(dt w+ / 2))`` with the updated
angular velocity ``w+`` (MuJoCo's ``mju_quatIntegrate``), and stays unit length. A link has a mass ``link_mass`` (kg), a
centre of mass ``link_com`` (m, link frame) and an inertia ``link_inertia`` about the centre of mass (kg
m^2, link frame). Links are stored in depth-first pre-order (a parent before its children, every subtree
contiguous); :class:`ArticulationBuilder` enforces it, so a subtree is the index range
``[l, link_subtree_end[l])`` and composite inertias are plain range sums.

Dynamics, with ``H(q)`` the joint-space mass matrix and ``C(q, qd)`` the bias forces (Coriolis,
centrifugal and gravity)::

    (H + diag(armature)) qdd = tau - k (q - q_target) - d qd + f_limit - C
    f_limit = ke (lower - q) if q < lower,  ke (upper - q) if q > upper,  else 0

For the rotation of a ball or free joint ``q - q_target`` is the rotation vector ``log(target^-1 quat)``
(child frame, angle in (-pi, pi]), MuJoCo's ball-joint spring; each of its 3 dofs has its own stiffness
and damping. A ball joint's limit is a cone: with ``theta = |log(quat)|`` its rotation angle from the
joint frame, ``f_limit = -ke (theta - upper) log(quat) / theta`` (child frame) when ``theta > upper``
(its ``joint_limit_upper`` and ``joint_limit_ke`` entries, equal on its 3 dofs). Free joints have no limits.

``H`` comes from the composite-rigid-body algorithm, ``C`` from recursive Newton-Euler with ``qdd = 0``
and the base accelerated by ``-gravity``; both work in world-frame spatial vectors (Plucker coordinates
about the world origin: motion ``(w, v_O)``, force ``(n_O, f)``), where a joint's motion subspace,
a link's velocity and its spatial inertia need no frame changes between parent and child. A spatial
inertia is kept as the triple (mass m, first moment h = m c, rotational inertia about the origin J),
which sums linearly over a subtree. The integrator is semi-implicit Euler like the rest of wsim:
``qd+ = qd + dt qdd``, ``q+ = q + dt qd+`` (MuJoCo's ``Euler`` integrator when joint damping is zero or
its ``eulerdamp`` flag is disabled: MuJoCo otherwise treats damping implicitly).

Precision: everything is float64. An articulation's thread solves one small dense system per step, so the
cost is negligible, and float64 is what makes a 0.1 % period check over thousands of steps, a comparison
with MuJoCo (double) to round-off and finite differences with small steps possible.

Differentiability: one rollout allocates every per-step intermediate (``[steps, ...]`` buffers, a row per
step) and every kernel writes each array element once, so ``wp.Tape`` can replay and reverse the whole
rollout. No kernel keeps a local accumulator across the iterations of a dynamic loop: Warp does not
differentiate one (its code generator flags it as possibly non-differentiable; measured, the gradients
came out 0.5 % to 280 % off). Subtree sums are atomic adds into zeroed per-step arrays; the solver keeps
every partial sum of its inner products in per-step arrays instead, since Warp's deterministic mode
refuses atomics that the same kernel reads back. Scratch per step: O(n^3) for an articulation with n
degrees of freedom (8000 float64 for a 20-dof hand).

Parameters of a rollout (``ArticulationRollout.input_dtypes``; ``L`` links, ``D`` degrees of freedom,
``A`` articulations; every value float64):

=====================  ==================  =========  ====================================================
name                   shape               unit       meaning
=====================  ==================  =========  ====================================================
``link_mass``          [L]                 kg         mass of each link
``link_com``           [L, 3]              m          centre of mass, link frame
``link_inertia``       [L, 3, 3]           kg m^2     inertia about the centre of mass, link frame
``joint_stiffness``    [D]                 N m/rad    spring k toward ``joint_target`` (N/m prismatic)
``joint_damping``      [D]                 N m s/rad  viscous damping d (N s/m prismatic)
``joint_armature``     [D]                 kg m^2     added to H's diagonal (kg prismatic)
``joint_target``       [Q]                 rad        rest coordinates of the joint spring (m, quaternion)
``joint_limit_lower``  [D]                 rad        lower limit (m prismatic)
``joint_limit_upper``  [D]                 rad        upper limit (m prismatic; a ball joint's cone angle)
``joint_limit_ke``     [D]                 N m/rad    penalty stiffness outside the limits (N/m)
``gravity``            [1, 3]              m/s^2      gravitational acceleration (wsim: Y up)
``joint_q``            [Q]                 rad, m     initial joint coordinates (quaternions (w, x, y, z))
``joint_qd``           [D]                 rad/s, m/s initial joint velocities (angular: child frame)
``joint_torque``       [frames - 1, D]     N m, N     applied joint torque/force per frame interval
``contact_point``      [P, 3]              m          ground-contact points, link frames
=====================  ==================  =========  ====================================================

Ground contact (:mod:`wsim.models.articulation_contact`): a rollout given a ``ground``
(:class:`~wsim.models.articulation_contact.GroundContact`) pushes every contact point of the articulation
against the plane with wsim's penalty contact law and takes the parameters ``contact_ke``,
``contact_kd``, ``contact_kf``, ``contact_mu``, ``contact_smoothing`` and ``ground_height`` (each [1]) too.
"""

from __future__ import annotations

import numpy as np
import torch
import warp as wp

from ..bridge import run_tape_program, to_torch
from ..device import torch_device
from ..errors import ParameterError, SimulationError
from .articulation_builder import JOINT_TYPES, NO_LIMIT, Articulation, ArticulationBuilder
from .articulation_contact import CONTACT_PARAMETERS, GroundContact, launch_contacts
from .articulation_kernels import (copy_float64, energy_kernel, every_frame, kinematics_kernel,
                                   solve_integrate_kernel, subtree_kernel, mat33d, quatd, spatiald, vec3d)

__all__ = ["JOINT_TYPES", "NO_LIMIT", "PARAMETER_DTYPES", "Articulation", "ArticulationBuilder",
           "ArticulationRollout", "GroundContact"]


PARAMETER_DTYPES = {
    "link_mass": wp.float64, "link_com": vec3d, "link_inertia": mat33d, "gravity": vec3d,
    "joint_q": wp.float64, "joint_qd": wp.float64, "joint_stiffness": wp.float64, "joint_damping": wp.float64,
    "joint_armature": wp.float64, "joint_target": wp.float64, "joint_limit_lower": wp.float64,
    "joint_limit_upper": wp.float64, "joint_limit_ke": wp.float64, "joint_torque": wp.float64,
    "contact_point": vec3d,
}
# the parameters a rollout with a ground takes as well, shape [1] each
CONTACT_DTYPES = {name: wp.float64 for name in CONTACT_PARAMETERS}

# per-link, per-step intermediates of one rollout, in the order of the kernels' outputs: name -> dtype
_KINEMATIC_OUTPUTS = {
    "link_rotation": quatd, "link_origin": vec3d, "dof_subspace": spatiald, "link_velocity": spatiald,
    "link_acceleration": spatiald, "link_moment": vec3d, "link_inertia_origin": mat33d, "link_bias_force": spatiald,
}
_SUBTREE_OUTPUTS = {
    "composite_mass": wp.float64, "composite_moment": vec3d, "composite_inertia": mat33d,
    "composite_force": spatiald,
}


class ArticulationRollout:
    """A differentiable rollout of ``articulation`` over ``frames`` frames, ``substeps`` physics steps of
    ``dt`` seconds per frame interval (``joint_torque`` row k acts on the steps of interval k).

    It is a tape program for :mod:`wsim.bridge`: :meth:`rollout` maps float64 torch parameters (any
    subset of :data:`PARAMETER_DTYPES`; the rest take the articulation's defaults, torques default to
    zero) to the joint positions and velocities of every frame, ``q [frames, Q], qd [frames, D]`` float64;
    ``backward()`` on a loss of them fills every parameter's gradient. ``check_nan`` raises
    :class:`~wsim.errors.SimulationError` naming the first non-finite step. ``ground``
    (:class:`~wsim.models.articulation_contact.GroundContact`, default None: no contact) puts the
    articulation's contact points in contact with a ground plane, whose parameters join the inputs.
    """

    def __init__(self, articulation: Articulation, dt: float, substeps: int, frames: int, check_nan: bool = True,
                 ground: GroundContact | None = None):
        if not dt > 0:
            raise ParameterError(f"dt must be > 0, got {dt}")
        if int(substeps) != substeps or substeps < 1 or int(frames) != frames or frames < 1:
            raise ParameterError(f"substeps and frames must be integers >= 1, got {substeps} and {frames}")
        self.articulation = articulation
        self.device = articulation.device
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.frames = int(frames)
        self.steps = (self.frames - 1) * self.substeps
        self.check_nan = check_nan
        self.ground = ground
        self.input_dtypes = dict(PARAMETER_DTYPES)
        self._ground_defaults = {}
        self._normal = None
        if ground is not None:
            self.input_dtypes.update(CONTACT_DTYPES)
            self._ground_defaults = ground.defaults()
            normal = ground.unit_normal(articulation.defaults["gravity"]).reshape(1, 3)
            self._normal = wp.array(normal, dtype=vec3d, device=self.device)
        self.torch_device = torch_device(self.device)
        self.last_buffers = None
        self._bad_step = None
        self._defaults = {name: wp.array(self.default(name).cpu().numpy(), dtype=dtype, device=self.device)
                          for name, dtype in self.input_dtypes.items()}

    def shape(self, name: str) -> tuple:
        """The full shape of parameter ``name`` (element shape included)."""
        art = self.articulation
        leading = {"link": (art.link_count,), "joint": (art.dof_count,), "gravity": (1,), "ground": (1,),
                   "contact": (1,)}[name.split("_")[0]]
        if name == "contact_point":
            leading = (art.contact_count,)
        if name in ("joint_q", "joint_target"):  # coordinates: quaternions take 4 entries for 3 dofs
            leading = (art.coord_count,)
        if name == "joint_torque":
            leading = (max(self.frames - 1, 1), art.dof_count)
        return leading + tuple(getattr(self.input_dtypes[name], "_shape_", None) or ())

    def default(self, name: str) -> torch.Tensor:
        """The articulation's value of parameter ``name`` as a float64 torch tensor (a copy)."""
        if name == "joint_torque":
            return torch.zeros(self.shape(name), dtype=torch.float64, device=self.torch_device)
        values = {**self.articulation.defaults, **self._ground_defaults}
        if name not in values or name not in self.input_dtypes:
            raise ParameterError(f"unknown parameter '{name}'; allowed: {', '.join(sorted(self.input_dtypes))}")
        return torch.tensor(values[name], dtype=torch.float64, device=self.torch_device)

    def rollout(self, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint positions and velocities of every frame, ``([frames, Q], [frames, D])`` float64."""
        inputs = {}
        for name, value in (params or {}).items():
            if name not in self.input_dtypes:
                raise ParameterError(f"unknown parameter '{name}'; allowed: {', '.join(sorted(self.input_dtypes))}")
            value = torch.as_tensor(value).to(device=self.torch_device, dtype=torch.float64)
            try:
                inputs[name] = torch.broadcast_to(value, self.shape(name))
            except RuntimeError:
                raise ParameterError(f"parameter '{name}' has shape {tuple(value.shape)}, expected "
                                     f"{self.shape(name)}") from None
        return run_tape_program(self, inputs)

    def record(self, inputs: dict) -> tuple:
        art = self.articulation
        device = self.device
        params = dict(self._defaults)
        params.update(inputs)
        steps, L, D, Q = self.steps, art.link_count, art.dof_count, art.coord_count

        def buffer(rows, count, dtype):
            return wp.zeros((rows, max(count, 1)), dtype=dtype, device=device, requires_grad=True)

        buffers = {name: buffer(steps, D if name.startswith("dof") else L, dtype)
                   for name, dtype in {**_KINEMATIC_OUTPUTS, **_SUBTREE_OUTPUTS}.items()}
        buffers.update({"q": buffer(steps + 1, Q, wp.float64), "qd": buffer(steps + 1, D, wp.float64),
                        "qdd": buffer(steps, D, wp.float64), "forward": buffer(steps, D, wp.float64),
                        "forward_partial": buffer(steps, art.matrix_size, wp.float64),
                        "backward_partial": buffer(steps, art.matrix_size, wp.float64),
                        "mass_matrix": buffer(steps, art.matrix_size, wp.float64),
                        "schur_partial": buffer(steps, art.cube_size, wp.float64),
                        "cholesky": buffer(steps, art.matrix_size, wp.float64),
                        # external (contact) spatial forces per link, and each contact point's force
                        "link_external_force": buffer(steps, L, spatiald),
                        "contact_force": buffer(steps, art.contact_count, vec3d)})
        contacts = self.ground is not None and art.contact_count > 0
        self._bad_step = wp.array([np.iinfo(np.int32).max], dtype=wp.int32, device=device)
        if D:
            wp.launch(copy_float64, dim=Q, inputs=[params["joint_q"]], outputs=[buffers["q"]], device=device)
            wp.launch(copy_float64, dim=D, inputs=[params["joint_qd"]], outputs=[buffers["qd"]], device=device)
        # the kernels take whole [steps, ...] buffers and the step index: per-step row views made a CPU step
        # 9x slower (2.2 ms against 0.25 ms for a double pendulum, measured), all of it host overhead
        A = art.articulation_count
        kinematic = [buffers[name] for name in _KINEMATIC_OUTPUTS]
        subtree = [buffers[name] for name in _SUBTREE_OUTPUTS]
        solve = [buffers[name] for name in ("mass_matrix", "schur_partial", "cholesky", "forward_partial", "forward",
                                            "backward_partial", "qdd")]
        for step in range(steps):
            wp.launch(kinematics_kernel, dim=A, device=device,
                      inputs=[art.articulation_link_start, art.link_parent, art.joint_type, art.joint_dof,
                              art.joint_coord, art.joint_position, art.joint_rotation, art.joint_axis,
                              params["link_mass"],
                              params["link_com"], params["link_inertia"], params["gravity"], step, buffers["q"],
                              buffers["qd"]],
                      outputs=kinematic)
            if contacts:
                launch_contacts(art, self._normal, params, buffers, step)
            wp.launch(subtree_kernel, dim=L, device=device,
                      inputs=[art.link_subtree_end, params["link_mass"], step, buffers["link_moment"],
                              buffers["link_inertia_origin"], buffers["link_bias_force"],
                              buffers["link_external_force"]],
                      outputs=subtree)
            wp.launch(solve_integrate_kernel, dim=A, device=device,
                      inputs=[art.articulation_dof_start, art.articulation_matrix_start, art.articulation_cube_start,
                              art.articulation_link_start, art.joint_type, art.joint_dof, art.joint_coord,
                              art.dof_link, art.dof_kind, art.dof_coord, art.dof_component,
                              art.link_subtree_end, buffers["dof_subspace"], *subtree,
                              params["joint_stiffness"], params["joint_damping"], params["joint_armature"],
                              params["joint_target"], params["joint_limit_lower"], params["joint_limit_upper"],
                              params["joint_limit_ke"], params["joint_torque"], step // self.substeps,
                              buffers["q"], buffers["qd"], wp.float64(self.dt), step],
                      outputs=[*solve, self._bad_step])
        q_frames = buffer(self.frames, Q, wp.float64)
        qd_frames = buffer(self.frames, D, wp.float64)
        if D:
            for states, frames, width in ((buffers["q"], q_frames, Q), (buffers["qd"], qd_frames, D)):
                wp.launch(every_frame, dim=(self.frames, width), inputs=[states, self.substeps], outputs=[frames],
                          device=device)
        self.last_buffers = buffers
        self._last_params = params
        return q_frames, qd_frames

    def after_forward(self, outputs) -> None:
        if self.check_nan:
            bad = int(self._bad_step.numpy()[0])
            if bad != np.iinfo(np.int32).max:
                raise SimulationError(f"the articulation blew up: its state became NaN or infinite at physics step "
                                      f"{bad} (t = {(bad + 1) * self.dt:.6g} s); reduce dt or the stiffnesses")

    def energy(self) -> np.ndarray:
        """Mechanical energy (J, kinetic plus gravitational; joint springs excluded) of every articulation
        at the start of every physics step of the last rollout, ``[steps, A]`` float64 (host copy)."""
        if self.last_buffers is None:
            raise RuntimeError("no rollout has run yet")
        buffers = self.last_buffers
        out = wp.zeros((self.steps, self.articulation.articulation_count), dtype=wp.float64, device=self.device)
        if self.steps:
            wp.launch(energy_kernel, dim=out.shape, device=self.device,
                      inputs=[self.articulation.articulation_link_start, self._last_params["link_mass"],
                              self._last_params["gravity"], buffers["link_velocity"], buffers["link_moment"],
                              buffers["link_inertia_origin"]],
                      outputs=[out])
        return out.numpy()

    def states(self) -> dict[str, np.ndarray]:
        """Every step's ``q`` and ``qd`` of the last rollout, ``[steps + 1, Q]`` and ``[steps + 1, D]``
        float64 (host copies)."""
        if self.last_buffers is None:
            raise RuntimeError("no rollout has run yet")
        return {name: to_torch(self.last_buffers[name]).detach().cpu().numpy() for name in ("q", "qd")}

    def contact_forces(self) -> np.ndarray:
        """The ground's force (N, world) on every contact point at every physics step of the last rollout,
        ``[steps, P, 3]`` float64 (host copy; zeros without a ground)."""
        if self.last_buffers is None:
            raise RuntimeError("no rollout has run yet")
        forces = self.last_buffers["contact_force"].numpy()
        return forces[:, :self.articulation.contact_count]

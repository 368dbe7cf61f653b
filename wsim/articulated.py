"""Articulated chains and trees in a scene: the ``articulation`` section of a scene config as a
differentiable rollout from named parameters to the world-space vertices of the link meshes, with the interface of
:class:`wsim.simulation.Simulation` that ``wsim simulate``, ``wsim gradcheck`` and ``wsim run`` use.

The chain (:class:`~wsim.config.ArticulationConfig`): link 0 hangs from a fixed pivot by a revolute
joint, link ``l`` from the tip of link ``l - 1``. A link's frame has its joint at the origin and the link
along -Y, so the tip of a link turned by ``q`` about Z is ``length * (sin q, -cos q, 0)`` from its joint.
The dynamics are :mod:`wsim.models.articulation` (reduced coordinates, float64); the link poses of every
frame come from the joint angles by forward kinematics in torch, so the vertices are differentiable
with respect to every parameter through both the dynamics and the geometry.

Parameters (float32 in, like every wsim rollout; ``L`` links, ``D = L`` joints):

=====================  ===============  =========  ===============================================
name                   shape            unit       meaning
=====================  ===============  =========  ===============================================
``link_mass``          [L]              kg         mass of each link
``link_length``        [L]              m          joint-to-tip length (mass model, mesh, child pivot)
``joint_damping``      [D]              N m s/rad  viscous joint damping
``joint_stiffness``    [D]              N m/rad    joint spring toward q = 0
``joint_q``            [D]              rad        initial joint angles
``joint_qd``           [D]              rad/s      initial joint rates
``joint_torque``       [frames - 1, D]  N m        known applied torque per frame interval
``gravity``            [1, 3]           m/s^2      gravitational acceleration
``group_stiffness``    [G]              N m/rad    joint stiffness shared by the links of a group
=====================  ===============  =========  ===============================================

Links name their ``parent`` (a tree, e.g. a hand's fingers on a fixed palm: the optional ``base_size``
box, drawn after the links and never moving). ``group_stiffness`` (groups in order of first appearance,
``group_names``), when given, replaces the stiffness of every grouped link.

Mass models: ``rod``, a uniform solid cylinder of the link's length and radius (centre of mass at
mid-length, inertia ``m (3 r^2 + l^2) / 12`` across and ``m r^2 / 2`` along it); ``point``, all the mass
at the tip (no rotational inertia of its own). Scaling every mass and the damping, stiffness and
torques by one factor leaves the motion unchanged, so a video determines masses only against a known
damping, stiffness or torque.

Ground contact (``ground.enabled`` and ``articulation.ground_contact``): each link carries
``contact_points`` contact spheres of its radius (plus the scene's contact ``margin``) centred on its
axis, evenly spaced from the joint (0) to the tip (``(0, -length, 0)``, the bob's radius there for a
point mass), against the plane Y = ``ground.height`` (normal +Y whatever the gravity) with the scene's
contact material (:mod:`wsim.models.articulation_contact`). Spheres on the axis, rather than mesh
vertices: a capsule is exactly the sphere swept along its axis, so its two end spheres are exact and the
ones in between make a rod lying on the ground carry its weight along its length; they also follow
``link_length`` (a parameter) without depending on the mesh resolution. Box and cylinder ends are
rounded by it. The contact material joins the parameters:

=====================  ===============  =========  ===============================================
``contact_ke``         [1]              N/m        contact stiffness
``contact_kd``         [1]              N s/m      contact damping
``contact_kf``         [1]              N s/m      friction stiffness (stick regime)
``contact_mu``         [1]                         Coulomb friction coefficient
=====================  ===============  =========  ===============================================

Without it the articulation exchanges no forces with anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bridge import run_tape_program
from .device import torch_device
from .errors import ConfigError, MeshError, ParameterError, check_range
from .models.articulation import ArticulationBuilder, ArticulationRollout, GroundContact
from .models.articulation_kernels import vec3d

# name -> what its leading dimensions count (see ArticulatedSimulation.shape)
PARAMETERS = {
    "link_mass": "link", "link_length": "link", "joint_damping": "dof", "joint_stiffness": "dof",
    "joint_q": "dof", "joint_qd": "dof", "joint_torque": "interval", "gravity": "gravity",
    "group_stiffness": "group",
}
_POSITIVE = ("link_mass", "link_length")
_NON_NEGATIVE = ("joint_damping", "joint_stiffness", "group_stiffness", "contact_ke", "contact_kd", "contact_kf",
                 "contact_mu")
CONTACT = ("contact_ke", "contact_kd", "contact_kf", "contact_mu")


class _ChainDynamics(ArticulationRollout):
    """The articulation's rollout with the joint positions as an input as well: a link's length sets
    where its child hangs, so they must be differentiable. The kernels read ``joint_position`` from the
    articulation, which therefore points at the input array while the rollout is recorded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_dtypes["joint_position"] = vec3d

    def record(self, inputs: dict) -> tuple:
        inputs = dict(inputs)
        position = inputs.pop("joint_position", None)
        art = self.articulation
        fixed = art.joint_position
        if position is not None:
            art.joint_position = position
        try:
            return super().record(inputs)
        finally:
            art.joint_position = fixed


@dataclass
class ArticulatedModel:
    """What renderers and exporters read of a scene's model: the link meshes as one vertex buffer
    (link by link, ``body_vertex_start`` [L + 1]) with ``render_faces`` [F, 3], and the model defaults
    (float64, full shapes). Every vertex belongs to a rigid link (``shape_vertex_count``)."""

    device: str
    render_faces: np.ndarray
    body_vertex_start: np.ndarray
    body_names: list
    defaults: dict
    ground: bool = False
    ground_height: float = 0.0
    particle_count: int = 0
    particle_pinned: None = None

    @property
    def vertex_count(self) -> int:
        return int(self.body_vertex_start[-1])

    @property
    def shape_vertex_count(self) -> int:
        return self.vertex_count

    @property
    def body_count(self) -> int:
        return len(self.body_names)


def _link_mesh(link, resolution: int, bob: float | None):
    """A link's mesh in its frame as ``(base [V, 3], along [V], faces)``: vertex = base + along * (0, -length,
    0), so the same mesh follows any length (the joint end has along 0, the tip end along 1)."""
    from .geometry import primitive

    size = [2.0 * link.radius, 1.0, 2.0 * link.radius] if link.shape == "box" else [link.radius, 1.0]
    mesh = primitive(link.shape, size, resolution)
    base = np.array(mesh.vertices, dtype=np.float64)
    height = base[:, 1]
    if np.any(np.abs(height) < 1e-9):
        raise MeshError(f"the {link.shape} mesh has vertices at mid-length; they would not follow the length")
    along = (height < 0).astype(np.float64)
    base[:, 1] = height - 0.5 * np.sign(height)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if bob is not None:
        sphere = primitive("sphere", [bob], resolution)
        faces = np.concatenate([faces, np.asarray(sphere.faces, dtype=np.int64) + len(base)])
        base = np.concatenate([base, np.asarray(sphere.vertices, dtype=np.float64)])
        along = np.concatenate([along, np.ones(len(sphere.vertices))])
    return base, along, faces


def _wave(link, intervals: int) -> np.ndarray:
    """The link's ``torque_wave`` per frame interval (zeros without one)."""
    wave = link.torque_wave
    if wave is None:
        return np.zeros(intervals)
    phase = np.clip((np.arange(intervals) - wave.delay) / wave.period, 0.0, 1.0)
    return wave.magnitude * np.sin(2.0 * np.pi * phase)


def _rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` by ``angle`` [...] about the unit ``axis`` [3] (Rodrigues)."""
    x, y, z = axis
    zero = torch.zeros((), dtype=axis.dtype, device=axis.device)
    k = torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])])
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return torch.eye(3, dtype=axis.dtype, device=axis.device) + s * k + (1.0 - c) * (k @ k)


class NamedParameters:
    """``default`` and ``resolve`` of the reduced-coordinate simulations (:class:`ArticulatedSimulation`,
    :class:`wsim.robot.RobotSimulation`): they set ``parameters`` (the names), ``shape(name)``,
    ``model.defaults`` (float64 arrays of full shape), ``check_inputs``, ``torch_device``, ``what`` (how
    errors name the simulation) and ``positive``/``non_negative`` (the names range-checked)."""

    what = "a simulation"
    positive: tuple = ()
    non_negative: tuple = ()

    def default(self, name: str) -> torch.Tensor:
        """The scene's value of parameter ``name`` as a float32 tensor (a copy) of its full shape."""
        if name not in self.parameters:
            raise ParameterError(f"unknown parameter '{name}' of {self.what}; allowed: "
                                 f"{', '.join(self.parameter_names())}")
        return torch.tensor(self.model.defaults[name], dtype=torch.float32, device=self.torch_device)

    def resolve(self, params: dict | None) -> dict[str, torch.Tensor]:
        """Every parameter as a float64 tensor of its full shape: the given ones broadcast (and range
        checked), the rest the scene's values."""
        resolved = {}
        for name, value in (params or {}).items():
            if name not in self.parameters:
                raise ParameterError(f"unknown parameter '{name}' of {self.what}; allowed: "
                                     f"{', '.join(self.parameter_names())}")
            value = torch.as_tensor(value).to(device=self.torch_device, dtype=torch.float64)
            try:
                value = torch.broadcast_to(value, self.shape(name))
            except RuntimeError:
                raise ParameterError(f"parameter '{name}' has shape {tuple(value.shape)}, expected "
                                     f"{self.shape(name)} (or a shape that broadcasts to it)") from None
            if self.check_inputs and name in self.positive:
                check_range(name, value.detach(), 0.0, None)
            elif self.check_inputs and name in self.non_negative:
                check_range(name, value.detach(), 0.0, None, low_inclusive=True)
            resolved[name] = value
        for name, value in self.model.defaults.items():
            if name not in resolved:
                resolved[name] = torch.tensor(value, dtype=torch.float64, device=self.torch_device)
        return resolved


class ArticulatedSimulation(NamedParameters):
    """A differentiable rollout of a scene's ``articulation`` over ``frames`` rendered frames, ``substeps``
    physics steps of ``dt`` seconds each: :meth:`rollout` maps named parameters (module docstring) to the
    world-space vertices of every frame ``[frames, V, 3]`` float32. ``ground`` and ``contact``: the
    scene's ground and contact sections (None: no ground; :func:`wsim.scene.build_scene` passes them)."""

    what = "an articulation"
    positive = _POSITIVE
    non_negative = _NON_NEGATIVE

    def __init__(self, config, gravity, dt: float, substeps: int, frames: int, device: str, ground=None,
                 contact=None):
        self.config = config
        self.device = device
        self.torch_device = torch_device(device)
        self.dt, self.substeps, self.frames = float(dt), int(substeps), int(frames)
        self.steps = (self.frames - 1) * self.substeps
        self.check_inputs = True
        links = config.links
        self.link_count = len(links)
        self._parents = [index - 1 if link.parent is None else link.parent for index, link in enumerate(links)]
        builder = ArticulationBuilder(gravity=gravity)
        for index, link in enumerate(links):
            limits = {} if link.limit is None else {"limit_lower": -link.limit, "limit_upper": link.limit,
                                                    "limit_ke": link.limit_stiffness}
            # placeholders: mass properties and joint positions are inputs of every rollout
            try:
                builder.add_link(self._parents[index], "revolute", axis=link.axis, mass=link.mass, q=link.q,
                                 qd=link.qd, stiffness=link.stiffness, damping=link.damping, **limits)
            except ParameterError as error:
                raise ConfigError(f"articulation.links.{index}.parent: {error}") from None
        self.ground = None
        if config.ground_contact and ground is not None and ground.enabled and contact is not None:
            self.ground = GroundContact(height=ground.height, normal=(0.0, 1.0, 0.0), ke=contact.ke, kd=contact.kd,
                                        kf=contact.kf, mu=contact.mu, smoothing=contact.smoothing)
            # fraction of the length along the axis of every contact sphere; positions follow link_length
            fractions, owners = np.linspace(0.0, 1.0, config.contact_points), []
            for index, link in enumerate(links):
                for fraction in fractions:
                    radius = link.radius
                    if fraction == 1.0 and config.mass_model == "point":
                        radius = max(radius, config.bob_radius or 2.0 * link.radius)
                    builder.add_contact_point(index, (0.0, -fraction * link.length, 0.0), radius + contact.margin)
                    owners.append(index)
            self._contact_fraction = torch.tensor(np.tile(fractions, len(links)), dtype=torch.float64,
                                                  device=self.torch_device)
            self._contact_owner = torch.tensor(owners, device=self.torch_device)
        contacts = {name: "contact" for name in CONTACT} if self.ground is not None else {}
        self.parameters = dict(PARAMETERS, **contacts)
        self.dynamics = _ChainDynamics(builder.finalize(device), self.dt, self.substeps, self.frames,
                                       ground=self.ground)
        self._axes = torch.tensor(np.array([np.asarray(l.axis) / np.linalg.norm(l.axis) for l in links]),
                                  dtype=torch.float64, device=self.torch_device)
        bases, alongs, faces, starts, names = [], [], [], [0], []
        for index, link in enumerate(links):
            bob = None
            if config.mass_model == "point":
                bob = config.bob_radius or 2.0 * link.radius
            try:
                base, along, link_faces = _link_mesh(link, config.resolution, bob)
            except MeshError as error:
                raise ConfigError(f"articulation.links.{index}: {error}") from None
            faces.append(link_faces + starts[-1])
            bases.append(base)
            alongs.append(along)
            starts.append(starts[-1] + len(base))
            names.append(link.name or f"link{index}")
        if config.base_size is not None:
            from .geometry import primitive

            box = primitive("box", list(config.base_size), 1)
            faces.append(np.asarray(box.faces, dtype=np.int64) + starts[-1])
            self._fixed = torch.tensor(np.asarray(box.vertices, dtype=np.float64) + np.asarray(config.position),
                                       dtype=torch.float64, device=self.torch_device)
            starts.append(starts[-1] + len(box.vertices))
            names.append("base")
        else:
            self._fixed = None
        self._base = torch.tensor(np.concatenate(bases), dtype=torch.float64, device=self.torch_device)
        self._along = torch.tensor(np.concatenate(alongs), dtype=torch.float64, device=self.torch_device)
        self._owner = torch.repeat_interleave(torch.arange(self.link_count, device=self.torch_device),
                                              torch.tensor(np.diff(starts[:self.link_count + 1]),
                                                           device=self.torch_device))
        self._radius = torch.tensor([l.radius for l in links], dtype=torch.float64, device=self.torch_device)
        intervals = max(self.frames - 1, 1)
        torque = np.stack([np.broadcast_to(np.asarray(l.torque, dtype=np.float64), (intervals,)) + _wave(l, intervals)
                           for l in links], 1)
        groups = list(dict.fromkeys(l.group for l in links if l.group is not None))
        self.group_names = groups
        self._group_of = torch.tensor([groups.index(l.group) if l.group is not None else -1 for l in links],
                                      device=self.torch_device)
        defaults = {
            "link_mass": [l.mass for l in links], "link_length": [l.length for l in links],
            "joint_damping": [l.damping for l in links], "joint_stiffness": [l.stiffness for l in links],
            "joint_q": [l.q for l in links], "joint_qd": [l.qd for l in links], "joint_torque": torque,
            "gravity": np.asarray(gravity, dtype=np.float64).reshape(1, 3),
            "group_stiffness": [next(l.stiffness for l in links if l.group == g) for g in groups],
        }
        if self.ground is not None:
            defaults.update({name: [getattr(self.ground, name[len("contact_"):])] for name in CONTACT})
        defaults = {name: np.asarray(value, dtype=np.float64) for name, value in defaults.items()}
        self.model = ArticulatedModel(device=device, render_faces=np.concatenate(faces).astype(np.int32),
                                      body_vertex_start=np.asarray(starts, dtype=np.int64), body_names=names,
                                      defaults=defaults, ground=self.ground is not None,
                                      ground_height=self.ground.height if self.ground is not None else 0.0)
        self._pivot = torch.tensor(config.position, dtype=torch.float64, device=self.torch_device)
        self._offset = self._axes * torch.tensor([l.offset for l in links], dtype=torch.float64,
                                                 device=self.torch_device)[:, None]
        self._offset = self._offset + torch.tensor([l.anchor for l in links], dtype=torch.float64,
                                                   device=self.torch_device)
        self.last_q = self.last_qd = self.last_length = None

    # -- parameters -------------------------------------------------------------------------------
    def parameter_names(self) -> list[str]:
        return sorted(self.parameters)

    def shape(self, name: str) -> tuple:
        kind = self.parameters[name]
        return {"link": (self.link_count,), "dof": (self.link_count,), "gravity": (1, 3), "contact": (1,),
                "group": (len(self.group_names),),
                "interval": (max(self.frames - 1, 1), self.link_count)}[kind]

    def _mass_properties(self, mass: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres of mass [L, 3] and inertias about them [L, 3, 3] (link frames) of the mass model."""
        zero = torch.zeros_like(length)
        if self.config.mass_model == "point":
            return torch.stack([zero, -length, zero], -1), torch.zeros(self.link_count, 3, 3, dtype=mass.dtype,
                                                                       device=mass.device)
        across = mass * (3.0 * self._radius ** 2 + length ** 2) / 12.0
        inertia = torch.diag_embed(torch.stack([across, 0.5 * mass * self._radius ** 2, across], -1))
        return torch.stack([zero, -0.5 * length, zero], -1), inertia

    def _joint_positions(self, length: torch.Tensor) -> torch.Tensor:
        """Each joint in its parent's frame [L, 3]: the pivot (world) for a root, else the parent's tip, moved
        by its offset along its axis and its anchor."""
        zero = torch.zeros_like(length)
        tips = torch.stack([zero, -length, zero], -1)
        joints = [self._pivot if parent < 0 else tips[parent] for parent in self._parents]
        return torch.stack(joints, 0) + self._offset

    # -- the rollout ------------------------------------------------------------------------------
    def joint_trajectory(self, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Joint angles and rates of every frame ``([frames, D], [frames, D])`` float64 and the resolved
        parameters."""
        full = self.resolve(params)
        com, inertia = self._mass_properties(full["link_mass"], full["link_length"])
        inputs = {"link_mass": full["link_mass"], "link_com": com, "link_inertia": inertia,
                  "joint_position": self._joint_positions(full["link_length"])}
        inputs.update({name: full[name] for name in ("joint_damping", "joint_stiffness", "joint_q", "joint_qd",
                                                      "joint_torque", "gravity")})
        if "group_stiffness" in (params or {}):
            grouped = self._group_of >= 0
            shared = full["group_stiffness"][self._group_of.clamp(min=0)]
            inputs["joint_stiffness"] = torch.where(grouped, shared, full["joint_stiffness"])
        if self.ground is not None:
            inputs.update({name: full[name] for name in CONTACT})
            along = self._contact_fraction * full["link_length"][self._contact_owner]
            inputs["contact_point"] = torch.stack([torch.zeros_like(along), -along, torch.zeros_like(along)], -1)
        q, qd = run_tape_program(self.dynamics, inputs)
        self.last_q, self.last_qd, self.last_length = q.detach(), qd.detach(), full["link_length"].detach()
        return q, qd, full

    def link_poses(self, q: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World rotations ``[F, L, 3, 3]`` and joint origins ``[F, L, 3]`` of every link for the joint
        angles ``q`` [F, D] (forward kinematics of the chain, differentiable)."""
        joints = self._joint_positions(length)
        rotations, origins = [], []
        for link in range(self.link_count):
            turn = _rotation(self._axes[link], q[:, link])
            parent = self._parents[link]
            if parent < 0:
                origin = joints[link].expand(q.shape[0], 3)
                rotation = turn
            else:
                origin = origins[parent] + (rotations[parent] @ joints[link])
                rotation = rotations[parent] @ turn
            rotations.append(rotation)
            origins.append(origin)
        return torch.stack(rotations, 1), torch.stack(origins, 1)

    def vertices(self, q: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """World vertices ``[F, V, 3]`` float64 of the link meshes at joint angles ``q`` [F, D]."""
        rotations, origins = self.link_poses(q, length)
        down = torch.tensor([0.0, 1.0, 0.0], dtype=length.dtype, device=length.device)
        local = self._base - (self._along * length[self._owner])[:, None] * down
        rotation, origin = rotations[:, self._owner], origins[:, self._owner]
        moving = origin + (rotation @ local[None, :, :, None])[..., 0]
        if self._fixed is None:
            return moving
        return torch.cat([moving, self._fixed.to(moving.dtype).expand(q.shape[0], -1, -1)], 1)

    def rollout(self, params: dict | None = None) -> torch.Tensor:
        """World-space vertices of every frame ``[frames, V, 3]`` float32, differentiable with respect to
        every parameter tensor in ``params``; :class:`~wsim.errors.SimulationError` names the physics step
        where the state stopped being finite."""
        q, _, full = self.joint_trajectory(params)
        return self.vertices(q, full["link_length"]).float()

    def frame_states(self) -> dict[str, np.ndarray]:
        """Joint angles and rates of every frame of the last rollout, and each link's pose as a rigid
        body's: ``body_q`` [F, L, 3] its joint origin, ``body_r`` [F, L, 4] its rotation (x, y, z, w)
        (host copies)."""
        from .geometry.transforms import matrix_quaternion

        if self.last_q is None:
            raise RuntimeError("no rollout has run yet")
        rotations, origins = self.link_poses(self.last_q, self.last_length)
        return {"joint_q": self.last_q.cpu().numpy(), "joint_qd": self.last_qd.cpu().numpy(),
                "body_q": origins.cpu().numpy(), "body_r": matrix_quaternion(rotations.cpu().numpy())}

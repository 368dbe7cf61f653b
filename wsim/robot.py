"""Robot models from MJCF/URDF files in a scene (the ``robot`` section, :class:`~wsim.robot_config.RobotConfig`):
the file's articulation (:func:`wsim.models.articulation_io.from_mujoco_model`) as a differentiable rollout from
named parameters to the world-space vertices of its geoms, with the interface of
:class:`wsim.articulated.ArticulatedSimulation` that ``wsim simulate``, ``wsim gradcheck`` and the exporters use.

Frames: the dynamics run in the file's own (Z-up) frame, unchanged, so the joint trajectory is exactly the one
``load_mjcf`` + :class:`~wsim.models.articulation.ArticulationRollout` give. Every world point is then
``base_position + UP @ p`` with ``UP`` the quarter turn about X that takes Z up to wsim's Y up,
``(x, y, z) -> (x, z, -y)``. The ``gravity`` parameter is in wsim's frame (the dynamics get ``UP^T g``), and
the scene's ground plane ``Y = h`` is the plane ``z = h - base_position[1]`` along +Z of the file frame.

Meshes: every geom of a moving body (the world body's geoms, a floor, are left to the scene's ground) as a
triangle mesh in its link's frame: MuJoCo's compiled ``geom_pos``/``geom_quat`` place it in the body frame, whose
origin the link frame moves to the joint anchor. Boxes, spheres, ellipsoids (scaled spheres), capsules and
cylinders (MuJoCo's are along the geom's Z) from :mod:`wsim.geometry.primitives`, meshes from ``mesh_vert`` /
``mesh_face`` (MuJoCo stores them in the geom frame), colours from the geom's material or ``geom_rgba``. The link
poses of every frame come from the joint coordinates by forward kinematics in torch (the kernels' convention:
joint frame = parent pose * (``joint_position``, ``joint_rotation``), then the joint's own motion), so the
vertices are differentiable through the dynamics and the geometry.

Parameters (float32 in): ``joint_q`` [Q], ``joint_qd`` [D], ``joint_damping``, ``joint_stiffness``,
``joint_armature`` [D], ``joint_target`` [Q], ``joint_torque`` [frames - 1, D], ``link_mass`` [L], ``gravity``
[1, 3] (wsim frame) and, with ground contact, ``contact_ke``, ``contact_kd``, ``contact_kf``, ``contact_mu`` [1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .articulated import ArticulatedModel, NamedParameters
from .bridge import run_tape_program
from .device import torch_device
from .errors import ConfigError, MeshError
from .models.articulation import ArticulationRollout, GroundContact
from .models.articulation_builder import JOINT_TYPES

# Z up (MuJoCo, URDF) -> Y up (wsim): a quarter turn about X, (x, y, z) -> (x, z, -y)
UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
CONTACT = ("contact_ke", "contact_kd", "contact_kf", "contact_mu")
_DYNAMIC = ("joint_q", "joint_qd", "joint_damping", "joint_stiffness", "joint_armature", "joint_target",
            "joint_torque", "link_mass")
_POSITIVE = ("link_mass",)
_NON_NEGATIVE = ("joint_damping", "joint_stiffness", "joint_armature") + CONTACT
# a quarter turn about X taking wsim's round primitives (axis Y) to MuJoCo's (axis Z): (x, y, z) -> (x, -z, y)
_Y_TO_Z = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def robot_path(config, base: Path | None) -> Path:
    """The model file of a robot config: as given, else relative to the config's folder ``base``."""
    path = Path(config.file)
    if not path.is_absolute() and base is not None and not path.exists():
        path = base / path
    if not path.is_file():
        where = f" (nor relative to {base})" if base is not None else ""
        raise ConfigError(f"robot.file: the model file '{config.file}' does not exist{where}")
    return path


def geom_mesh(model, g: int, resolution: int):
    """Geom ``g``'s triangle mesh in its own frame, ``(vertices [V, 3], faces [F, 3])``, or None for a type
    that has no closed surface here (plane, height field, SDF)."""
    from .geometry import primitive
    import mujoco

    kind, size = int(model.geom_type[g]), np.array(model.geom_size[g], dtype=np.float64)
    types = mujoco.mjtGeom
    if kind == int(types.mjGEOM_MESH):
        m = int(model.geom_dataid[g])
        first, count = int(model.mesh_vertadr[m]), int(model.mesh_vertnum[m])
        faces = model.mesh_face[int(model.mesh_faceadr[m]):int(model.mesh_faceadr[m]) + int(model.mesh_facenum[m])]
        return np.array(model.mesh_vert[first:first + count], dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if kind == int(types.mjGEOM_BOX):  # half-sizes
        mesh, turn = primitive("box", 2.0 * size[:3]), np.eye(3)
    elif kind in (int(types.mjGEOM_SPHERE), int(types.mjGEOM_ELLIPSOID)):
        mesh, turn = primitive("sphere", [1.0], resolution), np.eye(3)
        radii = size[:1].repeat(3) if kind == int(types.mjGEOM_SPHERE) else size[:3]
        return np.asarray(mesh.vertices, dtype=np.float64) * radii, np.asarray(mesh.faces, dtype=np.int64)
    elif kind in (int(types.mjGEOM_CAPSULE), int(types.mjGEOM_CYLINDER)):  # radius, half-length along Z
        shape = "capsule" if kind == int(types.mjGEOM_CAPSULE) else "cylinder"
        mesh, turn = primitive(shape, [size[0], 2.0 * size[1]], resolution), _Y_TO_Z
    else:
        return None
    return np.asarray(mesh.vertices, dtype=np.float64) @ turn.T, np.asarray(mesh.faces, dtype=np.int64)


def _matrices(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of unit quaternions ``[..., 4]`` (w, x, y, z), normalised first."""
    w, x, y, z = torch.unbind(quaternions / quaternions.norm(dim=-1, keepdim=True), -1)
    rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    half = 0.5 * angle[..., None]
    return torch.cat([torch.cos(half), torch.sin(half) * axis], -1)


class RobotSimulation(NamedParameters):
    """A differentiable rollout of a scene's ``robot`` over ``frames`` rendered frames of ``substeps``
    physics steps of ``dt`` s: :meth:`rollout` maps named parameters (module docstring) to the world
    vertices ``[frames, V, 3]`` float32 of its geoms. ``path``: the model file; ``gravity``: the scene's
    (used unless ``config.gravity_from_file``); ``ground``/``contact``: the scene's sections."""

    what = "a robot"
    positive = _POSITIVE
    non_negative = _NON_NEGATIVE

    def __init__(self, config, path: Path, gravity, dt: float, substeps: int, frames: int, device: str,
                 ground=None, contact=None):
        from .models.articulation_io import _compile_file, _mujoco, from_mujoco_model

        mujoco = _mujoco()
        self.config, self.device, self.torch_device = config, device, torch_device(device)
        self.dt, self.substeps, self.frames = float(dt), int(substeps), int(frames)
        self.steps = (self.frames - 1) * self.substeps
        self.check_inputs = True
        touching = config.contacts and ground is not None and ground.enabled and contact is not None
        try:  # the loader's errors name the file; say which key gave it
            self.mj_model = model = _compile_file(mujoco, str(path))
            art, info = from_mujoco_model(model, source=str(path), device=device, limit_ke=config.limit_ke,
                                          contacts=touching)
        except ConfigError as error:
            raise ConfigError(f"robot.file: {error}") from None
        self.articulation, self.info = art, info
        self.base = np.asarray(config.base_position, dtype=np.float64)
        self.ground = None
        if touching and art.contact_count:
            import warp as wp

            # the scene's contact margin thickens every geom, as it does an articulation's links
            art.contact_radius = wp.array(art.contact_radius.numpy() + contact.margin, dtype=wp.float64,
                                          device=art.contact_radius.device)
            # the plane Y = h of the scene, in the file frame: z = h - base_y along +Z (UP^T (0, 1, 0))
            self.ground = GroundContact(height=ground.height - self.base[1], normal=(0.0, 0.0, 1.0), ke=contact.ke,
                                        kd=contact.kd, kf=contact.kf, mu=contact.mu, smoothing=contact.smoothing)
        self.dynamics = ArticulationRollout(art, self.dt, self.substeps, self.frames, ground=self.ground)
        self.parameters = list(_DYNAMIC) + ["gravity"] + (list(CONTACT) if self.ground is not None else [])
        defaults = {name: self.dynamics.default(name).cpu().numpy() for name in _DYNAMIC}
        file_gravity = UP @ np.asarray(info.gravity, dtype=np.float64)
        defaults["gravity"] = (file_gravity if config.gravity_from_file else np.asarray(gravity, dtype=np.float64)
                               ).reshape(1, 3)
        if self.ground is not None:
            defaults.update({name: self.dynamics.default(name).cpu().numpy() for name in CONTACT})
        self._set_initial_state(defaults, info)
        self._kinematics(art)
        self._meshes(model, mujoco, info)
        self.model = ArticulatedModel(device=device, render_faces=self._faces, body_vertex_start=self._starts,
                                      body_names=self._names, defaults=defaults,
                                      ground=ground is not None and ground.enabled,
                                      ground_height=ground.height if ground is not None else 0.0)
        self.last_q = self.last_qd = None

    def _set_initial_state(self, defaults: dict, info) -> None:
        """``q`` / ``qd`` of the config, by joint name, into the default joint_q / joint_qd."""
        types = self.articulation.joint_type.numpy()
        jointed = [link for link in range(self.articulation.link_count) if types[link] != JOINT_TYPES["fixed"]]
        kinds = {v: k for k, v in JOINT_TYPES.items()}
        for key, index, widths in (("q", info.coord_index, {"ball": 4, "free": 7}),
                                   ("qd", info.dof_index, {"ball": 3, "free": 6})):
            target = defaults["joint_" + key]
            for name, value in getattr(self.config, key).items():
                if name not in index:
                    raise ConfigError(f"robot.{key}: '{name}' is not a joint of {self.config.file}; its joints: "
                                      f"{', '.join(info.joint_names) or 'none'}")
                kind = kinds[int(types[jointed[info.joint_names.index(name)]])]
                width = widths.get(kind, 1)
                value = np.atleast_1d(np.asarray(value, dtype=np.float64))
                if value.size != width:
                    raise ConfigError(f"robot.{key}.{name}: a {kind} joint takes {width} value(s), got {value.size}")
                target[index[name]:index[name] + width] = value

    def _kinematics(self, art) -> None:
        t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, device=self.torch_device)  # noqa: E731
        self._parent = art.link_parent.numpy().tolist()
        self._type = art.joint_type.numpy().tolist()
        self._coord = art.joint_coord.numpy().tolist()
        self._joint_position = t(art.joint_position.numpy())
        self._joint_rotation = _matrices(t(np.roll(art.joint_rotation.numpy(), 1, -1)))  # xyzw -> wxyz
        self._joint_axis = t(art.joint_axis.numpy())

    def _meshes(self, model, mujoco, info) -> None:
        """Every moving geom's mesh in its link frame, grouped by link (links without geoms are not drawn)."""
        local, faces, colors, starts, names, drawn = [], [], [], [0], [], []
        self.geom_vertex_range = {}  # MuJoCo geom id -> (first, last) vertex of the render buffer
        count = 0
        for b in range(1, model.nbody):
            anchor = model.jnt_pos[model.body_jntadr[b]] if model.body_jntnum[b] else np.zeros(3)
            for g in range(int(model.body_geomadr[b]), int(model.body_geomadr[b]) + int(model.body_geomnum[b])):
                try:
                    mesh = geom_mesh(model, g, self.config.resolution)
                except MeshError as error:
                    raise ConfigError(f"robot.file: {self.config.file}: geom {g}: {error}") from None
                if mesh is None:
                    continue
                matrix = np.zeros(9)
                mujoco.mju_quat2Mat(matrix, np.asarray(model.geom_quat[g], dtype=np.float64))
                vertices = (model.geom_pos[g] - anchor) + mesh[0] @ matrix.reshape(3, 3).T
                material = int(model.geom_matid[g])
                rgba = model.mat_rgba[material] if material >= 0 else model.geom_rgba[g]
                local.append(vertices)
                faces.append(mesh[1] + count)
                colors.append(np.tile(np.asarray(rgba[:3], dtype=np.float32), (len(vertices), 1)))
                self.geom_vertex_range[g] = (count, count + len(vertices))
                count += len(vertices)
            if count > starts[-1]:
                starts.append(count)
                names.append(info.link_names[b - 1])
                drawn.append(b - 1)
        if not drawn:
            raise ConfigError(f"robot.file: {self.config.file} has no geoms on moving bodies to draw")
        self._local = torch.tensor(np.concatenate(local), dtype=torch.float64, device=self.torch_device)
        self._faces = np.concatenate(faces).astype(np.int32)
        self.colors = np.concatenate(colors)
        self._starts, self._names, self._drawn = np.asarray(starts, dtype=np.int64), names, drawn
        self._owner = torch.repeat_interleave(torch.tensor(drawn, device=self.torch_device),
                                              torch.tensor(np.diff(starts), device=self.torch_device))

    # -- parameters -------------------------------------------------------------------------------
    def parameter_names(self) -> list[str]:
        return sorted(self.parameters)

    def shape(self, name: str) -> tuple:
        if name == "gravity":
            return (1, 3)
        return self.dynamics.shape(name)

    # -- the rollout ------------------------------------------------------------------------------
    def joint_trajectory(self, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Joint coordinates and rates of every frame ``([frames, Q], [frames, D])`` float64 and the resolved
        parameters."""
        full = self.resolve(params)
        inputs = {name: full[name] for name in _DYNAMIC}
        up = torch.tensor(UP, dtype=torch.float64, device=self.torch_device)
        inputs["gravity"] = full["gravity"] @ up  # row vectors: g_file = UP^T g
        if self.ground is not None:
            inputs.update({name: full[name] for name in CONTACT})
        q, qd = run_tape_program(self.dynamics, inputs)
        self.last_q, self.last_qd = q.detach(), qd.detach()
        return q, qd, full

    def link_poses(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World (wsim frame) rotations ``[F, L, 3, 3]`` and origins ``[F, L, 3]`` of every link frame for the
        joint coordinates ``q`` [F, Q] (forward kinematics, differentiable)."""
        frames = q.shape[0]
        rotations, origins = [], []
        for link, parent in enumerate(self._parent):
            if parent < 0:
                frame_rotation = self._joint_rotation[link].expand(frames, 3, 3)
                frame_origin = self._joint_position[link].expand(frames, 3)
            else:
                frame_rotation = rotations[parent] @ self._joint_rotation[link]
                frame_origin = origins[parent] + rotations[parent] @ self._joint_position[link]
            kind, c = self._type[link], self._coord[link]
            rotation, origin = frame_rotation, frame_origin
            if kind == JOINT_TYPES["revolute"]:
                rotation = frame_rotation @ _matrices(_axis_angle(self._joint_axis[link], q[:, c]))
            elif kind == JOINT_TYPES["prismatic"]:
                origin = frame_origin + (frame_rotation @ self._joint_axis[link]) * q[:, c, None]
            elif kind == JOINT_TYPES["ball"]:
                rotation = frame_rotation @ _matrices(q[:, c:c + 4])
            elif kind == JOINT_TYPES["free"]:
                origin = frame_origin + (frame_rotation @ q[:, c:c + 3, None])[..., 0]
                rotation = frame_rotation @ _matrices(q[:, c + 3:c + 7])
            rotations.append(rotation)
            origins.append(origin)
        up = torch.tensor(UP, dtype=torch.float64, device=self.torch_device)
        base = torch.tensor(self.base, dtype=torch.float64, device=self.torch_device)
        return up @ torch.stack(rotations, 1), base + torch.stack(origins, 1) @ up.T

    def vertices(self, q: torch.Tensor) -> torch.Tensor:
        """World vertices ``[F, V, 3]`` float64 of the geom meshes at joint coordinates ``q`` [F, Q]."""
        rotations, origins = self.link_poses(q)
        rotation, origin = rotations[:, self._owner], origins[:, self._owner]
        return origin + (rotation @ self._local[None, :, :, None])[..., 0]

    def rollout(self, params: dict | None = None) -> torch.Tensor:
        """World-space vertices of every frame ``[frames, V, 3]`` float32, differentiable with respect to
        every parameter tensor in ``params``."""
        q, _, _ = self.joint_trajectory(params)
        return self.vertices(q).float()

    def frame_states(self) -> dict[str, np.ndarray]:
        """Joint coordinates and rates of every frame of the last rollout, and each drawn link's pose:
        ``body_q`` [F, B, 3] its frame's origin, ``body_r`` [F, B, 4] its rotation (x, y, z, w) (host copies)."""
        from .geometry.transforms import matrix_quaternion

        if self.last_q is None:
            raise RuntimeError("no rollout has run yet")
        rotations, origins = self.link_poses(self.last_q)
        drawn = self._drawn
        return {"joint_q": self.last_q.cpu().numpy(), "joint_qd": self.last_qd.cpu().numpy(),
                "body_q": origins[:, drawn].cpu().numpy(),
                "body_r": matrix_quaternion(rotations[:, drawn].cpu().numpy())}

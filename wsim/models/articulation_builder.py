"""Building articulations: :class:`ArticulationBuilder` collects links in depth-first pre-order and
finalises them into the device arrays of an :class:`Articulation` (the model and its conventions are in
:mod:`wsim.models.articulation`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import warp as wp

from ..errors import ParameterError
from .articulation_kernels import (BALL, DOF_ROTATION, DOF_SCALAR, DOF_TRANSLATION, FIXED, FREE, PRISMATIC,
                                   REVOLUTE, quatd, vec3d)

JOINT_TYPES = {"revolute": REVOLUTE, "prismatic": PRISMATIC, "fixed": FIXED, "ball": BALL, "free": FREE}
# per joint type: the kinds of its degrees of freedom (velocities) and its number of coordinates (positions)
DOF_KINDS = {"revolute": [DOF_SCALAR], "prismatic": [DOF_SCALAR], "fixed": [], "ball": [DOF_ROTATION] * 3,
             "free": [DOF_TRANSLATION] * 3 + [DOF_ROTATION] * 3}
COORD_COUNTS = {"revolute": 1, "prismatic": 1, "fixed": 0, "ball": 4, "free": 7}
# the coordinates at rest: zero angle or offset, the identity quaternion (w, x, y, z) at the frame's origin
REST_COORDS = {"revolute": [0.0], "prismatic": [0.0], "fixed": [], "ball": [1.0, 0.0, 0.0, 0.0],
               "free": [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]}

# Limits are off by default; a finite bound keeps ``q - bound`` finite in every branch of the adjoint.
NO_LIMIT = 1.0e10


@dataclass
class Articulation:
    """Static description of one or more kinematic trees, on ``device`` (see the module docstring).

    Per link [L]: ``link_parent`` int32 (-1 for a root), ``link_subtree_end`` int32 (one past the last
    link of its subtree), ``joint_type`` int32 (:data:`REVOLUTE`, :data:`PRISMATIC`, :data:`FIXED`,
    :data:`BALL`, :data:`FREE`), ``joint_dof`` int32 (its first index into qd, -1 for fixed),
    ``joint_coord`` int32 (its first index into q, -1 for fixed), ``joint_position`` vec3d m and
    ``joint_rotation`` quatd (joint frame in the parent frame), ``joint_axis`` vec3d unit (joint frame).
    Per dof [D]: ``dof_link`` int32, ``dof_kind`` int32 (:data:`DOF_SCALAR`, :data:`DOF_TRANSLATION`,
    :data:`DOF_ROTATION`), ``dof_coord`` int32 (its coordinate in q; for a rotation its quaternion's
    first), ``dof_component`` int32 (0..2 within a translation or a rotation). ``coord_count``: Q, the
    length of q (Q > D with ball or free joints). Per articulation: ``articulation_link_start`` /
    ``articulation_dof_start`` int32 [A + 1] ranges, ``articulation_matrix_start`` /
    ``articulation_cube_start`` int32 [A] offsets of each articulation's n x n and n^3 blocks of solver
    scratch (``matrix_size`` / ``cube_size`` in all).
    ``defaults``: numpy float64 values of every parameter except ``joint_torque``.
    Contact points [P] (:mod:`wsim.models.articulation_contact`): ``contact_link`` int32, ``contact_radius``
    float64 m; their positions in the link frames are the parameter ``contact_point`` [P, 3]. The arrays
    hold one unused entry when ``contact_count`` is 0.
    """

    device: str
    link_count: int
    dof_count: int
    coord_count: int
    articulation_count: int
    matrix_size: int
    cube_size: int
    link_parent: wp.array
    link_subtree_end: wp.array
    joint_type: wp.array
    joint_dof: wp.array
    joint_coord: wp.array
    joint_position: wp.array
    joint_rotation: wp.array
    joint_axis: wp.array
    dof_link: wp.array
    dof_kind: wp.array
    dof_coord: wp.array
    dof_component: wp.array
    articulation_link_start: wp.array
    articulation_dof_start: wp.array
    articulation_matrix_start: wp.array
    articulation_cube_start: wp.array
    defaults: dict = field(default_factory=dict)
    contact_count: int = 0
    contact_link: wp.array = None
    contact_radius: wp.array = None


class ArticulationBuilder:
    """Collects links in depth-first pre-order and finalises them into an :class:`Articulation`.

    A link whose parent is -1 starts a new articulation. Units are SI, gravity defaults to
    ``(0, -9.81, 0)`` m/s^2 (wsim is Y up). Every degree of freedom must move some mass or inertia (or
    carry armature): otherwise the mass matrix is singular and the rollout raises ``SimulationError``.
    """

    def __init__(self, gravity=(0.0, -9.81, 0.0)):
        self.gravity = np.asarray(gravity, dtype=np.float64).reshape(1, 3)
        self.links: list[dict] = []
        self.dofs: list[dict] = []
        self.coords: list[dict] = []
        self.contacts: list[dict] = []

    def add_link(self, parent: int, joint: str = "revolute", axis=(0.0, 0.0, 1.0), position=(0.0, 0.0, 0.0),
                 rotation=(0.0, 0.0, 0.0, 1.0), mass: float = 1.0, com=(0.0, 0.0, 0.0), inertia=None,
                 q=None, qd=0.0, stiffness=0.0, damping=0.0, armature=0.0, target=None,
                 limit_lower: float = -NO_LIMIT, limit_upper: float = NO_LIMIT, limit_ke: float = 0.0) -> int:
        """Append a link hanging from ``parent`` by a ``joint`` ("revolute", "prismatic", "fixed", "ball"
        or "free") and return its index. ``inertia`` is the 3x3 inertia about the centre of mass (kg m^2,
        link frame; default zero: a point mass). Joint arguments are ignored for a fixed joint.

        ``q`` and ``target`` hold the joint's coordinates (default: at rest, :data:`REST_COORDS`): one
        number for a revolute or prismatic joint, a quaternion ``(w, x, y, z)`` for a ball joint, the
        position then the quaternion (7 numbers) for a free joint. ``qd`` and the per-dof terms
        (``stiffness``, ``damping``, ``armature``) take one number or one per dof (3 for a ball joint,
        6 for a free joint: linear, then angular). ``axis`` applies to revolute and prismatic joints only.
        Limits: for a revolute or prismatic joint, ``limit_lower <= q <= limit_upper`` (rad or m); for a
        ball joint a cone, MuJoCo's ball ``range="0 limit_upper"``: the rotation angle of q from the joint
        frame (the identity quaternion) stays <= ``limit_upper`` (rad, >= 0; ``limit_lower`` is unused).
        Beyond a limit an undamped penalty ``limit_ke`` (N m/rad, N/m) pushes back, for a ball joint
        about the rotation axis. A free joint has no limits. A free joint must start an articulation
        (``parent`` -1) and moves its link in the joint frame (``position``, ``rotation``; default the world)."""
        if joint not in JOINT_TYPES:
            raise ParameterError(f"unknown joint type '{joint}'; allowed: {', '.join(JOINT_TYPES)}")
        index = len(self.links)
        if parent >= index or parent < -1:
            raise ParameterError(f"link {index}: parent {parent} must be -1 or an existing link")
        if parent >= 0 and not self._on_last_path(parent):
            raise ParameterError(f"link {index}: parent {parent} breaks depth-first order (add a subtree's links "
                                 "before its siblings)")
        if joint == "free" and parent != -1:
            raise ParameterError(f"link {index}: a free joint must start an articulation (parent -1), as in MuJoCo")
        axis = np.asarray(axis, dtype=np.float64)
        if joint in ("revolute", "prismatic") and not np.linalg.norm(axis) > 0:
            raise ParameterError(f"link {index}: the joint axis must be non-zero")
        if not mass > 0:
            raise ParameterError(f"link {index}: mass must be > 0, got {mass}")
        rotation = np.asarray(rotation, dtype=np.float64)
        kinds = DOF_KINDS[joint]
        coords = COORD_COUNTS[joint]

        def per(value, count, what):
            array = np.asarray(value, dtype=np.float64).reshape(-1)
            if array.size not in (1, count):
                raise ParameterError(f"link {index}: {what} needs 1 or {count} values for a {joint} joint, "
                                     f"got {array.size}")
            return np.broadcast_to(array, (count,)).copy()

        coordinates = per(REST_COORDS[joint] if q is None else q, coords, "q") if coords else np.zeros(0)
        targets = per(REST_COORDS[joint] if target is None else target, coords, "target") if coords else np.zeros(0)
        for values, what in ((coordinates, "q"), (targets, "target")):
            if joint in ("ball", "free") and not np.linalg.norm(values[-4:]) > 0:
                raise ParameterError(f"link {index}: the quaternion of {what} must be non-zero")
        if joint == "ball" and not limit_upper >= 0.0:
            raise ParameterError(f"link {index}: a ball joint's cone limit (limit_upper) must be >= 0 rad, "
                                 f"got {limit_upper}")
        velocities = per(qd, len(kinds), "qd") if kinds else []
        terms = {name: per(value, len(kinds), name) for name, value in
                 (("stiffness", stiffness), ("damping", damping), ("armature", armature))} if kinds else {}
        self.links.append({
            "parent": parent, "type": JOINT_TYPES[joint], "axis": axis / max(np.linalg.norm(axis), 1e-300),
            "position": np.asarray(position, dtype=np.float64), "rotation": rotation / np.linalg.norm(rotation),
            "mass": float(mass), "com": np.asarray(com, dtype=np.float64),
            "inertia": np.zeros((3, 3)) if inertia is None else np.asarray(inertia, dtype=np.float64),
            "dof": len(self.dofs) if kinds else -1, "coord": len(self.coords) if coords else -1,
        })
        first_coord = len(self.coords)
        self.coords.extend({"q": value, "target": goal} for value, goal in zip(coordinates, targets))
        rotation_start = 3 if joint == "free" else 0  # the quaternion's place among the joint's coordinates
        for k, kind in enumerate(kinds):
            scalar = kind == DOF_SCALAR
            # a ball joint's three rotation dofs share its cone (the kernel reads it from each of them)
            upper = limit_upper if scalar or joint == "ball" else NO_LIMIT
            ke = limit_ke if scalar or joint == "ball" else 0.0
            self.dofs.append({
                "link": index, "kind": kind, "component": k % 3,
                # a rotation dof refers to its joint's quaternion, the others to their own coordinate
                "coord": first_coord + (rotation_start if kind == DOF_ROTATION else k),
                "qd": velocities[k], **{name: values[k] for name, values in terms.items()},
                "limit_lower": limit_lower if scalar else -NO_LIMIT, "limit_upper": upper, "limit_ke": ke})
        return index

    def add_contact_point(self, link: int, position=(0.0, 0.0, 0.0), radius: float = 0.0) -> int:
        """Add a ground-contact point fixed to ``link`` at ``position`` (m, link frame), the centre of a
        sphere of ``radius`` (m) that touches the ground (:mod:`wsim.models.articulation_contact`); returns
        its index. Points act only in a rollout given a ``ground``."""
        if not 0 <= link < len(self.links):
            raise ParameterError(f"contact point {len(self.contacts)}: link {link} does not exist")
        position = np.asarray(position, dtype=np.float64).reshape(-1)
        if position.size != 3 or not np.all(np.isfinite(position)):
            raise ParameterError(f"contact point {len(self.contacts)}: position must be 3 finite numbers")
        if not (np.isfinite(radius) and radius >= 0.0):
            raise ParameterError(f"contact point {len(self.contacts)}: radius must be >= 0, got {radius}")
        self.contacts.append({"link": int(link), "position": position, "radius": float(radius)})
        return len(self.contacts) - 1

    def _on_last_path(self, parent: int) -> bool:
        """Whether ``parent`` is the last link or one of its ancestors (pre-order keeps subtrees contiguous)."""
        link = len(self.links) - 1
        while link >= 0:
            if link == parent:
                return True
            link = self.links[link]["parent"]
        return False

    def finalize(self, device: str = "cpu") -> Articulation:
        """The collected links as an :class:`Articulation` on the Warp ``device`` ("cpu", "cuda:0"...)."""
        links, dofs, coords = self.links, self.dofs, self.coords
        count = len(links)
        if not count:
            raise ParameterError("an articulation needs at least one link")
        subtree_end = list(range(1, count + 1))
        for index in reversed(range(count)):
            parent = links[index]["parent"]
            if parent >= 0:
                subtree_end[parent] = max(subtree_end[parent], subtree_end[index])
        roots = [i for i, link in enumerate(links) if link["parent"] < 0]
        link_start = roots + [count]
        # dofs are numbered in link order, so an articulation's first dof counts the dofs of the links before it
        dof_start = [sum(1 for dof in dofs if dof["link"] < start) for start in link_start]
        matrix_start, matrix_size, cube_start, cube_size = [], 0, [], 0
        for a in range(len(roots)):
            n = dof_start[a + 1] - dof_start[a]
            matrix_start.append(matrix_size)
            matrix_size += n * n
            cube_start.append(cube_size)
            cube_size += n ** 3

        def array(values, dtype):
            return wp.array(np.asarray(values), dtype=dtype, device=device)

        def column(rows, key):
            return np.array([row[key] for row in rows], dtype=np.float64)

        defaults = {
            "link_mass": column(links, "mass"), "link_com": np.stack([l["com"] for l in links]),
            "link_inertia": np.stack([l["inertia"] for l in links]), "gravity": self.gravity.copy(),
            "joint_q": column(coords, "q"), "joint_qd": column(dofs, "qd"),
            "joint_stiffness": column(dofs, "stiffness"), "joint_damping": column(dofs, "damping"),
            "joint_armature": column(dofs, "armature"), "joint_target": column(coords, "target"),
            "joint_limit_lower": column(dofs, "limit_lower"), "joint_limit_upper": column(dofs, "limit_upper"),
            "joint_limit_ke": column(dofs, "limit_ke"),
            "contact_point": np.array([c["position"] for c in self.contacts]).reshape(-1, 3),
        }
        contacts = self.contacts or [{"link": 0, "radius": 0.0}]
        return Articulation(
            device=device, link_count=count, dof_count=len(dofs), coord_count=len(coords),
            articulation_count=len(roots),
            matrix_size=matrix_size, cube_size=cube_size,
            link_parent=array([l["parent"] for l in links], wp.int32),
            link_subtree_end=array(subtree_end, wp.int32),
            joint_type=array([l["type"] for l in links], wp.int32),
            joint_dof=array([l["dof"] for l in links], wp.int32),
            joint_coord=array([l["coord"] for l in links], wp.int32),
            joint_position=array(np.stack([l["position"] for l in links]), vec3d),
            joint_rotation=array(np.stack([l["rotation"] for l in links]), quatd),
            joint_axis=array(np.stack([l["axis"] for l in links]), vec3d),
            dof_link=array([d["link"] for d in dofs] or [0], wp.int32),
            dof_kind=array([d["kind"] for d in dofs] or [0], wp.int32),
            dof_coord=array([d["coord"] for d in dofs] or [0], wp.int32),
            dof_component=array([d["component"] for d in dofs] or [0], wp.int32),
            articulation_link_start=array(link_start, wp.int32),
            articulation_dof_start=array(dof_start, wp.int32),
            articulation_matrix_start=array(matrix_start, wp.int32),
            articulation_cube_start=array(cube_start, wp.int32),
            defaults=defaults,
            contact_count=len(self.contacts),
            contact_link=array([c["link"] for c in contacts], wp.int32),
            contact_radius=array([c["radius"] for c in contacts], wp.float64),
        )

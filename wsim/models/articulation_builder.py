"""Building articulations: :class:`ArticulationBuilder` collects links in depth-first pre-order and
finalises them into the device arrays of an :class:`Articulation` (the model and its conventions are in
:mod:`wsim.models.articulation`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import warp as wp

from ..errors import ParameterError
from .articulation_kernels import FIXED, PRISMATIC, REVOLUTE, quatd, vec3d

JOINT_TYPES = {"revolute": REVOLUTE, "prismatic": PRISMATIC, "fixed": FIXED}

# Limits are off by default; a finite bound keeps ``q - bound`` finite in every branch of the adjoint.
NO_LIMIT = 1.0e10


@dataclass
class Articulation:
    """Static description of one or more kinematic trees, on ``device`` (see the module docstring).

    Per link [L]: ``link_parent`` int32 (-1 for a root), ``link_subtree_end`` int32 (one past the last
    link of its subtree), ``joint_type`` int32 (:data:`REVOLUTE`, :data:`PRISMATIC`, :data:`FIXED`),
    ``joint_dof`` int32 (its index into q, -1 for fixed), ``joint_position`` vec3d m and
    ``joint_rotation`` quatd (joint frame in the parent frame), ``joint_axis`` vec3d unit (joint frame).
    Per dof [D]: ``dof_link`` int32. Per articulation: ``articulation_link_start`` / ``articulation_dof_start``
    int32 [A + 1] ranges, ``articulation_matrix_start`` / ``articulation_cube_start`` int32 [A] offsets of
    each articulation's n x n and n^3 blocks of solver scratch (``matrix_size`` / ``cube_size`` in all).
    ``defaults``: numpy float64 values of every parameter except ``joint_torque``.
    """

    device: str
    link_count: int
    dof_count: int
    articulation_count: int
    matrix_size: int
    cube_size: int
    link_parent: wp.array
    link_subtree_end: wp.array
    joint_type: wp.array
    joint_dof: wp.array
    joint_position: wp.array
    joint_rotation: wp.array
    joint_axis: wp.array
    dof_link: wp.array
    articulation_link_start: wp.array
    articulation_dof_start: wp.array
    articulation_matrix_start: wp.array
    articulation_cube_start: wp.array
    defaults: dict = field(default_factory=dict)


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

    def add_link(self, parent: int, joint: str = "revolute", axis=(0.0, 0.0, 1.0), position=(0.0, 0.0, 0.0),
                 rotation=(0.0, 0.0, 0.0, 1.0), mass: float = 1.0, com=(0.0, 0.0, 0.0), inertia=None,
                 q: float = 0.0, qd: float = 0.0, stiffness: float = 0.0, damping: float = 0.0,
                 armature: float = 0.0, target: float = 0.0, limit_lower: float = -NO_LIMIT,
                 limit_upper: float = NO_LIMIT, limit_ke: float = 0.0) -> int:
        """Append a link hanging from ``parent`` by a ``joint`` ("revolute", "prismatic" or "fixed") and
        return its index. ``inertia`` is the 3x3 inertia about the centre of mass (kg m^2, link frame;
        default zero: a point mass). Joint arguments are ignored for a fixed joint."""
        if joint not in JOINT_TYPES:
            raise ParameterError(f"unknown joint type '{joint}'; allowed: {', '.join(JOINT_TYPES)}")
        index = len(self.links)
        if parent >= index or parent < -1:
            raise ParameterError(f"link {index}: parent {parent} must be -1 or an existing link")
        if parent >= 0 and not self._on_last_path(parent):
            raise ParameterError(f"link {index}: parent {parent} breaks depth-first order (add a subtree's links "
                                 "before its siblings)")
        axis = np.asarray(axis, dtype=np.float64)
        if joint != "fixed" and not np.linalg.norm(axis) > 0:
            raise ParameterError(f"link {index}: the joint axis must be non-zero")
        if not mass > 0:
            raise ParameterError(f"link {index}: mass must be > 0, got {mass}")
        rotation = np.asarray(rotation, dtype=np.float64)
        self.links.append({
            "parent": parent, "type": JOINT_TYPES[joint], "axis": axis / max(np.linalg.norm(axis), 1e-300),
            "position": np.asarray(position, dtype=np.float64), "rotation": rotation / np.linalg.norm(rotation),
            "mass": float(mass), "com": np.asarray(com, dtype=np.float64),
            "inertia": np.zeros((3, 3)) if inertia is None else np.asarray(inertia, dtype=np.float64),
            "dof": -1 if joint == "fixed" else len(self.dofs),
        })
        if joint != "fixed":
            self.dofs.append({"link": index, "q": q, "qd": qd, "stiffness": stiffness, "damping": damping,
                              "armature": armature, "target": target, "limit_lower": limit_lower,
                              "limit_upper": limit_upper, "limit_ke": limit_ke})
        return index

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
        links, dofs = self.links, self.dofs
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
        dof_start = [sum(1 for link in links[:start] if link["dof"] >= 0) for start in link_start]
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
            "joint_q": column(dofs, "q"), "joint_qd": column(dofs, "qd"),
            "joint_stiffness": column(dofs, "stiffness"), "joint_damping": column(dofs, "damping"),
            "joint_armature": column(dofs, "armature"), "joint_target": column(dofs, "target"),
            "joint_limit_lower": column(dofs, "limit_lower"), "joint_limit_upper": column(dofs, "limit_upper"),
            "joint_limit_ke": column(dofs, "limit_ke"),
        }
        return Articulation(
            device=device, link_count=count, dof_count=len(dofs), articulation_count=len(roots),
            matrix_size=matrix_size, cube_size=cube_size,
            link_parent=array([l["parent"] for l in links], wp.int32),
            link_subtree_end=array(subtree_end, wp.int32),
            joint_type=array([l["type"] for l in links], wp.int32),
            joint_dof=array([l["dof"] for l in links], wp.int32),
            joint_position=array(np.stack([l["position"] for l in links]), vec3d),
            joint_rotation=array(np.stack([l["rotation"] for l in links]), quatd),
            joint_axis=array(np.stack([l["axis"] for l in links]), vec3d),
            dof_link=array([d["link"] for d in dofs] or [0], wp.int32),
            articulation_link_start=array(link_start, wp.int32),
            articulation_dof_start=array(dof_start, wp.int32),
            articulation_matrix_start=array(matrix_start, wp.int32),
            articulation_cube_start=array(cube_start, wp.int32),
            defaults=defaults,
        )

"""Articulations from MJCF and URDF files, compiled by MuJoCo's own parser.

MuJoCo (the optional ``mujoco`` package) reads and compiles the file: defaults, ``<include>``, angle units,
``fullinertia``, inertias from geoms, URDF ``rpy`` origins and fused static bodies are all resolved there.
This module then walks the compiled ``MjModel``, so a loaded articulation is the model MuJoCo itself
would simulate (its tree, masses, inertias and joint terms), and ``wsim`` q indexes like MuJoCo's
``qpos``. Mapping, per MuJoCo body ``b`` (the world body excluded, bodies stay in MuJoCo's depth-first
order, so link ``b - 1`` is body ``b`` and a body whose parent is the world starts an articulation):

* no joint: a fixed link (static bodies attached to the world become articulations without dofs);
  one hinge / slide / ball / free joint: a revolute / prismatic / ball / free link; several joints on one
  body: ConfigError. Ball and free joints keep MuJoCo's coordinates (``qpos`` quaternions ``(w, x, y, z)``,
  angular velocities in the body frame, a free joint's position and linear velocity in the world); a free
  link's joint frame is the world, its initial q MuJoCo's ``qpos0`` (the body's pos and quat).
* Link frame = the body frame translated to the joint anchor ``jnt_pos`` (so a joint off the body origin
  is supported: the builder needs the joint at the link origin); mass properties and child frames are
  shifted by the same offset. MuJoCo moves a joint by ``qpos - qpos0`` (``ref``); the joint frame is
  pre-rotated (hinge) or pre-shifted (slide) by ``-ref`` so that wsim's q equals MuJoCo's qpos.
* Inertia: MuJoCo stores principal moments ``body_inertia`` in the frame ``body_iquat`` at ``body_ipos``;
  the builder takes the full 3x3 matrix in the link frame, ``R diag(I) R^T``.
* Joint terms: ``jnt_stiffness`` toward ``qpos_spring`` (springref; for a ball joint on the rotation
  vector from that orientation), ``dof_damping`` (wsim applies it explicitly; MuJoCo's Euler integrator
  implicitly unless its ``eulerdamp`` flag is disabled, so trajectories differ by O(dt) when damping is
  non-zero), ``dof_armature``, ``jnt_range`` where ``jnt_limited`` (a ball joint's ``range="0 max"`` is
  a cone: the rotation angle of its qpos quaternion stays <= max, the builder's ``limit_upper``). MuJoCo
  limits are soft constraints;
  wsim's are penalty springs (undamped) with stiffness ``limit_ke``, by default the one giving the
  same natural frequency as MuJoCo's limit at maximal impedance: ``ke = K / (dmax * invweight0)``, with
  ``K = 1 / (timeconst * dampratio)^2`` from ``jnt_solref`` (or ``-solref[0]`` in its direct form),
  ``dmax = jnt_solimp[1]`` and ``1 / dof_invweight0`` the joint's effective mass at qpos0 (kg m^2 or kg).
* Gravity: ``opt.gravity`` as the file gives it (MuJoCo and URDF are Z up: (0, 0, -9.81) by default),
  passed to the builder unchanged; wsim's own Y-up default does not apply to loaded models.
  Disable flags for gravity, limits, springs and dampers are honoured.

Not modelled, listed in ``info.ignored`` with a warning when the file has them: actuators, tendons,
equality constraints, joint friction loss, nonlinear (polynomial) springs and dampers,
plastic joints.
Contacts: MuJoCo's contact model is not reproduced. With ``contacts=True`` the collision geoms become
ground-contact points of their links (:mod:`wsim.models.articulation_contact`; the ground itself is an
argument of the rollout, ``ArticulationRollout(..., ground=GroundContact(...))``, its normal by default
against the loaded gravity): a sphere its centre with its radius, a capsule its two end centres with
its radius, a box its 8 corners; other geom types are listed in ``info.ignored``. Geoms that collide with
nothing (``contype`` and ``conaffinity`` 0: visual only) and the world's geoms (a floor) are skipped. Massless jointless bodies (frames such as a URDF
tool link kept with ``fusestatic="false"``) get a negligible mass (:data:`MASSLESS`): the builder
requires mass > 0, MuJoCo accepts them (it rejects massless bodies that move on their own joint).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .articulation_builder import NO_LIMIT, Articulation, ArticulationBuilder

# Stands in for a zero body mass: 1e-300 kg changes no product in float64 at the scale of real links
MASSLESS = 1.0e-300


@dataclass
class ArticulationInfo:
    """Names and indices of a loaded articulation.

    ``link_names`` [L]: MuJoCo body names in link order (``body<i>`` for unnamed bodies).
    ``joint_names``: joint names in order (``joint<j>`` for unnamed joints), one per jointed link.
    ``link_index``: name -> index into the links. ``dof_index``: joint name -> its first index into qd
    and every per-dof ``joint_*`` parameter (MuJoCo's ``jnt_dofadr``); ``coord_index``: joint name -> its
    first index into q and ``joint_target`` (``jnt_qposadr``). The two agree for hinge and slide joints only;
    a ball joint spans 4 coordinates and 3 dofs, a free joint 7 and 6.
    parameter. ``timestep``: the file's ``opt.timestep`` (s). ``gravity``: (3,) m/s^2 as loaded.
    ``ignored``: features of the file the articulation does not model.
    """

    source: str
    link_names: list[str]
    joint_names: list[str]
    link_index: dict[str, int]
    dof_index: dict[str, int]
    coord_index: dict[str, int]
    timestep: float
    gravity: np.ndarray
    ignored: list[str] = field(default_factory=list)


def _mujoco():
    try:
        import mujoco
    except ImportError as error:  # an optional dependency: only the loaders need it
        raise ImportError("loading MJCF/URDF needs the 'mujoco' package: pip install \"wsim[robots]\" "
                          "(or pip install mujoco)") from error
    return mujoco


def load_mjcf(source, device: str = "cpu", limit_ke: float | None = None,
              contacts: bool = False) -> tuple[Articulation, ArticulationInfo]:
    """Load an MJCF model (a file path, or the XML text itself when it starts with ``<``) as an
    :class:`Articulation` on ``device``, with its :class:`ArticulationInfo`. ``limit_ke`` overrides the
    derived joint-limit penalty stiffness (N m/rad, N/m prismatic) of every limited joint; ``contacts``
    turns the collision geoms into ground-contact points (module docstring)."""
    mujoco = _mujoco()
    text = str(source)
    if not isinstance(source, Path) and text.lstrip().startswith("<"):
        name = "<MJCF string>"
        try:
            model = mujoco.MjModel.from_xml_string(text)
        except ValueError as error:
            raise ConfigError(f"{name}: MuJoCo could not compile it: {error}") from None
    else:
        name = text
        model = _compile_file(mujoco, text)
    return from_mujoco_model(model, source=name, device=device, limit_ke=limit_ke, contacts=contacts)


def load_urdf(path, device: str = "cpu", limit_ke: float | None = None,
              contacts: bool = False) -> tuple[Articulation, ArticulationInfo]:
    """Load a URDF file through MuJoCo's URDF compiler (see :func:`load_mjcf` for the arguments).

    MuJoCo's URDF defaults apply: the root link becomes the world when it has no mass (otherwise a root
    body welded to it), links joined by fixed joints are fused into their parent (``fusestatic``; put
    ``<mujoco><compiler fusestatic="false"/></mujoco>`` inside ``<robot>`` to keep them as fixed links),
    visual geometry is discarded, ``continuous`` joints are unlimited hinges; mesh files referenced by
    collision geometry must exist. ``floating`` joints become free joints (MuJoCo's mapping; on links of the
world only), ``planar`` joints are not supported."""
    mujoco = _mujoco()
    model = _compile_file(mujoco, str(path))
    return from_mujoco_model(model, source=str(path), device=device, limit_ke=limit_ke, contacts=contacts)


def _compile_file(mujoco, path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"model file '{path}' does not exist")
    try:
        return mujoco.MjModel.from_xml_path(path)
    except ValueError as error:  # MuJoCo reports parse and compile errors as ValueError
        raise ConfigError(f"{path}: MuJoCo could not compile it: {error}") from None


def from_mujoco_model(model, source: str = "<MjModel>", device: str = "cpu", limit_ke: float | None = None,
                      contacts: bool = False) -> tuple[Articulation, ArticulationInfo]:
    """Convert a compiled ``mujoco.MjModel`` (see the module docstring for the mapping); ``source``
    names the model in error messages."""
    mujoco = _mujoco()
    disabled = int(model.opt.disableflags)

    def off(flag) -> bool:
        return bool(disabled & int(flag))

    gravity = np.zeros(3) if off(mujoco.mjtDisableBit.mjDSBL_GRAVITY) else np.array(model.opt.gravity, dtype=np.float64)
    builder = ArticulationBuilder(gravity=gravity)
    supported = {int(mujoco.mjtJoint.mjJNT_HINGE): "revolute", int(mujoco.mjtJoint.mjJNT_SLIDE): "prismatic",
                 int(mujoco.mjtJoint.mjJNT_BALL): "ball", int(mujoco.mjtJoint.mjJNT_FREE): "free"}
    skipped_geoms = []  # collision geoms of a type the ground contact does not take

    def body_name(b: int) -> str:
        return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or f"body{b}"

    def joint_name(j: int) -> str:
        return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"

    def rotation(quat_wxyz) -> np.ndarray:
        matrix = np.zeros(9)
        mujoco.mju_quat2Mat(matrix, np.asarray(quat_wxyz, dtype=np.float64))
        return matrix.reshape(3, 3)

    anchor = np.zeros((model.nbody, 3))  # joint anchor of each body in its body frame: its link frame's origin
    link_names, joint_names, dof_index, coord_index = [], [], {}, {}
    for b in range(1, model.nbody):
        name = body_name(b)
        first, count = int(model.body_jntadr[b]), int(model.body_jntnum[b])
        if count > 1:
            names = ", ".join(joint_name(j) for j in range(first, first + count))
            raise ConfigError(f"{source}: body '{name}' has {count} joints ({names}); wsim supports one joint per "
                              "body (or none: a fixed link)")
        parent = int(model.body_parentid[b])
        body_rotation = rotation(model.body_quat[b])
        joint_rotation = np.array(model.body_quat[b], dtype=np.float64)
        position_shift = np.zeros(3)
        kwargs = {}
        kind = "fixed"
        if count == 1:
            j = first
            kind = supported[int(model.jnt_type[j])]  # MuJoCo has these four joint types
            anchor[b] = model.jnt_pos[j]
            dof, qadr = int(model.jnt_dofadr[j]), int(model.jnt_qposadr[j])
            dofs, coords = {"ball": (3, 4), "free": (6, 7)}.get(kind, (1, 1))
            limited = bool(model.jnt_limited[j]) and not off(mujoco.mjtDisableBit.mjDSBL_LIMIT)
            if kind in ("ball", "free"):
                # a ball joint's range is "0 max", its cone (the builder's limit_upper); free joints have none
                limited = limited and kind == "ball"
                if kind == "free":
                    # MuJoCo places a free body by qpos alone, in the world (its qpos0 is body_pos, body_quat);
                    # its compiler allows free joints only on bodies of the world and zeroes their anchor
                    joint_rotation = np.array([1.0, 0.0, 0.0, 0.0])
                axis = np.array([0.0, 0.0, 1.0])  # unused by ball and free joints
                reference = np.array(model.qpos0[qadr:qadr + coords], dtype=np.float64)
            else:
                axis = np.array(model.jnt_axis[j], dtype=np.float64)
                reference = float(model.qpos0[qadr])
            if kind == "revolute":
                # MuJoCo rotates the body by qpos - qpos0: fold the -qpos0 into the joint frame
                turn = np.zeros(4)
                mujoco.mju_axisAngle2Quat(turn, axis, -reference)
                mujoco.mju_mulQuat(joint_rotation, np.array(model.body_quat[b], dtype=np.float64), turn)
            elif kind == "prismatic":  # MuJoCo translates by qpos - qpos0 along the axis
                position_shift = -body_rotation @ axis * reference
            per_dof = slice(dof, dof + dofs)
            kwargs = dict(
                axis=axis, q=reference, qd=0.0,
                stiffness=0.0 if off(mujoco.mjtDisableBit.mjDSBL_SPRING) else float(model.jnt_stiffness[j]),
                target=np.array(model.qpos_spring[qadr:qadr + coords], dtype=np.float64),
                damping=0.0 if off(mujoco.mjtDisableBit.mjDSBL_DAMPER) else np.array(model.dof_damping[per_dof]),
                armature=np.array(model.dof_armature[per_dof]),
                limit_lower=float(model.jnt_range[j, 0]) if limited and kind != "ball" else -NO_LIMIT,
                limit_upper=float(model.jnt_range[j, 1]) if limited else NO_LIMIT,
                limit_ke=(_limit_stiffness(model, j, dof) if limit_ke is None else float(limit_ke)) if limited else 0.0,
            )
            joint_names.append(joint_name(j))
            dof_index[joint_name(j)], coord_index[joint_name(j)] = dof, qadr
        # the parent's link frame sits at its anchor: express this joint frame's origin from there
        position = model.body_pos[b] - anchor[parent] + body_rotation @ anchor[b] + position_shift
        if kind == "free":
            position = np.zeros(3)
        inertial = rotation(model.body_iquat[b])
        inertia = inertial @ np.diag(model.body_inertia[b]) @ inertial.T
        mass = float(model.body_mass[b])
        builder.add_link(parent - 1, kind, position=position, rotation=np.roll(joint_rotation, -1),  # wxyz -> xyzw
                         mass=mass if mass > 0 else MASSLESS, com=model.body_ipos[b] - anchor[b], inertia=inertia,
                         **kwargs)
        link_names.append(name)
        if contacts:
            skipped_geoms.extend(_add_geom_contacts(builder, model, mujoco, b, anchor[b], rotation))

    ignored = _ignored_features(model, off, mujoco)
    if skipped_geoms:
        ignored.append(f"contacts of geoms {', '.join(skipped_geoms)} (only spheres, capsules and boxes touch the ground)")
    if ignored:
        warnings.warn(f"{source}: wsim's articulation does not model: {'; '.join(ignored)}", stacklevel=3)
    info = ArticulationInfo(
        source=source, link_names=link_names, joint_names=joint_names,
        link_index={n: i for i, n in enumerate(link_names)}, dof_index=dof_index, coord_index=coord_index,
        timestep=float(model.opt.timestep), gravity=gravity, ignored=ignored,
    )
    return builder.finalize(device), info


def _add_geom_contacts(builder: ArticulationBuilder, model, mujoco, b: int, anchor: np.ndarray, rotation) -> list[str]:
    """Contact points of body ``b``'s collision geoms on its link (the link frame is the body frame moved to
    the joint ``anchor``); returns the names of the geoms it could not take."""
    skipped = []
    link = b - 1
    for g in range(int(model.body_geomadr[b]), int(model.body_geomadr[b]) + int(model.body_geomnum[b])):
        if not (model.geom_contype[g] or model.geom_conaffinity[g]):
            continue  # visual only
        kind, size = int(model.geom_type[g]), np.array(model.geom_size[g], dtype=np.float64)
        frame = rotation(model.geom_quat[g])
        centre = np.array(model.geom_pos[g], dtype=np.float64) - anchor
        if kind == int(mujoco.mjtGeom.mjGEOM_SPHERE):
            points, radius = [np.zeros(3)], size[0]
        elif kind == int(mujoco.mjtGeom.mjGEOM_CAPSULE):  # radius, half-length along the geom's z
            points, radius = [np.array([0.0, 0.0, -size[1]]), np.array([0.0, 0.0, size[1]])], size[0]
        elif kind == int(mujoco.mjtGeom.mjGEOM_BOX):  # half-sizes
            points, radius = [size * (2.0 * np.array(signs) - 1.0) for signs in np.ndindex(2, 2, 2)], 0.0
        else:
            skipped.append(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or f"geom{g}")
            continue
        for point in points:
            builder.add_contact_point(link, centre + frame @ point, radius)
    return skipped


def _limit_stiffness(model, joint: int, dof: int) -> float:
    """Penalty stiffness matching the natural frequency of MuJoCo's soft limit of ``joint`` at maximal
    impedance (module docstring); N m/rad or N/m."""
    timeconst, dampratio = model.jnt_solref[joint, :2]
    per_mass = 1.0 / (timeconst * dampratio) ** 2 if timeconst > 0 else -timeconst  # direct form: -stiffness
    return float(per_mass / model.jnt_solimp[joint, 1] / model.dof_invweight0[dof])


def _ignored_features(model, off, mujoco) -> list[str]:
    """Descriptions of what the file holds and the articulation leaves out."""
    ignored = []
    for count, what in ((model.nu, "actuators"), (model.ntendon, "tendons"), (model.neq, "equality constraints")):
        if count:
            ignored.append(f"{count} {what}")

    def joints(mask) -> str:
        return ", ".join(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"
                         for j in np.nonzero(mask)[0])

    dof_joint = np.asarray(model.dof_jntid)
    friction = np.zeros(model.njnt, dtype=bool)
    friction[dof_joint[np.asarray(model.dof_frictionloss) > 0]] = True
    if friction.any() and not off(mujoco.mjtDisableBit.mjDSBL_FRICTIONLOSS):
        ignored.append(f"friction loss of joints {joints(friction)}")
    nonlinear = np.any(np.asarray(model.jnt_stiffnesspoly) != 0, axis=1)
    nonlinear[dof_joint[np.any(np.asarray(model.dof_dampingpoly) != 0, axis=1)]] = True
    if nonlinear.any():
        ignored.append(f"polynomial springs/dampers of joints {joints(nonlinear)}")
    plastic = np.asarray(model.jnt_plasticadr) >= 0
    if plastic.any():
        ignored.append(f"plasticity of joints {joints(plastic)}")
    return ignored

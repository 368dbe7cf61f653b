"""Ground contact of articulated links: every contact point of a link pushes against a plane with wsim's
penalty law (:func:`wsim.models.contact.plane_contact_force`, the one particles and rigid bodies use, here
in float64), and its force enters the dynamics as an external spatial force on the link.

Contact points are fixed in their link's frame (``contact_point`` [P, 3], m, a rollout parameter; see
:meth:`ArticulationBuilder.add_contact_point`), each with a ``contact_radius`` (m): the point is the centre
of a sphere of that radius, so a capsule is its two end points and a rod lying on the ground any number
of points along its axis, each with the rod's radius. The plane is ``dot(normal, x) = ground_height``
(world frame, unit ``normal`` out of the ground); a point at ``x`` with velocity ``v`` gets the force
``f = plane_contact_force(x, v, normal, ground_height, radius, ke, kd, kf, mu, smoothing)``, which acts
on its link as the spatial force ``(x x f, f)`` about the world origin. The Newton-Euler pass subtracts
it from the link's bias force, so the generalised force of every joint above the link gains
``S^T (x x f, f) = J^T f`` (J the point's Jacobian).

The contact parameters of a rollout (float64, differentiable through the tape like the others):
``contact_ke`` N/m, ``contact_kd`` N s/m, ``contact_kf`` N s/m, ``contact_mu`` (1), ``contact_smoothing``
m, ``ground_height`` m, each of shape [1] (one material for the whole articulation), and
``contact_point`` [P, 3].

Stiff contact limits the step: a point of mass ``m`` on a spring ``ke`` needs ``dt < 2 sqrt(m / ke)``
with semi-implicit Euler, and the damping ``kd`` adds ``dt < 2 m / kd``; with ``m`` the smallest mass a
contact point carries (a light link end) this is usually the tighter bound of a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import warp as wp

from ..errors import ParameterError
from .articulation_joints import spatial
from .contact import plane_contact_force

vec3d = wp.vec3d
quatd = wp.quatd
spatiald = wp.spatial_vectord

CONTACT_PARAMETERS = ("contact_ke", "contact_kd", "contact_kf", "contact_mu", "contact_smoothing", "ground_height")


@dataclass
class GroundContact:
    """A ground plane for an :class:`~wsim.models.articulation.ArticulationRollout`: ``height`` (m) along
    ``normal`` (world frame; default None: against gravity, i.e. +Y for wsim's default gravity and +Z for
    MJCF/URDF models, which keep their files' gravity), and the default contact material (the values of
    wsim's ``contact`` config section): ``ke`` N/m, ``kd`` N s/m, ``kf`` N s/m, ``mu``, ``smoothing`` m
    (see :mod:`wsim.models.contact`)."""

    height: float = 0.0
    normal: tuple | None = None
    ke: float = 1.0e4
    kd: float = 100.0
    kf: float = 1.0e3
    mu: float = 0.5
    smoothing: float = 1.0e-2

    def __post_init__(self):
        for name in ("ke", "kd", "kf", "mu", "smoothing"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value >= 0.0):
                raise ParameterError(f"ground contact {name} must be finite and >= 0, got {value}")
        if not np.isfinite(float(self.height)):
            raise ParameterError(f"ground height must be finite, got {self.height}")

    def unit_normal(self, gravity) -> np.ndarray:
        """The plane's unit normal: ``normal`` normalised, or against ``gravity`` ([3] or [1, 3])."""
        if self.normal is not None:
            normal = np.asarray(self.normal, dtype=np.float64).reshape(3)
        else:
            normal = -np.asarray(gravity, dtype=np.float64).reshape(3)
            if not np.linalg.norm(normal) > 0:
                normal = np.array([0.0, 1.0, 0.0])  # no gravity: wsim's up
        length = np.linalg.norm(normal)
        if not (np.isfinite(length) and length > 0):
            raise ParameterError(f"the ground normal must be a finite non-zero vector, got {self.normal}")
        return normal / length

    def defaults(self) -> dict[str, np.ndarray]:
        """The rollout parameters of this ground, float64 arrays of shape [1]."""
        values = (self.ke, self.kd, self.kf, self.mu, self.smoothing, self.height)
        return {name: np.array([float(value)]) for name, value in zip(CONTACT_PARAMETERS, values)}


@wp.kernel
def link_contact_kernel(
    contact_link: wp.array(dtype=wp.int32),
    contact_point: wp.array(dtype=vec3d),
    contact_radius: wp.array(dtype=wp.float64),
    normal: wp.array(dtype=vec3d),
    ground_height: wp.array(dtype=wp.float64),
    ke: wp.array(dtype=wp.float64),
    kd: wp.array(dtype=wp.float64),
    kf: wp.array(dtype=wp.float64),
    mu: wp.array(dtype=wp.float64),
    smoothing: wp.array(dtype=wp.float64),
    step: int,
    link_rotation: wp.array2d(dtype=quatd),
    link_origin: wp.array2d(dtype=vec3d),
    link_velocity: wp.array2d(dtype=spatiald),
    contact_force: wp.array2d(dtype=vec3d),
    link_external_force: wp.array2d(dtype=spatiald),
):
    """One thread per contact point: its world position and velocity from its link's pose and spatial
    velocity ``(w, v_O)`` (the velocity of the body point at the world origin, so a point ``x`` moves at
    ``v_O + w x x``), the contact force (``contact_force``, written once per step, a diagnostic) and its
    spatial force about the origin, summed per link by atomic adds into the zeroed ``link_external_force``."""
    i = wp.tid()
    l = contact_link[i]
    position = link_origin[step, l] + wp.quat_rotate(link_rotation[step, l], contact_point[i])
    velocity = link_velocity[step, l]
    point_velocity = wp.spatial_bottom(velocity) + wp.cross(wp.spatial_top(velocity), position)
    force = plane_contact_force(position, point_velocity, normal[0], ground_height[0], contact_radius[i],
                                ke[0], kd[0], kf[0], mu[0], smoothing[0])
    contact_force[step, i] = force
    wp.atomic_add(link_external_force, step, l, spatial(wp.cross(position, force), force))


def launch_contacts(articulation, normal: wp.array, params: dict, buffers: dict, step: int) -> None:
    """Record the contact forces of ``step`` (after the kinematics of that step, before the subtree sums)."""
    wp.launch(link_contact_kernel, dim=articulation.contact_count, device=articulation.device,
              inputs=[articulation.contact_link, params["contact_point"], articulation.contact_radius, normal,
                      params["ground_height"], params["contact_ke"], params["contact_kd"], params["contact_kf"],
                      params["contact_mu"], params["contact_smoothing"], step,
                      buffers["link_rotation"], buffers["link_origin"], buffers["link_velocity"]],
              outputs=[buffers["contact_force"], buffers["link_external_force"]])

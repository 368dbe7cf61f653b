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
from .articulation_kernels import link_contact_kernel

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


def launch_contacts(articulation, normal: wp.array, params: dict, buffers: dict, step: int) -> None:
    """Record the contact forces of ``step`` (after the kinematics of that step, before the subtree sums)."""
    wp.launch(link_contact_kernel, dim=articulation.contact_count, device=articulation.device,
              inputs=[articulation.contact_link, params["contact_point"], articulation.contact_radius, normal,
                      params["ground_height"], params["contact_ke"], params["contact_kd"], params["contact_kf"],
                      params["contact_mu"], params["contact_smoothing"], step,
                      buffers["link_rotation"], buffers["link_origin"], buffers["link_velocity"]],
              outputs=[buffers["contact_force"], buffers["link_external_force"]])

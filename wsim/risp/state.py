"""The state a RISP network predicts, as a differentiable function of a rollout's vertices.

``rigid_pose`` (RISP Eq. 18): ``(x, y, z, sin yaw, sin pitch, sin roll, cos yaw, cos pitch, cos roll)``
of the body's centre of mass and its rotation ``R = R_y(yaw) R_x(pitch) R_z(roll)`` (Y up). The
rotation and position are solved from the vertices by linear least squares against the rest shape
(``V - mean V = (X - mean X) R^T``, exact for a rigid motion, no SVD), so the state stays
differentiable for the oracle baseline.
``position``: ``(x, y, z)`` of the body's centre of mass alone, for a body whose orientation an image
cannot show (a sphere), where the rotation part of ``rigid_pose`` would be noise to the network.
``heights``: the heights (y) of ``points`` surface vertices, the ones nearest to evenly spaced points
along the x extent of the rest shape's centre line (RISP's rod: 10 sensors along the spine).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

RIGID_NAMES = ["x", "y", "z", "sin_yaw", "sin_pitch", "sin_roll", "cos_yaw", "cos_pitch", "cos_roll"]


class StateMap:
    """``vertices [F, V, 3] -> states [F, S]`` for one scene (built from its rest shape)."""

    def __init__(self, kind: str, scene, points: int = 10):
        model = scene.model
        self.kind = kind
        if kind in ("rigid_pose", "position"):
            if model.body_count != 1 or model.particle_count:
                raise ConfigError(f"risp.state: {kind} needs a scene with exactly one rigid body and no particles")
            rest = np.asarray(model.shape_vertices.numpy(), dtype=np.float64)
            centred = rest - rest.mean(0)
            self.rest_mean = torch.as_tensor(rest.mean(0), dtype=torch.float32)
            # (X^T X)^{-1} X^T of the centred rest shape: R^T = pinv @ (V - mean V)
            self.pinv = torch.as_tensor(np.linalg.pinv(centred), dtype=torch.float32)
            self.names = list(RIGID_NAMES if kind == "rigid_pose" else RIGID_NAMES[:3])
        elif kind == "heights":
            if model.body_count or not model.particle_count:
                raise ConfigError("risp.state: heights needs a scene of particles (a soft body or cloth) without rigid bodies")
            rest = np.asarray(model.defaults["particle_position"], dtype=np.float64).reshape(-1, 3)
            x = rest[:, 0]
            centre = np.median(rest[:, 1:], axis=0)
            targets = np.linspace(x.min(), x.max(), points)
            index = []
            for t in targets:
                d = (x - t) ** 2 + ((rest[:, 1:] - centre) ** 2).sum(1)
                index.append(int(np.argmin(d)))
            self.index = torch.as_tensor(index, dtype=torch.long)
            self.names = [f"y{k}" for k in range(points)]
        else:
            raise ConfigError(f"risp.state '{kind}' is not one of rigid_pose, position, heights")

    @property
    def dim(self) -> int:
        return len(self.names)

    def __call__(self, vertices: torch.Tensor) -> torch.Tensor:
        if self.kind == "heights":
            return vertices[:, self.index.to(vertices.device), 1]
        pinv = self.pinv.to(vertices.device)
        mean = vertices.mean(1)  # [F, 3]
        rt = torch.einsum("rv,fvc->frc", pinv, vertices - mean.unsqueeze(1))  # R^T, [F, 3, 3]
        rot = rt.transpose(1, 2)
        position = mean - torch.einsum("fij,j->fi", rot, self.rest_mean.to(vertices.device))
        if self.kind == "position":
            return position
        row = rot[:, 1]  # [cb sc, cb cc, -sb]
        cos_pitch = torch.sqrt(row[:, 0] ** 2 + row[:, 1] ** 2 + 1e-12)
        sin_pitch = -row[:, 2]
        sin_roll, cos_roll = row[:, 0] / cos_pitch, row[:, 1] / cos_pitch
        sin_yaw, cos_yaw = rot[:, 0, 2] / cos_pitch, rot[:, 2, 2] / cos_pitch
        return torch.stack([position[:, 0], position[:, 1], position[:, 2], sin_yaw, sin_pitch, sin_roll,
                            cos_yaw, cos_pitch, cos_roll], dim=-1)

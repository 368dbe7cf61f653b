"""Perspective pinhole camera, batched over frames, differentiable (torch).

Conventions (used by every part of :mod:`wsim.render`):

- **World**: right-handed, Y up (the physics convention of wsim).
- **View space**: the camera sits at the origin and looks down ``-Z``; ``+X`` points right and ``+Y`` up
  in the image. The view depth of a point is ``w = -z_view`` (positive in front of the camera).
- **Clip space / NDC**: OpenGL convention. ``clip = P @ [x_view, 1]``, ``ndc = clip.xyz / clip.w``;
  NDC ``x`` grows to the right, NDC ``y`` grows **up**, NDC ``z`` is ``-1`` on the near plane and ``+1``
  on the far plane. This is also what nvdiffrast expects.
- **Images**: every image wsim returns is ``[..., H, W, C]`` with **row 0 at the top**. Continuous pixel
  coordinates ``(u, v)`` put the top-left corner of the image at ``(0, 0)``, ``u`` to the right, ``v``
  down; pixel ``(row i, column j)`` is the unit square whose **centre is** ``(u, v) = (j + 0.5, i + 0.5)``.
  Hence ``x_ndc = 2 u / W - 1`` and ``y_ndc = 1 - 2 v / H``: the centre of pixel ``(i, j)`` is at
  ``x_ndc = (2 j + 1) / W - 1``, ``y_ndc = 1 - (2 i + 1) / H``.
- **Intrinsics** ``(fx, fy, cx, cy)`` are in pixels in those continuous coordinates: a view-space point
  projects to ``u = cx + fx * x / w``, ``v = cy - fy * y / w``. A field of view ``fov_y`` (degrees,
  vertical) means ``fy = fx = (H / 2) / tan(fov_y / 2)`` and ``(cx, cy) = (W / 2, H / 2)`` (square
  pixels, principal point at the image centre).
- **Spherical placement** (the paper's experiments): ``azimuth`` turns about the world ``+Y`` axis,
  starting from ``+Z`` towards ``+X``; ``elevation`` lifts the camera above the XZ plane; both in
  degrees. ``eye = target + distance * (cos(el) sin(az), sin(el), cos(el) cos(az))``.

All camera quantities are torch tensors; batched ones carry a leading frame dimension ``F`` (or 1,
which broadcasts over frames). Gradients flow from images to the camera's eye/target/intrinsics.
"""

from __future__ import annotations

import math

import torch

from ..errors import ParameterError, check_finite, check_range


def _as_tensor(value, device=None, dtype=torch.float32) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if device is not None and value.device != torch.device(device):
            value = value.to(device)
        return value if value.dtype == dtype else value.to(dtype)
    return torch.as_tensor(value, dtype=dtype, device=device)


def _batch3(value, name: str, device=None) -> torch.Tensor:
    """A point or vector as ``[F, 3]`` (``[1, 3]`` for a single one)."""
    t = _as_tensor(value, device)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[-1] != 3:
        raise ParameterError(f"{name} must have shape [3] or [F, 3], got {tuple(t.shape)}")
    check_finite(name, t)
    return t


def look_at_matrix(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """World-to-view matrices ``[F, 4, 4]`` for cameras at ``eye`` looking at ``target`` (all ``[F, 3]``)."""
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    forward = target - eye
    fnorm = forward.norm(dim=-1, keepdim=True)
    if bool((fnorm.detach() < 1e-12).any()):
        raise ParameterError("camera eye and target coincide; the view direction is undefined")
    forward = forward / fnorm
    right = torch.cross(forward, up, dim=-1)
    rnorm = right.norm(dim=-1, keepdim=True)
    if bool((rnorm.detach() < 1e-9).any()):
        raise ParameterError("camera up vector is parallel to the view direction; choose another up")
    right = right / rnorm
    true_up = torch.cross(right, forward, dim=-1)
    rot = torch.stack([right, true_up, -forward], dim=-2)  # rows: view axes in world coordinates
    trans = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    top = torch.cat([rot, trans.unsqueeze(-1)], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom = bottom + torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=top.dtype, device=top.device)
    return torch.cat([top, bottom], dim=-2)


def spherical_eye(distance, elevation, azimuth, target=(0.0, 0.0, 0.0), device=None) -> torch.Tensor:
    """Camera positions ``[F, 3]`` from distance / elevation / azimuth (degrees); see module docstring."""
    dist = _as_tensor(distance, device).reshape(-1)
    el = torch.deg2rad(_as_tensor(elevation, device).reshape(-1))
    az = torch.deg2rad(_as_tensor(azimuth, device).reshape(-1))
    dist, el, az = torch.broadcast_tensors(dist, el, az)
    offset = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], dim=-1)
    return _batch3(target, "target", device) + dist.unsqueeze(-1) * offset


class Camera:
    """A batched perspective pinhole camera (see the module docstring for every convention).

    Parameters
    ----------
    view:
        World-to-view matrices ``[4, 4]`` or ``[F, 4, 4]`` (rigid transforms).
    fov_y:
        Vertical field of view in degrees (used when ``intrinsics`` is None). Scalar or ``[F]``.
    intrinsics:
        ``(fx, fy, cx, cy)`` in pixels, a tensor ``[4]`` or ``[F, 4]``; needs ``image_size``.
    image_size:
        ``(H, W)`` the intrinsics refer to. With ``fov_y`` the camera adapts to any image size.
    near, far:
        Clip planes (view depths, ``0 < near < far``).
    """

    def __init__(self, view, fov_y=45.0, intrinsics=None, image_size=None, near: float = 0.1, far: float = 100.0):
        view = _as_tensor(view)
        if view.dim() == 2:
            view = view.unsqueeze(0)
        if view.dim() != 3 or view.shape[-2:] != (4, 4):
            raise ParameterError(f"camera view matrix must have shape [4, 4] or [F, 4, 4], got {tuple(view.shape)}")
        check_finite("camera view matrix", view)
        check_range("camera near", near, low=0.0)
        check_range("camera far", far, low=float(near))
        self.view = view
        self.near = float(near)
        self.far = float(far)
        self.intrinsics = None
        self.fov_y = None
        if intrinsics is not None:
            if image_size is None:
                raise ParameterError("camera intrinsics need the image_size (H, W) they refer to")
            k = _as_tensor(intrinsics, view.device)
            if k.dim() == 1:
                k = k.unsqueeze(0)
            if k.shape[-1] != 4:
                raise ParameterError(f"camera intrinsics must be (fx, fy, cx, cy), got shape {tuple(k.shape)}")
            check_finite("camera intrinsics", k)
            self.intrinsics = k
            self.image_size = (int(image_size[0]), int(image_size[1]))
        else:
            fov = _as_tensor(fov_y, view.device).reshape(-1)
            check_range("camera fov_y (degrees)", fov, low=0.0, high=180.0, high_inclusive=False)
            self.fov_y = fov
            self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def look_at(cls, eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), fov_y=45.0, near=0.1, far=100.0,
                intrinsics=None, image_size=None, device=None) -> "Camera":
        """Camera(s) at ``eye`` ``[3]``/``[F, 3]`` looking at ``target`` with world ``up`` (Y by default)."""
        eye_t = _batch3(eye, "camera eye", device)
        dev = eye_t.device
        view = look_at_matrix(eye_t, _batch3(target, "camera target", dev), _batch3(up, "camera up", dev))
        cam = cls(view, fov_y=fov_y, intrinsics=intrinsics, image_size=image_size, near=near, far=far)
        cam.eye = eye_t
        return cam

    @classmethod
    def orbit(cls, distance, elevation=0.0, azimuth=0.0, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), fov_y=45.0,
              near=0.1, far=100.0, intrinsics=None, image_size=None, device=None) -> "Camera":
        """Camera(s) from distance / elevation / azimuth in degrees (scalars or ``[F]``), looking at ``target``."""
        check_range("camera distance", distance, low=0.0)
        eye = spherical_eye(distance, elevation, azimuth, target, device)
        return cls.look_at(eye, target, up, fov_y=fov_y, near=near, far=far, intrinsics=intrinsics,
                           image_size=image_size, device=eye.device)

    @classmethod
    def framing(cls, points: torch.Tensor, elevation=25.0, azimuth=35.0, fov_y=40.0, margin=1.15) -> "Camera":
        """A camera that sees every point of ``points`` (``[..., 3]``, e.g. a whole rollout) from the given
        elevation/azimuth: it looks at the centre of their bounding box from far enough for the bounding
        sphere (times ``margin``) to fit the vertical field of view."""
        pts = points.detach().reshape(-1, 3).float()
        if pts.numel() == 0:
            raise ParameterError("cannot frame an empty point set")
        lo, hi = pts.min(0).values, pts.max(0).values
        centre = 0.5 * (lo + hi)
        radius = max(float(0.5 * (hi - lo).norm()), 1e-3) * margin
        dist = radius / math.sin(math.radians(fov_y) / 2.0)
        near = max(dist - radius * 1.5, dist * 1e-3)
        far = dist + radius * 4.0
        return cls.orbit(dist, elevation, azimuth, target=centre, fov_y=fov_y, near=near, far=far,
                         device=pts.device)

    # ----------------------------------------------------------------- matrices
    def to(self, device) -> "Camera":
        self.view = self.view.to(device)
        if self.intrinsics is not None:
            self.intrinsics = self.intrinsics.to(device)
        if self.fov_y is not None:
            self.fov_y = self.fov_y.to(device)
        if hasattr(self, "eye"):
            self.eye = self.eye.to(device)
        return self

    def frames(self) -> int:
        """Number of frames the camera carries (1 broadcasts)."""
        n = self.view.shape[0]
        if self.intrinsics is not None:
            n = max(n, self.intrinsics.shape[0])
        elif self.fov_y is not None:
            n = max(n, self.fov_y.shape[0])
        return n

    def intrinsics_for(self, image_size) -> torch.Tensor:
        """``(fx, fy, cx, cy)`` as ``[F or 1, 4]`` for an image of ``(H, W)`` pixels."""
        h, w = int(image_size[0]), int(image_size[1])
        if self.intrinsics is not None:
            k = self.intrinsics
            if self.image_size is not None and tuple(self.image_size) != (h, w):
                sy, sx = h / self.image_size[0], w / self.image_size[1]
                k = k * torch.tensor([sx, sy, sx, sy], dtype=k.dtype, device=k.device)
            return k
        f = (h / 2.0) / torch.tan(torch.deg2rad(self.fov_y.to(self.view.device)) / 2.0)
        c = torch.ones_like(f)
        return torch.stack([f, f, c * (w / 2.0), c * (h / 2.0)], dim=-1)

    def projection(self, image_size) -> torch.Tensor:
        """OpenGL-style projection matrices ``[F or 1, 4, 4]`` for an image of ``(H, W)`` pixels."""
        h, w = int(image_size[0]), int(image_size[1])
        k = self.intrinsics_for(image_size)
        fx, fy, cx, cy = k.unbind(-1)
        n, f = self.near, self.far
        zero = torch.zeros_like(fx)
        one = torch.ones_like(fx)
        rows = [
            torch.stack([2.0 * fx / w, zero, -(2.0 * cx / w - 1.0), zero], dim=-1),
            torch.stack([zero, 2.0 * fy / h, -(1.0 - 2.0 * cy / h), zero], dim=-1),
            torch.stack([zero, zero, -(f + n) / (f - n) * one, -2.0 * f * n / (f - n) * one], dim=-1),
            torch.stack([zero, zero, -one, zero], dim=-1),
        ]
        return torch.stack(rows, dim=-2)

    def world_to_view(self, points: torch.Tensor) -> torch.Tensor:
        """View-space coordinates ``[F, V, 3]`` of world points ``[V, 3]`` or ``[F, V, 3]``."""
        pts = points if points.dim() == 3 else points.unsqueeze(0)
        view = self.view.to(pts.device, pts.dtype)
        return pts @ view[:, :3, :3].transpose(-1, -2) + view[:, None, :3, 3]

    def world_to_clip(self, points: torch.Tensor, image_size) -> torch.Tensor:
        """Homogeneous clip coordinates ``[F, V, 4]`` of world points ``[V, 3]`` or ``[F, V, 3]``."""
        v = self.world_to_view(points)
        proj = self.projection(image_size).to(v.device, v.dtype)
        vh = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        return vh @ proj.transpose(-1, -2)

    def project_to_pixels(self, points: torch.Tensor, image_size) -> torch.Tensor:
        """Continuous pixel coordinates ``[F, V, 2]`` = ``(u, v)`` (column, row; see the conventions: the
        centre of pixel ``(i, j)`` is ``(j + 0.5, i + 0.5)``) and nothing else. Points behind the camera
        give meaningless values."""
        h, w = int(image_size[0]), int(image_size[1])
        clip = self.world_to_clip(points, image_size)
        ndc = clip[..., :2] / clip[..., 3:4]
        u = (ndc[..., 0] + 1.0) * (w / 2.0)
        v = (1.0 - ndc[..., 1]) * (h / 2.0)
        return torch.stack([u, v], dim=-1)

    def position(self) -> torch.Tensor:
        """Camera centres in world coordinates ``[F, 3]``."""
        rot = self.view[:, :3, :3]
        t = self.view[:, :3, 3]
        return -(rot.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)

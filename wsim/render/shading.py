"""Lights, materials and per-pixel shading (torch; every parameter may require grad).

Shading happens per pixel on interpolated attributes (deferred shading): the base colour comes from
per-vertex colours or from a UV texture (bilinear filtering), then either stays as is (``"flat"``) or is
lit with Phong's model (``"phong"``):

``colour = base * (ambient + diffuse * sum_l I_l c_l max(n.L, 0)) + specular * sum_l I_l c_l max(r.v, 0)^shininess``

with ``L`` the unit vector towards the light, ``r`` the reflection of ``L`` about the normal ``n``, ``v``
the unit vector towards the camera. Lighting is one-sided: normals are used as given (outward for
counter-clockwise faces); turning them towards the camera would make the shading jump where a smooth
surface grazes the view direction (its silhouette), which the soft edges blend in.

UV convention: ``u`` runs left to right and ``v`` bottom to top of the texture image (OBJ / OpenGL), and
texture images are ``[Ht, Wt, C]`` with row 0 at the top; texel centres sit at ``(k + 0.5) / N``; lookups
outside ``[0, 1]`` clamp to the border.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ParameterError


def _t(value, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(value, dtype=dtype, device=device)


def _per_frame(value, device, width: int | None = 3) -> torch.Tensor:
    """A light/material quantity ``[width]`` or ``[F, width]`` (or scalar / ``[F]``) as ``[F or 1, 1, 1, width]``."""
    t = _t(value, device)
    if width is None or width == 1:
        t = t.reshape(-1, 1)
    elif t.dim() == 1:
        t = t.reshape(1, -1)
    if t.shape[-1] not in (1, width or 1):
        raise ParameterError(f"expected a tensor of width {width}, got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], 1, 1, t.shape[-1])


@dataclass
class DirectionalLight:
    """Light from infinitely far away; ``direction`` is the direction the light travels (world)."""

    direction: object = (0.0, -1.0, -0.5)
    color: object = (1.0, 1.0, 1.0)
    intensity: object = 1.0


@dataclass
class PointLight:
    """Point light at ``position`` (world); intensity falls off as ``1 / (1 + attenuation * d^2)``."""

    position: object = (0.0, 5.0, 5.0)
    color: object = (1.0, 1.0, 1.0)
    intensity: object = 1.0
    attenuation: object = 0.0


@dataclass
class Material:
    """Phong coefficients (colours are RGB); ``ambient`` and ``diffuse`` multiply the base colour."""

    ambient: object = (0.3, 0.3, 0.3)
    diffuse: object = (0.7, 0.7, 0.7)
    specular: object = (0.2, 0.2, 0.2)
    shininess: object = 32.0


@dataclass
class ShadingInputs:
    """Per-pixel attributes handed to :func:`shade`; ``[F, H, W, k]`` tensors."""

    base: torch.Tensor | None = None  # vertex colour
    uv: torch.Tensor | None = None
    position: torch.Tensor | None = None
    normal: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-20)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals ``[F, V, 3]`` of ``vertices [F, V, 3]`` (differentiable)."""
    f = faces.long()
    v0, v1, v2 = vertices[:, f[:, 0]], vertices[:, f[:, 1]], vertices[:, f[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # length = 2 * area
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(1, f[:, k], fn)
    return _normalize(normals)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, backend: str) -> torch.Tensor:
    """Bilinear lookup of ``texture [Ht, Wt, C]`` or ``[F, Ht, Wt, C]`` at ``uv [F, H, W, 2]``."""
    tex = texture if texture.dim() == 4 else texture.unsqueeze(0)
    B = uv.shape[0]
    if backend == "nvdiffrast":
        import nvdiffrast.torch as dr

        st = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1).contiguous()
        return dr.texture(tex.float().contiguous(), st, filter_mode="linear", boundary_mode="clamp")
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, (1.0 - uv[..., 1]) * 2.0 - 1.0], dim=-1)
    img = tex.permute(0, 3, 1, 2).float()
    if img.shape[0] != B:
        img = img.expand(B, -1, -1, -1)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def phong(base, position, normal, eye, lights, material: Material) -> torch.Tensor:
    """Phong shading of per-pixel ``base`` colour, world ``position`` and ``normal`` ``[F, H, W, 3]``;
    ``eye`` ``[F or 1, 3]`` camera centres."""
    device = base.device
    n = _normalize(normal)
    to_eye = _normalize(eye.to(device).reshape(-1, 1, 1, 3) - position)
    ka = _per_frame(material.ambient, device)
    kd = _per_frame(material.diffuse, device)
    ks = _per_frame(material.specular, device)
    shin = _per_frame(material.shininess, device, width=1)
    diffuse = torch.zeros_like(base)
    specular = torch.zeros_like(base)
    for light in lights:
        colour = _per_frame(light.color, device) * _per_frame(light.intensity, device, width=1)
        if isinstance(light, DirectionalLight):
            to_light = _normalize(-_per_frame(light.direction, device)).expand_as(position)
        elif isinstance(light, PointLight):
            delta = _per_frame(light.position, device) - position
            dist2 = (delta * delta).sum(-1, keepdim=True)
            colour = colour / (1.0 + _per_frame(light.attenuation, device, width=1) * dist2)
            to_light = _normalize(delta)
        else:
            raise ParameterError(f"unknown light type {type(light).__name__}; use DirectionalLight or PointLight")
        ndotl = (n * to_light).sum(-1, keepdim=True)
        diffuse = diffuse + colour * ndotl.clamp_min(0.0)
        reflect = 2.0 * ndotl * n - to_light
        rdotv = (reflect * to_eye).sum(-1, keepdim=True).clamp_min(0.0)
        lit = (ndotl > 0.0).to(base.dtype)
        # clamp away from 0 so that d/dshininess of x^s (= x^s log x) stays finite
        specular = specular + colour * lit * torch.pow(rdotv.clamp_min(1e-12), shin)
    return base * (ka + kd * diffuse) + ks * specular

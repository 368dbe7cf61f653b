"""Shading and compositing of the soft layers (steps 3-4 of :mod:`wsim.render.renderer`).

Two implementations of the same per-pixel formula:

- :func:`composite_warp`, one Warp kernel per rendered batch (its adjoint by Warp's autodiff), used for
  per-vertex colours with flat or Phong shading and at most :data:`MAX_LIGHTS` lights. Near and behind
  layers are shaded only where they show (a few pixels along the outlines) and the visible surface only
  where it is covered, so the cost is about one shading per covered pixel.
- :func:`composite_torch`, torch operations on whole images: the reference the kernel is tested against,
  and the path for textures and for ``return_buffers`` (which wants every layer's colour everywhere).

Both take the soft buffers of :func:`wsim.render.raster.soft_edges`, the interpolated visible-surface
attributes ``fg_attr`` ``[B, H, W, C]`` (base colour first, then world position and normal for Phong),
the covered mask ``[B, H, W]`` and a background ``[Fb, 3]`` (``Fb`` 1 or B), and return RGBA
``[B, H, W, 4]``. Every light and material quantity may be per frame and may require grad.
"""

from __future__ import annotations

import functools

import torch
import warp as wp

from ..bridge import run_tape_program
from ..errors import ParameterError
from .raster import _warp_device
from .shading import DirectionalLight, Material, PointLight, _per_frame

MAX_LIGHTS = 8  # each light count is its own compiled kernel
_DIRECTIONAL, _POINT = 0, 1


@wp.func
def _unit(x: wp.vec3):
    # the torch path's normalisation (x rsqrt(|x|^2 + 1e-20)): finite at 0
    return x / wp.sqrt(wp.dot(x, x) + 1.0e-20)


@wp.func
def _blend(num: wp.array(dtype=float), q: int, channel: int, den: float):
    v = wp.vec3(num[q + channel], num[q + channel + 1], num[q + channel + 2])
    if den > 0.0:
        return v / den
    return v


def _make_composite_kernel(LIGHTS: int, PHONG: bool, UNION: bool):
    """The kernel for ``LIGHTS`` lights, Phong or flat shading and the union or SoftRas coverage: every
    choice is compiled in, so that the adjoint carries no code of the cases not taken."""

    @wp.func
    def phong_at(colour: wp.vec3, position: wp.vec3, normal: wp.vec3, frame: int, eye: wp.array(dtype=wp.vec3),
                 light_kind: wp.array(dtype=wp.int32), light_vec: wp.array(dtype=wp.vec3),
                 light_col: wp.array(dtype=wp.vec3), light_att: wp.array(dtype=float), num_lights: int,
                 light_frames: int, ambient: wp.array(dtype=wp.vec3), diffuse: wp.array(dtype=wp.vec3),
                 specular: wp.array(dtype=wp.vec3), shininess: wp.array(dtype=float)):
        """Phong's model (:func:`wsim.render.shading.phong`) at one pixel of frame ``frame``."""
        fm = wp.min(frame, ambient.shape[0] - 1)
        fl = wp.min(frame, light_frames - 1)
        n = _unit(normal)
        to_eye = _unit(eye[wp.min(frame, eye.shape[0] - 1)] - position)
        shin = shininess[fm]
        diff = wp.vec3(0.0)
        spec = wp.vec3(0.0)
        for l in range(wp.static(LIGHTS)):  # unrolled: a dynamic loop would not take the += in Warp's adjoint
            k = fl * num_lights + l
            col = light_col[k]
            to_light = wp.vec3(0.0)
            if light_kind[l] == _DIRECTIONAL:
                to_light = _unit(-light_vec[k])
            else:
                delta = light_vec[k] - position
                col = col / (1.0 + light_att[k] * wp.dot(delta, delta))
                to_light = _unit(delta)
            ndotl = wp.dot(n, to_light)
            diff = diff + col * wp.max(ndotl, 0.0)
            if ndotl > 0.0:
                rdotv = wp.dot(2.0 * ndotl * n - to_light, to_eye)
                # clamped away from 0 so that d/dshininess of x^s (= x^s log x) stays finite
                spec = spec + col * wp.pow(wp.max(rdotv, 1.0e-12), shin)
        return wp.cw_mul(colour, ambient[fm] + wp.cw_mul(diffuse[fm], diff)) + wp.cw_mul(specular[fm], spec)


    def composite_kernel(
        a_near: wp.array(dtype=float), a_same: wp.array(dtype=float), a_behind: wp.array(dtype=float),
        den_near: wp.array(dtype=float), den_behind: wp.array(dtype=float), den_visible: wp.array(dtype=float),
        den_same: wp.array(dtype=float), num_near: wp.array(dtype=float), num_behind: wp.array(dtype=float),
        num_same: wp.array(dtype=float), fg: wp.array(dtype=float), covered: wp.array(dtype=wp.int32),
        background: wp.array(dtype=wp.vec3), eye: wp.array(dtype=wp.vec3), light_kind: wp.array(dtype=wp.int32),
        light_vec: wp.array(dtype=wp.vec3), light_col: wp.array(dtype=wp.vec3), light_att: wp.array(dtype=float),
        ambient: wp.array(dtype=wp.vec3), diffuse: wp.array(dtype=wp.vec3), specular: wp.array(dtype=wp.vec3),
        shininess: wp.array(dtype=float), pixels: int, channels: int, num_lights: int, light_frames: int,
        image: wp.array(dtype=wp.vec4),
    ):
        """RGBA of pixel ``p`` of a batch of ``pixels`` per frame (module docstring; renderer steps 3-4)."""
        p = wp.tid()
        frame = p / pixels
        q = p * channels
        an = a_near[p]
        asame = a_same[p]
        ab = a_behind[p]
        l_near = an
        l_same = float(0.0)
        l_behind = float(0.0)
        alpha = float(0.0)
        if wp.static(UNION):
            # the union front to back; a tie hands half the gradient to each side, as torch.maximum does
            c_same = an
            if asame > an:
                c_same = asame
            elif asame == an:
                c_same = 0.5 * (an + asame)
            alpha = c_same
            if ab > c_same:
                alpha = ab
            elif ab == c_same:
                alpha = 0.5 * (c_same + ab)
            l_same = c_same - an
            l_behind = alpha - c_same
        else:
            l_same = (1.0 - an) * asame
            l_behind = (1.0 - an) * (1.0 - asame) * ab
            alpha = l_near + l_same + l_behind
        rgb = (1.0 - alpha) * background[wp.min(frame, background.shape[0] - 1)]
        # a layer of zero weight is left unshaded: its colour would only multiply zero
        if l_near != 0.0:
            dn = den_near[p]
            colour = _blend(num_near, q, 0, dn)
            if wp.static(PHONG):
                colour = phong_at(colour, _blend(num_near, q, 3, dn), _blend(num_near, q, 6, dn), frame, eye, light_kind,
                                light_vec, light_col, light_att, num_lights, light_frames, ambient, diffuse, specular,
                                shininess)
            rgb = rgb + l_near * colour
        if covered[p] != 0:
            if l_behind != 0.0:
                db = den_behind[p]
                colour = _blend(num_behind, q, 0, db)
                if wp.static(PHONG):
                    colour = phong_at(colour, _blend(num_behind, q, 3, db), _blend(num_behind, q, 6, db), frame, eye,
                                    light_kind, light_vec, light_col, light_att, num_lights, light_frames, ambient,
                                    diffuse, specular, shininess)
                rgb = rgb + l_behind * colour
            if l_same != 0.0:
                # the visible surface blends with the other faces at its depth (continuous across creases)
                wv = den_visible[p]
                total = wv + den_same[p]
                colour = _blend(fg, q, 0, 0.0)
                if total > 0.0:
                    colour = (wv * colour + _blend(num_same, q, 0, 0.0)) / total
                if wp.static(PHONG):
                    position = _blend(fg, q, 3, 0.0)
                    normal = _blend(fg, q, 6, 0.0)
                    if total > 0.0:
                        position = (wv * position + _blend(num_same, q, 3, 0.0)) / total
                        normal = (wv * normal + _blend(num_same, q, 6, 0.0)) / total
                    colour = phong_at(colour, position, normal, frame, eye, light_kind, light_vec, light_col, light_att,
                                    num_lights, light_frames, ambient, diffuse, specular, shininess)
                rgb = rgb + l_same * colour
        image[p] = wp.vec4(rgb[0], rgb[1], rgb[2], alpha)

    return wp.kernel(composite_kernel, name=f"wsim_composite_l{LIGHTS}_p{int(PHONG)}_u{int(UNION)}")


@functools.cache
def kernel_for(lights: int, phong: bool, union: bool):
    """The compositing kernel of this case (built on first use, one per case: see
    ``_make_composite_kernel``)."""
    return _make_composite_kernel(int(lights), bool(phong), bool(union))


class _CompositeProgram:
    """Tape program (:mod:`wsim.bridge`) of the compositing kernel."""

    input_dtypes = {name: wp.float32 for name in ("a_near", "a_same", "a_behind", "den_near", "den_behind",
                                                  "den_visible", "den_same", "num_near", "num_behind",
                                                  "num_same", "fg", "light_att", "shininess")}
    input_dtypes.update({name: wp.vec3 for name in ("background", "eye", "light_vec", "light_col", "ambient",
                                                    "diffuse", "specular")})

    def __init__(self, device, covered, light_kind, dims):
        self.device = device
        self.covered, self.light_kind = covered, light_kind
        self.dims = dims  # B, H, W, C, union, phong, num_lights, light_frames

    def record(self, inputs):
        B, H, W, C, union, phong, num_lights, light_frames = self.dims
        kernel = kernel_for(num_lights, phong, union)
        image = wp.zeros(B * H * W, dtype=wp.vec4, device=self.device, requires_grad=True)
        names = ("a_near", "a_same", "a_behind", "den_near", "den_behind", "den_visible", "den_same", "num_near",
                 "num_behind", "num_same", "fg")
        wp.launch(kernel, dim=B * H * W, device=self.device,
                  inputs=[*(inputs[n] for n in names), self.covered, inputs["background"], inputs["eye"],
                          self.light_kind, inputs["light_vec"], inputs["light_col"], inputs["light_att"],
                          inputs["ambient"], inputs["diffuse"], inputs["specular"], inputs["shininess"],
                          H * W, C, num_lights, light_frames],
                  outputs=[image])
        return (image,)


def _rows(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-frame quantities ``[F or 1, k]`` broadcast to one common number of rows."""
    rows = max(v.shape[0] for v in values)
    for v in values:
        if v.shape[0] not in (1, rows):
            raise ParameterError(f"per-frame light/material values have {v.shape[0]} and {rows} rows; "
                                 "give one row or one per frame")
    return [v.expand(rows, -1) for v in values]


def _flat(value, device, width: int) -> torch.Tensor:
    t = _per_frame(value, device, width)
    return t.reshape(t.shape[0], t.shape[-1]).expand(-1, width)


def lights_and_material(lights, material, device):
    """The light and material inputs of the compositing kernel as torch tensors (differentiable):
    ``(kinds [L] int32, vec [Fl * L, 3], colour [Fl * L, 3], attenuation [Fl * L], Fl,
    ambient, diffuse, specular [Fm, 3], shininess [Fm])``."""
    if len(lights) > MAX_LIGHTS:
        raise ParameterError(f"the Warp compositor takes at most {MAX_LIGHTS} lights, got {len(lights)}")
    kinds, vecs, cols, atts = [], [], [], []
    for light in lights:
        colour = _flat(light.color, device, 3) * _flat(light.intensity, device, 1)
        if isinstance(light, DirectionalLight):
            kinds.append(_DIRECTIONAL)
            vecs.append(_flat(light.direction, device, 3))
            atts.append(torch.zeros(1, 1, device=device))
        elif isinstance(light, PointLight):
            kinds.append(_POINT)
            vecs.append(_flat(light.position, device, 3))
            atts.append(_flat(light.attenuation, device, 1))
        else:
            raise ParameterError(f"unknown light type {type(light).__name__}; use DirectionalLight or PointLight")
        cols.append(colour)
    L = len(lights)
    if L:
        rows = _rows(vecs + cols + atts)
        vec = torch.stack(rows[:L], 1).reshape(-1, 3)
        col = torch.stack(rows[L:2 * L], 1).reshape(-1, 3)
        att = torch.stack(rows[2 * L:], 1).reshape(-1)
        light_frames = rows[0].shape[0]
    else:  # no light: the kernel reads none of these
        vec = col = torch.zeros(1, 3, device=device)
        att = torch.zeros(1, device=device)
        light_frames = 1
    ka, kd, ks, shin = _rows([_flat(material.ambient, device, 3), _flat(material.diffuse, device, 3),
                              _flat(material.specular, device, 3), _flat(material.shininess, device, 1)])
    kind = torch.tensor(kinds or [0], dtype=torch.int32, device=device)
    return kind, vec, col, att, light_frames, ka, kd, ks, shin[:, 0]


def composite_warp(soft: dict, fg_attr: torch.Tensor, covered: torch.Tensor, background: torch.Tensor,
                   union: bool, phong: bool, eye: torch.Tensor, lights, material) -> torch.Tensor:
    """RGBA ``[B, H, W, 4]`` from one launch of the compositing kernel (module docstring); ``fg_attr``
    has 3 channels (colour) for flat shading and 9 (colour, position, normal) for Phong."""
    B, H, W, C = fg_attr.shape
    if C != (9 if phong else 3):
        raise ParameterError(f"the Warp compositor needs RGB colours (+ position and normal for Phong); got {C} "
                             "attribute channels")
    device = fg_attr.device
    if not phong:  # flat shading reads neither: no gradient reaches them
        lights, material = [], Material()
    kind, vec, col, att, light_frames, ka, kd, ks, shin = lights_and_material(lights, material, device)
    for name, rows in (("background", background.reshape(-1, 3).shape[0]), ("camera", eye.reshape(-1, 3).shape[0]),
                       ("light", light_frames), ("material", ka.shape[0])):
        if rows not in (1, B):  # the kernel would read the last row for the frames beyond
            raise ParameterError(f"the {name} has {rows} per-frame rows for {B} frames; give one row or one per frame")

    covered_i = covered.to(torch.int32).contiguous().reshape(-1)
    program = _CompositeProgram(_warp_device(fg_attr), wp.from_torch(covered_i, dtype=wp.int32),
                                wp.from_torch(kind, dtype=wp.int32),
                                (B, H, W, C, int(union), int(phong), len(lights), light_frames))
    program._keep = (covered_i, kind)
    inputs = {name: soft[name].reshape(-1) for name in ("a_near", "a_same", "a_behind", "den_near", "den_behind",
                                                        "den_visible", "den_same", "num_near", "num_behind",
                                                        "num_same")}
    inputs.update(fg=fg_attr.reshape(-1), background=background.reshape(-1, 3), eye=eye.reshape(-1, 3),
                  light_vec=vec, light_col=col, light_att=att, ambient=ka, diffuse=kd, specular=ks, shininess=shin)
    (image,) = run_tape_program(program, inputs)
    return image.reshape(B, H, W, 4)


def composite_torch(soft: dict, fg_attr: torch.Tensor, covered: torch.Tensor, background: torch.Tensor,
                    union: bool, shade) -> tuple[torch.Tensor, dict]:
    """RGBA ``[B, H, W, 4]`` by torch operations, and the layers' colours ``{"foreground", "near",
    "behind", "alpha"}``; ``shade`` maps an attribute buffer ``[B, H, W, C]`` to RGB (texture lookup,
    Phong)."""
    a_near, a_same, a_behind = (soft[k].unsqueeze(-1) for k in ("a_near", "a_same", "a_behind"))
    if union:
        # union front to back: each layer shows where it covers more than the layers before it, so
        # that alpha is the largest face coverage on both sides of a silhouette (no step where a
        # pixel centre leaves the object and every face joins the near group)
        c_same = torch.maximum(a_near, a_same)
        c_all = torch.maximum(c_same, a_behind)
        l_near, l_same, l_behind = a_near, c_same - a_near, c_all - c_same
    else:
        l_near = a_near
        l_same = (1.0 - a_near) * a_same
        l_behind = (1.0 - a_near) * (1.0 - a_same) * a_behind
        c_all = l_near + l_same + l_behind

    def blend(num, den):
        return num / torch.where(den > 0.0, den, torch.ones_like(den)).unsqueeze(-1)

    bg = background.reshape(-1, 1, 1, 3)
    near_col = shade(blend(soft["num_near"], soft["den_near"]))
    behind_col = shade(blend(soft["num_behind"], soft["den_behind"]))
    # the visible surface blends with the other faces at its depth, so that a crease between sides
    # of different colour or normal stays continuous. Attributes are blended before shading, as in
    # the near group, so that the two descriptions of a pixel on a silhouette agree.
    w_vis = soft["den_visible"].unsqueeze(-1)
    total = w_vis + soft["den_same"].unsqueeze(-1)
    safe_total = torch.where(total > 0.0, total, torch.ones_like(total))
    surface_attr = torch.where(total > 0.0, (w_vis * fg_attr + soft["num_same"]) / safe_total, fg_attr)
    fg = shade(surface_attr)
    layered = l_near * near_col + l_same * fg + l_behind * behind_col + (1.0 - c_all) * bg
    # uncovered pixels have no same or behind layer; the branch keeps the (meaningless) visible-surface
    # colour there out of the gradient
    rgb = torch.where(covered.unsqueeze(-1), layered, l_near * near_col + (1.0 - c_all) * bg)
    image = torch.cat([rgb, c_all], dim=-1)
    return image, {"alpha": c_all[..., 0], "foreground": fg, "near": near_col, "behind": behind_col}

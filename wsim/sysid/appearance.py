"""The appearance of a target video: what wsim's renderer assumes (light, ambient, albedo, background)
and the nuisance parameters that estimate it jointly with the physical ones, and foreground masks
from a target by background subtraction.

Image formation (Phong, :mod:`wsim.render.shading`) with one directional light:

``colour = albedo * base * (ambient + diffuse * intensity * max(n.L, 0)) + specular * intensity * spec``

over a constant ``background``. ``light`` is ``[elevation, azimuth]`` of the direction towards the
light (elevation above the horizontal XZ plane, azimuth about +Y from +Z towards +X), in degrees in
the config (``appearance.light``) and in radians as an estimated value (so that an optimiser step of
0.1 turns the light by about 6 degrees, as it changes a log-space parameter by 10 %);
``albedo`` multiplies the scene's per-vertex colours (RGB). A video rendered by another renderer, or
filmed, never matches the assumed values; ``appearance.estimate`` names those to estimate. Their
values enter the optimisation like physical parameters (:data:`NUISANCE` gives each one's space and
range) and are reported under ``estimate`` (and ``errors`` when the target was rendered by wsim with a
known ``appearance.target``), but they are not part of the simulation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: name -> (value shape, optimisation space, sampling range low/high, hard bounds)
NUISANCE = {
    "light": ((2,), "linear", -1.5, 1.5, (-7.0, 7.0)),
    "light_intensity": ((), "log", 0.3, 3.0, (0.05, 20.0)),
    "ambient": ((), "log", 0.02, 1.0, (0.005, 3.0)),
    "albedo": ((3,), "log", 0.3, 3.0, (0.05, 20.0)),
    "background": ((3,), "sigmoid", 0.0, 1.0, (0.0, 1.0)),
}


def light_direction(angles: torch.Tensor) -> torch.Tensor:
    """The travel direction of a directional light (world, unit) from ``[elevation, azimuth]`` radians."""
    el, az = angles[..., 0], angles[..., 1]
    towards = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)
    return -towards


def light_angles(direction) -> list[float]:
    """``[elevation, azimuth]`` degrees of a light travelling along ``direction``."""
    d = -np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    return [math.degrees(math.asin(np.clip(d[1], -1.0, 1.0))), math.degrees(math.atan2(d[0], d[2]))]


def assumed(config, target: bool = False) -> dict:
    """The appearance values (floats/lists) wsim renders with: ``appearance`` and ``render.background``,
    or with ``target=True`` those of a wsim-rendered target (``appearance.target`` overrides them)."""
    a = config.appearance
    values = {"light": [math.radians(x) for x in a.light], "light_intensity": a.light_intensity, "ambient": a.ambient,
              "albedo": list(a.albedo), "background": list(config.render.background)}
    if target and a.target is not None:
        values.update({k: v for k, v in a.target.model_dump().items() if v is not None})
        if a.target.light is not None:
            values["light"] = [math.radians(x) for x in a.target.light]
    return values


def nuisance_params(config) -> list:
    """The :class:`~wsim.sysid.config.ParamConfig` of every estimated appearance value, starting from
    the assumed one (``true``: a wsim-rendered target's appearance; none for an external video)."""
    from .config import ParamConfig

    start, truth = assumed(config), assumed(config, target=True)
    out = []
    for name in config.appearance.estimate:
        shape, space, low, high, bounds = NUISANCE[name]
        out.append(ParamConfig(name=name, low=low, high=high, space=space, bounds=list(bounds), init=start[name],
                               true=None if config.target.video is not None else truth[name]))
    return out


class Appearance:
    """Builds the renderer's lights, material, colours and background from parameter values (the
    nuisance ones when estimated, the assumed ones otherwise)."""

    def __init__(self, config, colors: torch.Tensor, target: bool = False):
        self.config = config
        self.colors = colors
        device = colors.device
        self.fixed = {k: torch.as_tensor(v, dtype=torch.float32, device=device)
                      for k, v in assumed(config, target).items()}

    def render_kwargs(self, values: dict | None = None) -> dict:
        from ..render import DirectionalLight, Material

        a = self.config.appearance
        v = dict(self.fixed)
        if values:
            v.update({k: values[k] for k in NUISANCE if k in values})
        light = DirectionalLight(direction=light_direction(v["light"]), intensity=v["light_intensity"])
        ambient = v["ambient"].reshape(1).expand(3)
        material = Material(ambient=ambient, diffuse=(a.diffuse,) * 3, specular=(a.specular,) * 3,
                            shininess=a.shininess)
        return {"colors": self.colors * v["albedo"], "lights": [light], "material": material,
                "background": v["background"]}


# ----------------------------------------------------------------------------- foreground masks

def _border_pixels(images: torch.Tensor, width: int = 2) -> torch.Tensor:
    """The pixels ``[N, C]`` within ``width`` of the border of ``images`` ``[F, H, W, C]``, every frame."""
    top, bottom = images[:, :width], images[:, -width:]
    left, right = images[:, width:-width, :width], images[:, width:-width, -width:]
    return torch.cat([t.reshape(-1, images.shape[-1]) for t in (top, bottom, left, right)])


def border_background(images: torch.Tensor, width: int = 2) -> torch.Tensor:
    """The background colour ``[3]`` of ``images`` ``[F, H, W, 3]``: the per-channel median of the
    pixels within ``width`` of the image border over every frame (a framed object rarely touches it)."""
    return _border_pixels(images, width).median(dim=0).values


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample: the cut that maximises the between-class variance."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


GAP_CHROMA = 0.05  # sin^2 of the angle between an object colour and the background's that tells them apart


def _coverage(rgb: torch.Tensor, back: torch.Tensor, fg: torch.Tensor, rim_prior: float) -> torch.Tensor:
    """Per pixel, the coverage ``a`` of ``I - B = a (F - B) + v F`` (``v = a (s - 1)``, the extra shading,
    prior weight ``w``) by least squares over RGB: the normal equations in (a, v), which stay well
    conditioned however large ``w`` is (v = 0: the s = 1 matte). ``[F, 3, H, W]`` in, ``[F, 1, H, W]`` out."""
    y, d = rgb - back, fg - back
    dd, df, ff = (d * d).sum(1, keepdim=True), (d * fg).sum(1, keepdim=True), (fg * fg).sum(1, keepdim=True)
    yd, yf = (y * d).sum(1, keepdim=True), (y * fg).sum(1, keepdim=True)
    w = rim_prior * (ff + (back * back).sum(1, keepdim=True))
    det = (dd * (ff + w) - df * df).clamp_min(1e-12)
    return (((ff + w) * yd - df * yf) / det).clamp(0.0, 1.0)


def foreground_mask(images: torch.Tensor, background: torch.Tensor | None = None, window: int = 5,
                    soft: bool = True, rim_prior: float = 1e-4, contrast: float = 0.05) -> tuple[torch.Tensor, dict]:
    """The foreground coverage ``[F, H, W]`` (1: object) of ``images`` ``[F, H, W, 3]`` by background
    subtraction, and a record of how it was made.

    A pixel the object covers by a fraction ``a`` differs from the background (given, or
    :func:`border_background`) by about ``a`` times the object's local contrast, the largest difference
    within ``window`` pixels (an interior pixel nearby). The hard mask is where that ratio exceeds 1/2,
    so its outline is the object's half-coverage line, unbiased like the renderer's 0.5 level, whatever
    the shading; a fixed small threshold would count every pixel the object touches. Pixels whose local
    contrast is below the cut are background: Otsu's threshold of all differences, lowered to the
    largest of ``contrast``, a quarter of Otsu's and twice the 99th percentile of the border's
    differences (the video's noise) where Otsu's lies above them. Otsu's alone splits an object whose
    shading sweeps across the background's colour (an orange object lit dimly on a brick-red
    background, measured: the mask lost 17 % of the object and the mass came out 3.4e-2 off); the
    floors keep noise and codec ringing (which grows with the edge's contrast) out.

    ``soft`` (default) returns a matte instead: 1 inside (every pixel whose 3x3 neighbours all differ from
    the background by more than the cut), 0 outside, and on the band between them the coverage ``a``
    of the compositing equation ``I = a s F + (1 - a) B``, with ``F`` the mean colour of the nearest
    interior pixels (3x3, else within ``window``) and ``s`` an unknown shading factor of the rim: each
    band pixel solves ``I - B = a (F - B) + v F`` for ``a`` and ``v = a (s - 1)`` by least squares over
    RGB, with a weak prior ``v = 0`` (weight ``rim_prior`` times ``|F|^2 + |B|^2``). An anti-aliased
    video (any camera or path tracer) carries the outline's sub-pixel position in those pixels; a hard
    mask rounds it to whole pixels, which biases an estimate from a few hundred outline pixels by 1 %.
    The free shading factor matters because a rim is seldom shaded like the interior next to it
    (grazing light, a path tracer's shading normals turning away from the eye): taking ``s = 1``
    (``rim_prior`` large) turns a darker rim into extra coverage, and gave mass errors of up to 4e-2 on
    Mitsuba targets (measured, rigid-mass seed 1015, 48 px: Gauss-Newton bias 3.8e-2 with s = 1, 5e-4
    with the free factor, 3e-4 from Mitsuba's exact alpha). Where ``F`` and ``B`` have the same
    chromaticity (a grey object on a grey background) colour cannot tell ``v`` from ``a`` and the prior
    decides: the matte falls back to ``s = 1``. An interior pixel much closer to the background than its
    most object-like neighbour (a gap the object leaves, such as a torus's hole seen nearly edge-on) is
    solved the same way with that neighbour's colour (measured on rigid-mass seed 1037, a torus: the
    Gauss-Newton mass bias fell from 1.0e-2 to 3.3e-3; 1.3e-3 from Mitsuba's exact alpha)."""
    import torch.nn.functional as F

    bg = border_background(images) if background is None else background.to(images)
    distance = (images - bg).norm(dim=-1)
    d = distance.detach().cpu().numpy().reshape(-1)
    otsu = otsu_threshold(d)
    noise = float(np.quantile((_border_pixels(images) - bg).norm(dim=-1).detach().cpu().numpy(), 0.99))
    split = min(otsu, max(float(contrast), 0.25 * otsu, 2.0 * noise))
    if not (d > split).any() or split <= 0.0:
        raise ValueError("the target shows no object against its background (no pixel differs from it)")
    local = F.max_pool2d(distance.unsqueeze(1), window, stride=1, padding=window // 2).squeeze(1)
    mask = ((distance > 0.5 * local) & (local > split)).to(images.dtype)
    record = {"source": "background subtraction", "background": bg.detach().cpu().tolist(),
              "otsu_threshold": otsu, "threshold": split, "window": window, "foreground_fraction": float(mask.mean()),
              "soft": bool(soft), **({"rim_prior": float(rim_prior)} if soft else {})}
    if not soft:
        return mask, record
    # The matte's interior is every pixel whose 3x3 neighbourhood is object by the cut alone: deep
    # inside, a dark face next to a bright one can fail the local ratio and would leave holes.
    core = (distance > split).to(images.dtype).unsqueeze(1)
    interior = -F.max_pool2d(-core, 3, stride=1, padding=1)
    exterior = 1.0 - F.max_pool2d(torch.maximum(core, mask.unsqueeze(1)), 3, stride=1, padding=1)
    rgb = images.permute(0, 3, 1, 2)
    back = bg.view(1, 3, 1, 1)

    def near_interior(size):
        count = F.avg_pool2d(interior, size, stride=1, padding=size // 2, count_include_pad=False)
        total = F.avg_pool2d(rgb * interior, size, stride=1, padding=size // 2, count_include_pad=False)
        return total / count.clamp_min(1e-12), count > 0

    # the nearest interior colours (3x3, else within the window) stand for the object's colour at the rim
    fg3, has3 = near_interior(3)
    fgw, hasw = near_interior(window)
    fg = torch.where(has3, fg3, fgw)
    coverage = _coverage(rgb, back, fg, rim_prior)
    # a band pixel with no interior pixel near (a part thinner than 3 pixels) keeps its hard value
    band = torch.where(hasw, coverage, mask.unsqueeze(1))
    # An interior pixel much closer to the background than its most object-like neighbour is a gap the
    # object leaves (a torus's slit of a hole), not a darker face, when colour can tell them apart (a
    # darker face has the object's chromaticity): it is solved like the band, with that neighbour's colour.
    local, at = F.max_pool2d(distance.unsqueeze(1), 3, stride=1, padding=1, return_indices=True)
    flat = rgb.flatten(2)
    neighbour = torch.gather(flat, 2, at.flatten(2).expand(-1, 3, -1)).view_as(rgb)
    norms = neighbour.norm(dim=1, keepdim=True) * back.norm(dim=1, keepdim=True)
    cosine = (neighbour * back).sum(1, keepdim=True) / norms.clamp_min(1e-12)
    gap = (interior > 0) & (distance.unsqueeze(1) < 0.8 * local) & (1.0 - cosine ** 2 > GAP_CHROMA)
    inside = torch.where(gap, _coverage(rgb, back, neighbour, rim_prior), torch.ones_like(band))
    matte = torch.where(interior > 0, inside, torch.where(exterior > 0, torch.zeros_like(band), band))
    record["foreground_fraction"] = float(matte.mean())
    return matte.squeeze(1), record

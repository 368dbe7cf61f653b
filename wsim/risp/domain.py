"""Rendering parameters psi (RISP Sec. 3): the appearance a video may have, as one differentiable vector
per image, drawn from a stated distribution, and the image Jacobian dI/dpsi.

psi is the concatenation, in :data:`FIELDS` order, of

============== ===== ======================================================================
field          width meaning (wsim's Phong model, :mod:`wsim.render.shading`)
============== ===== ======================================================================
light          2     elevation and azimuth (radians) of the direction towards the light
                     (as :func:`wsim.sysid.appearance.light_direction`)
light_intensity 1    intensity of the directional light
light_color    3     its RGB colour
ambient        1     ambient coefficient (grey)
albedo         3     RGB factor on the scene's per-vertex colours
specular       1     specular coefficient (grey)
shininess      1     Phong exponent
background     3     RGB background colour
ground         3     RGB albedo of the ground plane (scenes with a ground; the plane is drawn in a
                     stated fraction of the images, :class:`~wsim.risp.config.DomainConfig`)
============== ===== ======================================================================

so that ``colour = albedo * base * (ambient + intensity * light_color * max(n.L, 0)) + specular *
intensity * light_color * max(r.v, 0)^shininess`` over ``background``. Every field is drawn
uniformly from its ``[low, high]`` (per component): :class:`wsim.risp.config.DomainConfig` states the
ranges, and another distribution (e.g. the path tracer's, :mod:`wsim.render.appearance`) is what a
test domain uses. A small camera jitter (``DomainConfig.camera_jitter``) is drawn with psi but is not
part of it: the regulariser flattens the network along psi only.

The image Jacobian ``dI/dpsi`` (:func:`image_and_jacobian`) is taken by central differences of the
renderer, all ``2 |psi|`` renders of one state in one batch: psi enters the image only through
shading and compositing, which are smooth in psi (up to the clamps of ``n.L`` and ``r.v`` at 0), so
differences of step ``h`` times each field's range width are accurate to ``O(h^2)``
(``tests/test_risp.py`` checks them against the renderer's reverse-mode gradients).
"""

from __future__ import annotations

import numpy as np
import torch

from ..render import DirectionalLight, Material
from ..sysid.appearance import light_direction

#: field -> width, in the order of the psi vector
FIELDS = {"light": 2, "light_intensity": 1, "light_color": 3, "ambient": 1, "albedo": 3, "specular": 1,
          "shininess": 1, "background": 3, "ground": 3}
SIZE = sum(FIELDS.values())


def slices() -> dict[str, slice]:
    """The slice of each field in a psi vector."""
    out, start = {}, 0
    for name, width in FIELDS.items():
        out[name] = slice(start, start + width)
        start += width
    return out


def bounds(domain) -> tuple[np.ndarray, np.ndarray]:
    """Per-component ``low`` and ``high`` ``[SIZE]`` of a :class:`~wsim.risp.config.DomainConfig`."""
    low, high = [], []
    for name, width in FIELDS.items():
        lo, hi = getattr(domain, name)
        low += [lo] * width
        high += [hi] * width
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def sample(domain, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` psi vectors ``[count, SIZE]`` float32, uniform in the domain's ranges."""
    low, high = bounds(domain)
    return rng.uniform(low, high, size=(count, SIZE)).astype(np.float32)


def render_kwargs(psi: torch.Tensor, colors: torch.Tensor, ground: int = 0) -> dict:
    """Keyword arguments of :class:`~wsim.render.SoftRenderer` for ``psi`` ``[B, SIZE]`` (one row per
    rendered frame; differentiable) and the per-vertex ``colors`` ``[V, 3]`` of the scene, whose last
    ``ground`` vertices are the ground plane's (they take psi's ground colour)."""
    s = slices()
    light = DirectionalLight(direction=light_direction(psi[:, s["light"]]), color=psi[:, s["light_color"]],
                             intensity=psi[:, s["light_intensity"]][:, 0])
    grey = torch.ones(1, 3, dtype=psi.dtype, device=psi.device)
    material = Material(ambient=psi[:, s["ambient"]] * grey, diffuse=(1.0, 1.0, 1.0),
                        specular=psi[:, s["specular"]] * grey, shininess=psi[:, s["shininess"]][:, 0])
    shaded = colors.unsqueeze(0) * psi[:, s["albedo"]].unsqueeze(1)
    if ground:
        plane = psi[:, s["ground"]].unsqueeze(1).expand(-1, ground, -1)
        shaded = torch.cat([shaded[:, :colors.shape[0] - ground], plane], 1)
    return {"colors": shaded, "lights": [light],
            "material": material, "background": psi[:, s["background"]]}


def steps(domain, relative: float = 1e-3) -> torch.Tensor:
    """Central-difference steps ``[SIZE]``: ``relative`` times each component's range width."""
    low, high = bounds(domain)
    return torch.as_tensor(relative * np.maximum(high - low, 1e-6), dtype=torch.float32)


def image_and_jacobian(renderer, vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor,
                       psi: torch.Tensor, step: torch.Tensor, camera=None, ground: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The RGB image ``[H, W, 3]`` of one state (``vertices`` ``[V, 3]``, the last ``ground`` of them a
    ground plane's) rendered under ``psi`` ``[SIZE]`` and its Jacobian ``dI/dpsi`` ``[SIZE, H, W, 3]`` by
    central differences with per-component ``step`` ``[SIZE]``: ``2 SIZE + 1`` frames in one render call."""
    n = psi.shape[0]
    h = step.to(psi.device)
    offsets = torch.diag(h)
    batch = torch.cat([psi.unsqueeze(0), psi + offsets, psi - offsets])  # [2n + 1, n]
    with torch.no_grad():
        rgba = renderer(vertices.unsqueeze(0).expand(2 * n + 1, -1, -1), faces, camera=camera,
                        **render_kwargs(batch, colors, ground))
    rgb = rgba[..., :3]
    return rgb[0], (rgb[1:n + 1] - rgb[n + 1:]) / (2.0 * h).reshape(n, 1, 1, 1)


def path_traced_appearance(config, kind: str, rng: np.random.Generator):
    """A Mitsuba appearance of ``kind`` (:func:`wsim.render.appearance.sample_appearance`: another
    distribution than psi's) around the one matching ``config``'s render section: the scene's ground
    plane when it has one; without one, the ``random`` kind's checkerboard ground lies 0.6 m below the
    camera's target (not under the lowest vertex of the frame, which would move with the object)."""
    from dataclasses import replace

    from ..render.appearance import Appearance, Ground, sample_appearance

    base = Appearance.matched(config.render)
    if config.scene.ground.enabled:
        base = replace(base, ground=Ground(height=config.scene.ground.height))
    appearance = sample_appearance(rng, kind, base)
    if appearance.ground is not None and appearance.ground.height is None:
        below = float(config.render.camera.target[1]) - 0.6
        appearance = replace(appearance, ground=replace(appearance.ground, height=below))
    return appearance

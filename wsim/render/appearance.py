"""Appearance of a scene for the path tracer (:mod:`wsim.render.mitsuba`): lights, background, material
and ground, with the appearance that matches wsim's own Phong renderer and stated random draws.

Units. Light strengths are given as the radiance that a white Lambertian surface shows when lit by
that light alone, so that they compare directly with wsim's Phong terms and with pixel values (linear
RGB, no gamma): a directional light of strength ``light`` has the irradiance ``pi * light`` across its
direction (Mitsuba's ``irradiance``), so a Lambertian surface of albedo ``rho`` at angle ``theta`` to it
shows ``rho * light * cos(theta)``; the ambient light is a constant environment of radiance
``ambient``, so an unoccluded Lambertian surface shows ``rho * ambient``. wsim's Phong shading
``base * (ka + kd * I * c * max(n.L, 0))`` is therefore ``albedo = base``, ``ambient = ka`` and
``light = kd * I * c``. Lengths are metres; the area light is placed in units of the scene's bounding
radius (half the diagonal of the bounding box of the whole rollout), so that one appearance suits
scenes of any size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..errors import ConfigError, ParameterError

KINDS = ("matched", "light", "background", "random")
# wsim's rollout videos (wsim.render.video.render_rollout_video) light the scene from here and draw this ground
VIDEO_LIGHT_DIRECTION = (-0.4, -1.0, -0.6)
VIDEO_GROUND_COLOR = (0.55, 0.55, 0.5)


@dataclass
class AreaLight:
    """A square emitter facing the scene centre: ``direction`` from the scene centre towards the light
    (world, any length), ``distance`` and side ``size`` in scene radii, ``strength`` RGB in the units of
    the module docstring at the scene centre (radiance ``pi * strength * distance^2 / size^2``, exact
    for a small square)."""

    direction: tuple = (0.3, 1.0, 0.4)
    distance: float = 4.0
    size: float = 1.0
    strength: tuple = (0.6, 0.6, 0.6)


@dataclass
class Ground:
    """A horizontal checkerboard plane (Lambertian) at world height ``height`` (m; None: the lowest
    vertex of the rollout), squares of side ``checker`` (m) in the albedos ``color_a`` and ``color_b``
    (equal colours: a plain ground). It is a square around the scene centre of side ``size`` times the
    rollout's larger horizontal extent (3 in wsim's rollout videos), or with ``size`` None one that
    reaches the horizon (half side 50 times the larger of the scene radius and the camera distance)."""

    height: float | None = None
    color_a: tuple = VIDEO_GROUND_COLOR
    color_b: tuple = VIDEO_GROUND_COLOR
    checker: float = 0.25
    size: float | None = None


@dataclass
class Appearance:
    """Everything the path tracer needs besides geometry and camera (units: module docstring).

    ``background``: RGB behind the scene, or None for a transparent one (the image is then the
    premultiplied colour over black, and the alpha says what is covered). ``light_direction``: the
    direction the directional light travels (world); ``light``: its strength (RGB, 0 switches it off);
    ``ambient``: the constant environment's radiance; ``area_light``: an optional extra square emitter.
    Material: ``albedo`` RGB for the whole object, or None for the per-vertex colours; ``specular`` > 0
    mixes in a glossy lobe: the BSDF is ``(1 - specular)`` times the Lambertian one plus ``specular``
    times a white rough mirror (GGX microfacets of roughness ``roughness``, Mitsuba's ``roughconductor``).
    ``ground``: an optional checkerboard plane.
    """

    background: tuple | None = (1.0, 1.0, 1.0)
    light_direction: tuple = (0.0, -1.0, -0.5)
    light: tuple = (0.7, 0.7, 0.7)
    ambient: tuple = (0.3, 0.3, 0.3)
    area_light: AreaLight | None = None
    albedo: tuple | None = None
    specular: float = 0.0
    roughness: float = 0.2
    ground: Ground | None = None
    kind: str = "matched"

    def __post_init__(self):
        if self.background is not None:
            self.background = _rgb("appearance background", self.background, high=1.0)
        self.light_direction = _vec3("appearance light_direction", self.light_direction)
        self.light = _rgb("appearance light", self.light)
        self.ambient = _rgb("appearance ambient", self.ambient)
        if self.albedo is not None:
            self.albedo = _rgb("appearance albedo", self.albedo, high=1.0)
        if not 0.0 <= float(self.specular) <= 1.0:
            raise ParameterError(f"appearance specular must be in [0, 1], got {self.specular}")
        if not 0.0 < float(self.roughness) <= 1.0:
            raise ParameterError(f"appearance roughness must be in (0, 1], got {self.roughness}")
        self.specular, self.roughness = float(self.specular), float(self.roughness)
        if self.area_light is not None:
            a = self.area_light
            if not (a.distance > 0 and a.size > 0):
                raise ParameterError(f"appearance area_light distance and size must be > 0, got {a.distance}, {a.size}")
            self.area_light = AreaLight(_vec3("appearance area_light direction", a.direction), float(a.distance),
                                        float(a.size), _rgb("appearance area_light strength", a.strength))
        if self.ground is not None:
            g = self.ground
            if not g.checker > 0 or (g.size is not None and not g.size > 0):
                raise ParameterError(f"appearance ground checker and size must be > 0, got {g.checker}, {g.size}")
            self.ground = Ground(None if g.height is None else float(g.height),
                                 _rgb("appearance ground color_a", g.color_a, high=1.0),
                                 _rgb("appearance ground color_b", g.color_b, high=1.0), float(g.checker),
                                 None if g.size is None else float(g.size))

    # -------------------------------------------------------------------------------------------
    @classmethod
    def matched(cls, render_config=None, lights=None, material=None, background=None,
                ground_height: float | None = None) -> "Appearance":
        """The appearance closest to what wsim's own renderer draws with ``render_config`` (anything with
        ``shading`` and ``background``, e.g. an experiment's ``render`` section; None: Phong on white),
        ``lights`` (one :class:`~wsim.render.shading.DirectionalLight`; default wsim's default light) and
        ``material`` (default :class:`~wsim.render.shading.Material`): the same light direction, strength
        ``kd * I * c``, ambient ``ka``, background, and a diffuse material with the per-vertex colours.
        Flat shading is an ambient light of 1 alone. Not reproduced: Phong's specular highlight, and
        wsim draws no shadows. ``ground_height`` adds the plain ground square of wsim's rollout videos."""
        from .shading import DirectionalLight, Material

        shading = getattr(render_config, "shading", "phong")
        if background is None:
            background = tuple(getattr(render_config, "background", (1.0, 1.0, 1.0)))
        ground = None if ground_height is None else Ground(height=float(ground_height), size=3.0)
        if shading == "flat":
            return cls(background=background, light=(0.0, 0.0, 0.0), ambient=(1.0, 1.0, 1.0), ground=ground)
        lights = list(lights) if lights is not None else [DirectionalLight()]
        if len(lights) != 1 or not isinstance(lights[0], DirectionalLight):
            raise ParameterError("a matched appearance needs exactly one DirectionalLight, got "
                                 f"{[type(x).__name__ for x in lights]}")
        material = material if material is not None else Material()
        light = lights[0]
        strength = (_numbers(material.diffuse, 3) * _numbers(light.color, 3) * float(np.asarray(light.intensity)))
        return cls(background=background, light_direction=tuple(_numbers(light.direction, 3)),
                   light=tuple(strength), ambient=tuple(_numbers(material.ambient, 3)), ground=ground)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Appearance":
        """The inverse of :meth:`to_dict` (e.g. the ``appearance`` of a ``wsim render`` JSON)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown appearance keys {unknown}; allowed: {', '.join(sorted(known))}")
        values = dict(data)
        if values.get("area_light") is not None:
            values["area_light"] = AreaLight(**values["area_light"])
        if values.get("ground") is not None:
            values["ground"] = Ground(**values["ground"])
        for key in ("background", "light_direction", "light", "ambient", "albedo"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def sample_appearance(rng: np.random.Generator, kind: str, base: Appearance | None = None) -> Appearance:
    """An appearance drawn from a stated distribution around ``base`` (default :meth:`Appearance.matched`).

    - ``"matched"``: ``base`` itself.
    - ``"light"``: another directional light: its elevation above the horizon uniform in [20, 80] deg,
      azimuth uniform in [0, 360) deg, strength (grey) uniform in [0.4, 1.0], ambient (grey) uniform in
      [0.1, 0.5]; the rest as ``base``.
    - ``"background"``: every channel of the background uniform in [0.05, 0.85] (so at least 0.15 from
      white in each); the rest as ``base``.
    - ``"random"``: the light as for ``"light"``, tinted (each channel times a factor uniform in
      [0.85, 1]); the background as for ``"background"``; with probability 1/2 an area light (elevation
      [30, 80] deg, azimuth [0, 360) deg, distance uniform in [3, 6] and size in [0.5, 2] scene radii,
      grey strength in [0.2, 0.6]); with probability 1/2 a uniform albedo (each channel uniform in
      [0.15, 0.9]) instead of the vertex colours; a glossy lobe with specular uniform in [0, 0.5] and roughness
      in [0.05, 0.5]; always a checkerboard ground (two colours, each channel uniform in [0.15, 0.85],
      squares of side uniform in [0.1, 0.4] m) at ``base``'s ground height (the lowest vertex when
      ``base`` has no ground).
    """
    if kind not in KINDS:
        raise ConfigError(f"appearance kind '{kind}' is not one of {', '.join(KINDS)}")
    base = base if base is not None else Appearance.matched()
    if kind == "matched":
        return replace(base)
    if kind == "background":
        return replace(base, background=tuple(rng.uniform(0.05, 0.85, 3)), kind=kind)
    light_dir = -_direction(rng, 20.0, 80.0)  # travels down towards the scene
    light = float(rng.uniform(0.4, 1.0))
    ambient = float(rng.uniform(0.1, 0.5))
    if kind == "light":
        return replace(base, light_direction=tuple(light_dir), light=(light,) * 3, ambient=(ambient,) * 3, kind=kind)
    tint = rng.uniform(0.85, 1.0, 3)
    background = tuple(rng.uniform(0.05, 0.85, 3))
    area = None
    if rng.uniform() < 0.5:
        area = AreaLight(direction=tuple(_direction(rng, 30.0, 80.0)), distance=float(rng.uniform(3.0, 6.0)),
                         size=float(rng.uniform(0.5, 2.0)), strength=(float(rng.uniform(0.2, 0.6)),) * 3)
    albedo = tuple(rng.uniform(0.15, 0.9, 3)) if rng.uniform() < 0.5 else None
    specular, roughness = float(rng.uniform(0.0, 0.5)), float(rng.uniform(0.05, 0.5))
    ground = Ground(height=None if base.ground is None else base.ground.height,
                    color_a=tuple(rng.uniform(0.15, 0.85, 3)), color_b=tuple(rng.uniform(0.15, 0.85, 3)),
                    checker=float(rng.uniform(0.1, 0.4)))
    return replace(base, background=background, light_direction=tuple(light_dir), light=tuple(light * tint),
                   ambient=(ambient,) * 3, area_light=area, albedo=albedo, specular=specular, roughness=roughness,
                   ground=ground, kind=kind)


def _direction(rng, low_deg: float, high_deg: float) -> np.ndarray:
    """A unit vector above the horizon (Y up): elevation uniform in [low, high] deg, azimuth in [0, 360)."""
    el = math.radians(rng.uniform(low_deg, high_deg))
    az = rng.uniform(0.0, 2.0 * math.pi)
    return np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def _numbers(value, width: int) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (width,)).copy()


def _vec3(name: str, value) -> tuple:
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) < 1e-12:
        raise ParameterError(f"{name} must be a finite non-zero 3-vector, got {value}")
    return tuple(float(x) for x in v)


def _rgb(name: str, value, high: float = math.inf) -> tuple:
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > high):
        bound = "" if high == math.inf else f" and <= {high:g}"
        raise ParameterError(f"{name} must be 3 finite values >= 0{bound}, got {value}")
    return tuple(float(x) for x in v)


__all__ = ["Appearance", "AreaLight", "Ground", "KINDS", "sample_appearance"]

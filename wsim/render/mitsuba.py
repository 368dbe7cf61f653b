"""A second, independent renderer: Mitsuba 3 path tracing of wsim rollouts (``pip install wsim[mitsuba]``).

This is the only module that imports Mitsuba, and only inside functions. :func:`render_mitsuba` turns
vertex buffers, a :class:`~wsim.render.camera.Camera` and an :class:`~wsim.render.appearance.Appearance`
into linear RGB frames (Mitsuba's RGB film, no sRGB curve or tone mapping, like wsim's own renderer) and
the alpha each pixel is covered by (box pixel filter: the covered fraction of the pixel's area).

Camera: wsim's view matrix becomes a ``perspective`` sensor with the same eye, view direction and up and
the vertical field of view (``fov_axis: y``; for any aspect ratio wsim's focal length is ``(H / 2) /
tan(fov_y / 2)`` in both directions, which is Mitsuba's convention too). Mitsuba's film has row 0 at the
top and its camera frame is (left, up, forward), so wsim's (right, up, -forward) rows map over with
one sign change and the images agree without a flip (tests/test_render_mitsuba.py measures it).

Shading: the object is a Mitsuba mesh with wsim's area-weighted vertex normals (so both renderers
interpolate the same normals) and its per-vertex colours as the ``vertex_color`` attribute, read by a
``mesh_attribute`` texture. Lights are path traced (``path`` integrator, ``max_depth`` bounces), so the
images have shadows and interreflection, which wsim's renderer does not draw. The environment light is
hidden from camera rays; the background colour is composited with the film's alpha.

Variant: ``WSIM_MITSUBA_VARIANT`` when set, otherwise ``llvm_ad_rgb`` when a trial render in a separate
process succeeds (an LLVM that cannot compile Mitsuba's kernels aborts the process), else ``scalar_rgb``.
The choice is made once per process and set globally with ``mi.set_variant``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np

from ..errors import ConfigError, ParameterError
from .appearance import Appearance

VARIANT_ENV = "WSIM_MITSUBA_VARIANT"
PREFERRED_VARIANTS = ("llvm_ad_rgb", "scalar_rgb")
DEFAULT_COLOR = (0.7, 0.7, 0.7)  # as wsim's SoftRenderer without colours
_chosen_variant: str | None = None

_PROBE = """
import mitsuba as mi, numpy as np
mi.set_variant('llvm_ad_rgb')
s = mi.load_dict({'type': 'scene', 'integrator': {'type': 'path', 'max_depth': 3, 'hide_emitters': True},
    'sensor': {'type': 'perspective', 'fov': 40, 'film': {'type': 'hdrfilm', 'width': 4, 'height': 4,
               'pixel_format': 'rgba', 'rfilter': {'type': 'box'}}},
    'ball': {'type': 'sphere', 'center': [0, 0, 3], 'bsdf': {'type': 'roughplastic'}},
    'sun': {'type': 'directional', 'direction': [0, -1, 1]}, 'sky': {'type': 'constant'}})
print('ok' if np.isfinite(np.array(mi.render(s, spp=4))).all() else 'bad')
"""


def _import_mitsuba():
    try:
        import mitsuba as mi
    except ImportError as error:
        raise ConfigError("the Mitsuba renderer needs the mitsuba package: pip install wsim[mitsuba] "
                          f"(or pip install mitsuba); import failed: {error}") from None
    return mi


def mitsuba_variant() -> str:
    """The Mitsuba variant wsim renders with (see the module docstring); chosen once per process."""
    global _chosen_variant
    if _chosen_variant is not None:
        return _chosen_variant
    mi = _import_mitsuba()
    available = list(mi.variants())
    wanted = os.environ.get(VARIANT_ENV, "").strip()
    if wanted:
        if wanted not in available:
            raise ConfigError(f"{VARIANT_ENV}={wanted} is not a variant of this Mitsuba build; "
                              f"allowed: {', '.join(available)}")
        _chosen_variant = wanted
    elif "llvm_ad_rgb" in available and _llvm_works():
        _chosen_variant = "llvm_ad_rgb"
    elif "scalar_rgb" in available:
        _chosen_variant = "scalar_rgb"
    else:
        raise ConfigError(f"this Mitsuba build has neither llvm_ad_rgb nor scalar_rgb (it has {', '.join(available)}); "
                          f"set {VARIANT_ENV}")
    return _chosen_variant


def _llvm_works() -> bool:
    try:
        run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0 and run.stdout.strip().endswith("ok")


def _mitsuba():
    mi = _import_mitsuba()
    variant = mitsuba_variant()
    if mi.variant() != variant:
        try:
            mi.set_variant(variant)
        except Exception as error:  # e.g. a cuda variant without a GPU
            raise ConfigError(f"Mitsuba variant {variant} cannot be used here ({error}); set {VARIANT_ENV} "
                              f"to another one, e.g. scalar_rgb") from None
    return mi


def mitsuba_version() -> str:
    """The installed Mitsuba's version (a clear error when it is missing)."""
    return str(_import_mitsuba().__version__)


# ----------------------------------------------------------------------------------- geometry helpers
def _numpy(value, name: str, dtype=np.float64) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ParameterError(f"{name} holds NaN or infinite values")
    return array


def vertex_normals_np(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals ``[V, 3]`` (as :func:`wsim.render.shading.vertex_normals`); +Y where
    no face touches a vertex."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    face_normals = np.cross(v1 - v0, v2 - v0)
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 1e-20, normals / np.maximum(length, 1e-30), np.array([0.0, 1.0, 0.0]))


def sensor_poses(camera, size) -> list[dict]:
    """Per camera frame: the Mitsuba camera-to-world matrix ``to_world`` [4, 4] and ``fov_y`` (degrees)
    of wsim's ``camera`` for an image of ``size = (H, W)``."""
    H, W = int(size[0]), int(size[1])
    view = _numpy(camera.view, "camera view matrix")
    eyes = _numpy(camera.position(), "camera position")
    if camera.intrinsics is not None:
        fx, fy, cx, cy = _numpy(camera.intrinsics_for((H, W)), "camera intrinsics").T
        if np.any(np.abs(fx - fy) > 1e-5 * fy) or np.any(np.abs(cx - W / 2) > 1e-3) or np.any(np.abs(cy - H / 2) > 1e-3):
            raise ParameterError("the Mitsuba renderer takes square pixels with the principal point at the image "
                                 "centre (fx = fy, cx = W/2, cy = H/2); give the camera a fov_y")
        fovs = np.degrees(2.0 * np.arctan((H / 2.0) / fy))
    else:
        fovs = _numpy(camera.fov_y, "camera fov_y").reshape(-1)
    count = max(len(view), len(fovs))
    poses = []
    for k in range(count):
        rot = view[min(k, len(view) - 1), :3, :3]
        to_world = np.eye(4)
        # Mitsuba's camera frame is (left, up, forward); wsim's view rows are (right, up, -forward)
        to_world[:3, 0], to_world[:3, 1], to_world[:3, 2] = -rot[0], rot[1], -rot[2]
        to_world[:3, 3] = eyes[min(k, len(eyes) - 1)]
        poses.append({"to_world": to_world, "fov_y": float(fovs[min(k, len(fovs) - 1)])})
    return poses


def _translate_scale(centre, scale) -> np.ndarray:
    m = np.diag([*np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,)), 1.0])
    m[:3, 3] = centre
    return m


def _frame_towards(origin, target) -> np.ndarray:
    """A rigid transform putting local +Z at ``origin`` pointing at ``target`` (for one-sided emitters)."""
    forward = np.asarray(target, dtype=np.float64) - origin
    forward /= np.linalg.norm(forward)
    helper = np.array([0.0, 0.0, 1.0]) if abs(forward[1]) > 0.9 else np.array([0.0, 1.0, 0.0])
    left = np.cross(helper, forward)
    left /= np.linalg.norm(left)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = left, np.cross(forward, left), forward, origin
    return m


# ----------------------------------------------------------------------------------- scene description
def _rgb(value) -> dict:
    return {"type": "rgb", "value": [float(x) for x in value]}


def _object_bsdf(appearance: Appearance) -> dict:
    base = _rgb(appearance.albedo) if appearance.albedo is not None else {"type": "mesh_attribute",
                                                                          "name": "vertex_color"}
    diffuse = {"type": "diffuse", "reflectance": base}
    if appearance.specular > 0.0:
        # roughplastic would be the physical choice but needs the mean of its texture, which a mesh
        # attribute does not have; a blend keeps the albedo's meaning (scaled by 1 - specular)
        glossy = {"type": "roughconductor", "material": "none", "distribution": "ggx",
                  "alpha": float(appearance.roughness)}
        return {"type": "blendbsdf", "weight": float(appearance.specular), "bsdf_0": diffuse, "bsdf_1": glossy}
    return diffuse


def _mesh(mi, name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, bsdf):
    props = mi.Properties()
    props["bsdf"] = bsdf
    mesh = mi.Mesh(name, len(vertices), len(faces), props=props, has_vertex_normals=True)
    params = mi.traverse(mesh)
    floats = type(params["vertex_positions"])
    params["vertex_positions"] = floats(vertices.astype(np.float32).ravel())
    params["vertex_normals"] = floats(vertex_normals_np(vertices, faces).astype(np.float32).ravel())
    params["faces"] = type(params["faces"])(faces.astype(np.uint32).ravel())
    params.update()
    mesh.add_attribute("vertex_color", 3, floats(colors.astype(np.float32).ravel()))
    return mesh


def _lights_and_ground(mi, appearance: Appearance, centre: np.ndarray, radius: float, low: float,
                       reach: float, extent: float) -> dict:
    items = {}
    if max(appearance.light) > 0.0:
        items["sun"] = {"type": "directional", "direction": list(appearance.light_direction),
                        "irradiance": _rgb(np.asarray(appearance.light) * math.pi)}
    if max(appearance.ambient) > 0.0:
        items["sky"] = {"type": "constant", "radiance": _rgb(appearance.ambient)}
    area = appearance.area_light
    if area is not None:
        direction = np.asarray(area.direction, dtype=np.float64)
        origin = centre + direction / np.linalg.norm(direction) * area.distance * radius
        half = 0.5 * area.size * radius
        to_world = _frame_towards(origin, centre) @ _translate_scale(np.zeros(3), (half, half, 1.0))
        radiance = np.asarray(area.strength) * math.pi * area.distance ** 2 / area.size ** 2
        items["panel"] = {"type": "rectangle", "to_world": mi.ScalarTransform4f(to_world.tolist()),
                          "emitter": {"type": "area", "radiance": _rgb(radiance)}}
    ground = appearance.ground
    if ground is not None:
        height = low if ground.height is None else float(ground.height)
        half = reach if ground.size is None else 0.5 * ground.size * extent
        # the rectangle spans [-1, 1]^2 in its XY plane facing +Z; turn +Z to +Y (-90 deg about X)
        turn = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
        to_world = _translate_scale((centre[0], height, centre[2]), 1.0) @ turn @ _translate_scale(np.zeros(3),
                                                                                                     (half, half, 1.0))
        repeats = half / ground.checker  # one uv period holds two squares; uv spans the side 2 * half
        to_uv = np.diag([repeats, repeats, 1.0, 1.0])
        items["ground"] = {"type": "rectangle", "to_world": mi.ScalarTransform4f(to_world.tolist()),
                           "bsdf": {"type": "diffuse", "reflectance": {
                               "type": "checkerboard", "color0": _rgb(ground.color_a), "color1": _rgb(ground.color_b),
                               "to_uv": mi.ScalarTransform4f(to_uv.tolist())}}}
    return items


def render_mitsuba(vertices, faces, colors=None, camera=None, size=(64, 64), appearance: Appearance | None = None,
                   spp: int = 64, seed: int = 0, max_depth: int = 5, return_alpha: bool = False):
    """Path trace ``vertices`` ``[F, V, 3]`` (or ``[V, 3]``; world, Y up) with ``faces`` ``[T, 3]``.

    ``colors``: per-vertex albedo ``[V, 3]`` or ``[F, V, 3]`` (default grey 0.7); ``camera``: a wsim
    :class:`~wsim.render.camera.Camera` (one, or one per frame); ``size``: ``(H, W)`` or an int;
    ``appearance``: default :meth:`Appearance.matched` (wsim's default light on white); ``spp`` samples
    per pixel; frame ``k`` uses the sampler seed ``seed * 100003 + k``; ``max_depth``: longest light
    path (2 = direct light only). Returns float32 linear RGB ``[F, H, W, 3]`` (in [0, 1] where the
    lights are in the ranges of :func:`~wsim.render.appearance.sample_appearance`; not clipped), and
    with ``return_alpha`` also the alpha ``[F, H, W]``: the covered fraction of each pixel (the object,
    and the ground or area light when in view).
    """
    if camera is None:
        raise ParameterError("render_mitsuba needs a camera (wsim.render.Camera)")
    appearance = appearance if appearance is not None else Appearance.matched()
    H, W = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if H < 1 or W < 1:
        raise ParameterError(f"image size must be positive, got {(H, W)}")
    if int(spp) < 1 or int(max_depth) < 1:
        raise ParameterError(f"spp and max_depth must be >= 1, got {spp}, {max_depth}")
    verts = _numpy(vertices, "vertices")
    verts = verts[None] if verts.ndim == 2 else verts
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ParameterError(f"vertices must have shape [F, V, 3] or [V, 3], got {verts.shape}")
    tris = np.asarray(faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces)
    if tris.ndim != 2 or tris.shape[-1] != 3 or tris.dtype.kind not in "iu":
        raise ParameterError(f"faces must be integers [T, 3], got {tris.shape} {tris.dtype}")
    if tris.size and (tris.min() < 0 or tris.max() >= verts.shape[1]):
        raise ParameterError(f"face indices must lie in [0, {verts.shape[1] - 1}]")
    cols = np.broadcast_to(DEFAULT_COLOR, (verts.shape[1], 3)) if colors is None else _numpy(colors, "colors")
    cols = cols[None] if cols.ndim == 2 else cols
    if cols.shape[1:] != (verts.shape[1], 3):
        raise ParameterError(f"colors must have shape [V, 3] or [F, V, 3] with V = {verts.shape[1]}, got {cols.shape}")
    poses = sensor_poses(camera, (H, W))
    frames = max(len(verts), len(poses))
    if len(poses) not in (1, frames) or len(verts) not in (1, frames):
        raise ParameterError(f"the camera has {len(poses)} frames and the vertices {len(verts)}; they must match or be 1")
    lo, hi = verts.reshape(-1, 3).min(0), verts.reshape(-1, 3).max(0)
    centre, radius = 0.5 * (lo + hi), max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)

    mi = _mitsuba()
    # the ground reaches far beyond the scene and the cameras, so that it meets the horizon
    eyes = np.stack([p["to_world"][:3, 3] for p in poses])
    reach = 50.0 * max(radius, float(np.linalg.norm(eyes - centre, axis=1).max()))
    extent = max(float(hi[0] - lo[0]), float(hi[2] - lo[2]), 1e-3)
    lights = _lights_and_ground(mi, appearance, centre, radius, float(lo[1]), reach, extent)
    bsdf = mi.load_dict(_object_bsdf(appearance))
    near = float(camera.near)
    far = max(float(camera.far), 4.0 * reach)
    rgb = np.empty((frames, H, W, 3), dtype=np.float32)
    alpha = np.empty((frames, H, W), dtype=np.float32)
    for k in range(frames):
        pose = poses[min(k, len(poses) - 1)]
        scene = mi.load_dict({
            "type": "scene",
            "integrator": {"type": "path", "max_depth": int(max_depth), "hide_emitters": True},
            "sensor": {"type": "perspective", "fov": pose["fov_y"], "fov_axis": "y", "near_clip": near,
                       "far_clip": far, "to_world": mi.ScalarTransform4f(pose["to_world"].tolist()),
                       "sampler": {"type": "independent", "sample_count": int(spp)},
                       "film": {"type": "hdrfilm", "width": W, "height": H, "pixel_format": "rgba",
                                "rfilter": {"type": "box"}}},
            "object": _mesh(mi, "object", verts[min(k, len(verts) - 1)], tris, cols[min(k, len(cols) - 1)], bsdf),
            **lights,
        })
        image = np.array(mi.render(scene, spp=int(spp), seed=(int(seed) * 100003 + k) % 2 ** 32), dtype=np.float32)
        rgb[k], alpha[k] = image[..., :3], image[..., 3]
    if appearance.background is not None:
        # the film's colour is premultiplied by its alpha (hidden emitters give 0 and alpha 0)
        rgb += (1.0 - alpha[..., None]) * np.asarray(appearance.background, dtype=np.float32)
    return (rgb, alpha) if return_alpha else rgb

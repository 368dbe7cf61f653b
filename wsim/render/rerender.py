"""``wsim render``: draw a saved rollout again, with wsim's renderer or path traced by Mitsuba 3.

A source is either a ``rollout.npz`` written by ``wsim simulate`` (or a folder holding one), framed
like ``wsim simulate``'s video (:meth:`Camera.framing`, its light and plain ground), or a ``wsim run``
instance folder: its ``results.json`` gives the camera, image size and render settings of the run, and
``target_rollout.npz`` / ``estimate_rollout.npz`` the vertices. The output folder gets ``frames/``
(PNG), ``render.mp4`` and ``appearance.json`` (the appearance actually used, the camera, the renderer
and its settings), each written atomically.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..errors import ConfigError
from .appearance import KINDS, VIDEO_LIGHT_DIRECTION, Appearance, sample_appearance

RENDERERS = ("wsim", "mitsuba")
ROLLOUTS = ("target", "estimate")


@dataclass
class Source:
    """What to draw: vertices ``[F, V, 3]``, faces, colours, frame rate, camera and the settings of the
    renderer that drew it first (``render``: shading, background, sigma, gamma)."""

    path: Path
    kind: str  # "rollout" or "run"
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    fps: float
    camera: object
    size: tuple
    render: SimpleNamespace
    ground_height: float | None = None
    lights: list = field(default_factory=list)


def display_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, particle_start: int):
    """Vertex buffer, faces and colours for display: particles that no face uses are drawn as small
    spheres (:class:`~wsim.render.meshes.ParticleGlyphs`, radius 2 % of the scene size) so that
    mass-spring systems show up in videos."""
    from .meshes import ParticleGlyphs

    extent = float(np.ptp(vertices.reshape(-1, 3), axis=0).max()) or 1.0
    glyphs = ParticleGlyphs(faces, vertices.shape[1], particle_start, 0.02 * extent)
    if not glyphs.count:
        return vertices, faces, colors
    return (glyphs.vertices(torch.as_tensor(vertices, dtype=torch.float32)).numpy(), glyphs.faces.numpy(),
            glyphs.colors(torch.as_tensor(colors, dtype=torch.float32)).numpy())


def _read_rollout(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read rollout '{path}': {error}") from None
    missing = [key for key in ("vertices", "faces") if key not in arrays]
    if missing:
        raise ConfigError(f"rollout '{path}' has no {', '.join(missing)} (not a wsim rollout.npz)")
    vertices = arrays["vertices"].astype(np.float32)
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ConfigError(f"rollout '{path}': vertices must be [F, V, 3], got {vertices.shape}")
    colors = arrays.get("colors")
    arrays["colors"] = (np.broadcast_to(np.float32([0.35, 0.55, 0.85]), (vertices.shape[1], 3)).copy()
                        if colors is None else colors.astype(np.float32))
    times = arrays.get("times")
    arrays["fps"] = float(1.0 / (times[1] - times[0])) if times is not None and len(times) > 1 else 30.0
    arrays["vertices"] = vertices
    return arrays


def load_source(path, rollout: str = "target") -> Source:
    """The :class:`Source` at ``path`` (see the module docstring); ``rollout`` picks the target or the
    estimate of a run."""
    from .camera import Camera
    from .shading import DirectionalLight

    path = Path(path)
    if rollout not in ROLLOUTS:
        raise ConfigError(f"rollout '{rollout}' is not one of {', '.join(ROLLOUTS)}")
    if not path.exists():
        raise ConfigError(f"'{path}' does not exist; give a rollout.npz (wsim simulate) or a wsim run instance folder")
    if path.is_dir() and (path / "results.json").exists():
        return _run_source(path, rollout)
    if path.is_dir() and (path / "rollout.npz").exists():
        path = path / "rollout.npz"
    if path.is_dir():
        instances = sorted(p.name for p in path.glob("instance_*") if (p / "results.json").exists())
        hint = (f"; it holds several instances, give one of them: {', '.join(instances[:5])}" if instances else "")
        raise ConfigError(f"'{path}' holds neither results.json (a wsim run instance) nor rollout.npz (wsim simulate)"
                          + hint)
    if path.suffix != ".npz":
        raise ConfigError(f"'{path}' is not a .npz rollout; give a rollout.npz (wsim simulate) or a wsim run instance folder")
    data = _read_rollout(path)
    start = int(data["body_vertex_start"][-1]) if "body_vertex_start" in data and len(data["body_vertex_start"]) else 0
    vertices, faces, colors = display_mesh(data["vertices"], data["faces"].astype(np.int64), data["colors"], start)
    ground = float(data["ground_height"]) if "ground_height" in data else None
    camera = Camera.framing(torch.as_tensor(vertices))  # as render_rollout_video frames wsim simulate's video
    render = SimpleNamespace(shading="phong", background=(1.0, 1.0, 1.0), sigma=1e-5, gamma=1e-4)
    return Source(path, "rollout", vertices, faces, colors, data["fps"], camera, (256, 256), render, ground,
                  [DirectionalLight(direction=VIDEO_LIGHT_DIRECTION)])


def _run_source(folder: Path, rollout: str) -> Source:
    from .camera import Camera

    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read '{folder / 'results.json'}': {error}") from None
    cam = results.get("camera")
    if not isinstance(cam, dict) or not {"eye", "target", "up"} <= set(cam):
        raise ConfigError(f"'{folder / 'results.json'}' records no camera (eye, target, up); rerun wsim run")
    npz = folder / f"{rollout}_rollout.npz"
    if not npz.exists():
        other = "estimate" if rollout == "target" else "target"
        hint = (f" (this run has {other}_rollout.npz: --rollout {other})" if (folder / f"{other}_rollout.npz").exists()
                else "; it is written by wsim run, rerun it")
        raise ConfigError(f"'{npz}' does not exist{hint}")
    data = _read_rollout(npz)
    fov = cam.get("fov_y", cam.get("fov", 45.0))
    camera = Camera.look_at(cam["eye"], cam["target"], cam["up"], fov_y=float(fov), near=float(cam.get("near", 0.1)),
                            far=float(cam.get("far", 100.0)))
    size = cam.get("resolution") or results.get("image_size") or [64, 64]
    size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    r = (results.get("config") or {}).get("render") or {}
    render = SimpleNamespace(shading=r.get("shading", "phong"), background=tuple(r.get("background", (1.0, 1.0, 1.0))),
                             sigma=float(r.get("sigma", 1e-4)), gamma=float(r.get("gamma", 1e-4)))
    return Source(folder, "run", data["vertices"], data["faces"].astype(np.int64), data["colors"], data["fps"],
                  camera, size, render)


def appearance_for(source: Source, kind: str, seed: int) -> Appearance:
    """The matched appearance of ``source``, or a draw of ``kind`` (:func:`sample_appearance`) from
    ``numpy.random.default_rng(seed)``."""
    base = Appearance.matched(source.render, lights=source.lights or None, ground_height=source.ground_height)
    return sample_appearance(np.random.default_rng(seed), kind, base)


def render_wsim(source: Source, appearance: Appearance, size, device: str = "cpu", batch: int = 16) -> np.ndarray:
    """``source`` drawn by wsim's soft rasteriser with the parts of ``appearance`` it can express (a
    directional light, ambient, background, a plain ground; Phong's specular as wsim's default)."""
    from .meshes import Mesh, concat_meshes, grid_plane
    from .renderer import SoftRenderer
    from .shading import DirectionalLight, Material

    a = appearance
    ground = a.ground
    unsupported = [name for name, bad in (
        ("an area light", a.area_light is not None), ("a uniform albedo", a.albedo is not None),
        ("a glossy lobe", a.specular > 0), ("a transparent background", a.background is None),
        ("a checkerboard ground", ground is not None and tuple(ground.color_a) != tuple(ground.color_b))) if bad]
    if unsupported:
        raise ConfigError(f"the wsim renderer cannot draw {', '.join(unsupported)}; use --renderer mitsuba")
    verts = torch.as_tensor(source.vertices, device=device)
    meshes = [Mesh(verts, torch.as_tensor(source.faces, device=device), colors=torch.as_tensor(source.colors, device=device))]
    if ground is not None:
        lo, hi = verts.reshape(-1, 3).min(0).values, verts.reshape(-1, 3).max(0).values
        centre = 0.5 * (lo + hi)
        height = float(lo[1]) if ground.height is None else ground.height
        side = float(max((hi - lo)[0], (hi - lo)[2], 1e-3)) * (ground.size or 3.0)
        gv, gf, _ = grid_plane(side, divisions=4, height=height, center=(float(centre[0]), float(centre[2])), device=device)
        meshes.append(Mesh(gv, gf, colors=torch.tensor(ground.color_a, device=device).expand(gv.shape[0], 3)))
    all_v, all_f, all_c, _ = concat_meshes(meshes)
    light = DirectionalLight(direction=a.light_direction, color=a.light, intensity=1.0)
    # the light's strength carries wsim's diffuse coefficient kd; the highlight keeps its ratio ks / kd
    default = Material()
    specular = tuple(np.asarray(default.specular, dtype=float) / np.asarray(default.diffuse, dtype=float))
    renderer = SoftRenderer(source.camera, image_size=size, sigma=source.render.sigma, gamma=source.render.gamma,
                            background=a.background, shading=source.render.shading, lights=[light],
                            material=Material(ambient=a.ambient, diffuse=(1.0, 1.0, 1.0), specular=specular),
                            supersample=getattr(source.render, "supersample", 1))
    chunks = []
    with torch.no_grad():
        for start in range(0, all_v.shape[0], batch):
            colors = all_c if all_c.shape[0] == 1 else all_c[start:start + batch]
            chunks.append(renderer(all_v[start:start + batch], all_f, colors=colors)[..., :3].cpu().numpy())
    return np.concatenate(chunks)


def render_command(path, renderer: str = "mitsuba", out=None, spp: int = 64, appearance: str = "matched",
                   seed: int = 0, resolution: int | None = None, rollout: str = "target", device: str = "cpu",
                   max_depth: int = 5) -> dict:
    """Render the source at ``path`` and write ``frames/``, ``render.mp4`` and ``appearance.json`` into
    ``out`` (default: ``render-<renderer>-<appearance>`` beside the rollout / inside the run folder).
    Returns the record written to ``appearance.json`` plus the paths."""
    from ..export import write_json
    from .video import write_frames, write_video

    if renderer not in RENDERERS:
        raise ConfigError(f"renderer '{renderer}' is not one of {', '.join(RENDERERS)}")
    if appearance not in KINDS:
        raise ConfigError(f"appearance '{appearance}' is not one of {', '.join(KINDS)}")
    if spp < 1 or (resolution is not None and resolution < 1):
        raise ConfigError(f"--spp and --resolution must be >= 1, got {spp}, {resolution}")
    source = load_source(path, rollout)
    size = source.size if resolution is None else (int(resolution), int(resolution))
    look = appearance_for(source, appearance, seed)
    started = time.perf_counter()
    settings = {}
    if renderer == "mitsuba":
        from .mitsuba import mitsuba_variant, mitsuba_version, render_mitsuba

        images = render_mitsuba(source.vertices, source.faces, source.colors, source.camera, size, look, spp=spp,
                                seed=seed, max_depth=max_depth)
        settings = {"spp": spp, "max_depth": max_depth, "variant": mitsuba_variant(), "version": mitsuba_version(),
                    "integrator": "path", "pixel_filter": "box"}
    else:
        images = render_wsim(source, look, size, device)
        settings = {"sigma": source.render.sigma, "gamma": source.render.gamma, "shading": source.render.shading}
    elapsed = time.perf_counter() - started
    folder = Path(out) if out is not None else (
        source.path if source.kind == "run" else source.path.parent) / f"render-{renderer}-{appearance}"
    folder.mkdir(parents=True, exist_ok=True)
    # frames go to a fresh folder that replaces the old one, so no frame of an earlier render survives
    staging = Path(tempfile.mkdtemp(prefix=".frames.", dir=folder))
    try:
        write_frames(images, staging)
        shutil.rmtree(folder / "frames", ignore_errors=True)
        staging.rename(folder / "frames")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    video = write_video(images, folder / "render.mp4", fps=source.fps)
    cam = source.camera
    eye = cam.position()[0].double()
    view = cam.view[0].double()
    record = {
        "source": str(source.path), "source_kind": source.kind, "rollout": rollout if source.kind == "run" else None,
        "renderer": renderer, "settings": settings, "appearance_kind": appearance, "seed": seed,
        "appearance": look.to_dict(), "image_size": list(size), "frames": int(len(images)), "fps": source.fps,
        "camera": {"eye": eye.tolist(), "target": (eye - view[2, :3]).tolist(), "up": view[1, :3].tolist(),
                   "fov_y": float(cam.fov_y.reshape(-1)[0]), "near": cam.near, "far": cam.far},
        "render_time_s": elapsed, "seconds_per_frame": elapsed / max(len(images), 1),
    }
    write_json(folder / "appearance.json", record)
    return {**record, "folder": str(folder), "video": str(video), "frames_dir": str(folder / "frames")}

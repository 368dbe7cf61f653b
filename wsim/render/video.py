"""Writing rendered frames: PNG sequences, MP4 (imageio-ffmpeg) and GIF, always atomically.

Every file is first written to a temporary file in the destination folder and then moved into place
with :func:`wsim.export.atomic_path`, so that a reader never sees a half-written image or video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, ParameterError
from ..export import atomic_path

VIDEO_SUFFIXES = (".mp4", ".gif")


def to_uint8(images) -> np.ndarray:
    """``[F, H, W, 3 or 4]`` float images in [0, 1] (torch or numpy; ``uint8`` passes through) ->
    ``uint8`` RGB ``[F, H, W, 3]``.
    The renderer's RGB is already composited over its background, so alpha is dropped."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        arr = images if images.ndim == 4 else images[None]
        if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
            raise ParameterError(f"images must have shape [F, H, W, 3 or 4], got {images.shape}")
        return np.ascontiguousarray(arr[..., :3])
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
        raise ParameterError(f"images must have shape [F, H, W, 3 or 4], got {arr.shape}")
    return (np.clip(arr[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(image, path) -> Path:
    """Write one ``[H, W, 3|4]`` image (float in [0, 1] or ``uint8``) as PNG, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(image)[0], extension=".png")
    return path


def write_frames(images, folder, prefix: str = "frame") -> list[Path]:
    """Write ``[F, H, W, C]`` images as ``folder/prefix_00000.png``..., each atomically."""
    folder = Path(folder)
    frames = to_uint8(images)
    digits = max(5, len(str(len(frames))))
    return [write_png(frame, folder / f"{prefix}_{i:0{digits}d}.png") for i, frame in enumerate(frames)]


def write_video(images, path, fps: float = 30.0) -> Path:
    """Write ``[F, H, W, C]`` images as an MP4 (H.264 through imageio-ffmpeg) or a GIF, chosen by the
    suffix of ``path``; atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"video path '{path}' must end in one of {', '.join(VIDEO_SUFFIXES)}")
    if not fps > 0:
        raise ParameterError(f"video fps must be > 0, got {fps}")
    frames = to_uint8(images)
    with atomic_path(path) as tmp:
        if suffix == ".mp4":
            # H.264 with yuv420p needs even dimensions: pad by repeating the last row/column
            h, w = frames.shape[1], frames.shape[2]
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=1) as writer:
                for frame in frames:
                    writer.append_data(frame)
        else:
            imageio.mimsave(tmp, list(frames), format="GIF", duration=1.0 / fps, loop=0)
    return path


def render_rollout_video(vertices: torch.Tensor, faces: torch.Tensor, out_path, camera=None, image_size=(256, 256),
                         colors=None, fps: float = 30.0, ground_height: float | None = None,
                         ground_color=(0.55, 0.55, 0.5), background=(1.0, 1.0, 1.0), shading: str = "phong",
                         sigma: float = 1e-5, frames_dir=None, batch: int = 16, backend: str = "auto"):
    """Render a rollout and write it as a video (and optionally PNG frames); returns the video path.

    ``vertices [F, V, 3]`` (world, Y up) with ``faces [T, 3]``; ``colors`` ``[V, 3]`` or ``[F, V, 3]``
    (default a light blue). ``camera=None`` frames the bounding box of the whole rollout from an
    elevated three-quarter view (:meth:`Camera.framing`). ``ground_height`` adds a grey ground square
    at that height under the scene. ``frames_dir`` also writes ``frame_XXXXX.png`` there. Rendering
    runs without gradients, ``batch`` frames at a time, on the vertices' device.
    """
    from .camera import Camera
    from .renderer import SoftRenderer
    from .meshes import Mesh, concat_meshes, grid_plane
    from .shading import DirectionalLight

    verts = vertices.detach()
    if verts.dim() == 2:
        verts = verts.unsqueeze(0)
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ParameterError(f"rollout vertices must have shape [F, V, 3], got {tuple(vertices.shape)}")
    device = verts.device
    if colors is None:
        colors = torch.tensor([0.35, 0.55, 0.85], device=device).expand(verts.shape[1], 3)
    meshes = [Mesh(verts, faces.to(device), colors=colors.to(device))]
    if ground_height is not None:
        lo = verts.reshape(-1, 3).min(0).values
        hi = verts.reshape(-1, 3).max(0).values
        centre = 0.5 * (lo + hi)
        size = float(max((hi - lo)[0], (hi - lo)[2], 1e-3)) * 3.0
        gv, gf, _ = grid_plane(size, divisions=4, height=ground_height, center=(float(centre[0]), float(centre[2])),
                               device=device)
        meshes.append(Mesh(gv, gf, colors=torch.tensor(ground_color, device=device).expand(gv.shape[0], 3)))
    all_v, all_f, all_c, _ = concat_meshes(meshes)
    if camera is None:
        camera = Camera.framing(verts)
    renderer = SoftRenderer(camera, image_size=image_size, sigma=sigma, background=background, shading=shading,
                            backend=backend, lights=[DirectionalLight(direction=(-0.4, -1.0, -0.6))])
    single_camera = camera.frames() == 1
    chunks = []
    with torch.no_grad():
        for start in range(0, all_v.shape[0], max(1, int(batch))):
            stop = min(start + int(batch), all_v.shape[0])
            cam = camera if single_camera else Camera(camera.view[start:stop], fov_y=camera.fov_y, near=camera.near,
                                                      far=camera.far)
            colors_chunk = all_c if all_c.shape[0] == 1 else all_c[start:stop]
            chunks.append(renderer(all_v[start:stop], all_f, colors=colors_chunk, camera=cam).cpu())
    images = torch.cat(chunks, 0)
    if frames_dir is not None:
        write_frames(images, frames_dir)
    return write_video(images, out_path, fps=fps)

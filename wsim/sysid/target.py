"""Reading a target video (an .mp4/.gif file or a folder of image frames) for ``wsim run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm")


def resolve_target_path(video: str, base: Path | None) -> Path:
    path = Path(video)
    if not path.is_absolute() and not path.exists() and base is not None and (base / path).exists():
        path = base / path
    if not path.exists():
        raise ConfigError(f"target.video '{video}' does not exist (give an .mp4/.gif file or a folder of "
                          "PNG/JPG frames; relative paths are read from the working folder or the config's folder)")
    return path


def read_frames(path: Path) -> np.ndarray:
    """All frames of a video file or an image folder as float32 RGB ``[F, H, W, 3]`` in [0, 1]."""
    import imageio.v2 as imageio

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"target.video folder '{path}' holds no PNG/JPG frames")
        frames = [np.asarray(imageio.imread(p)) for p in files]
        shapes = {f.shape[:2] for f in frames}
        if len(shapes) != 1:
            raise ConfigError(f"target.video folder '{path}': frames have different sizes {sorted(shapes)}")
    else:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ConfigError(f"target.video '{path}' must be a folder of frames or a video "
                              f"({', '.join(VIDEO_SUFFIXES)})")
        try:
            reader = imageio.get_reader(path)
            frames = [np.asarray(frame) for frame in reader]
            reader.close()
        except Exception as error:  # imageio raises many types for unreadable files
            raise ConfigError(f"target.video '{path}' could not be read: {error}") from None
        if not frames:
            raise ConfigError(f"target.video '{path}' holds no frames")
    out = []
    for frame in frames:
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        frame = frame[..., :3]
        scale = 65535.0 if frame.dtype == np.uint16 else 255.0 if frame.dtype == np.uint8 else 1.0
        out.append(frame.astype(np.float32) / scale)
    return np.stack(out)


def load_target(video: str, base: Path | None, frames: int, size: tuple[int, int]) -> np.ndarray:
    """Read the target and check it against the experiment: ``frames`` frames of ``size`` (H, W)."""
    path = resolve_target_path(video, base)
    images = read_frames(path)
    h, w = images.shape[1:3]
    if (h, w) != tuple(size):
        raise ConfigError(f"target.video '{video}': frames are {w}x{h} pixels but the camera renders "
                          f"{size[1]}x{size[0]} (render.resolution); resize the video or set "
                          f"render.resolution: [{h}, {w}]")
    if len(images) != frames:
        raise ConfigError(f"target.video '{video}' has {len(images)} frames but the experiment simulates "
                          f"{frames} (scene.sim.frames); set scene.sim.frames={len(images)} or trim the video")
    return images

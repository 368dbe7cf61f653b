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
        frames = [_colour(_read_image(p), f"target.video frame '{p}'") for p in files]
        shapes = {f.shape[:2] for f in frames}
        if len(shapes) != 1:
            raise ConfigError(f"target.video folder '{path}': frames have different sizes {sorted(shapes)}")
    else:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ConfigError(f"target.video '{path}' must be a folder of frames or a video "
                              f"({', '.join(VIDEO_SUFFIXES)})")
        if path.stat().st_size == 0:
            raise ConfigError(f"target.video '{path}' is empty (0 bytes)")
        try:
            reader = imageio.get_reader(path)
            raw = [np.asarray(frame) for frame in reader]
            reader.close()
        except Exception as error:  # imageio raises many types for unreadable files
            raise ConfigError(f"target.video '{path}' could not be read as a video: {_reason(error)}") from None
        if not raw:
            raise ConfigError(f"target.video '{path}' holds no frames")
        frames = [_colour(frame, f"target.video '{path}' frame {k}") for k, frame in enumerate(raw)]
    out = []
    for frame in frames:
        scale = 65535.0 if frame.dtype == np.uint16 else 255.0 if frame.dtype == np.uint8 else 1.0
        out.append(frame.astype(np.float32) / scale)
    return np.stack(out)


def _reason(error: Exception) -> str:
    # imageio's "could not find a backend" message suggests installing plugins, which does not help a
    # broken file: keep its first line only
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_image(file: Path) -> np.ndarray:
    import imageio.v2 as imageio

    if file.stat().st_size == 0:
        raise ConfigError(f"target.video frame '{file}' is empty (0 bytes)")
    try:
        return np.asarray(imageio.imread(file))
    except Exception as error:  # PIL and imageio raise SyntaxError, OSError, ValueError... on bad files
        raise ConfigError(f"target.video frame '{file}' is not a readable {file.suffix[1:].upper()} image "
                          f"(corrupt or truncated?): {_reason(error)}") from None


def _colour(frame: np.ndarray, where: str) -> np.ndarray:
    """The RGB channels of an image: grey frames are refused (the renderer renders colour, and a grey
    level compared with RGB biases the loss), RGBA only with an opaque alpha channel."""
    channels = 1 if frame.ndim == 2 else frame.shape[-1]
    if frame.ndim not in (2, 3) or channels not in (1, 2, 3, 4):
        raise ConfigError(f"{where} has shape {frame.shape}: expected an RGB image")
    if channels in (1, 2):
        raise ConfigError(f"{where} is greyscale ({channels} channel{'s' if channels == 2 else ''}) but the "
                          "renderer renders colour (3 channels): save the target frames as RGB")
    if channels == 4:
        alpha = frame[..., 3]
        opaque = np.iinfo(frame.dtype).max if np.issubdtype(frame.dtype, np.integer) else 1.0
        if np.any(alpha != opaque):
            raise ConfigError(f"{where} has transparent pixels (alpha < 1 at {int(np.sum(alpha != opaque))} "
                              "pixels): the renderer renders opaque colour over render.background; flatten "
                              "the frames onto that background and save them as RGB")
        frame = frame[..., :3]
    return frame


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

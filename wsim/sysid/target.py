"""Reading a target video (an .mp4/.gif file or a folder of image frames) for ``wsim run`` and bringing
it to what the renderer draws: RGB in [0, 1] over ``render.background`` at ``render.resolution``.

Grey frames are replicated to RGB, an alpha channel is coverage (composited over the background, and
kept as the target's object mask), frames of another size but the same aspect ratio are resampled
(area averaging when they shrink). Another aspect ratio or another frame count than ``scene.sim.frames``
is an error. What was done is recorded under ``target`` in ``results.json``."""

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


def read_raw(path: Path) -> list[np.ndarray]:
    """The decoded frames of a video file or an image folder as stored (grey, grey + alpha, RGB or RGBA;
    uint8, uint16 or float)."""
    import imageio.v2 as imageio

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"target.video folder '{path}' holds no PNG/JPG frames")
        frames = [_checked(_read_image(p), f"target.video frame '{p}'") for p in files]
        shapes = {f.shape[:2] for f in frames}
        if len(shapes) != 1:
            raise ConfigError(f"target.video folder '{path}': frames have different sizes {sorted(shapes)}")
        return frames
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
    return [_checked(frame, f"target.video '{path}' frame {k}") for k, frame in enumerate(raw)]


def read_frames(path: Path, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """All frames of a video file or an image folder as float32 RGB ``[F, H, W, 3]`` in [0, 1] (grey
    frames replicated to RGB, transparent ones composited over ``background``)."""
    return np.stack([colour(frame, background)[0] for frame in read_raw(Path(path))])


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


def _checked(frame: np.ndarray, where: str) -> np.ndarray:
    channels = 1 if frame.ndim == 2 else frame.shape[-1]
    if frame.ndim not in (2, 3) or channels not in (1, 2, 3, 4):
        raise ConfigError(f"{where} has shape {frame.shape}: expected a grey, grey + alpha, RGB or RGBA image")
    return frame


def _unit(values: np.ndarray) -> np.ndarray:
    scale = 65535.0 if values.dtype == np.uint16 else 255.0 if values.dtype == np.uint8 else 1.0
    return values.astype(np.float32) / np.float32(scale)


def colour(frame: np.ndarray, background) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """A frame as the renderer draws it: float32 RGB ``[H, W, 3]`` in [0, 1], its alpha (None without an
    alpha channel) and the conversions made. Grey is replicated to the three channels (the renderer's
    colours are RGB; a grey video of a grey scene compares as its RGB one). Alpha is coverage: the
    colour is composited over ``background`` (``render.background``) as the soft renderer composites its
    own coverage, ``alpha * colour + (1 - alpha) * background`` (straight, not premultiplied, colour, as
    PNG stores it)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    channels = frame.shape[-1]
    done = []
    alpha = None
    if channels in (2, 4):
        alpha = _unit(frame[..., -1])
        frame = frame[..., :-1]
    rgb = _unit(frame)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
        done.append("grey replicated to RGB")
    if alpha is not None:
        if np.all(alpha == 1.0):
            done.append("opaque alpha channel dropped")
        else:
            under = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
            rgb = alpha[..., None] * rgb + (np.float32(1.0) - alpha[..., None]) * under
            done.append("alpha composited over render.background")
    return np.ascontiguousarray(rgb, dtype=np.float32), alpha, done


def same_aspect(source: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether ``source`` (H, W) scaled to ``size``'s height gives its width to within a pixel (and the other
    way round): sizes that only rounding keeps from one aspect ratio."""
    (h, w), (hh, ww) = source, size
    return abs(w * hh / h - ww) < 1.0 and abs(h * ww / w - hh) < 1.0


def resample(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[F, H, W, C]`` images resampled to ``size`` (H, W): area averaging where they shrink (each output
    pixel the mean of the input pixels it covers: the low-pass filter that keeps the mean and averages
    the noise down), bilinear where they grow."""
    import torch
    import torch.nn.functional as functional

    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if tensor.shape[2] >= size[0] and tensor.shape[3] >= size[1]:
        out = functional.interpolate(tensor, size=tuple(size), mode="area")
    else:
        out = functional.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def load_target(video: str, base: Path | None, frames: int, size: tuple[int, int], background=(1.0, 1.0, 1.0)):
    """Read the target and bring it to the experiment: ``frames`` frames of ``size`` (H, W) in RGB over
    ``background``. Returns ``(images [F, H, W, 3], alpha [F, H, W] or None, record)``: alpha when every
    frame had an alpha channel; ``record`` (for ``results.json``'s ``target``) says what was read and done."""
    path = resolve_target_path(video, base)
    raw = read_raw(path)
    h, w = raw[0].shape[:2]
    size = (int(size[0]), int(size[1]))
    if (h, w) != size and not same_aspect((h, w), size):
        raise ConfigError(f"target.video '{video}': frames are {w}x{h} pixels but the camera renders "
                          f"{size[1]}x{size[0]} (render.resolution), another aspect ratio ({w / h:.4g} against "
                          f"{size[1] / size[0]:.4g}); frames are resampled only to a size of their own aspect "
                          f"ratio: crop the video or set render.resolution: [{h}, {w}]")
    if len(raw) != frames:
        raise ConfigError(f"target.video '{video}' has {len(raw)} frames but the experiment simulates "
                          f"{frames} (scene.sim.frames); set scene.sim.frames={len(raw)} or trim the video")
    dtypes = sorted({str(frame.dtype) for frame in raw})
    converted = [colour(frame, background) for frame in raw]
    done = []
    for _, _, steps in converted:
        done += [step for step in steps if step not in done]
    images = np.stack([rgb for rgb, _, _ in converted])
    alpha = None
    alphas = [a for _, a, _ in converted if a is not None]
    # the alpha is the object's mask only where every frame has one and it is not opaque everywhere
    if len(alphas) == len(converted) and any(np.any(a < 1.0) for a in alphas):
        alpha = np.stack(alphas)
    del raw, converted
    if (h, w) != size:
        images = resample(images, size)
        if alpha is not None:
            alpha = resample(alpha[..., None], size)[..., 0]
        shrinks = h >= size[0] and w >= size[1]
        done.append(f"resampled from {w}x{h} to {size[1]}x{size[0]} pixels "
                    f"({'area averaging' if shrinks else 'bilinear'})")
    bits = {"uint8": 8, "uint16": 16}
    record = {"source": "video", "path": str(path), "frames": len(images), "original_size": [int(h), int(w)],
              "size": list(size), "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
              "bits": bits.get(dtypes[0]) if len(dtypes) == 1 else None, "conversions": done,
              "alpha_channel": alpha is not None}
    return np.ascontiguousarray(images, dtype=np.float32), alpha, record

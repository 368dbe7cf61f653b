"""A camera file for ``render.camera``: the ``camera`` record of a previous run's ``results.json``, or a
plain JSON/YAML mapping with the same keys.

``wsim run`` writes the camera it rendered with into ``results.json`` (``camera``: ``eye``, ``target``,
``up``, ``fov_y``, ``near``, ``far``, ``resolution`` [H, W] and the ``view_matrix``), whichever
``render.camera.mode`` chose it. ``--set render.camera=run/results.json`` reads that record back as
``render.camera`` keys of ``mode: look_at`` (see :class:`wsim.sysid.config.RenderConfig`), so that a video
saved from that run, or filmed with that camera, can be estimated from with the same camera. The
loaded values, not the path, are what the config holds (and what its fingerprint sees).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from ..errors import ConfigError

#: the keys a camera file must give (the others take the ``render.camera`` defaults)
REQUIRED = ("eye", "target", "fov_y")
#: keys of a camera record that are not ``render.camera`` keys: ``resolution`` is checked against
#: ``render.resolution``, ``view_matrix`` is what ``eye``/``target``/``up`` rebuild
RECORD_ONLY = ("resolution", "view_matrix")


def resolve_camera_path(name: str, base: Path | None) -> Path:
    """``name`` as given (absolute, or relative to the working folder), else relative to ``base`` (the
    config's folder): the order ``target.video`` is resolved in."""
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists() and base is not None and (Path(base) / path).exists():
        path = Path(base) / path
    if not path.is_file():
        where = "" if base is None else f" or from the config's folder '{base}'"
        raise ConfigError(f"camera file '{name}' does not exist (give the results.json of a previous run "
                          f"or a JSON/YAML file with eye, target, up, fov_y, near, far; relative paths are read "
                          f"from the working folder{where})")
    return path


def read_camera_file(path: Path) -> dict:
    """The camera mapping of the file at ``path``: its ``camera`` entry when it has one (a results.json),
    else the whole mapping."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"camera file '{path}' could not be read: {error}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"camera file '{path}' is not valid JSON: {error}") from None
    else:
        from ..yaml12 import parse_yaml

        try:
            data = parse_yaml(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"camera file '{path}' is not valid JSON or YAML: {error}") from None
    if isinstance(data, dict) and "camera" in data:
        data = data["camera"]
        where = "its 'camera' entry"
    else:
        where = "it"
    if not isinstance(data, dict):
        raise ConfigError(f"camera file '{path}': {where} must be a mapping with eye, target, up, fov_y, "
                          f"near, far, got {type(data).__name__}")
    return data


def camera_keys(data: dict, path: Path, allowed) -> tuple[dict, list | None]:
    """The ``render.camera`` keys (``mode: look_at``) and the recorded resolution ``[H, W]`` (None when the
    file records none) of a camera mapping read from ``path``; ``allowed``: the ``render.camera`` keys."""
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ConfigError(f"camera file '{path}' lacks the camera key(s) {', '.join(missing)} (a camera "
                          f"file gives eye, target and fov_y, and may give up, near, far, resolution)")
    unknown = [key for key in data if key not in allowed and key not in RECORD_ONLY]
    if unknown:
        raise ConfigError(f"camera file '{path}': unknown camera key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(list(allowed) + list(RECORD_ONLY))}")
    mode = data.get("mode", "look_at")
    if mode != "look_at":
        raise ConfigError(f"camera file '{path}': mode must be look_at (a camera file gives the camera "
                          f"itself), got {mode!r}")
    keys = {key: value for key, value in data.items() if key not in RECORD_ONLY}
    keys["mode"] = "look_at"
    resolution = data.get("resolution")
    if resolution is not None:
        if isinstance(resolution, int) and not isinstance(resolution, bool):
            resolution = [resolution, resolution]
        if not (isinstance(resolution, list) and len(resolution) == 2 and
                all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resolution)):
            raise ConfigError(f"camera file '{path}': resolution must be [H, W] in pixels (positive "
                              f"integers), got {resolution!r}")
    return keys, resolution


def check_aspect(recorded: list, resolution, path: Path) -> None:
    """A camera's vertical field of view holds at any pixel count, but its horizontal one follows the
    aspect ratio: a render of another aspect ratio than the recorded one would be another camera."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else (int(resolution[0]), int(resolution[1]))
    rh, rw = int(recorded[0]), int(recorded[1])
    if not math.isclose(w / h, rw / rh, rel_tol=1e-9):
        raise ConfigError(f"camera file '{path}' records a camera of resolution [{rh}, {rw}] (H, W; aspect "
                          f"{rw / rh:.4g}) but render.resolution is [{h}, {w}] (aspect {w / h:.4g}): the "
                          f"horizontal field of view would differ; set render.resolution=[{rh}, {rw}] (or "
                          f"another size of aspect {rw / rh:.4g})")

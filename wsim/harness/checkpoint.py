"""What a result or checkpoint belongs to (a config fingerprint) and checkpoints that load safely.

A run folder may be shared, copied or left over from another config: a checkpoint is loaded with
``torch.load(weights_only=True)`` (tensors, numbers, strings and containers only, so a planted file
cannot execute code) and only when its fingerprint is the one of the config and seed being run.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import ConfigError
from ..export import atomic_path

# Keys that change no result: the number of instances (a seed's result is the same in a run of 1 or
# 20) and the switches of extra media. A finished result stays valid when only these differ.
NEUTRAL_KEYS = ("instances", "video", "usd", "video_format")

# Fields added after results, checkpoints and RISP datasets were first saved, each with the default that
# reproduces what came before it ("*" stands for every item of a list): left out of a fingerprint while
# at that default, so that a new feature does not orphan the saved work of configs that do not use it.
LATE_DEFAULTS = {"scene.bodies.*.rotors": [], "scene.bodies.*.pattern": 0.0, "scene.bodies.*.pattern_scale": 0.2, "scene.articulation": None, "scene.sim.checkpoint_every": None, "scene.sim.graph": False,
                 "sim.checkpoint_every": None, "sim.graph": False,
                 "randomize.rotor_thrust_low": None, "randomize.rotor_thrust_high": None, "risp.data.configurations": 0,
                 "risp.data.psi_seed": None,
                 "params.*.draw": "uniform", "params.*.true_per_weight": None, "optim.escalate": 0,
                 "optim.escalate_ratio": 3.0,
                 "optim.escalate_floor": 1.0e-5, "optim.profile": None, "optim.profile_points": 8,
                 "optim.restart_refine": 0, "optim.polish_extensions": 0,
                 "optim.final_refine": 0,
                 "reinforce": {"samples": 5, "iterations": 125, "noise": 0.05, "decay": 0.925, "lr": 0.1}}


def _without_late_defaults(data, prefix: str = ""):
    if isinstance(data, dict):
        return {k: _without_late_defaults(v, f"{prefix}{k}.") for k, v in data.items()
                if not (f"{prefix}{k}" in LATE_DEFAULTS and v == LATE_DEFAULTS[f"{prefix}{k}"])}
    if isinstance(data, list):
        return [_without_late_defaults(v, f"{prefix}*.") for v in data]
    return data


def fingerprint(config_data: dict, seed: int, kind: str) -> str:
    """A 16-hex-digit digest of ``kind`` (the experiment family), the config (as plain data, without
    :data:`NEUTRAL_KEYS` and the :data:`LATE_DEFAULTS` at their defaults) and the seed."""
    data = _without_late_defaults({k: v for k, v in config_data.items() if k not in NEUTRAL_KEYS})
    text = json.dumps({"kind": kind, "config": data, "seed": int(seed)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, state: dict, stamp: str) -> None:
    """Write ``state`` (plain tensors, numbers, strings, containers) with its fingerprint, atomically."""
    with atomic_path(path) as temporary:
        torch.save({"fingerprint": stamp, "state": state}, temporary)


def load_checkpoint(path: Path, stamp: str) -> dict:
    """The state saved by :func:`save_checkpoint` at ``path``; :class:`ConfigError` when the file is not
    a readable wsim checkpoint or belongs to another config or seed."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"checkpoint '{path}' cannot be read ({reason}); remove it or run without --resume") from None
    if not isinstance(saved, dict) or "state" not in saved:
        raise ConfigError(f"checkpoint '{path}' is not a wsim checkpoint; remove it or run without --resume")
    if saved.get("fingerprint") != stamp:
        raise ConfigError(f"checkpoint '{path}' belongs to a different config or seed; remove it or run "
                          "without --resume")
    return saved["state"]


def to_device(value, device):
    """``value`` with every tensor in it moved to ``device`` (containers rebuilt)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value

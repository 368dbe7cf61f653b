"""The one place that chooses the compute device.

wsim runs every Warp kernel and every torch tensor of a simulation on one device. Names accepted by
:func:`resolve_device`: ``"auto"``/``None`` (CUDA when a GPU is present, else the CPU), ``"cpu"``,
``"cuda"`` and ``"cuda:N"``.
"""

from __future__ import annotations

import functools
import os

import warp as wp

from .errors import ConfigError

ALLOWED_DEVICES = "auto, cpu, cuda, cuda:N"


def configure_warp() -> None:
    """Quiet Warp's banner and module-load lines, and ask for run-to-run deterministic atomics on CUDA
    (float atomic additions otherwise sum in a varying order; set ``WSIM_DETERMINISTIC=0`` to trade
    that for speed). Runs on ``import wsim``, before Warp compiles anything."""
    if hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_WARNING
    else:  # Warp before the logging rework
        wp.config.quiet = True
    if hasattr(wp.config, "deterministic") and os.environ.get("WSIM_DETERMINISTIC", "1") != "0":
        wp.config.deterministic = wp.DeterministicMode.RUN_TO_RUN


@functools.lru_cache(maxsize=None)
def init_warp() -> None:
    """Initialise Warp once, quietly."""
    configure_warp()
    wp.init()


def cuda_available() -> bool:
    init_warp()
    return wp.is_cuda_available()


def resolve_device(device: str | None = None) -> str:
    """Return the Warp device name (``"cpu"`` or ``"cuda:N"``) for a user's device choice.

    Raises :class:`ConfigError` naming the allowed values for an unknown name, or when CUDA is asked
    for on a machine without a GPU.
    """
    init_warp()
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return "cuda:0" if wp.is_cuda_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not wp.is_cuda_available():
            raise ConfigError(f"device '{device}' asked for, but no CUDA device is available (allowed: {ALLOWED_DEVICES})")
        index = 0 if name == "cuda" else name.split(":", 1)[1]
        try:
            index = int(index)
        except ValueError:
            raise ConfigError(f"device '{device}' is not a valid device name (allowed: {ALLOWED_DEVICES})") from None
        if not 0 <= index < wp.get_cuda_device_count():
            raise ConfigError(
                f"device '{device}' does not exist: {wp.get_cuda_device_count()} CUDA device(s) present"
            )
        return f"cuda:{index}"
    raise ConfigError(f"device '{device}' is not a valid device name (allowed: {ALLOWED_DEVICES})")


def torch_device(device: str):
    """The torch device matching a Warp device name."""
    import torch

    return torch.device(wp.device_to_torch(wp.get_device(device)))

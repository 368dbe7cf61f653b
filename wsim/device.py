"""The one place that chooses the compute device.

wsim runs every Warp kernel and every torch tensor of a simulation on one device. Names accepted by
:func:`resolve_device`: ``"auto"``/``None`` (CUDA when a GPU is present, else the CPU), ``"cpu"``,
``"cuda"`` and ``"cuda:N"``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile

import warp as wp

from .errors import ConfigError

ALLOWED_DEVICES = "auto, cpu, cuda, cuda:N"


# Every wsim module that defines Warp kernels (a test keeps the list complete): deterministic mode is
# a per-module compile option, so wsim asks for it on its own modules and leaves other libraries'
# (Newton's collision kernels refuse it) as they are.
KERNEL_MODULES = (
    "wsim.state_kernels", "wsim.integrators.semi_implicit", "wsim.integrators.runaway", "wsim.models.springs",
    "wsim.models.fem", "wsim.models.cloth", "wsim.models.bending", "wsim.models.aerodynamics", "wsim.models.contact",
    "wsim.models.external", "wsim.models.rotors", "wsim.models.articulation_kernels",
    "wsim.models.articulation_joints", "wsim.models.smoke",
    "wsim.render.kernels", "wsim.render.soft_ring", "wsim.render.composite", "wsim.render.visibility",
)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
# printed by Warp's native library on machines without an NVIDIA driver, where the CPU is the device
_NO_DRIVER = "Could not find or load the NVIDIA CUDA driver"
_initialised = False


def _env_flag(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}='{value}' must be 1 or 0 (or true/false, yes/no, on/off)")


def deterministic_requested() -> bool:
    """Whether ``WSIM_DETERMINISTIC`` asks for deterministic atomics (default: no)."""
    return _env_flag("WSIM_DETERMINISTIC", "0")


def set_deterministic(enabled: bool = True) -> None:
    """Ask for run-to-run deterministic float atomics in wsim's kernels on CUDA (atomic additions
    otherwise sum in a varying order, so gradients differ in the last bits between runs), or lift it.
    Only wsim's Warp modules change; they recompile on their next launch (a separate kernel cache entry)."""
    if not hasattr(wp, "DeterministicMode"):  # Warp before 1.12 has no deterministic mode
        return
    mode = wp.DeterministicMode.RUN_TO_RUN if enabled else wp.DeterministicMode.NOT_GUARANTEED
    for name in KERNEL_MODULES:
        wp.set_module_options({"deterministic": mode}, module=name)


@contextlib.contextmanager
def _stderr_without(marker: str):
    """Run the body with file descriptor 2 captured (native code writes there directly), then pass on
    every captured line except those containing ``marker``."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if marker not in line]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


# glibc's malloc serves blocks above M_MMAP_THRESHOLD (128 KiB, raised by a freed block up to 32 MiB) with
# fresh mmap'd pages and hands freed heap memory back above M_TRIM_THRESHOLD, so every render (about 50
# buffers of up to 2.3 MB at 64 px, the soft term's attribute sums and their gradients) paid its first
# touch of each page again: 6.7 of a 46 ms render forward and backward. Fixed thresholds keep the pages
# (a 64 px bunny render 45.9 -> 40.9 ms on average, six rigid-mass instances 17.4 -> 15.5 s, the same
# results bit for bit).
_MMAP_THRESHOLD = 64 << 20  # a 256 px, 16-frame attribute buffer is 38 MB
_TRIM_THRESHOLD = 128 << 20


def malloc_tuning_requested() -> bool:
    """Whether ``WSIM_MALLOC_TUNING`` (default 1) lets :func:`init_warp` set glibc's malloc thresholds."""
    return _env_flag("WSIM_MALLOC_TUNING", "1")


def _tune_host_allocator() -> bool:
    """Keep freed host memory in the process (glibc only; not where the user set glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, nor with ``WSIM_MALLOC_TUNING=0``). Returns
    whether the thresholds were set."""
    if not sys.platform.startswith("linux") or not malloc_tuning_requested():
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # another C library
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def init_warp() -> None:
    """Initialise Warp once: warnings and errors only (no banner or module-load lines), without the
    missing-driver warning on machines that have no NVIDIA driver (the CPU is then the device, as
    :func:`resolve_device` says), with deterministic atomics in wsim's kernels when
    ``WSIM_DETERMINISTIC=1``, and with glibc's malloc keeping freed memory (:func:`_tune_host_allocator`;
    ``WSIM_MALLOC_TUNING=0`` leaves it alone). Nothing of this happens on ``import wsim``."""
    global _initialised
    if _initialised:
        return
    requested = deterministic_requested()
    _tune_host_allocator()
    if hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_WARNING
    else:  # Warp before the logging rework
        wp.config.quiet = True
    if requested:
        set_deterministic(True)
    with _stderr_without(_NO_DRIVER):
        wp.init()
    from .bridge import per_thread_tape

    per_thread_tape()  # before any tape is recorded: one recording when the switch happened would be lost
    _initialised = True


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

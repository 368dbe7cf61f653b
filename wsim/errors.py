"""Exceptions raised by wsim.

Every error names the offending field (or file) and, where one exists, the allowed range, so that a
user can fix a config or a parameter without reading the source.
"""


class WsimError(Exception):
    """Base class of every error wsim raises on purpose."""


class ConfigError(WsimError, ValueError):
    """A config file or a ``--set`` override is malformed: unknown key, wrong type, missing file."""


class ParameterError(WsimError, ValueError):
    """A physical parameter is outside its allowed range (negative mass, NaN stiffness, dt <= 0...)."""


class MeshError(WsimError, ValueError):
    """A mesh cannot be used as given (open surface for inertia, degenerate element, missing file)."""


class SimulationError(WsimError, RuntimeError):
    """A rollout produced NaN or infinite state; the message names the first bad physics step."""


def _as_numpy(value):
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def check_finite(name: str, value) -> None:
    """Raise :class:`ParameterError` when ``value`` (scalar, array or tensor) holds NaN or inf."""
    import numpy as np

    if not np.all(np.isfinite(_as_numpy(value))):
        raise ParameterError(f"{name} must be finite, got NaN or infinite values")


def check_range(name: str, value, low=None, high=None, low_inclusive=False, high_inclusive=True) -> None:
    """Raise :class:`ParameterError` naming ``name`` and the allowed range if ``value`` leaves it.

    ``low``/``high`` of ``None`` mean unbounded. Works on scalars, numpy arrays and torch tensors.
    """
    import numpy as np

    array = _as_numpy(value)
    if not np.all(np.isfinite(array)):
        raise ParameterError(f"{name} must be finite, got NaN or infinite values")
    bad = np.zeros(array.shape, dtype=bool)
    if low is not None:
        bad |= array < low if low_inclusive else array <= low
    if high is not None:
        bad |= array > high if high_inclusive else array >= high
    if bad.any():
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = ("[" if low_inclusive and low is not None else "(") + f"{lo}, {hi}" + (
            "]" if high_inclusive and high is not None else ")"
        )
        found = array[bad].reshape(-1)[0]
        raise ParameterError(f"{name} must lie in {interval}, got {found:g}")

"""The registry of differentiable parameters.

Every quantity an optimiser may change is declared once with :func:`register`: its name, Warp dtype,
what it is defined per (``"global"``, ``"body"``, ``"particle"``, ``"spring"``, ``"material"``, or
``"interval_<kind>"`` for a value per frame interval and per ``<kind>``), its allowed range, unit and
meaning. Physical models declare their parameters next to their kernels; the simulation bridge uses
the registry to size, validate and convert tensors. The leading dimension of ``interval_*`` parameters
is ``frames - 1`` (the physics steps between rendered frame k and k + 1 use row k).

A kind ``K`` is counted by the Model attribute ``K_count`` (``body_count``, ``particle_count``...),
so a new model that adds ``tet_count`` to the Model can declare per-``"tet"`` parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import warp as wp

from .errors import ParameterError, check_range


@dataclass(frozen=True)
class ParameterSpec:
    """A differentiable parameter. ``low``/``high`` bound it (``None``: unbounded)."""

    name: str
    dtype: object
    per: str
    doc: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = False

    def element_shape(self) -> tuple:
        return tuple(getattr(self.dtype, "_shape_", None) or ())

    def count_shape(self, model, frames: int) -> tuple:
        """Leading shape of the parameter for ``model`` (before the element shape)."""
        if self.per == "global":
            return (1,)
        if self.per.startswith("interval_"):
            kind = self.per[len("interval_"):]
            return (max(frames - 1, 0), _count(model, kind))
        return (_count(model, self.per),)

    def validate(self, value) -> None:
        if self.low is None and self.high is None:
            check_range(self.name, value)
        else:
            check_range(self.name, value, self.low, self.high, low_inclusive=self.low_inclusive)


def _count(model, kind: str) -> int:
    if kind == "material":
        return model.material_count
    try:
        return int(getattr(model, f"{kind}_count"))
    except AttributeError:
        raise ParameterError(f"the model has no '{kind}' elements (no attribute '{kind}_count')") from None


PARAMETERS: dict[str, ParameterSpec] = {}


def register(*specs: ParameterSpec) -> None:
    for spec in specs:
        if spec.name in PARAMETERS and PARAMETERS[spec.name] != spec:
            raise ValueError(f"parameter '{spec.name}' registered twice with different definitions")
        PARAMETERS[spec.name] = spec


register(
    ParameterSpec("gravity", wp.vec3, "global", "gravitational acceleration (Y up)", "m/s^2"),
)

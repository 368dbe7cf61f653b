"""The registry of differentiable parameters.

Every quantity an optimiser may change is declared once with :func:`declare`: its name, Warp dtype,
what it is defined per (``"global"``, ``"body"``, ``"particle"``, ``"spring"``, ``"material"``, or
``"interval_<kind>"`` for a value per frame interval and per ``<kind>``), its allowed range, unit and
meaning. Physical models declare their parameters next to their kernels as a module constant
``PARAMETER_SPECS = declare(...)``; :data:`PARAMETERS` collects the modules named in
:data:`PARAMETER_MODULES` on first use, whatever was imported before (a test checks that every module
declaring parameters is listed). The simulation bridge uses the registry to size, validate and convert
tensors. The leading dimension of ``interval_*`` parameters
is ``frames - 1`` (the physics steps between rendered frame k and k + 1 use row k). Most of them have no
default (an actuator left off); one that has (``control_rotor_thrust``: a rotor's configured thrust) may
store a single row in ``Model.defaults``, which the Simulation repeats over every interval of its rollout
(the Model does not know the frame count).

A kind ``K`` is counted by the Model attribute ``K_count`` (``body_count``, ``particle_count``...),
so a new model that adds ``tet_count`` to the Model can declare per-``"tet"`` parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def declare(*specs: ParameterSpec) -> tuple[ParameterSpec, ...]:
    """The parameters one module declares, checked for repeated names."""
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"parameter(s) {', '.join(repeated)} declared twice in one module")
    return tuple(specs)


PARAMETER_SPECS = declare(
    ParameterSpec("gravity", wp.vec3, "global", "gravitational acceleration (Y up)", "m/s^2"),
)

# Every module holding a PARAMETER_SPECS declaration, this one included.
PARAMETER_MODULES = (
    "wsim.parameters", "wsim.simulation", "wsim.integrators.semi_implicit", "wsim.models.springs",
    "wsim.models.fem", "wsim.models.cloth", "wsim.models.bending", "wsim.models.aerodynamics",
    "wsim.models.contact", "wsim.models.external", "wsim.models.rotors",
)


def collect(modules=PARAMETER_MODULES) -> dict[str, ParameterSpec]:
    """The declarations of ``modules`` (names), in order; a name declared by two modules is an error."""
    import importlib

    table: dict[str, ParameterSpec] = {}
    owner: dict[str, str] = {}
    for module_name in modules:
        for spec in importlib.import_module(module_name).PARAMETER_SPECS:
            if spec.name in table:
                raise ValueError(f"parameter '{spec.name}' declared by both {owner[spec.name]} and {module_name}")
            table[spec.name] = spec
            owner[spec.name] = module_name
    return table


class _Registry(Mapping):
    """Read-only name -> :class:`ParameterSpec` mapping, filled by :func:`collect` on first access (the
    model modules import Warp kernels, which ``import wsim.parameters`` should not pull in)."""

    def __init__(self):
        self._table: dict[str, ParameterSpec] | None = None

    def _specs(self) -> dict[str, ParameterSpec]:
        if self._table is None:
            self._table = collect()
        return self._table

    def __getitem__(self, name: str) -> ParameterSpec:
        return self._specs()[name]

    def __iter__(self):
        return iter(self._specs())

    def __len__(self) -> int:
        return len(self._specs())


PARAMETERS: Mapping[str, ParameterSpec] = _Registry()

"""wsim: differentiable multiphysics simulation and rendering on NVIDIA Warp.

Data flow: :class:`~wsim.builder.ModelBuilder` -> :class:`~wsim.model_state.Model` / State / Control ->
force models (:mod:`wsim.models`) -> integrator (:mod:`wsim.integrators`) -> vertex buffers
(:class:`~wsim.simulation.Simulation`) -> renderer (:mod:`wsim.render`) -> images -> loss -> optimiser.
"""

from .device import configure_warp as _configure_warp

_configure_warp()

from .builder import ModelBuilder  # noqa: E402
from .device import resolve_device  # noqa: E402
from .errors import ConfigError, MeshError, ParameterError, SimulationError, WsimError  # noqa: E402
from .geometry import TriangleMesh, load_mesh, mass_properties, primitive  # noqa: E402
from .model_state import Control, Model, State  # noqa: E402
from .simulation import Simulation  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ModelBuilder", "Model", "State", "Control", "Simulation", "TriangleMesh", "primitive", "load_mesh",
    "mass_properties", "resolve_device", "WsimError", "ConfigError", "ParameterError", "MeshError",
    "SimulationError",
]

"""wsim: differentiable multiphysics simulation and rendering on NVIDIA Warp.

Data flow: :class:`~wsim.builder.ModelBuilder` -> :class:`~wsim.model_state.Model` / State / Control ->
force models (:mod:`wsim.models`) -> integrator (:mod:`wsim.integrators`) -> vertex buffers
(:class:`~wsim.simulation.Simulation`) -> renderer (:mod:`wsim.render`) -> images -> loss -> optimiser.
"""

from .builder import ModelBuilder
from .device import resolve_device
from .errors import ConfigError, MeshError, ParameterError, SimulationError, WsimError
from .geometry import TriangleMesh, load_mesh, mass_properties, primitive
from .model_state import Control, Model, State
from .simulation import Simulation

__version__ = "0.1.0"

__all__ = [
    "ModelBuilder", "Model", "State", "Control", "Simulation", "TriangleMesh", "primitive", "load_mesh",
    "mass_properties", "resolve_device", "WsimError", "ConfigError", "ParameterError", "MeshError",
    "SimulationError",
]

"""Time integrators: advance a State by one physics step from the forces the models accumulated."""

from . import semi_implicit

__all__ = ["semi_implicit"]

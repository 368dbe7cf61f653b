"""Force models. Each module holds one physical model: its Warp kernels, their launch wrapper
``apply_forces(model, state, params, step, interval)`` (accumulates into ``state.*_f`` / ``state.body_t``)
and the declaration of its parameters. :data:`FORCE_MODELS` lists them in evaluation order.
"""

from . import aerodynamics, bending, cloth, contact, external, fem, rotors, springs

FORCE_MODELS = [springs, fem, cloth, bending, aerodynamics, contact, external, rotors]


def apply_all_forces(model, state, params, step: int, interval: int) -> None:
    """Evaluate every force model on ``state`` (physics step ``step``, frame interval ``interval``)."""
    for force_model in FORCE_MODELS:
        force_model.apply_forces(model, state, params, step, interval)

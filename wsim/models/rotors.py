"""Rotors: a thrust along a body-fixed axis at a body-fixed point, with the propeller's reaction torque.

Rotor r sits on body b at ``rotor_position`` p (m, body frame, relative to the centre of mass) and pushes
along the unit ``rotor_axis`` a (body frame). On every physics step of frame interval k its thrust is
``f = clamp(control_rotor_thrust[k, r], 0, rotor_max_thrust[r])`` (N: a propeller neither pulls nor
exceeds its motor), and with ``R`` the body's current rotation the body receives

* the force ``F = f R a`` (world frame),
* the torque ``(R p) x F + spin * torque_ratio * f * R a`` about its centre of mass: the lever arm of
  the thrust plus the drag torque of the propeller, proportional to the thrust (``torque_ratio`` in m).

``spin = +1`` puts the reaction torque along +a (a propeller turning clockwise seen from the tip of its
axis), ``-1`` against it; a quadrotor alternates them so that equal thrusts cancel the yaw torques.
The thrust schedule ``control_rotor_thrust`` [frames - 1, R] is a parameter like the other interval
controls: gradients reach every entry inside the clamp (none outside it, where it does not act).
"""

from __future__ import annotations

import numpy as np
import warp as wp

from ..errors import ParameterError, check_finite, check_range
from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("control_rotor_thrust", wp.float32, "interval_rotor",
                  "commanded thrust of each rotor per interval (clamped to [0, max_thrust] where applied)", "N"),
)


@wp.kernel
def rotor_force_kernel(
    body_r: wp.array(dtype=wp.quat),
    rotor_body: wp.array(dtype=wp.int32),
    rotor_position: wp.array(dtype=wp.vec3),
    rotor_axis: wp.array(dtype=wp.vec3),
    rotor_spin: wp.array(dtype=float),
    rotor_torque_ratio: wp.array(dtype=float),
    rotor_max_thrust: wp.array(dtype=float),
    thrust: wp.array2d(dtype=float),
    interval: int,
    body_f: wp.array(dtype=wp.vec3),
    body_t: wp.array(dtype=wp.vec3),
):
    r = wp.tid()
    b = rotor_body[r]
    rotation = body_r[b]
    f = wp.clamp(thrust[interval, r], 0.0, rotor_max_thrust[r])
    axis = wp.quat_rotate(rotation, rotor_axis[r])
    force = f * axis
    reaction = (rotor_spin[r] * rotor_torque_ratio[r] * f) * axis
    wp.atomic_add(body_f, b, force)
    wp.atomic_add(body_t, b, wp.cross(wp.quat_rotate(rotation, rotor_position[r]), force) + reaction)


def apply_forces(model, state, params, step: int, interval: int) -> None:
    if not model.rotor_count or "control_rotor_thrust" not in params:
        return
    wp.launch(
        rotor_force_kernel, dim=model.rotor_count, device=model.device,
        inputs=[state.body_r, model.rotor_body, model.rotor_position, model.rotor_axis, model.rotor_spin,
                model.rotor_torque_ratio, model.rotor_max_thrust, params["control_rotor_thrust"], interval],
        outputs=[state.body_f, state.body_t],
    )


def rotor_record(where: str, body: int, position: np.ndarray, axis: np.ndarray, spin, torque_ratio, max_thrust,
                 thrust) -> dict:
    """One rotor, checked (``where`` names it in errors), with its axis normalised and its thrust schedule
    as a 1-D array (see :meth:`wsim.builder.ModelBuilder.add_rotor`)."""
    norm = float(np.linalg.norm(axis))
    if norm < 1e-12:
        raise ParameterError(f"{where}: axis must be a non-zero vector (body frame), got {axis.tolist()}")
    if spin not in (1, -1):
        raise ParameterError(f"{where}: spin must be +1 or -1, got {spin}")
    check_range(f"{where} torque_ratio", torque_ratio, 0.0, None, low_inclusive=True)
    check_range(f"{where} max_thrust", max_thrust, 0.0, None)
    schedule = np.asarray(thrust, dtype=np.float64).reshape(-1)
    if schedule.size == 0:
        raise ParameterError(f"{where}: thrust must be a number or a non-empty list (one value per frame interval)")
    check_finite(f"{where} thrust", schedule)
    return dict(body=body, position=position, axis=axis / norm, spin=float(spin), torque_ratio=float(torque_ratio),
                max_thrust=float(max_thrust), thrust=schedule)


def upload_rotors(model, defaults: dict, rotors: list[dict], device: str) -> None:
    """The model's rotor arrays and the default thrust schedule ``[intervals, R]`` (a single row when
    every rotor has a constant thrust: the Simulation repeats it over its intervals)."""
    model.rotor_count = len(rotors)
    if not rotors:
        return
    lengths = sorted({len(r["thrust"]) for r in rotors} - {1})
    if len(lengths) > 1:
        raise ParameterError(f"rotor thrust schedules have different lengths {lengths}: give every rotor one "
                             "value per frame interval (or one number)")
    rows = lengths[0] if lengths else 1
    defaults["control_rotor_thrust"] = np.stack([np.broadcast_to(r["thrust"], (rows,)) for r in rotors], 1)
    for name, dtype in (("body", wp.int32), ("position", wp.vec3), ("axis", wp.vec3), ("spin", float),
                        ("torque_ratio", float), ("max_thrust", float)):
        setattr(model, f"rotor_{name}", wp.array(np.array([r[name] for r in rotors]), dtype=dtype, device=device))

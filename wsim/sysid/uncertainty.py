"""How precisely does the video determine each parameter? A Laplace (Gauss-Newton) estimate.

An estimate from a video is only as good as the video's sensitivity to the parameter: a contact
stiffness that moves the object by a micrometre cannot be read from a 24-pixel image, whatever the
optimiser does. For an estimate ``theta`` and the rendered loss frames ``I(theta)`` (all pixels and
colour channels of the frames the loss compares, flattened to ``N`` values), the Jacobian
``J = dI / d(theta_k / theta_k0)`` (a column per scalar unknown, derivatives with respect to the
*relative* change of each unknown, by central differences of step ``uncertainty.step``) gives, for target
pixels carrying independent noise of standard deviation ``sigma``, the Gauss-Newton covariance

    Cov(relative change) = sigma^2 (J^T J)^-1                    (the Cramer-Rao bound at ``theta``)

Its diagonal's square root is the relative standard deviation of each unknown: the best precision any
unbiased estimator can reach from such a video. ``sigma`` is measured from the target frames themselves
(:func:`target_noise`: the quantisation of their levels, e.g. 8-bit, and a robust estimate of codec or
sensor noise), never below ``uncertainty.noise`` (default: the quantisation of an 8-bit video, so a
float target rendered by wsim gets the bound of its saved video). The eigenvector of ``J^T J`` with the
smallest eigenvalue names the combination the video constrains least (rigid contact: ``kf`` against ``mu``).

The bound is only honest where the model explains the video up to that noise. So the residuals at the
estimate are compared with ``sigma``: above :data:`CONSISTENT_RATIO` times it, or for a run that did not
converge or a baseline that does not fit, ``consistent`` is false and the ``verdict`` says that video and
model disagree and by how much (another renderer, compression, unmodelled physics); the command line
then prints no bound.

It needs ``2 K`` rollouts and renders for ``K`` scalar unknowns, so it is skipped (with the reason written
to ``results.json``) when ``K > uncertainty.max_unknowns``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import SimulationError
from ..optim.differences import central_jacobian

QUANTISATION_NOISE_8BIT = 1.0 / (255.0 * math.sqrt(12.0))
LARGE = 1.0e6  # reported in place of an unbounded standard deviation (a direction the video does not see)


def _unknowns(instance, values: dict) -> list[tuple[str, tuple]]:
    return [(p.name, index) for p in instance.params for index in np.ndindex(tuple(values[p.name].shape))]


def _label(name: str, index: tuple) -> str:
    return name if not index else f"{name}[{','.join(str(i) for i in index)}]"


def video_jacobian(instance, values: dict, step: float) -> tuple[np.ndarray, list[str], list[float]]:
    """``[N, K]`` derivatives of the loss frames' RGB values with respect to each unknown's relative change
    (absolute change, in the parameter's units, for an unknown whose value is 0), the unknowns' labels and
    their values."""
    frames = torch.as_tensor(instance.loss_frames, device=instance.torch_device)

    def images(trial: dict) -> np.ndarray:
        with torch.no_grad():
            vertices = instance.rollout(trial)
            return instance.render(vertices[frames], trial)[..., :3].detach().cpu().numpy().astype(np.float64).reshape(-1)

    params = {p.name: p for p in instance.params}
    unknowns = _unknowns(instance, values)
    points = [float(values[name][index]) if index else float(values[name]) for name, index in unknowns]
    # relative steps (absolute ones, a fraction of the range, for an unknown at 0)
    deltas = [step * abs(v) if v != 0.0 else step * max(params[name].high - params[name].low, 1e-12)
              for v, (name, _) in zip(points, unknowns)]

    def frames_at(x: torch.Tensor) -> torch.Tensor:
        trial = {k: v.detach().clone() for k, v in values.items()}
        for (name, index), value in zip(unknowns, x.tolist()):
            trial[name][index] = value
        return torch.as_tensor(images(trial))

    jacobian = central_jacobian(frames_at, torch.tensor(points, dtype=torch.float64), deltas).numpy()
    scale = np.array([abs(v) if v != 0.0 else 1.0 for v in points])
    return jacobian * scale, [_label(name, index) for name, index in unknowns], points


def laplace(jacobian: np.ndarray, noise: float) -> dict:
    """Relative standard deviations, correlations and the weakest direction from ``jacobian`` ([N, K])."""
    information = jacobian.T @ jacobian / noise**2
    eigenvalues, eigenvectors = np.linalg.eigh(information)
    # a direction with no information (below round-off of the largest) is unbounded: LARGE
    seen = eigenvalues > max(float(eigenvalues.max()), 1e-300) * 1e-12
    inverse = np.where(seen, 1.0 / np.where(seen, eigenvalues, 1.0), LARGE**2)
    covariance = (eigenvectors * inverse) @ eigenvectors.T
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    correlation = covariance / np.maximum(np.outer(std, std), 1e-300)
    weakest = eigenvectors[:, 0] * np.sign(eigenvectors[np.argmax(np.abs(eigenvectors[:, 0])), 0])
    return {"std": np.minimum(std, LARGE), "correlation": np.clip(correlation, -1.0, 1.0),
            "weakest": weakest, "weakest_std": float(min(1.0 / math.sqrt(max(eigenvalues[0], 1e-300)), LARGE))}


def target_noise(images: np.ndarray, floor: float) -> dict:
    """The noise of the target frames ``[F, H, W, 3]`` (values in [0, 1]), estimated from the frames
    themselves: the quantisation of their levels (8 or 16 bit when every value lies on that grid) and a
    robust Immerkaer estimate (the median absolute response to the 3x3 Laplacian-difference mask over
    all pixels, which is 6 sigma for white noise and ignores the few pixels on edges), never below
    ``floor``. Returns ``{"noise", "quantisation", "measured", "bits"}``."""
    values = np.asarray(images, dtype=np.float64)
    bits = None
    for candidate in (8, 16):
        levels = values * (2 ** candidate - 1)
        if np.abs(levels - np.round(levels)).max() < 1e-3:
            bits = candidate
            break
    quantisation = 0.0 if bits is None else 1.0 / ((2 ** bits - 1) * math.sqrt(12.0))
    mask = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    h, w = values.shape[1:3]
    response = np.zeros(values[:, 1:-1, 1:-1].shape)
    for dy in range(3):
        for dx in range(3):
            response += mask[dy, dx] * values[:, dy:dy + h - 2, dx:dx + w - 2]
    measured = float(np.median(np.abs(response))) / (0.6745 * 6.0) if response.size else 0.0
    noise = max(floor, quantisation, measured)
    return {"noise": noise, "quantisation": quantisation, "measured": measured, "bits": bits}


def residual_rms(instance, values: dict) -> float:
    """The root mean square of the RGB residuals of the loss frames at ``values`` (the pixel loss's own
    residuals, also for the DiffPhysics baseline, whose optimised loss is 3D)."""
    frames = torch.as_tensor(instance.loss_frames, device=instance.torch_device)
    with torch.no_grad():
        vertices = instance.rollout(values)
        images = instance.render(vertices[frames], values)[..., :3]
        return float(((images - instance.target_images[frames]) ** 2).mean().sqrt())


# Residuals up to twice the noise count as the noise's: the bound holds. Above, the video and the
# model disagree (another renderer, compression, unmodelled physics) and the bound does not apply.
CONSISTENT_RATIO = 2.0


def video_uncertainty(instance, values: dict, converged: bool = True) -> dict:
    """The ``uncertainty`` entry of ``results.json`` for the estimate ``values`` (see the module docstring).

    Returns ``{"noise", "noise_estimate", "residual_rms", "residual_to_noise", "consistent", "verdict",
    "step", "unknowns": {label: {"value", "rel_std", "abs_std"}}, "correlation": [[...]],
    "weakest_direction": {label: coefficient}, "weakest_rel_std"}`` or ``{"skipped": reason}``. The
    bound applies only where ``consistent`` is true."""
    config = instance.config.uncertainty
    if not config.enabled:
        return {"skipped": "uncertainty.enabled is false"}
    count = len(_unknowns(instance, values))
    if count > config.max_unknowns:
        return {"skipped": f"{count} scalar unknowns > uncertainty.max_unknowns = {config.max_unknowns} "
                           f"(it costs 2 rollouts and renders per unknown)"}
    frames = list(instance.loss_frames)
    estimate = target_noise(instance.target_images[frames].detach().cpu().numpy(), config.noise)
    noise = estimate["noise"]
    try:
        rms = residual_rms(instance, values)
        jacobian, labels, points = video_jacobian(instance, values, config.step)
    except SimulationError as error:
        return {"skipped": f"a perturbed rollout failed: {error}"}
    ratio = rms / noise
    consistent = ratio <= CONSISTENT_RATIO
    if instance.config.method in ("average", "random"):
        consistent = False
        verdict = (f"baseline '{instance.config.method}': the estimate is not fitted to the video (residual RMS "
                   f"{rms:.2g}, {ratio:.3g}x the noise {noise:.2g}); the bound does not apply")
    elif not converged:
        consistent = False
        verdict = (f"the optimisation did not converge: the residuals (RMS {rms:.2g}) are {ratio:.3g}x the "
                   f"target's noise ({noise:.2g}); the bound does not apply")
    elif consistent:
        verdict = (f"the residuals (RMS {rms:.2g}) are within the target's noise ({noise:.2g}): the bound applies")
    else:
        verdict = (f"video and model disagree: the residuals (RMS {rms:.2g}) are {ratio:.3g}x the target's noise "
                   f"({noise:.2g}); the bound does not apply (another renderer, compression or unmodelled "
                   "physics); scaled by that factor it would be a rough figure at best")
    result = laplace(jacobian, noise)
    unknowns = {}
    for label, value, std in zip(labels, points, result["std"]):
        relative = value != 0.0
        unknowns[label] = {"value": value, "rel_std": float(std) if relative else None,
                           "abs_std": float(std * abs(value)) if relative else float(std)}
    return {"noise": noise, "noise_estimate": estimate, "residual_rms": rms, "residual_to_noise": ratio,
            "consistent": consistent, "verdict": verdict, "step": config.step, "pixels": int(jacobian.shape[0]),
            "unknowns": unknowns, "labels": labels, "correlation": result["correlation"].round(4).tolist(),
            "weakest_direction": {label: round(float(c), 4) for label, c in zip(labels, result["weakest"])},
            "weakest_rel_std": result["weakest_std"]}


def parameter_bounds(uncertainty: dict | None) -> dict:
    """Per parameter name, the relative standard deviation (the mean over its elements); empty when the
    bound does not apply (skipped, or video and model disagree)."""
    if not uncertainty or "unknowns" not in uncertainty or not uncertainty.get("consistent", True):
        return {}
    grouped: dict[str, list[float]] = {}
    for label, entry in uncertainty["unknowns"].items():
        if entry["rel_std"] is not None:
            grouped.setdefault(label.split("[")[0], []).append(entry["rel_std"])
    return {name: float(np.mean(values)) for name, values in grouped.items()}


def noise_check(instance, loss: float | None) -> dict:
    """Is the final ``loss`` (the mean squared residual over the whole video) what the target's noise
    allows? For the pixel losses the mean squared residual at the truth is the noise's variance, so a
    loss above ``(optim.escalate_ratio x noise)^2`` means a local minimum or a model that cannot explain
    the video, not an estimate limited by the video. The noise is measured from the loss frames
    (:func:`target_noise`, at least ``optim.escalate_floor``); 3D targets (DiffPhysics) carry none, so
    their allowance is the floor's, and a target wsim rendered has its quantisation (``target.bits``) or
    none. Mask, RISP and perceptual residuals have no noise model: not applicable.

    Returns ``{"applicable": False, "reason"}`` or ``{"applicable": True, "loss", "noise",
    "allowed_loss", "ratio", "explained"}`` (``ratio``: the residuals' RMS over the noise)."""
    config = instance.config
    o = config.optim
    kind = "vertices" if config.method == "diffphysics" else config.loss.type
    if o.escalate_ratio == 0:
        return {"applicable": False, "reason": "optim.escalate_ratio is 0"}
    if config.method in ("average", "random"):
        return {"applicable": False, "reason": f"baseline '{config.method}': nothing is fitted"}
    if kind not in ("pixel", "first_last", "vertices"):
        return {"applicable": False, "reason": f"loss.type {kind}: its residuals have no noise model"}
    if kind == "vertices":
        noise = o.escalate_floor
    elif not instance.external_target:
        # a target wsim rendered carries exactly the noise wsim put in it, its quantisation (target.bits):
        # the Immerkaer estimate would read a clean render's shading and edges as noise (rigid-contact at
        # 24 px: 8.5e-4), letting a wrong basin's loss of 3e-9 pass for the noise's
        bits = config.target.bits
        noise = max(o.escalate_floor, 1.0 / ((2 ** bits - 1) * math.sqrt(12.0)) if bits else 0.0)
    else:
        frames = list(instance.loss_frames)
        noise = target_noise(instance.target_images[frames].detach().cpu().numpy(), o.escalate_floor)["noise"]
    allowed = (o.escalate_ratio * noise) ** 2
    finite = loss is not None and math.isfinite(loss)
    return {"applicable": True, "loss": loss if finite else None, "noise": noise, "allowed_loss": allowed,
            "ratio": math.sqrt(loss) / noise if finite else None, "explained": finite and loss <= allowed}

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
unbiased estimator can reach from such a video. The default ``sigma = 1 / (255 sqrt 12)`` is the
quantisation noise of an 8-bit video, so the figure answers "how well could this parameter be read from
the saved target video at all". The eigenvector of ``J^T J`` with the smallest eigenvalue names the
combination of parameters the video constrains least (for rigid contact typically ``kf`` against ``mu``).

It needs ``2 K`` rollouts and renders for ``K`` scalar unknowns, so it is skipped (with the reason written
to ``results.json``) when ``K > uncertainty.max_unknowns``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import SimulationError

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
            return instance.render(vertices[frames])[..., :3].detach().cpu().numpy().astype(np.float64).reshape(-1)

    columns, labels, points = [], [], []
    params = {p.name: p for p in instance.params}
    for name, index in _unknowns(instance, values):
        value = float(values[name][index]) if index else float(values[name])
        relative = value != 0.0
        delta = step * abs(value) if relative else step * max(params[name].high - params[name].low, 1e-12)
        sides = []
        for sign in (1.0, -1.0):
            trial = {k: v.detach().clone() for k, v in values.items()}
            trial[name][index] = value + sign * delta
            sides.append(images(trial))
        derivative = (sides[0] - sides[1]) / (2.0 * delta)
        columns.append(derivative * (abs(value) if relative else 1.0))
        labels.append(_label(name, index))
        points.append(value)
    return np.stack(columns, axis=1), labels, points


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


def video_uncertainty(instance, values: dict) -> dict:
    """The ``uncertainty`` entry of ``results.json`` for the estimate ``values`` (see the module docstring).

    Returns ``{"noise", "step", "unknowns": {label: {"value", "rel_std", "abs_std"}}, "correlation": [[...]],
    "weakest_direction": {label: coefficient}, "weakest_rel_std"}`` or ``{"skipped": reason}``."""
    config = instance.config.uncertainty
    if not config.enabled:
        return {"skipped": "uncertainty.enabled is false"}
    count = len(_unknowns(instance, values))
    if count > config.max_unknowns:
        return {"skipped": f"{count} scalar unknowns > uncertainty.max_unknowns = {config.max_unknowns} "
                           f"(it costs 2 rollouts and renders per unknown)"}
    try:
        jacobian, labels, points = video_jacobian(instance, values, config.step)
    except SimulationError as error:
        return {"skipped": f"a perturbed rollout failed: {error}"}
    result = laplace(jacobian, config.noise)
    unknowns = {}
    for label, value, std in zip(labels, points, result["std"]):
        relative = value != 0.0
        unknowns[label] = {"value": value, "rel_std": float(std) if relative else None,
                           "abs_std": float(std * abs(value)) if relative else float(std)}
    return {"noise": config.noise, "step": config.step, "pixels": int(jacobian.shape[0]), "unknowns": unknowns,
            "labels": labels, "correlation": result["correlation"].round(4).tolist(),
            "weakest_direction": {label: round(float(c), 4) for label, c in zip(labels, result["weakest"])},
            "weakest_rel_std": result["weakest_std"]}


def parameter_bounds(uncertainty: dict | None) -> dict:
    """Per parameter name, the relative standard deviation (the mean over its elements)."""
    if not uncertainty or "unknowns" not in uncertainty:
        return {}
    grouped: dict[str, list[float]] = {}
    for label, entry in uncertainty["unknowns"].items():
        if entry["rel_std"] is not None:
            grouped.setdefault(label.split("[")[0], []).append(entry["rel_std"])
    return {name: float(np.mean(values)) for name, values in grouped.items()}

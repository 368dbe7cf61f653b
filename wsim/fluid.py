"""Differentiable 2-D smoke for PyTorch: a rollout of :mod:`wsim.models.smoke` as one torch operation.

Why a tape program: the rollout is hundreds of small Warp launches per step (the Jacobi sweeps
dominate); recording them on one ``wp.Tape`` and replaying the adjoints in :mod:`wsim.bridge` keeps
the whole backward pass in Warp, with torch seeing a single differentiable function from the initial
velocity (and density, viscosity, sources) to the density video.

Why two buffer policies: a recorded launch must never overwrite an array another recorded launch
read (its adjoint would read the wrong values and accumulate into a gradient buffer that a later
launch's adjoint also fills), so under a tape every launch writes a fresh array. Without a tape
(target videos, evaluation, ``torch.no_grad``) the intermediate fields are ping-pong buffers allocated
once per simulation object and reused by every step and call.

Rendering is torch compositing (:func:`render_smoke`): smoke of a colour over a background with
opacity ``1 - exp(-opacity rho)`` (Beer-Lambert through a sheet whose optical depth is the density).
"""

from __future__ import annotations

import numpy as np
import torch
import warp as wp

from .bridge import run_tape_program
from .device import resolve_device
from .errors import ParameterError, SimulationError, check_finite, check_range
from .models import smoke as kernels


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class SmokeSimulation:
    """Stam's stable fluids on an ``N x M`` closed box (see :mod:`wsim.models.smoke` for the scheme).

    ``shape`` (N, M): cells along axis 0 and 1, each >= 3. ``dt`` (s) > 0. ``steps`` >= 1: the rollout
    returns one density frame after every step. ``jacobi_iterations`` >= 0: damped Jacobi sweeps per
    pressure solve (0 skips the projection: the velocity is only advected). ``omega`` in (0, 1): the
    Jacobi damping weight. ``viscosity`` nu (m^2/s) >= 0 and ``diffusion`` kappa (m^2/s) >= 0: implicit
    diffusion of velocity and density, each ``diffusion_iterations`` >= 1 Jacobi sweeps (skipped when
    zero, unless a viscosity tensor is passed to :meth:`rollout`). ``cell_size`` h (m) > 0. Float32.
    """

    input_dtypes = {"velocity": wp.vec2, "density": wp.float32, "viscosity": wp.float32,
                    "force": wp.vec2, "source": wp.float32}

    def __init__(self, shape=(32, 32), dt: float = 0.04, steps: int = 32, jacobi_iterations: int = 40,
                 viscosity: float = 0.0, diffusion: float = 0.0, diffusion_iterations: int = 20,
                 cell_size: float = 1.0 / 32, omega: float = 0.8, device: str | None = "cpu"):
        try:
            n, m = (int(s) if float(s) == int(s) else None for s in shape)
        except (TypeError, ValueError):
            n = m = None
        if n is None or m is None or n < 3 or m < 3:
            raise ParameterError(f"shape must be two integers (N, M), each >= 3, got {shape!r}")
        self.shape = (n, m)
        check_range("dt", dt, 0.0, None)
        check_range("cell_size", cell_size, 0.0, None)
        check_range("viscosity", viscosity, 0.0, None, low_inclusive=True)
        check_range("diffusion", diffusion, 0.0, None, low_inclusive=True)
        check_range("omega", omega, 0.0, 1.0, high_inclusive=False)
        self.steps = _check_int("steps", steps, 1)
        self.jacobi_iterations = _check_int("jacobi_iterations", jacobi_iterations, 0)
        self.diffusion_iterations = _check_int("diffusion_iterations", diffusion_iterations, 1)
        self.dt, self.cell_size, self.omega = float(dt), float(cell_size), float(omega)
        self.viscosity, self.diffusion = float(viscosity), float(diffusion)
        self.device = resolve_device(device)
        self._pool: dict = {}

    # -- buffers -----------------------------------------------------------------------------------
    def _array(self, key: str, dtype, recording: bool, shape=None) -> wp.array:
        """A fresh array under a tape, else the next of the two ping-pong buffers named ``key``."""
        shape = shape or self.shape
        if recording:
            return wp.empty(shape, dtype=dtype, device=self.device, requires_grad=True)
        pair = self._pool.get(key)
        if pair is None:
            pair = self._pool[key] = [wp.empty(shape, dtype=dtype, device=self.device) for _ in range(2)]
        pair.reverse()
        return pair[0]

    def _constant(self, value, dtype=wp.float32, shape=(1,)) -> wp.array:
        array = wp.zeros(shape, dtype=dtype, device=self.device)
        if value:
            array.fill_(value)
        return array

    # -- the scheme --------------------------------------------------------------------------------
    def _launch(self, kernel, inputs, outputs):
        wp.launch(kernel, dim=self.shape, inputs=inputs, outputs=outputs, device=self.device)

    def _diffuse(self, field, coefficient, key: str, vector: bool, recording: bool):
        dtype = wp.vec2 if vector else wp.float32
        guess = field
        for _ in range(self.diffusion_iterations):
            out = self._array(key, dtype, recording)
            self._launch(kernels.diffuse_kernel, [field, guess, coefficient, self.dt / self.cell_size ** 2], [out])
            guess = out
        return guess

    def project(self, velocity: wp.array, recording: bool = False, iterations: int | None = None):
        """``(u - G p, p)`` with ``p`` after ``iterations`` (default ``jacobi_iterations``) damped Jacobi
        sweeps on ``A p = D u`` from ``p = 0``. Returns ``(velocity, None)`` for zero iterations."""
        iterations = self.jacobi_iterations if iterations is None else iterations
        if iterations == 0:
            return velocity, None
        inv_2h = 0.5 / self.cell_size
        divergence = self._array("divergence", wp.float32, recording)
        self._launch(kernels.divergence_kernel, [velocity, inv_2h], [divergence])
        pressure = self._constant(0.0, shape=self.shape) if recording else self._array("pressure", wp.float32, False)
        if not recording:
            pressure.zero_()
        for _ in range(iterations):
            out = self._array("pressure", wp.float32, recording)
            self._launch(kernels.pressure_jacobi_kernel,
                         [pressure, divergence, inv_2h, self.omega * self.cell_size ** 2], [out])
            pressure = out
        projected = self._array("projected", wp.vec2, recording)
        self._launch(kernels.subtract_gradient_kernel, [velocity, pressure, inv_2h], [projected])
        return projected, pressure

    def solve_pressure(self, velocity, iterations: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Project one velocity field ([2, N, M] or [N, M, 2], numpy or torch) as a step does, with
        ``iterations`` (default ``jacobi_iterations``) sweeps: ``(u - G p [N, M, 2], p [N, M])``, copies."""
        u = self._field("velocity", velocity, True).detach().cpu().contiguous().numpy()
        projected, pressure = self.project(wp.array(u, dtype=wp.vec2, device=self.device), iterations=iterations)
        pressure = np.zeros(self.shape, np.float32) if pressure is None else pressure.numpy().copy()
        return projected.numpy().copy(), pressure

    def record(self, inputs: dict) -> tuple[wp.array, wp.array]:
        """Launch the rollout (on the active tape, if any): ``(density frames [F, N, M], velocity frames
        [F, N, M] of vec2)``, frame k after step k + 1. The bridge's tape-program entry point."""
        recording = any(a.requires_grad for a in inputs.values())
        velocity, density = inputs["velocity"], inputs["density"]
        viscosity = inputs.get("viscosity")
        use_viscosity = viscosity is not None or self.viscosity > 0.0
        if viscosity is None:
            viscosity = self._constant(self.viscosity)
        diffusion = self._constant(self.diffusion)
        force, source = inputs.get("force"), inputs.get("source")
        if force is not None or source is not None:
            force = force if force is not None else self._constant(None, wp.vec2, self.shape)
            source = source if source is not None else self._constant(None, wp.float32, self.shape)
        frames = (self.steps, *self.shape)
        density_frames = wp.zeros(frames, dtype=wp.float32, device=self.device, requires_grad=recording)
        velocity_frames = wp.zeros(frames, dtype=wp.vec2, device=self.device, requires_grad=recording)
        dt_over_h = self.dt / self.cell_size
        for step in range(self.steps):
            if force is not None:
                velocity_in, density_in = velocity, density
                velocity = self._array("velocity_sourced", wp.vec2, recording)
                density = self._array("density_sourced", wp.float32, recording)
                self._launch(kernels.add_sources_kernel, [velocity_in, density_in, force, source, self.dt],
                             [velocity, density])
            if use_viscosity:
                velocity = self._diffuse(velocity, viscosity, "velocity_diffused", True, recording)
            velocity, _ = self.project(velocity, recording)
            advected = self._array("velocity_advected", wp.vec2, recording)
            self._launch(kernels.advect_kernel, [velocity, velocity, dt_over_h], [advected])
            velocity, _ = self.project(advected, recording)
            carried = self._array("density_advected", wp.float32, recording)
            self._launch(kernels.advect_kernel, [density, velocity, dt_over_h], [carried])
            density = carried
            if self.diffusion > 0.0:
                density = self._diffuse(density, diffusion, "density_diffused", False, recording)
            self._launch(kernels.store_frame_kernel, [density, velocity, step], [density_frames, velocity_frames])
        return density_frames, velocity_frames

    def after_forward(self, outputs) -> None:
        """Raise :class:`SimulationError` naming the first step whose density or velocity is not finite."""
        for name, array in zip(("density", "velocity"), outputs):
            values = array.numpy().reshape(self.steps, -1)
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                step = int(np.argmax(bad)) + 1
                raise SimulationError(
                    f"smoke simulation blew up at step {step} of {self.steps}: non-finite {name} "
                    f"(dt={self.dt:g} s, cell_size={self.cell_size:g} m); reduce dt, the initial velocity or the sources")

    # -- torch -------------------------------------------------------------------------------------
    def _field(self, name: str, value, vector: bool) -> torch.Tensor:
        n, m = self.shape
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value, dtype=np.float32))
        shape = tuple(value.shape)
        if vector:
            if shape == (2, n, m):
                value = value.permute(1, 2, 0)
            elif shape != (n, m, 2):
                raise ParameterError(f"{name} must have shape [2, {n}, {m}] or [{n}, {m}, 2], got {list(shape)}")
        elif shape != (n, m):
            raise ParameterError(f"{name} must have shape [{n}, {m}], got {list(shape)}")
        check_finite(name, value)
        return value.to(torch.float32)

    def rollout(self, velocity, density, viscosity=None, force=None, source=None, return_velocity: bool = False):
        """Density frames ``[steps, N, M]`` (and velocity frames ``[steps, N, M, 2]`` when
        ``return_velocity``) from the initial ``velocity`` ([2, N, M] or [N, M, 2], m/s) and ``density``
        ([N, M]); differentiable w.r.t. every tensor input that requires grad. ``viscosity``: a scalar
        tensor overriding the constructor's value (so that it can be fitted); ``force`` ([2, N, M] or
        [N, M, 2], m/s^2) and ``source`` ([N, M], 1/s): constant sources added every step."""
        inputs = {"velocity": self._field("velocity", velocity, True), "density": self._field("density", density, False)}
        if viscosity is not None:
            viscosity = torch.as_tensor(viscosity, dtype=torch.float32)
            if viscosity.numel() != 1:
                raise ParameterError(f"viscosity must be a scalar, got shape {list(viscosity.shape)}")
            check_range("viscosity", viscosity, 0.0, None, low_inclusive=True)
            inputs["viscosity"] = viscosity.reshape(())
        if force is not None:
            inputs["force"] = self._field("force", force, True)
        if source is not None:
            inputs["source"] = self._field("source", source, False)
        densities, velocities = run_tape_program(self, inputs)
        return (densities, velocities) if return_velocity else densities


def smoke_frames(sim: SmokeSimulation, velocity, density, **kwargs) -> torch.Tensor:
    """The density video ``[steps, N, M]`` of :meth:`SmokeSimulation.rollout` (differentiable)."""
    return sim.rollout(velocity, density, **kwargs)


def render_smoke(frames: torch.Tensor, smoke_color=(0.95, 0.95, 0.95), background=(0.08, 0.1, 0.2),
                 opacity: float = 2.0) -> torch.Tensor:
    """RGB images ``[F, N, M, 3]`` in [0, 1] of density frames ``[F, N, M]`` (or one frame [N, M]):
    ``alpha = 1 - exp(-opacity max(rho, 0))``, ``rgb = alpha smoke_color + (1 - alpha) background``.
    ``background``: an RGB triple or an image ``[N, M, 3]``. Differentiable in every tensor argument."""
    if not isinstance(frames, torch.Tensor) or frames.dim() not in (2, 3):
        raise ParameterError(f"frames must be a tensor [F, N, M] or [N, M], got {getattr(frames, 'shape', type(frames))}")
    check_range("opacity", opacity, 0.0, None)
    colour = torch.as_tensor(smoke_color, dtype=frames.dtype, device=frames.device)
    back = torch.as_tensor(background, dtype=frames.dtype, device=frames.device)
    if colour.shape != (3,):
        raise ParameterError(f"smoke_color must be an RGB triple, got shape {list(colour.shape)}")
    if back.shape != (3,) and tuple(back.shape) != (*frames.shape[-2:], 3):
        raise ParameterError(f"background must be an RGB triple or an image [{frames.shape[-2]}, {frames.shape[-1]}, 3], "
                             f"got shape {list(back.shape)}")
    alpha = (1.0 - torch.exp(-opacity * frames.clamp(min=0.0)))[..., None]
    return alpha * colour + (1.0 - alpha) * back


def divergence(velocity, cell_size: float = 1.0) -> np.ndarray:
    """The discrete divergence ``D u`` [N, M] (1/s) the projection drives to zero, of a velocity
    ``[N, M, 2]`` or ``[2, N, M]`` (numpy or torch); runs the model's kernel on the CPU."""
    u = velocity.detach().cpu().numpy() if isinstance(velocity, torch.Tensor) else np.asarray(velocity)
    if u.ndim == 3 and u.shape[0] == 2 and u.shape[2] != 2:
        u = np.moveaxis(u, 0, -1)
    u = wp.array(np.ascontiguousarray(u, dtype=np.float32), dtype=wp.vec2, device="cpu")
    out = wp.empty(u.shape, dtype=wp.float32, device="cpu")
    wp.launch(kernels.divergence_kernel, dim=u.shape, inputs=[u, 0.5 / cell_size], outputs=[out], device="cpu")
    return out.numpy()


__all__ = ["SmokeSimulation", "divergence", "render_smoke", "smoke_frames"]

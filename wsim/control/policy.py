"""The open-loop controller of the paper's visuomotor control tasks (Appendix E, Fig. 10).

Simulation time ``t`` -> ``N`` phase-shifted sinusoids ``sin(2 pi f t + 2 pi i / N)`` (i = 0..N-1)
-> a fully connected layer without bias ``W`` [elements, N] -> ``tanh`` -> times ``scale``: one
activation value per element (tetrahedron or triangle) at every frame interval. The output
``[frames - 1, elements]`` is what the simulation takes as ``control_tet_activation`` or
``control_tri_activation`` (row k drives the physics steps between rendered frames k and k + 1).
"""

from __future__ import annotations

import math

import torch


class SinusoidPolicy(torch.nn.Module):
    """``activation(t) = scale * tanh(W s(t))`` with ``s_i(t) = sin(2 pi f t + 2 pi i / N)``.

    ``elements``: number of outputs; ``sinusoids``: N; ``frequency``: f (Hz); ``scale``: the largest
    activation magnitude; ``init_std``: standard deviation of the initial weights (``generator`` seeds
    them)."""

    def __init__(self, elements: int, sinusoids: int = 8, frequency: float = 2.0, scale: float = 0.3,
                 init_std: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        if elements < 1 or sinusoids < 1:
            raise ValueError(f"policy needs elements >= 1 and sinusoids >= 1, got {elements}, {sinusoids}")
        self.elements, self.sinusoids = int(elements), int(sinusoids)
        self.frequency, self.scale = float(frequency), float(scale)
        weight = torch.randn(self.elements, self.sinusoids, generator=generator) * float(init_std)
        self.weight = torch.nn.Parameter(weight)
        self.register_buffer("phase", 2.0 * math.pi * torch.arange(self.sinusoids, dtype=torch.float32) / sinusoids)

    def features(self, times: torch.Tensor) -> torch.Tensor:
        """The sinusoids ``[T, N]`` at ``times`` [T] (s)."""
        times = torch.as_tensor(times, dtype=torch.float32, device=self.weight.device).reshape(-1, 1)
        return torch.sin(2.0 * math.pi * self.frequency * times + self.phase)

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        """Activations ``[T, elements]`` at ``times`` [T] (s)."""
        return self.scale * torch.tanh(self.features(times) @ self.weight.t())


def interval_times(frames: int, dt: float, substeps: int) -> torch.Tensor:
    """Simulation time at the start of each frame interval, ``[frames - 1]`` (s)."""
    return torch.arange(max(frames - 1, 0), dtype=torch.float32) * float(dt) * int(substeps)

"""Why system identification stalled on a few instances, kept as regressions (issue #15).

cloth-velocity (32 px, sigma 4e-3) stopped 20-30 % off the true velocity on some seeds: the estimate sat
on a step of the pixel loss (3e-6 for a 1e-5 m/s change, where the loss itself was 3e-6), not in a local
minimum (the loss fell monotonically along the line to the truth). The step came from the renderer: a
face's inside coverage falls off with the distance to the nearest soft edge of its ring, and with the
one-ring a sheet's boundary one cell away was in one of two neighbouring faces' rings only, so a pixel
stepped (by 0.23) where its centre crossed the inner edge between them. See
:data:`wsim.render.topology.BOUNDARY_RING_DEPTH`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsim.render import topology
from wsim.render.camera import Camera
from wsim.render.meshes import grid_plane
from wsim.render.renderer import SoftRenderer


def _largest_step(depth: int, monkeypatch, gated_depth: int | None = None) -> float:
    """The largest change of any pixel's alpha between successive frames of a 6 x 6 sheet sliding by 1e-4
    per frame, seen from afar with a wide sigma (measured: 0.10 with the one-ring, 4e-4 with the boundary
    edges of the two-ring; a continuous image changes by far less than 0.02 per frame)."""
    monkeypatch.setattr(topology, "BOUNDARY_RING_DEPTH", depth)
    if gated_depth is not None:
        monkeypatch.setattr(topology, "GATED_RING_DEPTH", gated_depth)
    vertices, faces, _ = grid_plane(0.6, 6)
    camera = Camera.look_at([1.6, 2.2, 1.6], [0.0, 0.0, 0.0], fov_y=40.0)
    renderer = SoftRenderer(camera, image_size=32, sigma=8e-3, shading="flat")
    shifts = torch.arange(0.0, 0.05, 1e-4)
    frames = vertices.unsqueeze(0) + torch.stack([shifts, 0.0 * shifts, 0.5 * shifts], dim=1).unsqueeze(1)
    with torch.no_grad():
        alpha = renderer(frames, faces)[..., 3].numpy()
    return float(np.abs(np.diff(alpha, axis=0)).max())


def test_sheet_coverage_is_continuous_across_inner_edges(monkeypatch):
    assert _largest_step(topology.BOUNDARY_RING_DEPTH, monkeypatch) < 0.02


def test_one_ring_coverage_steps_on_a_sheet(monkeypatch):
    """The old one-ring rings (no boundary edges beyond it, no gated ring) step on the same motion (so the
    test above measures something)."""
    assert _largest_step(1, monkeypatch, gated_depth=1) > 0.05

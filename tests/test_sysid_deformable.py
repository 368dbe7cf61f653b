"""Deformable system identification from video (small, CPU-sized versions of the paper's Table 3 runs).

Stated tolerances (relative errors, free particles) from a random initial guess:
- fem-material (a clamped beam tapped with a known impulse, 10 frames, 32 px): per-particle mass,
  Lame mu and lambda each within 1e-2 (the runs land near 1e-5);
- cloth-velocity (one velocity shared by every particle, 8 frames, 32 px): within 1e-2.
"""

from __future__ import annotations

import numpy as np
import pytest

from wsim.config import SceneConfig, from_dict
from wsim.errors import ConfigError
from wsim.scene import build_scene
from wsim.sysid import load_experiment, run_instance


def test_fem_mass_and_lame_parameters_recovered(tmp_path):
    config = load_experiment("fem-material", ["render.resolution=32", "render.sigma=4e-3", "scene.sim.frames=10"])
    result = run_instance(config, 0, tmp_path, "cpu", progress=False, write_outputs=False)
    errors, initial = result["errors"], result["initial_errors"]
    assert initial["particle_mass"]["rel"] > 0.5 and initial["lame_mu"]["rel"] > 0.1
    assert len(result["estimate"]["particle_mass"]) == 28  # one estimate per particle
    for name in ("particle_mass", "lame_mu", "lame_lambda"):
        assert errors[name]["rel"] < 1e-2, errors


def test_cloth_velocity_recovered(tmp_path):
    config = load_experiment("cloth-velocity", ["render.resolution=32", "render.sigma=4e-3", "scene.sim.frames=8"])
    result = run_instance(config, 0, tmp_path, "cpu", progress=False, write_outputs=False)
    assert result["initial_errors"]["particle_velocity"]["rel"] > 0.5
    assert result["errors"]["particle_velocity"]["rel"] < 1e-2, result["errors"]


def test_soft_body_push_that_selects_nothing_is_named():
    scene = from_dict(SceneConfig, {"ground": {"enabled": False}, "soft_bodies": [{
        "mesh": {"type": "box", "size": 0.2, "cells": [1, 1, 1]},
        "push": {"impulse": [0.0, 1.0, 0.0], "duration": 0.01, "axis": "x", "above": 5.0}}]})
    with pytest.raises(ConfigError, match=r"soft_bodies\.0\.push"):
        build_scene(scene, "cpu")
    scene.soft_bodies[0].push.axis = "w"
    with pytest.raises(ConfigError, match=r"soft_bodies\.0\.push\.axis must be x, y or z"):
        build_scene(scene, "cpu")

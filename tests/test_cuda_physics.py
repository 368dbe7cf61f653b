"""CUDA determinism and CPU/CUDA agreement of the physics (skipped without a GPU)."""

import numpy as np
from conftest import requires_cuda, rollout

from wsim.config import load_config
from wsim.scene import build_scene


def scene_rollout(name, device, *overrides):
    return rollout(build_scene(load_config(name, list(overrides)), device).simulation)


@requires_cuda
def test_same_scene_twice_on_cuda_is_bitwise_identical():
    first = scene_rollout("box-drop", "cuda:0", "sim.frames=21")
    second = scene_rollout("box-drop", "cuda:0", "sim.frames=21")
    np.testing.assert_array_equal(first, second)


@requires_cuda
def test_cuda_matches_cpu():
    for name in ("box-drop", "spring-chain"):
        cpu = scene_rollout(name, "cpu", "sim.frames=21")
        cuda = scene_rollout(name, "cuda:0", "sim.frames=21")
        np.testing.assert_allclose(cuda, cpu, atol=1e-4)

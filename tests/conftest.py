"""Shared test set-up: tests run on the device that exists (CPU here and in CI, CUDA when lent)."""

import os

import pytest

os.environ.setdefault("WSIM_DETERMINISTIC", "1")

import wsim  # noqa: E402,F401  (configures Warp quietly before any kernel compiles)
from wsim.device import cuda_available  # noqa: E402

requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU (none on this machine)")


@pytest.fixture(scope="session")
def device():
    """The device the suite runs on: CUDA when present, else the CPU."""
    return "cuda:0" if cuda_available() else "cpu"

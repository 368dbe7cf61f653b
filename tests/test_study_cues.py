"""The shading-and-texture-cues study (gradSim Fig. 7, benchmarks/study_cues.py) at toy size, and the
body colour pattern it paints."""

import json
import sys
from pathlib import Path

import numpy as np

from wsim.config import load_config
from wsim.scene import build_scene

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import study_cues  # noqa: E402


def test_pattern_paints_the_body_and_plain_bodies_stay_plain():
    plain = build_scene(load_config("body-impulse", ["bodies.0.shape.type=sphere"]), "cpu")
    painted = build_scene(load_config("body-impulse", ["bodies.0.shape.type=sphere", "bodies.0.pattern=0.7"]), "cpu")
    assert np.ptp(plain.colors, axis=0).max() == 0.0
    shade = painted.colors[:, 0] / plain.colors[0, 0]
    # the cells darken by up to the pattern's depth and leave some vertices at (nearly) the plain colour
    assert shade.min() < 0.4 and shade.max() > 0.95 and (shade >= 0.3 - 1e-6).all()


def test_cues_study_runs_at_toy_size_and_every_variant_learns(tmp_path):
    study_cues.main(["--seeds", "1000", "--iterations", "6", "--set", "render.resolution=32",
                     "--set", "scene.sim.frames=8", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "cues_rigid-mass.json").read_text())
    assert set(record["curves"]) == {"colour", "shading", "texture"}
    for variant, (curve,) in record["curves"].items():
        assert len(curve) == 6, variant  # the estimate each step starts from, the initial guess first
        assert curve[-1] < 0.7 * curve[0], (variant, curve)
    # the three renderings differ, so the curves do too
    assert record["curves"]["colour"] != record["curves"]["texture"]
    assert (tmp_path / "cues_rigid-mass.png").read_bytes()[:4] == b"\x89PNG"
    assert "| texture |" in (tmp_path / "cues_rigid-mass.md").read_text()

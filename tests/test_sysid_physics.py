"""Joint contact-parameter estimation from video (small, CPU-sized versions; the deformable
experiments are in test_sysid_deformable.py).

Stated tolerances (relative errors) for a random initial guess:
- rigid-contact (10 frames, 24 px, box thrown onto the ground and sliding): mass 1e-2, mu 2e-2, kd 0.2;
  ke and kf are weakly identifiable in such a short clip (a sliding box's friction saturates at mu |f_n|,
  so kf barely shows) and are only required to keep the video matched (pixel loss < 1e-6).
"""

from __future__ import annotations

from wsim.sysid import load_experiment, run_instance


def test_rigid_contact_parameters_recovered(tmp_path):
    config = load_experiment("rigid-contact", [
        "render.resolution=24", "render.sigma=6e-3", "scene.sim.frames=10", "optim.iterations=30",
        "optim.polish_iterations=15", "loss.horizon_start=3", "loss.horizon_iterations=15", "randomize.shapes=[box]"])
    result = run_instance(config, 2, tmp_path, "cpu", progress=False, write_outputs=False)
    errors, initial = result["errors"], result["initial_errors"]
    assert initial["density"]["rel"] > 0.03 and initial["mu"]["rel"] > 0.5  # a real initial error
    assert errors["mass"]["rel"] < 1e-2, errors
    assert errors["mu"]["rel"] < 2e-2, errors
    assert errors["kd"]["rel"] < 0.2, errors
    assert result["final_loss"] < 1e-6

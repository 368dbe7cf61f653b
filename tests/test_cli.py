"""`wsim simulate` end to end: rollout.npz, a USD stage with one time sample per frame, a video."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from pxr import Usd, UsdGeom

from wsim.cli import main


@pytest.fixture(scope="module")
def box_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("box")
    code = main(["simulate", "box-drop", "--set", "sim.frames=7", "--set", "bodies.0.density=400",
                 "--device", "cpu", "--out", str(out), "--resolution", "48"])
    assert code == 0
    return out


def test_rollout_npz_holds_frames_faces_and_parameters(box_run):
    data = np.load(box_run / "rollout.npz")
    assert data["vertices"].shape == (7, 8, 3)
    assert data["faces"].shape == (12, 3)
    np.testing.assert_allclose(np.diff(data["times"]), 0.0005 * 20)
    assert data["param_body_mass"][0] == pytest.approx(400 * 0.2**3, rel=1e-6)  # the --set reached the model
    assert json.loads(str(data["parameters_json"]))["contact_mu"] == [0.5]
    # the box falls: frame-to-frame motion, and the first frame is the configured start
    assert data["vertices"][0, :, 1].mean() == pytest.approx(0.25, abs=1e-6)
    assert data["vertices"][-1, :, 1].mean() < 0.25


def test_usd_stage_poses_each_body_once_per_frame(box_run):
    stage = Usd.Stage.Open(str(box_run / "rollout.usda"))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert stage.GetTimeCodesPerSecond() == pytest.approx(100.0)
    body = UsdGeom.Xform(stage.GetPrimAtPath("/World/box"))
    ops = body.GetOrderedXformOps()
    assert [op.GetOpType() for op in ops] == [UsdGeom.XformOp.TypeTranslate, UsdGeom.XformOp.TypeOrient]
    assert ops[0].GetAttr().GetTimeSamples() == [float(k) for k in range(7)]
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/World/box/mesh"))
    assert not mesh.GetPointsAttr().GetTimeSamples()  # static points in the body frame
    local = np.array(mesh.GetPointsAttr().Get(), dtype=np.float64)
    vertices = np.load(box_run / "rollout.npz")["vertices"]
    for frame in (0, 3, 6):
        # the composed transform (row vectors, as USD's matrices) puts the body's points where the simulation had them
        matrix = np.array(mesh.ComputeLocalToWorldTransform(Usd.TimeCode(frame)))
        world = local @ matrix[:3, :3] + matrix[3, :3]
        np.testing.assert_allclose(world, vertices[frame], atol=2e-6)


def test_usd_stage_without_poses_samples_the_points(tmp_path):
    from wsim.export import write_rollout_usd

    vertices = np.random.default_rng(0).normal(size=(3, 4, 3)).astype(np.float32)
    write_rollout_usd(tmp_path / "r.usda", vertices, np.array([[0, 1, 2], [0, 2, 3]]), 30.0, [0, 4], ["blob"])
    stage = Usd.Stage.Open(str(tmp_path / "r.usda"))
    points = UsdGeom.Mesh(stage.GetPrimAtPath("/World/blob")).GetPointsAttr()
    assert points.GetTimeSamples() == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(np.array(points.Get(Usd.TimeCode(2))), vertices[2], atol=1e-7)


def test_video_shows_the_scene(box_run):
    frames = iio.imread(box_run / "rollout.mp4")
    assert frames.shape[0] == 7 and frames.shape[1:3] == (48, 48)
    # something other than the white background is in view (the box and the ground)
    assert (frames[0].astype(int).sum(-1) < 600).mean() > 0.05


def test_particles_without_faces_export_as_points(tmp_path):
    assert main(["simulate", "spring-chain", "--set", "sim.frames=3", "--device", "cpu", "--out", str(tmp_path),
                 "--no-video"]) == 0
    stage = Usd.Stage.Open(str(tmp_path / "rollout.usda"))
    points = UsdGeom.Points(stage.GetPrimAtPath("/World/particles"))
    assert len(points.GetPointsAttr().Get(Usd.TimeCode(2))) == 12
    assert not (tmp_path / "rollout.mp4").exists()


def test_cli_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["simulate", "box-drop", "--set", "contact.muu=1", "--out", str(tmp_path)]) == 2
    assert "unknown config key 'contact.muu'" in capsys.readouterr().err
    assert main(["simulate", "box-drop", "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert "device 'tpu' is not a valid device name" in capsys.readouterr().err
    assert main(["gradcheck", "missing-config"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_out_pointing_at_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["simulate", "box-drop", "--no-video", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["run", "rigid-mass", "--quiet", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "not a folder"

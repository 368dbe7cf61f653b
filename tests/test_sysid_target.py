"""A target video wsim did not render in-process: the recorded camera, camera files, the truth of an
external video, and the conversion of grey, RGBA and resized frames.

One tiny rigid-mass run (6 frames, 32 px, 8-bit target) is made once; its saved PNG frames and its
results.json are what a user would have.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from wsim.config import to_dict
from wsim.errors import ConfigError
from wsim.harness import fingerprint
from wsim.render import Camera
from wsim.sysid import Instance, load_experiment, run_instance
from wsim.sysid.target import read_frames
from wsim.sysid.uncertainty import video_uncertainty

SEED = 3
TINY = ["scene.sim.frames=6", "scene.sim.substeps=5", "scene.sim.dt=0.004", "render.resolution=32",
        "render.sigma=4e-3", "render.video_scale=1", "loss.horizon_start=0", "target.bits=8",
        "optim.iterations=6", "optim.polish_iterations=4"]
BUILD_ONLY = ["optim.iterations=0", "optim.polish_iterations=0", "uncertainty.enabled=false"]


def tiny(*extra):
    return load_experiment("rigid-mass", TINY + list(extra))


def instance(tmp_path, *extra, seed=SEED):
    return Instance(tiny(*BUILD_ONLY, *extra), seed, tmp_path / "instance", "cpu")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The in-process run: target rendered by wsim from the seed's truth, camera mode auto."""
    out = tmp_path_factory.mktemp("first") / "run"
    result = run_instance(tiny(), SEED, out, "cpu", progress=False)
    return out, result


def png_folder(folder: Path, frames) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        imageio.imwrite(folder / f"frame_{i:05d}.png", frame)
    return folder


def saved_frames(out: Path) -> np.ndarray:
    return np.stack([imageio.imread(p) for p in sorted((out / "target_frames").glob("*.png"))])


# -- (a) the camera round trip --------------------------------------------------------------------------
def test_recorded_camera_rebuilds_the_auto_camera(first_run, tmp_path):
    out, result = first_run
    record = result["camera"]
    assert set(record) == {"mode", "eye", "target", "up", "fov_y", "near", "far", "resolution", "view_matrix"}
    assert record["mode"] == "look_at" and record["resolution"] == [32, 32] and record["fov_y"] == 40.0
    keys = {k: record[k] for k in ("eye", "target", "up", "fov_y", "near", "far")}
    rebuilt = Camera.look_at(**keys).view[0].double().numpy()
    assert np.array_equal(rebuilt, np.array(record["view_matrix"]))
    # the record is read off the framing that mode auto computes from the truth rollout: same camera
    # to float32 round-off
    built = instance(tmp_path)
    framed = Camera.framing(built.target_vertices, elevation=20.0, azimuth=30.0, fov_y=40.0, margin=1.1)
    assert np.abs(framed.view[0].double().numpy() - rebuilt).max() < 1e-6
    assert built.camera_record() == record
    assert built.target_record["truth"] == "seeded" and built.target_record["source"] == "rendered"


def test_estimate_from_saved_frames_and_recorded_camera_reproduces_the_run(first_run, tmp_path):
    out, first = first_run
    assert first["target"]["noise"]["bits"] == 8
    config = tiny(f"target.video={out / 'target_frames'}", f"render.camera={out / 'results.json'}",
                  "target.truth=seeded")
    # the file became keys: the fingerprint sees the camera's values, the same as when typed in
    record = first["camera"]
    typed = tiny(f"target.video={out / 'target_frames'}", "target.truth=seeded", "render.camera.mode=look_at",
                 *(f"render.camera.{k}={record[k]!r}" for k in ("eye", "target", "up", "fov_y", "near", "far")))
    assert fingerprint(to_dict(config), SEED, "sysid") == fingerprint(to_dict(typed), SEED, "sysid")
    assert to_dict(config)["render"]["camera"]["mode"] == "look_at"
    second = run_instance(config, SEED, tmp_path / "again", "cpu", progress=False, write_outputs=False)
    assert second["camera"] == first["camera"]
    assert second["true"] == first["true"]
    # measured: 8-bit frames round-trip exactly and the camera is rebuilt bit for bit, so the
    # estimate and the loss are identical; 1e-9 leaves room for nothing but a reordered sum
    assert second["estimate"]["density"] == pytest.approx(first["estimate"]["density"], rel=1e-9, abs=0)
    assert second["final_loss"] == pytest.approx(first["final_loss"], rel=1e-9)
    assert second["errors"]["density"]["rel"] == pytest.approx(first["errors"]["density"]["rel"], rel=1e-6, abs=1e-12)
    target = second["target"]
    assert target["source"] == "video" and target["original_size"] == [32, 32] and target["frames"] == 6
    assert target["conversions"] == [] and target["bits"] == 8 and target["path"].endswith("target_frames")
    # the noise is estimated from the video, reported, and is the one the uncertainty step used
    assert target["noise"] == second["uncertainty"]["noise_estimate"]
    assert target["noise"]["bits"] == 8 and target["noise"] == first["target"]["noise"]


# -- (b) mode auto with a target video -------------------------------------------------------------------
def test_auto_camera_with_a_target_video_needs_the_truth(first_run, tmp_path):
    out, first = first_run
    video = f"target.video={out / 'target_frames'}"
    seeded = instance(tmp_path / "seeded", video, "target.truth=seeded")
    assert seeded.config.render.camera.mode == "auto" and seeded.camera_record() == first["camera"]
    # the truth given by value (the seed still draws the scene): the same framing
    given = instance(tmp_path / "given", video, f"params.0.true={first['true']['density']!r}")
    assert given.camera_record() == first["camera"] and given.target_record["truth"] == "given"
    with pytest.raises(ConfigError, match=r"render.camera.mode: auto needs the scene's ground truth.*"
                                          r"--set render.camera=path/to/results.json.*target.truth: seeded"):
        tiny(video)
    # a camera file instead of the truth: the truth stays unknown, no errors are reported
    unknown = instance(tmp_path / "unknown", video, f"render.camera={out / 'results.json'}")
    assert unknown.truth is None and unknown.target_record["truth"] == "unknown"
    assert unknown.camera_record() == first["camera"]


# -- (c) grey, RGBA and resized frames ---------------------------------------------------------------------
def test_grey_rgba_and_resized_frames_compare_as_the_rgb_target(tmp_path):
    grey_scene = "scene.bodies.0.color=[0.6, 0.6, 0.6]"
    rendered = instance(tmp_path / "rendered", grey_scene)
    rgb = (rendered.target_images.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    background = np.all(rgb == 255, axis=-1)
    assert 0 < background.mean() < 1
    rgba = np.concatenate([rgb, np.where(background, 0, 255).astype(np.uint8)[..., None]], axis=-1)
    rgba[background, :3] = [10, 200, 30]  # hidden by alpha 0: the colour there must not matter
    folders = {
        "rgb": png_folder(tmp_path / "rgb", rgb),
        "grey": png_folder(tmp_path / "grey", rgb[..., 0]),
        "rgba": png_folder(tmp_path / "rgba", rgba),
        "double": png_folder(tmp_path / "double", rgb.repeat(2, axis=1).repeat(2, axis=2)),
    }
    expected = {"rgb": [], "grey": ["grey replicated to RGB"], "rgba": ["alpha composited over render.background"],
                "double": ["resampled from 64x64 to 32x32 pixels (area averaging)"]}
    with torch.no_grad():
        reference = float(rendered.loss(rendered.initial)[0])
    assert reference > 1e-4  # the initial guess is off: a loss that could differ
    for name, folder in folders.items():
        built = instance(tmp_path / name, grey_scene, f"target.video={folder}", "target.truth=seeded")
        assert built.target_record["conversions"] == expected[name], name
        assert torch.equal(built.target_images, rendered.target_images), name
        with torch.no_grad():
            assert float(built.loss(built.initial)[0]) == reference, name
        if name == "rgba":  # the alpha channel is the target's object mask (of the mask loss)
            assert built.target_record["alpha_channel"]
            masked = instance(tmp_path / "mask", grey_scene, f"target.video={folder}", "target.truth=seeded",
                              "loss.type=mask")
            assert masked.mask_record["source"] == "the video's alpha channel"
            assert torch.equal(masked.target_alpha, torch.as_tensor(~background, dtype=torch.float32))
    assert built.target_record["original_size"] == [64, 64] and built.target_record["size"] == [32, 32]


def test_a_target_rendered_at_twice_the_size_is_averaged_down(tmp_path):
    """A real 64 px render of the same scene, area-averaged to 32 px, against the 32 px render: the
    averaging of 2x2 samples matches the centre sample to second order in the pixel size."""
    small = instance(tmp_path / "small")
    large = instance(tmp_path / "large", "render.resolution=64")
    frames = (large.target_images.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    built = instance(tmp_path / "built", f"target.video={png_folder(tmp_path / 'large_frames', frames)}",
                     "target.truth=seeded")
    # the average of each 2x2 block (what area averaging must give at an integer factor)
    blocks = (frames / np.float32(255)).reshape(6, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(built.target_images.cpu().numpy() - blocks).max() < 1e-6
    difference = np.abs(built.target_images.cpu().numpy() - small.target_images.cpu().numpy())
    # measured: mean 2.9e-3, max 0.35 (at silhouette pixels, where 2x2 area samples and one soft
    # centre sample differ most): sampling, not a misplaced or scaled image
    assert difference.mean() < 5e-3 and difference.max() < 0.45
    with torch.no_grad():  # measured: the truth's loss is 0.006 times the initial guess's
        assert float(built.loss(built.truth)[0]) < 0.05 * float(built.loss(built.initial)[0])


def test_rgba_alpha_is_coverage_over_the_background(tmp_path):
    frame = np.zeros((3, 4, 4), np.uint8)
    frame[..., :3] = [200, 40, 0]
    frame[..., 3] = [[0, 64, 128, 255]] * 3
    background = (0.2, 0.5, 1.0)
    images = read_frames(png_folder(tmp_path / "rgba", [frame, frame]), background)
    grey = read_frames(png_folder(tmp_path / "grey_alpha", [frame[..., [0, 3]]]), background)
    alpha = frame[..., 3:].astype(np.float32) / 255
    expected = alpha * (frame[..., :3] / np.float32(255)) + (1 - alpha) * np.float32(background)
    assert images.shape == (2, 3, 4, 3) and np.allclose(images[0], expected, atol=1e-6)
    expected_grey = alpha * (frame[..., :1] / np.float32(255)) + (1 - alpha) * np.float32(background)
    assert grey.shape == (1, 3, 4, 3) and np.allclose(grey[0], expected_grey, atol=1e-6)


def test_noise_of_an_external_video_is_measured_and_used(tmp_path):
    grey = "render.background=[0.5, 0.5, 0.5]"  # a mid-grey background: noise that 255 does not clip
    clean = instance(tmp_path / "clean", grey).target_images.cpu().numpy().astype(np.float64)
    noisy = clean + np.random.default_rng(0).normal(0.0, 0.02, size=clean.shape)
    folder = png_folder(tmp_path / "noisy", np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8))
    built = instance(tmp_path / "built", grey, f"target.video={folder}", "target.truth=seeded",
                     "uncertainty.enabled=true")
    noise = built.target_record["noise"]
    # measured 0.0213 (the 8-bit rounding adds its own 0.0011 and the estimator's spread)
    assert noise["measured"] == pytest.approx(0.02, rel=0.15) and noise["noise"] == noise["measured"]
    report = video_uncertainty(built, built.truth)
    assert report["noise"] == noise["noise"] and report["noise_estimate"] == noise


@pytest.mark.parametrize("size, frames, message", [
    ((32, 48), 6, r"frames are 48x32 pixels but the camera renders 32x32 \(render.resolution\), another aspect "
                  r"ratio \(1.5 against 1\)"),
    ((32, 32), 5, r"has 5 frames but the experiment simulates 6 \(scene.sim.frames\); set scene.sim.frames=5"),
])
def test_another_aspect_ratio_or_frame_count_is_refused(tmp_path, size, frames, message):
    folder = png_folder(tmp_path / "frames", np.full((frames, *size, 3), 255, np.uint8))
    with pytest.raises(ConfigError, match=message):
        instance(tmp_path, f"target.video={folder}", "target.truth=seeded")


# -- (d) camera files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    ('{"camera": {"eye": [0, 1, 5], "fov_y": 40}}', r"lacks the camera key\(s\) target"),
    ("{not json", r"is not valid JSON"),
    ('{"eye": [0, 1, 5], "target": [0, 1, 0], "fov_y": 40, "zoom": 2}', r"unknown camera key\(s\) zoom; allowed"),
    ('{"eye": [0, 1, 5], "target": [0, 1, 0], "fov_y": 400}', r"config key 'fov_y' must lie in \(0, 180\)"),
    ('{"eye": [0, 1, 5], "target": [0, 1, 0], "fov_y": 40, "resolution": [32, 64]}',
     r"records a camera of resolution \[32, 64\].*render.resolution is \[32, 32\]"),
    ('{"eye": [0, 1, 5], "target": [0, 1, 0], "fov_y": 40, "mode": "auto"}', r"mode must be look_at"),
])
def test_bad_camera_file_is_named(tmp_path, content, message):
    path = tmp_path / "camera.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"render.camera: camera file '.*camera.json'.*" + message):
        tiny(f"render.camera={path}")


def test_camera_file_paths_and_resolutions(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "view.yaml").write_text("eye: [0.0, 1.3, 6.0]\ntarget: [0.0, 1.3, 0.0]\nfov_y: 35.0\n"
                                                "near: 0.5\nresolution: [64, 64]\n")
    source = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "rigid-mass.yaml"
    (tmp_path / "exp" / "mine.yaml").write_text(source.read_text())
    monkeypatch.chdir(tmp_path)
    # relative to the config's folder when not found from the working folder
    loaded = load_experiment(str(tmp_path / "exp" / "mine.yaml"), TINY + ["render.camera=view.yaml"])
    camera = loaded.render.camera
    assert (camera.mode, camera.eye, camera.fov_y, camera.near, camera.far) == ("look_at", [0.0, 1.3, 6.0], 35.0,
                                                                                0.5, 100.0)
    # a recorded 64 px camera at render.resolution 32: the same camera, sampled more coarsely
    assert loaded.render.resolution == 32
    with pytest.raises(ConfigError, match=r"camera file 'view.yaml' does not exist"):
        tiny("render.camera=view.yaml")
    json_path = tmp_path / "exp" / "results.json"
    json_path.write_text(json.dumps({"seed": 1, "camera": {"mode": "look_at", "eye": [1, 2, 3], "target": [0, 0, 0],
                                                           "up": [0, 1, 0], "fov_y": 30, "near": 0.1, "far": 10,
                                                           "resolution": [32, 32],
                                                           "view_matrix": np.eye(4).tolist()}}))
    assert tiny("render.camera=exp/results.json").render.camera.eye == [1.0, 2.0, 3.0]

"""Mitsuba 3 as a second, independent renderer (wsim/render/mitsuba.py) and ``wsim render``.

The references are wsim's own hard rasteriser (pixel-centre coverage, ``raster.visible_surface``) for
silhouettes and the camera, and wsim's Phong renderer for colours under the matched appearance.
Measured on the 2-core CPU (scalar_rgb, Mitsuba 3.9.1, 64 spp, the posed shapes below): IoU of alpha >
0.5 against the hard coverage 0.992 (box), 0.996 (sphere), 0.987 (L prism), 0.985 (star prism), 0.996
(gear prism), 0.998 (peanut blob) at 64 px and 0.993-0.998 at 128 px, centroids within 0.09 px;
matched colours on a sphere's interior at 256 spp: mean absolute difference 0.009 (sampling noise),
mean signed difference below 1e-3 per channel.
"""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("mitsuba")

from wsim.cli import main  # noqa: E402
from wsim.errors import ConfigError, ParameterError  # noqa: E402
from wsim.export import write_rollout_npz  # noqa: E402
from wsim.geometry.primitives import icosphere  # noqa: E402
from wsim.geometry.shapes import shape_mesh  # noqa: E402
from wsim.geometry.transforms import axis_angle_quaternion, rotation_matrix  # noqa: E402
from wsim.render import Camera, DirectionalLight, Material, SoftRenderer, raster  # noqa: E402
from wsim.render import mitsuba as wmi  # noqa: E402
from wsim.render.appearance import VIDEO_LIGHT_DIRECTION, Appearance, Ground, sample_appearance  # noqa: E402
from wsim.render.video import to_uint8  # noqa: E402


def _posed(name: str):
    mesh = icosphere(0.5, 3) if name == "sphere" else shape_mesh(name)
    rot = rotation_matrix(axis_angle_quaternion([0.3, 1.0, 0.2], 0.7))
    vertices = np.asarray(mesh.vertices) @ rot.T + np.array([0.1, 0.05, -0.1])
    return torch.tensor(vertices, dtype=torch.float32), torch.tensor(np.asarray(mesh.faces), dtype=torch.int64)


def _camera():
    return Camera.look_at((1.2, 0.9, 2.0), (0.05, 0.0, 0.0), fov_y=40.0, near=0.1, far=10.0)


def _hard(camera, vertices, faces, size) -> np.ndarray:
    clip = camera.world_to_clip(vertices[None], size)
    _, tri = raster.visible_surface(clip, faces, size, "warp", camera.near)
    return (tri[0] > 0).numpy()


def _centroid(weights: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[: weights.shape[0], : weights.shape[1]]
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        inner = out.copy()
        inner[1:] &= out[:-1]
        inner[:-1] &= out[1:]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        out = inner
    return out


@pytest.mark.parametrize("name, size", [("box", (64, 64)), ("sphere", (64, 64)), ("l_prism", (64, 64)),
                                        ("star_prism", (64, 64)), ("l_prism", (48, 80))])
def test_silhouette_matches_wsim_hard_coverage(name, size):
    """Mitsuba's alpha (box filter: covered area) above 1/2 against wsim's pixel-centre coverage: the
    two differ only where an edge passes between a pixel's centre and its half-area line."""
    vertices, faces = _posed(name)
    camera = _camera()
    rgb, alpha = wmi.render_mitsuba(vertices, faces, None, camera, size, spp=64, return_alpha=True)
    assert rgb.shape == (1, *size, 3) and alpha.shape == (1, *size) and rgb.dtype == np.float32
    hard = _hard(camera, vertices, faces, size)
    mask = alpha[0] > 0.5
    iou = (mask & hard).sum() / (mask | hard).sum()
    assert iou >= 0.98, iou
    assert np.abs(_centroid(mask.astype(float)) - _centroid(hard.astype(float))).max() < 0.3
    assert abs(alpha[0].sum() - hard.sum()) < 0.02 * hard.sum()  # covered area, not only its outline


@pytest.mark.parametrize("name", ["box", "sphere", "l_prism", "star_prism"])
def test_supersampled_alpha_is_the_covered_area(name):
    """With ``supersample`` the soft alpha averages s x s samples per pixel: the covered fraction of each
    pixel, which Mitsuba's box-filtered film gives independently. Measured at 64 px (rms difference on
    the outline pixels; area): s = 1, sigma 1e-3 (the shipped sigma) 0.28-0.31, up to 3.4 % of the area;
    s = 1, sigma 1e-4 0.09-0.10; s = 2, sigma 2.5e-5 0.036-0.041; s = 4, sigma 6e-6 0.024-0.028, area
    within 0.21 %."""
    vertices, faces = _posed(name)
    camera = _camera()
    size = (64, 64)
    _, alpha = wmi.render_mitsuba(vertices, faces, None, camera, size, spp=256, return_alpha=True)
    edge = (alpha[0] > 0) & (alpha[0] < 1)

    def rms(supersample, sigma):
        a = SoftRenderer(camera, image_size=size, sigma=sigma, supersample=supersample)(vertices, faces)
        assert a.shape == (1, *size, 4)
        d = a[0, ..., 3].numpy() - alpha[0]
        return float(np.sqrt((d[edge] ** 2).mean())), float(a[0, ..., 3].sum() / alpha[0].sum() - 1)

    single, _ = rms(1, 1e-4)
    double, _ = rms(2, 2.5e-5)
    quad, area = rms(4, 6e-6)
    assert quad < 0.035 and double < 0.05 and double < 0.5 * single, (single, double, quad)
    assert abs(area) < 3e-3, area


def test_camera_projection_matches_wsim_without_flip():
    """Small balls at known points, non-square image, off-centre target: where Mitsuba draws each one
    (alpha-weighted centre) is where wsim's camera projects it (pixel (i, j) is centred at (j+0.5, i+0.5))."""
    points = np.array([[0.6, 0.3, 0.0], [-0.5, -0.2, 0.3], [0.1, 0.5, -0.6], [-0.3, 0.4, 0.5]])
    ball = icosphere(0.04, 2)
    vertices = np.concatenate([np.asarray(ball.vertices) + p for p in points])
    faces = np.concatenate([np.asarray(ball.faces) + k * len(ball.vertices) for k in range(len(points))])
    size = (60, 90)
    camera = Camera.look_at((0.8, 1.1, 2.6), (0.2, 0.1, -0.1), fov_y=35.0)
    _, alpha = wmi.render_mitsuba(vertices, faces, None, camera, size, spp=256, return_alpha=True)
    uv = camera.project_to_pixels(torch.tensor(points, dtype=torch.float32), size)[0].numpy()
    rows, cols = np.mgrid[: size[0], : size[1]]
    for (u, v) in uv:
        window = alpha[0] * ((np.abs(cols + 0.5 - u) < 5) & (np.abs(rows + 0.5 - v) < 5))
        assert window.sum() > 1.0  # the ball is there at all
        centre = _centroid(window) + 0.5
        assert abs(centre[1] - u) < 0.15 and abs(centre[0] - v) < 0.15, (centre, u, v)


def test_matched_colours_agree_with_wsim_phong_on_a_sphere():
    """Diffuse albedo = vertex colour, a directional light of strength kd and an environment of ka give
    wsim's Phong shading without its highlight (not reproduced) on a convex object; the background is
    composited exactly. Tolerances: 256 spp leave a per-pixel noise of about 0.01 (measured mean
    absolute difference 0.009) and no bias (measured below 1e-3)."""
    mesh = icosphere(0.5, 3)
    vertices = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.int64)
    colors = torch.tensor([0.85, 0.35, 0.2]).expand(len(vertices), 3)
    camera, size = _camera(), (64, 64)
    mine = wmi.render_mitsuba(vertices, faces, colors, camera, size, Appearance.matched(), spp=256, seed=1)[0]
    no_highlight = Material(specular=(0.0, 0.0, 0.0))
    wsim = SoftRenderer(camera, size, sigma=1e-7, shading="phong")(vertices[None], faces, colors=colors,
                                                                   material=no_highlight)[0, ..., :3].numpy()
    hard = _hard(camera, vertices, faces, size)
    inner = _erode(hard, 2)
    diff = (mine - wsim)[inner]
    assert inner.sum() > 500
    assert np.abs(diff).mean() < 0.015, np.abs(diff).mean()
    assert np.abs(diff.mean(0)).max() < 0.004, diff.mean(0)
    outside = ~_erode(~hard, 2)
    assert np.array_equal(mine[~outside], np.ones_like(mine[~outside]))  # white background, exactly
    # a darker light and ambient darken the sphere by their ratio (linear output, no tone curve)
    half = Appearance(light=(0.35,) * 3, ambient=(0.15,) * 3, background=None)
    dim = wmi.render_mitsuba(vertices, faces, colors, camera, size, half, spp=256, seed=1)[0]
    assert np.allclose(dim[inner], 0.5 * (mine[inner]), atol=1e-5)


def test_ground_checker_has_the_stated_square_size():
    """The checkerboard ground has squares of the stated side, counted from above."""
    tiny = np.array([[0.0, 2.0, 0.0], [0.01, 2.0, 0.0], [0.0, 2.0, 0.01]]) + np.array([3.0, 0.0, 3.0])
    camera = Camera.look_at((0.0, 4.0, 0.0), (0.0, 0.0, 0.0), up=(0.0, 0.0, -1.0), fov_y=40.0)
    look = Appearance(light=(0.0,) * 3, ambient=(1.0,) * 3,
                      ground=Ground(height=0.0, color_a=(1.0,) * 3, color_b=(0.0,) * 3, checker=0.25))
    rgb = wmi.render_mitsuba(tiny, np.array([[0, 1, 2]]), None, camera, (128, 128), look, spp=4)[0]
    row = rgb[64, :, 0] > 0.5
    transitions = np.count_nonzero(row[1:] != row[:-1])
    expected = 2 * 4.0 * math.tan(math.radians(20.0)) / 0.25  # squares across the view at distance 4
    assert abs(transitions - expected) <= 1.5, (transitions, expected)


def test_appearance_draws_follow_their_stated_ranges():
    rng = np.random.default_rng(0)
    base = Appearance.matched(ground_height=0.0)
    assert sample_appearance(rng, "matched", base) == base
    for _ in range(100):
        light = sample_appearance(rng, "light", base)
        d = -np.asarray(light.light_direction)
        elevation = math.degrees(math.asin(d[1] / np.linalg.norm(d)))
        assert 20.0 <= elevation <= 80.0 and 0.4 <= light.light[0] <= 1.0 and 0.1 <= light.ambient[0] <= 0.5
        assert light.background == base.background and light.ground == base.ground
        bg = sample_appearance(rng, "background", base).background
        assert all(0.05 <= c <= 0.85 for c in bg)
        r = sample_appearance(rng, "random", base)
        assert r.ground is not None and r.ground.height == 0.0 and 0.1 <= r.ground.checker <= 0.4
        assert 0.0 <= r.specular <= 0.5 and 0.05 <= r.roughness <= 0.5
        assert r.area_light is None or 3.0 <= r.area_light.distance <= 6.0
        assert Appearance.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    a = sample_appearance(np.random.default_rng(7), "random")
    assert a == sample_appearance(np.random.default_rng(7), "random")  # a seed gives one appearance
    flat = Appearance.matched(type("R", (), {"shading": "flat", "background": (0.2, 0.3, 0.4)})())
    assert flat.light == (0.0, 0.0, 0.0) and flat.ambient == (1.0, 1.0, 1.0) and flat.background == (0.2, 0.3, 0.4)
    with pytest.raises(ConfigError, match="matched, light, background, random"):
        sample_appearance(rng, "sunset")
    with pytest.raises(ParameterError, match="appearance background"):
        Appearance(background=(1.5, 0.0, 0.0))


def test_missing_mitsuba_and_bad_variant_are_clear_errors(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setattr(wmi, "_chosen_variant", None)
    monkeypatch.setenv(wmi.VARIANT_ENV, "no_such_variant")
    with pytest.raises(ConfigError, match="WSIM_MITSUBA_VARIANT=no_such_variant.*scalar_rgb"):
        wmi.mitsuba_variant()
    monkeypatch.setitem(sys.modules, "mitsuba", None)  # what an environment without the package sees
    with pytest.raises(ConfigError, match=r"pip install wsim\[mitsuba\]"):
        wmi.render_mitsuba(np.zeros((3, 3)), np.array([[0, 1, 2]]), camera=_camera())
    _tiny_rollout(tmp_path / "rollout.npz")
    assert main(["render", str(tmp_path), "--resolution", "8", "--out", str(tmp_path / "out")]) == 2
    assert "pip install wsim[mitsuba]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing half-written


def _tiny_rollout(path):
    from wsim.geometry.primitives import box

    mesh = box(0.4)
    frames = np.stack([np.asarray(mesh.vertices) + [0.0, 0.5 - 0.1 * k, 0.0] for k in range(3)]).astype(np.float32)
    colors = np.tile(np.float32([[0.85, 0.35, 0.2]]), (len(mesh.vertices), 1))
    write_rollout_npz(path, frames, np.asarray(mesh.faces), 10.0, {"density": np.float32(5.0)},
                      body_vertex_start=[0, len(mesh.vertices)], body_names=["box"], colors=colors, ground_height=0.0)
    return frames, np.asarray(mesh.faces), colors


def test_cli_render_rollout_writes_frames_video_and_appearance(tmp_path, capsys):
    import imageio.v3 as iio

    from wsim.render.rerender import load_source

    frames, faces, colors = _tiny_rollout(tmp_path / "rollout.npz")
    out = tmp_path / "out"
    args = ["render", str(tmp_path / "rollout.npz"), "--resolution", "32", "--spp", "8", "--seed", "4",
            "--out", str(out)]
    assert main(args) == 0
    assert "3 frames of 32x32 px with mitsuba" in capsys.readouterr().out
    pngs = sorted((out / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{k:05d}.png" for k in range(3)]
    assert iio.imread(out / "render.mp4", index=None).shape == (3, 32, 32, 3)
    record = json.loads((out / "appearance.json").read_text())
    look = Appearance.from_dict(record["appearance"])
    assert look == Appearance.matched(lights=[DirectionalLight(direction=VIDEO_LIGHT_DIRECTION)], ground_height=0.0)
    assert record["renderer"] == "mitsuba" and record["settings"]["spp"] == 8 and record["frames"] == 3
    assert record["fps"] == pytest.approx(10.0)
    # the frames are what render_mitsuba draws with the recorded appearance and camera
    c = record["camera"]
    camera = Camera.look_at(c["eye"], c["target"], c["up"], fov_y=c["fov_y"], near=c["near"], far=c["far"])
    again = wmi.render_mitsuba(frames, faces, colors, camera, (32, 32), look, spp=8, seed=4)
    saved = np.stack([iio.imread(p) for p in pngs]).astype(int)
    assert np.abs(saved - to_uint8(again).astype(int)).max() <= 1
    assert load_source(tmp_path).vertices.shape == frames.shape  # the folder of wsim simulate works too
    # the wsim renderer cannot draw a random appearance's textured ground: a clear error, exit 2
    assert main(["render", str(tmp_path), "--renderer", "wsim", "--appearance", "random", "--out", str(out)]) == 2
    assert "cannot draw" in capsys.readouterr().err


def test_cli_render_bad_paths_are_clear_errors(tmp_path, capsys):
    cases = {tmp_path / "missing.npz": "does not exist", tmp_path: "neither results.json",
             tmp_path / "notes.txt": "not a .npz rollout", tmp_path / "other.npz": "has no vertices"}
    (tmp_path / "notes.txt").write_text("hello")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    for path, message in cases.items():
        assert main(["render", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err, err
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"camera": {"eye": [0, 0, 3], "target": [0, 0, 0], "up": [0, 1, 0]}}))
    assert main(["render", str(run)]) == 2
    assert "target_rollout.npz" in capsys.readouterr().err


SMALL_RUN = ["scene.sim.frames=4", "scene.sim.substeps=5", "scene.sim.dt=0.004", "render.resolution=24",
             "randomize.shapes=[l_prism]", "optim.iterations=0", "optim.polish_iterations=0", "render.video_scale=1"]


def test_cli_render_run_folder_reproduces_the_run_target(tmp_path, capsys):
    """A ``wsim run`` folder holds the camera (results.json) and the target rollout: wsim's renderer
    draws the saved target frames again, and Mitsuba draws the same silhouette."""
    import imageio.v3 as iio

    run = tmp_path / "run"
    args = ["run", "rigid-mass", "--device", "cpu", "--quiet", "--out", str(run)]
    main(args + sum((["--set", s] for s in SMALL_RUN), []))
    assert (run / "target_rollout.npz").is_file() and (run / "estimate_rollout.npz").is_file()
    assert main(["render", str(run), "--renderer", "wsim", "--out", str(tmp_path / "w")]) == 0
    target = np.stack([iio.imread(p) for p in sorted((run / "target_frames").glob("*.png"))]).astype(int)
    again = np.stack([iio.imread(p) for p in sorted((tmp_path / "w" / "frames").glob("*.png"))]).astype(int)
    assert target.shape == again.shape == (4, 24, 24, 3)
    assert np.abs(target - again).max() <= 1
    assert main(["render", str(run), "--spp", "16", "--out", str(tmp_path / "m")]) == 0
    drawn = np.stack([iio.imread(p) for p in sorted((tmp_path / "m" / "frames").glob("*.png"))]).astype(int)
    covered_wsim, covered_mitsuba = (target < 250).any(-1), (drawn < 250).any(-1)
    assert (covered_wsim & covered_mitsuba).sum() / (covered_wsim | covered_mitsuba).sum() > 0.85

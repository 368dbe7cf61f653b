"""PNG / MP4 / GIF output and the rollout video helper."""

import numpy as np
import pytest
import torch

from wsim.errors import ConfigError
from wsim.render import cube, render_rollout_video, write_frames, write_video


def _frames(n=4, h=18, w=22):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, h, w, 4, generator=g)


def test_png_frames_round_trip(tmp_path):
    import imageio.v3 as iio

    images = _frames()
    paths = write_frames(images, tmp_path / "frames")
    assert [p.name for p in paths] == [f"frame_{i:05d}.png" for i in range(4)]
    back = iio.imread(paths[2])
    expected = (images[2, ..., :3].numpy() * 255 + 0.5).astype(np.uint8)
    assert back.shape == (18, 22, 3) and np.array_equal(back, expected)
    assert not [p for p in (tmp_path / "frames").iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_files_are_written_atomically(tmp_path, suffix):
    import imageio.v3 as iio

    path = write_video(_frames(), tmp_path / f"clip{suffix}", fps=10)
    assert path.exists() and path.stat().st_size > 0
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 4 and frames.shape[-1] == 3
    assert frames.shape[1] >= 18 and frames.shape[2] >= 22  # mp4 pads odd sizes to even
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"clip{suffix}"]


def test_bad_video_suffix_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=".mp4"):
        write_video(_frames(), tmp_path / "clip.avi")


def test_render_rollout_video(tmp_path):
    import imageio.v3 as iio

    v, f = cube(0.5)
    rollout = torch.stack([v + torch.tensor([0.0, 1.0 - 0.1 * k, 0.0]) for k in range(5)])
    out = render_rollout_video(rollout, f, tmp_path / "roll.mp4", image_size=(32, 40), ground_height=0.0,
                               frames_dir=tmp_path / "png", batch=2)
    frames = iio.imread(out, index=None)
    assert frames.shape == (5, 32, 40, 3)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 5
    first = iio.imread(pngs[0]).astype(float)
    assert first.std() > 5  # the scene is visible, not a blank frame

"""The learned-regressor baselines of Table 1 (wsim/sysid/regressor.py) at toy size: the dataset shards
and their resume, the truth they store, that training learns (on the training set: overfitting is the
point here, not generalisation) and the ConvLSTM cell."""

import json

import numpy as np
import pytest
import torch

from wsim.sysid import load_experiment
from wsim.sysid import regressor as R
from wsim.sysid.instance import Instance

SIZE, FRAMES = 16, 4


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test host is shared
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    R.make_dataset(folder, range(24), SIZE, FRAMES, shard_size=12, progress=False)
    return R.load_dataset(folder)


def test_shards_and_manifest_are_written_and_resume_without_redoing_work(tmp_path, capsys):
    manifest = R.make_dataset(tmp_path, range(6), SIZE, FRAMES, shard_size=4)
    assert [s["file"] for s in manifest["shards"]] == ["shard_0000.npz", "shard_0001.npz"]
    assert [s["seeds"] for s in manifest["shards"]] == [[0, 1, 2, 3], [4, 5]]
    assert json.loads((tmp_path / "manifest.json").read_text())["complete"]
    first = (tmp_path / "shard_0000.npz").stat().st_mtime_ns
    (tmp_path / "shard_0001.npz").unlink()  # as if the run had been killed before the second shard
    capsys.readouterr()
    R.make_dataset(tmp_path, range(6), SIZE, FRAMES, shard_size=4)
    log = capsys.readouterr().out
    assert "shard 2/2" in log and "shard 1/2" not in log  # only the missing shard was rendered again
    assert (tmp_path / "shard_0000.npz").stat().st_mtime_ns == first
    data = R.load_dataset(tmp_path)
    assert data["frames"].shape == (6, FRAMES, SIZE, SIZE, 3) and data["frames"].dtype == np.uint8
    assert data["seed"].tolist() == list(range(6))
    with pytest.raises(ValueError, match="other settings"):
        R.make_dataset(tmp_path, range(6), SIZE + 16, FRAMES, shard_size=4)


def test_a_shard_holds_the_instance_truth_and_target_frames(toy, tmp_path):
    config = load_experiment("rigid-mass", [f"render.resolution={SIZE}", f"scene.sim.frames={FRAMES}"])
    instance = Instance(config, 5, tmp_path, device="cpu")
    density = float(instance.truth["density"])
    volume = float(np.sum(instance.scene.model.body_volume))
    assert toy["density"][5] == density and toy["volume"][5] == volume
    assert toy["mass"][5] == pytest.approx(density * volume, rel=1e-12)
    assert toy["shape"][5] == instance.scene_config.bodies[0].shape.type
    np.testing.assert_allclose(toy["impulse"][5], instance.scene_config.bodies[0].push.impulse, rtol=1e-6)
    frames = instance.target_images.numpy()
    assert np.abs(toy["frames"][5] / 255.0 - frames).max() <= 0.5 / 255.0 + 1e-6  # 8-bit rounding only
    # the masses span a wide range: the reason the models regress log mass
    assert toy["mass"].max() / toy["mass"].min() > 3.0


# the cnn at a quarter of B0's width and depth: the same code path, a fraction of the time on one core
@pytest.mark.parametrize("kind, epochs, lr", [("convlstm", 40, 3e-3), ("cnn", 20, 1e-3)])
def test_training_lowers_the_loss_and_beats_a_constant_on_the_training_set(toy, kind, epochs, lr):
    if kind == "cnn":
        try:
            import timm  # noqa: F401
        except Exception as error:  # missing, or a torchvision built for another torch
            pytest.skip(f"the cnn baseline needs timm (pip install wsim[baselines]): {type(error).__name__}")
    model, record = R.train(kind, toy, epochs=epochs, batch=8, lr=lr, width=0.25, depth=0.25, progress=False)
    losses = record["losses"]
    assert losses[-1] < 0.3 * losses[0], losses
    constant = np.full(len(toy["mass"]), np.exp(np.log(toy["mass"]).mean()))  # the best constant in log space
    fitted, baseline = R.mass_errors(R.predict(model, toy, record["norm"]), toy["mass"]), R.mass_errors(constant, toy["mass"])
    assert fitted["rel"] < 0.8 * baseline["rel"] and fitted["abs"] < 0.8 * baseline["abs"], (fitted, baseline)


def test_convlstm_cell_shapes_and_gradients_through_time():
    torch.manual_seed(0)
    cell = R.ConvLSTMCell(3, 4)
    x = torch.randn(2, 5, 3, 7, 6, requires_grad=True)  # batch, time, channels, height, width
    state = None
    for t in range(5):
        h, state = cell(x[:, t], state)
    assert h.shape == (2, 4, 7, 6) and state[1].shape == (2, 4, 7, 6)
    h.sum().backward()
    # the last output depends on the first frame through the recurrent state, and every weight gets a gradient
    assert x.grad[:, 0].abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cell.parameters())

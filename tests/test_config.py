"""Configs: YAML 1.2 scalars, pydantic validation turned into ConfigError messages, the one resolver,
configs shipped as package data, ``wsim list``, and the checks on target frames."""

from __future__ import annotations

import copy
import fnmatch
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from wsim.cli import main, summary_line
from wsim.config import SceneConfig, from_dict, load_config, to_dict
from wsim.config_io import config_kind, resolve_config_path, shipped_configs, shipped_root
from wsim.yaml12 import parse_yaml
from wsim.control.config import ControlConfig, load_control
from wsim.errors import ConfigError
from wsim.sysid.config import ExperimentConfig, load_experiment
from wsim.sysid.target import read_frames

ROOT = Path(__file__).resolve().parent.parent
ONE_BOX = "bodies:\n  - {shape: {type: box, size: 0.2}}\n"


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- YAML 1.2 ---------------------------------------------------------------------------------------
def test_only_true_and_false_are_booleans_and_keys_stay_names():
    data = parse_yaml("a: [yes, no, on, off, y, n, Yes, NO, true, False]\n"
                      "b: [010, 0o10, 0x10, 1e4, -2.5e-3, .5, .inf, -.inf, ~, null, 1:30, 2001-12-14]\n"
                      "true: 1\nno: 2\n3: 4\n")
    assert data["a"] == ["yes", "no", "on", "off", "y", "n", "Yes", "NO", True, False]
    b = data["b"]
    assert b[:6] == [10, 8, 16, 1e4, -2.5e-3, 0.5] and isinstance(b[0], int) and isinstance(b[3], float)
    assert b[6] == float("inf") and b[7] == float("-inf") and b[8] is None and b[9] is None
    assert b[10:] == ["1:30", "2001-12-14"]  # YAML 1.1 read 5400 and a date
    assert data["true"] == 1 and data["no"] == 2 and data["3"] == 4
    assert set(data) == {"a", "b", "true", "no", "3"}


def test_a_key_given_twice_or_a_bad_explicit_tag_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML: .*key 'sim' is given twice"):
        load_config(write(tmp_path, "sim: {dt: 0.001}\nsim: {frames: 3}\n" + ONE_BOX))
    with pytest.raises(ConfigError, match=r"not valid YAML: 'yes' is not true or false"):
        load_config(write(tmp_path, "ground: {enabled: !!bool yes}\n" + ONE_BOX))
    with pytest.raises(ConfigError, match=r"--set sim.frames: the value '!!int ten' is not valid YAML"):
        load_config("box-drop", ["sim.frames=!!int ten"])
    merged = load_config(write(tmp_path, "bodies:\n  - &b {shape: {type: box, size: 0.2}, density: 3.0}\n"
                                         "  - {<<: *b, density: 5.0}\n"))  # anchors and merges still work
    assert merged.bodies[1].shape.size == 0.2 and [b.density for b in merged.bodies] == [3.0, 5.0]


def test_unquoted_true_key_of_params_is_the_ground_truth(tmp_path):
    text = ("scene:\n  bodies: [{density: 5.0}]\nparams:\n  - {name: density, low: 2.0, high: 12.0, true: 7.5}\n"
            "  - name: ke\n    low: 1.0\n    high: 10.0\n    true: 3\n")
    config = load_experiment(write(tmp_path, text))
    assert config.params[0].true == 7.5 and config.params[1].true == 3.0
    assert load_experiment(write(tmp_path, text), ["params.0.true=9"]).params[0].true == 9.0


def test_set_values_follow_yaml_1_2():
    config = load_config("box-drop", ["bodies.0.name=no", "name=off", "ground.enabled=false"])
    assert config.bodies[0].name == "no" and config.name == "off" and config.ground.enabled is False
    with pytest.raises(ConfigError, match=r"config key 'ground.enabled' must be true/false, got 'yes'"):
        load_config("box-drop", ["ground.enabled=yes"])
    with pytest.raises(ConfigError, match=r"config key 'sim.frames' must be integer, got 'many'"):
        load_config("box-drop", ["sim.frames=many"])


# -- validation messages ---------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("bodies.0.density=-1", r"config key 'bodies.0.density' must lie in \(0, inf\), got -1"),
    ("contact.mu=.nan", r"config key 'contact.mu' must be a finite number, got nan"),
    ("bodies.0.position=[1, 2]", r"config key 'bodies.0.position' must have 3 items, got 2"),
    ("bodies.0.color=[0.1, 0.2, 1.5]", r"config key 'bodies.0.color.2' must lie in \[0, 1\], got 1.5"),
    ("bodies.0.shape.size=[0.1, -2]", r"config key 'bodies.0.shape.size.1' must lie in \(0, inf\), got -2"),
    ("bodies.0.shape.size=big", r"config key 'bodies.0.shape.size' must be number or list of number, got 'big'"),
    ("bodies.0.densty=3", r"unknown config key 'bodies.0.densty'; allowed keys here: name, shape, density, mass"),
    ("bodies.0.density=null", r"bodies.0: give density \(kg/m\^3\) or mass \(kg\)"),
    ("sim=3", r"config key 'sim' must be mapping, got 3"),
])
def test_scene_errors_name_key_range_and_file(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("box-drop", [override])
    assert str(info.value).startswith(str(resolve_config_path("box-drop")) + ": ")


@pytest.mark.parametrize("override, message", [
    ("method=magic", r"config key 'method' must be one of 'gradsim', 'diffphysics', 'average', 'random' or "
                     r"'pybullet', got 'magic'"),
    ("params.0.space=cubic", r"config key 'params.0.space' must be one of 'log', 'sigmoid' or 'linear'"),
    ("render.resolution=4", r"config key 'render.resolution' must lie in \[8, inf\), got 4"),
    ("render.resolution=[32, 4]", r"config key 'render.resolution.1' must lie in \[8, inf\), got 4"),
    ("render.resolution=big", r"config key 'render.resolution' must be integer or list of integer, got 'big'"),
    ("params.0.high=1", r"params.0: high \(1.0\) must be >= low \(2.0\)"),
    ("optim.restart_params=[mass]", r"optim.restart_params.0: 'mass' is not an estimated parameter"),
    ("uncertainty.step=0.7", r"config key 'uncertainty.step' must lie in \(0, 0.5\), got 0.7"),
    ("target.bits=20", r"config key 'target.bits' must lie in \[1, 16\], got 20"),
    ("params=[]", r"config key 'params' must have at least 1 items, got 0"),
])
def test_experiment_errors_name_key_and_choices(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment("rigid-mass", [override])
    assert "rigid-mass.yaml: " in str(info.value)


def test_presets_expand_before_the_explicit_overrides(tmp_path):
    from wsim.config_io import load_raw

    preset = load_raw(resolve_config_path("risp-quadrotor"))["presets"]["gpu"]
    cpu = load_experiment("risp-quadrotor")
    gpu = load_experiment("risp-quadrotor", ["preset=gpu"])
    for key, value in preset.items():  # every setting of the preset lands, and each changes the default
        section, *path = key.split(".")
        got, default = getattr(gpu, section), getattr(cpu, section)
        for name in path:
            got, default = getattr(got, name), getattr(default, name)
        assert got == value != default, key
    for order in (["preset=gpu", "risp.width=32"], ["risp.width=32", "preset=gpu"]):  # an explicit --set wins
        chosen = load_experiment("risp-quadrotor", order)
        assert chosen.risp.width == 32 and chosen.render.resolution == 128
    with pytest.raises(ConfigError, match="'tpu' is not a preset of this config \\(gpu\\)"):
        load_experiment("risp-quadrotor", ["preset=tpu"])
    with pytest.raises(ConfigError, match="none in this config"):
        load_experiment("rigid-mass", ["preset=gpu"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(resolve_config_path("risp-rod").read_text() + "  cpu: 3\n")
    with pytest.raises(ConfigError, match="presets must map each name to a mapping"):
        load_experiment(bad)


def test_every_bad_key_is_reported_once():
    with pytest.raises(ConfigError) as info:
        load_config("box-drop", ["sim.dt=-1", "sim.substeps=0", "bodies.0.shape.scale=[1, x, 1]"])
    lines = str(info.value).splitlines()
    assert len(lines) == 3, lines
    assert "'sim.dt' must lie in (0, inf)" in lines[0] and "'sim.substeps' must lie in [1, inf)" in lines[1]
    assert "'bodies.0.shape.scale.1' must be number, got 'x'" in lines[2]


def test_control_config_sections_are_checked():
    with pytest.raises(ConfigError, match=r"config key 'methods.0' must be one of 'gradsim', 'diffphysics' or "
                                          r"'random', got 'magic'"):
        load_control("control-walker", ["methods=[magic]"])
    with pytest.raises(ConfigError, match=r"cloth: triangles must be \[low, high\] with low <= high"):
        load_control("control-cloth", ["cloth.triangles=[100, 64]"])
    with pytest.raises(ConfigError, match=r"config key 'render.blur_decay' must lie in \(0, 1\]"):
        load_control("control-walker", ["render.blur_decay=1.5"])


# -- empty and wrong-kind configs ------------------------------------------------------------------
def test_empty_files_and_empty_configs_are_explained(tmp_path):
    for text in ("", "# only a comment\n"):
        path = write(tmp_path, text)
        for load in (load_config, load_experiment, load_control):
            with pytest.raises(ConfigError, match=r"config file '.*c.yaml' is empty"):
                load(path)
        assert main(["simulate", str(path)]) == 2
    with pytest.raises(ConfigError, match=r"the scene has no bodies, chains, soft_bodies or cloths"):
        load_config(write(tmp_path, "name: nothing\nsim: {frames: 5}\n"))
    with pytest.raises(ConfigError, match=r"config key 'params' is required: the parameters to estimate"):
        load_experiment(write(tmp_path, "method: gradsim\nscene:\n  " + ONE_BOX.replace("\n  ", "\n    ")))
    with pytest.raises(ConfigError, match=r"config key 'scene' is required"):
        load_experiment(write(tmp_path, "params: [{name: density}]\n"))


def test_the_kind_of_a_config_comes_from_its_content(tmp_path):
    assert config_kind({"bodies": []}) == "scene"
    assert config_kind({"params": []}) == "experiment" and config_kind({"scene": {}}) == "experiment"
    assert config_kind({"task": "control", "scene": "walker"}) == "control"
    with pytest.raises(ConfigError, match=r"'box-drop' is a scene, not an experiment: run it with "
                                          r"`wsim simulate box-drop`"):
        load_experiment("box-drop")
    with pytest.raises(ConfigError, match=r"'rigid-mass' is an experiment, not a scene: run it with `wsim run"):
        load_config("rigid-mass")
    with pytest.raises(ConfigError, match=r"is an experiment, not a control task"):
        load_control("rigid-mass")
    # kind by content, not by folder: an experiment copied anywhere is still one
    copied = write(tmp_path, resolve_config_path("rigid-mass").read_text(), "mine.yaml")
    assert load_experiment(copied).name == "rigid-mass"


# -- resolver and package data ---------------------------------------------------------------------
def test_one_resolver_finds_every_kind_by_name_or_path(tmp_path):
    root = shipped_root()
    assert resolve_config_path("box-drop") == root / "box-drop.yaml"
    assert resolve_config_path("rigid-mass.yaml") == root / "experiments" / "rigid-mass.yaml"
    assert resolve_config_path("control-walker") == root / "control" / "control-walker.yaml"
    own = write(tmp_path, ONE_BOX, "box-drop.yaml")  # a path wins over a shipped name
    assert resolve_config_path(own) == own and load_config(own).bodies[0].shape.size == 0.2
    with pytest.raises(ConfigError, match="config file 'nope' does not exist, nor is it the name of a shipped"):
        resolve_config_path("nope")
    with pytest.raises(ConfigError, match="is a folder"):
        resolve_config_path(tmp_path)


def test_shipped_configs_load_have_unique_names_and_descriptions():
    shipped = shipped_configs()
    names = [c.name for c in shipped]
    assert len(names) == len(set(names)) >= 14
    loaders = {"scene": load_config, "experiment": load_experiment, "control": load_control}
    schemas = {"scene": SceneConfig, "experiment": ExperimentConfig, "control": ControlConfig}
    for c in shipped:
        assert c.description.strip(), f"{c.name} has no description"
        config = loaders[c.kind](c.name)
        assert isinstance(config, schemas[c.kind])
        data = to_dict(config)  # fingerprints hash this: plain JSON, and it rebuilds the same config
        assert from_dict(schemas[c.kind], json.loads(json.dumps(data))) == config


def test_pyproject_ships_every_package_and_config():
    """The package list is explicit (configs/ is mapped to wsim.configs): a new package under wsim/ or a
    config in a new folder must be added to pyproject.toml, or a built wheel would lack it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"wsim.configs": "configs"}
    packages = set(tool["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "wsim").rglob("__init__.py")}
    assert on_disk <= packages, f"add to [tool.setuptools] packages: {sorted(on_disk - packages)}"
    data = tool["package-data"]
    for path in (ROOT / "configs").rglob("*"):
        if path.suffix in (".yaml", ".yml"):
            folder = path.parent.relative_to(ROOT / "configs").parts
            package = ".".join(("wsim", "configs") + folder)
            assert package in packages and any(fnmatch.fnmatch(path.name, g) for g in data.get(package, [])), path


# -- the command line -----------------------------------------------------------------------------
def test_wsim_list_shows_every_kind_with_its_summary(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    sections = out.split("experiments (wsim run NAME):")
    assert sections[0].startswith("scenes (wsim simulate NAME):") and "control tasks (wsim run NAME):" in sections[1]
    experiments, control = sections[1].split("control tasks (wsim run NAME):")
    assert "box-drop" in sections[0] and "A box dropped flat" in sections[0]
    assert "rigid-mass" in experiments and "Paper Table 1: the mass of a rigid object from video." in experiments
    assert "control-walker" in control and "rigid-mass" not in control
    assert summary_line("First sentence here. Second one.") == "First sentence here."
    assert summary_line("Table 3 / Fig. 3 (x): a b. C d.") == "Table 3 / Fig. 3 (x): a b."
    assert len(summary_line("word " * 100)) <= 110


def test_wsim_run_on_a_scene_points_to_simulate(capsys):
    assert main(["run", "box-drop"]) == 2
    err = capsys.readouterr().err
    assert "'box-drop' is a scene, not an experiment" in err and "`wsim simulate box-drop`" in err
    assert main(["simulate", "control-walker", "--no-video"]) == 2
    assert "`wsim run control-walker`" in capsys.readouterr().err


def test_configs_stay_editable_objects():
    config = load_config("box-drop")
    scene = copy.deepcopy(config)
    scene.sim.frames = 3
    scene.bodies[0].position[1] += 1.0
    assert config.sim.frames == 61 and scene.bodies[0].position[1] == config.bodies[0].position[1] + 1.0
    with pytest.raises(ValueError):
        scene.sim.frame = 3  # a typo in code fails like one in a file


# -- target frames ---------------------------------------------------------------------------------
def frames_folder(tmp_path: Path, frames: list[np.ndarray], name="frames") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, frame in enumerate(frames):
        imageio.imwrite(folder / f"frame_{i:03d}.png", frame)
    return folder


def test_target_frames_read_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(2, 6, 5, 3), dtype=np.uint8)
    images = read_frames(frames_folder(tmp_path, list(rgb)))
    assert images.shape == (2, 6, 5, 3) and np.array_equal(images, rgb / np.float32(255))
    opaque = np.concatenate([rgb, np.full((2, 6, 5, 1), 255, np.uint8)], axis=-1)
    assert np.array_equal(read_frames(frames_folder(tmp_path, list(opaque), "rgba")), images)
    # grey frames are replicated to RGB (tests/test_sysid_target.py: grey, RGBA and resized targets)
    grey = read_frames(frames_folder(tmp_path, list(rgb[..., 1]), "grey"))
    assert np.array_equal(grey, np.repeat(images[..., 1:2], 3, axis=-1))


@pytest.mark.parametrize("case, message", [
    ("empty", r"target.video frame '.*frame_001.png' is empty \(0 bytes\)"),
    ("corrupt", r"target.video frame '.*frame_001.png' is not a readable PNG image \(corrupt or truncated\?\)"),
])
def test_bad_target_frames_are_named(tmp_path, case, message):
    good = np.full((4, 4, 3), 200, np.uint8)
    folder = frames_folder(tmp_path, [good, good])
    bad = folder / "frame_001.png"
    if case == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(ConfigError, match=message) as info:
        read_frames(folder)
    assert "pip install" not in str(info.value)


def test_empty_or_corrupt_target_video_file_is_named(tmp_path):
    empty = tmp_path / "target.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"target.video '.*target.mp4' is empty \(0 bytes\)"):
        read_frames(empty)
    empty.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ConfigError, match=r"target.video '.*target.mp4' could not be read as a video") as info:
        read_frames(empty)
    assert "pip install" not in str(info.value)


def test_log_uniform_draws_cover_every_decade():
    from wsim.sysid.instance import draw_values

    config = load_experiment("rigid-contact")
    kf = next(p for p in config.params if p.name == "kf")
    assert kf.draw == "log_uniform"
    kf = kf.model_copy(update={"low": 1.0, "high": 500.0})
    values = draw_values(kf, (20000,), np.random.default_rng(0))
    assert values.min() >= 1.0 and values.max() <= 500.0
    # uniform in log: the median is the geometric mean, a quarter of the draws lie above 100 (log 5 / log 500)
    assert np.median(values) == pytest.approx(np.sqrt(500.0), rel=0.05)
    assert np.mean(values > 100.0) == pytest.approx(np.log(5.0) / np.log(500.0), abs=0.02)
    uniform = draw_values(kf.model_copy(update={"draw": "uniform"}), (20000,), np.random.default_rng(0))
    assert np.mean(uniform > 100.0) == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ConfigError, match="log_uniform needs low > 0"):
        load_experiment("rigid-mass", ["params.0.space=linear", "params.0.low=0.0", "params.0.draw=log_uniform"])


def test_contact_truths_scale_with_the_weight_of_the_body(tmp_path):
    """rigid-contact's ke and kf truths (true_per_weight): ke = m g x [10, 500] 1/m and kf = mu m g x
    [2, 50] s/m for whatever body and density the seed draws, and the truth rollout's body rests on the
    ground sunk by millimetres to centimetres, not metres (the paper's ranges let it sink 20 m)."""
    from wsim.sysid.instance import Instance

    config = load_experiment("rigid-contact", ["render.resolution=8", "scene.sim.dt=0.002", "scene.sim.substeps=10",
                                               "scene.sim.frames=41"])
    ratios = {"ke": [], "kf": []}
    for seed in (1, 2, 3):
        instance = Instance(config, seed, tmp_path / str(seed), "cpu")
        truth = {name: float(value.flatten()[0]) for name, value in instance.truth.items()}
        weight = truth["density"] * float(np.sum(instance.scene.model.body_volume)) * 9.80665
        ratios["ke"].append(truth["ke"] / weight)
        ratios["kf"].append(truth["kf"] / (truth["mu"] * weight))
        lowest = instance.target_vertices[-1, :, 1].min().item()
        assert -0.2 < lowest < 0.0, (seed, lowest)
    assert all(10.0 <= r <= 500.0 for r in ratios["ke"]) and all(2.0 <= r <= 50.0 for r in ratios["kf"]), ratios
    assert len(set(np.round(ratios["ke"], 6))) == 3  # drawn per seed, not a constant
    with pytest.raises(ConfigError, match=r"params.3.true_per_weight.times: 'gravity' must name another parameter"):
        load_experiment("rigid-contact", ["params.3.true_per_weight.times=gravity"])
    with pytest.raises(ConfigError, match="params.1.true_per_weight.low"):
        load_experiment("rigid-contact", ["params.1.true_per_weight.low=-1.0"])


def test_late_defaults_are_the_config_defaults():
    # a section added after saved results stays out of their fingerprints only while it equals its default
    from wsim.harness.checkpoint import LATE_DEFAULTS
    from wsim.sysid.config import ReinforceConfig

    assert LATE_DEFAULTS["reinforce"] == ReinforceConfig().model_dump()

"""Bad input gets a clear error naming the field and the allowed range; blow-ups name the step."""

import math

import numpy as np
import pytest
import torch

from wsim import ModelBuilder, Simulation, primitive
from wsim.config import SceneConfig, apply_overrides, from_dict, load_config
from wsim.device import resolve_device
from wsim.errors import ConfigError, MeshError, ParameterError, SimulationError
from wsim.geometry import TriangleMesh
from wsim.scene import build_scene


def one_box(device, **kwargs):
    builder = ModelBuilder()
    builder.add_body(primitive("box", 0.2), density=500.0, position=(0, 0.3, 0), **kwargs)
    return Simulation(builder.finalize(device, dt=1e-3), 1e-3, 5, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(density=-1.0), r"density must lie in \(0, inf\), got -1"),
    (dict(density=0.0), r"density must lie in \(0, inf\), got 0"),
    (dict(density=math.nan), r"density must be finite"),
    (dict(mass=-2.0), r"mass must lie in \(0, inf\)"),
])
def test_non_positive_or_nan_mass_is_rejected(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        ModelBuilder().add_body(primitive("box", 0.2), **kwargs)


def test_open_mesh_body_is_rejected():
    box = primitive("box", 0.2)
    with pytest.raises(MeshError, match="body 'lid'.*not closed"):
        ModelBuilder().add_body(TriangleMesh(box.vertices, box.faces[2:]), density=1.0, name="lid")


@pytest.mark.parametrize("params, message", [
    ({"density": torch.tensor(-3.0)}, r"density must lie in \(0, inf\)"),
    ({"ke": torch.tensor(float("nan"))}, r"contact_ke must be finite"),
    ({"mu": torch.tensor(-0.1)}, r"contact_mu must lie in \[0, inf\)"),
    ({"gravity": torch.tensor([0.0, float("inf"), 0.0])}, r"gravity must be finite"),
    ({"body_velocity": torch.zeros(2, 3)}, r"body_velocity.*has shape \(2, 3\), expected \(1, 3\)"),
    ({"stiffnes": torch.tensor(1.0)}, r"unknown parameter 'stiffnes'; allowed: .*body_mass"),
])
def test_bad_rollout_parameters_are_named(device, params, message):
    with pytest.raises(ParameterError, match=message):
        one_box(device).rollout(params)


def test_time_step_must_be_positive(device):
    builder = ModelBuilder()
    builder.add_particle((0, 1, 0))
    model = builder.finalize(device)
    with pytest.raises(ParameterError, match=r"sim.dt must lie in \(0, inf\), got 0"):
        Simulation(model, 0.0, 1, 2)
    with pytest.raises(ParameterError, match=r"sim.dt must lie in \(0, inf\), got -0.001"):
        Simulation(model, -1e-3, 1, 2)
    with pytest.raises(ParameterError, match="sim.substeps must be an integer >= 1"):
        Simulation(model, 1e-3, 0, 2)


def test_blow_up_raises_naming_the_first_bad_step(device):
    """An absurdly stiff spring at a huge time step diverges; the error names the step, no NaN frames."""
    builder = ModelBuilder(ground=False)
    builder.add_particle((0, 0, 0), pinned=True)
    builder.add_particle((1.5, 0, 0), mass=1e-3)
    builder.add_spring(0, 1, 1e6, rest_length=1.0)
    sim = Simulation(builder.finalize(device), 1e-2, 10, 11)
    with pytest.raises(SimulationError, match=r"NaN or infinite at physics step (\d+)") as info:
        sim.rollout()
    step = int(info.value.args[0].split("physics step ")[1].split(" ")[0])
    assert 0 < step < sim.steps


def test_unknown_config_key_names_its_path():
    with pytest.raises(ConfigError, match=r"unknown config key 'bodies.0.densty'; allowed keys here: name, shape"):
        from_dict(SceneConfig, {"bodies": [{"densty": 3.0}]})
    with pytest.raises(ConfigError, match=r"config key 'sim.frames' must be integer, got 'many'"):
        from_dict(SceneConfig, {"sim": {"frames": "many"}})


def test_set_overrides_reach_every_key_and_reject_unknown_ones():
    config = load_config("box-drop", ["contact.mu=0.9", "bodies.0.shape.type=sphere", "bodies.0.shape.size=0.1"])
    assert config.contact.mu == 0.9 and config.bodies[0].shape.type == "sphere"
    with pytest.raises(ConfigError, match="unknown config key 'contact.muu'"):
        load_config("box-drop", ["contact.muu=0.9"])
    with pytest.raises(ConfigError, match="out of range: the list has 1 item"):
        load_config("box-drop", ["bodies.3.density=1"])
    with pytest.raises(ConfigError, match="--set expects key=value"):
        apply_overrides({}, ["contact.mu"])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file 'no-such-scene' does not exist"):
        load_config("no-such-scene")
    config = load_config("box-drop", [f"bodies.0.shape.file={tmp_path / 'gone.obj'}"])
    with pytest.raises(ConfigError, match=r"bodies.0.shape.file: mesh file '.*gone.obj' does not exist"):
        build_scene(config, "cpu")


def test_unknown_device_is_rejected():
    with pytest.raises(ConfigError, match="device 'tpu' is not a valid device name"):
        resolve_device("tpu")


def test_cuda_request_without_gpu_is_explained():
    from wsim.device import cuda_available

    if cuda_available():
        assert resolve_device("cuda").startswith("cuda")
    else:
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device("cuda")


def test_config_values_are_checked_on_load_and_again_when_built():
    """A bad value from a file or --set fails on load, naming the key, the range and the file; one set
    in code afterwards (attributes are not re-validated) still meets the builder's own checks."""
    with pytest.raises(ConfigError, match=r"box-drop.yaml: config key 'contact.ke' must lie in \[0, inf\), got -5"):
        load_config("box-drop", ["contact.ke=-5"])
    with pytest.raises(ConfigError, match=r"config key 'sim.dt' must lie in \(0, inf\), got 0"):
        load_config("box-drop", ["sim.dt=0"])
    config = load_config("box-drop")
    config.contact.ke = -5.0
    with pytest.raises(ParameterError, match=r"contact.ke must lie in \[0, inf\), got -5"):
        build_scene(config, "cpu")
    config = load_config("box-drop")
    config.sim.dt = 0.0
    with pytest.raises(ParameterError, match="sim.dt"):
        build_scene(config, "cpu")
    assert np.isfinite(build_scene(load_config("box-drop"), "cpu").model.defaults["body_mass"]).all()

"""RISP: the rendering-gradient regulariser (Theorem 1) against full double backpropagation, the image
Jacobian against the renderer's reverse-mode gradients, the state against the simulator, the network's
architecture, resumable data and training, and the risp loss in a system-identification instance."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from wsim.errors import ConfigError
from wsim.risp import data as risp_data
from wsim.risp import domain
from wsim.risp.network import RispNet, load_network
from wsim.risp.state import StateMap
from wsim.risp.train import state_errors, train, training_loss
from wsim.sysid.config import load_experiment
from wsim.sysid.instance import Instance

SMALL = ["render.resolution=16", "scene.sim.frames=4", "risp.data.count=8", "risp.data.shard_size=4",
         "risp.width=4", "risp.train.epochs=3", "risp.train.batch=4", "risp.train.holdout=0.25"]


def _small_net(state_dim=3):
    torch.manual_seed(0)
    return RispNet(state_dim, width=4, blocks=(1, 1, 1, 1), image_size=(32, 32))


def test_regulariser_gradient_equals_double_backward_through_the_renderer():
    """Theorem 1: with dI/dpsi precomputed, the regulariser's gradient in theta equals the one of full
    double backpropagation through a (here smooth, torch) renderer."""
    torch.manual_seed(1)
    H = W = 32
    P, B = 4, 2
    weight = torch.randn(H * W * 3, P, dtype=torch.float64) * 0.5
    bias = torch.randn(H * W * 3, dtype=torch.float64)

    def render(psi):  # [B, P] -> [B, H, W, 3], nonlinear in psi
        return torch.sigmoid(psi @ weight.T + bias + 0.3 * torch.sin(psi @ weight.T)).reshape(-1, H, W, 3)

    net = _small_net().double()
    net.state_scale.fill_(0.7)
    psi = torch.randn(B, P, dtype=torch.float64)
    states = torch.randn(B, 3, dtype=torch.float64)
    gamma = 2.5

    jac = torch.stack([torch.autograd.functional.jacobian(lambda p: render(p[None])[0], psi[b]) for b in range(B)])
    jac = jac.permute(0, 4, 1, 2, 3)  # [B, P, H, W, 3]
    total, _, reg = training_loss(net, render(psi).detach(), states, jac, gamma)
    mine = torch.autograd.grad(total, list(net.parameters()))

    leaf = psi.clone().requires_grad_(True)
    per_image = ((net(render(leaf)) - states) / net.state_scale).abs().sum(-1)
    (dpsi,) = torch.autograd.grad(per_image.sum(), leaf, create_graph=True)
    reference_reg = torch.sqrt((dpsi ** 2).sum(-1) + 1e-12).mean()
    assert reg.item() == pytest.approx(reference_reg.item(), rel=1e-10)
    reference = torch.autograd.grad(per_image.mean() + gamma * reference_reg, list(net.parameters()))
    for a, b in zip(mine, reference):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)
    assert any(float(g.abs().max()) > 0 for g in mine)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    config = load_experiment("risp-cube", SMALL)
    return config, Instance(config, 7, tmp_path_factory.mktemp("cube"))


@pytest.mark.parametrize("with_ground", [False, True])
def test_image_jacobian_matches_reverse_mode(cube, with_ground):
    config, instance = cube
    rng = np.random.default_rng(3)
    psi = torch.as_tensor(domain.sample(config.risp.domain, 1, rng)[0])
    step = domain.steps(config.risp.domain, 1e-3)
    vertices, faces, colors, ground = instance.target_vertices[2], instance.faces, instance.colors, 0
    if with_ground:
        plane, plane_faces = risp_data.ground_plane(instance)
        faces = torch.cat([faces, plane_faces + vertices.shape[0]])
        vertices, colors, ground = torch.cat([vertices, plane]), torch.cat([colors, torch.ones_like(plane)]), len(plane)
    image, jac = domain.image_and_jacobian(instance.renderer, vertices, faces, colors, psi, step, ground=ground)
    ground_columns = jac[domain.slices()["ground"]].abs().amax()
    assert (ground_columns > 0.1) if with_ground else (ground_columns == 0)
    for k in range(3):
        leaf = psi.clone().requires_grad_(True)
        rgba = instance.renderer(vertices[None], faces, **domain.render_kwargs(leaf[None], colors, ground))
        assert torch.allclose(rgba[0, ..., :3], image, atol=1e-6)
        u = torch.as_tensor(rng.normal(size=image.shape), dtype=torch.float32)
        (grad,) = torch.autograd.grad((rgba[0, ..., :3] * u).sum(), leaf)
        forward = torch.einsum("phwc,hwc->p", jac, u)
        scale = grad.abs().max().item()
        assert scale > 0
        assert torch.allclose(forward, grad, atol=2e-3 * scale), (forward, grad)


def test_regulariser_gradient_matches_finite_differences_on_a_tiny_render(cube):
    """The Eq. 12 regulariser of two wsim renders (16 px, dI/dpsi by the renderer's differences): its
    gradient in the network weights (Theorem 1, the network differentiated twice) against central
    differences of the regulariser itself, weight by weight, in float64."""
    config, instance = cube
    rng = np.random.default_rng(4)
    step = domain.steps(config.risp.domain, 1e-3)
    images, jacobians = [], []
    for frame in (1, 3):
        psi = torch.as_tensor(domain.sample(config.risp.domain, 1, rng)[0])
        image, jac = domain.image_and_jacobian(instance.renderer, instance.target_vertices[frame], instance.faces,
                                               instance.colors, psi, step)
        images.append(image.double())
        jacobians.append(jac.double())
    images, jacobians = torch.stack(images), torch.stack(jacobians)
    torch.manual_seed(2)
    net = RispNet(9, width=4, blocks=(1, 1, 1, 1), image_size=(16, 16)).double()
    states = torch.randn(2, 9, dtype=torch.float64)

    def regulariser():
        return training_loss(net, images, states, jacobians, 1.0)[2]

    params = dict(net.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(regulariser(), list(params.values()))))
    checked = 0
    for name in ("features.0.weight", "features.4.body.0.weight", "features.6.body.3.weight", "head.weight", "head.bias"):
        flat = params[name].data.view(-1)
        for index in rng.choice(flat.numel(), 2, replace=False):
            keep = flat[index].item()
            flat[index] = keep + 1e-6  # .data: outside autograd
            up = regulariser().item()
            flat[index] = keep - 1e-6
            down = regulariser().item()
            flat[index] = keep
            difference = (up - down) / 2e-6
            analytic = grads[name].reshape(-1)[index].item()
            assert analytic == pytest.approx(difference, rel=1e-4, abs=1e-7 * max(1.0, abs(difference))), name
            checked += abs(difference) > 1e-6
    assert checked >= 6


def test_rigid_pose_state_matches_the_simulator(cube):
    from scipy.spatial.transform import Rotation

    config, instance = cube
    states = StateMap("rigid_pose", instance.scene)(instance.target_vertices).numpy()
    instance.rollout(instance.truth)
    frames = instance.sim.frame_states()
    assert np.abs(states[:, :3] - frames["body_q"][:, 0]).max() < 1e-5
    position = StateMap("position", instance.scene)
    assert position.names == ["x", "y", "z"]
    np.testing.assert_array_equal(position(instance.target_vertices).numpy(), states[:, :3])
    rot = Rotation.from_quat(frames["body_r"][:, 0]).as_matrix()
    yaw, pitch, roll = np.arctan2(rot[:, 0, 2], rot[:, 2, 2]), np.arcsin(-rot[:, 1, 2]), np.arctan2(rot[:, 1, 0], rot[:, 1, 1])
    expected = np.stack([np.sin(yaw), np.sin(pitch), np.sin(roll), np.cos(yaw), np.cos(pitch), np.cos(roll)], -1)
    assert np.abs(states[:, 3:] - expected).max() < 1e-5
    # a rotation that is not near identity: the decomposition holds for any pose
    quat = Rotation.from_euler("YXZ", [2.0, 0.7, -1.1]).as_quat()
    vertices = instance.sim.rollout({"body_rotation": torch.as_tensor(quat[None], dtype=torch.float32)})
    moved = StateMap("rigid_pose", instance.scene)(vertices[:1]).numpy()[0]
    assert np.allclose(moved[3:], [np.sin(2.0), np.sin(0.7), np.sin(-1.1), np.cos(2.0), np.cos(0.7), np.cos(-1.1)],
                       atol=1e-5)


def test_network_architecture():
    net = RispNet(9, width=8, image_size=(32, 32))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(norms) == len(convs) == 1 + 2 * 8 + 3  # stem, 8 blocks of 2, 3 projections
    assert all(not m.affine for m in norms)
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert sum(isinstance(m, torch.nn.SiLU) for m in net.modules()) == 1 + 2 * 8
    x = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 9)
    # the input gradient depends on the weights (second derivatives exist: what the regulariser needs)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    second = torch.autograd.grad((g ** 2).sum(), net.head.weight)[0]
    assert float(second.abs().max()) > 0


def test_data_are_deterministic_resumable_and_tied_to_their_config(tmp_path):
    config = load_experiment("risp-cube", SMALL)
    folder = tmp_path / "data"
    manifest = risp_data.generate(config, folder, progress=False)
    assert manifest["count"] == 8 and manifest["shards"] == 2 and len(manifest["state_names"]) == 9
    _, arrays = risp_data.load(folder)
    assert arrays["images"].shape == (8, 16, 16, 3) and arrays["jacobians"].shape == (8, domain.SIZE, 16, 16, 3)
    first = (folder / "shard_0001.npz").read_bytes()
    (folder / "shard_0001.npz").unlink()
    risp_data.generate(config, folder, progress=False)
    assert (folder / "shard_0001.npz").read_bytes() == first
    # the states of image i are frame i mod F of instance seed data.seed + i div F
    instance = Instance(risp_data.state_distribution(config), config.risp.data.seed + 1, tmp_path / "check")
    states = StateMap("rigid_pose", instance.scene)(instance.target_vertices).numpy()
    assert np.allclose(arrays["states"][4:8], states, atol=1e-6)
    other = load_experiment("risp-cube", SMALL + ["risp.domain.ambient=[0.2, 0.3]"])
    with pytest.raises(ConfigError, match="another config"):
        risp_data.generate(other, folder, progress=False)
    with pytest.raises(ConfigError, match="another config"):
        train(other, folder, tmp_path / "net-other", progress=False)
    shared = load_experiment("risp-cube", SMALL + ["risp.data.count=4", "risp.data.configurations=2"])
    risp_data.generate(shared, tmp_path / "shared", progress=False)
    psi = risp_data.load(tmp_path / "shared")[1]["psi"]
    assert np.array_equal(psi[0], psi[2]) and np.array_equal(psi[1], psi[3]) and not np.allclose(psi[0], psi[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("risp")
    config = load_experiment("risp-cube", SMALL)
    risp_data.generate(config, root / "data", progress=False)
    summary = train(config, root / "data", root / "net", progress=False)
    return config, root, summary


def test_training_resumes_exactly_and_writes_a_loadable_network(trained):
    config, root, summary = trained
    assert summary["status"] == "done" and summary["holdout"]["count"] == 2
    net, record = load_network(root / "net" / "risp.pt")
    assert record["image_size"] == [16, 16] and record["state"] == "rigid_pose"
    part = train(config, root / "data", root / "net2", progress=False, stop_after=1)
    assert part == {"status": "interrupted", "epoch": 0}
    train(config, root / "data", root / "net2", progress=False, resume=True)
    resumed, _ = load_network(root / "net2" / "risp.pt")
    for (name, a), b in zip(net.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    history = __import__("json").loads((root / "net" / "history.json").read_text())
    assert len(history) == 3 and history[-1]["gamma"] == pytest.approx(config.risp.train.gamma)


def test_risp_loss_in_a_sysid_instance(trained, tmp_path):
    config, root, _ = trained
    run = load_experiment("risp-cube", SMALL + ["loss.type=risp", f"risp.checkpoint={root / 'net' / 'risp.pt'}",
                                                "loss.every=3", "scene.sim.frames=31"])
    instance = Instance(run, 3, tmp_path)
    loss_true, _ = instance.loss(instance.truth)
    assert float(loss_true) < 1e-10  # the target is wsim's rendering of the truth: identical states
    values = {"ke": (instance.truth["ke"] * 2.0).requires_grad_(True)}
    loss, _ = instance.loss(values)
    (grad,) = torch.autograd.grad(loss, values["ke"])
    assert loss.item() > 0 and torch.isfinite(grad).all() and grad.abs().sum().item() > 0
    bad = load_experiment("risp-cube", SMALL + ["loss.type=risp", f"risp.checkpoint={root / 'missing.pt'}"])
    with pytest.raises(ConfigError, match="does not exist"):
        Instance(bad, 3, tmp_path / "bad").loss(instance.truth)
    with pytest.raises(ConfigError, match="risp.checkpoint"):
        load_experiment("risp-cube", SMALL + ["loss.type=risp"])
    shutil.rmtree(tmp_path / "bad", ignore_errors=True)


def test_risp_command_line(tmp_path, capsys):
    from wsim.cli import main

    sets = [x for item in SMALL + ["risp.train.epochs=1"] for x in ("--set", item)]
    assert main(["risp", "data", "risp-cube", *sets, "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert main(["risp", "train", "risp-cube", *sets, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "n"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "8 images of 16x16 px in 2 shards" in out and "held-out state error" in out
    assert (tmp_path / "n" / "training.png").exists()
    assert main(["risp", "data", "risp-cube", *sets, "--count", "0", "--out", str(tmp_path / "d")]) == 2
    assert main(["risp", "train", "rigid-mass", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "x")]) == 2


def test_heights_state_of_a_rod_fixed_at_both_ends(tmp_path):
    config = load_experiment("risp-rod", ["render.resolution=16", "scene.sim.frames=6"])
    instance = Instance(config, 0, tmp_path)
    vertices = instance.target_vertices
    rest = vertices[0]
    ends = (rest[:, 0] <= -0.499) | (rest[:, 0] >= 0.499)
    assert int(ends.sum()) == 8  # the two end faces of a one-cell-thick bar
    assert torch.equal(vertices[:, ends], rest[ends].expand(len(vertices), -1, -1))  # pinned
    assert float((vertices[-1, ~ends, 1] - rest[~ends, 1]).abs().max()) > 1e-3  # the rest moves
    states = StateMap("heights", instance.scene, points=10)
    assert states.dim == 10
    x = rest[states.index, 0]
    assert torch.allclose(x, torch.linspace(-0.5, 0.5, 10), atol=0.051)  # vertices every 0.1 m along x
    assert torch.equal(states(vertices), vertices[:, states.index, 1])
    with pytest.raises(ConfigError, match="rigid"):
        StateMap("rigid_pose", instance.scene)
    with pytest.raises(ConfigError, match="particles"):
        StateMap("heights", Instance(load_experiment("risp-cube", SMALL), 0, tmp_path / "c").scene)
    with pytest.raises(ConfigError, match="ends"):
        load_experiment("risp-rod", ["scene.soft_bodies.0.pin.above=-0.6"])


def test_perceptual_loss_with_a_user_given_feature_network(tmp_path):
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.Tanh(), torch.nn.Conv2d(4, 4, 3))
    path = tmp_path / "features.pt"
    torch.export.save(torch.export.export(features.eval(), (torch.rand(1, 3, 16, 16),)), str(path))
    config = load_experiment("risp-cube", SMALL + ["loss.type=perceptual", f"loss.features={path}",
                                                   "scene.sim.frames=31", "loss.every=3"])
    instance = Instance(config, 3, tmp_path / "run")
    loss_true, _ = instance.loss(instance.truth)
    assert loss_true.item() < 1e-12
    values = {"ke": (instance.truth["ke"] * 2.0).requires_grad_(True)}
    loss, _ = instance.loss(values)
    (grad,) = torch.autograd.grad(loss, values["ke"])
    assert loss.item() > 0 and grad.abs().sum().item() > 0
    with pytest.raises(ConfigError, match="loss.features"):
        load_experiment("risp-cube", SMALL + ["loss.type=perceptual"])
    (tmp_path / "junk.pt").write_bytes(b"not a module")
    junk = load_experiment("risp-cube", SMALL + ["loss.type=perceptual", f"loss.features={tmp_path / 'junk.pt'}"])
    with pytest.raises(ConfigError, match="torch.export"):
        Instance(junk, 3, tmp_path / "junk").loss(instance.truth)


REGULARISER = ["render.resolution=24", "risp.data.count=64", "risp.data.shard_size=64", "risp.width=8",
               "risp.train.epochs=80", "risp.train.holdout=0"]


@pytest.mark.slow
def test_the_regulariser_lowers_the_state_error_under_unseen_rendering(tmp_path):
    """RISP's claim on a small dataset: 64 images (4 rollouts) of a flying rigid body at 24 px. Networks
    trained with the rendering-gradient regulariser (gamma 1) read the states off the same states
    rendered under psi never seen in training (``risp.data.psi_seed``) better than networks trained
    without it (gamma 0, ours-no-grad), the mean over two training seeds. Measured when written: 0.55 and
    0.42 against 0.80 and 0.48 (training seeds 2 and 3: 0.40, 0.33 against 0.66, 0.42); predicting the
    mean state: 1.9."""
    config = load_experiment("risp-rigid-mass", REGULARISER)
    risp_data.generate(config, tmp_path / "train", progress=False)
    risp_data.generate(load_experiment("risp-rigid-mass", REGULARISER + ["risp.data.psi_seed=777"]),
                       tmp_path / "unseen", progress=False)
    seen, unseen = risp_data.load(tmp_path / "train")[1], risp_data.load(tmp_path / "unseen")[1]
    assert np.array_equal(seen["states"], unseen["states"])
    assert np.abs(seen["psi"] - unseen["psi"]).min() > 0.0  # every rendering parameter differs
    images, states = unseen["images"].astype(np.float32), unseen["states"]
    mean_state = np.abs(states - seen["states"].mean(0)).sum(-1).mean()
    errors = {}
    for gamma in (0.0, 1.0):
        for seed in (0, 1):
            run = load_experiment("risp-rigid-mass", REGULARISER + [f"risp.train.gamma={gamma}",
                                                                    f"risp.train.seed={seed}"])
            train(run, tmp_path / "train", tmp_path / f"net-{gamma}-{seed}", progress=False)
            net, _ = load_network(tmp_path / f"net-{gamma}-{seed}" / "risp.pt")
            errors[gamma, seed] = state_errors(net, images, states)["l1_mean"]
    no_grad = (errors[0.0, 0] + errors[0.0, 1]) / 2
    regularised = (errors[1.0, 0] + errors[1.0, 1]) / 2
    assert max(errors.values()) < 0.6 * mean_state, errors  # every network learned the states
    assert regularised < 0.9 * no_grad, errors


ROD = ["render.resolution=32", "risp.data.count=256", "risp.data.shard_size=64", "risp.width=8",
       "risp.train.epochs=20", "uncertainty.enabled=false", "render.video_scale=1", "loss.every=4",
       "optim.iterations=30", "optim.polish_iterations=10"]


@pytest.mark.slow
def test_risp_loss_recovers_youngs_modulus_from_a_path_traced_video(tmp_path):
    """RISP's use (Table 2) end to end at CPU-test size: a network trained on 256 wsim renders of rods
    (32 px, width 8, 20 epochs, about 40 s) reads the sag off a video that Mitsuba 3 path traced under an
    appearance wsim's renderer cannot draw (here a uniform albedo instead of the vertex colours, a glossy
    lobe, a checkerboard ground, a green background, another light), and ``loss.type: risp`` brings
    Young's modulus from its seeded start (16 times the truth) to the truth. Measured when written, this
    recipe on seeds 1000-1004 (kinds random, random, light, background, random): relative errors 0.010,
    0.025, 0.015, 0.024 and 0.59: the last (an area light on a red background) ends in a wrong basin, so
    this small network is not robust to every appearance, nor to how it was trained: the same recipe
    trained with two threads ends 0.066 off on seed 1000, hence one thread and the 10 % bound.
    ``benchmarks/bench_risp.py risp-rod`` measures the 1024-image network on four seeds."""
    import imageio.v2 as imageio

    from wsim.render import render_mitsuba
    from wsim.risp.domain import path_traced_appearance
    from wsim.sysid import run_instance

    config = load_experiment("risp-rod", ROD)
    risp_data.generate(config, tmp_path / "data", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the network as measured: another thread count sums in another order
    try:
        train(config, tmp_path / "data", tmp_path / "net", progress=False)
    finally:
        torch.set_num_threads(threads)
    seed = 1000
    truth = Instance(config, seed, tmp_path / "truth")
    appearance = path_traced_appearance(config, "random", np.random.default_rng([seed, 13]))
    assert appearance.albedo is not None and appearance.specular > 0.1 and appearance.ground is not None
    rgb = render_mitsuba(truth.target_vertices.numpy(), truth.faces.numpy(), truth.colors.numpy(), truth.camera,
                         truth.size, appearance, spp=16, seed=seed)
    frames = tmp_path / "target"
    frames.mkdir()
    for k, frame in enumerate((np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)):
        imageio.imwrite(frames / f"{k:04d}.png", frame)
    run = load_experiment("risp-rod", ROD + [f"target.video={frames}", "target.truth=seeded", "loss.type=risp",
                                             f"risp.checkpoint={tmp_path / 'net' / 'risp.pt'}"])
    result = run_instance(run, seed, tmp_path / "run", progress=False, write_outputs=False)
    assert result["initial_errors"]["young_modulus"]["rel"] > 5.0
    assert result["errors"]["young_modulus"]["rel"] < 0.1, result["errors"]
    assert result["final_loss"] < 0.05 * result["loss_history"][0]

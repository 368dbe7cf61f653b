"""Mass-spring systems from video (gradSim App. C): particles drawn as glyphs, the pixel loss's gradient
reaching the particles through them, and the spring stiffness and damping recovered by `wsim run`."""

import numpy as np
import pytest
import torch

from wsim.render import Camera, ParticleGlyphs, SoftRenderer
from wsim.sysid import load_experiment, run_instance


def test_glyphs_follow_their_particles_and_skip_particles_on_faces():
    # vertices 0-2 form a triangle (a body), 3-5 are particles; particle 5 is on a second face, so only
    # 3 and 4 are loose
    faces = torch.tensor([[0, 1, 2], [1, 2, 5]])
    glyphs = ParticleGlyphs(faces, 6, 3, torch.tensor([0.1, 0.2, 0.3]))
    assert glyphs.count == 2 and glyphs.loose.tolist() == [3, 4]
    vertices = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(0))
    drawn = glyphs.vertices(vertices)
    assert drawn.shape == (4, 6 + 2 * 12, 3)
    assert torch.equal(drawn[:, :6], vertices)
    distances = (drawn[:, 6:].reshape(4, 2, 12, 3) - vertices[:, 3:5, None]).norm(dim=-1)
    np.testing.assert_allclose(distances[:, 0].numpy(), 0.1, rtol=1e-5)  # each glyph has its particle's radius
    np.testing.assert_allclose(distances[:, 1].numpy(), 0.2, rtol=1e-5)
    assert glyphs.faces.shape == (2 + 2 * 20, 3) and int(glyphs.faces.max()) == 6 + 2 * 12 - 1
    colors = torch.arange(18, dtype=torch.float32).reshape(6, 3)
    assert torch.equal(glyphs.colors(colors)[6 + 12], colors[4])


def test_pixel_loss_gradient_reaches_particles_through_glyphs():
    particles = torch.tensor([[[-0.3, 0.0, 0.0], [0.05, 0.1, 0.0], [0.35, -0.05, 0.1]]], dtype=torch.float64)
    glyphs = ParticleGlyphs(torch.zeros((0, 3), dtype=torch.int64), 3, 0, 0.12)
    camera = Camera.look_at((0.0, 0.0, 2.0), fov_y=45.0)
    renderer = SoftRenderer(camera, image_size=24, sigma=1e-3, shading="flat")
    target = torch.rand(1, 24, 24, 4, generator=torch.Generator().manual_seed(1))

    def loss(p):
        image = renderer(glyphs.vertices(p.float()), glyphs.faces, colors=glyphs.colors(torch.ones(3, 3) * 0.6))
        return ((image - target) ** 2).sum()

    p = particles.clone().requires_grad_(True)
    loss(p).backward()
    h = 5e-4  # the soft edges are a pixel or two wide: the difference must resolve them
    for index in [(0, 0, 0), (0, 1, 1), (0, 2, 0), (0, 0, 2)]:
        plus, minus = particles.clone(), particles.clone()
        plus[index] += h
        minus[index] -= h
        fd = (loss(plus) - loss(minus)).item() / (2 * h)
        assert abs(fd) > 1.0  # the particle's glyph is in view and moves pixels
        assert p.grad[index].item() == pytest.approx(fd, rel=3e-2), index


def test_spring_stiffness_and_damping_recovered_from_video(tmp_path):
    config = load_experiment("mass-spring", ["scene.sim.frames=16", "render.resolution=32", "render.video_scale=1",
                                             "optim.polish_iterations=25"])
    result = run_instance(config, 1000, tmp_path, "cpu", progress=False, write_outputs=False)
    initial, true = result["initial"]["spring_stiffness"], result["true"]["spring_stiffness"]
    assert abs(initial - true) / true > 0.1  # a real initial error
    assert result["status"] == "done", result.get("convergence")
    assert result["errors"]["spring_stiffness"]["rel"] < 1e-3, result["errors"]
    assert result["errors"]["spring_damping"]["rel"] < 1e-2, result["errors"]

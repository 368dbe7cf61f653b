"""The shading/compositing kernel (wsim.render.composite) against the torch compositor it replaces:
the same image and the same gradient for every differentiable input, in every shading and edge mode."""

import numpy as np
import pytest
import torch

from wsim.errors import ParameterError
from wsim.geometry.shapes import shape_mesh
from wsim.render import Camera, DirectionalLight, Material, PointLight, SoftRenderer

FRAMES = 3


def _scene():
    mesh = shape_mesh("bunny_blob", 6)
    vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64)
    shift = torch.linspace(0.0, 0.1, FRAMES)[:, None, None]
    generator = torch.Generator().manual_seed(3)
    inputs = {
        "vertices": vertices[None].repeat(FRAMES, 1, 1) + shift,
        "colors": torch.rand(vertices.shape[0], 3, generator=generator),
        "background": torch.tensor([[0.2, 0.3, 0.4], [0.1, 0.1, 0.1], [0.9, 0.8, 0.7]]),  # per frame
        "direction": torch.tensor([0.3, -1.0, -0.4]),
        "light_position": torch.tensor([[1.0, 2.0, 2.0], [1.5, 2.0, 1.0], [0.0, 3.0, 2.0]]),  # per frame
        "attenuation": torch.tensor(0.1),
        "intensity": torch.tensor(0.8),
        "specular": torch.tensor([0.3, 0.2, 0.1]),
        "shininess": torch.tensor(20.0),
        "diffuse": torch.tensor([[0.7, 0.6, 0.5]]),
    }
    return faces, {k: v.requires_grad_(True) for k, v in inputs.items()}


def _render(compositor, shading, soft_edges, faces, x):
    camera = Camera.look_at((1.2, 0.8, 2.6), target=(0.0, 0.0, 0.0), fov_y=40.0)
    lights = [DirectionalLight(direction=x["direction"]),
              PointLight(position=x["light_position"], attenuation=x["attenuation"], intensity=x["intensity"])]
    material = Material(specular=x["specular"], shininess=x["shininess"], diffuse=x["diffuse"])
    renderer = SoftRenderer(camera, image_size=40, sigma=1e-3, gamma=1e-2, shading=shading, soft_edges=soft_edges,
                            compositor=compositor, lights=lights, material=material)
    image = renderer(x["vertices"], faces, colors=x["colors"], background=x["background"])
    weights = torch.rand(image.shape, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((image * weights).sum(), list(x.values()), allow_unused=True)
    return image.detach(), {k: g for k, g in zip(x, grads)}


@pytest.mark.parametrize("shading", ["flat", "phong"])
@pytest.mark.parametrize("soft_edges", ["silhouette", "all"])
def test_the_kernel_gives_the_torch_compositors_image_and_gradients(shading, soft_edges):
    faces, x = _scene()
    reference, reference_grads = _render("torch", shading, soft_edges, faces, x)
    image, grads = _render("warp", shading, soft_edges, faces, x)
    assert 0.05 < (reference[..., 3] > 0.5).float().mean() < 0.6  # the object covers part of the frame
    assert torch.allclose(image, reference, atol=1e-5, rtol=0)
    lit = ("direction", "light_position", "attenuation", "intensity", "specular", "shininess", "diffuse")
    for name, expected in reference_grads.items():
        if shading == "flat" and name in lit:
            assert expected is None and grads[name] is None, name
            continue
        assert expected is not None and grads[name] is not None, name
        scale = expected.abs().max().item()
        assert scale > 0, name
        # float32 sums in another order: agreement to a few 1e-6 of the largest entry
        assert (grads[name] - expected).abs().max().item() <= 2e-5 * scale, name


def test_auto_takes_the_kernel_where_it_applies_and_torch_elsewhere():
    faces, x = _scene()
    camera = Camera.look_at((1.2, 0.8, 2.6), target=(0.0, 0.0, 0.0), fov_y=40.0)
    many = [DirectionalLight(direction=(0.1 * k, -1.0, -0.5)) for k in range(9)]  # beyond the kernel's 8
    vertices = x["vertices"].detach()
    auto = SoftRenderer(camera, image_size=24, shading="phong", lights=many)(vertices, faces)
    torch_image = SoftRenderer(camera, image_size=24, shading="phong", lights=many, compositor="torch")(vertices,
                                                                                                     faces)
    assert torch.equal(auto, torch_image)
    with pytest.raises(ParameterError, match="at most 8 lights"):
        SoftRenderer(camera, image_size=24, shading="phong", lights=many, compositor="warp")(vertices, faces)
    uvs = torch.rand(vertices.shape[1], 2)
    with pytest.raises(ParameterError, match="RGB colours"):
        SoftRenderer(camera, image_size=24, compositor="warp")(vertices, faces, uvs=uvs, texture=torch.rand(4, 4, 3))
    with pytest.raises(ParameterError, match="background has 2 per-frame rows for 3 frames"):
        SoftRenderer(camera, image_size=24)(vertices, faces, background=torch.zeros(2, 3))
    with pytest.raises(ParameterError, match="compositor 'cuda'"):
        SoftRenderer(camera, compositor="cuda")

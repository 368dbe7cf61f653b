"""Gradients of the soft renderer against central finite differences (float32 renderer, loss summed
over pixels), silhouette-only gradients, the loss landscape of a cube translation (paper Fig. 4) and
gradients of lights, materials, textures and background."""

import numpy as np
import pytest
import torch

from wsim.render import Camera, DirectionalLight, Material, PointLight, SoftRenderer, cube


def _rotation(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula for the axis-angle vector ``w``."""
    th = torch.sqrt((w * w).sum() + 1e-20)
    k = w / th
    z = torch.zeros((), dtype=w.dtype)
    K = torch.stack([torch.stack([z, -k[2], k[1]]), torch.stack([k[2], z, -k[0]]), torch.stack([-k[1], k[0], z])])
    return torch.eye(3) + torch.sin(th) * K + (1.0 - torch.cos(th)) * (K @ K)


def _sq(image, target):
    """Summed squared error, accumulated in float64 so that finite differences of the loss are not
    dominated by the rounding of a float32 sum."""
    return ((image.double() - target.double()) ** 2).sum()


def _fd_check(loss_fn, params, eps=1e-3, rtol=2e-2):
    """Compare autograd with central differences for every entry of every parameter.

    The rasterised image is only piecewise smooth in the geometry (a pixel centre crossing a crease
    or a silhouette vertex can make it jump by a little), so each entry takes the median of the
    central differences at steps ``2 eps``, ``eps`` and ``eps / 2``: one stencil straddling such an
    event cannot spoil the estimate."""
    params = [p.detach().clone().requires_grad_() for p in params]
    loss_fn(*params).backward()
    for k, p in enumerate(params):
        analytic = p.grad.reshape(-1).clone()
        fd = torch.zeros_like(analytic)
        for i in range(analytic.numel()):
            estimates = []
            for h in (2 * eps, eps, eps / 2):
                plus = [q.detach().clone() for q in params]
                minus = [q.detach().clone() for q in params]
                plus[k].reshape(-1)[i] += h
                minus[k].reshape(-1)[i] -= h
                with torch.no_grad():
                    estimates.append(float(loss_fn(*plus) - loss_fn(*minus)) / (2 * h))
            fd[i] = float(np.median(estimates))
        assert fd.norm() > 0, f"parameter {k}: zero finite-difference gradient"
        err = float((analytic - fd).norm() / fd.norm())
        assert err < rtol, f"parameter {k}: autograd {analytic.tolist()} vs FD {fd.tolist()} (rel err {err:.3g})"


@pytest.mark.parametrize("shading", ["flat", "phong"])
def test_pose_gradients_match_finite_differences(shading):
    cam = Camera.look_at((1.0, 1.5, 5.0), fov_y=40.0)
    if shading == "flat":
        v, f = cube(1.0)
    else:
        v, f = cube(1.0)  # shared vertices: smooth normals, continuous shading
    colour = torch.tensor([0.9, 0.6, 0.3]).expand(v.shape[0], 3)
    r = SoftRenderer(cam, image_size=32, sigma=3e-3, gamma=1e-2, background=(0.0, 0.0, 0.0), shading=shading,
                     lights=[DirectionalLight(direction=(-0.3, -1.0, -0.5))])
    target = r(v, f, colors=colour).detach()

    def loss(t, w, s):
        verts = (v * s) @ _rotation(w).T + t
        return _sq(r(verts, f, colors=colour), target)

    params = [torch.tensor([0.12, -0.08, 0.05]), torch.tensor([0.05, 0.1, -0.07]), torch.tensor(1.1)]
    _fd_check(loss, params)


def test_gradient_from_silhouette_alone():
    """The rendered cube and the target do not overlap anywhere (disjoint hard silhouettes): only
    the soft edge term links them, and its gradient pulls the cube towards the target."""
    cam = Camera.look_at((0.0, 0.0, 5.0), fov_y=40.0)
    v, f = cube(1.0)
    r = SoftRenderer(cam, image_size=32, sigma=1e-2, background=(0.0, 0.0, 0.0))
    target, tbuf = r(v, f, return_buffers=True)
    shift = torch.tensor([1.12, 0.0, 0.0])
    _, buf = r(v + shift, f, return_buffers=True)
    assert not ((tbuf["tri"] > 0) & (buf["tri"] > 0)).any()  # no covered pixel in common
    target = target.detach()

    def loss(t):
        return _sq(r(v + t, f), target)

    t = shift.clone().requires_grad_()
    loss(t).backward()
    assert t.grad[0] > 0  # moving towards the target (smaller x) lowers the loss
    _fd_check(loss, [shift])


def test_translation_loss_landscape_is_unimodal_and_smooth():
    cam = Camera.look_at((0.0, 2.0, 5.0), fov_y=40.0)
    v, f, _ = cube(1.0, split_faces=True)
    colors = torch.tensor([0.2, 0.5, 0.9]).expand(v.shape[0], 3)
    r = SoftRenderer(cam, image_size=32, sigma=1e-3, shading="phong", background=(1.0, 1.0, 1.0))
    target = r(v, f, colors=colors).detach()
    xs = np.linspace(-0.8, 0.8, 33)
    with torch.no_grad():
        losses = np.array([float(_sq(r(v + torch.tensor([x, 0.0, 0.0]), f, colors=colors), target))
                           for x in xs])
    k = int(np.argmin(losses))
    assert abs(xs[k]) < 1e-6 and losses[k] < 1e-8
    assert np.all(np.diff(losses[: k + 1]) < 0) and np.all(np.diff(losses[k:]) > 0)  # unimodal
    second = np.abs(np.diff(losses, 2))
    assert second.max() < 0.15 * (losses.max() - losses.min())  # no jumps


def test_light_material_background_gradients():
    cam = Camera.look_at((1.5, 2.0, 4.0), fov_y=40.0)
    v, f, _ = cube(1.0, split_faces=True)
    colors = torch.rand(v.shape[0], 3, generator=torch.Generator().manual_seed(3))
    r = SoftRenderer(cam, image_size=24, sigma=1e-4, shading="phong")
    target = torch.rand(1, 24, 24, 4, generator=torch.Generator().manual_seed(4))

    def loss(direction, lcolour, intensity, ppos, ambient, diffuse, specular, shininess, background):
        lights = [DirectionalLight(direction=direction, color=lcolour, intensity=intensity),
                  PointLight(position=ppos, color=(0.6, 0.5, 0.4), intensity=3.0, attenuation=0.1)]
        material = Material(ambient=ambient, diffuse=diffuse, specular=specular, shininess=shininess)
        img = r(v, f, colors=colors, lights=lights, material=material, background=background)
        return _sq(img, target)

    params = [torch.tensor([-0.3, -1.0, -0.6]), torch.tensor([1.0, 0.9, 0.8]), torch.tensor(1.2),
              torch.tensor([2.0, 3.0, 2.5]), torch.tensor([0.2, 0.25, 0.3]), torch.tensor([0.7, 0.6, 0.5]),
              torch.tensor([0.4, 0.4, 0.4]), torch.tensor(8.0), torch.tensor([0.3, 0.6, 0.9])]
    _fd_check(loss, params, eps=1e-2, rtol=1e-2)


def test_texture_and_vertex_colour_gradients():
    cam = Camera.look_at((1.2, 1.0, 3.5), fov_y=40.0)
    v, f, uvs = cube(1.0, split_faces=True)
    r = SoftRenderer(cam, image_size=24, sigma=1e-4, shading="phong")
    target = torch.rand(1, 24, 24, 4, generator=torch.Generator().manual_seed(5))
    texture = torch.rand(4, 4, 3, generator=torch.Generator().manual_seed(6))

    def tex_loss(tex):
        return _sq(r(v, f, uvs=uvs, texture=tex), target)

    _fd_check(tex_loss, [texture], eps=1e-2, rtol=1e-2)
    colors = torch.rand(v.shape[0], 3, generator=torch.Generator().manual_seed(7))

    def colour_loss(c):
        return _sq(r(v, f, colors=c), target)

    _fd_check(colour_loss, [colors], eps=1e-2, rtol=1e-2)

"""CUDA parity: the Warp backend on the GPU against the CPU, and nvdiffrast against Warp. Skipped
(with the reason) on machines without CUDA or without nvdiffrast. Run with ``-s`` to see the figures."""

import pytest
import torch

from wsim.render import Camera, Mesh, SoftRenderer, concat_meshes, cube, grid_plane, icosphere
from wsim.render.raster import nvdiffrast_available

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
needs_nvdiffrast = pytest.mark.skipif(
    not (HAS_CUDA and nvdiffrast_available()),
    reason="needs a CUDA GPU and nvdiffrast (optional extra: pip install diffrp-nvdiffrast)",
)


def _scene(device):
    sv, sf = icosphere(0.5, 2, center=(0.3, 0.55, 0.0))
    cv, cf = cube(0.6, center=(-0.45, 0.3, 0.2))
    gv, gf, _ = grid_plane(4.0, divisions=4)
    g = torch.Generator().manual_seed(0)
    meshes = [Mesh(sv, sf, torch.rand(sv.shape[0], 3, generator=g)), Mesh(cv, cf, torch.rand(cv.shape[0], 3, generator=g)),
              Mesh(gv, gf, torch.full((gv.shape[0], 3), 0.5))]
    v, f, c, _ = concat_meshes(meshes)
    shifts = torch.tensor([[0.0, 0.0, 0.0], [0.05, -0.02, 0.03]])
    v = v[0].unsqueeze(0) + shifts[:, None] * (torch.arange(v.shape[1]) < sv.shape[0] + cv.shape[0])[None, :, None]
    return v.to(device), f.to(device), c.to(device)


def _render_and_grad(device, backend, shading):
    v, f, c = _scene(device)
    v = v.clone().requires_grad_()
    cam = Camera.orbit(4.0, elevation=30.0, azimuth=25.0, target=(0.0, 0.3, 0.0), fov_y=40.0, device=device)
    r = SoftRenderer(cam, image_size=(48, 64), sigma=1e-4, gamma=1e-3, shading=shading, backend=backend)
    img, buf = r(v, f, colors=c, return_buffers=True)
    target = torch.linspace(0, 1, img.numel(), device=device).reshape(img.shape)
    ((img - target) ** 2).sum().backward()
    assert buf["backend"] == backend
    return img.detach().cpu(), v.grad.detach().cpu()


@needs_cuda
@pytest.mark.parametrize("shading", ["flat", "phong"])
def test_warp_backend_cuda_matches_cpu(shading):
    img_cpu, grad_cpu = _render_and_grad("cpu", "warp", shading)
    img_gpu, grad_gpu = _render_and_grad("cuda", "warp", shading)
    diff = float((img_cpu - img_gpu).abs().max())
    gerr = float((grad_cpu - grad_gpu).norm() / grad_cpu.norm())
    print(f"\nwarp cpu vs cuda ({shading}): image max abs diff {diff:.3g}, vertex-gradient rel diff {gerr:.3g}")
    assert diff < 1e-3
    assert gerr < 1e-3


@needs_nvdiffrast
@pytest.mark.parametrize("shading", ["flat", "phong"])
def test_nvdiffrast_backend_matches_warp(shading):
    img_w, grad_w = _render_and_grad("cuda", "warp", shading)
    img_n, grad_n = _render_and_grad("cuda", "nvdiffrast", shading)
    diff = (img_w - img_n).abs()
    # the two rasterisers may break exact ties on shared edges differently: allow a few pixels
    bad = int((diff.amax(-1) > 1e-3).sum())
    gerr = float((grad_w - grad_n).norm() / grad_w.norm())
    print(f"\nnvdiffrast vs warp ({shading}): image max abs diff {float(diff.max()):.3g} "
          f"(pixels over 1e-3: {bad}), vertex-gradient rel diff {gerr:.3g}")
    assert bad <= 3
    assert gerr < 2e-2


@needs_nvdiffrast
def test_nvdiffrast_texture_matches_warp():
    v, f, uvs = cube(1.0, split_faces=True)
    tex = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(1))
    cam = Camera.look_at((1.5, 1.2, 3.0), fov_y=45.0, device="cuda")
    out = []
    for backend in ("warp", "nvdiffrast"):
        r = SoftRenderer(cam, image_size=32, sigma=1e-4, backend=backend)
        out.append(r(v.cuda(), f.cuda(), uvs=uvs.cuda(), texture=tex.cuda()).cpu())
    diff = (out[0] - out[1]).abs()
    print(f"\nnvdiffrast vs warp (texture): image max abs diff {float(diff.max()):.3g}")
    assert int((diff.amax(-1) > 1e-3).sum()) <= 3

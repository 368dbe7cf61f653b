"""Renderer throughput: forward and forward+backward frames per second.

Renders a batch of frames of icospheres (about 100 to 10000 triangles) over a ground plane at 64,
128 and 256 px on every device present (the CPU always, CUDA when available) with the Warp backend
and, on CUDA with nvdiffrast installed, the nvdiffrast backend together with the ratio of its time to
nvdiffrast's bare ``rasterize`` + ``interpolate`` on the same inputs.

    python benchmarks/bench_render.py            # full grid
    python benchmarks/bench_render.py --quick    # a small grid (CI smoke test)
"""

from __future__ import annotations

import argparse
import time

import torch

from wsim.render import Camera, Mesh, SoftRenderer, concat_meshes, grid_plane, icosphere
from wsim.render.raster import nvdiffrast_available

# (icosphere subdivisions, number of spheres): 80 * 4^n triangles per sphere, plus the 32-triangle ground
SUBDIVISIONS = {"~100": (1, 1), "~1.3k": (3, 1), "~5k": (4, 1), "~10k": (4, 2)}


def _scene(spec, frames: int, device):
    subdiv, count = spec
    meshes = []
    for k in range(count):
        sv, sf = icosphere(0.6 / count ** 0.5, subdiv, center=(0.8 * (k - (count - 1) / 2), 0.6, 0.0))
        meshes.append(Mesh(sv, sf, torch.rand(sv.shape[0], 3)))
    gv, gf, _ = grid_plane(4.0, divisions=4)
    v, f, c, _ = concat_meshes(meshes + [Mesh(gv, gf, torch.full((gv.shape[0], 3), 0.5))])
    wobble = 0.05 * torch.sin(torch.arange(frames, dtype=torch.float32))[:, None, None]
    v = v + wobble * torch.tensor([1.0, 0.0, 0.5])
    return v.to(device), f.to(device), c.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (kernel compilation, caches)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench(device, backend, size, subdiv, frames, repeats, shading):
    v, f, c = _scene(subdiv, frames, device)
    cam = Camera.orbit(4.0, elevation=30.0, azimuth=30.0, target=(0.0, 0.4, 0.0), fov_y=40.0, device=device)
    r = SoftRenderer(cam, image_size=(size, size), sigma=1e-5, gamma=1e-4, shading=shading, backend=backend)

    def forward():
        with torch.no_grad():
            r(v, f, colors=c)

    vg = v.clone().requires_grad_()

    def backward():
        img = r(vg, f, colors=c)
        img.square().sum().backward()

    t_fwd = _time(forward, device, repeats)
    t_bwd = _time(backward, device, repeats)
    ratio = None
    if backend == "nvdiffrast":
        import nvdiffrast.torch as dr

        ctx = dr.RasterizeCudaContext(device=device)
        clip = cam.world_to_clip(v, (size, size)).contiguous()
        tri = f.to(torch.int32).contiguous()
        attrs = c.expand(v.shape[0], -1, -1).contiguous()

        def bare():
            with torch.no_grad():
                rast, _ = dr.rasterize(ctx, clip, tri, resolution=(size, size))
                dr.interpolate(attrs, rast, tri)

        ratio = t_fwd / _time(bare, device, repeats)
    return f.shape[0], t_fwd, t_bwd, ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 and 128 px, two mesh sizes, one repeat")
    parser.add_argument("--frames", type=int, default=4, help="frames per batch (default 4)")
    parser.add_argument("--shading", default="flat", choices=["flat", "phong"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: Warp's CPU kernels run on one thread anyway, and "
                             "spinning torch workers distort timings on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    sizes = (64, 128) if args.quick else (64, 128, 256)
    meshes = ("~100", "~1.3k") if args.quick else tuple(SUBDIVISIONS)
    repeats = args.repeats or (1 if args.quick else 3)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"frames per batch: {args.frames}, shading: {args.shading}, sigma 1e-5; scene = icosphere(s) + 32-triangle ground")
    print(f"{'device':<8}{'backend':<12}{'px':>5}{'triangles':>11}{'fwd fps':>10}{'fwd+bwd fps':>13}{'vs bare nvdr':>14}")
    for device in devices:
        backends = ["warp"]
        if device.type == "cuda" and nvdiffrast_available():
            backends.append("nvdiffrast")
        for backend in backends:
            for size in sizes:
                for name in meshes:
                    tris, t_fwd, t_bwd, ratio = bench(device, backend, size, SUBDIVISIONS[name], args.frames, repeats,
                                                      args.shading)
                    extra = f"{ratio:>13.1f}x" if ratio is not None else f"{'-':>14}"
                    print(f"{device.type:<8}{backend:<12}{size:>5}{tris:>11}{args.frames / t_fwd:>10.1f}"
                          f"{args.frames / t_bwd:>13.1f}{extra}", flush=True)


if __name__ == "__main__":
    main()

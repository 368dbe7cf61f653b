"""gradSim's Table 4 (right): steps per second of forward physics, forward render, backward physics and
backward physics + render, for a soft tetrahedral block of about 100 to 10000 tets.

One physics step per rendered frame (substeps 1, dt as in ``bench_fem.py``). Forward physics: a rollout
of ``--steps`` steps without a tape; forward render: every frame of that rollout rendered in one batch
(flat shading, ``--size`` px); backward physics: the adjoint of the rollout (a loss on the last frame's
vertices); backward physics + render: the adjoint of a pixel loss on every rendered frame through the
rollout. Rates are steps (or frames) per second; backward columns time the backward pass alone. Peers
measured in the same run: Newton's ``SolverSemiImplicit`` on the same mesh (physics columns) and, on
CUDA with nvdiffrast installed, bare ``rasterize`` + ``interpolate`` on the same triangles (render).

    python benchmarks/bench_table4.py [--device cuda:0] [--steps N] [--size PX] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import warp as wp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fem import DT, MATERIAL, SIZES, block, newton_rates  # noqa: E402

from wsim.builder import ModelBuilder  # noqa: E402
from wsim.render import Camera, SoftRenderer  # noqa: E402
from wsim.render.raster import nvdiffrast_available  # noqa: E402
from wsim.simulation import Simulation  # noqa: E402

#: the paper's Table 4 (right) at its sizes: forward DP, forward DR, backward DP, backward DP+DR (Hz)
PAPER = {100: (9057, 3504, 3721, 3057), 1000: (4174, 1690, 1644, 1041), 10000: (3721, 1500, 1429, 248)}


def _timed(fn, device: str, repeats: int) -> float:
    """Best wall time of ``fn`` over ``repeats`` calls after one warm-up; ``fn`` returns a callable to
    time separately (the backward pass) or None (time ``fn`` itself)."""
    best = float("inf")
    for trial in range(repeats + 1):
        wp.synchronize_device(device)
        start = time.perf_counter()
        second = fn()
        wp.synchronize_device(device)
        if second is not None:
            start = time.perf_counter()
            second()
            wp.synchronize_device(device)
        if trial:
            best = min(best, time.perf_counter() - start)
    return best


def measure(target: int, device: str, steps: int, size: int, repeats: int) -> dict:
    mesh = block(SIZES[target])
    builder = ModelBuilder()
    builder.add_soft_mesh(mesh, density=MATERIAL["density"], mu=MATERIAL["mu"], lam=MATERIAL["lam"],
                          damping=MATERIAL["damping"])
    sim = Simulation(builder.finalize(device), DT, 1, steps + 1, check_inputs=False)
    faces = torch.as_tensor(mesh.boundary_faces().astype(np.int64), device=sim.torch_device)
    camera = Camera.look_at((0.6, 1.3, 1.2), target=(0.0, 1.0, 0.0), fov_y=40.0, device=sim.torch_device)
    renderer = SoftRenderer(camera, image_size=size, sigma=1e-5, gamma=1e-4)
    mass = sim.default("particle_mass").requires_grad_(True)
    with torch.no_grad():
        frames = sim.rollout({"particle_mass": mass})

    def forward_physics():
        with torch.no_grad():
            sim.rollout({"particle_mass": mass})

    def forward_render():
        with torch.no_grad():
            renderer(frames, faces)

    def backward_physics():
        out = sim.rollout({"particle_mass": mass})
        return lambda: out[-1].sum().backward()

    def backward_all():
        images = renderer(sim.rollout({"particle_mass": mass}), faces)
        return lambda: images.square().mean().backward()

    row = {"tets": len(mesh.tets), "triangles": int(faces.shape[0]), "steps": steps,
           "forward_physics": steps / _timed(forward_physics, device, repeats),
           "forward_render": (steps + 1) / _timed(forward_render, device, repeats),
           "backward_physics": steps / _timed(backward_physics, device, repeats),
           "backward_physics_render": steps / _timed(backward_all, device, repeats)}
    masses = np.array([p["mass"] for p in builder.particles])
    row["newton_forward"], row["newton_backward"] = newton_rates(mesh, masses, device, steps, repeats)
    if device.startswith("cuda") and nvdiffrast_available():
        import nvdiffrast.torch as dr

        ctx = dr.RasterizeCudaContext(device=sim.torch_device)
        clip = camera.world_to_clip(frames, (size, size)).contiguous()
        tri = faces.to(torch.int32).contiguous()
        attrs = torch.ones_like(frames).contiguous()

        def bare():
            with torch.no_grad():
                rast, _ = dr.rasterize(ctx, clip, tri, resolution=(size, size))
                dr.interpolate(attrs, rast, tri)

        row["nvdiffrast_forward"] = (steps + 1) / _timed(bare, device, repeats)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: CUDA when present)")
    parser.add_argument("--steps", type=int, default=None, help="physics steps = rendered frames - 1")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--sizes", default="100,1000,10000", help="target tet counts, from 100,1000,10000")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = args.device or ("cuda:0" if wp.get_cuda_device_count() else "cpu")
    steps = args.steps or (100 if device.startswith("cuda") else 10)
    print(f"device {device}, {steps} steps, {args.size} px; rates in steps (frames) per second; "
          "paper = gradSim Table 4 on one GPU of 2020")
    head = f"{'tets':>6}{'tris':>6} | {'fwd DP':>9}{'fwd DR':>9}{'bwd DP':>9}{'bwd DP+DR':>10} | " \
           f"{'Newton fwd':>11}{'Newton bwd':>11}{'nvdr fwd':>10} | {'paper (fwd DP, fwd DR, bwd DP, bwd DP+DR)'}"
    print(head)
    for target in (int(s) for s in args.sizes.split(",")):
        r = measure(target, device, steps, args.size, args.repeats)

        def fmt(key, width):
            value = r.get(key)
            return f"{value:{width}.0f}" if value else f"{'n/a':>{width}}"

        paper = PAPER.get(target)
        print(f"{r['tets']:6d}{r['triangles']:6d} | {fmt('forward_physics', 9)}{fmt('forward_render', 9)}"
              f"{fmt('backward_physics', 9)}{fmt('backward_physics_render', 10)} | {fmt('newton_forward', 11)}"
              f"{fmt('newton_backward', 11)}{fmt('nvdiffrast_forward', 10)} | {paper}", flush=True)


if __name__ == "__main__":
    main()

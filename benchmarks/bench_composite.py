"""Shading and compositing: the Warp kernel against the torch compositor, in the same run.

Renders 16 frames of the sysid shapes (``shape_mesh(name, 8)``) at 64 px with sigma 1e-3, gamma 1e-2,
flat and Phong shading, once with ``compositor="torch"`` (torch operations on whole images) and once
with ``compositor="warp"`` (one kernel that shades only the layers that show); prints the best
forward and backward (``image.sum().backward()`` with respect to the vertices) times of ``--repeats``
calls after two warm-ups, and their ratios. Both give the same image and gradients to float round-off
(tests/test_render_composite.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_composite.py [--repeats 7] [--shapes box bunny_blob]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from wsim.geometry.shapes import shape_mesh
from wsim.render import Camera, SoftRenderer

SHAPES = ("box", "bunny_blob", "gear_prism", "cross_prism")


def timing(renderer, vertices, faces, repeats: int) -> tuple[float, float]:
    forward, backward = [], []
    for trial in range(repeats + 2):
        x = vertices.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        image = renderer(x, faces)
        middle = time.perf_counter()
        image.sum().backward()
        end = time.perf_counter()
        if trial >= 2:
            forward.append(middle - start)
            backward.append(end - middle)
    return 1e3 * min(forward), 1e3 * min(backward)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    camera = Camera.look_at((1.2, 0.8, 2.6), target=(0.0, 0.0, 0.0), fov_y=40.0)
    print(f"{'shape':12}{'shading':>8}{'torch fwd ms':>14}{'warp fwd ms':>13}{'ratio':>7}{'torch bwd ms':>14}"
          f"{'warp bwd ms':>13}{'ratio':>7}{'fwd+bwd ratio':>15}")
    for name in args.shapes:
        mesh = shape_mesh(name, 8)
        vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
        faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64)
        frames = vertices[None].repeat(args.frames, 1, 1) + torch.linspace(0.0, 0.1, args.frames)[:, None, None]
        for shading in ("flat", "phong"):
            times = {}
            for compositor in ("torch", "warp"):
                renderer = SoftRenderer(camera, image_size=args.resolution, sigma=1e-3, gamma=1e-2, shading=shading,
                                        compositor=compositor)
                times[compositor] = timing(renderer, frames, faces, args.repeats)
            (tf, tb), (wf, wb) = times["torch"], times["warp"]
            print(f"{name:12}{shading:>8}{tf:14.1f}{wf:13.1f}{tf / wf:7.2f}{tb:14.1f}{wb:13.1f}{tb / wb:7.2f}"
                  f"{(tf + tb) / (wf + wb):15.2f}", flush=True)


if __name__ == "__main__":
    main()

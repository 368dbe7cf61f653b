"""FEM physics throughput: forward and backward steps per second, wsim vs Newton's semi-implicit solver.

For tetrahedral boxes of about 100, 1000 and 10000 elements (the sizes of the paper's Table 4), a soft
block falls freely (no ground: within the rollout it would not reach one, and Newton's solver here has
no particle contact); both use the same mesh, material, masses, gravity and dt. Forward: a rollout of ``--steps`` physics steps; backward: the
adjoint of the same rollout (wsim through the PyTorch bridge, Newton through ``wp.Tape``). Prints steps/s
and the wsim / Newton ratio for every device present (``--device`` to restrict). ``--graph`` also runs
both with their forward and backward passes captured as Warp graphs and replayed (wsim:
``Simulation(graph=True)``; Newton: its step loop and tape backward inside ``wp.ScopedCapture``), and
prints those rates with the ratios graph/graph and wsim graph / Newton without.

    .venv/bin/python benchmarks/bench_fem.py [--quick] [--graph] [--steps N] [--device cpu|cuda:0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import warp as wp

import wsim  # noqa: F401
from wsim.geometry import tetmesh
from wsim.builder import ModelBuilder
from wsim.simulation import Simulation

SIZES = {100: (2, 2, 4), 1000: (5, 5, 7), 10000: (12, 12, 12)}
MATERIAL = dict(mu=2.0e4, lam=4.0e4, damping=1.0, density=500.0)
DT = 2e-4


def block(cells):
    return tetmesh.box((0.04 * cells[0], 0.04 * cells[1], 0.04 * cells[2]), cells, (0.0, 1.0, 0.0))


def wsim_rates(mesh, device, steps, repeats, graph=False):
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(mesh, density=MATERIAL["density"], mu=MATERIAL["mu"], lam=MATERIAL["lam"],
                          damping=MATERIAL["damping"])
    sim = Simulation(builder.finalize(device), DT, steps, 2, check_inputs=False, graph=graph)
    mass = sim.default("particle_mass").requires_grad_(True)
    sim.rollout({"particle_mass": mass}).sum().backward()  # warm-up (kernel compile; with graph: capture)
    forward, backward = [], []
    for _ in range(repeats):
        wp.synchronize()
        start = time.perf_counter()
        out = sim.rollout({"particle_mass": mass})
        wp.synchronize()
        middle = time.perf_counter()
        out[-1].sum().backward()
        wp.synchronize()
        forward.append(middle - start)
        backward.append(time.perf_counter() - middle)
    return steps / min(forward), steps / min(backward), builder


def newton_rates(mesh, masses, device, steps, repeats, graph=False):
    try:
        import newton
    except ImportError:
        return None, None
    builder = newton.ModelBuilder(up_axis=newton.Axis.Y)
    builder.gravity = (0.0, -9.80665, 0.0)
    for position, mass in zip(mesh.vertices, masses):
        builder.add_particle(tuple(position), (0.0, 0.0, 0.0), float(mass), radius=0.0)
    for tet in mesh.tets:
        builder.add_tetrahedron(*map(int, tet), k_mu=MATERIAL["mu"], k_lambda=MATERIAL["lam"],
                                k_damp=MATERIAL["damping"])
    model = builder.finalize(device=device, requires_grad=True)
    model.particle_grid = None
    solver = newton.solvers.SolverSemiImplicit(model)
    states = [model.state() for _ in range(steps + 1)]
    control = model.control()

    def rollout():
        for k in range(steps):
            states[k].clear_forces()
            solver.step(states[k], states[k + 1], control, None, DT)

    seed = wp.ones(model.particle_count, dtype=wp.vec3, device=device)
    if graph:
        tape = wp.Tape()
        with tape:  # warm-up: loads the kernels outside the capture
            rollout()
        tape.backward(grads={states[-1].particle_q: seed})
        tape = wp.Tape()
        with wp.ScopedCapture(device=device) as forward_capture:
            with tape:
                rollout()
        with wp.ScopedCapture(device=device) as backward_capture:
            tape.zero()
            tape.backward(grads={states[-1].particle_q: seed})
    forward, backward = [], []
    for trial in range(repeats + 1):
        wp.synchronize()
        start = time.perf_counter()
        if graph:
            wp.capture_launch(forward_capture.graph)
        else:
            tape = wp.Tape()
            with tape:
                rollout()
        wp.synchronize()
        middle = time.perf_counter()
        if graph:
            wp.capture_launch(backward_capture.graph)
        else:
            tape.backward(grads={states[-1].particle_q: seed})
        wp.synchronize()
        if trial:  # the first trial compiles kernels
            forward.append(middle - start)
            backward.append(time.perf_counter() - middle)
        if not graph:
            tape.zero()
    return steps / min(forward), steps / min(backward)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one repeat")
    parser.add_argument("--graph", action="store_true", help="also time both with captured graphs")
    parser.add_argument("--steps", type=int, default=None, help="physics steps per rollout")
    parser.add_argument("--device", default=None, help="only this device (default: every device present)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = [args.device] if args.device else ["cpu"] + (["cuda:0"] if wp.get_cuda_device_count() else [])
    repeats = 1 if args.quick else 3
    modes = ["tape", "graph"] if args.graph else ["tape"]
    print(f"{'device':8}{'mode':>6}{'tets':>7}{'steps':>7}{'wsim fwd/s':>12}{'newton fwd/s':>14}{'ratio':>7}"
          f"{'wsim bwd/s':>12}{'newton bwd/s':>14}{'ratio':>7}")
    for device in devices:
        for target, cells in SIZES.items():
            steps = args.steps or (50 if args.quick else 200)
            if device == "cpu" and target == 10000:
                steps = max(steps // 5, 10)
            mesh = block(cells)
            plain = {}
            for mode in modes:
                fwd, bwd, builder = wsim_rates(mesh, device, steps, repeats, graph=mode == "graph")
                masses = np.array([p["mass"] for p in builder.particles])
                nfwd, nbwd = newton_rates(mesh, masses, device, steps, repeats, graph=mode == "graph")
                plain.setdefault("newton", (nfwd, nbwd))
                nf = f"{nfwd:14.1f}" if nfwd else f"{'n/a':>14}"
                nb = f"{nbwd:14.1f}" if nbwd else f"{'n/a':>14}"
                rf = f"{fwd / nfwd:7.2f}" if nfwd else f"{'':>7}"
                rb = f"{bwd / nbwd:7.2f}" if nbwd else f"{'':>7}"
                print(f"{device:8}{mode:>6}{len(mesh.tets):7d}{steps:7d}{fwd:12.1f}{nf}{rf}{bwd:12.1f}{nb}{rb}", flush=True)
                if mode == "graph" and plain["newton"][0]:
                    print(f"{'':8}{'':>6}{'':>7}{'':>7}  wsim graph / newton tape: forward "
                          f"{fwd / plain['newton'][0]:.2f}x, backward {bwd / plain['newton'][1]:.2f}x", flush=True)


if __name__ == "__main__":
    main()

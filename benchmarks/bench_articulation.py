"""Articulated-body step rate: wsim's reduced-coordinate rollout against MuJoCo and Newton's Featherstone
solver on the same MJCF model, measured in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_articulation.py [--links 2,7,20] [--steps 2000]
        [--batch 1,16] [--device cpu] [--out benchmarks/results]

The model is a serial chain of ``n`` hinged capsules (explicit inertials, no contact, no joint damping),
compiled by MuJoCo, loaded by wsim (``load_mjcf``) and by Newton (``ModelBuilder.add_mjcf``), with
semi-implicit Euler at dt = 1 ms in all three. ``--batch B`` runs B copies of the chain at once
(wsim: one articulation per thread of one launch; Newton: B articulations in one model; MuJoCo:
B models stepped one after another, which is how its single-threaded C library batches). Reported:
physics steps per second of the whole batch (times B: chain-steps per second), wsim's forward rollout
alone and forward plus backward (the tape's adjoint of every parameter), Newton's forward step, and
MuJoCo's mj_step, with wsim's ratio to each peer. Every figure is the best of ``--repeats`` timed runs
after a warm-up (kernel compilation excluded). Results go to ``<out>/articulation_steps.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsim.export import write_json, write_text  # noqa: E402

DT = 1.0e-3


def chain_mjcf(links: int, copies: int = 1) -> str:
    """``copies`` independent chains of ``links`` hinged capsules (0.3 m, 1 kg), Z up, every joint about y."""
    def body(depth: int) -> str:
        if depth == links:
            return ""
        pos = "0 0 0" if depth == 0 else "0 0 -0.3"
        return (f'<body pos="{pos}"><joint type="hinge" axis="0 1 0"/>'
                f'<inertial pos="0 0 -0.15" mass="1" diaginertia="0.0077 0.0077 0.0005"/>'
                f'<geom type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03" contype="0" conaffinity="0"/>'
                f'{body(depth + 1)}</body>')
    chains = "".join(f'<body pos="{k} 0 2"><geom type="sphere" size="0.01" contype="0" conaffinity="0"/>'
                     f'{body(0)}</body>' for k in range(copies))
    return (f'<mujoco><option timestep="{DT}" integrator="Euler" gravity="0 0 -9.81"/>'
            f'<worldbody>{chains}</worldbody></mujoco>')


def best_time(run, repeats: int) -> float:
    run()  # warm-up: compilation and first-touch allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def wsim_rates(xml: str, steps: int, device: str, repeats: int) -> dict:
    import torch

    from wsim.models.articulation import ArticulationRollout
    from wsim.models.articulation_io import load_mjcf

    articulation, _ = load_mjcf(xml, device=device)
    rollout = ArticulationRollout(articulation, dt=DT, substeps=1, frames=steps + 1, check_nan=True)
    q0 = torch.full((articulation.dof_count,), 0.3, dtype=torch.float64)

    final = {}

    def forward():
        with torch.no_grad():
            final["q"] = rollout.rollout({"joint_q": q0})[0][-1].cpu().numpy()

    def backward():
        q = q0.clone().requires_grad_(True)
        positions, _ = rollout.rollout({"joint_q": q})
        positions[-1].sum().backward()

    rates = {"forward": steps / best_time(forward, repeats), "forward_backward": steps / best_time(backward, repeats)}
    return rates, final["q"]


def mujoco_rate(xml: str, steps: int, copies: int, repeats: int) -> float:
    import mujoco

    model = mujoco.MjModel.from_xml_string(xml)
    datas = [mujoco.MjData(model) for _ in range(copies)]

    def run():
        for data in datas:
            data.qpos[:] = 0.3
            data.qvel[:] = 0.0
            for _ in range(steps):
                mujoco.mj_step(model, data)

    rate = steps / best_time(run, repeats)
    return rate, np.concatenate([data.qpos for data in datas])


def newton_rate(xml: str, steps: int, device: str, repeats: int) -> float:
    import newton
    import warp as wp

    builder = newton.ModelBuilder()
    builder.add_mjcf(xml, floating=False)
    model = builder.finalize(device=device)
    solver = newton.solvers.SolverFeatherstone(model, angular_damping=0.0)
    states = [model.state(), model.state()]
    control = model.control()

    def run():
        states[0].joint_q.fill_(0.3)
        states[0].joint_qd.zero_()
        newton.eval_fk(model, states[0].joint_q, states[0].joint_qd, states[0])
        for k in range(steps):
            solver.step(states[k % 2], states[(k + 1) % 2], control, None, DT)
        wp.synchronize_device(device)

    rate = steps / best_time(run, repeats)
    return rate, states[steps % 2].joint_q.numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", default="2,7,20")
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    rows = []
    for links in (int(v) for v in args.links.split(",")):
        for copies in (int(v) for v in args.batch.split(",")):
            xml = chain_mjcf(links, copies)
            rates, q_wsim = wsim_rates(xml, args.steps, args.device, args.repeats)
            mujoco, q_mujoco = mujoco_rate(chain_mjcf(links), args.steps, copies, args.repeats)
            row = {"links": links, "batch": copies, **rates, "mujoco": mujoco,
                   "max_dq_mujoco": float(np.abs(q_wsim - q_mujoco).max())}
            try:
                row["newton"], q_newton = newton_rate(xml, args.steps, args.device, args.repeats)
                row["max_dq_newton"] = float(np.abs(q_wsim - q_newton).max())
            except Exception as error:  # a Newton version without this path: the other columns still count
                row["newton"], row["newton_error"] = None, f"{type(error).__name__}: {error}"
            rows.append(row)
            print(f"{links:3d} links x {copies:3d}: wsim {row['forward']:9.0f} steps/s "
                  f"(+backward {row['forward_backward']:8.0f}), MuJoCo {row['mujoco']:9.0f}, "
                  f"Newton {row['newton'] or float('nan'):9.0f}; final q differs from MuJoCo by "
                  f"{row['max_dq_mujoco']:.1e} rad, from Newton by {row.get('max_dq_newton', float('nan')):.1e}",
                  flush=True)
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_articulation.py " + " ".join(argv or sys.argv[1:])
    lines = [f"# Articulation step rate (device {args.device}, {platform.processor() or platform.machine()})", "",
             f"command: `{command.strip()}`", "",
             f"Serial chains of hinged capsules, dt = 1 ms, semi-implicit Euler, {args.steps} steps, best of "
             f"{args.repeats}. Figures are physics steps per second of the whole batch (batch B: B chains a "
             "step); MuJoCo steps its B copies one after another. max dq: the largest difference of the final joint "
             "angles (rad) from wsim's, which shows that the three integrate the same model.", "",
             "| links | batch | wsim forward | wsim fwd+bwd | MuJoCo | Newton Featherstone | wsim/MuJoCo | wsim/Newton "
             "| max dq MuJoCo | max dq Newton |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        newton = "-" if r["newton"] is None else f"{r['newton']:.0f}"
        ratio = "-" if r["newton"] is None else f"{r['forward'] / r['newton']:.3g}"
        lines.append(f"| {r['links']} | {r['batch']} | {r['forward']:.0f} | {r['forward_backward']:.0f} | "
                     f"{r['mujoco']:.0f} | {newton} | {r['forward'] / r['mujoco']:.3g} | {ratio} | "
                     f"{r['max_dq_mujoco']:.1e} | {r.get('max_dq_newton', float('nan')):.1e} |")
    out = Path(args.out)
    write_text(out / "articulation_steps.md", "\n".join(lines) + "\n")
    write_json(out / "articulation_steps.json", {"command": command, "device": args.device, "dt": DT,
                                                  "steps": args.steps, "rows": rows, "host": platform.node()})
    print(f"wrote {out / 'articulation_steps.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

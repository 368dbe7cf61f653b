"""Batched scenes against one at a time, measured in the same run.

1. **Rollouts**: forward + backward of N rigid-mass scenes (seeds 1000.., their random shapes and
   poses, 16 frames x 10 substeps) as N single rollouts against one :class:`wsim.batch.BatchedSimulation`
   rollout; rollouts per second and the ratio. The outputs and gradients are checked equal (bit for bit).
2. **System identification**: ``wsim run rigid-mass --instances N`` (the config's full size: 64 px, 16
   frames) one instance at a time against ``--batch N`` (lockstep), each a fresh process; instances per
   hour, the ratio, and whether every estimate is the same. ``--processes 2`` adds ``--workers 2`` (two
   worker processes, one instance at a time each: two cores without the batch) and two processes sharing
   the output folder (``--resume``) with ``--batch N/2`` each (the batch on two cores).
3. **Renders**: forward + backward of the 16 frames of N scenes (rigid-mass's renderer settings: 64 px,
   Phong, sigma 1e-3) as N renderer calls against one call of 16 N frames, for a box and a bunny-like
   blob (the same mesh in every scene: the best case for a batch, which with different meshes would
   also carry every other scene's faces); the images and gradients are checked equal.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch.py [--sizes 1 4 16 64] [--render-sizes 1 4 16]
        [--instances 8] [--processes 2] [--out benchmarks/results/batch_rigid-mass]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WSIM = [sys.executable, "-c", "import sys; from wsim.cli import main; sys.exit(main())"]


def rollouts(sizes: list[int], repeats: int) -> list[dict]:
    import torch

    from wsim.batch import BatchedSimulation
    from wsim.sysid import load_experiment
    from wsim.sysid.instance import Instance

    config = load_experiment("rigid-mass", ["seed=1000"])
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    pool = [Instance(config, 1000 + k, work / str(k), device="cpu") for k in range(max(sizes))]
    rows = []
    for n in sizes:
        members = pool[:n]
        values = [{"density": torch.full((1,), 3.0 + 0.1 * k, requires_grad=True)} for k in range(n)]

        def single():
            outs = []
            for inst, v in zip(members, values):
                out = inst.sim.rollout(v)
                (out ** 2).sum().backward()
                outs.append(out.detach())
            return outs

        batch = BatchedSimulation([inst.sim for inst in members])

        def batched():
            outs = batch.rollout(values)
            sum((out ** 2).sum() for out in outs).backward()
            return [out.detach() for out in outs]

        timings = {}
        results = {}
        for name, run in (("single", single), ("batched", batched)):
            for v in values:
                v["density"].grad = None
            results[name] = (run(), [v["density"].grad.clone() for v in values])  # warm-up, and the compared values
            started = time.perf_counter()
            for _ in range(repeats):
                run()
            timings[name] = (time.perf_counter() - started) / repeats
        same = (all(torch.equal(a, b) for a, b in zip(results["single"][0], results["batched"][0]))
                and all(torch.equal(a, b) for a, b in zip(results["single"][1], results["batched"][1])))
        rows.append({"scenes": n, "single_per_s": n / timings["single"], "batched_per_s": n / timings["batched"],
                     "ratio": timings["single"] / timings["batched"], "bit_identical": same})
        print(f"rollouts N={n}: single {rows[-1]['single_per_s']:.1f}/s, batched {rows[-1]['batched_per_s']:.1f}/s, "
              f"ratio {rows[-1]['ratio']:.2f}, identical {same}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def renders(sizes: list[int], repeats: int, shapes=("box", "bunny_blob")) -> list[dict]:
    import numpy as np
    import torch

    from wsim.geometry.shapes import shape_mesh
    from wsim.render import Camera, SoftRenderer

    camera = Camera.look_at((1.2, 0.8, 2.6), target=(0.0, 0.0, 0.0), fov_y=40.0)
    renderer = SoftRenderer(camera, image_size=64, sigma=1e-3, gamma=1e-2, shading="phong")
    rows = []
    for shape in shapes:
        mesh = shape_mesh(shape, 8)
        vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
        faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64)
        for n in sizes:
            frames = (vertices[None] + torch.linspace(0.0, 0.2, 16 * n)[:, None, None]).requires_grad_(True)

            def single():
                frames.grad = None
                images = [renderer(part, faces) for part in frames.split(16)]
                sum(image.sum() for image in images).backward()
                return torch.cat([image.detach() for image in images]), frames.grad.clone()

            def batched():
                frames.grad = None
                image = renderer(frames, faces)
                image.sum().backward()
                return image.detach(), frames.grad.clone()

            timings, results = {}, {}
            for name, run in (("single", single), ("batched", batched)):
                results[name] = run()  # warm-up, and the compared values
                started = time.perf_counter()
                for _ in range(repeats):
                    run()
                timings[name] = (time.perf_counter() - started) / repeats
            same = all(torch.equal(a, b) for a, b in zip(results["single"], results["batched"]))
            rows.append({"shape": shape, "scenes": n, "single_ms": 1e3 * timings["single"],
                         "batched_ms": 1e3 * timings["batched"], "ratio": timings["single"] / timings["batched"],
                         "bit_identical": same})
            print(f"renders {shape} N={n}: {n} calls {rows[-1]['single_ms']:.1f} ms, one call "
                  f"{rows[-1]['batched_ms']:.1f} ms, ratio {rows[-1]['ratio']:.2f}, identical {same}", flush=True)
    return rows


def sysid(instances: int, processes: int, overrides: list[str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench_batch_sysid_"))
    base = ["run", "rigid-mass", "--instances", str(instances), "--quiet", "--set", "seed=1000"]
    for item in overrides:
        base += ["--set", item]
    runs = {"one at a time": [base + ["--out", str(work / "single")]],
            f"--batch {instances}": [base + ["--out", str(work / "batched"), "--batch", str(instances)]]}
    if processes > 1:
        share = -(-instances // processes)
        runs[f"--workers {processes}"] = [base + ["--out", str(work / "workers"), "--workers", str(processes)]]
        runs[f"{processes} processes x --batch {share}"] = [
            base + ["--out", str(work / "processes"), "--batch", str(share), "--resume"] for _ in range(processes)]
    out = {}
    for label, commands in runs.items():
        started = time.perf_counter()
        procs = [subprocess.Popen(WSIM + c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for c in commands]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - started
        folder = Path(commands[0][commands[0].index("--out") + 1])
        estimates = [json.loads((folder / f"instance_{k:03d}" / "results.json").read_text())["estimate"]
                     for k in range(instances)]
        out[label] = {"wall_s": wall, "instances_per_hour": 3600.0 * instances / wall, "exit_codes": codes,
                      "estimates": estimates}
        print(f"sysid {label}: {wall:.1f} s, {out[label]['instances_per_hour']:.0f} instances/hour", flush=True)
    reference = out["one at a time"]
    for label, row in out.items():
        row["ratio"] = row["instances_per_hour"] / reference["instances_per_hour"]
        row["same_estimates"] = row["estimates"] == reference["estimates"]
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--render-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--skip-sysid", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch_rigid-mass"))
    args = parser.parse_args()
    record = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch.py " + " ".join(sys.argv[1:]),
              "host": {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "rollouts": rollouts(args.sizes, args.repeats), "renders": renders(args.render_sizes, args.repeats)}
    if not args.skip_sysid:
        record["sysid"] = sysid(args.instances, args.processes, args.overrides)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from wsim.export import write_json, write_text

    write_json(out.with_suffix(".json"), record)
    lines = [f"# Batched rigid-mass scenes against one at a time (CPU, {os.cpu_count()} cores)", "",
             f"command: `{record['command']}`", "", "| scenes | single rollouts/s | batched rollouts/s | ratio | "
             "bit-identical |", "|---|---|---|---|---|"]
    lines += [f"| {r['scenes']} | {r['single_per_s']:.1f} | {r['batched_per_s']:.1f} | {r['ratio']:.2f} | "
              f"{r['bit_identical']} |" for r in record["rollouts"]]
    lines += ["", "Renders of 16 frames per scene (64 px, Phong), forward + backward: N calls against one call:", "",
              "| shape | scenes | N calls ms | one call ms | ratio | bit-identical |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['scenes']} | {r['single_ms']:.1f} | {r['batched_ms']:.1f} | {r['ratio']:.2f} | "
              f"{r['bit_identical']} |" for r in record["renders"]]
    if "sysid" in record:
        lines += ["", f"System identification, `wsim run rigid-mass --instances {args.instances}` (full config "
                  "size), each a fresh process:", "", "| run | wall s | instances/hour | ratio | same estimates |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {r['wall_s']:.1f} | {r['instances_per_hour']:.0f} | {r['ratio']:.2f} | "
                  f"{r['same_estimates']} |" for label, r in record["sysid"].items()]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

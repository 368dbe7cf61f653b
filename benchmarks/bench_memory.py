"""Peak memory and time of one forward + backward rollout against the horizon: one tape vs checkpointing.

For every scene and horizon (rendered frames), a fresh Python process builds the shipped scene with
``sim.frames`` overridden, warms up (kernel loading, one tiny rollout in both modes), then runs one
``rollout(params)`` + ``backward()`` of a loss of every vertex with respect to the scene's listed
parameters, once with the single tape (``checkpoint_every=None``) and once in another fresh process with
``checkpoint_every = K`` (default ``round(sqrt(frames - 1))`` frame intervals; ``--every`` fixes it).

What is measured (one process per configuration, so no high-water mark carries over):

* ``rss``: the growth of the process's resident set over the rollout, as the high-water mark
  ``getrusage(RUSAGE_SELF).ru_maxrss`` after the rollout minus the resident set (``/proc/self/statm``)
  before it: everything the rollout held at its peak (Warp's native arrays, the tape's Python launch
  records and views, torch tensors);
* ``warp``: the peak of Warp's own allocations during the rollout, from Warp's allocation tracker
  (``wp.ScopedMemoryTracker``, "Peak usage" of the device; arrays only, no Python objects);
* on CUDA, ``warp`` is ``wp.get_mempool_used_mem_high`` minus the pool's use before the rollout (the
  tracker runs as well and is reported when it prints a figure); ``torch.cuda.max_memory_allocated``
  would not see Warp's allocations.
* ``time``: wall-clock seconds of the forward + backward (after ``wp.synchronize``).

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_memory.py [--frames 50 100 200 400]
        [--scenes box-drop soft-ball] [--every K] [--device cpu] [--out benchmarks/results/memory_checkpointing]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"box-drop": ["density", "ke", "kd", "mu", "velocity"],
          "soft-ball": ["lame_mu", "lame_lambda", "particle_velocity", "ke"]}
UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def child(scene_name: str, frames: int, every: int | None, device: str) -> dict:
    """One measurement, in this (fresh) process."""
    import torch
    import warp as wp

    wp.config.quiet = True
    from wsim.config import load_config
    from wsim.scene import build_scene

    def simulation(count):
        sim = build_scene(load_config(scene_name, [f"sim.frames={count}"]), device).simulation
        sim.check_runaway = True
        return sim

    def loss_and_backward(sim, names):
        params = {name: sim.default(name).clone().requires_grad_(True) for name in names}
        vertices = sim.rollout(params)
        (vertices * vertices).sum().backward()
        return {name: float(p.grad.abs().sum()) for name, p in params.items()}

    names = PARAMS[scene_name]
    warm = simulation(5)
    for k in (None, 2):  # loads every kernel of both paths
        warm.checkpoint_every = k
        loss_and_backward(warm, names)
    del warm
    sim = simulation(frames)
    sim.checkpoint_every = every
    cuda = device.startswith("cuda")
    wp.synchronize()
    pool_before = wp.get_mempool_used_mem_current(device) if cuda else None
    rss_before = _rss_bytes()
    reports = []
    with wp.ScopedMemoryTracker("rollout", print=False) as tracker:
        start = time.perf_counter()
        grads = loss_and_backward(sim, names)
        wp.synchronize()
        seconds = time.perf_counter() - start
        tracker.report_func = reports.append
        tracker.report()
    peak_rss = _max_rss_bytes()
    found = re.search(r"Peak usage:\s*\n\s*(\S+)\s+([\d.]+)\s*(B|KB|MB|GB)", reports[0] if reports else "")
    warp_peak = int(float(found.group(2)) * UNITS[found.group(3)]) if found else None
    if cuda:
        warp_peak = wp.get_mempool_used_mem_high(device) - pool_before
    return {"scene": scene_name, "frames": frames, "steps": sim.steps, "every": every, "seconds": seconds,
            "rss_bytes": peak_rss - rss_before, "peak_rss_bytes": peak_rss, "warp_peak_bytes": warp_peak,
            "grad_abs_sums": grads}


def measure(scene_name, frames, every, device) -> dict:
    command = [sys.executable, __file__, "--child", scene_name, str(frames), str(every or 0), device]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(value) -> str:
    return "n/a" if value is None else f"{value / 2 ** 20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--scenes", nargs="+", default=["box-drop", "soft-ball"], choices=sorted(PARAMS))
    parser.add_argument("--every", type=int, default=None, help="segment length K in frame intervals "
                        "(default round(sqrt(frames - 1)))")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/memory_checkpointing"))
    args = parser.parse_args()
    rows = []
    began = time.perf_counter()
    for scene_name in args.scenes:
        for frames in args.frames:
            every = args.every or max(1, round(math.sqrt(frames - 1)))
            full = measure(scene_name, frames, None, args.device)
            checkpointed = measure(scene_name, frames, every, args.device)
            same = full["grad_abs_sums"] == checkpointed["grad_abs_sums"]
            rows.append({"full": full, "checkpointed": checkpointed, "same_gradients": same})
            print(f"{scene_name} {frames} frames: full {mib(full['rss_bytes'])} MiB {full['seconds']:.2f} s, "
                  f"K={every} {mib(checkpointed['rss_bytes'])} MiB {checkpointed['seconds']:.2f} s", flush=True)
    header = ("| scene | frames | steps | K | RSS growth full (MiB) | RSS growth ckpt (MiB) | ratio | "
              "Warp peak full (MiB) | Warp peak ckpt (MiB) | ratio | time full (s) | time ckpt (s) | ratio | "
              "same grads |")
    lines = [header, "|" + "---|" * 14]
    for row in rows:
        f, c = row["full"], row["checkpointed"]
        warp_ratio = (f"{f['warp_peak_bytes'] / c['warp_peak_bytes']:.1f}x"
                      if f["warp_peak_bytes"] and c["warp_peak_bytes"] else "n/a")
        lines.append(f"| {f['scene']} | {f['frames']} | {f['steps']} | {c['every']} | {mib(f['rss_bytes'])} | "
                     f"{mib(c['rss_bytes'])} | {f['rss_bytes'] / max(c['rss_bytes'], 1):.1f}x | "
                     f"{mib(f['warp_peak_bytes'])} | {mib(c['warp_peak_bytes'])} | {warp_ratio} | "
                     f"{f['seconds']:.2f} | {c['seconds']:.2f} | {c['seconds'] / f['seconds']:.2f}x | "
                     f"{'yes' if row['same_gradients'] else 'no'} |")
    table = "\n".join(lines)
    print(table)
    command = "OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])
    text = (f"# Memory of a rollout's forward + backward: one tape vs gradient checkpointing\n\n"
            f"Command: `{command.strip()}` (device {args.device}, {time.perf_counter() - began:.0f} s in all; "
            f"{os.cpu_count()} CPUs shared with other jobs, so the times are indicative).\n\n"
            "Each configuration runs in a fresh process. RSS growth: the process's resident-set high-water "
            "mark after the rollout minus its resident set before it (Warp arrays, the tape's Python "
            "records, torch tensors). Warp peak: the peak of Warp's own allocations during the rollout "
            "(`wp.ScopedMemoryTracker`). Time: forward + backward wall clock. Ratios: full / checkpointed "
            "for memory, checkpointed / full for time. K: frame intervals per segment "
            "(`Simulation.checkpoint_every`). Same grads: the sums of |gradient| per parameter are equal "
            "to the last bit.\n\n" + table + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "device": args.device,
                                                    "rows": rows}, indent=1))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, scene_arg, frames_arg, every_arg, device_arg = sys.argv
        result = child(scene_arg, int(frames_arg), int(every_arg) or None, device_arg)
        print(json.dumps(result))
    else:
        main()

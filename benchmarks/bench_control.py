"""Visuomotor control benchmark (issue 6, paper Fig. 6): each control task over >= 5 seeds.

For every task and method (gradsim = image only, diffphysics = dense 3D COM loss, random actions) it
prints the final distance of the centre of mass to the goal (mean, std over seeds), how many seeds
reached the goal, and the mean iterations and wall time to reach it. Outputs go to
``benchmarks/results/control-<task>/`` (results.json, convergence.png, summary.md, instance_*/).

    .venv/bin/python benchmarks/bench_control.py [--tasks control-walker,control-fem,control-cloth]
        [--seeds 5] [--device cpu] [--set key=value ...] [--no-media] [--resume]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from wsim.control import load_control, run_control  # noqa: E402
from wsim.export import write_text  # noqa: E402

TASKS = ["control-walker", "control-fem", "control-cloth"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-media", action="store_true", help="skip videos and USD files")
    parser.add_argument("--resume", action="store_true", help="reuse finished seeds, continue an interrupted one")
    args = parser.parse_args(argv)
    for name in args.tasks.split(","):
        overrides = list(args.overrides) + (["video=false", "usd=false"] if args.no_media else [])
        config = load_control(name, overrides)
        out = Path(args.out) / name
        started = time.perf_counter()
        report = run_control(config, out, args.device, args.seeds, progress=False, resume=args.resume)
        footer = (f"\nSeeds {config.seed}..{config.seed + args.seeds - 1}; total {time.perf_counter() - started:.0f} s "
                  f"({'partly reused with --resume; ' if args.resume else ''}{os.cpu_count()} CPU cores, "
                  f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, "
                  f"{time.strftime('%Y-%m-%d')}); overrides: {' '.join(overrides) or 'none'}. "
                  "'final dist' is the COM distance of the returned iterate; 'reached' counts seeds whose COM "
                  f"came within {config.optim.reached:g} m at some iteration.")
        write_text(out / "summary.md", report["text"] + "\n" + footer + "\n")
        print(report["text"] + footer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

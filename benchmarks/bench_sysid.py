"""Parameter estimation from video over many instances: the paper's Tables 1-3 next to our numbers.

    .venv/bin/python benchmarks/bench_sysid.py rigid-mass --instances 20 [--methods gradsim,average,random,diffphysics]
        [--set key=value ...] [--device cpu] [--out benchmarks/results] [--tag 8bit] [--work DIR]

Each experiment of configs/experiments runs ``--instances`` seeds per method (gradsim: pixel loss through
simulator and renderer; diffphysics: 3D vertex loss; average/random: the range mean / a random draw) and
prints, per parameter, the mean absolute and mean relative error beside the paper's gradSim row. The
table, the device, the instance count and the wall time go to ``<out>/sysid_<experiment>.md`` and
``.json``. ``--set`` reduces the cost (resolution, frames, iterations) where the device is slow; the
overrides used are written with the results.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsim.export import write_json, write_text  # noqa: E402
from wsim.sysid import load_experiment, run_experiment  # noqa: E402
from wsim.sysid.outputs import format_summary  # noqa: E402
from wsim.sysid.uncertainty import parameter_bounds  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="experiment names (configs/experiments)")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--methods", default="gradsim,diffphysics,average,random")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--work", default=None,
                        help="keep the instances in WORK/<experiment>_<method> and resume from there; several "
                             "processes started with the same --work share the instances (one core each)")
    parser.add_argument("--tag", default="", help="suffix of the result files (sysid_<experiment>_<tag>.md)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    for name in args.experiments:
        sections, record = [], {"experiment": name, "instances": args.instances, "overrides": args.overrides,
                                "host": platform.node(), "methods": {}}
        started = time.perf_counter()
        for method in args.methods.split(","):
            config = load_experiment(name, args.overrides + [f"method={method}"])
            t0 = time.perf_counter()
            if args.work:
                report = run_experiment(config, Path(args.work) / f"{name}_{method}", args.device, args.instances,
                                        resume=True, progress=args.progress, write_outputs=False)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    report = run_experiment(config, folder, args.device, args.instances, progress=args.progress,
                                            write_outputs=False)
            wall = time.perf_counter() - t0
            summary = report["summary"]
            device = report["results"][0]["device"]
            table = format_summary(summary, name, method, config.paper.table)
            header = f"{table.splitlines()[0]} (device {device}, total wall time {wall:.1f} s)"
            text = "\n".join([header] + table.splitlines()[1:])
            print(text + "\n", flush=True)
            sections.append(text)
            record["methods"][method] = {"device": device, "wall_time_s": wall,
                                         "rows": summary["rows"], "statuses": summary["statuses"],
                                         "not_converged": summary["not_converged"],
                                         "per_instance": [{"seed": r["seed"], "shape": r.get("shape"),
                                                           "status": r["status"],
                                                           "errors": r["errors"], "iterations": r["iterations"],
                                                           "final_loss": r["final_loss"],
                                                           "video_bound": parameter_bounds(r.get("uncertainty")),
                                                           "weakest_direction": (r.get("uncertainty") or {}).get(
                                                               "weakest_direction"),
                                                           "restarts": None if "restarts" not in r else {
                                                               "first_run_loss": r["restarts"]["first_run_loss"],
                                                               "chosen": r["restarts"]["chosen"],
                                                               "escalated": r["restarts"]["escalation"]["rounds"]},
                                                           "noise_ratio": (r.get("noise_check") or {}).get("ratio")}
                                                          for r in report["results"]]}
            record["device"] = device
        record["wall_time_s"] = time.perf_counter() - started
        overrides = " ".join(f"--set {o}" for o in args.overrides) or "(none)"
        md = (f"# {name}: {args.instances} instances per method, device {record['device']}, "
              f"total wall time {record['wall_time_s']:.0f} s\n\noverrides: {overrides}\n\n" + "\n\n".join(sections) + "\n")
        stem = f"sysid_{name}_{args.tag}" if args.tag else f"sysid_{name}"
        write_json(out / f"{stem}.json", record)
        write_text(out / f"{stem}.md", md)
        print(f"wrote {out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""System identification from videos wsim did not render: Mitsuba 3 targets (issue "Videos wsim did
not render").

    .venv/bin/python benchmarks/bench_crossdomain.py rigid-mass [fem-material] --instances 10 --seed0 1000
        [--conditions matched,light,background,h264] [--methods pixel,nuisance,mask] [--spp 64]
        [--set key=value ...] [--out benchmarks/results] [--work DIR] [--resume]
    .venv/bin/python benchmarks/bench_crossdomain.py --combine A/crossdomain_rigid-mass.json B/... [--out DIR]

``--combine`` merges the results of runs over other seeds of the same experiment (one table, every
instance; run them side by side on separate cores). ``--tag T`` names the results
``crossdomain_<experiment>_T`` (another set of seeds or settings next to the first).

For each experiment and seed the truth rollout of the instance (the seed's drawn scene and parameters)
is path traced by Mitsuba (:func:`wsim.render.render_mitsuba`, shadows and interreflections, 8-bit
frames) under each condition, and wsim estimates the parameters from those frames with the seed's own
camera (``target.truth: seeded``, camera ``auto`` on the truth rollout, as a calibrated camera):

- conditions: ``matched`` (Mitsuba's appearance closest to wsim's assumed one:
  :meth:`wsim.render.appearance.Appearance.matched`), ``light`` and ``background`` (drawn by
  :func:`wsim.render.appearance.sample_appearance` from its stated distribution, seeded per instance),
  ``h264`` (matched, then H.264-compressed with libx264 at ``--crf`` and decoded);
- methods: ``pixel`` (the pixel loss with the assumed appearance), ``nuisance`` (the pixel loss with
  light, intensity, ambient, albedo and background estimated jointly, ``appearance.estimate``) and
  ``mask`` (the silhouette loss against a background-subtraction mask of the target);
- ``own``: wsim's own 8-bit target with the pixel loss, the figure every other table reports.

wsim assumes a diffuse material (``appearance.specular=0``): Mitsuba's matched material is Lambertian.
A camera's or a path tracer's pixel holds the fraction of its area an object covers: give wsim's
renderer the same box filter, ``--set render.supersample=4 --set render.sigma=...`` with sigma near
``0.1 (2 / (4 W))^2`` (see ``wsim/render/renderer.py``); the results record the command. Four samples a
side, not two: against Mitsuba's exact coverage (1024 spp) the mask loss's Gauss-Newton bias at the
truth was 5.6e-4 / 1.1e-3 / 1.5e-3 in mass with 2 x 2 samples and 2.4e-4 / 5e-5 / 1.7e-4 with 4 x 4
(seeds 1010, 1020, 1025 at 48 px), at about twice the run time.
Every row gives the mean, median and worst relative error over the instances and the number that
converged, next to the paper's gradSim row. Results go to ``<out>/crossdomain_<experiment>.md`` and
``.json`` with the command line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsim.export import write_json, write_text  # noqa: E402
from wsim.sysid import load_experiment, run_instance  # noqa: E402

METHODS = {
    "pixel": [],
    "nuisance": ["appearance.estimate=[light, light_intensity, ambient, albedo, background]",
                 "optim.iterations=60", "optim.polish_iterations=30"],
    "mask": ["loss.type=mask"],
}
CONDITIONS = ("matched", "light", "background", "h264")


def target_frames(instance, condition: str, seed: int, folder: Path, spp: int, crf: int) -> dict:
    """Render the instance's truth rollout with Mitsuba under ``condition`` into ``folder`` (PNG frames,
    or ``target.mp4`` for h264); returns the path and the appearance used."""
    import imageio.v2 as imageio

    from wsim.render import render_mitsuba
    from wsim.render.appearance import Appearance, sample_appearance

    base = Appearance.matched(instance.config.render)
    kind = "matched" if condition in ("matched", "h264") else condition
    appearance = sample_appearance(np.random.default_rng([seed, CONDITIONS.index(condition), 7]), kind, base)
    rgb = render_mitsuba(instance.target_vertices.cpu().numpy(), instance.faces.cpu().numpy(),
                         instance.colors.cpu().numpy(), instance.camera, instance.size, appearance, spp=spp,
                         seed=seed)
    frames = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    if condition == "h264":
        path = folder / "target.mp4"
        writer = imageio.get_writer(path, fps=instance.scene.fps, codec="libx264", macro_block_size=1,
                                    pixelformat="yuv420p", ffmpeg_params=["-crf", str(crf)])
        for frame in frames:
            writer.append_data(frame)
        writer.close()
    else:
        path = folder / "frames"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
        for k, frame in enumerate(frames):
            imageio.imwrite(path / f"{k:04d}.png", frame)
    return {"path": str(path), "appearance": appearance.to_dict()}


def relative_errors(result: dict, names: list[str]) -> dict:
    return {n: result["errors"][n]["rel"] for n in names if n in result.get("errors", {})}


def stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "worst": float(a.max()), "n": int(a.size)}


def run(experiment: str, args, out: Path, command: str) -> dict:
    """Runs every seed, writing the table after each one; with ``--resume`` the seeds already in
    ``out``'s results (of the same overrides, conditions, methods and spp) are kept, not run again."""
    from wsim.sysid.instance import Instance

    base_overrides = ["appearance.specular=0", "uncertainty.enabled=false", "render.video_scale=1"] + args.overrides
    config = load_experiment(experiment, base_overrides)
    names = [p.name for p in config.params] + (["mass"] if any(p.name == "density" for p in config.params) else [])
    work = Path(args.work) / experiment
    seeds = list(range(args.seed0, args.seed0 + args.instances))
    result = {"experiment": experiment, "seeds": [], "records": [], "conditions": args.conditions,
              "methods": args.methods, "overrides": base_overrides, "spp": args.spp, "crf": args.crf,
              "paper": config.paper.rel, "paper_table": config.paper.table, "names": names,
              "wall_time_s": 0.0, "command": command, "tag": args.tag}
    previous = out / f"{stem(experiment, args.tag)}.json"
    if args.resume and previous.exists():
        old = json.loads(previous.read_text())
        same = all(old.get(k) == result[k] for k in ("overrides", "conditions", "methods", "spp", "crf"))
        if not same:
            raise SystemExit(f"--resume: {previous} was made with other overrides, conditions, methods, spp "
                             "or crf; give another --out")
        result.update(seeds=[s for s in old["seeds"] if s in seeds],
                      records=[r for r in old["records"] if r["seed"] in seeds], wall_time_s=old["wall_time_s"])
    todo = [s for s in seeds if s not in result["seeds"]]
    base_wall = result["wall_time_s"]
    started = time.perf_counter()
    for i, seed in enumerate(todo):
        own = run_instance(load_experiment(experiment, base_overrides + ["target.bits=8"]), seed,
                           work / f"seed{seed}" / "own", progress=False, write_outputs=False)
        runs = {"own": own}
        records = []
        instance = Instance(config, seed, work / f"seed{seed}" / "truth")
        for condition in args.conditions:
            target = target_frames(instance, condition, seed, work / f"seed{seed}" / condition, args.spp, args.crf)
            for method in args.methods:
                overrides = base_overrides + [f"target.video={target['path']}", "target.truth=seeded"] + METHODS[method]
                run_result = run_instance(load_experiment(experiment, overrides), seed,
                                          work / f"seed{seed}" / condition / method, progress=False,
                                          write_outputs=False)
                runs[f"{condition}/{method}"] = run_result
                records.append({"seed": seed, "condition": condition, "method": method,
                                "appearance": target["appearance"], "status": run_result["status"],
                                "errors": relative_errors(run_result, names), "final_loss": run_result["final_loss"],
                                "estimate": run_result["estimate"], "true": run_result["true"]})
        records.append({"seed": seed, "condition": "own", "method": "pixel", "status": own["status"],
                        "errors": relative_errors(own, names), "final_loss": own["final_loss"]})
        elapsed = time.perf_counter() - started
        result["records"] += records
        result["seeds"] = sorted(result["seeds"] + [seed])
        result["wall_time_s"] = base_wall + elapsed
        result["rows"] = summarise(result["records"], args.conditions, args.methods, names)
        write_result(result, out, args.spp, result["wall_time_s"], echo=False)
        mass = "mass" if "mass" in names else names[0]
        print(f"{experiment}: seed {seed} done ({i + 1}/{len(todo)}, {elapsed:.0f} s, "
              f"ETA {elapsed / (i + 1) * (len(todo) - i - 1):.0f} s): "
              + ", ".join(f"{k} {relative_errors(r, names).get(mass, float('nan')):.2e}" for k, r in runs.items()),
              flush=True)
    return result


def summarise(records: list[dict], conditions: list[str], methods: list[str], names: list[str]) -> dict:
    rows = {}
    for key in ["own/pixel"] + [f"{c}/{m}" for c in conditions for m in methods]:
        condition, method = key.split("/")
        chosen = [r for r in records if r["condition"] == condition and r["method"] == method]
        if chosen:
            rows[key] = {"converged": sum(r["status"] == "done" for r in chosen), "instances": len(chosen),
                         "errors": {n: stats([r["errors"][n] for r in chosen]) for n in names}}
    return rows


def table(result: dict) -> str:
    names = result["names"]
    lines = [f"| condition | method | converged | " + " | ".join(f"{n} mean / median / worst" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for key, row in result["rows"].items():
        condition, method = key.split("/")
        cells = [f"{row['errors'][n]['mean']:.2e} / {row['errors'][n]['median']:.2e} / {row['errors'][n]['worst']:.2e}"
                 for n in names]
        lines.append(f"| {condition} | {method} | {row['converged']}/{row['instances']} | " + " | ".join(cells) + " |")
    paper = [f"{result['paper'].get(n):.3g}" if result["paper"].get(n) is not None else "-" for n in names]
    lines.append(f"| paper ({result['paper_table']}, own renderer) | gradSim | - | " + " | ".join(paper) + " |")
    mass = "mass" if "mass" in names else names[0]
    lines.append("")
    lines.append(f"Best method per condition (lowest mean {mass} error):")
    for condition in result["conditions"]:
        keys = [k for k in result["rows"] if k.startswith(condition + "/")]
        if keys:
            best = min(keys, key=lambda k: result["rows"][k]["errors"][mass]["mean"])
            lines.append(f"- {condition}: {best.split('/')[1]}, {result['rows'][best]['errors'][mass]['mean']:.2e}")
    return "\n".join(lines)


def write_result(result: dict, out: Path, spp, wall: float, echo: bool = True) -> None:
    experiment = result["experiment"]
    text = (f"# {experiment}: estimates from Mitsuba 3 targets ({len(result['seeds'])} instances, seeds "
            f"{', '.join(seed_ranges(result['seeds']))}, {spp} spp, CPU, {wall:.0f} s)\n\n"
            f"command: `{result['command']}`\n\noverrides of every run: `{' '.join(result['overrides'])}`\n\n"
            f"Relative errors. own: wsim's own 8-bit target. See the script's docstring for the conditions "
            f"and methods.\n\n{table(result)}\n")
    if echo:
        print(text)
    write_text(out / f"{stem(experiment, result.get('tag'))}.md", text)
    write_json(out / f"{stem(experiment, result.get('tag'))}.json", result)


def stem(experiment: str, tag: str | None) -> str:
    return f"crossdomain_{experiment}" + (f"_{tag}" if tag else "")


def seed_ranges(seeds: list[int]) -> list[str]:
    seeds, out = sorted(seeds), []
    start = prev = seeds[0]
    for s in seeds[1:] + [None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if s is not None:
            start = prev = s
    return out


def _completed(part: dict) -> dict:
    """Fills the keys that results written before they were recorded lack, from the records and the command."""
    import shlex

    def ordered(key):
        return list(dict.fromkeys(r[key] for r in part["records"] if r["condition"] != "own"))

    part.setdefault("conditions", ordered("condition"))
    part.setdefault("methods", ordered("method"))
    if "overrides" not in part:
        tokens = shlex.split(part["command"])
        sets = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--set"]
        part["overrides"] = ["appearance.specular=0", "uncertainty.enabled=false", "render.video_scale=1"] + sets
    if "spp" not in part:
        tokens = part["command"].split()
        part["spp"] = int(tokens[tokens.index("--spp") + 1]) if "--spp" in tokens else 64
    return part


def combine(paths: list[str], out: Path, command: str, tag: str | None = None) -> None:
    parts = [_completed(json.loads(Path(p).read_text())) for p in paths]
    first = parts[0]
    for part in parts[1:]:
        for key in ("experiment", "names", "overrides", "conditions", "methods"):
            if part[key] != first[key]:
                raise SystemExit(f"--combine: {key} differs between {paths[0]} and the others: "
                                 f"{first[key]} != {part[key]}")
    seeds = sorted(s for part in parts for s in part["seeds"])
    if len(set(seeds)) != len(seeds):
        raise SystemExit("--combine: the results share seeds")
    records = [r for part in parts for r in part["records"]]
    result = {**first, "seeds": seeds, "records": records, "tag": tag,
              "rows": summarise(records, first["conditions"], first["methods"], first["names"]),
              "wall_time_s": sum(part["wall_time_s"] for part in parts),
              "command": "; ".join(part["command"] for part in parts) + f"; {command}"}
    write_result(result, out, first["spp"], result["wall_time_s"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*")
    parser.add_argument("--combine", nargs="+", metavar="JSON", help="merge results over other seeds")
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--seed0", type=int, default=1000)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--spp", type=int, default=64)
    parser.add_argument("--crf", type=int, default=23, help="H.264 constant rate factor (23: ffmpeg's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds already in --out's results (same settings) and run the others")
    parser.add_argument("--tag", default=None, help="results go to crossdomain_<experiment>_<tag>.md/.json")
    parser.add_argument("--work", default=None, help="folder of the instance runs (default: a temporary one)")
    args = parser.parse_args(argv)
    args.conditions = [c for c in args.conditions.split(",") if c]
    args.methods = [m for m in args.methods.split(",") if m]
    for c in args.conditions:
        if c not in CONDITIONS:
            parser.error(f"unknown condition '{c}'; allowed: {', '.join(CONDITIONS)}")
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"unknown method '{m}'; allowed: {', '.join(METHODS)}")
    command = "benchmarks/bench_crossdomain.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.combine:
        combine(args.combine, Path(args.out), command, args.tag)
        return 0
    if not args.experiments:
        parser.error("name an experiment (or --combine results)")
    import tempfile

    temporary = None
    if args.work is None:
        temporary = tempfile.TemporaryDirectory(prefix="wsim-crossdomain-")
        args.work = temporary.name
    out = Path(args.out)
    for experiment in args.experiments:
        result = run(experiment, args, out, command)
        if result["seeds"]:
            write_result(result, out, args.spp, result["wall_time_s"])
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

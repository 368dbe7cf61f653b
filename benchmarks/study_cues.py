"""gradSim Sec. 4.3.3 / Fig. 7: how shading and texture cues speed up mass estimation from video.

The rigid-mass experiment (Table 1) runs on the same seeds under three renderings of target and
estimate alike: ``colour`` (every surface point in its plain colour: no light, flat), ``shading`` (Phong,
one directional light: the shipped setting) and ``texture`` (Phong, with a colour pattern painted on
the body, ``scene.bodies.0.pattern``: smooth 3-D cells fixed in the body frame, so that its rotation
shows inside the outline). The paper textured ShapeNet meshes; nothing can be downloaded here, so the
pattern is per-vertex colour, and the shapes are those of the experiment with at least ~130 vertices
(sphere, capsule, torus and the three blobs), on which a per-vertex pattern is resolved.

The optimiser is plain Adam for ``--iterations`` steps (no BFGS polish, no escalation), as in the
paper's curves: the relative error of the mass after every step is the figure, mean and median over
the seeds. Writes ``cues_rigid-mass.md``/``.json``/``.png`` to ``--out``.

    .venv/bin/python benchmarks/study_cues.py --seeds 1000-1009 [--iterations 40] [--work DIR] [--set k=v]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsim.export import atomic_path, write_json, write_text  # noqa: E402
from wsim.sysid import load_experiment, run_instance  # noqa: E402

VARIANTS = {
    "colour": ["render.shading=flat"],
    "shading": ["render.shading=phong"],
    "texture": ["render.shading=phong", "scene.bodies.0.pattern=0.7"],
}
SHAPES = "[sphere, capsule, torus, bunny_blob, peanut_blob, lumpy_blob]"


def seeds_from(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(s) for s in text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",")]


def error_curve(result: dict) -> np.ndarray:
    """Relative error of the density (= of the mass: the shape is known) where each step evaluated the
    loss: entry k is the estimate after k steps (entry 0 the initial guess)."""
    true = result["true"]["density"]
    values = np.array([step["density"] for step in result["value_history"]], dtype=np.float64)
    return np.abs(values - true) / true


def run(seeds, iterations: int, overrides: list[str], work: Path, progress: bool) -> dict:
    curves = {}
    for variant, settings in VARIANTS.items():
        curves[variant] = []
        for seed in seeds:
            config = load_experiment("rigid-mass", [f"randomize.shapes={SHAPES}", f"optim.iterations={iterations}",
                                                    "optim.polish_iterations=0", "optim.escalate=0",
                                                    "optim.tolerance=0", *settings, *overrides])
            started = time.perf_counter()
            result = run_instance(config, seed, work / variant / str(seed), "cpu", resume=True, progress=False,
                                  write_outputs=False)
            curves[variant].append(error_curve(result).tolist())
            if progress:
                print(f"{variant} seed {seed} ({result.get('shape')}): initial {curves[variant][-1][0]:.2e}, "
                      f"final {curves[variant][-1][-1]:.2e} ({time.perf_counter() - started:.0f} s)", flush=True)
    return curves


def padded(curves: list[list[float]]) -> np.ndarray:
    """Curves of unequal length (a run may stop early) padded with their last value."""
    n = max(len(c) for c in curves)
    return np.array([c + [c[-1]] * (n - len(c)) for c in curves])


def report(curves: dict, seeds, iterations: int, overrides, command: str) -> tuple[str, dict]:
    marks = [m for m in (0, 5, 10, 20, 30, iterations - 1) if m < iterations]
    lines = [f"# Shading and texture cues (gradSim Fig. 7): rigid-mass, seeds {seeds[0]}-{seeds[-1]}",
             "", f"command: `{command}`", "",
             f"Relative error of the mass after k Adam steps, mean (median) over {len(seeds)} seeds; "
             "target and estimate rendered alike.", "",
             "| cues | " + " | ".join(f"k={m}" for m in marks) + " | first step below 1e-2 (median) |",
             "|---|" + "---|" * (len(marks) + 1)]
    summary = {}
    for variant, runs in curves.items():
        a = padded(runs)
        reach = [int(np.argmax(r < 1e-2)) if (r < 1e-2).any() else None for r in a]
        hit = [r for r in reach if r is not None]
        median_reach = f"{int(np.median(hit))} ({len(hit)}/{len(reach)} get there)" if hit else "never"
        cells = [f"{a[:, m].mean():.2e} ({np.median(a[:, m]):.2e})" if m < a.shape[1] else "-"
                 for m in marks]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {median_reach} |")
        summary[variant] = {"mean": a.mean(0).tolist(), "median": np.median(a, 0).tolist(), "steps_to_1e-2": reach}
    lines += ["", "Paper (Fig. 7, ShapeNet textures): shading and texture cues converge markedly faster than "
              "colour alone, texture slightly faster than shading.", "",
              "Reading: Adam's steps do not depend on the gradient's magnitude, so richer cues can only "
              "change these curves by changing where the gradient points, or by moving the minimum; "
              "plain gradient descent (optim.optimizer=sgd) at one learning rate for all three would show "
              "the steepness, but it diverges on this experiment's horizon curriculum (the gradient grows "
              "by orders of magnitude as the loss takes in more frames), which is why the paper's "
              "comparison is repeated here with the optimiser wsim ships.", ""]
    return "\n".join(lines), summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for variant, record in summary.items():
        mean = np.asarray(record["mean"])
        ax.semilogy(np.arange(len(mean)), mean, label=variant)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("mean relative error of the mass")
    ax.set_title("rigid-mass: cues in the video")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1000-1009", help="first-last or a comma list")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--work", default=None, help="keep the runs here and resume from them")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    seeds = seeds_from(args.seeds)
    command = "python benchmarks/study_cues.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as scratch:
        curves = run(seeds, args.iterations, args.overrides, Path(args.work or scratch), args.progress)
    text, summary = report(curves, seeds, args.iterations, args.overrides, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "cues_rigid-mass" + (f"_{args.tag}" if args.tag else "")
    write_text(out / f"{stem}.md", text + f"\n![curves]({stem}.png)\n")
    write_json(out / f"{stem}.json", {"seeds": seeds, "iterations": args.iterations, "overrides": args.overrides,
                                      "curves": curves, "summary": summary})
    plot(summary, out / f"{stem}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

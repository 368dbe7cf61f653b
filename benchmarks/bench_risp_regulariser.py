"""Does the rendering-gradient regulariser (RISP Eq. 12) make a state predictor less sensitive to the
rendering? Small-data study: networks trained with and without it (``risp.train.gamma`` G and 0) on
the same images, scored on the same states rendered under psi never seen in training
(``risp.data.psi_seed``) and on new states (other rollouts) under new psi.

    .venv/bin/python benchmarks/bench_risp_regulariser.py risp-rigid-mass --count 64 --seeds 0,1,2,3 \\
        [--gamma 1] [--set render.resolution=24 ...] [--work /tmp/reg] [--out benchmarks/results]

Writes ``risp_regulariser_<experiment>.md`` and ``.json`` (L1 state error per training seed, and the
mean-state baseline). Defaults: 24 px, width 8, 80 epochs, no held-out split (the test sets are
rendered apart).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsim.export import write_json, write_text  # noqa: E402
from wsim.sysid import load_experiment  # noqa: E402

DEFAULTS = ["render.resolution=24", "risp.width=8", "risp.train.epochs=80", "risp.train.holdout=0",
            "risp.data.shard_size=64"]
UNSEEN_PSI_SEED = 777
NEW_STATES_SEED = 500000


def main(argv=None) -> int:
    from wsim.risp import data as risp_data
    from wsim.risp.network import load_network
    from wsim.risp.train import state_errors, train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment")
    parser.add_argument("--count", type=int, default=64, help="training images")
    parser.add_argument("--seeds", default="0,1", help="training seeds")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--work", default="/tmp/wsim-risp-regulariser")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    started = time.time()
    work = Path(args.work) / args.experiment
    base = DEFAULTS + [f"risp.data.count={args.count}"] + args.overrides
    sets = {"train": base, "same states, unseen psi": base + [f"risp.data.psi_seed={UNSEEN_PSI_SEED}"],
            "new states, unseen psi": base + [f"risp.data.seed={NEW_STATES_SEED}"]}
    arrays = {}
    for name, overrides in sets.items():
        folder = work / name.replace(",", "").replace(" ", "-")
        risp_data.generate(load_experiment(args.experiment, overrides), folder, progress=False)
        arrays[name] = risp_data.load(folder)[1]
    mean_state = arrays["train"]["states"].mean(0)
    rows = {name: {"average": float(np.abs(a["states"] - mean_state).sum(-1).mean())}
            for name, a in arrays.items()}
    seeds = [int(s) for s in args.seeds.split(",")]
    for gamma in (0.0, args.gamma):
        for seed in seeds:
            label = f"gamma {gamma:g} seed {seed}"
            folder = work / f"net-g{gamma:g}-s{seed}"
            config = load_experiment(args.experiment, base + [f"risp.train.gamma={gamma}", f"risp.train.seed={seed}"])
            if not (folder / "risp.pt").exists():
                train(config, work / "train", folder, progress=False)
            net, _ = load_network(folder / "risp.pt")
            for name, a in arrays.items():
                rows[name][label] = state_errors(net, a["images"].astype(np.float32), a["states"])["l1_mean"]
            print(label + ": " + ", ".join(f"{name} {rows[name][label]:.4f}" for name in arrays), flush=True)
    columns = ["average"] + [f"gamma {g:g} seed {s}" for g in (0.0, args.gamma) for s in seeds]
    lines = [f"# RISP regulariser on {args.experiment}: {args.count} training images", "",
             f"command: `benchmarks/bench_risp_regulariser.py {' '.join(argv or sys.argv[1:])}`", "",
             f"CPU, wall time {time.time() - started:.0f} s. L1 state error (mean over images); `average` predicts "
             "the training states' mean. Overrides: " + " ".join(base), "",
             "| test images | " + " | ".join(columns) + " | mean gamma 0 | mean gamma " + f"{args.gamma:g} |",
             "|---" * (len(columns) + 3) + "|"]
    for name, row in rows.items():
        no_grad = np.mean([row[f"gamma 0 seed {s}"] for s in seeds])
        regularised = np.mean([row[f"gamma {args.gamma:g} seed {s}"] for s in seeds])
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in columns)
                     + f" | {no_grad:.4f} | {regularised:.4f} |")
    out = Path(args.out)
    write_text(out / f"risp_regulariser_{args.experiment}.md", "\n".join(lines) + "\n")
    write_json(out / f"risp_regulariser_{args.experiment}.json", {"rows": rows, "overrides": base, "seeds": seeds})
    print(f"wrote {out / f'risp_regulariser_{args.experiment}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

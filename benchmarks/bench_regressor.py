"""Learned-regressor baselines of gradSim's Table 1 (App. H.2): rigid-body mass from video.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_regressor.py --train 512 --eval-seeds 1000-1019 \
        --models cnn,convlstm --work DIR [--size 64] [--frames 16] [--epochs cnn=5,convlstm=10]

Renders ``--train`` rigid-mass instances (seeds 0..N-1, disjoint from the held-out evaluation seeds) and
the evaluation instances into ``DIR`` (npz shards + manifest; a rerun resumes), trains each model from
scratch (checkpoints in ``DIR/models``; a finished one is reused) and writes
``benchmarks/results/sysid_rigid-mass_regressor.md`` and ``.json``: the paper's Table 1 rows beside ours
(mass mean absolute error in kg and mean absolute relative error on the held-out instances), with the
training-set mean ("Average": exp of the mean training log mass) and a random draw of a training mass
("Random") measured on the same instances.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from wsim.sysid import regressor as R  # noqa: E402

PAPER = [("Average", 0.2022, 0.1031), ("Random", 0.2653, 0.1344), ("ConvLSTM Xu et al. (2019b)", 0.1347, 0.0094),
         ("PyBullet + REINFORCE", 0.0928, 0.3668), ("DiffPhysics (3D sup.)", 1.35e-9, 5.17e-9),
         ("gradSim", 2.36e-5, 9.01e-5)]


def seed_range(text: str) -> list[int]:
    """``1000-1019`` or ``1,2,5``."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=512, help="training videos (seeds 0..N-1)")
    parser.add_argument("--eval-seeds", default="1000-1019")
    parser.add_argument("--models", default="cnn,convlstm")
    parser.add_argument("--work", required=True, help="dataset shards and checkpoints (resumable)")
    parser.add_argument("--size", type=int, default=64, help="render resolution (px)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--epochs", default="cnn=5,convlstm=10")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", default="cnn=1e-3,convlstm=2e-3")
    parser.add_argument("--width", type=float, default=0.5, help="EfficientNet-B0 channel multiplier")
    parser.add_argument("--depth", type=float, default=0.5, help="EfficientNet-B0 depth multiplier")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the host is shared; one core per process
    epochs = {k: int(v) for k, v in (e.split("=") for e in args.epochs.split(","))}
    lrs = {k: float(v) for k, v in (e.split("=") for e in args.lr.split(","))}
    work, eval_seeds = Path(args.work), seed_range(args.eval_seeds)
    if set(eval_seeds) & set(range(args.train)):
        parser.error("the evaluation seeds overlap the training seeds 0..N-1")
    started = time.perf_counter()
    R.make_dataset(work / "eval", eval_seeds, args.size, args.frames)
    R.make_dataset(work / "train", range(args.train), args.size, args.frames)
    # the rendering time as the manifests recorded it, so that a resumed run still reports it
    manifests = [json.loads((work / part / "manifest.json").read_text()) for part in ("train", "eval")]
    data_time = sum(s.get("seconds", float("nan")) for m in manifests for s in m["shards"])
    train, test = R.load_dataset(work / "train"), R.load_dataset(work / "eval")
    record = {"command": " ".join(["benchmarks/bench_regressor.py"] + (argv if argv is not None else sys.argv[1:])),
              "host": platform.node(), "torch": torch.__version__, "threads": 1, "size": args.size,
              "frames": args.frames, "train_videos": args.train, "eval_seeds": eval_seeds,
              "dataset_time_s": data_time, "train_mass_range": [float(train["mass"].min()), float(train["mass"].max())],
              "eval_mass_mean": float(test["mass"].mean()), "models": {}}
    rows = []
    log_mean = float(np.exp(np.log(train["mass"]).mean()))
    rows.append(("Average (exp of the mean training log mass)", R.mass_errors(np.full(len(test["mass"]), log_mean),
                                                                              test["mass"])))
    draw = np.random.default_rng(0).choice(train["mass"], size=len(test["mass"]))
    rows.append(("Random (a random training mass)", R.mass_errors(draw, test["mass"])))
    for kind in args.models.split(","):
        model, rec = R.train(kind, train, work / "models" / f"{kind}.pt", epochs=epochs.get(kind, 4),
                             batch=args.batch, lr=lrs.get(kind, 1e-3), width=args.width, depth=args.depth)
        estimate = R.predict(model, test, rec["norm"])
        fit = R.mass_errors(R.predict(model, train, rec["norm"]), train["mass"])
        errors = R.mass_errors(estimate, test["mass"])
        label = (f"cnn (EfficientNet-B0 x{args.width} width, x{args.depth} depth, untrained start)" if kind == "cnn"
                 else "convlstm (conv encoder + ConvLSTM, 32 channels)")
        rows.append((label, errors))
        record["models"][kind] = {"eval": errors, "train_fit": fit, "parameters": rec["parameters"],
                                  "train_time_s": rec.get("train_time_s"), "epochs": rec["epochs_done"],
                                  "train_losses": rec["losses"], "settings": rec["settings"],
                                  "per_instance": [{"seed": int(s), "shape": str(sh), "true": float(t), "estimate": float(e)}
                                                   for s, sh, t, e in zip(test["seed"], test["shape"], test["mass"],
                                                                          estimate)]}
        print(f"{kind}: held-out {errors}, training fit {fit}", flush=True)
    record["rows"] = [{"approach": a, **e} for a, e in rows]
    record["wall_time_s"] = time.perf_counter() - started
    lines = [f"# rigid-mass: learned regressors (gradSim Table 1, App. H.2), CPU, one thread",
             "", f"command: `{record['command']}`", "",
             f"{args.train} training videos (seeds 0-{args.train - 1}), {len(eval_seeds)} held-out instances "
             f"(seeds {args.eval_seeds}), {args.size} px, {args.frames} frames, 8-bit frames; training masses "
             f"{record['train_mass_range'][0]:.3f}-{record['train_mass_range'][1]:.3f} kg. Rendering the videos took "
             f"{data_time:.0f} s; this invocation's wall time {record['wall_time_s']:.0f} s (shards and trained "
             f"models found in --work are reused, and their recorded times are reported).",
             "", "| approach | mean abs. err. (kg) | abs. rel. err. |", "|---|---|---|"]
    lines += [f"| paper: {a} | {e_abs:.4g} | {e_rel:.4g} |" for a, e_abs, e_rel in PAPER]
    lines += [f"| ours: {a} | {e['abs']:.4g} | {e['rel']:.4g} |" for a, e in rows]
    lines += ["", "| model | parameters | epochs | training time (s) | training-set abs / rel err |", "|---|---|---|---|---|"]
    for kind, m in record["models"].items():
        time_s = "reused" if m["train_time_s"] is None else f"{m['train_time_s']:.0f}"
        lines.append(f"| {kind} | {m['parameters']} | {m['epochs']} | {time_s} | "
                     f"{m['train_fit']['abs']:.4g} / {m['train_fit']['rel']:.4g} |")
    lines += ["", "Both networks regress standardised log mass (MSE, Adam) from the frames plus the known impulse "
              "and camera distance, trained from scratch (no pretrained weights; App. H.2 used ImageNet-pretrained "
              "EfficientNet-B0 features and 100 epochs on a GPU). Our masses span a factor of about 50 (density "
              "2-12 times the volumes of 14 shapes at random anisotropic scale), so the constant predictor is "
              "far worse than the paper's Average row (relative error 0.10, a much narrower mass range); the "
              "regressors' gain over that constant is the comparable quantity."]
    gaps = [f"{k} {m['eval']['rel'] / m['train_fit']['rel']:.1f}x" for k, m in record["models"].items()]
    lines += ["", "Held-out over training-set relative error (generalisation gap): " + ", ".join(gaps) + "."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sysid_rigid-mass_regressor.json").write_text(json.dumps(record, indent=1, default=float))
    (out / "sysid_rigid-mass_regressor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

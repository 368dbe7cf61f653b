"""Figures, videos and tables of ``wsim run``: loss.png, compare.mp4/.gif, target frames, summaries."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ..export import atomic_path


def _run_segments(history: list[dict]) -> list[tuple[str, int, int]]:
    """``(label, first, end)`` index ranges of the consecutive entries of each run (``run`` key; the
    entries without one belong to the first run)."""
    segments: list[tuple[str, int, int]] = []
    for i, h in enumerate(history):
        label = h.get("run", "first run")
        if segments and segments[-1][0] == label:
            segments[-1] = (label, segments[-1][1], i + 1)
        else:
            segments.append((label, i, i + 1))
    return segments


def write_loss_plot(path: Path, history: list[dict], instance=None) -> Path:
    """Loss (log scale) and each scalar estimate's relative error (when the truth is known) per iteration;
    the runs of a restarted search (see :mod:`wsim.sysid.restarts`) follow each other, one colour each."""
    with _PLOTTING:  # pyplot and its mathtext parser are not thread-safe (instances in lockstep threads)
        return _write_loss_plot(path, history, instance)


_PLOTTING = threading.Lock()


def _write_loss_plot(path: Path, history: list[dict], instance=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [h["loss"] for h in history]
    truth = None if instance is None or instance.truth is None else {
        k: v.detach().cpu().numpy() for k, v in instance.truth.items()}
    panels = 2 if truth else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    segments = _run_segments(history)
    if losses:
        for label, first, end in segments:
            ax.semilogy(range(first, end), np.maximum(np.asarray(losses[first:end], dtype=float), 1e-30), lw=1.5,
                        label=label)
        if len(segments) > 1:
            ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no optimisation (baseline)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"{instance.config.name} ({instance.config.method})" if instance is not None else "loss")
    ax.grid(True, which="both", alpha=0.3)
    if truth:
        ax = axes[0, 1]
        for name, true in truth.items():
            series = []
            for h in history:
                value = np.asarray(h["values"][name], dtype=float)
                t = np.broadcast_to(true, np.broadcast_shapes(true.shape, value.shape))
                series.append(float(np.mean(np.abs(np.broadcast_to(value, t.shape) - t)) /
                                    max(float(np.mean(np.abs(t))), 1e-12)))
            if series:
                ax.semilogy(range(len(series)), np.maximum(series, 1e-12), label=name)
        for _, first, _ in segments[1:]:
            ax.axvline(first - 0.5, color="0.7", lw=0.8)
        ax.set_xlabel("iteration")
        ax.set_ylabel("relative error")
        ax.grid(True, which="both", alpha=0.3)
        if history:
            ax.legend(fontsize=8)
    # fixed margins: tight_layout draws the figure twice more, which took as long as an instance's
    # last ten optimisation steps
    fig.subplots_adjust(left=0.17 / panels, right=1.0 - 0.03 / panels, bottom=0.13, top=0.92, wspace=0.3)
    with atomic_path(path, suffix=".png") as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def compare_frames(target: torch.Tensor, estimate: torch.Tensor, scale: int = 1) -> np.ndarray:
    """``[F, H, 3W, 3]`` uint8 frames: target | estimate | absolute difference (amplified x4)."""
    t = target.detach().cpu().float().numpy()[..., :3]
    e = estimate.detach().cpu().float().numpy()[..., :3]
    diff = np.clip(np.abs(t - e) * 4.0, 0.0, 1.0)
    frames = np.concatenate([t, e, 1.0 - diff], axis=2)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_compare_video(path: Path, target: torch.Tensor, estimate: torch.Tensor, fps: float, scale: int = 1) -> Path:
    from ..render import write_video

    return write_video(compare_frames(target, estimate, scale), path, fps=fps)


def write_target_frames(folder: Path, target: torch.Tensor) -> None:
    from ..render import write_frames

    write_frames(target.detach().cpu(), folder)


def write_rollouts(folder: Path, instance, vertices: torch.Tensor, estimate: dict) -> None:
    """``estimate_rollout.npz`` (the rollout of ``estimate``) and, when the truth is known,
    ``target_rollout.npz`` (:func:`wsim.export.write_rollout_npz`), so that ``wsim render`` can draw
    either with another renderer."""
    from ..export import write_rollout_npz

    model = instance.scene.model
    runs = [("estimate", vertices, estimate), ("target", instance.target_vertices, instance.truth)]
    for name, verts, values in runs:
        if verts is None:
            continue
        parameters = {k: v.detach().cpu().numpy() for k, v in (values or {}).items()}
        write_rollout_npz(folder / f"{name}_rollout.npz", verts.detach().cpu().numpy(), model.render_faces,
                          instance.scene.fps, parameters, body_vertex_start=model.body_vertex_start,
                          body_names=model.body_names, colors=instance.scene.colors)


# -- summaries ------------------------------------------------------------------------------------
def summarize(results: list[dict], paper=None) -> dict:
    """Mean absolute and mean relative error per parameter over instances (with the paper's numbers)."""
    names = []
    for r in results:
        for name in r.get("errors", {}):
            if name not in names:
                names.append(name)
    from .uncertainty import parameter_bounds

    bounds = [parameter_bounds(r.get("uncertainty")) for r in results]
    for b in bounds:
        if "density" in b:
            b["mass"] = b["density"]  # the volume is known: mass and density have the same relative error
    rows = {}
    for name in names:
        values = [r["errors"][name] for r in results if name in r.get("errors", {})]
        bound = [b[name] for b in bounds if name in b]
        rows[name] = {
            "mean_abs": float(np.mean([v["abs"] for v in values])),
            "mean_rel": float(np.mean([v["rel"] for v in values])),
            "median_rel": float(np.median([v["rel"] for v in values])),
            "median_bound": float(np.median(bound)) if bound else None,
            "bound_applies": len(bound),
            "instances": len(values),
            "paper_abs": None if paper is None else paper.abs.get(name),
            "paper_rel": None if paper is None else paper.rel.get(name),
        }
    escalated = [r for r in results if ((r.get("restarts") or {}).get("escalation") or {}).get("rounds")]
    not_applied: dict[str, int] = {}
    for r, b in zip(results, bounds):
        if not b:
            reason = _bound_reason(r.get("uncertainty"))
            not_applied[reason] = not_applied.get(reason, 0) + 1
    return {"rows": rows, "instances": len(results), "bound_not_applied": not_applied,
            "wall_time_s": float(sum(r.get("wall_time_s", 0.0) for r in results)),
            "statuses": sorted({r.get("status", "?") for r in results}),
            "converged": sum(r.get("status") == "done" for r in results),
            "escalated": [r.get("seed") for r in escalated],
            "escalation_resolved": [r.get("seed") for r in escalated
                                    if (r.get("noise_check") or {}).get("explained")]}


def _bound_reason(uncertainty: dict | None) -> str:
    """Why the video bound does not apply to an instance, in a few words (its ``uncertainty`` entry)."""
    if not uncertainty:
        return "not computed"
    if "skipped" in uncertainty:
        return f"skipped ({uncertainty['skipped']})"
    # the verdict's head: "baseline 'average'", "the optimisation did not converge", "video and model disagree"
    return uncertainty.get("verdict", "no parameter with a relative bound").split(":")[0]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_summary(summary: dict, title: str = "", method: str = "gradsim", table: str = "") -> str:
    lines = []
    if title:
        lines.append(f"{title} - method {method}, {summary['instances']} instance(s), "
                     f"wall time {summary['wall_time_s']:.1f} s, converged {summary.get('converged', '?')}/"
                     f"{summary['instances']}")
    if summary.get("escalated"):
        lines.append(f"escalated (loss above the target's noise allowance, restarts over every parameter): seeds "
                     f"{', '.join(str(s) for s in summary['escalated'])}; explained afterwards: "
                     f"{', '.join(str(s) for s in summary.get('escalation_resolved') or []) or 'none'}")
    if "loss" in summary:
        estimated = ", ".join(summary.get("appearance_estimated") or []) or "none (assumed)"
        lines.append(f"loss: {summary['loss']}; appearance estimated: {estimated}")
    lines.append(f"| parameter | mean abs err | mean rel err | median rel err | median video bound "
                 f"| paper abs ({table or 'paper'}) | paper rel |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, row in summary["rows"].items():
        bound = _fmt(row.get("median_bound"))
        if row.get("bound_applies", row["instances"]) < row["instances"]:
            bound += f" ({row.get('bound_applies', 0)}/{row['instances']})"
        lines.append(f"| {name} | {_fmt(row['mean_abs'])} | {_fmt(row['mean_rel'])} | {_fmt(row['median_rel'])} "
                     f"| {bound} | {_fmt(row['paper_abs'])} | {_fmt(row['paper_rel'])} |")
    lines.append("\nmedian video bound: the median, over the instances where it applies (n/N when not all), of "
                 "the relative standard deviation that the target video's noise allows at the estimate "
                 "(Cramer-Rao, wsim/sysid/uncertainty.py). It applies where the estimate converged and its "
                 "residuals are within twice the noise; an error well above it is the optimiser's, one near it "
                 "is the video's. '-': it applies nowhere.")
    not_applied = summary.get("bound_not_applied") or {}
    if not_applied:
        lines.append("video bound not applied: " + "; ".join(
            f"{count} instance(s): {reason}" for reason, count in sorted(not_applied.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)

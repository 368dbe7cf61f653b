"""The ``wsim`` command line: ``list`` (the shipped configs), ``simulate`` and ``gradcheck`` (scenes),
``run`` (experiments: system identification from video; and control tasks), ``render`` (a saved
rollout or run drawn again, e.g. path traced by Mitsuba 3), ``risp`` (training data and training of
RISP's state predictor) and ``landscape`` (an experiment's loss and gradient over a grid of parameters).

Every command but ``list`` and ``render`` takes a config file (a path, or the name of a shipped config, see
``wsim list``), ``--set key=value`` overrides (repeatable) and ``--device auto|cpu|cuda[:N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, WsimError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file, or the name of a shipped config (`wsim list` shows them)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted path, e.g. bodies.0.density=500); repeatable")
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when present), cpu, cuda, cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsim", description="Differentiable multiphysics simulation and rendering. A scene runs with "
        "`wsim simulate` or `wsim gradcheck`, an experiment or a control task with `wsim run`; `wsim list` "
        "shows the shipped ones; `wsim render` draws a saved rollout or run again (e.g. path traced by Mitsuba 3).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the shipped scenes, experiments and control tasks with their descriptions")
    simulate = commands.add_parser("simulate", help="run a scene (e.g. box-drop) and write rollout.npz and rollout.usda")
    _common(simulate)
    simulate.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    simulate.add_argument("--no-video", dest="video", action="store_false",
                          help="skip rendering rollout.mp4 (rendering is on by default)")
    simulate.add_argument("--resolution", type=int, default=256, help="video frame size in pixels (square)")
    gradcheck = commands.add_parser("gradcheck", help="a scene's adjoint gradients vs central finite differences")
    _common(gradcheck)
    gradcheck.add_argument("--params", default=None,
                           help="comma-separated parameter names (default: the config's gradcheck.params)")
    gradcheck.add_argument("--eps", type=float, default=None, help="relative finite-difference step")
    gradcheck.add_argument("--tolerance", type=float, default=None, help="largest relative error that passes")
    run = commands.add_parser(
        "run", help="run an experiment (estimate physical parameters from video, e.g. rigid-mass) or a control "
        "task (e.g. control-walker)",
        description="Run an experiment or a control task on the harness. Exit status: 0 when every instance "
        "converged, 1 when one did not (its estimate is still written, with status not_converged and the "
        "reason in results.json), 2 for a config or input error, 130 when interrupted (--resume continues).")
    _common(run)
    run.add_argument("--out", default=None, help="output folder (default: runs/<experiment>[-<method>])")
    run.add_argument("--instances", type=int, default=None,
                     help="run N instances (seeds seed..seed+N-1) and write a summary table")
    run.add_argument("--resume", action="store_true",
                     help="reuse the finished instances in the output folder and continue an interrupted one from "
                          "its checkpoint; a result or checkpoint of another config or seed is an error")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--no-media", dest="media", action="store_false",
                     help="per instance only results.json (and the summary over instances): no plots, videos, USD "
                          "or rollout files, about a sixth less time per rigid-mass instance; `wsim render` needs "
                          "the rollout files")
    run.add_argument("--batch", type=int, default=None, help="system identification: run N instances at once, in "
                     "lockstep, with their rollouts batched (one kernel launch per step for all; same results)")
    _executor_flags(run, "instances")
    _render_parser(commands)
    _risp_parser(commands)
    _landscape_parser(commands)
    return parser


def _landscape_parser(commands) -> None:
    landscape = commands.add_parser(
        "landscape", help="an experiment's loss and its adjoint gradient over a 1-D or 2-D grid of parameters "
        "(paper Figs. 4, 11, 12): landscape.json and landscape.png")
    _common(landscape)
    landscape.add_argument("--param", dest="params", action="append", required=True, metavar="NAME",
                           help="a parameter of the experiment to sweep; twice for a 2-D map")
    landscape.add_argument("--range", dest="ranges", action="append", nargs=2, type=float, metavar=("LOW", "HIGH"),
                           help="the sweep's range, once per --param (default: the parameter's low and high)")
    landscape.add_argument("--points", type=int, default=None,
                           help="grid points per axis (default 15 in 1-D, 9 in 2-D)")
    landscape.add_argument("--seed", type=int, default=None, help="the instance's seed (default: the config's)")
    landscape.add_argument("--loss", choices=("pixel", "vertices", "pybullet"), default=None,
                           help="pixel, vertices (DiffPhysics' 3D loss) or pybullet (the pixel loss of PyBullet "
                           "rollouts, with REINFORCE's gradient estimate); default: the experiment's own")
    landscape.add_argument("--frames", default=None, metavar="F1,F2,..",
                           help="a study: the 1-D landscape for each video length (frames at the config's frame rate)")
    landscape.add_argument("--substeps", default=None, metavar="S1,S2,..",
                           help="a study: the 1-D landscape for each frame rate (substeps per frame, same duration)")
    landscape.add_argument("--out", default=None, help="output folder (default: runs/landscape/<experiment>-<params>)")
    landscape.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_landscape(args) -> int:
    from .sysid import resolve_experiment_path
    from .sysid.landscape import command_line, parse_list, run_landscape

    out = Path(args.out or Path("runs") / "landscape" / "-".join([Path(args.config).stem] + args.params))
    record = run_landscape(args.config, args.params, args.overrides, out, ranges=args.ranges, points=args.points,
                           seed=args.seed, loss=args.loss, frames=parse_list(args.frames, "frames"),
                           substeps=parse_list(args.substeps, "substeps"), device=args.device,
                           base=resolve_experiment_path(args.config).parent, progress=not args.quiet,
                           command=command_line(args, out))
    for s in record["landscapes"]:
        fraction = "-" if s["downhill_fraction"] is None else f"{100 * s['downhill_fraction']:.0f} %"
        print(f"{s['label']}: loss {np.nanmin(s['losses']):.3e} .. {np.nanmax(s['losses']):.3e}, "
              f"{s['local_minima']} local minimum(a), lowest at the grid point nearest the truth: "
              f"{'yes' if s['min_at_nearest'] else 'no'}; -grad points toward the truth at {fraction} of "
              f"{s['downhill_points']} points; adjoint / grid slope (median) "
              + ", ".join("-" if r is None else f"{r:.2f}" for r in s["gradient_to_grid_slope"]))
    print(f"wrote {out / 'landscape.json'}, {out / 'landscape.png'} ({record['wall_time_s']:.1f} s)")
    return 0


def _executor_flags(parser, what: str) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help=f"local (default: the {what} on this machine) or ray (as Ray tasks on a cluster, "
                             "pip install 'wsim[ray]'; a local cluster unless --address)")
    parser.add_argument("--address", default=None,
                        help="with --executor ray: join the Ray cluster at ADDR (auto, HOST:PORT, ray://HOST:PORT); "
                             "its workers must see --out at the same path (a shared filesystem)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"{what} at once: local, in as many worker processes (default 1: one after the "
                             "other in this process; on a CPU up to one per core); with --executor ray and no "
                             "--address, the CPUs of the local cluster (default: all)")


def _risp_parser(commands) -> None:
    risp = commands.add_parser(
        "risp", help="RISP: make training images (data), train the rendering-invariant state predictor (train)",
        description="RISP (ICLR 2022) on an experiment config with a risp section (e.g. risp-cube): `data` renders "
        "states of its instances under random rendering parameters with their image Jacobians, `train` fits the "
        "network; a run with --set loss.type=risp --set risp.checkpoint=OUT/risp.pt then compares states.")
    actions = risp.add_subparsers(dest="risp_command", required=True)
    data = actions.add_parser("data", help="render the training images (resumable shards)")
    _common(data)
    data.add_argument("--count", type=int, default=None, help="number of images (default: risp.data.count)")
    data.add_argument("--out", default=None, help="dataset folder (default: runs/risp/<experiment>/data)")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    _executor_flags(data, "shards")
    train = actions.add_parser("train", help="train the network on a dataset (checkpoints every epoch)")
    _common(train)
    train.add_argument("--data", default=None, help="dataset folder (default: runs/risp/<experiment>/data)")
    train.add_argument("--out", default=None, help="output folder (default: runs/risp/<experiment>/net)")
    train.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint.pt")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def cmd_risp(args) -> int:
    from .sysid import load_experiment, resolve_experiment_path

    config = load_experiment(args.config, args.overrides)
    base = resolve_experiment_path(args.config).parent
    root = Path("runs") / "risp" / config.name
    if args.risp_command == "data":
        from .risp.data import generate

        if args.count is not None and args.count < 1:
            print("wsim: error: --count must be >= 1", file=sys.stderr)
            return 2
        out = Path(args.out or root / "data")
        manifest = generate(config, out, args.count, device=args.device, base=base, progress=not args.quiet,
                            pool=_run_executor(args))
        print(f"{manifest['count']} images of {manifest['image_size'][0]}x{manifest['image_size'][1]} px in "
              f"{manifest['shards']} shards: {out} ({manifest['seconds']:.0f} s)")
        return 0
    from .risp.train import train

    out = Path(args.out or root / "net")
    summary = train(config, Path(args.data or root / "data"), out, device=args.device, progress=not args.quiet,
                    resume=args.resume)
    held = summary["holdout"]
    if held["count"]:
        print(f"held-out state error (L1, {held['count']} images): {held['l1_mean']:.4g} +- {held['l1_std']:.3g}")
    print(f"wrote {out}/risp.pt, history.json, summary.json, training.png")
    return 0


def _render_parser(commands) -> None:
    from .render.appearance import KINDS

    render = commands.add_parser(
        "render", help="draw a rollout (wsim simulate's rollout.npz) or a wsim run instance again, with wsim's "
        "renderer or path traced by Mitsuba 3 (pip install wsim[mitsuba]): PNG frames, render.mp4, appearance.json")
    render.add_argument("path", help="a rollout.npz (or the folder of wsim simulate holding it), or a wsim run "
                                     "instance folder (with results.json)")
    render.add_argument("--renderer", choices=("wsim", "mitsuba"), default="mitsuba", help="default: mitsuba")
    render.add_argument("--out", default=None, help="output folder (default: render-<renderer>-<appearance> beside "
                                                    "the rollout or inside the run folder)")
    render.add_argument("--spp", type=int, default=64, help="Mitsuba samples per pixel (default 64)")
    render.add_argument("--appearance", choices=KINDS, default="matched",
                        help="matched (wsim's light and background) or a draw of another light, background, or "
                             "everything (wsim/render/appearance.py states the distributions)")
    render.add_argument("--seed", type=int, default=0, help="seed of the appearance draw and the path tracer")
    render.add_argument("--resolution", type=int, default=None,
                        help="square frame size in pixels (default: the run's, or 256 for a rollout)")
    render.add_argument("--rollout", choices=("target", "estimate"), default="target",
                        help="for a run folder: draw the target (true) or the estimated motion")
    render.add_argument("--device", default="cpu", help="torch device of the wsim renderer")


def cmd_render(args) -> int:
    from .render.rerender import render_command

    record = render_command(args.path, args.renderer, args.out, args.spp, args.appearance, args.seed,
                            args.resolution, args.rollout, args.device)
    print(f"{record['frames']} frames of {record['image_size'][0]}x{record['image_size'][1]} px with {args.renderer} "
          f"in {record['render_time_s']:.1f} s ({record['seconds_per_frame']:.2f} s a frame)")
    print(f"wrote {record['frames_dir']}/, {record['video']}, {record['folder']}/appearance.json")
    return 0


def _run_executor(args):
    from .harness.executor import executor_for

    return executor_for(args.executor, args.address, args.workers, getattr(args, "batch", None), not args.quiet)


def cmd_run(args) -> int:
    from .harness.runner import executing

    with executing(_run_executor(args)):
        return _run(args)


def _run(args) -> int:
    from .control.config import control_config_path

    if control_config_path(args.config) is not None:  # task: control (visuomotor control, configs/control)
        from .control.__main__ import run_cli

        return run_cli(args.config, args.overrides, args.device, args.out, args.instances, not args.quiet,
                       args.resume, args.media)
    from .sysid import load_experiment, resolve_experiment_path, run_experiment

    config = load_experiment(args.config, args.overrides)
    if args.instances is not None and args.instances < 1:
        print("wsim: error: --instances must be >= 1", file=sys.stderr)
        return 2
    suffix = "" if config.method == "gradsim" else f"-{config.method}"
    out = Path(args.out or Path("runs") / f"{config.name}{suffix}")
    count = args.instances or config.instances
    print(f"{config.name}: method {config.method}, {count} instance(s) from seed {config.seed}, "
          f"output in {out}", flush=True)
    try:
        report = run_experiment(config, out, args.device, args.instances, args.resume, not args.quiet,
                                base=resolve_experiment_path(args.config).parent, write_outputs=args.media)
    except KeyboardInterrupt:
        print(f"wsim: interrupted; the results so far are in {out} (continue with --resume)", file=sys.stderr)
        return 130
    for result in report["results"]:
        _print_result(result)
    if len(report["results"]) > 1:
        print(report["text"])
        print(f"wrote {out}/summary.json, {out}/summary.md and instance_*/")
    else:
        media = ["loss.png", f"compare.{config.video_format}", "estimate.usda"] if args.media else []
        names = ["results.json", *media]
        print("wrote " + ", ".join(str(out / name) for name in names))
    if not report["ok"]:
        seeds = ", ".join(str(s) for s in report["summary"]["not_converged"])
        print(f"wsim: NOT CONVERGED (seed {seeds}): the estimate above is the best found, not a converged one; "
              "see 'convergence' in results.json", file=sys.stderr)
        return 1
    return 0


def _print_result(result: dict) -> None:
    loss = result["final_loss"]
    head = (f"seed {result['seed']} ({result.get('shape') or '-'}): {result['iterations']} iterations, "
            f"final loss {'none over the whole video' if loss is None else format(loss, '.3e')}, "
            f"{result['wall_time_s']:.1f} s on {result['device']}")
    print(head)
    convergence = result.get("convergence") or {}
    print(f"  status: {result.get('status')} ({convergence.get('reason', '-')})")
    search = result.get("restarts")
    if search:
        first = search["first_run_loss"]
        print(f"  restarts: {len(search['runs'])} runs over {', '.join(search['params'])} "
              f"({search['screening_evaluations']} screened candidates); first run loss "
              f"{first if first is not None else float('nan'):.3e}, estimate from the {search['chosen']}")
        profile = search.get("profile")
        if profile:
            runs = [r for r in search["runs"] if r["round"] == "profile" and r["label"] != "profile polish"]
            best = min(runs, key=lambda r: r["final_loss"]) if runs else None
            print(f"  profile of the loss along {profile['param']}: {len(runs)} of {profile['points']} points"
                  + (f", lowest at {best['label'].split(' ', 1)[1]} (loss {best['final_loss']:.3e})" if best else ""))
        escalation = search.get("escalation") or {}
        if escalation.get("rounds"):
            check = escalation["check"]
            print(f"  escalated: the loss {check['loss'] or float('nan'):.3e} was above the noise allowance "
                  f"{check['allowed_loss']:.2e}: {escalation['rounds']} round(s) of restarts over every parameter")
    from .sysid.uncertainty import parameter_bounds

    uncertainty = result.get("uncertainty") or {}
    bounds = parameter_bounds(uncertainty)
    if "verdict" in uncertainty and not uncertainty.get("consistent", True):
        print(f"  {uncertainty['verdict']}")
    for name, estimate in result["estimate"].items():
        true = (result.get("true") or {}).get(name)
        err = result.get("errors", {}).get(name)
        text = f"  {name}: estimate {_value(estimate)}"
        if name in bounds:
            text += f" (+-{bounds[name]:.2g} relative, the target video's bound)"
        if true is not None:
            text += f", true {_value(true)}, initial {_value(result['initial'][name])}"
        if err:
            text += f", abs err {err['abs']:.3g}, rel err {err['rel']:.3g}"
        print(text)
    mass = result.get("errors", {}).get("mass")
    if mass and "estimate" in mass:  # the mass derived from an estimated density (a mass parameter has its line)
        print(f"  mass: estimate {mass['estimate'] if not isinstance(mass['estimate'], list) else mass['estimate']} kg,"
              f" true {mass['true']} kg, abs err {mass['abs']:.3g} kg, rel err {mass['rel']:.3g}")
    weakest = uncertainty.get("weakest_direction")
    if weakest and len(weakest) > 1 and bounds:
        combination = " ".join(f"{c:+.2f} {label}" for label, c in weakest.items() if abs(c) >= 0.1)
        print(f"  least determined combination (relative changes): {combination}, "
              f"+-{result['uncertainty']['weakest_rel_std']:.2g}")


def _value(value) -> str:
    if isinstance(value, list):
        array = np.asarray(value, dtype=float)
        return f"[{array.size} values, mean {array.mean():.5g}]" if array.size > 3 else str(np.round(array, 5).tolist())
    return f"{value:.6g}"


def _scene(args, gradcheck_horizon: bool = False):
    from .config import load_config, resolve_config_path
    from .scene import build_scene

    config = load_config(args.config, args.overrides)
    if gradcheck_horizon and config.gradcheck.frames:
        config.sim.frames = min(config.sim.frames, config.gradcheck.frames)
    return build_scene(config, args.device, base=resolve_config_path(args.config).parent)


def cmd_simulate(args) -> int:
    from .export import body_poses, write_rollout_npz, write_rollout_usd

    scene = _scene(args)
    sim = scene.simulation
    from .harness import output_folder

    out = output_folder(args.out or Path("runs") / scene.config.name)
    started = time.perf_counter()
    vertices = sim.rollout().detach().cpu().numpy()
    elapsed = time.perf_counter() - started
    parameters = {name: np.asarray(value) for name, value in scene.model.defaults.items()}
    model = scene.model
    states = sim.frame_states()
    write_rollout_npz(out / "rollout.npz", vertices, model.render_faces, scene.fps, parameters,
                      states, model.body_vertex_start, model.body_names, scene.colors,
                      model.ground_height if model.ground else None)
    write_rollout_usd(out / "rollout.usda", vertices, model.render_faces, scene.fps, model.body_vertex_start,
                      model.body_names, scene.colors, model.ground_height if model.ground else None,
                      body_poses(states))
    print(f"{scene.config.name}: {sim.frames} frames, {sim.steps} physics steps of {sim.dt:g} s on {sim.device} "
          f"in {elapsed:.2f} s ({sim.steps / max(elapsed, 1e-9):.0f} steps/s)")
    written = [out / "rollout.npz", out / "rollout.usda"]
    if args.video:
        from .render import render_rollout_video
        from .render.rerender import display_mesh

        display_vertices, display_faces, display_colors = display_mesh(vertices, model.render_faces, scene.colors,
                                                                       model.shape_vertex_count)
        device = sim.torch_device
        written.append(render_rollout_video(
            torch.as_tensor(display_vertices, device=device), torch.as_tensor(display_faces, device=device),
            out / "rollout.mp4", image_size=(args.resolution, args.resolution),
            colors=torch.as_tensor(display_colors, device=device), fps=scene.fps,
            ground_height=model.ground_height if model.ground else None))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_gradcheck(args) -> int:
    from .gradcheck import format_table, gradcheck

    scene = _scene(args, gradcheck_horizon=True)
    settings = scene.config.gradcheck
    names = [n.strip() for n in args.params.split(",")] if args.params else list(settings.params)
    if not names:
        print("no parameters to check: pass --params or set gradcheck.params in the config", file=sys.stderr)
        return 2
    eps = args.eps if args.eps is not None else settings.eps
    tolerance = args.tolerance if args.tolerance is not None else settings.tolerance
    rows = gradcheck(scene.simulation, names, eps=eps, seed=settings.seed)
    print(f"{scene.config.name}: gradient check over {scene.simulation.frames} frames on {scene.simulation.device} "
          f"(eps {eps:g}, tolerance {tolerance:g})")
    print(format_table(rows, tolerance))
    failed = [row.name for row in rows if not row.passed(tolerance)]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all gradients agree")
    return 0


_LIST_SECTIONS = (("scene", "scenes", "wsim simulate NAME"), ("experiment", "experiments", "wsim run NAME"),
                  ("control", "control tasks", "wsim run NAME"))


def summary_line(description: str, width: int = 110) -> str:
    """The first sentence of a config's ``description``, on one line of at most ``width`` characters."""
    import re

    text = " ".join(description.split())
    text = re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]
    if len(text) > width:
        text = text[: width - 3].rsplit(" ", 1)[0] + "..."
    return text or "(no description)"


def cmd_list(args) -> int:
    from .config_io import shipped_configs

    shipped = shipped_configs()
    width = max(len(c.name) for c in shipped) + 2
    for kind, title, command in _LIST_SECTIONS:
        print(f"{title} ({command}):")
        for c in (c for c in shipped if c.kind == kind):
            print(f"  {c.name:<{width}}{summary_line(c.description)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"simulate": cmd_simulate, "gradcheck": cmd_gradcheck, "run": cmd_run, "list": cmd_list,
                "render": cmd_render, "risp": cmd_risp, "landscape": cmd_landscape}
    try:
        return handlers[args.command](args)
    except WsimError as error:
        print(f"wsim: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m wsim.control CONFIG [--set k=v] [--device D] [--out DIR] [--instances N] [--resume] [--quiet]
[--no-media]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import WsimError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsim.control", description="visuomotor control experiments")
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished instances in the output folder and continue an interrupted one")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--no-media", dest="media", action="store_false",
                        help="per instance only results.json: no target image, videos or USD stages")
    args = parser.parse_args(argv)
    try:
        return run_cli(args.config, args.overrides, args.device, args.out, args.instances, not args.quiet,
                       args.resume, args.media)
    except WsimError as error:
        print(f"wsim: error: {error}", file=sys.stderr)
        return 2


def run_cli(config_name, overrides, device, out, instances, progress, resume=False, media=True) -> int:
    """Shared by ``wsim run`` (for ``task: control`` configs) and ``python -m wsim.control``."""
    from .config import load_control, resolve_control_path
    from .experiment import run_control

    config = load_control(config_name, overrides)
    if instances is not None and instances < 1:
        print("wsim: error: --instances must be >= 1", file=sys.stderr)
        return 2
    out = Path(out or Path("runs") / config.name)
    count = instances or config.instances
    print(f"{config.name}: control ({config.scene}), methods {', '.join(config.methods)}, {count} instance(s) "
          f"from seed {config.seed}, output in {out}", flush=True)
    try:
        report = run_control(config, out, device, count, progress, base=resolve_control_path(config_name).parent,
                             resume=resume, write_outputs=media)
    except KeyboardInterrupt:
        print(f"wsim: interrupted; finished instances and a checkpoint are in {out} (continue with --resume)",
              file=sys.stderr)
        return 130
    print(report["text"])
    print(f"wrote {out}/results.json, {out}/convergence.png, {out}/summary.md and instance_*/ "
          + ("(target.png, <method>.mp4, <method>.usda, results.json)" if media else "(results.json)"))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

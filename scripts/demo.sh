#!/usr/bin/env bash
# Install wsim into .venv and run the main job: rigid-body mass estimation from video (paper Table 1).
# CPU by default; pass --device cuda to use a GPU. Extra arguments go to `wsim run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/wsim run rigid-mass --device "${WSIM_DEVICE:-cpu}" --out runs/rigid-mass "$@"

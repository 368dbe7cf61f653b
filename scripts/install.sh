#!/usr/bin/env bash
# Create .venv (reusing a system-wide PyTorch if there is one) and install wsim into it.
# Usage: scripts/install.sh [extras]     e.g. scripts/install.sh test
# WSIM_TORCH picks the PyTorch to install when none is importable (default: the tested torch==2.13.0,
# also pyproject's lower bound; e.g. WSIM_TORCH=torch for the newest). A system torch older than 2.13
# is replaced by pip when wsim is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "${WSIM_TORCH:-torch==2.13.0}"
fi
extras=${1:-}
target="."
[ -n "$extras" ] && target=".[$extras]"
# Keep a PyTorch that is there and new enough (a container's CUDA build, or the one installed above):
# without the pin pip may replace it to satisfy an extra's dependency.
keep=$(.venv/bin/python -c "import torch; v = torch.__version__.split('+')[0]; \
print(f'torch=={v}' if tuple(int(x) for x in v.split('.')[:2]) >= (2, 13) else '')")
.venv/bin/python -m pip install --quiet -e "$target" $keep

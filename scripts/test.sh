#!/usr/bin/env bash
# Install wsim with its test extras (pytest, newton for the FEM cross-check) into .venv and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
exec .venv/bin/python -m pytest -q "$@"

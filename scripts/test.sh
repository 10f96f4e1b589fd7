#!/usr/bin/env bash
# Install the project with its dev extras and run the whole test suite (generated data only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh dev
ruff check .
python -m pytest -q "$@"

# Sourced by the other scripts: create .venv and install the project (idempotent, quick when done).
# Usage: source scripts/venv.sh [extras]     e.g. `source scripts/venv.sh dev`
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
extras=${1:-}
stamp="$VENV/.installed${extras:+-$extras}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
    touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"

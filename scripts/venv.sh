# Sourced by the other scripts: create .venv and install the project (idempotent, quick when done).
# Usage: source scripts/venv.sh [extras]     e.g. `source scripts/venv.sh dev` (several: "dev,wandb")
#
# torch and torchvision (pinned in pyproject.toml, nowhere else) are installed first, from
#   - TORCH_INDEX_URL when it is set (e.g. https://download.pytorch.org/whl/cu128);
#   - else, on Linux without an NVIDIA GPU, PyTorch's CPU wheel index: PyPI's Linux wheel is the
#     CUDA build, about 3 GB of nvidia-* libraries that a CPU-only machine never uses. Where that
#     index does not answer within 5 s, pip's default index instead, saying so on stderr;
#   - else pip's default index (the CUDA build on Linux, CPU-only wheels on macOS and Windows);
# then the project in editable mode with the extras asked for.
#
# The local venv trains as well as serves (start.sh trains the first model), so the `training`
# extra (matplotlib, for the model report's pictures) is always installed; `dev` holds all of it,
# so where `dev` is installed `training` is not named again.
#
# One stamp, $VENV/.installed, lists the extras installed. A later call reinstalls only when
# pyproject.toml is newer than the stamp or an extra asked for is missing from it; `dev` includes
# the runtime dependencies, so start.sh after test.sh installs nothing. To switch torch builds
# (CPU <-> CUDA), delete .venv and run again.
# Env: VENV (.venv), PYTHON (python3), TORCH_INDEX_URL.
set -euo pipefail

_imgclf_cpu_index=https://download.pytorch.org/whl/cpu

_imgclf_venv() {
    local venv=${VENV:-.venv} python=${PYTHON:-python3} extra wanted have="" missing="" all py
    case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
    local stamp=$venv/.installed
    wanted="training $(echo "${1:-}" | tr ',' ' ')"
    if [ -f "$stamp" ]; then have=$(tr -s '[:space:]' ' ' < "$stamp"); fi
    case " $have " in *" dev "*) have="$have training" ;; esac  # dev holds the training extra
    for extra in $wanted; do  # unquoted: one word per extra
        case " $have " in *" $extra "*) ;; *) missing="$missing $extra" ;; esac
    done
    export PATH="$venv/bin:$PATH"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] \
            && [ -z "$missing" ]; then
        return 0
    fi

    # Everything installed before stays installed (and is updated when pyproject.toml changed).
    # shellcheck disable=SC2086  # one word per extra
    all=$(printf '%s\n' $have $wanted | sort -u | tr '\n' ' ' | sed 's/ *$//')
    case " $all " in *" dev "*) all=$(echo " $all " | sed 's/ training / /; s/^ *//; s/ *$//') ;; esac
    local spec=${all:+[${all// /,}]}
    if [ ! -x "$venv/bin/python" ]; then
        echo "venv.sh: creating $venv" >&2
        "$python" -m venv "$venv"
    fi
    py=$venv/bin/python
    echo "venv.sh: installing imgclf$spec into $venv (the first install takes minutes; pip shows its progress)" >&2
    "$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
    _imgclf_torch "$py"
    "$py" -m pip install --disable-pip-version-check -e ".$spec"
    rm -f "$venv"/.installed-*  # the per-extras stamps of older versions of this script
    echo "$all" > "$stamp"
}

# Install the torch and torchvision pins of pyproject.toml unless that version is already there.
_imgclf_torch() {
    local py=$1 pins index=""
    pins=$("$py" - <<'PY'
import re
from importlib import metadata

text = open("pyproject.toml", encoding="utf-8").read()
try:
    import tomllib

    deps = tomllib.loads(text)["project"]["dependencies"]
except ImportError:  # Python 3.10
    deps = re.findall(r'"((?:torch|torchvision)\s*==[^"]+)"', text)
missing = []
for dep in deps:
    name, sep, version = (part.strip() for part in dep.partition("=="))
    if sep and name in ("torch", "torchvision"):
        try:
            installed = metadata.version(name).split("+")[0]  # 2.14.1+cpu is 2.14.1
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            missing.append(f"{name}=={version}")
print(" ".join(missing))
PY
)
    [ -n "$pins" ] || return 0
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        index=$TORCH_INDEX_URL
        echo "venv.sh: $pins from TORCH_INDEX_URL=$index" >&2
    elif [ "$(uname -s)" != Linux ]; then
        echo "venv.sh: $pins from pip's default index" >&2
    elif { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } \
            || [ -e /proc/driver/nvidia/version ]; then
        echo "venv.sh: NVIDIA GPU found: $pins (CUDA build) from pip's default index" >&2
    elif _imgclf_index_answers "$py" "$_imgclf_cpu_index"; then
        index=$_imgclf_cpu_index
        echo "venv.sh: no NVIDIA GPU: $pins (CPU-only build) from $index" >&2
    else
        echo "venv.sh: no NVIDIA GPU, but PyTorch's CPU wheel index ($_imgclf_cpu_index) is" \
             "unreachable (no answer within 5 s): installing $pins from pip's default index" \
             "instead (on Linux the CUDA build, about 3 GB larger; it runs on CPU too)." \
             "Set TORCH_INDEX_URL to choose the index." >&2
    fi
    # shellcheck disable=SC2086  # $pins: one word per requirement
    "$py" -m pip install --disable-pip-version-check ${index:+--index-url "$index"} $pins
}

# Does this package index list torch within 5 s? (a thread, since a DNS lookup ignores timeouts)
_imgclf_index_answers() {
    "$1" - "$2" 2>/dev/null <<'PY'
import os, ssl, sys, threading, urllib.request

url = sys.argv[1].rstrip("/") + "/torch/"
context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
answered = []
probe = threading.Thread(target=lambda: answered.append(urllib.request.urlopen(url, timeout=5, context=context)),
                         daemon=True)
probe.start()
probe.join(6)
sys.exit(0 if answered else 1)
PY
}

_imgclf_venv "${1:-}"
unset -f _imgclf_venv _imgclf_torch _imgclf_index_answers
unset _imgclf_cpu_index

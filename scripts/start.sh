#!/usr/bin/env bash
# The main job on a fresh machine: install, train the default model if no production model
# exists yet (on the offline Fashion-MNIST from Debian), then serve it over HTTP on 127.0.0.1:8000.
# Env: BIND (host:port) or PORT, MODEL_REGISTRY, MODEL_NAME, DATA_DIR; those of service/settings.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

export MODEL_REGISTRY=${MODEL_REGISTRY:-registry}
export MODEL_NAME=${MODEL_NAME:-fashion-mnist}
DEBIAN_DATA=/usr/share/datasets/fashion-mnist

if [ ! -f "$MODEL_REGISTRY/$MODEL_NAME/production" ]; then
    data_args=()
    if [ -n "${DATA_DIR:-}" ]; then
        data_args=(--data-dir "$DATA_DIR")
    elif [ ! -d "$DEBIAN_DATA" ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "Installing the offline Fashion-MNIST (Debian package dataset-fashion-mnist)..."
            apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
        else
            echo "Fashion-MNIST is missing. Install it with:" >&2
            echo "    sudo apt-get install dataset-fashion-mnist" >&2
            echo "or set DATA_DIR to a directory holding the four idx files, then run this again." >&2
            exit 1
        fi
    fi
    echo "No production model in $MODEL_REGISTRY/$MODEL_NAME: training the default recipe (about 10 minutes on 2 CPU cores)..."
    python -m training train --dataset fashion-mnist "${data_args[@]}" \
        --registry "$MODEL_REGISTRY" --name "$MODEL_NAME" --promote
fi

# This machine only, unless BIND (host:port) or PORT say otherwise: the convention of gunicorn and
# uvicorn for a local run. The Docker images listen on 0.0.0.0 (gunicorn.conf.py's default).
export BIND=${BIND:-127.0.0.1:${PORT:-8000}}
echo "Serving $MODEL_NAME from $MODEL_REGISTRY on http://$BIND"
case $BIND in
    127.*|localhost:*|\[::1\]:*)
        echo "Reachable from this machine only. To serve other machines: BIND=0.0.0.0:${BIND##*:} scripts/start.sh" ;;
esac
exec gunicorn -c service/gunicorn.conf.py 'service.app:create_app()'

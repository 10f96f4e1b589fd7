# Two images from one file (pick with --target or compose's build.target):
#   api      gunicorn + uvicorn workers serving the production model (the default, last stage):
#            models/, artifacts/ and service/, no training code
#   trainer  the scheduled retraining job, with Debian's offline Fashion-MNIST installed:
#            models/, artifacts/ and training/, plus the `training` extra (matplotlib)
#
# Torch comes from TORCH_INDEX_URL, PyTorch's CPU-only wheels by default (a small image), or
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 for a CUDA build. Where that
# index does not answer within a few seconds, the build says so and takes torch from
# PIP_INDEX_URL instead (PyPI's Linux wheel is the CUDA build: a few GB larger, and it runs on CPU
# too), so no build argument is needed where PyTorch's index is unreachable. Every other
# dependency comes from PIP_INDEX_URL. Versions are pinned in pyproject.toml only.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- base: runtime settings + user
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A fixed uid/gid, so volume permissions are predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# ---------------------------------------------------------------- requirements from pyproject.toml
# The pins live in pyproject.toml only: the dependencies (torch.txt, rest.txt) and the trainer's
# `training` extra (training.txt). They are extracted in a stage of their own and copied
# into `deps` by content, so an edit elsewhere in pyproject.toml (a linter setting, the version)
# does not invalidate the multi-GB dependency layers; only a changed pin does.
FROM base AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; project = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; deps = project['dependencies']; torch = [d for d in deps if d.split('=')[0].strip() in ('torch', 'torchvision')]; open('/tmp/torch.txt', 'w').write('\n'.join(torch) + '\n'); open('/tmp/rest.txt', 'w').write('\n'.join(d for d in deps if d not in torch) + '\n'); open('/tmp/training.txt', 'w').write('\n'.join(project['optional-dependencies']['training']) + '\n')"

# ---------------------------------------------------------------- deps: the virtualenv only
FROM base AS deps
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN python -m venv "$VIRTUAL_ENV"
# No source code here: editing it never invalidates these layers.
COPY --from=requirements /tmp/torch.txt /tmp/torch.txt
# The probe runs in a thread because a hung DNS lookup ignores urlopen's timeout.
RUN index="$TORCH_INDEX_URL"; \
    if ! python -c "import sys, threading, urllib.request as r; ok = []; t = threading.Thread(target=lambda: ok.append(r.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=5)), daemon=True); t.start(); t.join(10); sys.exit(0 if ok else 1)" "$index" 2>/dev/null; then \
        echo "WARNING: the torch index $index did not answer: torch comes from $PIP_INDEX_URL instead (on Linux the CUDA build, a few GB larger; it runs on CPU too)." >&2; \
        index="$PIP_INDEX_URL"; \
    fi; \
    echo "torch from $index"; \
    pip install --index-url "$index" -r /tmp/torch.txt
COPY --from=requirements /tmp/rest.txt /tmp/rest.txt
RUN pip install --index-url "$PIP_INDEX_URL" -r /tmp/rest.txt \
 && python -c "import torch, torchvision, litestar, gunicorn, cronsim; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---------------------------------------------------------------- runtime: the venv, no source yet
# Built on `deps` directly: it holds only wheels (no compilers, no pip cache), and copying a
# multi-GB venv into a fresh stage would just store it twice.
FROM deps AS runtime
WORKDIR /app
ENV PYTHONPATH=/app \
    MODEL_REGISTRY=/registry \
    MODEL_NAME=fashion-mnist \
    DEVICE=auto
# Volume mount points owned by the app user, so named volumes start out writable by it.
RUN mkdir -p /registry /runs /feedback && chown app:app /registry /runs /feedback

# ---------------------------------------------------------------- trainer: the retraining job
FROM runtime AS trainer
# The real Fashion-MNIST (four idx .gz files in /usr/share/datasets/fashion-mnist), so the first
# `docker compose up` trains offline. Installed before the source for layer caching.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# The `training` extra: matplotlib draws the pictures of the report published with every
# version; the api image does without it. Its font cache is built here, in a directory the app
# user owns (its home, /app, is not writable), so no run rebuilds it or warns about it.
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV MPLCONFIGDIR=/opt/matplotlib
COPY --from=requirements /tmp/training.txt /tmp/training.txt
RUN pip install --index-url "$PIP_INDEX_URL" -r /tmp/training.txt \
 && python -c "import matplotlib.font_manager" \
 && chown -R app:app "$MPLCONFIGDIR"
COPY models ./models
COPY artifacts ./artifacts
COPY training ./training
ENV SCHEDULE_RUNS_DIR=/runs
USER app
CMD ["python", "-m", "training", "schedule"]

# ---------------------------------------------------------------- api: the inference service
FROM runtime AS api
COPY models ./models
COPY artifacts ./artifacts
COPY service ./service
ENV PORT=8000
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/ready', timeout=4).status == 200 else 1)"]
CMD ["gunicorn", "-c", "service/gunicorn.conf.py", "service.app:create_app()"]

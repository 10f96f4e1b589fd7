"""gunicorn settings, all from the environment (``gunicorn -c service/gunicorn.conf.py ...``).

BIND (or 0.0.0.0:$PORT), WEB_CONCURRENCY workers, TIMEOUT / GRACEFUL_TIMEOUT / KEEPALIVE in
seconds, LOG_LEVEL, LOG_FORMAT (text or json: one JSON object per line), ACCESS_LOG=1 for a line
per request (the default with json). It also prepares prometheus_client's
multiprocess mode: PROMETHEUS_MULTIPROC_DIR must be set before a worker imports
prometheus_client, so it is set here in the master (a fresh temp dir when unset), emptied at
start, and a dead worker's live gauges are dropped.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
# Model loading happens in the workers after they boot, so TIMEOUT only guards a hung loop.
timeout = int(os.environ.get("TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("KEEPALIVE", "5"))
backlog = int(os.environ.get("BACKLOG", "2048"))
# Never preload: each worker must build its own torch state after the fork.
preload_app = False
loglevel = os.environ.get("LOG_LEVEL", "info")
log_format = (os.environ.get("LOG_FORMAT") or "text").strip().lower()  # empty, as compose passes it: text
if log_format not in ("text", "json"):
    raise SystemExit(f"Invalid LOG_FORMAT {log_format!r}. Only text and json are supported.")
# One line per request, written by service.api.middleware (logger service.access) with the
# latency and the model and version that answered; uvicorn's own access log stays off.
# On by default with json: a log pipeline wants the request lines.
access_log = (os.environ.get("ACCESS_LOG") or ("1" if log_format == "json" else "0")).lower() in ("1", "true", "yes")
accesslog = None
errorlog = "-"
# Python warnings become log records (logger py.warnings), so that with json every line of the
# output parses, and with text every line has a time.
logging.captureWarnings(True)

# Workers size their torch thread pools from the worker count (Settings.web_concurrency);
# on_starting corrects it when the command line overrides `workers` (gunicorn -w N).
os.environ["WEB_CONCURRENCY"] = str(workers)

# A directory this file made is marked as its own, so that it is still removed at exit after a
# HUP (gunicorn then reads this file again, and finds PROMETHEUS_MULTIPROC_DIR set by itself).
_multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_own_multiproc_dir = not _multiproc_dir or os.environ.get("IMGCLF_OWN_MULTIPROC_DIR") == _multiproc_dir
if not _multiproc_dir:
    _multiproc_dir = tempfile.mkdtemp(prefix="imgclf-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["IMGCLF_OWN_MULTIPROC_DIR"] = _multiproc_dir

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "service.logs.RequestIdFilter"},
                "graceful_stop": {"()": "service.logs.GracefulStopFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s "
                           "[%(request_id)s] %(message)s"},
        "json": {"()": "service.logs.JsonFormatter"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": log_format,
                   "filters": ["request_id"], "stream": "ext://sys.stderr"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False,
                           "filters": ["graceful_stop"]},
        # uvicorn's access logger takes gunicorn.access's level and handlers: silent, since
        # service.access has the request lines.
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        "service.access": {"level": "INFO" if access_log else "WARNING"},
    },
}


def on_starting(server):
    """Tell the workers the real worker count (``-w N`` on the command line wins over this
    file), create the table the workers share (``service.workers.worker_table``: idle workers lend
    their cores), and start from an empty
    metrics dir: stale files of a previous run would be summed in."""
    # Every module the other hooks import is imported here, once: child_exit runs in the
    # master's SIGCHLD handler, which re-enters when several workers exit at once (a HUP with
    # 8 workers), and a first import interrupted there left a half-imported module that
    # killed the master.
    from prometheus_client import multiprocess  # noqa: F401

    from service.workers import worker_table

    os.environ["WEB_CONCURRENCY"] = str(server.cfg.workers)
    worker_table.create_table()
    path = Path(_multiproc_dir)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink(missing_ok=True)


def pre_fork(server, worker):
    from service.workers import worker_table

    worker_table.assign_slot(worker, list(server.WORKERS.values()))


def post_fork(server, worker):  # noqa: ARG001
    from service.workers import worker_table

    worker_table.join(worker)


def child_exit(server, worker):  # noqa: ARG001
    from prometheus_client import multiprocess

    from service.workers import worker_table

    multiprocess.mark_process_dead(worker.pid)
    worker_table.release(worker)


def on_exit(server):  # noqa: ARG001
    if _own_multiproc_dir:
        shutil.rmtree(_multiproc_dir, ignore_errors=True)

"""Logging of the gunicorn master and workers: request ids, a graceful stop logged as such, and
the two line formats, ``LOG_FORMAT=text`` (the default) and ``json`` (one object per line, for
log pipelines). Kept import-light: the master loads it from its logging config,
``service/gunicorn.conf.py``.
"""

import contextvars
import json
import logging
from datetime import datetime, timezone

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# What a request line carries (``service.api.middleware``), as ``extra=`` attributes of its
# record: the JSON formatter writes the ones a record has, under these names.
REQUEST_FIELDS = ("client", "method", "path", "status", "latency_ms", "model", "version")


class RequestIdFilter(logging.Filter):
    """Adds ``%(request_id)s`` to log records (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class GracefulStopFilter(logging.Filter):
    """A worker asked to stop with SIGTERM is logged by gunicorn as ``ERROR Worker (pid:N) was
    sent SIGTERM!``: uvicorn's worker finishes its requests, then re-raises the signal it
    caught, so the master sees a death by signal. That is a normal stop; it is logged at INFO.
    Other signals (SIGKILL: out of memory?) stay errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage().endswith("was sent SIGTERM!"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``message``, ``pid``, ``request_id`` (null outside a request), the
    request fields a record carries (:data:`REQUEST_FIELDS`), and ``exception`` with the
    traceback when there is one. ASCII only: a newline or a control character inside a message
    is escaped, so a record can never split into two lines or forge one."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "-")
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "request_id": None if request_id == "-" else request_id,
        }
        for field in REQUEST_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


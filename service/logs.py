"""Logging filters of the gunicorn master and workers (kept import-light: the master loads them
from its logging config, ``service/gunicorn.conf.py``)."""

import contextvars
import logging

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


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

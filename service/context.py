"""The request id of the current request, for log lines (kept import-light: the gunicorn
master loads :class:`RequestIdFilter` from its logging config)."""

import contextvars
import logging

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``%(request_id)s`` to log records (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True

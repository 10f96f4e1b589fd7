"""Domain exceptions, raised where a problem is found, and the ONE place that maps them to HTTP.

Every error leaves the service as JSON ``{"error", "detail", "request_id", ...}`` with a status
that tells the client what it did wrong. Unexpected exceptions are logged with their traceback
and answered 500 without internals; the worker keeps serving.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageProblem:
    """Why one image of a request could not be used (``index`` is its position in the request)."""

    index: int
    filename: str | None
    status: int
    detail: str


class ServiceError(Exception):
    """Base of the domain errors: a status, a short machine-readable code and a human message."""

    status_code = 500
    code = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequestError(ServiceError):
    status_code, code = 400, "bad_request"


class InvalidModelNameError(BadRequestError):
    code = "invalid_model_name"


class UnknownModelError(ServiceError):
    status_code, code = 404, "unknown_model"


class UnknownVersionError(ServiceError):
    """A version that is not (or no longer) in the registry; the message lists the ones that are."""

    status_code, code = 404, "unknown_version"


class UnsupportedMediaTypeError(ServiceError):
    status_code, code = 415, "unsupported_media_type"


class PayloadTooLargeError(ServiceError):
    status_code, code = 413, "payload_too_large"


class InvalidImageError(ServiceError):
    """One or more images of a request are unusable; the whole request is refused (see docs)."""

    code = "invalid_image"

    def __init__(self, problems: list[ImageProblem]) -> None:
        first = problems[0]
        self.status_code = first.status
        which = ", ".join(str(p.index) for p in problems)
        super().__init__(
            f"{len(problems)} image(s) could not be used (index {which}); nothing was classified. "
            f"First problem: image {first.index}: {first.detail}",
            problems=[p.__dict__ for p in problems],
        )


class ModelNotReadyError(ServiceError):
    status_code, code = 503, "model_not_ready"
    headers = {"Retry-After": "2"}


class QueueFullError(ServiceError):
    """The worker is over capacity (queued images or request bytes in flight): retry later."""

    status_code, code = 503, "overloaded"
    headers = {"Retry-After": "1"}


class ClientDisconnectedError(ServiceError):
    """The client went away before its request body arrived; nobody reads this answer."""

    status_code, code = 499, "client_closed_request"


class InferenceError(ServiceError):
    status_code, code = 500, "inference_failed"


class AdminDisabledError(ServiceError):
    status_code, code = 403, "admin_disabled"


class UnauthorizedError(ServiceError):
    status_code, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="admin"'}


class ConflictError(ServiceError):
    """The registry is in a state that forbids the operation (nothing to roll back to ...)."""

    status_code, code = 409, "conflict"


class RegistryReadOnlyError(ConflictError):
    code = "registry_read_only"


class ArtifactRejectedError(ServiceError):
    """A published version failed validation (hash, architecture, labels, test forward)."""

    status_code, code = 422, "artifact_rejected"


# An absolute path of two or more components, not part of a word or URL ("image/png" is not one).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*")


def public_text(text: str, registry: Path | None = None) -> str:
    """``text`` without file system paths, for clients: registry paths become relative
    (``fmnist/3/weights.pt``), any other absolute path keeps only its file name."""
    if registry is not None:
        for prefix in {str(registry), str(Path(registry).resolve())}:
            if prefix not in ("", ".", "/"):
                text = text.replace(prefix.rstrip("/") + "/", "")
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _json(request: Request, status: int, code: str, detail: str, headers: dict[str, str],
          **extra: Any) -> Response:
    settings = request.app.state.get("settings")
    detail = public_text(detail, settings.model_registry if settings is not None else None)
    body = {"error": code, "detail": detail, "request_id": request_id_of(request), **extra}
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)


def exception_to_http_response(request: Request, exc: Exception) -> Response:
    """Map any exception to the JSON error contract; registered for ``Exception`` on the app."""
    if isinstance(exc, ServiceError):
        return _json(request, exc.status_code, exc.code, exc.detail, exc.headers, **exc.extra)
    if isinstance(exc, ValidationException):
        # Litestar's own parameter validation (e.g. top_k=abc): say which field and why.
        problems = exc.extra if isinstance(exc.extra, list) else []
        reasons = "; ".join(
            f"{p.get('key', '?')}: {p.get('message', '')}" for p in problems if isinstance(p, dict)
        )
        detail = f"{exc.detail}: {reasons}" if reasons else str(exc.detail)
        return _json(request, 400, "bad_request", detail, {})
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            status, "bad_request" if status < 500 else "internal_error"
        )
        detail = str(exc.detail)
        if status == 413:
            settings = request.app.state.get("settings")
            limit = f"={settings.max_body_bytes} bytes" if settings is not None else ""
            detail = f"request body too large: the limit is MAX_BODY_BYTES{limit}"
        return _json(request, status, code, detail, dict(exc.headers or {}))
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _json(request, 500, "internal_error", "internal server error; see the server log", {})


# ----------------------------------------------------------------------------- POST /feedback

class FeedbackDisabledError(ServiceError):
    status_code, code = 403, "feedback_disabled"


class FeedbackUnauthorizedError(UnauthorizedError):
    headers = {"WWW-Authenticate": 'Bearer realm="feedback"'}


class UnknownLabelError(ServiceError):
    """A feedback label that is not a class of the model version it is meant to teach."""

    status_code, code = 422, "unknown_label"


class InvalidFeedbackImageError(InvalidImageError):
    """Like :class:`InvalidImageError` (same code, statuses and ``problems``), for a feedback
    request: nothing was stored."""

    def __init__(self, problems: list[ImageProblem]) -> None:
        first = problems[0]
        self.status_code = first.status
        which = ", ".join(str(p.index) for p in problems)
        ServiceError.__init__(
            self,
            f"{len(problems)} image(s) could not be used (index {which}); nothing was stored. "
            f"First problem: image {first.index}: {first.detail}",
            problems=[p.__dict__ for p in problems],
        )


class LabelConflictError(ConflictError):
    """An image the feedback store already holds under another label."""

    code = "label_conflict"


class FeedbackStoreFullError(ServiceError):
    """The feedback store's file system is full (or over quota): nothing was stored."""

    status_code, code = 507, "insufficient_storage"


class FeedbackStoreUnavailableError(ServiceError):
    """The feedback store cannot be written (read-only, permissions, missing): nothing was
    stored. The rest of the service is unaffected."""

    status_code, code = 503, "feedback_unavailable"


# ----------------------------------------------------------------------------- GET /models/{name}/report

class ReportNotFoundError(ServiceError):
    """The loaded version has no such report file (published before reports, or not a picture
    the report has)."""

    status_code, code = 404, "report_not_found"


class ArtifactCorruptError(ServiceError):
    """A file of the loaded version differs from what was published (sha256) or cannot be read:
    the registry was changed after publication. The operator's problem, not the client's."""

    status_code, code = 500, "artifact_corrupt"


# ----------------------------------------------------------------------------- Open Inference Protocol v2

class NotReadyError(ServiceError):
    """A v2 health check answering false: the protocol says so with a 4xx status."""

    status_code, code = 400, "not_ready"


def exception_to_v2_response(request: Request, exc: Exception) -> Response:
    """The mapping of :func:`exception_to_http_response` (status, headers, message), rendered as
    the Open Inference Protocol's error object ``{"error": "<message>"}``: registered on the
    ``/v2`` routes, so that a v2 client reads every error the way the protocol tells it to."""
    mapped = exception_to_http_response(request, exc)
    body = {"error": mapped.content["detail"]}
    return Response(body, status_code=mapped.status_code, headers=mapped.headers,
                    media_type=MediaType.JSON)


# ----------------------------------------------------------------------------- ?version=

class VersionRefusedError(ArtifactRejectedError):
    """A version named by a request that failed the checks of every load (hash, golden set,
    architecture): refused, and remembered by the worker (versions are immutable)."""

    code = "version_refused"


def exception_to_response(request: Request, exc: Exception) -> Response:
    """The app's exception handler: the protocol's error object for every path under ``/v2``
    (the 404s and 405s of routing included), the service's error JSON everywhere else."""
    path = request.scope.get("raw_path") or request.scope["path"].encode()
    if path == b"/v2" or path.startswith(b"/v2/"):
        return exception_to_v2_response(request, exc)
    return exception_to_http_response(request, exc)

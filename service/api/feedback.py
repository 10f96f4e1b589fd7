"""``POST /feedback``: clients send images with their true label; the service stores them
(``FEEDBACK_DIR``) for the retraining job to learn from.

A plain Litestar handler, not a raw ASGI route like ``/predict``: feedback is not a hot path,
and Litestar gives the token guard, the typed query parameters and most of the OpenAPI entry for
free. The body is still received the ``/predict`` way, through the worker's
:class:`~service.api.parsing.BodyBudget` from ``request.receive`` (never ``request.body()``), so
the same ``MAX_BODY_BYTES`` and ``MAX_INFLIGHT_BYTES`` bound both routes, and it is split by the
same parser (:func:`~service.api.parsing.parse_upload`), which here also reads a ``label`` and a
``request_id`` text field.

The flow: token -> model loaded (503 before the body is received) -> body -> one label, a class
of the loaded version -> every image decoded (a thread) -> stored (a thread;
:mod:`service.feedback.store`). Every outcome is counted per image in ``imgclf_feedback_total``.
The ``request_id`` names the ``/predict`` answer being corrected: this request's own id is the
``X-Request-ID`` header, set by the middleware.
"""

import asyncio
import hmac
from typing import Any

from litestar import Request, Response, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import Parameter

from service import metrics
from service.api.bearer import bearer_matches
from service.api.body_budget import BodyBudget
from service.api.parsing import MAX_FIELD_BYTES, parse_upload
from service.errors import (
    FeedbackDisabledError,
    FeedbackStoreFullError,
    FeedbackStoreUnavailableError,
    FeedbackUnauthorizedError,
    InvalidImageError,
    LabelConflictError,
    ServiceError,
    UnknownLabelError,
)
from service.feedback.intake import check_images, check_label, check_request_id, one_value
from service.feedback.store import FeedbackStore
from service.inference.predictor import Predictor
from service.schemas import (
    ErrorResponse,
    FeedbackErrorResponse,
    FeedbackImage,
    FeedbackJsonRequest,
    FeedbackResponse,
)
from service.settings import Settings

FEEDBACK_PATH = "/feedback"
FIELDS = ("label", "request_id")  # text fields a multipart or JSON body may carry
UNKNOWN_LABEL = "(unknown)"  # the metric's label for a label that is no class (bounded cardinality)
# Outcomes of imgclf_feedback_total by the domain error that ends a request after its label
# was accepted.
_OUTCOMES: dict[type[ServiceError], str] = {
    InvalidImageError: "invalid_image", FeedbackStoreFullError: "disk_full",
    FeedbackStoreUnavailableError: "unavailable", LabelConflictError: "conflict",
}


async def require_feedback_token(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Litestar guard: ``FEEDBACK_TOKEN`` configured and sent as the bearer token (constant-time
    compare). The admin token is another secret and does not open this door."""
    settings: Settings = connection.app.state["settings"]
    token = settings.feedback_token
    if token is None:
        raise FeedbackDisabledError(
            "feedback is disabled: set FEEDBACK_TOKEN (or FEEDBACK_TOKEN_FILE) to enable it")
    if settings.admin_token is not None and hmac.compare_digest(
            token.get_secret_value().encode(), settings.admin_token.get_secret_value().encode()):
        raise FeedbackDisabledError(
            "feedback is disabled: FEEDBACK_TOKEN equals ADMIN_TOKEN; give feedback a token of its own")
    if not bearer_matches(connection, token):
        raise FeedbackUnauthorizedError(
            "missing or wrong 'Authorization: Bearer <FEEDBACK_TOKEN>' header")


def _count(label: str, outcome: str, images: int) -> None:
    metrics.FEEDBACK.labels(label, outcome).inc(images)


def _outcome(error: ServiceError) -> str | None:
    return next((outcome for kind, outcome in _OUTCOMES.items() if isinstance(error, kind)), None)


# ----------------------------------------------------------------------------- OpenAPI

_BINARY = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
_TEXT = {
    "label": Schema(type=OpenAPIType.STRING, max_length=MAX_FIELD_BYTES,
                    description="true class of every image (or the query parameter)"),
    "request_id": Schema(type=OpenAPIType.STRING, description="X-Request-ID of the /predict "
                                                              "answer this corrects (optional)"),
}
_REQUEST_BODY = RequestBody(
    required=True,
    description="the images, as for /predict: several files (multipart, with a `label` text "
                "field), one image (image/*, label in the query), or base64 JSON",
    content={
        "multipart/form-data": OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.OBJECT,
            properties={"file": Schema(type=OpenAPIType.ARRAY, items=_BINARY), **_TEXT},
        )),
        "image/*": OpenAPIMediaType(schema=_BINARY),
        "application/json": OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.OBJECT,
            required=["images"],
            properties={
                "images": Schema(type=OpenAPIType.ARRAY, min_items=1,
                                 items=Schema(type=OpenAPIType.STRING, content_encoding="base64")),
                **_TEXT,
            },
        )),
    },
)


class FeedbackOperation(Operation):
    """The OpenAPI operation with its request body, which Litestar cannot see in a signature
    that reads the body itself."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "request_body": _REQUEST_BODY})


_RESPONSES = {
    200: ResponseSpec(FeedbackResponse, description="every image was already in the store"),
    **{status: ResponseSpec(data_container=container, description=text) for status, (container, text) in {
        400: (ErrorResponse, "bad query or body, no label, or the label or request_id given twice"),
        401: (ErrorResponse, "missing or wrong bearer token"),
        403: (ErrorResponse, "feedback is disabled (no FEEDBACK_TOKEN)"),
        404: (ErrorResponse, "unknown model"),
        409: (ErrorResponse, "an image is already stored with another label"),
        413: (ErrorResponse, "body, image count or pixel count over the limit"),
        415: (ErrorResponse, "unsupported Content-Type or image format"),
        422: (FeedbackErrorResponse, "unknown label (valid_labels lists them), or an image could "
                                     "not be decoded; nothing was stored"),
        503: (ErrorResponse, "model not loaded yet, the worker is over capacity, or the "
                             "feedback store cannot be written"),
        507: (ErrorResponse, "the feedback store is full; nothing was stored"),
    }.items()},
}


# ----------------------------------------------------------------------------- the route

@post(FEEDBACK_PATH, guards=[require_feedback_token], status_code=201, tags=["feedback"],
      security=[{"FeedbackToken": []}], responses=_RESPONSES, operation_class=FeedbackOperation,
      operation_id="Feedback", summary="Store images with their true label for retraining",
      response_description="at least one image was new to the store")
async def feedback(
    request: Request,
    predictor: NamedDependency[Predictor],
    settings: NamedDependency[Settings],
    label: str | None = Parameter(default=None, max_length=MAX_FIELD_BYTES,
                                  description="true class of every image (or the body's label)"),
    model: str | None = Parameter(default=None, description="model name (default model): its "
                                                            "loaded version's labels are valid"),
    request_id: str | None = Parameter(default=None, max_length=64,
                                       description="X-Request-ID of the /predict answer corrected"),
) -> Response[FeedbackResponse]:
    """201 when at least one image is new to the store, else 200; one entry per image, in
    input order. One bad image, an unknown label or a failed write stores nothing."""
    slot = predictor.slot(model)
    loaded = predictor.loaded(slot)
    budget: BodyBudget = request.app.state.body_budget
    length = request.headers.get("content-length", "")
    body = await budget.read(request.receive, int(length) if length.isdigit() else None)
    try:
        upload = parse_upload(request.headers.get("content-type"), body,
                              max_images=settings.max_images, fields=FIELDS,
                              json_model=FeedbackJsonRequest)
        count = len(upload.images)
        given = one_value("label", label, upload.fields.get("label"))
        try:
            label = check_label(given, loaded.labels, model=slot.name, version=loaded.version)
        except UnknownLabelError:
            _count(UNKNOWN_LABEL, "invalid_label", count)
            raise
        corrects = check_request_id(one_value("request_id", request_id, upload.fields.get("request_id")))
        store = FeedbackStore(settings.feedback_dir)
        try:
            checked = await asyncio.to_thread(check_images, upload.images, spec=loaded.spec,
                                              max_pixels=settings.max_pixels)
            saved = await asyncio.to_thread(store.add, label, checked, model=slot.name,
                                            version=loaded.version, request_id=corrects)
        except ServiceError as exc:
            outcome = _outcome(exc)
            if outcome is not None:
                _count(label, outcome, count)
            raise
    finally:
        budget.release(len(body))
    new = sum(item.stored for item in saved)
    if new:
        _count(label, "stored", new)
    if new < count:
        _count(label, "duplicate", count - new)
    answer = FeedbackResponse(model=slot.name, version=loaded.version, images=[
        FeedbackImage(id=item.sha256, label=label, stored=item.stored) for item in saved])
    return Response(answer, status_code=201 if new else 200)

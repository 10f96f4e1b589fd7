"""``POST /predict``: the route (parse the head, hand it to the predictor, send the answer)
and its OpenAPI entry.

It is an ``@asgi`` route handler because it is the hot path: Litestar still routes to it, its
middleware still wraps it, and its exception handlers still turn every error into the same JSON
as elsewhere, but it skips the ``Request`` object, the signature model and the ``Response``
conversion (docs/performance.md has what that buys). Litestar cannot document a raw route from
its signature, so :func:`document_predict` writes its OpenAPI entry.
"""

from typing import Any

from litestar import Litestar, asgi
from litestar.enums import ParamType
from litestar.exceptions import MethodNotAllowedException
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from litestar.types import Receive, Scope, Send

from service.api.parsing import MAX_TOP_K, PredictRequest
from service.inference.predictor import Predictor
from service.schemas import ErrorResponse, PredictResponse

PREDICT_PATH = "/predict"
_JSON_HEADERS = (b"content-type", b"application/json")
_SCHEMAS = "#/components/schemas/"


@asgi(PREDICT_PATH, copy_scope=False)
async def predict(scope: Scope, receive: Receive, send: Send) -> None:
    """One result per image, in input order. One bad image refuses the whole request."""
    if scope["method"] != "POST":
        raise MethodNotAllowedException(headers={"Allow": "POST"})
    state = Litestar.from_scope(scope).state
    request = PredictRequest.from_asgi(scope, receive, budget=state.body_budget)
    predictor: Predictor = state.predictor
    body = await predictor.predict(request)
    await send({"type": "http.response.start", "status": 200, "headers": [
        _JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- OpenAPI

_ERRORS = {
    "400": "bad request (top_k, base64, multipart, model name, version ...)",
    "404": "unknown model, or a version not (or no longer) in the registry",
    "413": "body, image count or pixel count over the limit",
    "415": "unsupported Content-Type",
    "422": "an image could not be decoded (nothing was classified), or the version was refused",
    "503": "model not loaded yet, or the queue is full (see Retry-After)",
}


def document_predict(openapi: OpenAPI) -> None:
    """Add ``POST /predict`` and the schemas of its answers to the schema Litestar generated
    for the other routes. The answer schemas are pydantic's JSON Schema of the very models
    the tests validate responses against."""
    schemas: dict[str, Any] = openapi.components.schemas
    for model in (PredictResponse, ErrorResponse):
        schema = model.model_json_schema(ref_template=_SCHEMAS + "{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas.setdefault(model.__name__, schema)

    def answer(description: str, model: type) -> OpenAPIResponse:
        return OpenAPIResponse(description=description, content={"application/json": (
            OpenAPIMediaType(schema=Reference(ref=_SCHEMAS + model.__name__)))})

    binary = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
    openapi.paths = dict(openapi.paths or {})
    openapi.paths[PREDICT_PATH] = PathItem(post=Operation(
        tags=["predict"],
        summary="Classify one or many images",
        description="One result per image, in input order. One bad image refuses the whole "
                    "request.",
        operation_id="Predict",
        parameters=[
            Parameter(name="top_k", param_in=ParamType.QUERY, required=False,
                      description="classes per image, best first",
                      schema=Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_TOP_K,
                                    default=1)),
            Parameter(name="model", param_in=ParamType.QUERY, required=False,
                      description="model name (default: the first of MODEL_NAME)",
                      schema=Schema(type=OpenAPIType.STRING)),
            Parameter(name="version", param_in=ParamType.QUERY, required=False,
                      description="any version still in the registry (default: production)",
                      schema=Schema(type=OpenAPIType.STRING, pattern="^[1-9][0-9]{0,8}$")),
        ],
        request_body=RequestBody(
            required=True,
            description="one image (image/*), several files (multipart), or base64 JSON",
            content={
                "multipart/form-data": OpenAPIMediaType(schema=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={"file": Schema(type=OpenAPIType.ARRAY, items=binary)},
                )),
                "image/*": OpenAPIMediaType(schema=binary),
                "application/json": OpenAPIMediaType(schema=Schema(
                    type=OpenAPIType.OBJECT,
                    required=["images"],
                    properties={"images": Schema(
                        type=OpenAPIType.ARRAY,
                        items=Schema(type=OpenAPIType.STRING, content_encoding="base64"),
                    )},
                )),
            },
        ),
        responses={
            "200": answer("one result per image, in input order", PredictResponse),
            **{status: answer(text, ErrorResponse) for status, text in _ERRORS.items()},
        },
    ))

"""The OpenAPI entries of the raw ``/v2/models/...`` routes, which Litestar cannot describe from
a signature: written from the pydantic schemas the tests validate the answers against, as
``service.api.predict.document_predict`` does for ``/predict``."""

from typing import Any

import msgspec
from litestar.enums import ParamType
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

from service.api.v2.request import HEADER_LENGTH
from service.api.v2.routes import MODELS_PATH
from service.schemas import V2ErrorResponse, V2InferenceRequest, V2InferenceResponse, V2ModelMetadata

_SCHEMAS = "#/components/schemas/"
_BINARY = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
_ERRORS = {
    "400": "a request that does not add up (shape, datatype, data, binary sizes, parameters, "
           "outputs), a malformed model name; for .../ready: not ready",
    "404": "unknown model or version",
    "413": "body over MAX_BODY_BYTES, more than MAX_IMAGES images, an image over MAX_PIXELS",
    "415": "a compressed body (Content-Encoding)",
    "422": "an image could not be decoded (nothing was classified)",
    "503": "model not loaded yet, or the worker is overloaded (see Retry-After)",
}


def document_v2(openapi: OpenAPI) -> None:
    """Add the ``/v2/models/...`` operations and their schemas to the generated schema."""
    schemas: dict[str, Any] = openapi.components.schemas
    for model in (V2ModelMetadata, V2InferenceResponse, V2ErrorResponse):
        schema = model.model_json_schema(ref_template=_SCHEMAS + "{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas.setdefault(model.__name__, schema)
    # The request is a msgspec Struct (service.schemas says why): msgspec writes its schema.
    _, components = msgspec.json.schema_components([V2InferenceRequest], ref_template=_SCHEMAS + "{name}")
    for name, schema in components.items():
        schemas.setdefault(name, schema)
    openapi.paths = dict(openapi.paths or {})
    for versioned in (False, True):
        base = MODELS_PATH + "/{name}" + ("/versions/{version}" if versioned else "")
        suffix = "Version" if versioned else ""
        parameters = _path_parameters(versioned)
        openapi.paths[base] = PathItem(get=Operation(
            tags=["v2"], summary="Model metadata", operation_id=f"V2ModelMetadata{suffix}",
            description="Inputs (send one of them), outputs, platform and versions.",
            parameters=parameters,
            responses={"200": _json("the model's metadata", V2ModelMetadata), **_errors("400", "404", "503")},
        ))
        openapi.paths[base + "/ready"] = PathItem(get=Operation(
            tags=["v2"], summary="Model ready", operation_id=f"V2ModelReady{suffix}",
            description="200 (empty body) when the model can answer, a 4xx otherwise.",
            parameters=parameters,
            responses={"200": OpenAPIResponse(description="ready"), **_errors("400", "404")},
        ))
        openapi.paths[base + "/infer"] = PathItem(post=Operation(
            tags=["v2"], summary="Inference", operation_id=f"V2Infer{suffix}",
            description="One input (images: BYTES [N]; pixels: UINT8 or FP32 [N, C, H, W]); the "
                        "outputs probabilities (FP32 [N, classes]) and label (BYTES [N]). With "
                        f"the binary tensor data extension, {HEADER_LENGTH} gives the length of "
                        "the JSON object and the binary data follows it.",
            parameters=[*parameters, Parameter(
                name=HEADER_LENGTH, param_in=ParamType.HEADER, required=False,
                description="bytes of the JSON object at the start of the body",
                schema=Schema(type=OpenAPIType.INTEGER, minimum=0))],
            request_body=RequestBody(required=True, content={
                "application/json": OpenAPIMediaType(schema=Reference(ref=_SCHEMAS + "V2InferenceRequest")),
                "application/octet-stream": OpenAPIMediaType(schema=_BINARY),
            }),
            responses={
                "200": OpenAPIResponse(
                    description=f"the outputs; with binary outputs, {HEADER_LENGTH} gives the "
                                "length of the JSON object and their data follows it",
                    content={"application/json": OpenAPIMediaType(
                                 schema=Reference(ref=_SCHEMAS + "V2InferenceResponse")),
                             "application/octet-stream": OpenAPIMediaType(schema=_BINARY)}),
                **_errors(*_ERRORS),
            },
        ))


def _path_parameters(versioned: bool) -> list[Parameter]:
    names = {"name": "model name"} | ({"version": "a published version"} if versioned else {})
    return [Parameter(name=name, param_in=ParamType.PATH, required=True, description=text,
                      schema=Schema(type=OpenAPIType.STRING)) for name, text in names.items()]


def _json(description: str, model: type) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, content={"application/json": OpenAPIMediaType(
        schema=Reference(ref=_SCHEMAS + model.__name__))})


def _errors(*statuses: str) -> dict[str, OpenAPIResponse]:
    return {status: _json(_ERRORS[status], V2ErrorResponse) for status in statuses}

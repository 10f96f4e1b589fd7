"""Public endpoints: thin controllers that parse HTTP and hand over to the predictor.

No torch here: a controller finds the image bytes (``service.inputs``), calls the predictor,
and returns a schema. Errors are domain exceptions mapped to HTTP in ``service.errors``.
"""

from dataclasses import dataclass

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp

from service import metrics
from service.inputs import MAX_TOP_K, RawImage, parse_images, parse_predict_query
from service.predictor import Predictor
from service.schemas import (
    ErrorResponse,
    HealthResponse,
    InputSpecSchema,
    LoadedModelInfo,
    ModelsResponse,
    PredictResponse,
)

_ERRORS = {
    status: ResponseSpec(data_container=ErrorResponse, description=text)
    for status, text in {
        400: "bad request (top_k, base64, multipart, model name ...)",
        404: "unknown model",
        413: "body, image count or pixel count over the limit",
        415: "unsupported Content-Type",
        422: "an image could not be decoded (nothing was classified)",
        503: "model not loaded yet, or the queue is full (see Retry-After)",
    }.items()
}


@dataclass
class _PredictOperation(Operation):
    """The query parameters and the three request formats of /predict, which its handler
    reads from the raw request."""

    def __post_init__(self) -> None:
        self.parameters = [
            Parameter(name="top_k", param_in=ParamType.QUERY, required=False,
                      description="classes per image, best first",
                      schema=Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_TOP_K,
                                    default=1)),
            Parameter(name="model", param_in=ParamType.QUERY, required=False,
                      description="model name (default: the first of MODEL_NAME)",
                      schema=Schema(type=OpenAPIType.STRING)),
        ]
        binary = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
        self.request_body = RequestBody(
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
        )


class PredictController(Controller):
    path = "/"
    tags = ["predict"]

    @post(
        "/predict",
        status_code=200,
        operation_class=_PredictOperation,
        responses={200: ResponseSpec(data_container=PredictResponse,
                                     description="one result per image, in input order"),
                   **_ERRORS},
        summary="Classify one or many images",
    )
    async def predict(self, request: Request) -> ASGIApp:
        """One result per image, in input order. One bad image refuses the whole request.

        The handler takes the bare request and answers with a ready ``ASGIResponse``: no
        dependency injection, no query parameters in the signature, no ``Response`` to convert.
        That machinery cost about a quarter of the throughput of one-small-image requests
        (bench/serve.py, MLP at c=64), so the query is parsed by ``parse_predict_query`` and
        documented by ``_PredictOperation``.
        """
        top_k, model = parse_predict_query(request.scope["query_string"])
        predictor: Predictor = request.app.state.predictor
        max_images = predictor.settings.max_images
        budget = predictor.body_budget
        received = 0

        async def read_images() -> list[RawImage]:
            nonlocal received
            body = await budget.read(request)
            received = len(body)
            content_type = request.headers.get("content-type")
            return parse_images(content_type, body, max_images=max_images)

        try:
            body = await predictor.predict(read_images, model=model, top_k=top_k)
        finally:  # the body stays referenced until the request is answered
            budget.release(received)
        return ASGIResponse(body=body, media_type=MediaType.JSON)


class InfoController(Controller):
    path = "/"
    tags = ["health"]

    @get("/health/live", summary="The process answers")
    async def live(self) -> HealthResponse:
        return HealthResponse(status="live")

    @get("/health/ready", summary="Every configured model is loaded (else 503)")
    async def ready(self, predictor: NamedDependency[Predictor]) -> Response[HealthResponse]:
        loaded = {n: s.current.version for n, s in predictor.slots.items() if s.current}
        waiting = [name for name in predictor.settings.model_names if name not in loaded]
        # Why a model is missing or behind production (unreadable registry, a pointer to a
        # missing or refused version), so that an operator sees the cause, not only a 503.
        problems = "; ".join(f"{n}: {s.problem}" for n, s in predictor.slots.items() if s.problem)
        if waiting:
            detail = f"waiting for a production version of: {', '.join(waiting)}"
            body = HealthResponse(status="not_ready", models=loaded,
                                  detail=f"{detail} ({problems})" if problems else detail)
            return Response(body, status_code=503, headers={"Retry-After": "2"})
        return Response(HealthResponse(status="ready", models=loaded, detail=problems or None))

    @get("/models", tags=["models"], summary="What this worker serves, with metadata")
    async def models(self, predictor: NamedDependency[Predictor]) -> ModelsResponse:
        infos = []
        for name, slot in predictor.slots.items():
            loaded = slot.current
            if loaded is None:
                continue
            meta = loaded.metadata
            infos.append(LoadedModelInfo(
                name=name, version=loaded.version, default=name == predictor.settings.default_model,
                architecture=meta["architecture"], class_labels=loaded.labels,
                input=InputSpecSchema(**loaded.spec.to_dict()), metrics=meta.get("metrics", {}),
                dataset=meta.get("dataset"), created_at=meta.get("created_at"),
                weights_sha256=loaded.sha256, device=str(loaded.device),
                precision=loaded.precision, loaded_at=loaded.loaded_at,
            ))
        waiting = [n for n, s in predictor.slots.items() if s.current is None]
        return ModelsResponse(models=infos, waiting_for=waiting)

    @get("/metrics", tags=["metrics"], summary="Prometheus metrics of all workers",
         media_type=MediaType.TEXT, include_in_schema=True)
    async def metrics(self) -> Response[bytes]:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

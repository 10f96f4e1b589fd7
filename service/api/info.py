"""Public read-only endpoints: health, the served models, metrics (``/predict`` is in
``service.api.predict``).

No torch here. Errors are domain exceptions mapped to HTTP in ``service.errors``.
"""

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency

from service import metrics
from service.inference.predictor import Predictor
from service.schemas import HealthResponse, InputSpecSchema, LoadedModelInfo, ModelsResponse


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
        # As a header, not media_type: Litestar would append a second "; charset=utf-8".
        return Response(body, headers={"content-type": content_type})

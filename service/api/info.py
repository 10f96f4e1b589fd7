"""Public read-only endpoints: health, the served models, their reports, metrics (``/predict``
is in ``service.api.predict``).

No torch here. Errors are domain exceptions mapped to HTTP in ``service.errors``.
"""

import asyncio
import json
import logging
from typing import Annotated

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, PathParameter
from pydantic import ValidationError

from artifacts.registry import REPORT_FILE, REPORT_PICTURES, ArtifactValidationError, read_verified
from service import metrics
from service.api.responses import error_responses
from service.errors import ArtifactCorruptError, ReportNotFoundError
from service.inference.loading import LoadedModel
from service.inference.predictor import Predictor
from service.schemas import (
    HealthResponse,
    InputSpecSchema,
    LoadedModelInfo,
    ModelReport,
    ModelsResponse,
)

log = logging.getLogger(__name__)

PICTURES = tuple(f"{picture}.png" for picture in REPORT_PICTURES)
_REPORT_ERRORS = error_responses({
    400: "malformed model name",
    404: "unknown model or picture, or a version published without a report",
    500: "a report file of the loaded version differs from what was published (tampered)",
    503: "the model is not loaded yet",
})
_IfNoneMatch = Annotated[str | None, HeaderParameter(
    name="If-None-Match", description="the ETag of a copy the client holds (answered 304)")]
# Versions are immutable but the loaded one changes with a hot swap: clients keep a copy and
# revalidate it (If-None-Match -> 304), the ETag being the file's published sha256.
_CACHE_CONTROL = "no-cache"


class InfoController(Controller):
    path = "/"

    @get("/health/live", tags=["health"], summary="The process answers")
    async def live(self) -> HealthResponse:
        return HealthResponse(status="live")

    @get("/health/ready", tags=["health"], summary="Every configured model is loaded (else 503)")
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
                golden_set=loaded.golden_set, other_loaded_versions=slot.retained.versions(),
                history=_history(meta),
            ))
        waiting = [n for n, s in predictor.slots.items() if s.current is None]
        return ModelsResponse(models=infos, waiting_for=waiting)

    @get("/models/{name:str}/report", tags=["models"], responses=_REPORT_ERRORS,
         summary="The evaluation report of the loaded version (test split)")
    async def report(self, name: FromPath[str], predictor: NamedDependency[Predictor],
                     if_none_match: _IfNoneMatch = None) -> Response[ModelReport]:
        """Per-class precision, recall and F1, the confusion matrix, calibration and the most
        confident mistakes, as published with the version this worker serves."""
        loaded = predictor.loaded(predictor.slot(name))
        data, etag = await _report_file(loaded, REPORT_FILE)
        if _unchanged(if_none_match, etag):
            return Response(None, status_code=304, headers=_cache_headers(etag))
        try:
            content = json.loads(data)
            body = ModelReport.model_validate({**content, "model": loaded.name,
                                               "version": loaded.version})
        except (ValueError, TypeError, ValidationError) as exc:
            raise ArtifactCorruptError(f"{REPORT_FILE} of {loaded.name} v{loaded.version} is "
                                       f"not a report: {type(exc).__name__}") from None
        return Response(body, headers=_cache_headers(etag))

    @get("/models/{name:str}/report/{picture:str}", tags=["models"], media_type="image/png",
         responses=_REPORT_ERRORS, summary="A picture of the loaded version's report")
    async def report_picture(
        self, name: FromPath[str], predictor: NamedDependency[Predictor],
        picture: Annotated[str, PathParameter(description=f"one of {', '.join(PICTURES)}")],
        if_none_match: _IfNoneMatch = None,
    ) -> Response[bytes]:
        """The confusion matrix, the reliability diagram, or a grid of the most confident
        mistakes (true / predicted labels), as PNG."""
        loaded = predictor.loaded(predictor.slot(name))
        if picture not in PICTURES:
            raise ReportNotFoundError(f"no report picture {picture!r}; pictures: "
                                      f"{', '.join(PICTURES)}")
        data, etag = await _report_file(loaded, picture)
        if _unchanged(if_none_match, etag):
            return Response(b"", status_code=304, headers=_cache_headers(etag))
        return Response(data, media_type="image/png", headers=_cache_headers(etag))

    @get("/metrics", tags=["metrics"], summary="Prometheus metrics of all workers",
         media_type=MediaType.TEXT, include_in_schema=True)
    async def metrics(self) -> Response[bytes]:
        body, content_type = metrics.render()
        # As a header, not media_type: Litestar would append a second "; charset=utf-8".
        return Response(body, headers={"content-type": content_type})


async def _report_file(loaded: LoadedModel, file_name: str) -> tuple[bytes, str]:
    """The bytes of a report file of ``loaded`` after the sha256 check (in a thread: a small
    file, but a file read on a network mount may stall the event loop), and its ETag."""
    try:
        data = await asyncio.to_thread(read_verified, loaded.path, loaded.metadata, file_name)
    except FileNotFoundError:
        raise ReportNotFoundError(
            f"{loaded.name} v{loaded.version} was published without {file_name} (a version "
            "published before reports existed, or one without this picture)") from None
    except (ArtifactValidationError, OSError) as exc:
        log.error("cannot serve %s of %s v%s: %s", file_name, loaded.name, loaded.version, exc)
        raise ArtifactCorruptError(
            f"{file_name} of {loaded.name} v{loaded.version} cannot be served: {exc}") from None
    return data, f'"{loaded.files[file_name]}"'


def _unchanged(if_none_match: str | None, etag: str) -> bool:
    """The client's copy is current: ``If-None-Match`` lists this ETag (or is ``*``)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _cache_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": _CACHE_CONTROL}


def _history(metadata: dict) -> list[dict[str, float]]:
    """The per-epoch records of ``metadata["history"]``, numbers only: a hand-edited file must
    not turn ``/models`` into a 500."""
    records = metadata.get("history")
    if not isinstance(records, list):
        return []
    return [{k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for record in records if isinstance(record, dict)]

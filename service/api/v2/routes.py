"""The routes of the Open Inference Protocol v2 under ``/v2``, with its error object.

``GET /v2`` (server metadata) and the server health checks are plain Litestar handlers.
Everything under ``/v2/models/`` is one raw ASGI route mounted there, which finds the model,
the version and the operation in the path itself: the inference route is the hot path (a raw
route skips Litestar's request and response objects, docs/performance.md), and Litestar cannot
route a raw handler whose path holds parameters. Its OpenAPI entries are written by hand
(``service.api.v2.openapi``). Every error of these routes is ``{"error": "<message>"}``
(``service.errors.exception_to_response``), with the status ``/predict`` would answer.
"""

import asyncio
import importlib.metadata
import logging

from litestar import Litestar, MediaType, Response, Router, asgi, get
from litestar.di import NamedDependency
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import Receive, Scope, Send

from artifacts.registry import RegistryError, list_versions
from service.api.v2.infer import infer
from service.api.v2.response import model_metadata
from service.errors import ModelNotReadyError, NotReadyError
from service.inference.predictor import ModelSlot, Predictor
from service.schemas import V2ErrorResponse, V2ServerMetadata

log = logging.getLogger(__name__)

V2_PATH = "/v2"
MODELS_PATH = f"{V2_PATH}/models"
# What the server metadata announces: the binary tensor data extension, on inputs and outputs.
EXTENSIONS = ["binary_tensor_data"]
SERVER_NAME = "imgclf"
_JSON = b"application/json"
_NOT_READY = {400: ResponseSpec(V2ErrorResponse, description="not ready (the protocol's false)")}


def _server_version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0+unknown"


@get("/", summary="Server metadata", operation_id="V2ServerMetadata")
async def server_metadata() -> V2ServerMetadata:
    """The server's name, version and the protocol extensions it supports."""
    return V2ServerMetadata(name=SERVER_NAME, version=_server_version(), extensions=EXTENSIONS)


@get("/health/live", summary="Server live", operation_id="V2ServerLive", media_type=MediaType.TEXT)
async def server_live() -> Response[bytes]:
    """200 while the process answers (a liveness probe)."""
    return Response(b"", media_type=MediaType.TEXT)


@get("/health/ready", summary="Server ready", operation_id="V2ServerReady", responses=_NOT_READY,
     media_type=MediaType.TEXT)
async def server_ready(predictor: NamedDependency[Predictor]) -> Response[bytes]:
    """200 once every served model is loaded, else 400 (a readiness probe)."""
    if not predictor.serving():
        waiting = [name for name, slot in predictor.slots.items() if slot.current is None]
        raise NotReadyError(f"not ready: waiting for a production version of {', '.join(waiting)}")
    return Response(b"", media_type=MediaType.TEXT)


# ----------------------------------------------------------------------------- /v2/models/...

# The operations under a model's path (after /versions/{version}, if any): its template's
# ending (a bounded label for the request metrics) and its method.
_OPERATIONS = {(): ("", "GET"), ("ready",): ("/ready", "GET"), ("infer",): ("/infer", "POST")}


@asgi("/models", is_mount=True, copy_scope=False)
async def models(scope: Scope, receive: Receive, send: Send) -> None:
    """``/v2/models/{name}[/versions/{version}]`` (metadata), ``.../ready``, ``.../infer``."""
    remaining = scope["path"]  # what follows the mount point, given a trailing slash by Litestar
    scope["path"] = MODELS_PATH + remaining.rstrip("/")  # the request's own path, for the logs
    parts = remaining.strip("/").split("/")
    name, version, rest = parts[0], None, tuple(parts[1:])
    template = MODELS_PATH + "/{name}"
    if len(parts) >= 3 and parts[1] == "versions":
        version, rest = parts[2], tuple(parts[3:])
        template += "/versions/{version}"
    operation = _OPERATIONS.get(rest)
    if not name or version == "" or operation is None:
        raise NotFoundException(f"no such path: {scope['path']} (see GET /schema for the v2 routes)")
    ending, method = operation
    scope["path_template"] = template + ending
    if scope["method"] != method:
        raise MethodNotAllowedException(f"{scope['method']} is not allowed here; use {method}",
                                        headers={"Allow": method})
    if ending == "/infer":
        await infer(scope, receive, send, model=name, version=version)
        return
    predictor: Predictor = Litestar.from_scope(scope).state.predictor
    slot = predictor.slot(name)
    if ending == "/ready":
        try:
            await predictor.version(slot, version)
        except ModelNotReadyError as exc:
            raise NotReadyError(exc.detail) from None
        await _answer(send, b"", b"text/plain; charset=utf-8")
        return
    loaded = await predictor.version(slot, version)
    metadata = model_metadata(loaded, await _versions(predictor, slot, loaded.version))
    await _answer(send, metadata.model_dump_json().encode(), _JSON)


async def _versions(predictor: Predictor, slot: ModelSlot, serving: str) -> list[str]:
    """The published versions of the slot's model (one may ask for any of them), read in a
    thread; the serving one alone when the registry cannot be read."""
    try:
        versions = await asyncio.to_thread(list_versions, predictor.settings.model_registry,
                                           slot.name)
    except (OSError, RegistryError) as exc:
        log.warning("cannot list the versions of %s: %s", slot.name, exc)
        versions = []
    return versions or [serving]


async def _answer(send: Send, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# Errors under /v2 are rendered as the protocol's error object by the app's exception handler
# (service.errors.exception_to_response), routing's 404s and 405s included.
v2_router = Router(V2_PATH, route_handlers=[server_metadata, server_live, server_ready, models], tags=["v2"])

"""``POST /v2/models/{name}[/versions/{version}]/infer``: the flow of one inference request.

The same steps, entry points and limits as ``/predict`` (``Predictor.predict``): admitted first
(model name, version, readiness, the queue), so that an overloaded worker refuses before
receiving the body; the body received within the worker's ``BodyBudget`` (``MAX_BODY_BYTES``,
``MAX_INFLIGHT_BYTES``); encoded images queued through ``Predictor.classify`` and pixel tensors
through ``Predictor.classify_pixels``, into the same batches as ``/predict``'s images. No torch.
"""

from litestar import Litestar
from litestar.types import Receive, Scope, Send

from service.api.body_budget import BodyBudget
from service.api.v2.request import HEADER_LENGTH, InferHead, parse_infer_request
from service.api.v2.response import infer_response
from service.inference.predictor import Predictor

_HEADER_LENGTH = HEADER_LENGTH.lower().encode()


async def infer(scope: Scope, receive: Receive, send: Send, *, model: str,
                version: str | None) -> None:
    """Answer one inference request; errors are raised as domain exceptions (the ``/v2``
    exception handler renders them as the protocol's error object)."""
    head = InferHead.from_scope(scope)
    state = Litestar.from_scope(scope).state
    predictor: Predictor = state.predictor
    budget: BodyBudget = state.body_budget
    # top_k is in the body, unknown yet: checked against the classes once it is read.
    slot, loaded = await predictor.admit(model, version, 1)
    body = b""
    try:
        # Inside incoming(), a batch being formed knows this request is on its way.
        with slot.batcher.incoming():
            body = await budget.read(receive, head.announced)
        request = parse_infer_request(body, head.header_length, spec=loaded.spec,
                                      classes=len(loaded.labels),
                                      max_images=predictor.settings.max_images)
        if request.files is not None:
            results = await predictor.classify(slot, loaded, request.files, request.top_k)
        else:
            results = await predictor.classify_pixels(slot, loaded, request.pixels or [], request.top_k)
    finally:  # the body stays counted until the request is answered
        budget.release(len(body))
    header, binary = infer_response(loaded, request, results)
    headers = [(b"content-length", str(len(header) + len(binary)).encode())]
    if binary:
        headers += [(b"content-type", b"application/octet-stream"),
                    (_HEADER_LENGTH, str(len(header)).encode())]
    else:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": header + binary if binary else header})

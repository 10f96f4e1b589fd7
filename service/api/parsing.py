"""Request body -> the image files it carries, for the three input formats of ``POST /predict``
(and ``POST /feedback``, which also reads a few named text fields: :func:`parse_upload`).

- ``multipart/form-data``: every file part is an image, in order (``curl -F file=@a.png``);
- ``image/*``: the body is one image file;
- ``application/json``: ``{"images": ["<base64>", ...]}``.

Torch-free: this only finds the bytes; :mod:`service.inference.imaging` decodes them.
"""

import binascii
import itertools
import re
from base64 import b64decode
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qsl

import msgspec
import multipart
from litestar.types import Receive, Scope
from pydantic import ValidationError

from service.api.body_budget import BodyBudget
from service.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from service.inference.imaging import RawImage
from service.schemas import PredictJsonRequest

ACCEPTED_MEDIA_TYPES = ("multipart/form-data", "image/*", "application/json")
# Vector formats need a renderer (a large attack surface): refused by type, and by content in
# service.inference.imaging when they come under another name.
VECTOR_MEDIA_TYPES = ("image/svg+xml", "image/svg")
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)
_URL_SAFE = str.maketrans("-_", "+/")
MAX_TOP_K = 1000
_TOP_K = re.compile(r"^[0-9]{1,4}$")
MAX_FIELD_BYTES = 1024  # a text field of the body (a label, an id), not a file


@dataclass
class PredictRequest:
    """A ``POST /predict`` whose head is parsed (query, ``Content-Type``, ``Content-Length``)
    and whose body is still to be received: the predictor admits it first, then reads it with
    :meth:`read_images`, so that an overloaded worker refuses before receiving any image."""

    top_k: int
    model: str | None
    version: str | None
    content_type: str | None
    announced_bytes: int | None
    receive: Receive
    budget: BodyBudget  # the worker's, shared by all its requests
    received_bytes: int = 0  # held in the budget until release()

    @classmethod
    def from_asgi(cls, scope: Scope, receive: Receive, budget: BodyBudget) -> "PredictRequest":
        """Parse the query and the body headers; 400 for a bad ``top_k``."""
        top_k, model, version = parse_predict_query(scope["query_string"])
        content_type, announced = None, None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():  # uvicorn refused bad ones
                announced = int(value)
        return cls(top_k, model, version, content_type, announced, receive, budget)

    async def read_images(self, *, max_images: int) -> list[RawImage]:
        """Receive the body within the worker's budget and split it into image files; the
        caller calls :meth:`release` once the request is answered."""
        body = await self.budget.read(self.receive, self.announced_bytes)
        self.received_bytes = len(body)
        return parse_images(self.content_type, body, max_images=max_images)

    def release(self) -> None:
        """The body is no longer held: its bytes leave the worker's budget."""
        self.budget.release(self.received_bytes)
        self.received_bytes = 0


class PredictQuery(NamedTuple):
    top_k: int = 1
    model: str | None = None
    version: str | None = None


def parse_predict_query(query_string: bytes) -> PredictQuery:
    """``top_k`` (1 when absent), ``model`` and ``version`` (None when absent) of a
    ``/predict`` query; 400 for a ``top_k`` that is not one, or a parameter given twice. Other
    parameters are ignored. The model name and version are checked where they are used
    (``Predictor.admit``)."""
    if not query_string:  # most requests: no parsing (parse_qsl was ~1% of the loop's CPU)
        return PredictQuery()
    values: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in PredictQuery._fields:
            if name in values:
                raise BadRequestError(f"{name} is given more than once")
            values[name] = value
    text = values.get("top_k", "1")
    if not _TOP_K.match(text) or not 1 <= int(text) <= MAX_TOP_K:
        raise BadRequestError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {text!r}")
    return PredictQuery(int(text), values.get("model"), values.get("version"))


@dataclass
class Upload:
    """A request body split into its image files, in order, and the text fields the route
    asked for (``name -> value``, only those the body gave)."""

    images: list[RawImage]
    fields: dict[str, str] = field(default_factory=dict)


def parse_images(content_type: str | None, body: bytes, *, max_images: int) -> list[RawImage]:
    """Split a ``/predict`` body into image files; raise a 4xx domain error for a bad request
    (a text field in a multipart body is one: 400)."""
    return parse_upload(content_type, body, max_images=max_images).images


def parse_upload(content_type: str | None, body: bytes, *, max_images: int,
                 fields: tuple[str, ...] = (),
                 json_model: type[PredictJsonRequest] = PredictJsonRequest) -> Upload:
    """Split a request body into image files and the text ``fields`` it may carry: multipart
    text parts of those names (each once, at most ``MAX_FIELD_BYTES``), or those keys of the
    JSON object, validated by ``json_model``. A raw image body carries no field."""
    media_type, options = multipart.parse_options_header(content_type or "")
    media_type = media_type.lower()
    values: dict[str, str] = {}
    if media_type == "multipart/form-data":
        images = _from_multipart(body, options.get("boundary"), max_images=max_images,
                                 fields=fields, values=values)
    elif media_type.startswith("image/"):
        if media_type in VECTOR_MEDIA_TYPES:
            raise UnsupportedMediaTypeError(
                f"SVG ({media_type}) is not supported: send a raster image (PNG, JPEG, ...)"
            )
        images = [RawImage(filename=None, data=body)]
    elif media_type == "application/json":
        images = _from_json(body, max_images=max_images, fields=fields, values=values,
                            json_model=json_model)
    else:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media_type or '(none)'!r} is not supported; "
            f"send one of: {', '.join(ACCEPTED_MEDIA_TYPES)}"
        )
    if not images or (len(images) == 1 and not images[0].data):
        raise BadRequestError("the request carries no image")
    _check_count(len(images), max_images)
    return Upload(images, values)


def _check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise PayloadTooLargeError(
            f"{count} images in one request; at most MAX_IMAGES={max_images} are accepted"
        )


def _from_multipart(body: bytes, boundary: str | None, *, max_images: int,
                    fields: tuple[str, ...] = (), values: dict[str, str] | None = None
                    ) -> list[RawImage]:
    """The file parts, in order; text parts named in ``fields`` go to ``values``, any other
    text part is a 400."""
    if not boundary:
        raise BadRequestError("multipart/form-data without a boundary parameter")
    images: list[RawImage] = []
    segment: multipart.MultipartSegment | None = None
    chunks: list[bytes] = []
    # One more segment than allowed so that "too many images" is told apart from bad syntax.
    parser = multipart.PushMultipartParser(boundary.encode(),
                                           max_segment_count=max_images + 1 + len(fields))
    try:
        with parser:
            for event in itertools.chain(parser.parse(body), parser.parse(b"")):
                if isinstance(event, multipart.MultipartSegment):
                    segment, chunks = event, []
                elif event:
                    chunks.append(bytes(event))
                elif segment is not None:  # None marks the end of a segment
                    if segment.filename is None:
                        _text_field(segment.name, b"".join(chunks), fields, values)
                    else:
                        images.append(RawImage(filename=segment.filename, data=b"".join(chunks)))
                    segment = None
    except multipart.ParserLimitReached as exc:
        if len(images) > max_images:  # the segment count, else a header size or count limit
            raise PayloadTooLargeError(f"more than {max_images} images in one request; at most "
                                       f"MAX_IMAGES={max_images} are accepted") from None
        raise BadRequestError(f"malformed multipart/form-data body: {exc}") from None
    except multipart.MultipartError as exc:
        raise BadRequestError(f"malformed multipart/form-data body: {exc}") from None
    return images


def _text_field(name: str, data: bytes, fields: tuple[str, ...],
                values: dict[str, str] | None) -> None:
    """Keep the multipart text part ``name`` when it is one of ``fields``; else a 400."""
    if name not in fields or values is None:
        accepted = f" (text fields accepted here: {', '.join(fields)})" if fields else ""
        raise BadRequestError(
            f"multipart field {name!r} is not a file; send each image as a file part "
            f"(curl -F 'file=@image.png'){accepted}"
        )
    if name in values:
        raise BadRequestError(f"multipart field {name!r} is given more than once")
    if len(data) > MAX_FIELD_BYTES:
        raise BadRequestError(f"multipart field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
    try:
        values[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(f"multipart field {name!r} is not UTF-8 text") from None


def _from_json(body: bytes, *, max_images: int, fields: tuple[str, ...] = (),
               values: dict[str, str] | None = None,
               json_model: type[PredictJsonRequest] = PredictJsonRequest) -> list[RawImage]:
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's guard against deeply nested arrays/objects
        raise BadRequestError("body is not valid JSON: nested too deeply") from None
    if isinstance(payload, dict) and isinstance(payload.get("images"), list):
        _check_count(len(payload["images"]), max_images)  # before validating a huge list
    try:
        request = json_model.model_validate(payload)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        extra = "".join(f', "{name}": "..."' for name in fields)
        raise BadRequestError(
            f'expected {{"images": ["<base64>", ...]{extra}}}: {reasons}'
        ) from None
    if values is not None:
        values.update({name: getattr(request, name) for name in fields
                       if getattr(request, name, None) is not None})
    images = []
    for index, text in enumerate(request.images):
        text = _DATA_URL.sub("", text.strip(), count=1)
        try:
            data = b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            data = _lenient_b64decode(text, index)
        images.append(RawImage(filename=f"images[{index}]", data=data))
    return images


def _lenient_b64decode(text: str, index: int) -> bytes:
    """The slow path for what common encoders produce besides strict base64: line breaks
    (``base64 file.png`` wraps at 76 columns), the URL-safe alphabet, missing padding."""
    compact = "".join(text.split()).translate(_URL_SAFE).rstrip("=")
    if len(compact) % 4 == 1:  # no padding can fix this length
        raise BadRequestError(f"images[{index}] is not valid base64 (bad length)")
    try:
        return b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(
            f"images[{index}] is not valid base64 (use the standard or URL-safe alphabet)"
        ) from None

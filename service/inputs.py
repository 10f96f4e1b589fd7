"""Request body -> the image files it carries, for the three input formats of ``POST /predict``.

- ``multipart/form-data``: every file part is an image, in order (``curl -F file=@a.png``);
- ``image/*``: the body is one image file;
- ``application/json``: ``{"images": ["<base64>", ...]}``.

Torch-free: this only finds the bytes; :mod:`service.imaging` decodes them.
"""

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass

import msgspec
import multipart
from pydantic import ValidationError

from service.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.schemas import PredictJsonRequest

ACCEPTED_MEDIA_TYPES = ("multipart/form-data", "image/*", "application/json")
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class RawImage:
    """One uploaded file, before decoding."""

    filename: str | None
    data: bytes


def parse_images(content_type: str | None, body: bytes, *, max_images: int) -> list[RawImage]:
    """Split a request body into image files; raise a 4xx domain error for a bad request."""
    media_type, options = multipart.parse_options_header(content_type or "")
    media_type = media_type.lower()
    if media_type == "multipart/form-data":
        images = _from_multipart(body, options.get("boundary"), max_images=max_images)
    elif media_type.startswith("image/"):
        images = [RawImage(filename=None, data=body)]
    elif media_type == "application/json":
        images = _from_json(body, max_images=max_images)
    else:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media_type or '(none)'!r} is not supported; "
            f"send one of: {', '.join(ACCEPTED_MEDIA_TYPES)}"
        )
    if not images or (len(images) == 1 and not images[0].data):
        raise BadRequestError("the request carries no image")
    _check_count(len(images), max_images)
    return images


def _check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise PayloadTooLargeError(
            f"{count} images in one request; at most MAX_IMAGES={max_images} are accepted"
        )


def _from_multipart(body: bytes, boundary: str | None, *, max_images: int) -> list[RawImage]:
    if not boundary:
        raise BadRequestError("multipart/form-data without a boundary parameter")
    images: list[RawImage] = []
    segment: multipart.MultipartSegment | None = None
    chunks: list[bytes] = []
    # One more segment than allowed so that "too many images" is told apart from bad syntax.
    parser = multipart.PushMultipartParser(boundary.encode(), max_segment_count=max_images + 1)
    try:
        with parser:
            for event in [*parser.parse(body), *parser.parse(b"")]:
                if isinstance(event, multipart.MultipartSegment):
                    segment, chunks = event, []
                elif event:
                    chunks.append(bytes(event))
                elif segment is not None:  # None marks the end of a segment
                    if segment.filename is None:
                        raise BadRequestError(
                            f"multipart field {segment.name!r} is not a file; send each image "
                            "as a file part (curl -F 'file=@image.png')"
                        )
                    images.append(RawImage(filename=segment.filename, data=b"".join(chunks)))
                    segment = None
    except multipart.ParserLimitReached:
        _check_count(max_images + 1, max_images)
    except multipart.MultipartError as exc:
        raise BadRequestError(f"malformed multipart/form-data body: {exc}") from None
    return images


def _from_json(body: bytes, *, max_images: int) -> list[RawImage]:
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    if isinstance(payload, dict) and isinstance(payload.get("images"), list):
        _check_count(len(payload["images"]), max_images)  # before validating a huge list
    try:
        request = PredictJsonRequest.model_validate(payload)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        raise BadRequestError(
            f'expected {{"images": ["<base64>", ...]}}: {reasons}'
        ) from None
    images = []
    for index, text in enumerate(request.images):
        text = _DATA_URL.sub("", text.strip(), count=1)
        try:
            data = b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError(f"images[{index}] is not valid base64") from None
        images.append(RawImage(filename=f"images[{index}]", data=data))
    return images

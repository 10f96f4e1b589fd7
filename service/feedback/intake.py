"""What ``POST /feedback`` accepts into the store: one label, given once, that is a class of the
served model version, and images that decode as training will decode them.

A store of labels must never take garbage: every image is decoded in full, through the model's
own preprocessing and the service's limits (:mod:`service.inference.imaging`: format allow-list,
pixel limit before decoding), and one bad image refuses the request. The bytes stored are the
original ones; the extension comes from the format that decoded them, never the file name.
"""

import hashlib
import re
from collections.abc import Sequence

from artifacts.feedback import EXTENSIONS
from artifacts.preprocess import InputSpec
from service.errors import BadRequestError, ImageProblem, InvalidFeedbackImageError, UnknownLabelError
from service.feedback.store import CheckedImage
from service.inference.imaging import ImageDecodeError, RawImage, image_pixels, open_image

# A multi-picture JPEG opens as PIL's "MPO": still a JPEG file to every reader.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # what the service issues as X-Request-ID


def one_value(name: str, query: str | None, body: str | None) -> str | None:
    """``name`` from the query or the body (form field / JSON key), not both: two sources are
    a 400 even when they agree, so that no client relies on which one wins."""
    if query is not None and body is not None:
        raise BadRequestError(f"{name} is given both in the query and in the body; give it once")
    return query if query is not None else body


def check_label(label: str | None, labels: Sequence[str], *, model: str, version: str) -> str:
    """``label`` when it is one of the model version's ``labels`` (400 when missing, 422 with
    the valid ones otherwise)."""
    if label is None:
        raise BadRequestError("no label: give the true class of the images as the 'label' form "
                              "field, the 'label' query parameter or the JSON 'label' key")
    if label not in labels:
        shown = label if len(label) <= 80 else label[:80] + "..."
        raise UnknownLabelError(
            f"label {shown!r} is not a class of model {model!r} version {version}; valid labels: "
            f"{', '.join(labels)}", valid_labels=list(labels))
    return label


def check_request_id(request_id: str | None) -> str | None:
    """The id of the prediction being corrected, in the shape the service issues (it ends up
    in the store's log: no control characters, bounded)."""
    if request_id is not None and not _REQUEST_ID.match(request_id):
        raise BadRequestError("request_id must be 1 to 64 characters of A-Z a-z 0-9 . _ - "
                              "(the X-Request-ID of the /predict answer it corrects)")
    return request_id


def check_images(files: Sequence[RawImage], *, spec: InputSpec, max_pixels: int) -> list[CheckedImage]:
    """Decode every file in full; all of them usable, or :class:`InvalidFeedbackImageError`
    naming each bad one (413 over ``max_pixels``, 415 SVG, 422 anything undecodable).
    Blocking (decoding): call it in a thread."""
    checked: list[CheckedImage] = []
    problems: list[ImageProblem] = []
    for index, file in enumerate(files):
        try:
            checked.append(_check(file.data, spec=spec, max_pixels=max_pixels))
        except ImageDecodeError as exc:
            problems.append(ImageProblem(index, file.filename, exc.status, exc.detail))
    if problems:
        raise InvalidFeedbackImageError(problems)
    return checked


def _check(data: bytes, *, spec: InputSpec, max_pixels: int) -> CheckedImage:
    image = open_image(data, max_pixels=max_pixels)
    image_format = _FORMAT_ALIASES.get(image.format or "", image.format or "")
    extension = EXTENSIONS.get(image_format)
    image_pixels(image, spec=spec)  # decodes it all (and closes it), or ImageDecodeError
    if extension is None:  # the allow-list and EXTENSIONS name the same formats
        raise ImageDecodeError(415, f"{image.format} images cannot be stored")
    return CheckedImage(data=data, sha256=hashlib.sha256(data).hexdigest(), extension=extension)

"""Image bytes -> the model's uint8 input, with the limits an internet-facing decoder needs.

The conversion itself is ``artifacts.preprocess.image_to_pixels`` after ``ImageOps.exif_transpose``:
exactly what the training data loader does with an image file, so served predictions match
training evaluation. This module only adds what the network requires: a format allow-list
(no exotic parsers exposed), a pixel limit checked from the header before any pixel is decoded
(decompression bombs), and errors that say what was wrong.
"""

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from artifacts.preprocess import InputSpec, image_to_pixels, pixels_to_uint8
from service.errors import ImageProblem, InvalidImageError

# Formats a client can reasonably send; everything else is refused before a parser runs.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")


@dataclass(frozen=True)
class RawImage:
    """One uploaded file, before decoding."""

    filename: str | None
    data: bytes


class ImageDecodeError(ValueError):
    """One image that cannot be used; ``status`` is the HTTP status it deserves."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def install_pixel_limit(max_pixels: int) -> None:
    """Make PIL itself refuse images above ``max_pixels`` (its bomb guard), as an error."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def decode_image(data: bytes, *, spec: InputSpec, max_pixels: int) -> torch.Tensor:
    """Decode one image file into uint8 ``(C, H, W)`` as ``spec`` describes (see
    :func:`decode_pixels`)."""
    return pixels_to_uint8([decode_pixels(data, spec=spec, max_pixels=max_pixels)], spec=spec)[0]


@dataclass(frozen=True)
class Opened:
    """A request's images after :func:`open_images`: per file, the image with
    its header read, or the problem that refuses it (reported with the others once decoded)."""

    images: list[Image.Image | ImageProblem]
    filenames: list[str | None]

    @property
    def pixels(self) -> int:
        return sum(image.width * image.height for image in self.images
                   if not isinstance(image, ImageProblem))


def open_images(files: list[RawImage], *, max_pixels: int) -> Opened:
    """Read every file's header (:func:`open_image`): cheap, and it tells how much decoding a
    request is before deciding where to decode it."""
    images: list[Image.Image | ImageProblem] = []
    for index, file in enumerate(files):
        try:
            images.append(open_image(file.data, max_pixels=max_pixels))
        except ImageDecodeError as exc:
            images.append(ImageProblem(index, file.filename, exc.status, exc.detail))
    return Opened(images, [file.filename for file in files])


def decode_opened(opened: Opened, *, spec: InputSpec) -> list[bytes]:
    """Opened images -> pixels (:func:`image_pixels`); every bad image is reported, then all
    refused (:class:`~service.errors.InvalidImageError`)."""
    pixels: list[bytes] = []
    problems: list[ImageProblem] = []
    for index, image in enumerate(opened.images):
        if isinstance(image, ImageProblem):
            problems.append(image)
            continue
        try:
            pixels.append(image_pixels(image, spec=spec))
        except ImageDecodeError as exc:
            problems.append(ImageProblem(index, opened.filenames[index], exc.status, exc.detail))
    if problems:
        raise InvalidImageError(problems)
    return pixels


def decode_pixels(data: bytes, *, spec: InputSpec, max_pixels: int) -> bytes:
    """Decode one image file into its pixels as ``spec`` describes (``image_to_pixels``): what
    the service does per image; ``pixels_to_uint8`` turns a batch of them into a tensor.

    Raises :class:`ImageDecodeError` with 413 for too many pixels and 422 for anything that is
    not a decodable image in an allowed format.
    """
    return image_pixels(open_image(data, max_pixels=max_pixels), spec=spec)


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """The first half of :func:`decode_pixels`: read the header only (nothing is decoded yet),
    so that the caller knows ``image.size`` (how much work decoding will be) and a file over
    ``max_pixels`` or in a refused format fails before any pixel is decoded."""
    if not data:
        raise ImageDecodeError(422, "empty file")
    with _decode_errors(data, max_pixels):
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            image.close()
            raise ImageDecodeError(
                413, f"{width}x{height} = {width * height} pixels exceeds MAX_PIXELS={max_pixels}")
        return image


def image_pixels(image: Image.Image, *, spec: InputSpec) -> bytes:
    """The second half of :func:`decode_pixels`: decode an :func:`open_image` result (and
    close it)."""
    with image, _decode_errors(None, Image.MAX_IMAGE_PIXELS):
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image_to_pixels(image, spec=spec)


@contextlib.contextmanager
def _decode_errors(data: bytes | None, max_pixels: int | None) -> Iterator[None]:
    """PIL's ways of failing on a bad file, as :class:`ImageDecodeError` (413 or 422)."""
    try:
        yield
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL's own text names its limit, which is not ours (it errors at twice its limit).
        raise ImageDecodeError(413, f"image has more than MAX_PIXELS={max_pixels} pixels "
                                    "(a frame or layer larger than its header said)") from None
    except UnidentifiedImageError:
        if data is not None and _looks_like_svg(data):
            raise ImageDecodeError(
                415, "SVG is not supported: send a raster image (PNG, JPEG, ...)"
            ) from None
        raise ImageDecodeError(
            422, f"not a supported image file (accepted: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data surfaces from PIL's plugins as any of these.
        raise ImageDecodeError(422, f"corrupt or truncated image: {exc}") from None
    except MemoryError:
        raise ImageDecodeError(413, "image too large to decode") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes reach parser corners (struct.error,
        # IndexError, KeyError, ZeroDivisionError ...): the file is bad, the worker is fine.
        raise ImageDecodeError(
            422, f"corrupt image ({type(exc).__name__} while decoding)"
        ) from None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in head


def input_mismatches(opened: Opened, spec: InputSpec) -> tuple[int, int]:
    """How many of the opened images will be resized, and how many converted to the model's
    colour mode (``L`` or ``RGB``) by :func:`image_pixels`: read from the headers, nothing
    decoded (the drift signals count them, ``service.inference.drift``)."""
    size = mode = 0
    expected_size, expected_mode = (spec.width, spec.height), "L" if spec.channels == 1 else "RGB"
    for image in opened.images:
        if not isinstance(image, ImageProblem):
            size += image.size != expected_size
            mode += image.mode != expected_mode
    return size, mode

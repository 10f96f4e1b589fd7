"""Input tensors of a v2 inference request -> what the predictor classifies.

- ``images``, ``BYTES [N]``: encoded image files. As binary data, each element is a 4-byte
  little-endian length and its bytes (the binary tensor data extension); in JSON, each element
  is the file's base64 text (JSON strings cannot carry raw bytes).
- ``pixels``, ``UINT8`` or ``FP32 [N, C, H, W]``: images already at the model's input size and
  colour mode, before normalisation (the service applies the artifact's mean and std). ``FP32``
  values are ToTensor's scale, [0, 1]; they are rounded to the 8-bit value they stand for, so
  that pixels take the batcher's one uint8 path, as decoded images do, and a value off that
  grid by less than 1/510 gives the same answer as the uint8 it rounds to.

Every check happens before anything is allocated from the client's numbers: a shape is compared
with the model's input and ``MAX_IMAGES`` dimension by dimension, never multiplied out first.
Torch-free: numpy only reorders and converts the pixels.
"""

import binascii
from base64 import b64decode
from math import prod
from typing import Any

import numpy as np

from artifacts.preprocess import InputSpec
from service.errors import BadRequestError, PayloadTooLargeError
from service.inference.imaging import RawImage
from service.schemas import V2RequestInput

IMAGES, PIXELS = "images", "pixels"
PIXEL_DATATYPES = ("UINT8", "FP32")
# The protocol's tensor data types: a client sending one of the others gets told what we take.
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES")
_UINT64_MAX = 2 ** 64 - 1
_NUMBER = (int, float)


def images(tensor: V2RequestInput, binary: bytes | None, *, max_images: int) -> list[RawImage]:
    """The encoded image files of an ``images`` tensor, in order."""
    if tensor.datatype != "BYTES":
        raise BadRequestError(f"input {IMAGES!r} must be BYTES (encoded image files), got "
                              f"{_datatype(tensor.datatype)}")
    count = _batch(tensor.shape, (), IMAGES, max_images)
    if binary is not None:
        files = _bytes_elements(binary, count)
    else:
        flat = _flat(tensor.data, tensor.shape, IMAGES)
        if not all(type(item) is str for item in flat):
            raise BadRequestError(f"input {IMAGES!r}: BYTES elements in JSON must be strings, "
                                  "the base64 text of each image file")
        files = [_base64(text, index) for index, text in enumerate(flat)]
    return [RawImage(f"{IMAGES}[{index}]", data) for index, data in enumerate(files)]


def pixels(tensor: V2RequestInput, binary: bytes | None, *, spec: InputSpec,
           max_images: int) -> list[bytes]:
    """The pixels of a ``pixels`` tensor, one ``bytes`` of ``H*W*C`` uint8 per image: the layout
    of ``artifacts.preprocess.image_to_pixels`` (channels interleaved), which the batcher takes."""
    datatype = tensor.datatype
    if datatype not in PIXEL_DATATYPES:
        raise BadRequestError(f"input {PIXELS!r} must be UINT8 (0-255) or FP32 (0-1), got "
                              f"{_datatype(datatype)}")
    inner = (spec.channels, spec.height, spec.width)
    count = _batch(tensor.shape, inner, PIXELS, max_images)
    elements = count * prod(inner)  # every factor checked against small bounds first
    if binary is not None:
        width = 1 if datatype == "UINT8" else 4
        if len(binary) != elements * width:
            raise BadRequestError(
                f"input {PIXELS!r}: {len(binary)} bytes of binary data, but shape "
                f"{tensor.shape} of {datatype} takes {elements * width}")
        values = np.frombuffer(binary, dtype=np.uint8 if width == 1 else "<f4")
    else:
        values = _json_pixels(_flat(tensor.data, tensor.shape, PIXELS), datatype)
    if datatype == "FP32":
        values = _fp32_to_uint8(values)
    # (N, C, H, W) -> per image (H, W, C): the copy tobytes() makes is the transposition.
    batch = values.reshape(count, *inner).transpose(0, 2, 3, 1)
    return [image.tobytes() for image in batch]


def _batch(shape: list[int], inner: tuple[int, ...], name: str, max_images: int) -> int:
    """N of a shape that must be ``[N, *inner]``: 400 for another shape, 413 past MAX_IMAGES."""
    if shape and (min(shape) < 0 or max(shape) > _UINT64_MAX):
        raise BadRequestError(f"input {name!r}: shape {_short(shape)} has a dimension that is no "
                              "unsigned 64-bit integer")
    if len(shape) != 1 + len(inner) or tuple(shape[1:]) != inner:
        expected = "[N" + "".join(f", {dim}" for dim in inner) + "]"
        raise BadRequestError(f"input {name!r} must have shape {expected} (the model's input), "
                              f"got {_short(shape)}")
    count = shape[0]
    if count == 0:
        raise BadRequestError(f"input {name!r} holds no image (shape {_short(shape)})")
    if count > max_images:
        raise PayloadTooLargeError(f"{count} images in one request; at most "
                                   f"MAX_IMAGES={max_images} are accepted")
    return count


def _flat(data: list[Any] | None, shape: list[int], name: str) -> list[Any]:
    """JSON tensor data, flat in row-major order: given flat, or nested exactly as ``shape``."""
    if data is None:
        raise BadRequestError(f"input {name!r} has neither data nor parameters.binary_data_size")
    total = prod(shape)  # small: _batch bounded every dimension
    if not any(type(item) is list for item in data):
        if len(data) != total:
            raise BadRequestError(f"input {name!r}: {len(data)} elements of data, but shape "
                                  f"{shape} holds {total}")
        return data
    flat: list[Any] = []

    def walk(node: list[Any], depth: int) -> None:
        if len(node) != shape[depth]:
            raise BadRequestError(f"input {name!r}: data is nested unlike shape {shape} (a list of "
                                  f"{len(node)} where dimension {depth} is {shape[depth]})")
        if depth == len(shape) - 1:
            if any(type(item) is list for item in node):
                raise BadRequestError(f"input {name!r}: data is nested deeper than shape {shape}")
            flat.extend(node)
            return
        for child in node:
            if type(child) is not list:
                raise BadRequestError(f"input {name!r}: data is ragged: a value where shape "
                                      f"{shape} needs a list at dimension {depth + 1}")
            walk(child, depth + 1)

    walk(data, 0)
    return flat


def _json_pixels(flat: list[Any], datatype: str) -> np.ndarray:
    if datatype == "UINT8":
        if not all(type(value) is int for value in flat):
            raise BadRequestError(f"input {PIXELS!r}: UINT8 data must be integers from 0 to 255")
        try:
            return np.frombuffer(bytes(flat), dtype=np.uint8)
        except ValueError:
            raise BadRequestError(f"input {PIXELS!r}: UINT8 data must be integers from 0 to "
                                  "255") from None
    if not all(type(value) in _NUMBER for value in flat):
        raise BadRequestError(f"input {PIXELS!r}: FP32 data must be numbers from 0 to 1")
    try:
        return np.array(flat, dtype=np.float32)
    except OverflowError:  # an integer past any float: out of range all the same
        raise BadRequestError(f"input {PIXELS!r}: FP32 pixels must be values from 0 to 1") from None


def _fp32_to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> the nearest of 0..255; anything else (NaN, inf, out of range) is a 400."""
    inside = (values >= 0.0) & (values <= 1.0)  # False for NaN too
    if not inside.all():
        bad = values[~inside][0]
        raise BadRequestError(f"input {PIXELS!r}: FP32 pixels must be finite values from 0 to 1 "
                              f"(ToTensor's scale, before normalisation), got {float(bad)!r}")
    return np.rint(values * np.float32(255.0)).astype(np.uint8)


def _bytes_elements(binary: bytes, count: int) -> list[bytes]:
    """``count`` BYTES elements, each a 4-byte little-endian length and its bytes, filling
    ``binary`` exactly."""
    elements: list[bytes] = []
    offset, end = 0, len(binary)
    while offset < end and len(elements) < count:
        if offset + 4 > end:
            raise BadRequestError(f"input {IMAGES!r}: binary data ends inside the length of "
                                  f"element {len(elements)}")
        size = int.from_bytes(binary[offset:offset + 4], "little")
        offset += 4
        if size > end - offset:
            raise BadRequestError(f"input {IMAGES!r}: element {len(elements)} claims {size} bytes, "
                                  f"only {end - offset} follow")
        elements.append(binary[offset:offset + size])
        offset += size
    if len(elements) != count or offset != end:
        raise BadRequestError(
            f"input {IMAGES!r}: shape [{count}] but the binary data holds "
            f"{len(elements)} element(s)" + (f" and {end - offset} bytes more" if offset != end else ""))
    return elements


def _base64(text: str, index: int) -> bytes:
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"input {IMAGES!r}: element {index} is not base64 (BYTES elements in "
                              "JSON are the base64 text of an image file)") from None


def _datatype(datatype: str) -> str:
    if datatype in DATATYPES:
        return datatype
    return f"{datatype[:32]!r}, which is no tensor data type ({', '.join(DATATYPES)})"


def _short(shape: list[int]) -> str:
    """A shape for a message: a client's shape may be long."""
    text = str(shape)
    return text if len(text) <= 80 else text[:77] + "...]"

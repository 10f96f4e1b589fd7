"""A v2 inference request -> the one input to classify, the outputs to answer and ``top_k``.

The head is read before the body (``Inference-Header-Content-Length``, ``Content-Length``,
``Content-Encoding``), so that a malformed one is refused before anything is received. The body
is the JSON inference request, then, with the binary tensor data extension, the bytes of the
inputs that announce ``binary_data_size``, in input order. Everything a client states is checked
against everything else it states: the header length against the body, each
``binary_data_size`` against the bytes that follow the JSON, the shape against the data and the
model's input (``service.api.v2.tensors``). Parameters the protocol or this server does not
define are refused (400), listing the accepted ones, as the rest of the service does with
options.
"""

from dataclasses import dataclass
from typing import NamedTuple

import msgspec
from litestar.types import Scope

from artifacts.preprocess import InputSpec
from service.api.v2 import tensors
from service.errors import BadRequestError, UnsupportedMediaTypeError
from service.inference.imaging import RawImage
from service.schemas import V2InferenceRequest, V2Parameter, V2RequestInput

PROBABILITIES, LABEL = "probabilities", "label"
OUTPUTS = (PROBABILITIES, LABEL)
INPUTS = (tensors.IMAGES, tensors.PIXELS)
REQUEST_PARAMETERS = frozenset(("top_k", "binary_data_output"))
INPUT_PARAMETERS = frozenset(("binary_data_size",))
OUTPUT_PARAMETERS = frozenset(("binary_data",))
HEADER_LENGTH = "Inference-Header-Content-Length"
_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
_MAX_ERRORS = 3  # unknown parameters named in one message
_DECODER = msgspec.json.Decoder(V2InferenceRequest)


@dataclass(slots=True)
class InferHead:
    """What the head of a ``POST .../infer`` says about its body."""

    announced: int | None  # Content-Length
    header_length: int | None  # Inference-Header-Content-Length: the JSON's bytes

    @classmethod
    def from_scope(cls, scope: Scope) -> "InferHead":
        """400 for an ``Inference-Header-Content-Length`` that is no byte count, 415 for a
        compressed body."""
        announced = header_length = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():  # uvicorn refused bad ones
                announced = int(value)
            elif name == _HEADER_LENGTH:
                text = value.strip()
                if not text.isdigit() or len(text) > 19:
                    raise BadRequestError(f"{HEADER_LENGTH} must be the byte count of the JSON "
                                          f"object at the start of the body, got {_quote(value)}")
                header_length = int(text)
            elif name == b"content-encoding" and value.strip().lower() != b"identity":
                raise UnsupportedMediaTypeError(
                    f"Content-Encoding {_quote(value)} is not supported: send the body uncompressed")
        return cls(announced, header_length)


class Output(NamedTuple):
    name: str
    binary: bool  # after the JSON (binary tensor data extension), else in it


# Every output, in the default order (no "outputs" in the request): in the JSON, or binary.
_ALL_OUTPUTS = {binary: tuple(Output(name, binary) for name in OUTPUTS) for binary in (False, True)}
_NONE: dict[str, V2Parameter] = {}


@dataclass(slots=True)
class InferRequest:
    """A checked inference request: exactly one of ``files`` (the ``images`` input) and
    ``pixels`` (the ``pixels`` input, one uint8 ``H*W*C`` bytes per image) is set."""

    id: str | None
    files: list[RawImage] | None
    pixels: list[bytes] | None
    outputs: tuple[Output, ...]
    top_k: int  # classes computed per image


def parse_infer_request(body: bytes, header_length: int | None, *, spec: InputSpec,
                        classes: int, max_images: int) -> InferRequest:
    """The request ``body`` for a model of ``classes`` classes taking ``spec``'s input; a
    4xx domain error for anything that does not add up."""
    if header_length is not None and header_length > len(body):
        raise BadRequestError(f"{HEADER_LENGTH} is {header_length} but the body has only "
                              f"{len(body)} bytes")
    end = len(body) if header_length is None else header_length
    if end == 0:
        raise BadRequestError("no inference request: the body (or its JSON part) is empty")
    request = _validated(body[:end] if end < len(body) else body, has_header=header_length is not None)
    binary = body[end:]
    parameters = _known(request.parameters, REQUEST_PARAMETERS, "request")
    outputs = _outputs(request, default_binary=_flag(parameters, "binary_data_output", "request") is True)
    # At most two outputs, each once: the first or the last is probabilities, if any is.
    top_k = _top_k(parameters, classes, wants_probabilities=PROBABILITIES in (
        outputs[0].name, outputs[-1].name))
    if len(request.inputs) != 1:
        raise BadRequestError(f"send exactly one input, {tensors.IMAGES} (BYTES) or "
                              f"{tensors.PIXELS} (UINT8 or FP32); got {len(request.inputs)}")
    tensor = request.inputs[0]
    data = _binary_data(tensor, binary, has_header=header_length is not None)
    if tensor.name == tensors.IMAGES:
        files = tensors.images(tensor, data, max_images=max_images)
        return InferRequest(request.id, files, None, outputs, top_k)
    if tensor.name == tensors.PIXELS:
        pixels = tensors.pixels(tensor, data, spec=spec, max_images=max_images)
        return InferRequest(request.id, None, pixels, outputs, top_k)
    raise BadRequestError(f"unknown input {tensor.name[:64]!r}; inputs: {', '.join(INPUTS)}")


def _validated(header: bytes, *, has_header: bool) -> V2InferenceRequest:
    try:
        return _DECODER.decode(header)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"not an inference request: {exc}") from None
    except msgspec.DecodeError as exc:
        trailing = "trailing characters" in str(exc)
        hint = f"; binary data after the JSON object needs the {HEADER_LENGTH} header" if (
            trailing and not has_header) else ""
        raise BadRequestError(f"not an inference request: {exc}{hint}") from None
    except RecursionError:  # msgspec's guard against deeply nested arrays
        raise BadRequestError("not an inference request: data is nested too deeply") from None


def _binary_data(tensor: V2RequestInput, binary: bytes, *, has_header: bool) -> bytes | None:
    """The input's binary data, when it announces some: exactly the bytes after the JSON."""
    parameters = _known(tensor.parameters, INPUT_PARAMETERS, "input", tensor.name)
    size = parameters.get("binary_data_size")
    if size is None:
        if binary:
            raise BadRequestError(f"{len(binary)} bytes follow the JSON object but no input "
                                  "announces them with parameters.binary_data_size")
        return None
    if type(size) is not int or size < 0:
        raise BadRequestError(f"binary_data_size must be a byte count, got {_value(size)}")
    if not has_header:
        raise BadRequestError(f"binary_data_size needs the {HEADER_LENGTH} header (the length "
                              "of the JSON object the binary data follows)")
    if tensor.data is not None:
        raise BadRequestError(f"input {tensor.name[:64]!r} has both data and binary_data_size")
    if size != len(binary):
        raise BadRequestError(f"binary_data_size is {size} but {len(binary)} bytes follow the "
                              "JSON object")
    return binary


def _outputs(request: V2InferenceRequest, *, default_binary: bool) -> tuple[Output, ...]:
    """The outputs asked for, in their order (all of them when none is named)."""
    if not request.outputs:
        return _ALL_OUTPUTS[default_binary]
    outputs: dict[str, Output] = {}
    for requested in request.outputs:
        name = requested.name
        if name not in OUTPUTS:
            raise BadRequestError(f"unknown output {name[:64]!r}; outputs: {', '.join(OUTPUTS)}")
        if name in outputs:
            raise BadRequestError(f"output {name!r} is requested twice")
        parameters = _known(requested.parameters, OUTPUT_PARAMETERS, "output", name)
        binary = _flag(parameters, "binary_data", "output", name)
        outputs[name] = Output(name, default_binary if binary is None else binary)
    return tuple(outputs.values())


def _top_k(parameters: dict[str, V2Parameter], classes: int, *, wants_probabilities: bool) -> int:
    top_k = parameters.get("top_k")
    if top_k is None:
        return classes if wants_probabilities else 1
    if type(top_k) is not int or not 1 <= top_k <= classes:
        raise BadRequestError(f"parameter top_k must be an integer from 1 to {classes} (the "
                              f"model's classes), got {_value(top_k)}")
    return top_k


def _known(parameters: dict[str, V2Parameter] | None, accepted: frozenset[str], kind: str,
           name: str = "") -> dict[str, V2Parameter]:
    """The parameters of the request (``kind`` "request") or of the input or output ``name``,
    when each is one of ``accepted``."""
    if not parameters:
        return _NONE
    if parameters.keys() - accepted:
        unknown = [key for key in parameters if key not in accepted]
        names = ", ".join(repr(key[:64]) for key in unknown[:_MAX_ERRORS])
        raise BadRequestError(f"unknown {_where(kind, name)} parameter(s) {names}; accepted: "
                              f"{', '.join(sorted(accepted))}")
    return parameters


def _flag(parameters: dict[str, V2Parameter], key: str, kind: str, name: str = "") -> bool | None:
    value = parameters.get(key)
    if value is not None and type(value) is not bool:
        raise BadRequestError(f"{_where(kind, name)} parameter {key} must be true or false, got "
                              f"{_value(value)}")
    return value


def _where(kind: str, name: str) -> str:
    """Whose parameter, for a message: the request, or an input or output by name."""
    return f"{kind} {name[:64]!r}" if name else kind


def _value(value: V2Parameter) -> str:
    """A client's value for a message, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _quote(value: bytes) -> str:
    return repr(value[:40].decode("latin-1"))

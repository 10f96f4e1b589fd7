"""Pydantic request and response classes of the HTTP API (they also shape the OpenAPI schema).

Named ``schemas`` so that "model" in this codebase always means a neural network.
"""

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

if TYPE_CHECKING:
    from service.inference.loading import LoadedModel

# What the inference thread computes per request: (scores, indices), one row of top-k floats /
# ints per image.
Result = tuple[list[list[float]], list[list[int]]]


class ClassScore(BaseModel):
    label: str = Field(description="class label from the artifact's metadata")
    index: int = Field(description="class index (model output position)")
    score: float = Field(description="softmax probability")


class ImagePrediction(BaseModel):
    """The prediction for one image; ``top_k`` is sorted by score, best first."""

    label: str
    index: int
    score: float
    top_k: list[ClassScore]


class PredictResponse(BaseModel):
    """One result per input image, in input order, and the model version that answered."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="model name")
    version: str = Field(description="registry version that computed these results")
    weights_sha256: str
    predictions: list[ImagePrediction]


def predict_response_json(loaded: "LoadedModel", results: list[Result], top_k: int) -> bytes:
    """The JSON body of :class:`PredictResponse`, encoded directly.

    Plain dicts through msgspec instead of pydantic objects through Litestar's serializer: the
    same JSON (``tests/service`` validates it against the schema) for less CPU, which matters
    when a request carries one small image.
    """
    labels = loaded.labels
    predictions = []
    for scores_rows, indices_rows in results:
        for scores, indices in zip(scores_rows, indices_rows, strict=True):
            top = [{"label": labels[i], "index": i, "score": s}
                   for s, i in zip(scores[:top_k], indices[:top_k], strict=True)]
            predictions.append({**top[0], "top_k": top})
    return msgspec.json.encode({
        "model": loaded.name, "version": loaded.version, "weights_sha256": loaded.sha256,
        "predictions": predictions,
    })


class PredictJsonRequest(BaseModel):
    """The JSON input format: base64 images (a ``data:image/...;base64,`` prefix is accepted)."""

    images: list[str] = Field(min_length=1, description="base64-encoded image files")


class InputSpecSchema(BaseModel):
    channels: int
    height: int
    width: int
    mean: list[float]
    std: list[float]


class LoadedModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    default: bool = Field(description="answers requests that name no model")
    architecture: str
    class_labels: list[str]
    input: InputSpecSchema
    metrics: dict[str, Any]
    dataset: str | None
    created_at: str | None
    weights_sha256: str
    device: str
    precision: str = Field(description="dtype of weights and activations (PRECISION)")
    loaded_at: str
    golden_set: bool = Field(
        description="checked against its golden set on load (false: published before golden "
                    "sets, checked by a forward on zeros only; docs/monitoring.md)")
    other_loaded_versions: list[str] = Field(
        default_factory=list,
        description="other versions this worker holds for ?version= requests, most recently "
                    "used first (MAX_LOADED_VERSIONS)")
    history: list[dict[str, float]] = Field(
        default_factory=list,
        description="the training curves, one record per epoch (epoch, train_loss, "
                    "train_accuracy, val_loss, val_accuracy, lr, seconds); empty for versions "
                    "published before")


class ModelsResponse(BaseModel):
    models: list[LoadedModelInfo]
    waiting_for: list[str] = Field(description="configured models not loaded yet")


class HealthResponse(BaseModel):
    status: str
    models: dict[str, str] = Field(default_factory=dict, description="name -> loaded version")
    detail: str | None = None


class PromoteRequest(BaseModel):
    version: str = Field(description="published version to make production", examples=["3"])
    model: str | None = Field(None, description="model name (default: the default model)")


class AdminResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    production: str | None = Field(description="the production pointer after the operation")
    loaded: str | None = Field(description="version this worker serves after the operation")
    changed: bool
    detail: str


class ErrorResponse(BaseModel):
    """Every error: a machine-readable code, a message a person can act on, the request id."""

    error: str
    detail: str
    request_id: str | None = None
    problems: list[dict[str, Any]] | None = Field(
        None, description="per-image problems (index, filename, status, detail)"
    )


# ----------------------------------------------------------------------------- POST /feedback

class FeedbackJsonRequest(PredictJsonRequest):
    """The JSON format of ``POST /feedback``: base64 images and the one true label of them all."""

    label: str | None = Field(None, max_length=1024, examples=["T-shirt/top"],
                              description="true class of every image (or the `label` query "
                                          "parameter)")
    request_id: str | None = Field(
        None, description="X-Request-ID of the /predict answer this corrects (optional)")


class FeedbackImage(BaseModel):
    id: str = Field(description="sha256 of the image file: its name in the store")
    label: str
    stored: bool = Field(description="true: new to the store; false: already known")


class FeedbackResponse(BaseModel):
    """One entry per image, in input order; 201 when at least one image is new, else 200."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="model whose class labels the label was checked against")
    version: str = Field(description="the version of it this worker serves")
    images: list[FeedbackImage]


class FeedbackErrorResponse(ErrorResponse):
    valid_labels: list[str] | None = Field(
        None, description="with unknown_label: the class labels of the model version")


class ModelReport(BaseModel):
    """The evaluation report published with the loaded version (``report.json``, written by
    training on its test split), with the model name and version it belongs to."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")

    model: str = Field(description="model name")
    version: str = Field(description="the loaded version this report was published with")
    samples: int | None = Field(None, description="test images evaluated")
    accuracy: float | None = Field(None, description="top-1 accuracy on the test split")
    classes: dict[str, dict[str, Any]] | None = Field(
        None, description="per class label: precision, recall, f1, support")
    macro: dict[str, Any] | None = Field(None, description="macro averages of the per-class metrics")
    confusion: dict[str, Any] | None = Field(
        None, description="labels and matrix (rows: true class, columns: predicted class)")
    calibration: dict[str, Any] | None = Field(
        None, description="expected calibration error (ece) and the reliability table (bins)")
    mistakes: list[Any] | None = Field(None, description="the most confident mistakes")
    predicted_share: dict[str, float] | None = Field(
        None, description="share of top-1 predictions per class on the test split: the drift "
                          "gauge's reference")
    sources: Any = Field(None, description="samples per data source")


# ----------------------------------------------------------------------------- Open Inference Protocol v2

# A request or output parameter's value, as the protocol allows: a string, a number or a boolean.
V2Parameter = StrictBool | StrictInt | StrictFloat | StrictStr


class V2ErrorResponse(BaseModel):
    """Every error of the ``/v2`` routes, as the protocol defines it: one message."""

    error: str = Field(description="what went wrong, for a person")


class V2ServerMetadata(BaseModel):
    name: str = Field(description="the server's name")
    version: str = Field(description="the server's version")
    extensions: list[str] = Field(description="protocol extensions it supports")


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="BYTES, UINT8, FP32 ... (the protocol's tensor data types)")
    shape: list[int] = Field(description="-1: any size (the batch dimension)")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="the published versions still in the registry")
    platform: str = Field(description="pytorch_statedict: an nn.Module rebuilt from metadata.json "
                                      "with the state_dict weights.pt (not TorchScript)")
    inputs: list[V2TensorMetadata] = Field(description="send exactly one of them")
    outputs: list[V2TensorMetadata]


# The inference request is decoded by msgspec into Structs, not by pydantic: on the hot path,
# in a loaded worker, pydantic's validation of a one-image request took ~11 us of the event
# loop, msgspec's ~3 us (docs/performance.md). Its OpenAPI schema comes from msgspec too.

class V2RequestInput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One input tensor; its data in ``data`` (JSON) or after the JSON (``binary_data_size``)."""

    name: Annotated[str, msgspec.Meta(
        description="images (BYTES [N]) or pixels (UINT8 or FP32 [N, C, H, W])")]
    shape: list[int]
    datatype: str
    parameters: Annotated[dict[str, V2Parameter] | None, msgspec.Meta(
        description="binary_data_size: bytes of this tensor after the JSON")] = None
    data: Annotated[list[Any] | None, msgspec.Meta(
        description="row-major, nested as the shape or flat; BYTES elements as base64 text")] = None


class V2RequestOutput(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: Annotated[str, msgspec.Meta(description="probabilities or label")]
    parameters: Annotated[dict[str, V2Parameter] | None, msgspec.Meta(
        description="binary_data: true to receive this output after the JSON")] = None


class V2InferenceRequest(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``POST /v2/models/{name}/infer``: one input tensor, the outputs wanted (default: all)."""

    inputs: Annotated[list[V2RequestInput], msgspec.Meta(
        min_length=1, description="exactly one input: images or pixels")]
    id: Annotated[str | None, msgspec.Meta(description="echoed in the response")] = None
    model_name: Annotated[str | None, msgspec.Meta(
        description="accepted and ignored: the URL names the model")] = None
    model_version: Annotated[str | None, msgspec.Meta(
        description="accepted and ignored: the URL names it")] = None
    parameters: Annotated[dict[str, V2Parameter] | None, msgspec.Meta(
        description="top_k (classes kept per image in probabilities), binary_data_output")] = None
    outputs: Annotated[list[V2RequestOutput] | None, msgspec.Meta(
        description="the outputs wanted, in this order (default: probabilities, label)")] = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, V2Parameter] | None = Field(
        None, description="binary_data_size when the data follows the JSON")
    data: list[Any] | None = Field(None, description="flat, row-major (absent when binary)")


class V2InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str = Field(description="registry version that computed these outputs")
    id: str | None = Field(None, description="the request's id, when it gave one")
    outputs: list[V2ResponseOutput]

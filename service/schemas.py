"""Pydantic request and response classes of the HTTP API (they also shape the OpenAPI schema).

Named ``schemas`` so that "model" in this codebase always means a neural network.
"""

from typing import TYPE_CHECKING, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

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

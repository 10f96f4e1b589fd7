"""Service configuration: one pydantic-settings class, read once from the environment.

Every field maps to an UPPER_CASE environment variable of the same name (``max_batch_size`` <-
``MAX_BATCH_SIZE``). ``create_app()`` reads it once and injects it, so a test sets the environment
(or passes a ``Settings``) before the app is built.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from artifacts.registry import RegistryError, validate_name
from service.workers.core_share import usable_cores


class Settings(BaseSettings):
    """What a worker serves and how; the defaults suit a 2-core CPU host with 2 workers."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", protected_namespaces=())

    model_registry: Path = Field(Path("registry"), description="registry directory (docs/architecture.md)")
    model_name: str = Field(
        "fashion-mnist",
        description="model(s) to serve, comma-separated; the first is the default",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="weights and activations; auto = bf16 where the CPU/GPU computes it natively "
                    "(AMX, AVX512-BF16, CUDA bf16), else fp32; fp16 needs CUDA",
    )
    admin_token: SecretStr | None = Field(None, description="bearer token of /admin/*; unset = off")
    admin_token_file: Path | None = Field(None, description="file holding the admin token")
    feedback_token: SecretStr | None = Field(
        None, description="bearer token of POST /feedback (not the admin one); unset = off")
    feedback_token_file: Path | None = Field(None, description="file holding the feedback token")
    feedback_dir: Path = Field(
        Path("feedback"), description="where POST /feedback stores labelled images "
                                      "(<label>/<sha256>.<ext>, docs/retraining.md)")
    drift_window: int = Field(
        2000, ge=10, description="recent predictions per worker the drift gauge compares with "
                                 "the artifact's test-split distribution")
    drift_min_samples: int = Field(
        200, ge=1, description="predictions in the window before the drift gauge is set")
    web_concurrency: int = Field(1, ge=1, description="gunicorn workers (sizes TORCH_THREADS)")
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads per worker (default: usable cores // workers)"
    )
    torch_threads_alone: int | None = Field(
        None, ge=1,
        description="intra-op threads of a forward while every other worker is idle (default: "
                    "all usable cores, never fewer than TORCH_THREADS; set it to TORCH_THREADS "
                    "to never borrow cores)",
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="images per forward pass")
    max_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000,
        description="how long a batch may wait for more images, only while some are on their "
                    "way (bodies being received, clients the last batch answered)",
    )
    max_queue: int = Field(2048, ge=1, description="queued images per worker before 503")
    max_queue_wait_ms: float = Field(
        1000.0, gt=0,
        description="once the oldest queued image has waited this long, new requests get 503 "
                    "until the queue drains",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="request body limit")
    max_inflight_bytes: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="request body bytes one worker holds at once; beyond it 503 + Retry-After",
    )
    max_images: int = Field(64, ge=1, description="images per request")
    max_pixels: int = Field(
        4096 * 4096, ge=1, description="pixels per decoded image (decompression-bomb guard)"
    )
    reload_interval_s: float = Field(
        2.0, ge=0, description="production-pointer poll period; 0 disables polling"
    )
    startup_load_wait_s: float = Field(
        20.0, ge=0, le=50,
        description="a starting worker accepts connections once its first model load attempt "
                    "ended, or after this long (below gunicorn's TIMEOUT)",
    )
    decode_inline_pixels: int = Field(
        256 * 1024, ge=0,
        description="requests of up to this many pixels in all (read from the image headers) are "
                    "decoded on the inference thread with their batch; larger ones are handed "
                    "back, decoded in a thread pool and queued again as pixels",
    )
    log_level: str = Field("info", description="log level of the service loggers")
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per line (request id, model, version, status, "
                            "latency) for log pipelines")
    cors_origins: str = Field(
        "", description="comma-separated origins browsers may call the API from (* for any); "
                        "empty: no CORS headers")
    max_loaded_versions: int = Field(
        3, ge=1, description="versions other than production a worker keeps loaded for "
                             "?version= requests (least recently used first out)")

    @field_validator("model_name")
    @classmethod
    def _valid_names(cls, value: str) -> str:
        names = [part.strip() for part in value.split(",") if part.strip()]
        if not names:
            raise ValueError("MODEL_NAME names no model")
        try:
            for name in names:
                validate_name(name)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
        return ",".join(names)

    @model_validator(mode="after")
    def _tokens_from_files(self) -> "Settings":
        self.admin_token = _token(self.admin_token, self.admin_token_file)
        self.feedback_token = _token(self.feedback_token, self.feedback_token_file)
        return self

    @property
    def model_names(self) -> list[str]:
        return self.model_name.split(",")

    @property
    def default_model(self) -> str:
        return self.model_names[0]

    @property
    def resolved_torch_threads(self) -> int:
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, usable_cores() // self.web_concurrency)


def _token(token: SecretStr | None, token_file: Path | None) -> SecretStr | None:
    """A bearer token from its variable, else its file (a docker/k8s secret, read once here).

    Surrounding whitespace is never part of a token (clients send it stripped); a blank token
    would "enable" an endpoint with a secret nobody can send: it counts as unset."""
    if token is None and token_file is not None:
        token = SecretStr(token_file.read_text(encoding="utf-8"))
    if token is None:
        return None
    text = token.get_secret_value().strip()
    return SecretStr(text) if text else None

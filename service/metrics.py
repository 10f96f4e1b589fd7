"""Prometheus metrics, correct across gunicorn workers (prometheus_client multiprocess mode).

``service/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` in the master before any worker
imports this module: every worker then writes its values to memory-mapped files there and
``GET /metrics`` (answered by whichever worker) aggregates all of them. Without the variable
(a single process, e.g. tests with an in-process client) the default registry is used.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

REQUESTS = Counter(
    "imgclf_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
REQUEST_LATENCY = Histogram(
    "imgclf_http_request_duration_seconds", "whole-request latency", ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
IMAGES = Counter("imgclf_images_total", "images classified (through a forward pass)", ["model"])
DECODE_TIME = Histogram(
    "imgclf_decode_seconds", "parse + decode + preprocess time per request", ["model"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "imgclf_queue_wait_seconds",
    "time a request (or a batch-sized part of one) waits in the queue for its forward pass",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_TIME = Histogram(
    "imgclf_inference_seconds", "forward pass time per batch", ["model"], buckets=_LATENCY_BUCKETS
)
FORWARDS = Counter(
    "imgclf_forwards_total",
    "forward passes by intra-op threads (above TORCH_THREADS: cores borrowed from idle workers)",
    ["model", "threads"],
)
BATCH_SIZE = Histogram(
    "imgclf_batch_size_images", "images per forward pass", ["model"], buckets=_BATCH_BUCKETS
)
QUEUE_DEPTH = Gauge(
    "imgclf_queue_depth_images", "images waiting for a forward pass (all workers)", ["model"],
    multiprocess_mode="livesum",
)
QUEUE_REJECTED = Counter(
    "imgclf_queue_rejected_total", "requests refused with 503 because the queue was full", ["model"]
)
MODEL_VERSION = Gauge(
    "imgclf_model_version", "registry version each worker serves (0: none)", ["model"],
    multiprocess_mode="liveall",
)
RELOADS = Counter(
    "imgclf_model_reloads_total",
    "model load attempts by outcome (loaded; refused: failed validation; failed: will retry)",
    ["model", "outcome"],
)

VERSION_LOADS = Counter(
    "imgclf_version_loads_total",
    "versions loaded for serving (hot swap, admin switch or a ?version= request) by outcome "
    "(loaded; refused: failed validation; failed: could not be read)",
    ["model", "outcome"],
)
VERSION_EVICTIONS = Counter(
    "imgclf_version_evictions_total",
    "non-production versions unloaded to make room for another (MAX_LOADED_VERSIONS)", ["model"],
)

# ---------------------------------------------------------------- drift signals (docs/monitoring.md)
PREDICTIONS = Counter(
    "imgclf_predictions_total", "images classified, by model version and top-1 class",
    ["model", "version", "label"],
)
CONFIDENCE = Histogram(
    "imgclf_prediction_confidence", "top-1 probability of each classified image",
    ["model", "version"], buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
DRIFT_PSI = Gauge(
    "imgclf_prediction_drift_psi",
    "population stability index of the recent top-1 classes (DRIFT_WINDOW per worker) against "
    "the artifact's test split; the largest over live workers; absent until DRIFT_MIN_SAMPLES",
    ["model", "version"], multiprocess_mode="livemax",
)
INPUT_MISMATCH = Counter(
    "imgclf_input_mismatch_total",
    "images whose size or mode differs from the model's training input (resized or converted)",
    ["model", "reason"],
)
GOLDEN_FAILURES = Counter(
    "imgclf_golden_set_failures_total",
    "versions refused because they did not reproduce their golden set", ["model"],
)
# ---------------------------------------------------------------- feedback
FEEDBACK = Counter(
    "imgclf_feedback_total", "images received on POST /feedback, by label and outcome "
    "(stored, duplicate, conflict, invalid_label, invalid_image, disk_full, unavailable)", ["label", "outcome"],
)


def render() -> tuple[bytes, str]:
    """The exposition text of all workers' metrics and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

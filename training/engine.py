"""The train and evaluation loops, importable by the CLI, the scheduled job and torchrun.

Batches arrive as uint8 ``(N, C, H, W)``; each loop moves them to the device, normalises them
with the artifact's own :class:`~artifacts.preprocess.EvalTransform`, and runs under autocast
when a lower precision is configured.
"""

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from artifacts.devices import cpu_has_bf16, resolve_device
from artifacts.preprocess import EvalTransform
from training.data.batches import BatchLoader
from training.data.mixing import Mixing
from training.ema import WeightAverage
from training.ranks import sum_across_ranks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors run: device, autocast dtype (None = fp32), memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` moved to this device and memory format, matching what :meth:`prepare` feeds it."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last
                        else torch.contiguous_format)

    def prepare(self, images: torch.Tensor, transform: EvalTransform) -> torch.Tensor:
        x = transform(images.to(self.device, non_blocking=True))  # (N, C, H, W) float32
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resolve_runtime(*, device: str, precision: str, channels_last: bool) -> Runtime:
    """The :class:`Runtime` of a run from its config (``auto`` precision: bf16 where the
    hardware has it natively, else fp32), logged once."""
    dev = resolve_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is torch.float16 and dev.type != "cuda":
        raise ValueError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    runtime = Runtime(device=dev, autocast_dtype=dtype, channels_last=channels_last)
    log.info("runtime: device=%s precision=%s channels_last=%s threads=%d",
             dev, precision, channels_last, torch.get_num_threads())
    return runtime


def train_one_epoch(
    model: nn.Module,
    loader: BatchLoader,
    *,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    transform: EvalTransform,
    runtime: Runtime,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = False,
    description: str = "train",
    mixing: Mixing | None = None,
    ema: WeightAverage | None = None,
    global_step: int = 0,
) -> dict[str, float]:
    """One pass over ``loader`` in ``train()`` mode; returns mean loss, accuracy and samples/s.

    ``mixing`` (mixup / cutmix) mixes each normalised batch and its labels; accuracy is still
    counted against the unmixed labels. ``ema`` is updated after every optimizer step, numbered
    on from ``global_step`` (the steps of the epochs before)."""
    model.train()
    loss_sum = correct = count = 0.0
    started = time.perf_counter()
    # disable=None: tqdm turns itself off when stderr is not a terminal (CI, docker logs)
    bar = tqdm(loader, desc=description, disable=None if progress else True, leave=False, dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar):
        x = runtime.prepare(images, transform)
        y = labels.to(runtime.device, non_blocking=True)
        target = y
        if mixing is not None:
            x, target = mixing(x, y)  # target: (N, num_classes) probabilities
        with runtime.autocast():
            logits = model(x)  # (N, num_classes)
            loss = criterion(logits, target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.step(global_step + step + 1)
        batch_loss = loss.item()
        if not math.isfinite(batch_loss):
            raise FloatingPointError(f"loss became {batch_loss} at step {step}: lower the learning rate")
        loss_sum += batch_loss * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += len(y)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{batch_loss:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
    seconds = time.perf_counter() - started
    loss_sum, correct, count = sum_across_ranks(loss_sum, correct, count)
    return {"loss": loss_sum / count, "accuracy": correct / count,
            "samples_per_s": count / seconds if seconds else 0.0}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    *,
    criterion: nn.Module,
    transform: EvalTransform,
    runtime: Runtime,
) -> dict[str, float]:
    """Mean loss and accuracy over the whole split (summed over ranks) in ``eval()`` mode."""
    model.eval()
    loss_sum = correct = count = 0.0
    for images, labels in loader:
        x = runtime.prepare(images, transform)
        y = labels.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(x)
        loss_sum += criterion(logits.float(), y).item() * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += len(y)
    loss_sum, correct, count = sum_across_ranks(loss_sum, correct, count)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "samples": count}


@torch.inference_mode()
def collect_probabilities(
    model: nn.Module,
    loader: BatchLoader,
    *,
    transform: EvalTransform,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and labels of every sample of ``loader``, in its order.

    The model report needs more than :func:`evaluate`'s two numbers (per-class metrics,
    calibration, the most confident mistakes), so the final test pass keeps the whole output;
    :func:`stats_from_probabilities` then gives the loss and accuracy without a second pass.
    Same preprocessing, autocast and ``eval()`` mode as :func:`evaluate`; one process only
    (``loader`` unsharded, ``shuffle=False``), so indices match the split's.

    Returns float32 probabilities ``(N, K)`` and int64 labels ``(N,)``, both on the CPU.
    """
    model.eval()
    probabilities, labels = [], []
    for images, batch_labels in loader:
        x = runtime.prepare(images, transform)
        with runtime.autocast():
            logits = model(x)  # (B, K), bf16/fp16 under autocast
        probabilities.append(logits.float().softmax(dim=1).cpu())
        labels.append(batch_labels.to(torch.int64).cpu())
    if not probabilities:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(probabilities), torch.cat(labels)


def stats_from_probabilities(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """:func:`evaluate`'s ``{"loss", "accuracy", "samples"}`` from :func:`collect_probabilities`'
    output: the mean negative log-likelihood (probabilities clamped at 1e-12, so a confident
    mistake costs about 27.6 rather than infinity) and top-1 accuracy."""
    count = len(labels)
    if count == 0:
        return {"loss": 0.0, "accuracy": 0.0, "samples": 0}
    chosen = probabilities.gather(1, labels[:, None].to(probabilities.device)).squeeze(1)  # (N,)
    loss = -chosen.double().clamp_min(1e-12).log().mean().item()
    accuracy = (probabilities.argmax(dim=1).cpu() == labels.cpu()).double().mean().item()
    return {"loss": loss, "accuracy": accuracy, "samples": count}

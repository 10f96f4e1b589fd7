"""``main(cfg)``: train, keep resumable checkpoints, pick the best epoch, test it, publish it."""

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

import models
from artifacts.devices import is_conv_net
from artifacts.preprocess import EvalTransform
from artifacts.storage import safe_torch_load
from models import with_test_time_augmentation
from models.backbones import load_pretrained
from training.checkpoint import capture_rng_states, load_checkpoint, restore_rng_states, save_checkpoint
from training.config import TrainConfig, check_resume_config
from training.data.batches import BatchLoader, build_augment
from training.data.mixing import build_mixing
from training.data.splits import DataSplits, load_data
from training.ema import WeightAverage
from training.engine import (
    Runtime,
    collect_probabilities,
    evaluate,
    resolve_runtime,
    stats_from_probabilities,
    train_one_epoch,
)
from training.metrics_log import MetricsLogger
from training.optim import build_optimizer, build_scheduler, trainable_parameters, warmup_epochs
from training.publishing import publish_model
from training.ranks import barrier, broadcast_from_main
from training.report.metrics import build_report

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    best_val_accuracy: float
    test_metrics: dict[str, float]
    version: str | None
    epochs_run: int
    # The splits this run trained and was tested on: the scheduled job scores production on
    # exactly this test split, whatever arrived in the data directory meanwhile.
    data: DataSplits
    report: dict | None = None  # the test split per class (training.report)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, data: DataSplits) -> nn.Module:
    spec = data.input_spec
    model = models.build_model(cfg.model, num_classes=len(data.classes), in_channels=spec.channels,
                               image_size=spec.size, **cfg.model_kwargs)
    if cfg.pretrained_weights:
        load_pretrained(model, safe_torch_load(Path(cfg.pretrained_weights)))
    return model


def _run_dir(cfg: TrainConfig) -> Path:
    if cfg.resume:
        return Path(cfg.resume).resolve().parent.parent  # <run>/checkpoints/last.pt
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(cfg.runs_dir) / (cfg.run_name or f"{cfg.model_name}-{stamp}")


def main(cfg: TrainConfig, *, rank: int = 0, world_size: int = 1, wrap=None,
         data: DataSplits | None = None) -> TrainResult:
    """Run one training job end to end. ``wrap`` (DDP) wraps the model for the train loop only;
    rank 0 alone writes checkpoints, logs and the artifact. ``data``: splits already loaded
    from ``cfg`` (the scheduled job loads them first to compare fingerprints)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    is_main = rank == 0
    resumed = load_checkpoint(Path(cfg.resume)) if cfg.resume else None
    if resumed is not None:
        check_resume_config(resumed["config"], cfg)  # before any work: only exact resumes
    data = data or load_data(cfg)
    model = build_model(cfg, data)
    runtime: Runtime = resolve_runtime(device=cfg.device, precision=cfg.precision,
                                       channels_last=is_conv_net(model))
    model = runtime.place(model)
    arch = models.get_architecture(cfg.model)
    params = trainable_parameters(model, head=arch.head, freeze_backbone=cfg.freeze_backbone,
                                  arch_name=cfg.model)
    train_model = wrap(model) if wrap else model
    transform = EvalTransform(spec=data.input_spec)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    train_loader = BatchLoader(data.train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                               augment=build_augment(cfg), rank=rank, world_size=world_size)
    val_loader = BatchLoader(data.val, batch_size=512, shuffle=False, rank=rank, world_size=world_size)
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if runtime.autocast_dtype is torch.float16 else None
    mixing = build_mixing(cfg, len(data.classes))
    ema = WeightAverage(model, cfg, world_size=world_size, steps_per_epoch=len(train_loader),
                        warmup_epochs=warmup_epochs(cfg)) if cfg.ema else None
    # What is validated, chosen, tested and published: the weight average under --ema, and
    # under --tta wrapped as every loader of the artifact will wrap it (models.tta).
    evaluated = with_test_time_augmentation(ema.module if ema else model, cfg.tta)

    run_dir = broadcast_from_main(_run_dir(cfg))  # one clock names the run on every rank
    ckpt_dir = run_dir / "checkpoints"
    start_epoch, global_step, best, history = 0, 0, float("-inf"), []
    if resumed is not None:
        model.load_state_dict(resumed["model_state_dict"])
        optimizer.load_state_dict(resumed["optimizer_state_dict"])
        if scheduler is not None and resumed.get("scheduler_state_dict"):
            scheduler.load_state_dict(resumed["scheduler_state_dict"])
        if scaler is not None and resumed.get("scaler_state_dict"):
            scaler.load_state_dict(resumed["scaler_state_dict"])
        if ema is not None:
            ema.load_state_dict(resumed["ema_state_dict"])
        restore_rng_states(resumed["rng_states"])
        start_epoch, global_step = resumed["epoch"] + 1, resumed["global_step"]
        best, history = resumed["best_metric"], list(resumed["history"])
        resumed = None  # free the checkpoint's tensors: the model and optimizer hold them now
        log.info("resumed from %s at epoch %d", cfg.resume, start_epoch + 1)
    log.info("config: %s", cfg.config_line(input_shape=(data.input_spec.channels, *data.input_spec.size)))
    logger = MetricsLogger(run_dir, cfg, enabled=is_main)
    bad_epochs = _epochs_since_improvement(history, cfg.min_delta)

    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience is not None and bad_epochs >= cfg.patience:
            log.info("early stopping: no improvement > %g for %d epochs", cfg.min_delta, bad_epochs)
            break
        started = time.perf_counter()
        train_loader.set_epoch(epoch)
        train_stats = train_one_epoch(
            train_model, train_loader, optimizer=optimizer, criterion=criterion, transform=transform,
            runtime=runtime, scheduler=scheduler, scaler=scaler, progress=cfg.progress and is_main,
            description=f"epoch {epoch + 1}/{cfg.epochs}", mixing=mixing, ema=ema, global_step=global_step,
        )
        global_step += len(train_loader)
        val_stats = evaluate(evaluated, val_loader, criterion=eval_criterion, transform=transform, runtime=runtime)
        improved = val_stats["accuracy"] > best + cfg.min_delta
        if improved:
            best = val_stats["accuracy"]
        bad_epochs = 0 if improved else bad_epochs + 1
        record = {"epoch": epoch + 1, "train_loss": train_stats["loss"], "train_accuracy": train_stats["accuracy"],
                  "val_loss": val_stats["loss"], "val_accuracy": val_stats["accuracy"],
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
        history.append(record)
        if is_main:
            state = {
                "epoch": epoch, "global_step": global_step, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict() if scheduler else None,
                "scaler_state_dict": scaler.state_dict() if scaler else None,
                "ema_state_dict": ema.state_dict() if ema else None,
                "rng_states": capture_rng_states(), "best_metric": best, "history": history,
                "config": cfg.to_dict(),
            }
            save_checkpoint(ckpt_dir / "last.pt", state)
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", state)
            logger.epoch(record, train_stats["samples_per_s"], improved)
        barrier()

    best_state = load_checkpoint(ckpt_dir / "best.pt")
    model.load_state_dict(best_state["model_state_dict"])
    if ema is not None:
        ema.load_state_dict(best_state["ema_state_dict"])
    best_record = history[best_state["epoch"]]
    metrics, report, version = None, None, None
    if is_main:  # the test split once, whole, on the main process: its report needs every row
        metrics, report = _test(evaluated, data, transform, runtime)
        metrics.update(val_accuracy=best_record["val_accuracy"], val_loss=best_record["val_loss"],
                       best_epoch=best_state["epoch"] + 1)
        logger.finish(metrics)
        if cfg.publish:
            version = publish_model(cfg, data, ema.module if ema else model, metrics, report, history)
    metrics, report, version = broadcast_from_main((metrics, report, version))
    barrier()
    return TrainResult(run_dir, best, metrics, version, len(history), data, report)


def _test(model: nn.Module, data: DataSplits, transform: EvalTransform,
          runtime: Runtime) -> tuple[dict, dict]:
    """Test metrics and the per-class report of ``model`` on the test split."""
    loader = BatchLoader(data.test, batch_size=512, shuffle=False)
    probabilities, labels = collect_probabilities(model, loader, transform=transform, runtime=runtime)
    stats = stats_from_probabilities(probabilities, labels)
    report = build_report(probabilities, labels, data.classes, sources=data.test_sources())
    metrics = {"test_accuracy": stats["accuracy"], "test_loss": stats["loss"],
               "test_samples": stats["samples"]}
    return metrics, report


def _epochs_since_improvement(history: list[dict], min_delta: float) -> int:
    best, bad = float("-inf"), 0
    for record in history:
        if record["val_accuracy"] > best + min_delta:
            best, bad = record["val_accuracy"], 0
        else:
            bad += 1
    return bad

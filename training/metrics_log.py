"""Where epoch metrics go: a summary log line, TensorBoard scalars and hparams, optionally W&B."""

import logging
from pathlib import Path

from training.config import TrainConfig

log = logging.getLogger(__name__)


class MetricsLogger:
    """Writes only when ``enabled`` (rank 0), so distributed runs log once."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.cfg = cfg
        self.writer = None
        self.wandb_run = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if cfg.wandb:
            self.wandb_run = _start_wandb(run_dir, cfg)

    def epoch(self, record: dict, samples_per_s: float, improved: bool) -> None:
        if not self.enabled:
            return
        e = record["epoch"]
        log.info(
            "epoch %d/%d  train_loss=%.4f train_acc=%.4f  val_loss=%.4f val_acc=%.4f  lr=%.3g  %.0f samples/s  %.1fs%s",
            e, self.cfg.epochs, record["train_loss"], record["train_accuracy"], record["val_loss"],
            record["val_accuracy"], record["lr"], samples_per_s, record["seconds"], "  *best*" if improved else "",
        )
        for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"),
                         ("train_accuracy", "accuracy/train"), ("val_accuracy", "accuracy/val"),
                         ("lr", "learning_rate")):
            self.writer.add_scalar(tag, record[key], e)
        self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(record, step=e)

    def finish(self, metrics: dict) -> None:
        if not self.enabled:
            return
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in self.cfg.to_dict().items() if v is not None}
        self.writer.add_hparams(hparams, {f"hparam/{k}": float(v) for k, v in metrics.items()},
                                run_name="hparams")
        self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.summary.update(metrics)
            self.wandb_run.finish()


def _start_wandb(run_dir: Path, cfg: TrainConfig):
    """Weights & Biases is optional: without the package, say so once and carry on."""
    try:
        import wandb
    except ImportError:
        log.warning("--wandb asked for, but wandb is not installed (pip install wandb); skipping it")
        return None
    return wandb.init(project="imgclf", name=run_dir.name, dir=str(run_dir), config=cfg.to_dict())

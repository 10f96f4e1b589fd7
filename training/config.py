"""The training configuration: one typed object, every field documented.

The command line is generated from these fields (``training.cli``), and the resolved values
are logged and stored in every checkpoint and artifact, so a run can always be explained and
repeated.
"""

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from training.recipes import RECIPE_NAMES

# Free of torch on purpose: ``python -m training --help`` builds its options from this module
# and answers at once. The data sources (``training.data.sources``) take their names from here.
DATASETS = ("fashion-mnist", "mnist", "cifar10", "imagefolder")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
AUGMENTATIONS = ("auto", "none", "crop", "crop-flip")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMALIZATIONS = ("dataset", "none")
TEST_TIME_AUGMENTATIONS = ("none", "hflip")  # models.tta's, named here without importing torch

# Learning rates that work for each optimizer when --lr is not given.
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2, "adadelta": 1.0}
# What a resumed run may change: where and how it runs, what it writes, when it stops early.
# Every other option shapes the data, model, optimizer or schedule the checkpoint was made with.
RESUME_MAY_CHANGE = frozenset({
    "device", "precision", "threads", "progress", "publish", "promote", "registry", "name", "wandb",
    "runs_dir", "run_name", "download", "resume", "patience", "min_delta",
})
# Schedules laid out over the run's total number of steps; the others ignore the run's length.
LENGTH_AWARE_SCHEDULERS = ("cosine", "onecycle")
# Options that matter only under some values of another option (their help names those values).
# The config line logged at the start of a run leaves them out elsewhere; checkpoints and
# artifacts still store every field.
APPLIES_ONLY = {
    "image_size": ("dataset", ("imagefolder",)),
    "channels": ("dataset", ("imagefolder",)),
    "test_fraction": ("dataset", ("imagefolder",)),
    "momentum": ("optimizer", ("sgd", "rmsprop")),
    "nesterov": ("optimizer", ("sgd",)),
    "betas": ("optimizer", ("adam", "adamw")),
    "warmup_epochs": ("scheduler", ("cosine",)),
    "ema_steps": ("ema", (True,)),
    "ema_decay": ("ema", (True,)),
    "step_size": ("scheduler", ("step",)),
    "gamma": ("scheduler", ("step",)),
}


def option(default: Any, help: str, choices: tuple | None = None, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help (and choices) as metadata."""
    meta = {"help": help, "choices": choices, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # --- data
    dataset: str = option("fashion-mnist", "dataset to train on", DATASETS)
    data_dir: str | None = option(
        None, "data directory (default: Debian's /usr/share/datasets/fashion-mnist, then ./data)"
    )
    feedback_dir: str | None = option(
        None, "also train on the labelled images clients sent to POST /feedback (the service's "
        "FEEDBACK_DIR: <label>/<sha256>.<ext>), converted with the dataset's input spec"
    )
    download: bool = option(False, "let torchvision download the dataset when it is missing")
    val_fraction: float = option(0.1, "share of the training set held out for validation (seeded)")
    test_fraction: float = option(0.1, "imagefolder without test/: share of train/ held out as test")
    image_size: int = option(32, "imagefolder: side length images are resized to")
    channels: int = option(3, "imagefolder: 1 (grayscale) or 3 (RGB)", (1, 3))
    normalize: str = option(
        "dataset", "dataset = subtract the training split's mean and divide by its std per channel; "
        "none = pixels scaled to [0, 1] only (ToTensor); recorded in the artifact's input spec, "
        "so the service does the same", NORMALIZATIONS
    )
    augment: str = option(
        "auto", "batch augmentation; auto = crop for the MNIST family, crop-flip otherwise", AUGMENTATIONS
    )
    # --- model
    model: str = option("wide_cnn", "architecture name from the models registry")
    model_kwargs: dict = option({}, "JSON object of architecture keyword arguments, e.g. '{\"width\": 48}'")
    pretrained_weights: str | None = option(
        None, "local state_dict file to start from (no downloads; default: random initialisation)"
    )
    freeze_backbone: bool = option(False, "train the classifier head only (transfer learning)")
    # --- optimisation
    recipe: str = option(
        "standard", "named option values laid under the options given (training.recipes): standard = "
        "the options' own values; demo = 1 epoch; long = wider, 40 epochs, flips, erasing, EMA and TTA "
        "(docs/training.md)", RECIPE_NAMES
    )
    epochs: int = option(15, "number of epochs")
    batch_size: int = option(256, "batch size (per process under torchrun)")
    optimizer: str = option("sgd", "optimizer name", OPTIMIZERS)
    lr: float | None = option(None, "peak learning rate (default depends on --optimizer)")
    momentum: float = option(0.9, "sgd/rmsprop momentum")
    nesterov: bool = option(True, "sgd: Nesterov momentum")
    weight_decay: float = option(5e-4, "weight decay (decoupled for adamw)")
    betas: list = option([0.9, 0.999], "adam/adamw betas", nargs=2, type=float)
    scheduler: str = option("onecycle", "learning-rate schedule", SCHEDULERS)
    warmup_epochs: float = option(1.0, "cosine: linear warm-up length in epochs")
    step_size: int = option(5, "step: epochs between decays")
    gamma: float = option(0.1, "step: decay factor")
    label_smoothing: float = option(0.1, "CrossEntropyLoss label smoothing")
    # --- regularisation: torchvision's classification reference's names; its EMA decay is
    # 0.99998 for 600-epoch ImageNet runs, ours 0.9998 for runs of 15-40 epochs (training/ema.py)
    ema: bool = option(False, "validate, test and publish an exponential moving average of the weights")
    ema_steps: int = option(32, "ema: optimizer steps between updates of the average (at least once per epoch)")
    ema_decay: float = option(
        0.9998, "ema: decay, scaled so the average spans epochs / ((1 - decay) * samples) epochs"
    )
    mixup_alpha: float = option(0.0, "mixup: Beta(alpha, alpha) mixing of image pairs (0 = off)")
    cutmix_alpha: float = option(0.0, "cutmix: Beta(alpha, alpha) pasted patches (0 = off; with mixup, "
                                 "each batch gets one of the two)")
    random_erasing: float = option(0.0, "probability of erasing a random rectangle of each training image")
    tta: str = option(
        "none", "test-time augmentation: hflip = average each image's and its mirror's probabilities "
        "(twice the inference cost); recorded in the artifact, so the service does the same",
        TEST_TIME_AUGMENTATIONS
    )
    # --- early stopping and selection (on validation accuracy)
    patience: int | None = option(
        None, "stop after this many epochs without improvement (default: never stop early)"
    )
    min_delta: float = option(0.0, "smallest validation-accuracy gain that counts as improvement")
    # --- runtime
    device: str = option("auto", "auto = cuda when available, else cpu", DEVICES)
    precision: str = option(
        "auto", "auto = bf16 autocast on CPUs with bf16 units, fp16 on older GPUs", PRECISIONS
    )
    threads: int | None = option(None, "torch intra-op threads (default: torch's own choice)")
    seed: int = option(0, "seed for splits, shuffling, augmentation and initialisation")
    # --- outputs
    runs_dir: str = option("runs", "where run directories (checkpoints, TensorBoard) go")
    run_name: str | None = option(None, "run directory name (default: <name>-<UTC timestamp>)")
    registry: str = option("registry", "model registry directory to publish to")
    name: str | None = option(None, "model name in the registry (default: the dataset name)")
    resume: str | None = option(None, "checkpoint (runs/<run>/checkpoints/last.pt) to resume exactly from")
    promote: bool = option(False, "point production at the published version")
    publish: bool = option(True, "publish the best checkpoint to the registry at the end")
    wandb: bool = option(False, "also log to Weights & Biases (needs `pip install wandb`)")
    progress: bool = option(True, "show a progress bar on interactive terminals")

    def __post_init__(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(
                    f"Invalid {f.name} {value!r}. Valid choices: {', '.join(map(str, choices))}."
                )
        from models import get_architecture  # here, not at the top: models imports torch

        get_architecture(self.model)  # unknown names fail now, listing the valid ones
        if isinstance(self.model_kwargs, str):
            self.model_kwargs = json.loads(self.model_kwargs)
        if self.epochs < 1 or self.batch_size < 1 or self.ema_steps < 1:
            raise ValueError("epochs, batch_size and ema_steps must be positive")
        if not 0.0 <= self.random_erasing <= 1.0 or not 0.0 < self.ema_decay < 1.0:
            raise ValueError("random_erasing must be a probability in [0, 1] and ema_decay in (0, 1)")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0 (0 turns them off)")
        if self.dataset == "mnist" and (self.augment == "crop-flip" or self.tta == "hflip"):
            raise ValueError("a mirrored digit is another digit (or none): MNIST takes no flips; "
                             "use --augment crop and --tta none")
        if self.patience is not None and self.patience < 1:
            # 0 would stop before the first epoch, leaving no best checkpoint to test and publish
            raise ValueError(f"patience must be at least 1 epoch, got {self.patience}; "
                             "leave it out to never stop early")

    @property
    def model_name(self) -> str:
        return self.name or self.dataset

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        """Plain values only: this goes into checkpoints loaded with ``weights_only=True``."""
        return {**asdict(self), "lr": self.resolved_lr, "name": self.model_name}

    def config_line(self, *, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        """The resolved config as this run uses it, for the log: ``input`` is what the model
        sees (``C x H x W``, from the data), and options that do not apply to this run
        (:data:`APPLIES_ONLY`, e.g. ``image_size`` outside imagefolder) are left out."""
        values = self.to_dict()
        for name, (controlling, applies_to) in APPLIES_ONLY.items():
            if values[controlling] not in applies_to:
                del values[name]
        line = {"dataset": values.pop("dataset"), "input": "x".join(map(str, input_shape))}
        return {**line, **values}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def with_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A config a checkpoint or a version recorded, with every option it predates at its
    default: it was made with that default (e.g. no weight average)."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(TrainConfig)}
    return {**defaults, **recorded}


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to resume, under ``cfg``, the run whose checkpoint config is ``saved`` when they
    differ in anything but the options of :data:`RESUME_MAY_CHANGE`.

    Why: the checkpoint's optimizer and scheduler states were built for its own config, and
    resuming continues exactly only under that config. Over another batch size or run length,
    onecycle crashes mid-epoch ("Tried to step 19 times") and cosine silently restarts at its
    peak learning rate. More epochs are fine with a schedule that ignores the run's length.
    """
    current = cfg.to_dict()
    saved = with_defaults(saved)
    changed = [key for key, value in saved.items()
               if key in current and key not in RESUME_MAY_CHANGE and current[key] != value]
    # the weight average's per-step decay is scaled by the run's length, as the schedules are
    if "epochs" in changed and cfg.scheduler not in LENGTH_AWARE_SCHEDULERS and not cfg.ema:
        changed.remove("epochs")
    if not changed:
        return
    listed = ", ".join(f"--{key.replace('_', '-')} {saved[key]!r} -> {current[key]!r}" for key in changed)
    epochs = (" --epochs may change only with --scheduler none or step and without --ema (both the "
              f"schedule, {cfg.scheduler}, and the weight average are laid out over the run's total "
              "steps)." if "epochs" in changed else "")
    raise ValueError(
        f"cannot resume {cfg.resume} with changed {listed}: these shape the data, model, optimizer "
        "or learning-rate schedule the checkpoint was made with, so the run would not continue "
        f"exactly. Leave them out to continue the run as it was, or start a new run.{epochs}"
    )

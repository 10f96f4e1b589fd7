"""``python -m training COMMAND``: the command line.

The ``train`` options are generated from :class:`~training.config.TrainConfig`, so the help
text, the defaults and the stored config can never disagree. This module imports neither torch
nor the data stack: each command imports what it needs when it runs, so ``--help`` answers at
once.

Exit status: 0 done; 1 the registry refused (an unknown version, nothing to roll back to, an
artifact that fails verification); 2 a usage error (an invalid option, a dataset, registry,
model or image file that is missing or is not what it should be; an export whose extra is not
installed, or that the exporter cannot make or that fails its parity check). ``schedule`` has its own
codes (:mod:`training.retrain.loop`). Errors end in one logged line, never a traceback.
"""

import argparse
import json
import logging
import sys
import types
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Union, get_args, get_origin

from training.config import DATASETS, TrainConfig
from training.export import DEFAULT_MAX_BATCH_SIZE, DEFAULT_OPSET, FORMATS
from training.recipes import with_recipe
from training.versions import cmd_export, cmd_report, cmd_switch, cmd_versions, registry_dir

log = logging.getLogger("training")

EXIT_REFUSED, EXIT_USAGE = 1, 2
# Input shapes of the built-in datasets, for `summary` without an artifact.
DATASET_SHAPES = {"fashion-mnist": (1, 28, 28, 10), "mnist": (1, 28, 28, 10), "cifar10": (3, 32, 32, 10)}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default once, as ``(default: X)``: not where the help already
    speaks of its default, nor for defaults that say nothing (None, a plain on/off flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        plain_flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if (not action.option_strings or plain_flag or "default" in text
                or action.default is None or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _scalar_type(annotation):
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs = {"help": meta.pop("help"), "default": default if with_defaults else argparse.SUPPRESS}
        choices = meta.pop("choices")
        kind = _scalar_type(f.type)
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            kwargs["type"] = json.loads
        else:
            kwargs["type"] = kind if kind in (int, float, str) else str
            if choices:
                kwargs["choices"] = choices
        kwargs.update(meta)  # e.g. nargs/type for --betas
        parser.add_argument(flag, **kwargs)


def explicit_options(train_argv: list[str]) -> dict:
    """Only the options the user typed (no defaults), to lay over a resumed run's config."""
    parser = argparse.ArgumentParser(add_help=False)
    add_config_arguments(parser, with_defaults=False)
    return vars(parser.parse_known_args(train_argv)[0])


def resolve_train_config(args: argparse.Namespace, train_argv: list[str]) -> TrainConfig:
    """The command line's config (the options given laid over ``--recipe``'s values, laid over
    the defaults: :func:`training.recipes.with_recipe`); with ``--resume``, the checkpoint's own config with only the
    options given explicitly laid over it, so ``--resume last.pt`` alone continues that run.
    Training then refuses overrides that would not continue it exactly
    (:func:`~training.config.check_resume_config`), exit status 2 like every config error."""
    if not args.resume:
        defaults = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**with_recipe(defaults, explicit_options(train_argv)))
    from training.checkpoint import load_checkpoint

    saved = load_checkpoint(Path(args.resume))["config"]
    return TrainConfig.from_dict({**saved, **explicit_options(train_argv), "resume": args.resume})


def cmd_train(args: argparse.Namespace) -> int:
    from training.distributed import run_training

    cfg = resolve_train_config(args, args.train_argv)
    result = run_training(cfg)
    if result is None:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    if result.version:
        where = Path(cfg.registry) / cfg.model_name / result.version
        promoted = " (promoted to production)" if cfg.promote else ""
        print(f"published {cfg.model_name} version {result.version} to {where}{promoted}")
    print(f"run directory: {result.run_dir}")
    print(f"test_accuracy={result.test_metrics['test_accuracy']:.4f}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    directory = registry_dir(args) if args.name else None
    import torchinfo

    import models
    from artifacts import registry

    if directory is not None:
        artifact = registry.load_artifact(directory, args.name, args.version)
        model, spec = artifact.model, artifact.input_spec
        shape = (spec.channels, spec.height, spec.width)
    else:
        channels, height, width, classes = DATASET_SHAPES.get(args.dataset, (3, 32, 32, 10))
        shape = (channels, height, width)
        model = models.build_model(args.model, num_classes=classes, in_channels=channels,
                                   image_size=(height, width), **args.model_kwargs)
    stats = torchinfo.summary(model, input_size=(1, *shape), verbose=0,
                              col_names=("output_size", "num_params"), device="cpu")
    print(stats)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    directory = registry_dir(args)  # before torch loads: a wrong directory fails at once
    from training.local_predict import predict_files

    for path, label, score in predict_files(directory, args.name, args.version, args.images):
        print(f"{path}: Predicted: {label} ({score:.1%})")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from training.retrain.loop import run_schedule

    return run_schedule(once=args.once, force=args.force)


def _add_model_options(parser: argparse.ArgumentParser, *, version: bool, name: str | None = "fashion-mnist") -> None:
    parser.add_argument("--registry", default="registry",
                        help="model registry directory, relative to the current directory")
    parser.add_argument("--name", default=name, help="model name in the registry" if name else
                        "summarise this published model instead of --model")
    if version:
        parser.add_argument("--version", help="published version (default: production)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", formatter_class=HelpFormatter,
        description="Train image classifiers, publish them to a model registry, and choose the "
                    "version that serves.",
        epilog="Run 'python -m training COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="how much to log on stderr")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str, func, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=summary, description=description or f"{summary[0].upper()}{summary[1:]}.",
                               formatter_class=HelpFormatter)
        child.set_defaults(func=func)
        return child

    train = command("train", cmd_train, "train, test and publish a model",
                    "Train a model, test its best epoch and publish it to the registry. A run "
                    "resumes with --resume runs/<run>/checkpoints/last.pt alone.")
    add_config_arguments(train)

    predict = command("predict", cmd_predict, "classify image files with a published model")
    predict.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    _add_model_options(predict, version=True)

    versions = command("versions", cmd_versions,
                       "list a model's published versions and which one is production")
    _add_model_options(versions, version=False)

    promote = command("promote", cmd_switch, "make a published version production",
                      "Verify a published version (sha256, weights-only load, architecture) and "
                      "point production at it; a running service reloads it.")
    promote.add_argument("version", help="the published version to serve (see 'versions')")
    _add_model_options(promote, version=False)

    rollback = command("rollback", cmd_switch, "return production to its previous version",
                       "Point production back at the version it had before its latest promotion, "
                       "after verifying that artifact. Rolling back twice goes two steps back.")
    rollback.set_defaults(version=None)
    _add_model_options(rollback, version=False)

    report = command("report", cmd_report, "print the per-class test report of a published version",
                     "Print the per-class table (precision, recall, F1, support, accuracy, calibration "
                     "error) of the report.json published with a version, after checking its sha256.")
    report.add_argument("version", nargs="?", default=None,
                        help="a published version, or 'production' (the default)")
    report.add_argument("--json", action="store_true", help="print report.json itself")
    _add_model_options(report, version=False)

    export = command("export", cmd_export, "export a published version as ONNX, torch.export and a Triton repository",
                     "Write a published version's exports beside it, in registry/NAME/exports/VERSION/ "
                     "(the version's own files are never changed): model.onnx (dynamo exporter, dynamic "
                     "batch), model.pt2 (torch.export), triton/ (a Triton model repository) and "
                     "export.json (the input contract and the sha256 of every file). Each format must "
                     "reproduce the model's probabilities on the golden set within 1e-4 before it is "
                     "written. ONNX and Triton need the export extra: pip install -e '.[export]'.")
    export.add_argument("version", nargs="?", default=None,
                        help="a published version, or 'production' (the default)")
    export.add_argument("--format", action="append", choices=(*FORMATS, "all"),
                        help="what to export; repeat for several (default: all)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (18 or newer)")
    export.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help="Triton's max_batch_size (dynamic batching forms batches up to it)")
    _add_model_options(export, version=False)

    summary = command("summary", cmd_summary, "layer table with output shapes and parameter counts")
    summary.add_argument("--model", default="wide_cnn", help="architecture name from the models registry")
    summary.add_argument("--model-kwargs", type=json.loads, default={},
                         help="JSON object of architecture keyword arguments")
    summary.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                         help="assume this dataset's input shape (imagefolder: 3x32x32)")
    _add_model_options(summary, version=True, name=None)

    schedule = command("schedule", cmd_schedule, "run the retraining job (settings from the environment)",
                       "Retrain on a schedule, promoting candidates that beat production. Settings "
                       "come from SCHEDULE_* and TRAIN_* variables (docs/retraining.md).")
    schedule.add_argument("--once", action="store_true", help="run one retraining and exit with its status")
    schedule.add_argument("--force", action="store_true",
                          help="train even when the data and recipe equal production's "
                               "(SCHEDULE_FORCE=true does the same)")
    return parser


def _exit_status(exc: Exception) -> int | None:
    """The exit status an expected error ends with; None for a bug (re-raised, with traceback)."""
    registry = sys.modules.get("artifacts.registry")  # a RegistryError exists only once it is loaded
    if registry is not None and isinstance(exc, registry.RegistryError):
        return EXIT_REFUSED
    if isinstance(exc, (ValueError, FileNotFoundError, RuntimeError)):
        return EXIT_USAGE
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.train_argv = argv[argv.index("train") + 1 :] if args.command == "train" else []
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as exc:
        status = _exit_status(exc)
        if status is None:
            raise
        log.error("%s", " ".join(str(exc).split()))  # one line, whatever the message held
        return status

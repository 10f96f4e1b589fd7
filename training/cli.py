"""``python -m training {train,schedule,summary,predict}``: the command line.

The ``train`` options are generated from :class:`~training.config.TrainConfig`, so the help
text, the defaults and the stored config can never disagree.
"""

import argparse
import json
import logging
import sys
import types
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Union, get_args, get_origin

from training.config import TrainConfig

log = logging.getLogger("training")

# Input shapes of the built-in datasets, for `summary` without an artifact.
DATASET_SHAPES = {"fashion-mnist": (1, 28, 28, 10), "mnist": (1, 28, 28, 10), "cifar10": (3, 32, 32, 10)}


def _scalar_type(annotation):
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs = {"help": f"{meta.pop('help')} (default: {default})",
                  "default": default if with_defaults else argparse.SUPPRESS}
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
    """The command line's config; with ``--resume``, the checkpoint's own config with only the
    options given explicitly laid over it, so ``--resume last.pt`` alone continues that run.
    Training then refuses overrides that would not continue it exactly
    (:func:`~training.config.check_resume_config`), exit status 2 like every config error."""
    if not args.resume:
        return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
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
    import torchinfo

    import models
    from artifacts import registry

    if args.name:
        artifact = registry.load_artifact(Path(args.registry), args.name, args.version)
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
    from training.local_predict import predict_files

    for path, label, score in predict_files(Path(args.registry), args.name, args.version, args.images):
        print(f"{path}: Predicted: {label} ({score:.1%})")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from training.retrain.loop import run_schedule

    return run_schedule(once=args.once)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, test and publish a model")
    add_config_arguments(train)
    train.set_defaults(func=cmd_train)

    schedule = sub.add_parser("schedule", help="the retraining job (settings from the environment)")
    schedule.add_argument("--once", action="store_true", help="run one retraining and exit with its status")
    schedule.set_defaults(func=cmd_schedule)

    summary = sub.add_parser("summary", help="layer table with output shapes and parameter counts")
    summary.add_argument("--model", default="wide_cnn")
    summary.add_argument("--model-kwargs", type=json.loads, default={})
    summary.add_argument("--dataset", default="fashion-mnist", help="input shape to assume")
    summary.add_argument("--registry", default="registry")
    summary.add_argument("--name", help="summarise a published model instead")
    summary.add_argument("--version", help="published version (default: production)")
    summary.set_defaults(func=cmd_summary)

    predict = sub.add_parser("predict", help="classify image files with a published model")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--registry", default="registry")
    predict.add_argument("--name", default="fashion-mnist")
    predict.add_argument("--version", help="published version (default: production)")
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.train_argv = argv[argv.index("train") + 1 :] if args.command == "train" else []
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2

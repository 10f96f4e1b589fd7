"""``python -m training versions | promote VERSION | rollback | report [VERSION] | export
[VERSION]``: which published version serves, what its test split says about it, and its
exports for serving elsewhere (ONNX, torch.export, Triton).

Promote and rollback go through :func:`artifacts.production.switch_production`, the one
implementation the service's admin endpoints use too, after verifying the artifact.
"""

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("training")


def registry_dir(args: argparse.Namespace) -> Path:
    """``--registry``, resolved, holding the model ``--name``. The default is relative to the
    current directory, so a command run elsewhere fails here, naming the path and the fix,
    rather than deep in the registry code."""
    directory = Path(args.registry).resolve()
    if not directory.is_dir():
        raise FileNotFoundError(f"no model registry at {directory}: run from the directory that holds "
                                "it (the repository root) or pass --registry DIR")
    if not (directory / args.name).is_dir():
        names = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise FileNotFoundError(f"no model {args.name!r} in the registry {directory}: pass --name "
                                f"NAME (models there: {', '.join(names) or 'none'})")
    return directory


def cmd_versions(args: argparse.Namespace) -> int:
    directory = registry_dir(args)
    from artifacts import registry
    from artifacts.metadata import read_metadata

    current = _production(directory, args.name)
    rows = [("VERSION", "TEST_ACCURACY", "CREATED_AT", "")]
    for version in registry.list_versions(directory, args.name):
        try:
            metadata = read_metadata(registry.model_dir(directory, args.name) / version)
        except registry.RegistryError as exc:
            rows.append((version, "?", f"unreadable: {' '.join(str(exc).split())}", ""))
            continue
        accuracy = (metadata.get("metrics") or {}).get("test_accuracy")
        accuracy = f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else "-"
        rows.append((version, accuracy, metadata.get("created_at") or "-",
                     "production" if version == current else ""))
    if len(rows) == 1:
        print(f"{args.name} has no published versions in {directory}")
        return 0
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for version, accuracy, created, mark in rows:
        print(f"{version:<{width[0]}}  {accuracy:<{width[1]}}  {created:<{width[2]}}  {mark}".rstrip())
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    """``promote VERSION`` and ``rollback`` (``args.version`` None): through the one
    implementation the service's admin endpoints use, after verifying the artifact."""
    directory = registry_dir(args)
    from artifacts import production, registry

    def verify(version: str) -> str | None:
        """Load ``version`` as the service would (sha256, weights-only, architecture); returns
        the production it replaces, read under the production lock, just before the change."""
        registry.load_artifact(directory, args.name, version)
        return _production(directory, args.name)

    target, previous = production.switch_production(directory, args.name, args.version, check=verify)
    if previous == target:
        print(f"production: {target} (unchanged)")
    else:
        print(f"production: {previous or 'none'} -> {target}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report [VERSION]``: the per-class table of a version's ``report.json`` (``--json``:
    the file itself), read through the same sha256 check the service applies to it."""
    directory = registry_dir(args)
    from artifacts import registry
    from artifacts.metadata import read_metadata

    version = _published_version(directory, args.name, args.version)
    version_dir = registry.model_dir(directory, args.name) / version
    metadata = read_metadata(version_dir)
    try:
        data = registry.read_verified(version_dir, metadata, registry.REPORT_FILE)
    except FileNotFoundError:
        raise registry.RegistryError(f"{args.name} version {version} has no {registry.REPORT_FILE}: it was published "
                                     "before reports existed (retrain to get one)") from None
    if args.json:
        print(data.decode("utf-8").rstrip())
        return 0
    from training.report.metrics import format_class_table

    try:
        table = format_class_table(json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise registry.ArtifactValidationError(
            f"{version_dir / registry.REPORT_FILE} is not a report this code can read "
            f"({type(exc).__name__}: {exc}); --json prints it as it is") from exc
    serving = " (production)" if version == _production(directory, args.name) else ""
    print(f"{args.name} version {version}{serving}: test split")
    print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``export [VERSION] --format F``: write the version's exports beside it
    (:mod:`training.export`), after verifying the artifact as the service would."""
    directory = registry_dir(args)
    from training.export import FORMATS
    from training.export.exporter import export_version

    version = _published_version(directory, args.name, args.version)
    formats = FORMATS if not args.format or "all" in args.format else list(dict.fromkeys(args.format))
    result = export_version(directory, args.name, version, formats, opset=args.opset,
                            max_batch_size=args.max_batch_size)
    print(f"exported {args.name} version {version} to {result.directory}")
    for fmt in formats:
        entry = result.manifest["formats"][fmt]
        parity = entry["parity"]
        print(f"  {fmt:<13} {', '.join(entry['files'])}  (max |dp| {parity['max_abs_probability_difference']:.1e}"
              f" on {parity['images']} images: {parity['inputs']})")
    if "triton" in formats:
        print(f"serve it: tritonserver --model-repository={result.directory / 'triton'}")
    return 0


def _published_version(directory: Path, name: str, version: str | None) -> str:
    """``version`` checked to be published; None or ``production``: the production version."""
    from artifacts.registry import RegistryError, list_versions, read_production, validate_version

    if version in (None, "production"):
        current = read_production(directory, name)
        if current is None:
            raise RegistryError(f"{name} has no production version in {directory}: name a version "
                                "(see 'versions')")
        return current
    validate_version(version)
    published = list_versions(directory, name)
    if version not in published:
        raise RegistryError(f"{name} version {version} is not published; published versions: "
                            f"{', '.join(published) or 'none'}")
    return version


def _production(directory: Path, name: str) -> str | None:
    from artifacts.registry import RegistryError, read_production

    try:
        return read_production(directory, name)
    except RegistryError as exc:
        log.warning("%s", exc)
        return None

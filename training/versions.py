"""``python -m training versions | promote VERSION | rollback``: which published version serves.

Promote and rollback go through :func:`artifacts.production.switch_production`, the one
implementation the service's admin endpoints use too, after verifying the artifact.
"""

import argparse
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

    current = _production(directory, args.name)
    rows = [("VERSION", "TEST_ACCURACY", "CREATED_AT", "")]
    for version in registry.list_versions(directory, args.name):
        try:
            metadata = registry.read_metadata(registry.model_dir(directory, args.name) / version)
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


def _production(directory: Path, name: str) -> str | None:
    from artifacts.registry import RegistryError, read_production

    try:
        return read_production(directory, name)
    except RegistryError as exc:
        log.warning("%s", exc)
        return None

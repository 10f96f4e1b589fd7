"""What a version was trained on, as a fingerprint: equal fingerprints, equal data.

Each source contributes what identifies its content:

- a dataset read from fixed files (the MNIST family's idx files, CIFAR-10's batches): the
  sha256 of every file;
- a growing set of files (the feedback store, a user's ImageFolder): the sorted manifest of
  ``(content sha256, label[, part])``; the manifest itself is published beside the version
  (``dataset.json``) so that the next run can say which samples are new.

The fingerprint is the sha256 of that description, and goes into ``metadata.json`` with the
sample counts per source, split and class. The scheduled job skips a run whose fingerprint and
recipe equal production's (docs/retraining.md).
"""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifacts.storage import sha256_file
from training.data.sources import ImageTensors

MANIFEST_FILE = "dataset.json"


@dataclass(frozen=True)
class DataFingerprint:
    sha256: str
    sources: dict[str, dict[str, Any]]  # per source: {"files": {name: sha}} or {"samples", "manifest_sha256"}
    manifest: dict[str, list[list[str]]]  # per growing source: its sorted sample manifest

    def to_metadata(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "sources": self.sources}

    def manifest_bytes(self) -> bytes:
        return json.dumps(self.manifest, separators=(",", ":")).encode()

    def new_samples(self, previous: dict[str, Any] | None, previous_manifest: dict[str, Any] | None,
                    totals: dict[str, int]) -> dict[str, int]:
        """Per source, how many samples the previous version (its metadata fingerprint and
        manifest) did not have; a changed fixed file counts its whole source as new."""
        previous_sources = (previous or {}).get("sources", {})
        new: dict[str, int] = {}
        for name, description in self.sources.items():
            if name in self.manifest:
                known = {tuple(entry) for entry in (previous_manifest or {}).get(name, [])}
                new[name] = sum(1 for entry in self.manifest[name] if tuple(entry) not in known)
            else:
                new[name] = 0 if previous_sources.get(name) == description else totals.get(name, 0)
        return new


def fingerprint(files: dict[str, list[Path]], manifests: dict[str, list[list[str]]]) -> DataFingerprint:
    """The fingerprint of fixed-file sources (``files``: source -> the files it read) and
    growing ones (``manifests``: source -> its ``[sha256, label, ...]`` entries)."""
    sources: dict[str, dict[str, Any]] = {}
    for name, paths in files.items():
        sources[name] = {"files": {p.name: sha256_file(p) for p in sorted(paths, key=lambda p: p.name)}}
    ordered = {name: sorted(entries) for name, entries in manifests.items()}
    for name, entries in ordered.items():
        digest = hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
        sources[name] = {"samples": len(entries), "manifest_sha256": digest}
    canonical = json.dumps(sources, sort_keys=True, separators=(",", ":")).encode()
    return DataFingerprint(hashlib.sha256(canonical).hexdigest(), sources, ordered)


def count_samples(splits: dict[str, ImageTensors], classes: list[str], default_source: str
                  ) -> dict[str, dict[str, dict[str, int]]]:
    """``{source: {split: {label: count}}}`` over ``splits`` (``train``, ``val``, ``test``)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for split, data in splits.items():
        pairs = Counter(zip(data.source_names(default_source), data.labels.tolist(), strict=True))
        for (source, label), n in sorted(pairs.items()):
            counts.setdefault(source, {}).setdefault(split, {})[classes[label]] = n
    return counts

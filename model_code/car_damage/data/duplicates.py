"""Byte-identical duplicate images inside a split and across splits (train/val leakage), by SHA-256.

A validation image that is also a training image inflates every validation metric; the real seed data leaks three
val images into train. Training reports these groups as warnings; ``DuplicateReport.leaked(split)`` names the files
of one split that appear in another, so callers can drop them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, order=True)
class FileRef:
    """A file of a split, written ``split/name`` in reports."""

    split: str
    name: str

    def __str__(self) -> str:
        return f"{self.split}/{self.name}"


@dataclass(frozen=True)
class DuplicateGroup:
    """Two or more files with the same bytes; ``files`` sorted by (split, name)."""

    sha256: str
    files: tuple[FileRef, ...]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(sorted({ref.split for ref in self.files}))

    @property
    def crosses_splits(self) -> bool:
        return len(self.splits) > 1

    def describe(self) -> str:
        kind = "leak across " + "/".join(self.splits) if self.crosses_splits else f"duplicate in {self.splits[0]}"
        return f"{kind}: " + " = ".join(str(ref) for ref in self.files)


@dataclass(frozen=True)
class DuplicateReport:
    groups: tuple[DuplicateGroup, ...]

    @property
    def cross_split(self) -> tuple[DuplicateGroup, ...]:
        return tuple(group for group in self.groups if group.crosses_splits)

    def within(self, split: str) -> tuple[DuplicateGroup, ...]:
        """Groups with at least two files in ``split`` (they may also reach into other splits)."""
        return tuple(group for group in self.groups if sum(ref.split == split for ref in group.files) > 1)

    def leaked(self, split: str) -> list[str]:
        """Names in ``split`` whose bytes also appear in another split, sorted."""
        return sorted(ref.name for group in self.cross_split for ref in group.files if ref.split == split)

    def lines(self) -> list[str]:
        return [group.describe() for group in self.groups]

    def __bool__(self) -> bool:
        return bool(self.groups)


def find_duplicates(splits: Mapping[str, Iterable[str | Path]]) -> DuplicateReport:
    """Hash every file of every split; groups of identical files, sorted by their first file."""
    by_hash: dict[str, list[FileRef]] = {}
    for split, paths in splits.items():
        for path in paths:
            path = Path(path)
            by_hash.setdefault(sha256_file(path), []).append(FileRef(split, path.name))
    groups = [
        DuplicateGroup(sha256=digest, files=tuple(sorted(refs))) for digest, refs in by_hash.items() if len(refs) > 1
    ]
    groups.sort(key=lambda group: group.files)
    return DuplicateReport(groups=tuple(groups))

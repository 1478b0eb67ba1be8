"""Atomic file writes: a reader (or a resumed job) sees the old file or the new one, never half."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` (after an fsync)
    when the block ends without error, removed when it raises.

    The temporary name keeps the file's suffixes (``.mask.tmp123.nii.gz`` for ``mask.nii.gz``),
    so writers that choose the format by suffix (nibabel, matplotlib) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base, dot, rest = path.name.partition(".")
    tmp = path.with_name(f".{base}.tmp{os.getpid()}{dot}{rest}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)

"""File helpers: atomic writes (a reader sees the old file or the new one, never half) and the
natural order of file names."""

from __future__ import annotations

import os
import re
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


def natural_key(text: str) -> tuple:
    """Sort key in which digit runs compare as numbers: ``IM-2 < IM-10``, ``z2.png < z10.png``.

    Text parts (case-insensitive) sit at even positions and numbers at odd ones, so two keys
    never compare a string with an int.
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))

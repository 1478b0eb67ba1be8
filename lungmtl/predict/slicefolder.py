"""A folder of 2D slice images (PNG, JPEG, TIFF) read as one scan: ordered by the numbers in the
file names, unreadable files skipped and their place marked as a gap, spacing unknown unless the
user gives it. How many datasets and tools export a scan."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.dicom import GAP_FACTOR, is_dicom_file
from ..data.image import RASTER_SUFFIXES, ImageData, suffix_of
from ..data.io import read_image
from ..errors import InputError
from ..files import natural_key


def id_breaks(ids: list[str]) -> np.ndarray | None:
    """Gaps in numeric slice ids: a step over GAP_FACTOR x the median step (None: not numbers)."""
    numbers = pd.to_numeric(pd.Series(ids, dtype=object), errors="coerce").to_numpy(float)
    if len(numbers) < 2 or not np.isfinite(numbers).all():
        return None
    steps = np.abs(np.diff(numbers))
    median = float(np.median(steps))
    if median <= 0:
        return None
    return np.r_[False, steps > GAP_FACTOR * median]


def slice_images(folder: Path) -> list[Path]:
    """The slice images of a folder (natural order of their names), or [] where it holds DICOM
    files (a series) or no images."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    images = [p for p in files if suffix_of(p) in RASTER_SUFFIXES]
    if not images or any(is_dicom_file(p) for p in files if p not in images):
        return []
    return sorted(images, key=lambda p: natural_key(p.name))


def _number(name: str) -> str | None:
    found = re.findall(r"\d+", Path(name).stem)
    return found[-1] if found else None


def read_slice_folder(
    folder: Path, check: Callable[[Path], None]
) -> tuple[ImageData, list[str], list[str], np.ndarray | None, dict]:
    """The folder's images as one (Z, H, W) 8-bit volume.

    Args:
        folder: the folder.
        check: called on each file first (refuses colour pictures); its InputError skips it.

    Returns:
        The image (spacing 1, no geometry), slice ids (the numbers in the file names, else the
        names), notes for the summary, breaks (True where slices are missing: a skipped file or
        a jump in the numbers) and what was read (for summary.json's ``input``).

    Raises:
        InputError: no readable image, or images of different sizes.
    """
    files = slice_images(folder)
    arrays, names, skipped, marks = [], [], [], []
    gap = False  # a file skipped since the last slice kept: the next slice starts a new run
    for f in files:
        try:
            check(f)
            data = read_image(f)
            if data.array.ndim != 2:
                raise InputError(f, f"not a 2D slice image (shape {data.array.shape})")
        except InputError as e:
            skipped.append((f.name, e.problem))
            gap = bool(arrays)
            continue
        arrays.append(data.array)
        names.append(f.name)
        marks.append(gap)
        gap = False
    if not arrays:
        raise InputError(folder, f"none of its {len(files)} slice image(s) could be read")
    shapes = pd.Series([a.shape for a in arrays]).value_counts()
    if len(shapes) > 1:
        sizes = ", ".join(f"{n} x {s}" for s, n in shapes.items())
        raise InputError(folder, f"its slice images differ in size ({sizes}): not one scan")
    numbers = [_number(n) for n in names]
    numbered = all(numbers) and len(set(numbers)) == len(numbers)
    ids = [str(int(n)) for n in numbers] if numbered else names
    breaks = id_breaks(ids) if numbered else None
    if any(marks):
        breaks = np.array(marks) if breaks is None else breaks | np.array(marks)
    notes = [f"{folder}: {len(names)} slice images read as one scan, in the order of their names"]
    if skipped:
        shown = "; ".join(f"{n}: {why}" for n, why in skipped[:3])
        notes.append(f"{len(skipped)} unreadable slice image(s) skipped, gap marked ({shown})")
    info = {
        "kind": "image folder",
        "slices": len(names),
        "skipped": [n for n, _ in skipped],
        "order": "numbers in the file names" if numbered else "file names (natural order)",
    }
    data = ImageData(np.stack(arrays).astype(np.float32), "8bit", (1.0, 1.0, 1.0), None, folder)
    return data, ids, notes, breaks, info

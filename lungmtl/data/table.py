"""The slice table (a DataFrame) that every source adapter returns: its columns and label values.

One row per axial slice, columns :data:`COLUMNS` (see docs/data-format.md):

* ``image``: absolute path; ``index``: z index inside a volume file, -1 for a 2D file;
* ``mask``, ``mask_multiclass``, ``lung_mask``: absolute paths or ``""`` (volume masks share
  ``index``);
* ``label`` (``infected``/``healthy``), ``label_level`` (``slice``/``study``), ``patient``,
  ``slice``, ``source`` (the dataset: manifest folder or adapter name), ``subsource`` (the
  manifest's own ``source`` column, or the adapter's sub-collection), ``split``, ``has_mask``.

``source`` is what per-source results group by; ``subsource`` is kept apart because in some
manifests it encodes the label (MosMed ``mosmed-CT-0`` = healthy), so grouping by it would leak.

Label conventions for mask files: values 1 and 2 (ground-glass, consolidation) are infection;
0 is background and 3 and above (MedSeg's pleural effusion) are not infection. A volume slice is
``infected`` (slice level) when its infection mask is non-empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = [
    "image",
    "index",
    "mask",
    "mask_multiclass",
    "lung_mask",
    "label",
    "label_level",
    "patient",
    "slice",
    "source",
    "subsource",
    "split",
    "has_mask",
]
LABELS = ("infected", "healthy")
LABEL_LEVELS = ("slice", "study")
INFECTION_LABELS = (1, 2)


def slice_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    for c in COLUMNS:
        if c == "index":
            df[c] = df[c].astype(np.int64)
        elif c == "has_mask":
            df[c] = df[c].astype(bool)
        else:
            df[c] = df[c].astype(object).fillna("").astype(str)
    return df.reset_index(drop=True)


def abs_path(path: Path) -> str:
    # normpath, not resolve(): keep the user's symlinked data folders recognisable.
    return os.path.normpath(str(path.absolute()))

"""Pre-process once, cache as compact arrays keyed by the pre-processing config and inputs.

A cache folder holds ``images.npy`` (N,S,S float16), ``masks.npy`` (N,S,S uint8 0/1),
``multiclass.npy`` (0 bg, 1 ground-glass, 2 consolidation, 255 unknown), ``lungs.npy`` (N,S,S
uint8 0/1), ``table.csv`` (the slice table of the cached rows, with ``image_hash``),
``skipped.csv`` and ``meta.json``. It is written into a temporary folder and renamed into place,
so a crash never leaves a partial cache; training memory-maps the arrays and never recomputes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..errors import InputError
from .preprocess import PreprocessConfig, preprocess_slice
from .sources import load_slice

CACHE_VERSION = 2  # 2: lung-cropped slices keep their border lungs (lungmask.is_lung_crop)
UNKNOWN = 255


@dataclass
class SliceCache:
    """Pre-processed slices, memory-mapped. Row i of every array is row i of ``table``."""

    root: Path
    table: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray
    multiclass: np.ndarray
    lungs: np.ndarray
    config: PreprocessConfig

    def __len__(self) -> int:
        return len(self.table)


def cache_key(table: pd.DataFrame, config: PreprocessConfig) -> str:
    """Hash of the pre-processing config and every input file's path, size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    h.update(f"v{CACHE_VERSION}".encode())
    stat_cache: dict[str, str] = {}
    for col in ("image", "mask", "mask_multiclass", "lung_mask"):
        for p in table[col].astype(str):
            if p and p not in stat_cache:
                try:
                    st = os.stat(p)
                    stat_cache[p] = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    stat_cache[p] = "missing"
    cols = ["image", "index", "mask", "mask_multiclass", "lung_mask", "label", "patient", "source"]
    for row in table[cols].astype(str).itertuples(index=False):
        h.update("|".join(row).encode())
        files = (row[0], row[2], row[3], row[4])  # image, mask, mask_multiclass, lung_mask
        h.update("|".join(stat_cache.get(p, "") for p in files).encode())
    return h.hexdigest()[:20]


def _process(args: tuple[dict, PreprocessConfig]) -> tuple | InputError:
    row, config = args
    try:
        s = load_slice(row)
        p = preprocess_slice(
            s.image,
            s.kind,
            mask=s.mask,
            mask_multiclass=s.mask_multiclass,
            lung_mask=s.lung_mask,
            config=config,
        )
    except InputError as e:
        return e
    except Exception as e:  # a reader's own exception: report it against the file
        return InputError(row["image"], f"{type(e).__name__}: {e}")
    size = (config.size, config.size)
    mask = p.mask if p.mask is not None else np.zeros(size, np.uint8)
    multi = p.mask_multiclass if p.mask_multiclass is not None else np.full(size, UNKNOWN, np.uint8)
    img16 = p.image.astype(np.float16)
    digest = hashlib.sha1(np.ascontiguousarray(img16).tobytes()).hexdigest()[:16]
    return img16, (mask > 0).astype(np.uint8), multi, p.lung_mask.astype(np.uint8), digest


def build_cache(
    table: pd.DataFrame,
    config: PreprocessConfig,
    cache_dir: str | Path,
    *,
    skip_bad: bool = False,
    workers: int = 1,
    progress: bool = True,
    rows: Sequence[int] | None = None,
) -> SliceCache:
    """Pre-process every row of ``table`` (or reuse the cache built from the same inputs).

    Args:
        skip_bad: drop rows that fail to read or pre-process and list them in ``skipped.csv``;
            otherwise the first failure raises ``InputError`` naming the file and row, and
            nothing is written.
        workers: processes for pre-processing (1 = in this process).
        rows: the row number that names each row of ``table`` in messages and ``skipped.csv``
            (its manifest row, 1 = the first data line); default: its position, from 1.
    """
    cache_dir = Path(cache_dir).expanduser()
    root = cache_dir / cache_key(table, config)
    if (root / "meta.json").exists():
        cache = open_cache(root)
        if not skip_bad:  # built by a run that skipped bad slices: this one wants to know
            report = skipped_report(cache)
            if len(report):
                first = report.iloc[0]
                raise InputError(
                    str(first["file"]),
                    f"{first['problem']} ({len(report)} unreadable slice(s) in all, listed "
                    f"in {root / 'skipped.csv'}; set data.skip_bad=true to train without them)",
                    row=int(first["row"]),
                )
        return cache
    table = table.reset_index(drop=True)
    rows = list(range(1, len(table) + 1)) if rows is None else [int(r) for r in rows]
    jobs = [(r, config) for r in table.to_dict("records")]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(
                tqdm(
                    pool.map(_process, jobs, chunksize=16),
                    total=len(jobs),
                    disable=not progress,
                    desc="pre-processing",
                )
            )
    else:
        results = [_process(j) for j in tqdm(jobs, disable=not progress, desc="pre-processing")]
    ok, skipped = [], []
    for i, r in enumerate(results):
        if isinstance(r, InputError):
            if not skip_bad:
                raise InputError(r.where, r.problem, row=rows[i])
            skipped.append({"row": rows[i], "file": r.where, "problem": r.problem})
        else:
            ok.append(i)
    if not ok:
        raise InputError(cache_dir, "no slice could be pre-processed")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=cache_dir))
    try:
        arrays = {"images": 0, "masks": 1, "multiclass": 2, "lungs": 3}
        for name, k in arrays.items():
            np.save(tmp / f"{name}.npy", np.stack([results[i][k] for i in ok]))
        kept = table.iloc[ok].reset_index(drop=True).assign(image_hash=[results[i][4] for i in ok])
        kept.to_csv(tmp / "table.csv", index=False)
        pd.DataFrame(skipped, columns=["row", "file", "problem"]).to_csv(
            tmp / "skipped.csv", index=False
        )
        meta = {
            "version": CACHE_VERSION,
            "config": dataclasses.asdict(config),
            "n": len(ok),
            "skipped": len(skipped),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(root)


def open_cache(root: str | Path) -> SliceCache:
    """Memory-map a finished cache folder."""
    root = Path(root)
    try:
        meta = json.loads((root / "meta.json").read_text())
        table = pd.read_csv(
            root / "table.csv", keep_default_na=False, dtype={"patient": str, "slice": str}
        )
        arrays = {
            n: np.load(root / f"{n}.npy", mmap_mode="r")
            for n in ("images", "masks", "multiclass", "lungs")
        }
    except (OSError, ValueError, KeyError) as e:
        raise InputError(root, f"broken cache folder ({e}); delete it to rebuild") from None
    config = PreprocessConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    )
    return SliceCache(root=root, table=table, config=config, **arrays)


def skipped_report(cache: SliceCache) -> pd.DataFrame:
    """What the build skipped (file, problem)."""
    return pd.read_csv(cache.root / "skipped.csv", keep_default_na=False)

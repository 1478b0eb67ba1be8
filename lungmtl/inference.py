"""predict(): scans and slices in, infection masks, verdicts, burden and a report out.

One *case* per input: a DICOM series folder, a NIfTI (or ``.npy``) volume, a single slice
(PNG/JPEG/TIFF/DICOM file), or, for a folder in the manifest layout, one case per patient.
Per case the steps are timed (read, preprocess, model, postprocess, write) and written under
``OUT/<case>/``: ``mask.nii.gz`` (the input's geometry), ``slices.csv``, ``summary.json``,
``overlays.png``, ``thumbnail.jpg`` and ``report.html`` (self-contained: a viewer of every
slice with the masks and Grad-CAM, see :mod:`lungmtl.html_report`); ``OUT/index.html`` lists
the cases of a run, the failed ones with their reasons.

Decisions:

* Pre-processing is the checkpoint's own ``run_config["preprocess"]`` through the same
  :func:`lungmtl.data.preprocess.preprocess_slice` as training. The model works at that size; the
  probabilities are resized back to the native slice size bilinearly (into the slice's crop box
  where the run crops to the lungs) and thresholded at 0.5.
* Scan verdict: **infected when at least ``min_consecutive`` (default 3) consecutive slices have
  P(infected) >= 0.5** (all slices when the scan has fewer), so one noisy slice does not decide.
* Burden: infected volume = predicted mask voxels x voxel volume (mL; only where the input has
  real geometry: DICOM, NIfTI); percent of lung = |mask within lung| / |lung|, with the dataset's
  lung mask where a manifest gives one, else the lung mask derived during pre-processing.
* Bad input fails its own case with a message naming the file; other cases go on. Refused: DICOM
  folders with several series, series with missing slices (unless ``allow_gaps``), colour pictures
  (not CT), random noise, scans where no slice shows lung, unreadable files; a scan showing little
  lung gets a warning. Any other error of one case (out of memory, a full disk) also fails only
  that case; Ctrl-C stops the run (the finished cases stay whole).
* Case names (folders under OUT) are unique over the whole input list, computed before sharding,
  so every shard names every case the same way (``CT``, ``CT_2`` for two inputs named CT).
* A case folder is finished when its ``summary.json`` exists and names the same input; it is
  removed before a case is redone, the other files are written to a hidden folder beside them
  and renamed into place (each file whole), and ``summary.json`` comes last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .cases import DONE_BEFORE, Case, CaseResult
from .config import RunConfig, from_dict
from .data.dicom import GAP_FACTOR
from .data.image import RASTER_SUFFIXES, ImageData, affine_spacing, suffix_of
from .data.io import read_image, write_mask_like
from .data.manifest import read_manifest
from .data.preprocess import PreprocessConfig, paste_back, preprocess_slice
from .data.sources import load_slice
from .device import resolve_device
from .errors import InputError
from .files import write_text
from .models import MultiTaskOutput, checkpoint
from .models.shipped import default_checkpoint
from .predict_core import gate_masks, predict_images
from .scan_rule import ScanRule, longest_run  # noqa: F401  (longest_run: re-exported)

THRESHOLD = 0.5
MIN_CONSECUTIVE = 3
INTENDED_USE = "Research use only, not for diagnosis."
#: A scan "shows lungs" when some slice's lung mask covers at least this fraction of it.
MIN_LUNG_FRACTION = 0.01
#: Below this largest lung share the case is predicted with a warning (apex, bases, a crop).
FEW_LUNG_FRACTION = 0.05
#: Correlation of neighbouring pixels below which an image is noise, not CT (real slices: > 0.5).
MIN_NEIGHBOUR_CORRELATION = 0.25
#: Mean spread between the R, G and B channels (0..255) above which a picture is not a CT slice.
MAX_COLOUR_SPREAD = 12.0
STAGES = ("read", "preprocess", "model", "postprocess", "write")
#: Hidden folder in a case folder that its files are written to before they are renamed into it.
STAGING_PREFIX = ".writing-"


@dataclass(frozen=True)
class PredictOptions:
    """Settings of a prediction run.

    Args:
        device: "auto", "cpu", "cuda", ...
        batch_size: slices per forward pass.
        threshold: probability threshold for slice labels and masks.
        min_consecutive: positive slices in a row that make a scan infected.
        crf: refine segmentation probabilities with the CRF (:mod:`lungmtl.crf`).
        gradcam: number of most affected slices explained by Grad-CAM (0 = none).
        top_k: number of most affected slices listed in the summary.
        allow_gaps: accept DICOM series with missing slices (with a warning in the summary).
        threads: torch CPU threads (None = torch's default).
        report: write overlays.png, thumbnail.jpg, report.html and OUT/index.html.
        shard: (k, n): predict only inputs k, k+n, k+2n, ... so that n processes (or torchrun
            ranks) share a large batch of scans without overlap.
        resume: skip cases whose ``summary.json`` (written last) already exists for the same
            input; a case folder holding another input's results is predicted again.
        rule: the scan rule (:class:`lungmtl.scan_rule.ScanRule`); None = the one the
            checkpoint carries, else ``min_consecutive`` slices in a row at ``threshold``.
        engine: "torch" (eager PyTorch) or "onnx": the model stage through ONNX Runtime on the
            CPU, on the model exported as ``lungmtl export`` does (about 1.5x eager PyTorch on
            the 2-core development CPU, docs/performance.md); Grad-CAM still uses PyTorch.
    """

    device: str = "auto"
    batch_size: int = 16
    threshold: float = THRESHOLD
    min_consecutive: int = MIN_CONSECUTIVE
    crf: bool = False
    gradcam: int = 3
    top_k: int = 5
    allow_gaps: bool = False
    threads: int | None = None
    report: bool = True
    shard: tuple[int, int] = (0, 1)
    resume: bool = False
    engine: str = "torch"
    rule: ScanRule | None = None

    def __post_init__(self) -> None:
        # Refused up front, not by every case with an internal message naming its input.
        counts = {"batch_size": 1, "min_consecutive": 1, "gradcam": 0, "top_k": 0}
        for name, least in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(name, f"must be an integer >= {least}, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InputError("threads", f"must be an integer >= 1, got {self.threads!r}")
        if not 0.0 < self.threshold < 1.0:
            raise InputError("threshold", f"must lie in (0, 1), got {self.threshold!r}")


@dataclass
class Predictor:
    """A model with the pre-processing it was trained with."""

    model: torch.nn.Module
    preprocess: PreprocessConfig
    device: torch.device
    checkpoint: str = ""
    runner: torch.nn.Module | None = None  # what runs the slices, where not ``model`` (ONNX)
    rule: ScanRule | None = None  # the scan rule the checkpoint carries (chosen on validation)
    model_name: str = ""
    mask_gate: float | None = None  # masks only on slices with P(infected) >= this (checkpoint)


def scan_rule(predictor: Predictor, opts: PredictOptions) -> ScanRule:
    """The options' rule, else the checkpoint's, else the plain run rule of the options."""
    if opts.rule is not None:
        return opts.rule
    if predictor.rule is not None:
        return predictor.rule
    return ScanRule(slice_threshold=opts.threshold, min_run=opts.min_consecutive)


# ---------------------------------------------------------------- model

ENGINES = ("torch", "onnx")


def load_predictor(checkpoint_path: str | Path, device: str = "auto") -> Predictor:
    """Load a checkpoint with its pre-processing settings.

    Raises:
        InputError: the checkpoint has no run config (its pre-processing would be a guess).
    """
    ck = checkpoint.read(checkpoint_path)
    if "run_config" not in ck:
        raise InputError(
            checkpoint_path, "checkpoint has no run config, so its pre-processing is unknown"
        )
    cfg: RunConfig = from_dict(RunConfig, ck["run_config"], "checkpoint run_config")
    dev = resolve_device(device)
    model = checkpoint.load(checkpoint_path).to(dev).eval()
    # channels_last is measurably faster for these convolutions on CPU too (benchmarks/scan.py).
    model = model.to(memory_format=torch.channels_last)
    rule = ScanRule.from_dict(ck["scan_rule"]) if ck.get("scan_rule") else None
    name = ck.get("model_name") or Path(str(checkpoint_path)).name
    return Predictor(
        model,
        cfg.preprocess,
        dev,
        str(checkpoint_path),
        rule=rule,
        model_name=name,
        mask_gate=ck.get("mask_gate"),
    )


def run_model(
    predictor: Predictor, images: np.ndarray, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """P(infected) (N,) and infection probability maps (N, S, S) for pre-processed slices.

    Args:
        predictor: model and device.
        images: float32 (N, S, S) pre-processed slices.
        batch_size: slices per forward pass.
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    pred = predict_images(predictor.runner or predictor.model, x, predictor.device, batch_size)
    pred = gate_masks(pred, predictor.mask_gate)
    return pred.p_infected, pred.seg_prob


class OnnxRunner(torch.nn.Module):
    """An exported ONNX model behind the model interface (CPU tensors in, MultiTaskOutput out)."""

    def __init__(self, path: str | Path):
        from .export import onnx_session

        super().__init__()
        self.session = onnx_session(path)

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        seg, cls = self.session.run(["seg", "cls"], {"image": np.ascontiguousarray(x.numpy())})
        return MultiTaskOutput(torch.from_numpy(seg), torch.from_numpy(cls))


def attach_onnx(predictor: Predictor, checkpoint_path: str | Path, work_dir: Path) -> Predictor:
    """Export the checkpoint to ONNX in ``work_dir`` and run slices through ONNX Runtime."""
    from .export import export

    if predictor.device.type != "cpu":
        raise InputError("--engine onnx", f"runs on the CPU; the device here is {predictor.device}")
    try:
        path = export(checkpoint_path, work_dir / "model.onnx")
        predictor.runner = OnnxRunner(path)
    except ImportError as e:
        raise InputError(
            "--engine onnx", f"needs onnx and onnxruntime (pip install 'lungmtl[export]'): {e}"
        ) from None
    return predictor


# ---------------------------------------------------------------- inputs


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", *RASTER_SUFFIXES, ".nii", ".npy", ".dcm"):
        if name.lower().endswith(suffix):
            return _safe(name[: -len(suffix)])
    return _safe(name)


def _check_not_photo(path: Path) -> None:
    """Refuse colour pictures: CT slices are grey even when stored as RGB (MosMedData JPGs)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "P", "CMYK"):
                return
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    except Exception:  # OSError, DecompressionBombError, ...
        return  # the reader reports unreadable files with its own message
    spread = float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())
    if spread > MAX_COLOUR_SPREAD:
        raise InputError(
            path, f"a colour picture (mean channel spread {spread:.0f}/255), not a CT slice"
        )


def neighbour_correlation(volume: np.ndarray, max_slices: int = 16) -> float:
    """Median over (up to ``max_slices``) slices of the lower of the correlations between
    horizontally and vertically neighbouring pixels: about 0 for random noise, above 0.5 for
    every CT slice of the real data sets (0.98 typically); 1 for a slice of one value."""
    vol = np.asarray(volume, dtype=np.float32)
    vol = vol[None] if vol.ndim == 2 else vol
    picks = np.unique(np.linspace(0, len(vol) - 1, min(max_slices, len(vol))).astype(int))

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum()) / den if den > 0 else 1.0

    values = [
        min(corr(x[:, :-1], x[:, 1:]), corr(x[:-1], x[1:])) if min(x.shape) > 1 else 1.0
        for x in (vol[k] for k in picks)
    ]
    return float(np.median(values))


def _volume_case(path: Path, allow_gaps: bool) -> Case:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if path.is_file() and suffix_of(path) in RASTER_SUFFIXES:
            _check_not_photo(path)
        data = read_image(path, gaps="warn" if allow_gaps else "error")
    arr = data.array if data.array.ndim == 3 else data.array[None]
    if data.array.ndim == 2:
        # A single slice: its thickness (DICOM SliceThickness) is the affine's z column.
        dz = affine_spacing(data.affine)[0] if data.affine is not None else 1.0
        data = dataclasses.replace(data, array=arr, spacing=(dz, *data.spacing))
    ids = [str(k) for k in range(arr.shape[0])]
    notes = [str(w.message) for w in caught]
    if data.affine is not None and not data.spacing_known:
        notes.append("the file gives no pixel spacing: no volumes in mL")
    return Case(
        _case_name(path),
        data,
        None,
        ids,
        data.affine is not None and data.spacing_known,
        notes,
    )


def _stack_affine(images: list[ImageData]) -> np.ndarray | None:
    """One affine for slices read one by one (DICOM files): z step from first to last origin."""
    if any(im.affine is None for im in images):
        return None
    affine = np.array(images[0].affine, dtype=np.float64)
    if len(images) > 1:
        step = (images[-1].affine[:3, 3] - images[0].affine[:3, 3]) / (len(images) - 1)
        if np.linalg.norm(step) > 1e-6:
            affine[:3, 0] = step
    return affine


def _volume_rows_affine(rows: pd.DataFrame, metas: list[ImageData]) -> np.ndarray | None:
    """The affine of manifest rows that index one volume file at evenly stepped z indices
    (``index`` i0, i0 + d, ...): the volume's affine moved to i0, z step times d; else None."""
    volume = metas[0]
    if volume.affine is None or any(m.path != volume.path for m in metas):
        return None
    index = rows["index"].astype(int).to_numpy()
    steps = np.diff(index)
    if len(steps) and (steps[0] == 0 or not (steps == steps[0]).all()):
        return None
    affine = np.array(volume.affine, dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ np.array([index[0], 0.0, 0.0]) + affine[:3, 3]
    if len(steps):
        affine[:3, 0] *= steps[0]
    return affine


def _natural_key(text: str) -> tuple:
    """Sort key in which digit runs compare as numbers: ``IM-2 < IM-10``, ``z2.png < z10.png``.

    Text parts (case-insensitive) sit at even positions and numbers at odd ones, so two keys
    never compare a string with an int.
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))


def _slice_order(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str | None]:
    """A patient's manifest rows in slice order, their slice ids, and a note on the order used.

    The ``slice`` column is text (and optional): where every id is a number the rows go in
    numeric order (not "0, 1, 10, 11, 2"); otherwise in natural order of the id, or of the
    image's file name where the id is empty; rows of one volume file then go by ``index``.
    """
    text = rows["slice"].fillna("").astype(str).str.strip()
    files = [Path(str(p)).name for p in rows["image"]]
    index = [int(i) for i in rows["index"]]
    numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
    if numbers.notna().all():
        keys = [
            (float(v), _natural_key(f), i) for v, f, i in zip(numbers, files, index, strict=True)
        ]
        note = None
    else:
        keys = [
            (_natural_key(t or f), _natural_key(f), i)
            for t, f, i in zip(text, files, index, strict=True)
        ]
        note = None
        if len(rows) > 1:
            note = (
                "slices ordered by file name (natural order): the manifest gives no slice numbers"
                if not text.astype(bool).any()
                else "slices ordered by slice id in natural order: not every id is a number"
            )
    order = sorted(range(len(rows)), key=keys.__getitem__)
    ids = [
        text.iloc[k] or (f"{files[k]}[{index[k]}]" if index[k] >= 0 else files[k]) for k in order
    ]
    return rows.iloc[order], ids, note


def _manifest_groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(patient, rows) per (source, patient) of a manifest table, in a fixed order."""
    return [
        (str(patient), rows)
        for (_, patient), rows in table.groupby(["source", "patient"], sort=True)
    ]


def _claim(taken: set[str], name: str) -> str:
    """``name``, or ``name_2``, ``name_3``, ... the first not taken yet; marks it taken."""
    unique, k = name, 1
    while unique in taken:
        k += 1
        unique = f"{name}_{k}"
    taken.add(unique)
    return unique


def _manifest_cases(
    folder: Path,
    table: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    taken: set[str] | None = None,
    done: Callable[[str, Path], CaseResult | None] | None = None,
) -> list[Case | CaseResult]:
    """One case per (source, patient) of a manifest folder, slices in ``slice`` order.

    Args:
        folder: holds manifest.csv.
        table: the manifest as read already (else it is read here).
        names: the case name of each (source, patient) group (see :func:`_plan_names`).
        taken: names in use; names made here (one per slice, below) are added to it.
        done: see :func:`iter_cases`; asked per patient before its slices are read.
    """
    folder = Path(folder).absolute()
    # Labels and infection masks are not used here: a bad one must not refuse the patient.
    table = read_manifest(folder, labels=False) if table is None else table
    taken = set() if taken is None else taken
    groups = _manifest_groups(table)
    if names is None or len(names) != len(groups):  # the manifest changed since it was planned
        names = [_claim(taken, _safe(patient)) for patient, _ in groups]
    out: list[Case | CaseResult] = []
    for (patient, rows), name in zip(groups, names, strict=True):
        if done is not None and (earlier := done(name, folder)) is not None:
            out.append(earlier)
            continue
        try:
            t = time.perf_counter()
            rows, ids, note = _slice_order(rows)
            notes = [note] if note else []
            slices, lungs, metas = [], [], []
            for _, row in rows.iterrows():
                arrays = load_slice(row)
                slices.append(arrays.image)
                lungs.append(arrays.lung_mask)
                metas.append(read_image(row["image"]))
            shapes = {s.shape for s in slices}
            kinds = {m.kind for m in metas}
            if len(shapes) > 1 or len(kinds) > 1:
                # A manifest's "patient" groups pictures for patient-level splits, and image-only
                # data sets (pictures of one patient cut from papers, of any size) are valid
                # manifests that train fine: refusing the patient would lose every valid slice.
                # So each slice is predicted on its own, as a single picture would be, with
                # unknown spacing (1 mm, not its pixel count) and a warning in its summary.
                what = sorted(shapes) if len(shapes) > 1 else sorted(kinds)
                warn = (
                    f"slices of patient {patient} differ in size/kind {what}: each slice "
                    "predicted on its own (no scan verdict over them)"
                )
                for s, lung, meta, sid in zip(slices, lungs, metas, ids, strict=True):
                    data = ImageData(s[None], meta.kind, (1.0, 1.0, 1.0), None, folder)
                    lung3 = None if lung is None else lung[None]
                    sname = _claim(taken, f"{name}_{_safe(sid)}")
                    out.append(Case(sname, data, lung3, [sid], False, [*notes, warn]))
                continue
            if metas[0].array.ndim == 2:
                affine = _stack_affine(metas)
            else:
                affine = _volume_rows_affine(rows, metas)
            vol = np.stack(slices)
            spacing = (1.0, 1.0, 1.0)
            if affine is not None:
                spacing = affine_spacing(affine)
            data = ImageData(vol, metas[0].kind, spacing, affine, folder)
            lung = np.stack(lungs) if all(m is not None for m in lungs) else None
            read_s = time.perf_counter() - t
            breaks = _id_breaks(ids)
            if breaks is not None and breaks.any():
                notes.append(
                    f"slice numbers jump at {int(breaks.sum())} place(s): runs of consecutive "
                    "positive slices do not span a jump"
                )
            physical = affine is not None and all(m.spacing_known for m in metas)
            case = Case(name, data, lung, ids, physical, notes, read_s, breaks)
            out.append(case)
        except InputError as e:
            out.append(CaseResult(name, str(folder), False, str(e)))
        except Exception as e:  # one patient's failure must not stop the others
            out.append(CaseResult(name, str(folder), False, _failure(folder, e, patient)))
    return out


def _failure(where: str | Path, e: BaseException, what: str = "") -> str:
    """The message of a case failed by an unexpected exception: where, what, the exception."""
    about = f" ({what})" if what else ""
    return f"{where}{about}: {type(e).__name__}: {e}"


def _plan_names(paths: Sequence[Path]) -> tuple[list[tuple[list[str], pd.DataFrame | None]], set]:
    """Case names for every input of the whole list, before sharding.

    Every shard computes the same names from the same list, so inputs ``p1/CT`` and ``p2/CT``
    in different shards get ``CT`` and ``CT_2`` rather than both writing ``OUT/CT``. Manifest
    folders are read here (the table only, no images) to name one case per patient.

    Returns:
        Per input: its case names (one, or one per manifest patient) and the manifest table
        (None for other inputs, or where the manifest cannot be read: its shard reports that);
        and the set of all names.
    """
    taken: set[str] = set()
    plan: list[tuple[list[str], pd.DataFrame | None]] = []
    for path in paths:
        table = None
        bases = [_case_name(path)]
        if path.is_dir() and (path / "manifest.csv").is_file():
            try:
                table = read_manifest(path, labels=False)
                bases = [_safe(patient) for patient, _ in _manifest_groups(table)]
            except Exception:  # reported when its shard reads it
                table = None
        plan.append(([_claim(taken, b) for b in bases], table))
    return plan, taken


def iter_cases(
    inputs: Sequence[str | Path],
    allow_gaps: bool = False,
    shard: tuple[int, int] = (0, 1),
    done: Callable[[str, Path], CaseResult | None] | None = None,
) -> Iterator[Case | CaseResult]:
    """Read the inputs into cases one at a time (one volume in memory at once).

    An input that cannot be read (for any reason but Ctrl-C) becomes a failed
    :class:`CaseResult`; names are unique over the whole of ``inputs``, shards included.

    Args:
        inputs: DICOM series folders, manifest folders, NIfTI/.npy volumes, slice files.
        allow_gaps: accept DICOM series with missing slices.
        shard: (k, n): read only inputs k, k+n, k+2n, ... (names still come from all inputs).
        done: called with a case's name and input before it is read; a result it returns (a
            case finished before, see ``resume``) is yielded instead of reading the input.
    """
    paths = [Path(p) for p in inputs]
    plan, taken = _plan_names(paths)
    k, n = shard
    for i in range(k, len(paths), n):
        path = paths[i]
        names, table = plan[i]
        t = time.perf_counter()
        try:
            if not path.exists():
                raise InputError(path, "input not found")
            if path.is_dir() and (path / "manifest.csv").is_file():
                yield from _manifest_cases(path, table, names, taken, done)
                continue
            if done is not None and (earlier := done(names[0], path.absolute())) is not None:
                yield earlier
                continue
            case = _volume_case(path, allow_gaps)
            case.read_s = time.perf_counter() - t
        except InputError as e:
            yield CaseResult(names[0], str(path), False, str(e))
            continue
        except Exception as e:  # e.g. out of memory: this input fails, not the run
            yield CaseResult(names[0], str(path), False, _failure(path, e, "reading"))
            continue
        case.name = names[0]
        yield case


# ---------------------------------------------------------------- one case


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _id_breaks(ids: list[str]) -> np.ndarray | None:
    """Gaps in numeric slice ids: a step over GAP_FACTOR x the median step (None: not numbers)."""
    numbers = pd.to_numeric(pd.Series(ids, dtype=object), errors="coerce").to_numpy(float)
    if len(numbers) < 2 or not np.isfinite(numbers).all():
        return None
    steps = np.abs(np.diff(numbers))
    median = float(np.median(steps))
    if median <= 0:
        return None
    return np.r_[False, steps > GAP_FACTOR * median]


def predict_case(predictor: Predictor, case: Case, out_dir: Path, opts: PredictOptions) -> dict:
    """Predict one case and write its outputs into ``out_dir``; returns the summary dict.

    Raises:
        InputError: for a scan where no slice shows lung (not a chest CT, or the wrong region).
    """
    t0 = time.perf_counter()
    # From here on the folder's old results no longer vouch for this case (see ``resume``).
    (out_dir / "summary.json").unlink(missing_ok=True)
    timing: dict[str, float] = {"read": round(case.read_s, 3)}
    memory: dict[str, float] = {"read": round(_rss_mb(), 1)}

    def lap(stage: str, start: float) -> float:
        now = time.perf_counter()
        timing[stage] = round(now - start, 3)
        memory[stage] = round(_rss_mb(), 1)
        return now

    vol = case.image.array
    z, h, w = vol.shape
    cfg = predictor.preprocess
    t = time.perf_counter()
    r = neighbour_correlation(vol)
    if r < MIN_NEIGHBOUR_CORRELATION:
        raise InputError(
            case.image.path,
            f"looks like random noise, not a CT image: neighbouring pixels are uncorrelated "
            f"(r = {r:.2f}; CT slices have r > 0.5)",
        )
    pre = [
        preprocess_slice(
            vol[k],
            case.image.kind,
            lung_mask=None if case.lung is None else case.lung[k],
            config=cfg,
        )
        for k in range(z)
    ]
    images = np.stack([p.image for p in pre]).astype(np.float32)
    lung_small = np.stack([p.lung_mask for p in pre])
    lung_frac = lung_small.mean(axis=(1, 2)) if case.lung is None else case.lung.mean(axis=(1, 2))
    if float(lung_frac.max()) < MIN_LUNG_FRACTION:
        raise InputError(
            case.image.path,
            "no lungs in view on any slice (largest lung area "
            f"{100 * float(lung_frac.max()):.2f}% of a slice): not a chest CT?",
        )
    if float(lung_frac.max()) < FEW_LUNG_FRACTION:
        case.warnings.append(
            f"little lung found (largest lung area {100 * float(lung_frac.max()):.1f}% of a "
            "slice): check that this is a chest CT; the verdict and % of lung are less reliable"
        )
    t = lap("preprocess", t)

    p_inf, seg_prob = run_model(predictor, images, opts.batch_size)
    t = lap("model", t)

    if opts.crf:
        from .crf import crf_refine

        seg_prob = crf_refine(seg_prob, device=predictor.device)
    boxes = [p.box for p in pre]
    mask = (paste_back(seg_prob, boxes, (h, w)) >= opts.threshold).astype(np.uint8)
    if case.lung is not None:
        lung = case.lung.astype(bool)
    else:
        lung = paste_back(lung_small.astype(np.float32), boxes, (h, w)) > 0.5
    spacing = tuple(float(s) for s in case.image.spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0 if case.has_geometry else None
    pixel_mm2 = spacing[1] * spacing[2] if case.has_geometry else None
    inf_px = mask.reshape(z, -1).sum(axis=1).astype(int)
    lung_px = lung.reshape(z, -1).sum(axis=1).astype(int)
    inf_in_lung = (mask.astype(bool) & lung).reshape(z, -1).sum(axis=1).astype(int)
    positive = p_inf >= opts.threshold
    rule = scan_rule(predictor, opts)
    need = max(1, min(rule.min_run, z))
    lung_total = int(lung_px.sum())
    lung_pct = 100.0 * float(inf_in_lung.sum()) / lung_total if lung_total else None
    decision = rule.decide(p_inf, lung_pct, case.breaks)
    run = decision["longest_positive_run"]
    order = np.lexsort((-p_inf, -inf_px))  # most infected pixels first, then most confident
    top = [int(k) for k in order[: opts.top_k] if inf_px[k] > 0 or positive[k]]
    slices = pd.DataFrame(
        {
            "z": np.arange(z),
            "slice_id": case.slice_ids,
            "p_infected": np.round(p_inf.astype(float), 5),
            "positive": positive,
            "infected_px": inf_px,
            "infected_mm2": None if pixel_mm2 is None else np.round(inf_px * pixel_mm2, 2),
            "lung_px": lung_px,
            "infected_percent_of_lung": np.round(100.0 * inf_in_lung / np.maximum(lung_px, 1), 3),
        }
    )
    summary = {
        "case": case.name,
        "input": str(case.image.path),
        "checkpoint": predictor.checkpoint,
        "model": predictor.model_name,
        "intended_use": INTENDED_USE,
        "verdict": decision["verdict"],
        "rule": f"{decision['rule']} (longest run here: {run})",
        "rule_params": decision["rule_params"],
        "scan_score": decision["scan_score"],
        "n_slices": int(z),
        "n_positive_slices": int(positive.sum()),
        "longest_positive_run": int(run),
        "max_p_infected": float(p_inf.max()),
        "shape_zyx": [int(z), int(h), int(w)],
        "spacing_mm": list(spacing) if case.has_geometry else None,
        "infected_voxels": int(inf_px.sum()),
        "infected_ml": None if voxel_ml is None else round(float(inf_px.sum()) * voxel_ml, 3),
        "lung_ml": None if voxel_ml is None else round(lung_total * voxel_ml, 3),
        "infected_percent_of_lung": None if lung_pct is None else round(lung_pct, 3),
        "lung_mask": "dataset" if case.lung is not None else "derived",
        "engine": "onnx" if isinstance(predictor.runner, OnnxRunner) else "torch",
        "most_affected_slices": [
            {
                "z": k,
                "slice_id": case.slice_ids[k],
                "p_infected": float(p_inf[k]),
                "infected_px": int(inf_px[k]),
            }
            for k in top
        ],
        "crf": bool(opts.crf),
        "mask_gate": predictor.mask_gate,
        "threshold": opts.threshold,
        "preprocess": {"size": cfg.size, "window": list(cfg.window), "enhance": list(cfg.enhance)},
        "device": str(predictor.device),
        "warnings": list(case.warnings),
    }
    t = lap("postprocess", t)

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{STAGING_PREFIX}*"):  # left by a run that was killed
        shutil.rmtree(old, ignore_errors=True)
    # Every file is written whole into a hidden folder beside the outputs, then renamed into
    # place (os.replace: atomic on one file system): a run that fails halfway replaces nothing.
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=out_dir) as staging:
        stage = Path(staging)
        write_mask_like(mask, case.image, stage / "mask.nii.gz")
        slices.to_csv(stage / "slices.csv", index=False)
        if opts.report:
            from . import html_report

            pictures = {"overlays": html_report.overlay_sheet(case, mask, slices, stage)}
            explained = top[: opts.gradcam] if opts.gradcam else []
            cams = html_report.gradcam_maps(predictor.model, images, boxes, explained)
            view = html_report.ViewerData.of(case, mask, lung, need, cams)
            summary["pictures"] = {k: v.name for k, v in pictures.items()}
            summary["gradcam_slices"] = explained
            summary["report"] = "report.html"
        lap("write", t)
        timing["total"] = round(time.perf_counter() - t0 + case.read_s, 3)
        summary["timing_s"] = timing
        summary["rss_mb_after"] = memory
        summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if opts.report:
            html_report.write_report(summary, slices, stage, view)
        for f in sorted(stage.iterdir()):
            os.replace(f, out_dir / f.name)
    # Written last and atomically: its presence marks a finished case (see ``resume``).
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default))
    return summary


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")


# ---------------------------------------------------------------- the whole run


def predict(
    checkpoint_path: str | Path | None,
    inputs: Sequence[str | Path],
    out: str | Path,
    options: PredictOptions = PredictOptions(),  # frozen: a safe default
    *,
    predictor: Predictor | None = None,
    echo=None,
) -> list[CaseResult]:
    """Predict every input; failures are reported per case and do not stop the others.

    Args:
        checkpoint_path: run directory, ``.pt`` or shipped model name; None = the default
            shipped model (ignored when ``predictor`` is given).
        inputs: DICOM series folders, manifest folders, NIfTI/.npy volumes, slice files.
        out: output folder; one sub-folder per case.
        options: :class:`PredictOptions`.
        predictor: an already loaded model (tests, repeated calls).
        echo: called with each case's summary line as soon as it is done (e.g. ``print``).

    Returns:
        One :class:`CaseResult` per case, in input order.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    k, n = options.shard
    if not 0 <= k < n:
        raise InputError("--shard", f"expected k/n with 0 <= k < n, got {k}/{n}")
    if options.engine not in ENGINES:
        raise InputError("--engine", f"unknown engine {options.engine!r}; valid: {ENGINES}")
    if checkpoint_path is None and predictor is None:
        checkpoint_path = default_checkpoint()
    predictor = predictor or load_predictor(checkpoint_path, options.device)
    if options.engine != "onnx":
        return _predict_all(predictor, inputs, Path(out), options, k, n, echo)
    with tempfile.TemporaryDirectory(prefix="lungmtl-onnx-") as tmp:
        predictor = attach_onnx(predictor, checkpoint_path, Path(tmp))
        return _predict_all(predictor, inputs, Path(out), options, k, n, echo)


def _finished(case: Case, out_dir: Path) -> dict | None:
    """The summary of an earlier run of ``case`` in ``out_dir``, if it finished on this input."""
    return _finished_at(out_dir, case.name, case.image.path)


def _finished_at(out_dir: Path, name: str, source: str | Path) -> dict | None:
    """The summary in ``out_dir`` of case ``name`` if an earlier run finished it on ``source``.

    A summary for another input (the input list changed, so a name now means another scan) or
    one that cannot be read is no reason to skip: the case is predicted again.
    """
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("case") != name:
        return None
    same = os.path.normpath(str(summary.get("input", ""))) == os.path.normpath(str(source))
    return summary if same else None


def _predict_all(predictor, inputs, out: Path, options, k: int, n: int, echo) -> list[CaseResult]:
    results: list[CaseResult] = []

    def skip(name: str, source: Path) -> CaseResult | None:  # checked before reading the input
        summary = _finished_at(out / name, name, source)
        if summary is None:
            return None
        return CaseResult(name, str(source), True, DONE_BEFORE, out / name, summary)

    cases = iter_cases(list(inputs), options.allow_gaps, (k, n), skip if options.resume else None)
    for item in cases:
        if isinstance(item, CaseResult):
            result = item
        else:
            case_dir = out / item.name
            source = str(item.image.path)
            done = _finished(item, case_dir) if options.resume else None
            if done is not None:
                result = CaseResult(item.name, source, True, DONE_BEFORE, case_dir, done)
            else:
                try:
                    summary = predict_case(predictor, item, case_dir, options)
                    result = CaseResult(item.name, source, True, "ok", case_dir, summary)
                except InputError as e:
                    result = CaseResult(item.name, source, False, str(e))
                except Exception as e:  # out of memory, disk full, ...: this case
                    result = CaseResult(item.name, source, False, _failure(source, e))
        results.append(result)
        if echo:
            echo(result.line())
    if options.report:  # OUT/index.html: every case of the batch, failed ones with reasons
        from . import html_report

        html_report.write_index(out, results)
    return results

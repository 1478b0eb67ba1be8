"""One case's computation, without file I/O: input checks, pre-processing, masks at native size,
burden arithmetic, the scan verdict and the summary.

Pre-processing is the checkpoint's own ``run_config["preprocess"]`` through the same
:func:`lungmtl.data.preprocess.preprocess_slice` as training; the probabilities are resized back
to the native slice size (into the slice's crop box where the run crops to the lungs) and
thresholded. Burden: infected volume = mask voxels x voxel volume (mL, only where the input has
real geometry); percent of lung = |mask within lung| / |lung|, with the dataset's lung mask where
a manifest gives one, else the lung mask derived during pre-processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.lungmask import looks_like_lung_crop
from ..data.preprocess import PreprocessConfig, paste_back, preprocess_slice, to_unit
from ..errors import InputError
from ..scan_rule import ScanRule
from .engine import Predictor, engine_name
from .types import Case, PredictOptions

INTENDED_USE = "Research use only, not for diagnosis."
#: A scan "shows lungs" when some slice's lung mask covers at least this fraction of it.
MIN_LUNG_FRACTION = 0.01
#: Below this largest lung share the case is predicted with a warning (apex, bases, a crop).
FEW_LUNG_FRACTION = 0.05
#: Correlation of neighbouring pixels below which an image is noise, not CT (real slices: > 0.5).
MIN_NEIGHBOUR_CORRELATION = 0.25


@dataclass
class Preprocessed:
    """A case's slices as the model sees them: images (Z, S, S), the derived lung masks
    (Z, S, S) and each slice's crop box in the native slice."""

    images: np.ndarray
    lung_small: np.ndarray
    boxes: list
    assumed: dict = field(default_factory=dict)


@dataclass
class Outcome:
    """What one case came to: native-size masks, the per-slice table and the summary.

    Attributes:
        mask: (Z, H, W) uint8 predicted infection.
        lung: (Z, H, W) bool, the lung mask of the burden figures.
        slices: the per-slice table (``slices.csv``).
        summary: the case summary (``summary.json``), timing and pictures still to come.
        top: the most affected slices (z), most affected first.
        need: positive slices in a row the verdict asked for (the viewer's colouring).
    """

    mask: np.ndarray
    lung: np.ndarray
    slices: pd.DataFrame
    summary: dict
    top: list[int]
    need: int


def scan_rule(predictor: Predictor, opts: PredictOptions) -> ScanRule:
    """The rule on calibrated P: the options', else the calibration's, else the checkpoint's or
    the plain run rule of the options (both read on the model's P, moved onto the calibration,
    as evaluate and calibrate do)."""
    cal = predictor.calibration
    if opts.rule is not None:
        return opts.rule
    if cal.scan_rule is not None:
        return cal.scan_rule
    if predictor.rule is not None:
        return cal.moved(predictor.rule)
    return cal.moved(ScanRule(slice_threshold=opts.threshold, min_run=opts.min_consecutive))


def slice_threshold(predictor: Predictor, opts: PredictOptions) -> float:
    """A slice is positive at calibrated P >= this: a site file's operating point, else the
    options' threshold."""
    cal = predictor.calibration
    return cal.threshold if cal.origin == "site" else opts.threshold


def neighbour_correlation(volume: np.ndarray, max_slices: int = 16) -> float:
    """Median over (up to ``max_slices``) slices of the lower of the correlations between
    horizontally and vertically neighbouring pixels: about 0 for random noise, high for CT;
    1 for a slice of one value."""
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


def preprocess_case(case: Case, cfg: PreprocessConfig, assume_chest: bool = False) -> Preprocessed:
    """Check that the case is a CT showing lungs and pre-process its slices for the model.

    What was assumed about the input goes to ``Preprocessed.assumed`` (summary.json): slices
    cropped to the lungs (detected, :func:`lungmtl.data.lungmask.is_lung_crop`), and with
    ``assume_chest`` a case where no lung was found, predicted instead of refused.

    Raises:
        InputError: random noise, or a scan where no slice shows lung (not a chest CT, or the
            wrong region) unless ``assume_chest``. A scan showing little lung gets a warning in
            ``case.warnings``.
    """
    vol = case.image.array
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
        for k in range(vol.shape[0])
    ]
    images = np.stack([p.image for p in pre]).astype(np.float32)
    lung_small = np.stack([p.lung_mask for p in pre])
    lung_frac = lung_small.mean(axis=(1, 2)) if case.lung is None else case.lung.mean(axis=(1, 2))
    picks = np.unique(np.linspace(0, len(vol) - 1, min(16, len(vol))).astype(int))
    crops = sum(looks_like_lung_crop(to_unit(vol[k], case.image.kind, cfg.window)) for k in picks)
    assumed = {"lung_crop": bool(2 * crops > len(picks)), "chest_ct_without_lung": False}
    if float(lung_frac.max()) < MIN_LUNG_FRACTION:
        where = f"largest lung area {100 * float(lung_frac.max()):.2f}% of a slice"
        if not assume_chest:
            raise InputError(
                case.image.path,
                f"no lungs in view on any slice ({where}): not a chest CT? (--assume-chest "
                "predicts it anyway, e.g. a slice below or above the lungs)",
            )
        assumed["chest_ct_without_lung"] = True
        case.warnings.append(f"no lungs found ({where}); predicted as chest CT (--assume-chest)")
    if float(lung_frac.max()) < FEW_LUNG_FRACTION:
        case.warnings.append(
            f"little lung found (largest lung area {100 * float(lung_frac.max()):.1f}% of a "
            "slice): check that this is a chest CT; the verdict and % of lung are less reliable"
        )
    return Preprocessed(images, lung_small, [p.box for p in pre], assumed)


def postprocess_case(
    predictor: Predictor,
    case: Case,
    opts: PredictOptions,
    pre: Preprocessed,
    p_model: np.ndarray,
    seg_prob: np.ndarray,
) -> Outcome:
    """Masks at native size, burden, verdict, per-slice table and summary of one case.

    Args:
        predictor: the model's checkpoint, pre-processing and device (for the summary, the CRF).
        case: the case.
        opts: the run's options.
        pre: the case's pre-processed slices.
        p_model: (Z,) the model's own P(infected) per slice (calibrated here).
        seg_prob: (Z, S, S) infection probability at the model's size.
    """
    z, h, w = case.image.array.shape
    cfg = predictor.preprocess
    if opts.crf:
        from ..crf import crf_refine

        seg_prob = crf_refine(seg_prob, device=predictor.device)
    boxes = pre.boxes
    mask = paste_back(seg_prob, boxes, (h, w), at_least=opts.threshold).view(np.uint8)
    if case.lung is not None:
        lung = case.lung.astype(bool)
    else:
        # > 0.5 exactly: the next float above 0.5 as the least value kept.
        lung = paste_back(pre.lung_small.astype(np.float32), boxes, (h, w), np.nextafter(0.5, 1))
    spacing = tuple(float(s) for s in case.image.spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0 if case.has_geometry else None
    pixel_mm2 = spacing[1] * spacing[2] if case.has_geometry else None
    inf_px = mask.reshape(z, -1).sum(axis=1).astype(int)
    lung_px = lung.reshape(z, -1).sum(axis=1).astype(int)
    inf_in_lung = (mask.astype(bool) & lung).reshape(z, -1).sum(axis=1).astype(int)
    cal = predictor.calibration
    p_inf = cal.apply(p_model)
    cut = slice_threshold(predictor, opts)
    positive = p_inf >= cut
    rule = scan_rule(predictor, opts)
    need = max(1, min(rule.min_run, z))
    lung_total = int(lung_px.sum())
    # Where the derived lung misses most of a slice's outline (dense consolidation falls outside
    # an intensity-based lung mask), that slice's share of lung is unknown, never 0%: it is left
    # out of the scan's share and counted in the summary.
    share_known = (lung_px > 0) & (2 * inf_in_lung >= inf_px)
    unknown = np.flatnonzero(~share_known & (inf_px > 0))
    known_lung = int(lung_px[share_known].sum())
    lung_pct = 100.0 * float(inf_in_lung[share_known].sum()) / known_lung if known_lung else None
    warnings = list(case.warnings)
    if len(unknown):
        warnings.append(
            f"the derived lung misses most of the outline on {len(unknown)} slice(s) (first "
            f"z={int(unknown[0])}): their share of lung is unknown and left out of the percent"
        )
    decision = rule.decide(p_inf, lung_pct, case.breaks)
    run = decision["longest_positive_run"]
    order = np.lexsort((-p_inf, -inf_px))  # most infected pixels first, then most confident
    top = [int(k) for k in order[: opts.top_k] if inf_px[k] > 0 or positive[k]]
    slices = pd.DataFrame(
        {
            "z": np.arange(z),
            "slice_id": case.slice_ids,
            "p_infected": np.round(p_inf.astype(float), 5),
            "p_model": np.round(np.asarray(p_model, dtype=float), 5),
            "positive": positive,
            "infected_px": inf_px,
            "infected_mm2": None if pixel_mm2 is None else np.round(inf_px * pixel_mm2, 2),
            "lung_px": lung_px,
            "infected_percent_of_lung": np.where(
                share_known, np.round(100.0 * inf_in_lung / np.maximum(lung_px, 1), 3), np.nan
            ),
        }
    )
    scan_p = cal.scan_probability(decision["scan_score"])
    summary = {
        "case": case.name,
        "input": {"path": str(case.image.path), **case.source},
        "checkpoint": predictor.checkpoint,
        "model": predictor.model_name,
        "intended_use": INTENDED_USE,
        "verdict": decision["verdict"],
        "rule": f"{decision['rule']} (longest run here: {run})",
        "rule_params": decision["rule_params"],
        "scan_score": decision["scan_score"],
        "scan_probability": None if scan_p is None else round(scan_p, 5),
        "n_slices": int(z),
        "n_positive_slices": int(positive.sum()),
        "longest_positive_run": int(run),
        "max_p_infected": float(p_inf.max()),
        "max_p_model": float(np.max(p_model)),
        "shape_zyx": [int(z), int(h), int(w)],
        "spacing_mm": list(spacing) if case.has_geometry else None,
        "infected_voxels": int(inf_px.sum()),
        "infected_ml": None if voxel_ml is None else round(float(inf_px.sum()) * voxel_ml, 3),
        "lung_ml": None if voxel_ml is None else round(lung_total * voxel_ml, 3),
        "infected_percent_of_lung": None if lung_pct is None else round(lung_pct, 3),
        "lung_share_unknown_slices": [int(k) for k in unknown],
        "lung_mask": "dataset" if case.lung is not None else "derived",
        "assumed": pre.assumed,
        "engine": engine_name(predictor),
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
        "mask_rule": predictor.mask_rule.describe(),
        "threshold": opts.threshold,
        "slice_threshold": cut,
        "calibration": cal.summary(),
        "preprocess": {"size": cfg.size, "window": list(cfg.window), "enhance": list(cfg.enhance)},
        "device": str(predictor.device),
        "warnings": warnings,
    }
    return Outcome(mask, lung, slices, summary, top, need)

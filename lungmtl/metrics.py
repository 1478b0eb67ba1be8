"""Evaluation metrics: pure functions on arrays (or torch tensors) plus streaming accumulators.

Segmentation metrics compare masks, as the paper does; the rules for undefined cases (empty masks,
perfect PSNR, zero denominators) are in docs/method.md, "Where a metric is undefined".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InputError

#: The probability cut-off for "infected" (slice) and for a mask pixel, wherever one is needed.
THRESHOLD = 0.5
#: What metrics.json reports for classification and for segmentation (paper Tables 3 and 4).
CLS_KEYS = ("accuracy", "sensitivity", "specificity", "auc", "precision", "f1", "mcc")
SEG_KEYS = (
    "dice_mean",
    "dice_std",
    "dice_infected_mean",
    "iou_mean",
    "pixel_accuracy",
    "mse",
    "psnr",
    "ssim",
)


def _np(x: Any) -> np.ndarray:
    """An array from NumPy input or a (possibly GPU, grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _binary(x: Any, where: str, threshold: float = THRESHOLD) -> np.ndarray:
    """A bool mask: bool kept, integers must be 0/1, floats are probabilities (>= threshold)."""
    a = _np(x)
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return a >= threshold
    if a.size and not ((a == 0) | (a == 1)).all():
        raise InputError(where, "mask values must be 0/1 (or bool, or probabilities as floats)")
    return a.astype(bool)


def _pair(pred: Any, true: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    p, t = _np(pred), _np(true)
    if p.shape != t.shape:
        raise InputError(where, f"prediction shape {p.shape} does not match truth {t.shape}")
    return p, t


# --------------------------------------------------------------------------- segmentation


def pixel_accuracy(pred: Any, true: Any) -> float:
    """Fraction of pixels where the predicted mask equals the true mask.

    Args:
        pred: predicted mask (bool/0-1), or probabilities (thresholded at 0.5).
        true: true 0/1 mask, same shape.

    Returns:
        Accuracy in [0, 1].
    """
    p, t = _pair(pred, true, "pixel_accuracy")
    return float((_binary(p, "pixel_accuracy") == _binary(t, "pixel_accuracy")).mean())


def mse(pred: Any, true: Any) -> float:
    """Mean squared error between prediction and true mask.

    Args:
        pred: 0/1 (or bool) mask; float input is used as given (probabilities, no threshold).
        true: true 0/1 mask, same shape.

    Returns:
        MSE in [0, 1] for inputs in [0, 1].
    """
    p, t = _pair(pred, true, "mse")
    t = _binary(t, "mse").astype(np.float64)
    return float(np.mean((p.astype(np.float64) - t) ** 2))


def psnr(pred: Any, true: Any, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio 20·log10(MAX / sqrt(MSE)) in dB.

    Args:
        pred: as for :func:`mse`.
        true: true 0/1 mask.
        max_val: the peak value MAX (1 for masks).

    Returns:
        PSNR in dB; ``inf`` when MSE is 0 (see the module notes for how summaries handle it).
    """
    m = mse(pred, true)
    if m == 0:
        return math.inf
    return float(20 * np.log10(max_val / np.sqrt(m)))


def ssim(pred: Any, true: Any) -> float:
    """Structural similarity of two 2-D masks (skimage, ``data_range=1``, uniform 7x7 window).

    Images smaller than 7 pixels on a side use the largest odd window that fits (at least 3).

    Args:
        pred: 2-D predicted mask (bool/0-1); float input is used as given.
        true: 2-D true 0/1 mask.

    Returns:
        SSIM in [-1, 1].
    """
    from skimage.metrics import structural_similarity  # here: importing metrics stays light

    p, t = _pair(pred, true, "ssim")
    if p.ndim != 2:
        raise InputError("ssim", f"expects one 2-D slice, got shape {p.shape}")
    win = min(7, min(p.shape) - (1 - min(p.shape) % 2))
    if win < 3:
        raise InputError("ssim", f"slice {p.shape} is too small (needs at least 3x3)")
    t = _binary(t, "ssim")
    return float(
        structural_similarity(
            p.astype(np.float64), t.astype(np.float64), data_range=1.0, win_size=win
        )
    )


def dice(pred: Any, true: Any, empty: float = 1.0) -> float:
    """Dice coefficient 2|X∩Y| / (|X| + |Y|) of two binary masks.

    Args:
        pred: predicted mask (bool/0-1), or probabilities (thresholded at 0.5).
        true: true 0/1 mask, same shape.
        empty: value when both masks are empty (1.0; ``nan`` to ignore such slices).

    Returns:
        Dice in [0, 1], or ``empty``.
    """
    p, t = _pair(pred, true, "dice")
    p, t = _binary(p, "dice"), _binary(t, "dice")
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return float(empty)
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou(pred: Any, true: Any, empty: float = 1.0) -> float:
    """Intersection over union (Jaccard) |X∩Y| / |X∪Y| of two binary masks.

    Args:
        pred: predicted mask (bool/0-1), or probabilities (thresholded at 0.5).
        true: true 0/1 mask, same shape.
        empty: value when both masks are empty (1.0; ``nan`` to ignore such slices).

    Returns:
        IoU in [0, 1], or ``empty``.
    """
    p, t = _pair(pred, true, "iou")
    p, t = _binary(p, "iou"), _binary(t, "iou")
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return float(empty)
    return int(np.logical_and(p, t).sum()) / union


def _slices(x: Any, where: str) -> np.ndarray:
    """(N,H,W) from (N,H,W) or (N,1,H,W)."""
    a = _np(x)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise InputError(where, f"expects (N,H,W) or (N,1,H,W), got shape {a.shape}")
    return a


def _mean(a: np.ndarray) -> float | None:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else None


class SegmentationAccumulator:
    """Collects per-slice segmentation metrics over batches.

    Probabilities are thresholded (``>= threshold``) to a mask first; every metric, MSE, PSNR and
    SSIM included, compares that mask with the true mask, as in the paper.

    Args:
        threshold: probability threshold for the predicted mask.
        empty: Dice/IoU when both masks of a slice are empty (1.0, or nan to skip such slices).
        psnr_cap: summary cap for per-slice PSNR in dB; ``None`` means 10·log10(H·W), the PSNR
            of a one-pixel error (per-slice values stay ``inf``).
    """

    _KEYS = ("dice", "iou", "pixel_accuracy", "mse", "psnr", "ssim")

    def __init__(
        self, threshold: float = THRESHOLD, empty: float = 1.0, psnr_cap: float | None = None
    ):
        self.threshold = float(threshold)
        self.empty = float(empty)
        self.psnr_cap = psnr_cap
        self._values: dict[str, list[float]] = {k: [] for k in self._KEYS}
        self._infected: list[bool] = []
        self._pixels: int | None = None

    def update(self, pred: Any, true: Any, has_mask: Any = None) -> None:
        """Add a batch of slices.

        Args:
            pred: (N,H,W) or (N,1,H,W) probabilities (float) or masks (bool/0-1).
            true: (N,H,W) or (N,1,H,W) true 0/1 masks.
            has_mask: optional (N,) bool; slices without a mask are skipped.
        """
        p, t = (
            _slices(pred, "SegmentationAccumulator.update pred"),
            _slices(true, "SegmentationAccumulator.update true"),
        )
        if p.shape != t.shape:
            raise InputError(
                "SegmentationAccumulator.update", f"pred {p.shape} and true {t.shape} differ"
            )
        if has_mask is not None:
            keep = _np(has_mask).astype(bool).reshape(-1)
            if keep.shape[0] != p.shape[0]:
                raise InputError("SegmentationAccumulator.update", "has_mask length != N")
            p, t = p[keep], t[keep]
        pm = _binary(p, "SegmentationAccumulator pred", self.threshold)
        tm = _binary(t, "SegmentationAccumulator true")
        self._pixels = int(pm.shape[1] * pm.shape[2]) if pm.size else self._pixels
        for a, b in zip(pm, tm, strict=True):
            self._values["dice"].append(dice(a, b, self.empty))
            self._values["iou"].append(iou(a, b, self.empty))
            self._values["pixel_accuracy"].append(pixel_accuracy(a, b))
            self._values["mse"].append(mse(a, b))
            self._values["psnr"].append(psnr(a, b))
            self._values["ssim"].append(ssim(a, b))
            self._infected.append(bool(b.any()))

    def per_slice(self) -> dict[str, np.ndarray]:
        """Per-slice arrays: dice, iou, pixel_accuracy, mse, psnr (may be inf), ssim, infected."""
        out = {k: np.asarray(v, dtype=np.float64) for k, v in self._values.items()}
        out["infected"] = np.asarray(self._infected, dtype=bool)
        return out

    def compute(self) -> dict[str, float | int | None]:
        """Summary over all slices seen.

        Returns:
            dice_mean, dice_std (population std, ddof=0), dice_infected_mean (slices whose true
            mask is non-empty), dice_infected_std, iou_mean, pixel_accuracy, mse, psnr (capped
            mean, see class doc), ssim, n_slices_with_mask, n_infected_slices. ``None`` where
            there is nothing to average.
        """
        s = self.per_slice()
        n = len(s["infected"])
        d, inf = s["dice"], s["infected"]
        valid_d = d[~np.isnan(d)]
        cap = self.psnr_cap
        if cap is None and self._pixels:
            cap = 10 * math.log10(self._pixels)
        psnr_vals = np.minimum(s["psnr"], cap) if cap is not None else s["psnr"]
        d_inf = d[inf & ~np.isnan(d)]
        return {
            "dice_mean": _mean(d),
            "dice_std": float(valid_d.std()) if valid_d.size else None,
            "dice_infected_mean": float(d_inf.mean()) if d_inf.size else None,
            "dice_infected_std": float(d_inf.std()) if d_inf.size else None,
            "iou_mean": _mean(s["iou"]),
            "pixel_accuracy": _mean(s["pixel_accuracy"]),
            "mse": _mean(s["mse"]),
            "psnr": _mean(psnr_vals),
            "ssim": _mean(s["ssim"]),
            "n_slices_with_mask": n,
            "n_infected_slices": int(inf.sum()),
        }


# ------------------------------------------------------------------------- classification


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_metrics(
    y_true: Any, p_infected: Any, threshold: float = THRESHOLD
) -> dict[str, Any]:
    """Slice (or patient) classification metrics at a probability threshold.

    Args:
        y_true: (N,) true labels, 1 = infected, 0 = healthy.
        p_infected: (N,) predicted probability of infection.
        threshold: predict infected when ``p_infected >= threshold``.

    Returns:
        Dict with n, n_infected, n_healthy, accuracy, sensitivity, specificity, auc, precision,
        f1, mcc (floats, or ``None`` where undefined, see the module notes) and confusion
        ``[[tn, fp], [fn, tp]]`` (ints).
    """
    from sklearn.metrics import confusion_matrix, f1_score, matthews_corrcoef, roc_auc_score

    where = "classification_metrics"
    y, p = _np(y_true).reshape(-1), _np(p_infected).astype(np.float64).reshape(-1)
    if y.shape != p.shape:
        raise InputError(where, f"{y.shape[0]} labels but {p.shape[0]} probabilities")
    if y.size and not ((y == 0) | (y == 1)).all():
        raise InputError(where, "labels must be 0 (healthy) or 1 (infected)")
    if not np.isfinite(p).all():
        raise InputError(where, "probabilities contain NaN or inf")
    y = y.astype(int)
    yp = (p >= threshold).astype(int)
    n = int(y.size)
    if n:
        (tn, fp), (fn, tp) = confusion_matrix(y, yp, labels=[0, 1]).tolist()
    else:
        tn = fp = fn = tp = 0
    both = 0 < tp + fn < n
    # MCC's denominator is the product of the four marginals; sklearn returns 0.0 when it is 0,
    # which would read as "no better than chance" where the truth is "undefined".
    mcc_defined = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) > 0
    f1_defined = 2 * tp + fp + fn > 0
    return {
        "n": n,
        "n_infected": int(tp + fn),
        "n_healthy": int(tn + fp),
        "accuracy": _ratio(tp + tn, n),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "auc": float(roc_auc_score(y, p)) if both else None,
        "precision": _ratio(tp, tp + fp),
        "f1": float(f1_score(y, yp, labels=[0, 1], zero_division=0)) if f1_defined else None,
        "mcc": float(matthews_corrcoef(y, yp)) if mcc_defined else None,
        "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


class ClassificationAccumulator:
    """Collects labels and probabilities over batches; metrics at the end.

    Args:
        threshold: predict infected when ``p_infected >= threshold``.
    """

    def __init__(self, threshold: float = THRESHOLD):
        self.threshold = float(threshold)
        self._y: list[np.ndarray] = []
        self._p: list[np.ndarray] = []

    def update(self, labels: Any, p_infected: Any) -> None:
        """Add a batch: labels (N,) 0/1 and probabilities of infection (N,)."""
        y, p = _np(labels).reshape(-1), _np(p_infected).reshape(-1)
        if y.shape != p.shape:
            raise InputError(
                "ClassificationAccumulator.update",
                f"{y.shape[0]} labels but {p.shape[0]} probabilities",
            )
        self._y.append(y.astype(np.int64))
        self._p.append(p.astype(np.float64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All labels (int64) and probabilities (float64) seen so far."""
        if not self._y:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return np.concatenate(self._y), np.concatenate(self._p)

    def compute(self) -> dict[str, Any]:
        """:func:`classification_metrics` over everything seen."""
        return classification_metrics(*self.arrays(), threshold=self.threshold)


# ------------------------------------------------------------------------------ intervals

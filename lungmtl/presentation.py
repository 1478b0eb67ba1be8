"""How results look: the metric registry, one number formatter, tables, figures, overlays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from .metrics import CLS_KEYS


@dataclass(frozen=True)
class Metric:
    """How one metric is shown: column heading, scale (100 for percent) and decimals."""

    key: str
    heading: str
    scale: float = 100
    digits: int = 2


_ALL = [
    Metric("pixel_accuracy", "Acc (%)"),
    Metric("mse", "MSE", 1, 4),
    Metric("psnr", "PSNR (dB)", 1, 2),
    Metric("ssim", "SSIM", 1, 3),
    Metric("dice_mean", "Dice (%)"),
    Metric("dice_std", "Dice std (%)"),
    Metric("dice_infected_mean", "Dice infected (%)"),
    Metric("iou_mean", "IoU (%)"),
    Metric("accuracy", "Acc (%)"),
    Metric("sensitivity", "Sens (%)"),
    Metric("specificity", "Spec (%)"),
    Metric("auc", "AUC (%)"),
    Metric("precision", "Prec (%)"),
    Metric("f1", "F1 (%)"),
    Metric("mcc", "MCC (%)"),
    # per volume (lungmtl.evaluation.volumes): summaries, then one row per volume
    Metric("dice_median", "Dice median (%)"),
    Metric("nsd_mean", "NSD mean (%)"),
    Metric("nsd_median", "NSD median (%)"),
    Metric("nsd_infected_mean", "NSD infected vols (%)"),
    Metric("infected_share_mae", "MAE infected share of volume (pp)"),
    Metric("lung_pct_mae", "MAE infected % of lung (pp)", 1),
    Metric("lung_pct_bias", "bias infected % of lung (pp)", 1),
    Metric("lung_pct_r", "r % of lung", 1, 3),
    Metric("relative_volume_mae", "MAE relative volume (%)"),
    Metric("n_relative", "n relative", 1, 0),
    Metric("dice", "Dice (%)"),
    Metric("nsd", "NSD (%)"),
    Metric("true_share", "true infected (% of volume)"),
    Metric("pred_share", "predicted infected (% of volume)"),
    Metric("true_lung_pct", "true (% of lung)", 1),
    Metric("pred_lung_pct", "predicted (% of lung)", 1),
    Metric("relative_error", "relative volume error (%)"),
    # per scan, as experiment tables carry them (metrics.json per_volume, renamed)
    Metric("scan_dice", "per-scan Dice (%)"),
    Metric("scan_nsd", "per-scan NSD (%)"),
    Metric("n_scans", "scans", 1, 0),
]
#: Every metric a table can show, by metrics.json key.
METRICS: dict[str, Metric] = {m.key: m for m in _ALL}


def columns(*keys: str, **headings: str) -> list[Metric]:
    """Table columns for ``keys`` from the registry; ``headings`` renames some for one table."""
    return [
        Metric(k, headings[k], METRICS[k].scale, METRICS[k].digits) if k in headings else METRICS[k]
        for k in keys
    ]


#: The paper's Table 3 (segmentation) and Table 4 (classification).
SEG_COLUMNS = columns(
    "pixel_accuracy", "mse", "psnr", "ssim", "dice_mean", "dice_infected_mean", "iou_mean"
)
CLS_COLUMNS = columns(*CLS_KEYS)
VOLUME_COLUMNS = columns(
    "dice_mean",
    "dice_median",
    "nsd_mean",
    "nsd_median",
    "dice_infected_mean",
    "nsd_infected_mean",
    "infected_share_mae",
    "lung_pct_mae",
    "lung_pct_bias",
    "lung_pct_r",
    "relative_volume_mae",
    "n_relative",
    dice_mean="Dice mean (%)",
    dice_infected_mean="Dice infected vols (%)",
)
VOLUME_ROW_COLUMNS = columns(
    "dice",
    "nsd",
    "true_share",
    "pred_share",
    "true_lung_pct",
    "pred_lung_pct",
    "relative_error",
)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float | np.floating) and not np.isfinite(v))


def fmt(v, scale: float = 1, digits: int = 2, unit: str = "") -> str:
    """The one number formatter: ``v * scale`` with ``digits`` decimals, "n/a" when missing."""
    if _missing(v):
        return "n/a"
    if isinstance(v, int | np.integer) and scale == 1:
        return f"{v}{unit}"
    return f"{v * scale:.{digits}f}{unit}"


def fmt_metric(v, metric: Metric) -> str:
    """``v`` as its registry entry shows it."""
    return fmt(v, metric.scale, metric.digits)


def fmt_pm(mean, std, scale: float = 1, digits: int = 2) -> str:
    """ "mean ± std" (just the mean when the std is missing)."""
    text = fmt(mean, scale, digits)
    return text if _missing(mean) or _missing(std) else f"{text} ± {fmt(std, scale, digits)}"


def fmt_p(p) -> str:
    """A p-value: four decimals, scientific below 1e-4."""
    if _missing(p):
        return "n/a"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def markdown_table(rows: dict[str, dict], cols: list[Metric]) -> str:
    """One row per named block of metrics, in the paper's column layout."""
    head = "| | n | " + " | ".join(c.heading for c in cols) + " |"
    sep = "|---" * (len(cols) + 2) + "|"
    lines = [head, sep]
    for name, m in rows.items():
        n = m.get("n_slices", m.get("n", ""))
        lines.append(
            f"| {name} | {n} | " + " | ".join(fmt_metric(m.get(c.key), c) for c in cols) + " |"
        )
    return "\n".join(lines)


def confusion_png(confusion, path: Path, title: str = "") -> Path:
    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=120)
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black"
        )
    ax.set_xticks([0, 1], ["healthy", "infected"])
    ax.set_yticks([0, 1], ["healthy", "infected"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def roc_png(y_true: np.ndarray, p: np.ndarray, path: Path, auc: float | None) -> Path:
    fig, ax = plt.subplots(figsize=(3.6, 3.4), dpi=120)
    if len(np.unique(y_true)) == 2:
        fpr, tpr, _ = roc_curve(y_true, p)
        ax.plot(fpr, tpr, lw=2, label=f"AUC = {fmt(auc, 1, 3)}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "one class only:\nROC undefined", ha="center", va="center")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC (infected vs healthy)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def burden_scatter_png(rows: list[dict], path: Path) -> Path:
    """Infected % of lung per scan: predicted vs true (coloured by source) and Bland-Altman
    (pred - true against their mean, with bias and 95% limits of agreement)."""
    rows = [r for r in rows if r.get("true_lung_pct") is not None]
    t = np.array([r["true_lung_pct"] for r in rows], float)
    p = np.array([r["pred_lung_pct"] for r in rows], float)
    src = [str(r.get("source", "")) for r in rows]
    fig, (ax, ba) = plt.subplots(1, 2, figsize=(8.4, 3.8), dpi=120)
    for i, s in enumerate(sorted(set(src))):
        on = np.array([x == s for x in src])
        c = f"C{i % 10}"
        ax.scatter(t[on], p[on], s=18, color=c, label=s)
        ba.scatter(((t + p) / 2)[on], (p - t)[on], s=18, color=c)
    top = max(float(np.max(np.r_[t, p], initial=0)), 1.0) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlim(-0.02 * top, top)  # points at 0 stay whole
    ax.set_ylim(-0.02 * top, top)
    ax.set_xlabel("true infected (% of lung)")
    ax.set_ylabel("predicted infected (% of lung)")
    ax.set_title("burden per scan")
    if src:
        ax.legend(fontsize=7, loc="upper left")
    d = p - t
    if len(d):
        bias = float(d.mean())
        ba.axhline(bias, color="k", lw=1, label=f"bias {bias:.2f}")
        if len(d) >= 2:
            sd = float(d.std(ddof=1))
            for k in (-1.96, 1.96):
                ba.axhline(bias + k * sd, color="k", ls="--", lw=0.8)
            ba.plot([], [], "k--", lw=0.8, label=f"LoA ±{1.96 * sd:.2f}")
        ba.legend(fontsize=7)
    ba.axhline(0, color="grey", lw=0.5)
    ba.set_xlabel("mean of true and predicted (% of lung)")
    ba.set_ylabel("predicted - true (pp)")
    ba.set_title("Bland-Altman")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def overlay_rgb(
    image: np.ndarray,
    mask: np.ndarray | None,
    color=(1.0, 0.0, 0.0),
    alpha: float = 0.45,
    stretch: bool = True,
) -> np.ndarray:
    """The one overlay renderer: a grey slice with ``mask`` blended in ``color`` (red by default).

    ``stretch`` maps the 0.5-99.5 percentiles to [0, 1]; without it ``image`` is already in [0, 1]
    (a windowed CT slice).
    """
    if stretch:
        lo, hi = np.percentile(image, [0.5, 99.5])
        image = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(np.asarray(image, dtype=float)[..., None], 3, axis=-1)
    if mask is not None:
        m = mask.astype(bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color)
    return rgb


def overlay_sheet(cases: list[dict], path: Path, title: str = "") -> Path:
    """Rows of (CT slice, true mask, predicted mask in red); keys: image, true, pred, caption."""
    n = max(len(cases), 1)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), dpi=110, squeeze=False)
    for row, case in zip(axes, cases, strict=False):
        row[0].imshow(overlay_rgb(case["image"], None))
        row[0].set_title(case.get("caption", ""), fontsize=7, parse_math=False)  # user text
        row[1].imshow(overlay_rgb(case["image"], case.get("true"), color=(0.1, 0.9, 0.1)))
        row[1].set_title("true mask (green)", fontsize=7)
        row[2].imshow(overlay_rgb(case["image"], case["pred"]))
        row[2].set_title("predicted (red)", fontsize=7)
        for ax in row:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def burden_text(pv: dict) -> str:
    """One paragraph on the infected burden of the ``per_volume`` block: agreement in % of lung,
    relative error over the scans it is defined for, and mL where the spacing is known."""
    loa = pv.get("lung_pct_loa")
    loa_s = f"[{fmt(loa[0])}, {fmt(loa[1])}] pp" if loa else "n/a"
    ml = (
        f"MAE {fmt(pv.get('ml_mae'))} mL."
        if pv.get("ml_mae") is not None
        else f"Volumes in mL: {pv.get('ml', 'unknown spacing')}."
    )
    return (
        "Infected burden (% of lung, per scan): "
        f"Pearson r {fmt(pv.get('lung_pct_r'), 1, 3)}, "
        f"Spearman {fmt(pv.get('lung_pct_spearman'), 1, 3)}; "
        f"bias (pred - true) {fmt(pv.get('lung_pct_bias'))} pp, "
        f"95% limits of agreement {loa_s}; MAE {fmt(pv.get('lung_pct_mae'))} pp. "
        f"Relative volume error over {pv.get('n_relative', 0)} scan(s), "
        f"{pv.get('relative_rule', 'n/a')}: "
        f"MAE {fmt(pv.get('relative_volume_mae'), 100)} %, "
        f"bias {fmt(pv.get('relative_volume_bias'), 100)} %. {ml}"
    )


def volume_section(pv: dict) -> str:
    """Markdown for the ``per_volume`` block: a summary per source, then one row per volume."""
    if not pv or not pv.get("n_volumes"):
        return f"No volumes ({pv.get('rule', 'none') if pv else 'none'})."

    def ci(key: str) -> str:
        v = pv.get(key)
        return f"[{fmt(v[0], 100)}, {fmt(v[1], 100)}]" if v else "n/a"

    summary = {"all volumes": {**pv, "n": pv["n_volumes"]}}
    summary.update(
        {f"source: {s}": {**b, "n": b["n_volumes"]} for s, b in pv.get("per_source", {}).items()}
    )
    rows = {f"{r['source']}/{r['patient']}": r for r in pv.get("volumes", [])}
    return (
        f"Volumes: {pv['rule']}; NSD tolerance {pv['tolerance_px']:g} px of the model grid "
        "(a slice step counts as one pixel). 95% bootstrap CIs over volumes: "
        f"Dice {ci('dice_ci')} %, NSD {ci('nsd_ci')} %. "
        f"{pv['n_empty_truth']} volume(s) hold no infection (Dice/NSD 1 when none is predicted); "
        "'infected vols' leaves them out. pp = percentage points.\n\n"
        + markdown_table(summary, VOLUME_COLUMNS)
        + "\n\n"
        + burden_text(pv)
        + "\n\nPer volume (n = slices):\n\n"
        + markdown_table(rows, VOLUME_ROW_COLUMNS)
    )

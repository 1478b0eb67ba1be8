"""Tables and figures: Table 3/4-style Markdown, confusion matrix, ROC curve, overlay sheets."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

SEG_COLUMNS = [
    ("pixel_accuracy", "Acc (%)", 100),
    ("mse", "MSE", 1),
    ("psnr", "PSNR (dB)", 1),
    ("ssim", "SSIM", 1),
    ("dice_mean", "Dice (%)", 100),
    ("dice_infected_mean", "Dice infected (%)", 100),
    ("iou_mean", "IoU (%)", 100),
]
CLS_COLUMNS = [
    ("accuracy", "Acc (%)", 100),
    ("sensitivity", "Sens (%)", 100),
    ("specificity", "Spec (%)", 100),
    ("auc", "AUC (%)", 100),
    ("precision", "Prec (%)", 100),
    ("f1", "F1 (%)", 100),
    ("mcc", "MCC (%)", 100),
]

#: Per-volume summary (lungmtl.volume_metrics): one row per source, n = volumes.
VOLUME_COLUMNS = [
    ("dice_mean", "Dice mean (%)", 100),
    ("dice_median", "Dice median (%)", 100),
    ("nsd_mean", "NSD mean (%)", 100),
    ("nsd_median", "NSD median (%)", 100),
    ("dice_infected_mean", "Dice infected vols (%)", 100),
    ("nsd_infected_mean", "NSD infected vols (%)", 100),
    ("infected_share_mae", "MAE infected share of volume (pp)", 100),
    ("lung_pct_mae", "MAE infected % of lung (pp)", 1),
    ("relative_volume_mae", "MAE relative volume (%)", 100),
]
#: One row per volume.
VOLUME_ROW_COLUMNS = [
    ("dice", "Dice (%)", 100),
    ("nsd", "NSD (%)", 100),
    ("true_share", "true infected (% of volume)", 100),
    ("pred_share", "predicted infected (% of volume)", 100),
    ("true_lung_pct", "true (% of lung)", 1),
    ("pred_lung_pct", "predicted (% of lung)", 1),
    ("relative_error", "relative volume error (%)", 100),
]


def fmt(v, scale: float = 1, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v * scale:.{digits}f}"


def markdown_table(rows: dict[str, dict], columns: list[tuple[str, str, float]]) -> str:
    """One row per named block of metrics, in the paper's column layout."""
    head = "| | n | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---" * (len(columns) + 2) + "|"
    lines = [head, sep]
    for name, m in rows.items():
        n = m.get("n_slices", m.get("n", ""))
        lines.append(
            f"| {name} | {n} | " + " | ".join(fmt(m.get(k), s) for k, _, s in columns) + " |"
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


def overlay_rgb(
    image: np.ndarray, mask: np.ndarray | None, color=(1.0, 0.0, 0.0), alpha: float = 0.45
) -> np.ndarray:
    """Grey slice in [0,1] with ``mask`` blended in ``color`` (red by default)."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    g = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=-1)
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
        + "\n\nPer volume (n = slices):\n\n"
        + markdown_table(rows, VOLUME_ROW_COLUMNS)
    )

"""How well probabilities mean what they say: expected calibration error, Brier score and the
reliability table behind a reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import brier_score_loss

#: Equal-width probability bins of the ECE and the reliability diagram.
N_BINS = 10


def reliability_bins(p, y, n_bins: int = N_BINS) -> list[dict]:
    """Per equal-width bin of ``p``: its edges, count, mean probability and observed frequency."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        bins.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": n,
                "mean_p": float(p[inside].mean()) if n else None,
                "observed": float(y[inside].mean()) if n else None,
            }
        )
    return bins


def expected_calibration_error(p, y, n_bins: int = N_BINS) -> float:
    """ECE: the count-weighted mean gap between mean probability and observed frequency."""
    bins = reliability_bins(p, y, n_bins)
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] * abs(b["mean_p"] - b["observed"]) for b in bins if b["n"]) / total)


def calibration_block(p, y, n_bins: int = N_BINS) -> dict:
    """The calibration keys of metrics.json: n, ECE (and its bin count), Brier score, bins."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    if not len(p):
        return {"n": 0, "ece": None, "n_bins": n_bins, "brier": None, "bins": []}
    return {
        "n": len(p),
        "n_positive": int(y.sum()),
        "ece": expected_calibration_error(p, y, n_bins),
        "n_bins": n_bins,
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "bins": reliability_bins(p, y, n_bins),
    }


def reliability_png(curves: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """A reliability diagram: observed frequency against mean probability per bin, one line per
    named :func:`calibration_block`, the diagonal for reference; marker area ~ bin count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for name, block in curves.items():
        pts = [b for b in block.get("bins", []) if b["n"]]
        if not pts:
            continue
        x = [b["mean_p"] for b in pts]
        yv = [b["observed"] for b in pts]
        n = np.array([b["n"] for b in pts], float)
        ece = block.get("ece")
        label = f"{name} (ECE {ece:.3f}, n={block['n']})" if ece is not None else name
        (line,) = ax.plot(x, yv, marker="", lw=1.2, label=label)
        ax.scatter(x, yv, s=12 + 120 * n / n.max(), color=line.get_color(), alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean P(infected) in bin")
    ax.set_ylabel("fraction infected")
    ax.set_title(title or "reliability")
    ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

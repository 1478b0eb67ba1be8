"""Pictures a radiologist can check and a self-contained ``report.html`` for one predicted case.

The report opens offline: every picture is embedded as a base64 PNG, styles are inline, and no
script, font or stylesheet is fetched from anywhere.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # imported for annotations only: inference imports this module lazily
    from .inference import Case, Predictor

#: Slices shown in the overlay sheet: the most affected ones, then evenly spaced others.
SHEET_SLICES = 12
SHEET_TOP = 6
RED = np.array([1.0, 0.0, 0.0])


def display_window(slice_: np.ndarray, kind: str) -> np.ndarray:
    """A slice scaled to [0, 1] for display: the lung window for HU, 0..255 for 8-bit input."""
    from .inference import DISPLAY_WINDOW

    lo, hi = DISPLAY_WINDOW if kind == "hu" else (0.0, 255.0)
    return np.clip((np.asarray(slice_, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _red(grey: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    m = mask.astype(bool)
    rgb[m] = (1 - alpha) * rgb[m] + alpha * RED
    return rgb


def pick_sheet_slices(infected_px: np.ndarray, n: int = SHEET_SLICES, top: int = SHEET_TOP):
    """Slice indices for the sheet, in z order: the ``top`` most affected, then evenly spaced."""
    z = len(infected_px)
    affected = [int(k) for k in np.argsort(-infected_px, kind="stable")[:top] if infected_px[k]]
    rest = [int(k) for k in np.linspace(0, z - 1, min(n, z)).round().astype(int)]
    chosen = list(dict.fromkeys(affected + rest))[: min(n, z)]
    return sorted(chosen)


def overlay_sheet(case: Case, mask: np.ndarray, slices: pd.DataFrame, out_dir: Path) -> Path:
    """``overlays.png``: chosen slices in the lung window with the predicted infection in red.

    Args:
        case: the case (its native slices are shown, radiological view).
        mask: (Z, H, W) predicted mask at native size.
        slices: the per-slice table (captions).
        out_dir: folder to write into.
    """
    picks = pick_sheet_slices(slices["infected_px"].to_numpy())
    cols = min(4, len(picks))
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), picks, strict=False):
        grey = display_window(case.image.array[k], case.image.kind)
        ax.imshow(_red(grey, mask[k]), interpolation="nearest")
        r = slices.iloc[k]
        ax.set_title(
            f"z={k} ({r['slice_id']})  P={r['p_infected']:.2f}\n"
            f"{r['infected_percent_of_lung']:.1f}% of lung",
            fontsize=8,
            parse_math=False,  # slice ids and names are user text: a "$" is not TeX
        )
    fig.suptitle(
        f"{case.name}: predicted infection in red (lung window)", fontsize=10, parse_math=False
    )
    fig.tight_layout()
    path = out_dir / "overlays.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def gradcam_sheet(
    predictor: Predictor,
    images: np.ndarray,
    seg_prob: np.ndarray,
    captions: list[str],
    out_dir: Path,
) -> Path:
    """``gradcam.png``: per slice, the model input, Grad-CAM of "infected", the predicted mask.

    Args:
        predictor: the model (Grad-CAM on its default layer, the deepest encoder stage).
        images: (K, S, S) pre-processed slices.
        seg_prob: (K, S, S) infection probabilities.
        captions: one per slice.
        out_dir: folder to write into.
    """
    from .explain import grad_cam

    x = torch_from(images)
    cams = grad_cam(predictor.model, x)
    k = len(images)
    fig, axes = plt.subplots(k, 3, figsize=(8, 2.8 * k), dpi=100, squeeze=False)
    for row, img, cam, prob, cap in zip(axes, images, cams, seg_prob, captions, strict=True):
        grey = np.clip(img / max(float(img.max()), 1e-6), 0, 1)
        row[0].imshow(grey, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{cap}: model input", fontsize=8, parse_math=False)
        row[1].imshow(grey, cmap="gray", vmin=0, vmax=1)
        row[1].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        row[1].set_title("Grad-CAM: evidence for 'infected'", fontsize=8)
        row[2].imshow(_red(grey, prob >= 0.5))
        row[2].set_title("predicted infection (red)", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    path = out_dir / "gradcam.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def torch_from(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v, unit: str = "", digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def write_report(summary: dict, slices: pd.DataFrame, out_dir: Path) -> Path:
    """``report.html``: verdict, burden, pictures and the per-slice table, all in one file.

    Args:
        summary: the case summary (as in ``summary.json``).
        slices: the per-slice table (as in ``slices.csv``).
        out_dir: folder holding the pictures named in ``summary["pictures"]``.
    """
    e = html.escape
    verdict = summary["verdict"]
    colour = "#b00020" if verdict == "infected" else "#1b5e20"
    facts = [
        ("verdict", f'<b style="color:{colour}">{e(verdict)}</b>'),
        ("rule", e(summary["rule"])),
        ("positive slices", f"{summary['n_positive_slices']} / {summary['n_slices']}"),
        ("infected volume", _fmt(summary.get("infected_ml"), " mL")),
        ("lung volume", _fmt(summary.get("lung_ml"), " mL")),
        ("infected % of lung", _fmt(summary.get("infected_percent_of_lung"), " %", 2)),
        ("lung mask", e(summary["lung_mask"])),
        ("CRF post-processing", "yes" if summary.get("crf") else "no"),
        ("input", e(summary["input"])),
        ("checkpoint", e(summary.get("checkpoint", ""))),
        ("spacing (z, y, x) mm", e(str(summary.get("spacing_mm") or "unknown"))),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    top = "".join(
        f"<li>z={t['z']} ({e(str(t['slice_id']))}): P(infected) {t['p_infected']:.3f}, "
        f"{t['infected_px']} px</li>"
        for t in summary.get("most_affected_slices", [])
    )
    pics = "".join(
        f"<h2>{e(name)}</h2>{_img(out_dir / file, name)}"
        for name, file in summary.get("pictures", {}).items()
    )
    warn = "".join(f"<li>{e(w)}</li>" for w in summary.get("warnings", []))
    table = slices.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>lungmtl: {e(summary["case"])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1100px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
img {{ max-width: 100%; }}
.note {{ color: #555; font-size: 0.85em; }}
</style></head><body>
<h1>{e(summary["case"])}</h1>
<table>{rows}</table>
<h2>most affected slices</h2><ol>{top or "<li>none</li>"}</ol>
{f"<h2>warnings</h2><ul>{warn}</ul>" if warn else ""}
{pics}
<h2>slices</h2>
<p class="note">z: index in the radiological axial view (0 = most inferior for volumes with
geometry). P(infected) from the classification head; masks from the segmentation head.</p>
{table}
<p class="note">Research software, not a medical device: check every finding on the images.</p>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path

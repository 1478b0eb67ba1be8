"""``report.html`` for one predicted case (a slice viewer) and ``index.html`` for a batch.

The report opens offline from one file: the slices, masks and Grad-CAM maps are embedded
(``data:`` URLs), the viewer's script and styles are inline, and nothing (script, font, style
sheet, picture) is fetched from anywhere. The viewer itself is hand-written vanilla JavaScript on
``<canvas>`` (see :mod:`lungmtl.viewer` for why no viewer library, and for what is embedded).
``overlays.png`` stays a picture of its own, for a document or an e-mail.
"""

from __future__ import annotations

import base64
import html
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from .. import viewer
from ..files import write_text
from ..presentation import fmt, overlay_rgb
from ..viewer import ViewerData

if TYPE_CHECKING:
    import torch

    from .types import Case, CaseResult

#: Slices shown in the overlay sheet: the most affected ones, then evenly spaced others.
SHEET_SLICES = 12
SHEET_TOP = 6


def display_window(slice_: np.ndarray, kind: str) -> np.ndarray:
    """A slice scaled to [0, 1] for display: the lung window for HU, 0..255 for 8-bit input."""
    lo, hi = viewer.LUNG_WINDOW if kind == "hu" else (0.0, 255.0)
    return np.clip((np.asarray(slice_, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _share(pct) -> str:
    """A slice's infected share of lung, or why it is unknown (never a false 0%)."""
    if pct is None or not np.isfinite(pct):
        return "share of lung unknown"
    return f"{fmt(pct, digits=1)}% of lung"


def pick_sheet_slices(infected_px: np.ndarray, n: int = SHEET_SLICES, top: int = SHEET_TOP):
    """Slice indices for the sheet, in z order: the ``top`` most affected, then evenly spaced."""
    z = len(infected_px)
    affected = [int(k) for k in np.argsort(-infected_px, kind="stable")[:top] if infected_px[k]]
    rest = [int(k) for k in np.linspace(0, z - 1, min(n, z)).round().astype(int)]
    chosen = list(dict.fromkeys(affected + rest))[: min(n, z)]
    return sorted(chosen)


def case_overlay_sheet(case: Case, mask: np.ndarray, slices: pd.DataFrame, out_dir: Path) -> Path:
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
        ax.imshow(overlay_rgb(grey, mask[k], stretch=False), interpolation="nearest")
        r = slices.iloc[k]
        ax.set_title(
            f"z={k} ({r['slice_id']})  P={fmt(r['p_infected'])}\n"
            + _share(r["infected_percent_of_lung"]),
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


def gradcam_maps(
    model: torch.nn.Module, images: np.ndarray, boxes: list, ks: list[int]
) -> dict[int, tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Grad-CAM of "infected" on slices ``ks``, for the viewer.

    Args:
        model: the model (Grad-CAM on its default layer, the deepest encoder stage).
        images: (Z, S, S) pre-processed slices of the whole case.
        boxes: per slice, the crop box (r0, r1, c0, c1) its pre-processed image came from.
        ks: the slices to explain.

    Returns:
        slice -> (map (S, S) in [0, 1], its crop box).
    """
    if not ks:
        return {}
    from ..explain import grad_cam

    cams = grad_cam(model, torch_from(images[list(ks)]))
    return {int(k): (cam, tuple(int(b) for b in boxes[k])) for k, cam in zip(ks, cams, strict=True)}


def torch_from(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _spacing(spacing) -> str:
    if not spacing:
        return "unknown"
    return " x ".join(f"{float(v):.4g}" for v in spacing)


def _input(i) -> str:
    """The input's path and what kind of input it was read as."""
    if not isinstance(i, dict):
        return str(i)
    kind = f" ({i['kind']}" + (f", {i['slices']} slices" if i.get("slices") else "") + ")"
    return f"{i.get('path', '')}{kind if i.get('kind') else ''}"


def _calibration(c: dict | None) -> str:
    """One line on where P(infected) and the slice threshold come from."""
    if not c or c.get("origin") == "model":
        return "none (the model's own P)"
    if c.get("origin") == "validation" and c["slope"] == 1 and c["intercept"] == 0:
        return "checked on validation: the model's own P kept"
    where = f"site file {c.get('file')}" if c.get("origin") == "site" else "fitted on validation"
    return f"{where}; temperature {c['temperature']:g}, slice threshold {c['threshold']:.3g}"


def _verdict(verdict: str) -> str:
    colour = "#b00020" if verdict == "infected" else "#1b5e20"
    return f'<b style="color:{colour}">{html.escape(str(verdict))}</b>'


def _viewer_html(view: ViewerData, slices: pd.DataFrame, summary: dict) -> tuple[str, str]:
    """The viewer's section, and its data and script (for the end of the page)."""
    data = viewer.payload_json(viewer.payload(view, slices, summary))
    legend = (
        '<span class="swatch" style="background:#f6c9c9"></span>positive run long '
        'enough for the verdict &nbsp; <span class="swatch" style="background:#ffe3b0">'
        '</span>shorter positive run &nbsp; <span class="swatch" style="background:#1565c0"></span>'
        'P(infected) per slice (dashed: threshold) &nbsp; <span class="swatch" '
        'style="background:#cc6666"></span>infected area per slice &nbsp; '
        '<span style="color:#ce93d8">&#9660;</span> Grad-CAM slices. Click to go to a slice.'
    )
    return (
        f"""<section id="viewer">
<h2>every slice (axial, radiological view: patient's right on the left)</h2>
<noscript><p>The slice viewer needs JavaScript; the table below lists every slice.</p></noscript>
<div class="viewer-grid">
<div class="stage"><canvas id="view" tabindex="0" aria-label="CT slice"></canvas>
<input id="slider" type="range" min="0" max="0" step="1" value="0" aria-label="slice"></div>
<div class="panel"><div id="caption" aria-live="polite"></div>
<div class="controls">
<label>window <select id="window"></select></label>
<label><input type="checkbox" id="show-infection" checked> <span class="swatch"
 style="background:#ff2020"></span>predicted infection</label>
<label><input type="checkbox" id="show-outline" checked> <span class="swatch"
 style="background:#00dcff"></span>lung outline ({html.escape(summary.get("lung_mask", ""))}
 mask)</label>
<label><input type="checkbox" id="show-cam"> Grad-CAM of "infected"
 <span id="cam-note"></span></label>
<label>overlay opacity <input type="range" id="opacity" min="0" max="100" value="45"></label>
</div>
<p class="help">Wheel over the image, arrow keys (&uarr;/&rarr; up towards the head, &darr;/&larr;
down), Page Up/Down (10 slices), Home/End, or the slider move through the slices. Keys: o
infection, l lung outline, g Grad-CAM, w window.</p>
<canvas id="plot" aria-label="P(infected) and infected area along z"></canvas>
<div class="legend">{legend}</div></div>
</div>
</section>""",
        f"""<script id="lungmtl-data" type="application/json">{data}</script>
<script>{viewer.asset("viewer.js")}</script>""",
    )


def write_report(
    summary: dict, slices: pd.DataFrame, out_dir: Path, view: ViewerData | None = None
) -> Path:
    """``report.html``: verdict, burden, the slice viewer and the per-slice table, in one file.

    Args:
        summary: the case summary (as in ``summary.json``).
        slices: the per-slice table (as in ``slices.csv``).
        out_dir: the case folder (pictures named in ``summary["pictures"]`` are read from it
            where there is no viewer); ``thumbnail.jpg`` is written into it with the viewer.
        view: the slices, masks and Grad-CAM maps for the viewer; without it the report embeds
            the pictures instead.
    """
    e = html.escape
    facts = [
        ("verdict", _verdict(summary["verdict"])),
        ("rule", e(summary["rule"])),
        ("scan score", fmt(summary.get("scan_score"), digits=3)),
        ("scan probability", fmt(summary.get("scan_probability"), digits=3)),
        ("calibration", e(_calibration(summary.get("calibration")))),
        ("positive slices", f"{summary['n_positive_slices']} / {summary['n_slices']}"),
        ("infected volume", fmt(summary.get("infected_ml"), digits=1, unit=" mL")),
        ("lung volume", fmt(summary.get("lung_ml"), digits=1, unit=" mL")),
        ("infected % of lung", fmt(summary.get("infected_percent_of_lung"), unit=" %")),
        ("lung mask", e(summary["lung_mask"])),
        ("CRF post-processing", "yes" if summary.get("crf") else "no"),
        ("input", e(_input(summary["input"]))),
        ("checkpoint", e(summary.get("checkpoint", ""))),
        ("spacing (z, y, x) mm", _spacing(summary.get("spacing_mm"))),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    items = []
    for t in summary.get("most_affected_slices", []):
        where = f"z={t['z']} ({e(str(t['slice_id']))})"
        if view is not None:
            where = f'<a href="#z={t["z"]}" data-goto="{t["z"]}">{where}</a>'
        p = fmt(t["p_infected"], digits=3)
        items.append(f"<li>{where}: P(infected) {p}, {t['infected_px']} px</li>")
    top = "".join(items)
    warn = "".join(f"<li>{e(w)}</li>" for w in summary.get("warnings", []))
    if view is not None:
        body, scripts = _viewer_html(view, slices, summary)
        write_thumbnail(view, summary, out_dir / "thumbnail.jpg")
    else:
        scripts = ""
        body = "".join(
            f"<h2>{e(name)}</h2>{_img(out_dir / file, name)}"
            for name, file in summary.get("pictures", {}).items()
        )
    table = slices.to_html(
        index=False, float_format=lambda v: fmt(v, digits=3), border=0, table_id="slice-table"
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lungmtl: {e(summary["case"])}</title>
<style>
{viewer.asset("viewer.css")}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{e(summary["case"])}</h1>
<p class="note"><b>{e(summary.get("intended_use", ""))}</b>
Model: {e(summary.get("model", ""))}.</p>
<div class="top"><table>{rows}</table>
<div><h2>most affected slices</h2><ol>{top or "<li>none</li>"}</ol>
{f"<h2>warnings</h2><ul>{warn}</ul>" if warn else ""}</div></div>
{body}
<h2>slices</h2>
<p class="note">z: index in the radiological axial view (0 = most inferior for volumes with
geometry). P(infected) from the classification head; masks from the segmentation head.
{"Click a row to show the slice." if view is not None else ""}</p>
{table}
<p class="note">Research software, not a medical device: check every finding on the images.</p>
{scripts}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path


# ---------------------------------------------------------------- index of a batch

THUMBNAIL_SIDE = 160


def write_thumbnail(view: ViewerData, summary: dict, path: Path) -> Path:
    """``thumbnail.jpg``: the most affected slice (else the middle one), infection in red."""
    top = summary.get("most_affected_slices") or []
    k = int(top[0]["z"]) if top else len(view.volume) // 2
    grey = display_window(view.volume[k], view.kind)
    rgb = (overlay_rgb(grey, view.mask[k], stretch=False) * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    height = grey.shape[0] * view.pixel_mm[0]  # mm: square pixels on screen
    width = grey.shape[1] * view.pixel_mm[1]
    scale = THUMBNAIL_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    img.resize(size, Image.Resampling.LANCZOS).save(path, "JPEG", quality=80)
    return path


def _thumb(case_dir: Path) -> str:
    path = case_dir / "thumbnail.jpg"
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="thumb" alt="most affected slice" src="data:image/jpeg;base64,{data}">'


def _index_row(name: str, s: dict, case_dir: Path, note: str = "") -> str:
    e = html.escape
    link = f"{quote(name)}/report.html"
    top = s.get("most_affected_slices") or []
    at = f"#z={int(top[0]['z'])}" if top else ""
    has_report = (case_dir / "report.html").is_file()
    title = f'<a href="{link}">{e(name)}</a>' if has_report else e(name)
    thumb = _thumb(case_dir)
    if thumb and has_report:
        thumb = f'<a href="{link}{at}">{thumb}</a>'
    pct = s.get("infected_percent_of_lung")
    return (
        f'<tr class="case"><td>{title}{f"<br><small>{e(note)}</small>" if note else ""}</td>'
        f"<td>{_verdict(s.get('verdict', '?'))}</td>"
        f"<td>{s.get('n_positive_slices', '?')} / {s.get('n_slices', '?')}"
        f" (longest run {s.get('longest_positive_run', '?')})</td>"
        f"<td>{fmt(s.get('infected_ml'), digits=1, unit=' mL')}</td>"
        f"<td>{fmt(pct, unit=' %')}</td>"
        f"<td>{fmt(s.get('max_p_infected'), digits=3)}</td>"
        f"<td>{thumb}</td><td><small>{e(str(s.get('input', '')))}</small></td></tr>"
    )


def write_index(out: Path, results: Sequence[CaseResult]) -> Path | None:
    """``OUT/index.html``: one row per case (verdict, burden, thumbnail, link to its report)
    and the failed cases with their reasons.

    Finished case folders under ``out`` that this run did not list (another shard's, or an
    earlier run's) are listed too, marked as such. Returns None (with a warning) where the page
    cannot be written: the cases are written already, so that fails no case.
    """
    e = html.escape
    out = Path(out)
    ok = [r for r in results if r.ok and r.summary is not None]
    failed = [r for r in results if not r.ok]
    seen = {r.name for r in results}
    rows = [_index_row(r.name, r.summary, out / r.name) for r in ok]
    others = 0
    for d in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        if d.name in seen or not (d / "summary.json").is_file():
            continue
        try:
            s = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append(_index_row(d.name, s, d, "from another shard or an earlier run"))
        others += 1
    verdicts = [r.summary.get("verdict") for r in ok]
    counts = (
        f"{len(ok)} case(s) predicted in this run: {verdicts.count('infected')} infected, "
        f"{verdicts.count('healthy')} healthy; {len(failed)} failed"
        + (f"; {others} more from other runs" if others else "")
    )
    fails = "".join(
        f'<tr class="failed"><td>{e(r.name)}</td><td><small>{e(r.source)}</small></td>'
        f"<td>{e(r.message)}</td></tr>"
        for r in failed
    )
    failed_html = (
        f"<h2>failed cases</h2><table><tr><th>case</th><th>input</th><th>reason</th></tr>"
        f"{fails}</table>"
        if failed
        else ""
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>lungmtl: {len(ok) + others} case(s)</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left;
  vertical-align: middle; }}
img.thumb {{ display: block; border-radius: 3px; }}
tr.failed td {{ color: #8a1c1c; }}
</style></head><body>
<h1>lungmtl predict: {len(ok) + others} case(s)</h1>
<p>{e(counts)}. Click a case for its report, its picture for its most affected slice.</p>
<table id="cases"><tr><th>case</th><th>verdict</th><th>positive slices</th>
<th>infected volume</th><th>infected % of lung</th><th>max P(infected)</th>
<th>most affected slice</th><th>input</th></tr>
{"".join(rows) or '<tr><td colspan="8">no case predicted</td></tr>'}</table>
{failed_html}
<p style="color:#555;font-size:0.85em">Research software, not a medical device: check every
finding on the images.</p>
</body></html>
"""
    try:
        return write_text(out / "index.html", doc)
    except OSError as err:  # a convenience page: the cases themselves are written
        warnings.warn(f"could not write {out / 'index.html'}: {err}", stacklevel=2)
        return None

"""The slice viewer of ``report.html``: the case's data, compressed, for a script in the page
(what is embedded and why: docs/data-format.md, "The report viewer").
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from ..metrics import THRESHOLD

if TYPE_CHECKING:
    import pandas as pd

    from ..predict.types import Case

#: Lung window (W 1500 / L -600) and mediastinal window (W 350 / L 40) for HU input.
LUNG_WINDOW = (-1350.0, 150.0)
MEDIASTINAL_WINDOW = (-135.0, 215.0)
JPEG_QUALITY = {"lung": 85, "mediastinal": 80, "stored": 85}
INFECTION_RGB = (255, 32, 32)
OUTLINE_RGB = (0, 220, 255)


@dataclass
class ViewerData:
    """What the viewer shows besides the per-slice table.

    Attributes:
        volume: (Z, H, W) the native slices (HU or 0..255), radiological axial view.
        kind: ``"hu"`` or ``"8bit"``.
        mask: (Z, H, W) predicted infection (0/1).
        lung: (Z, H, W) bool, the lung mask used for the burden figures.
        pixel_mm: (row, column) pixel spacing, for the aspect ratio (1, 1 where unknown).
        z_mm: per slice, the superior (S) world position of the slice centre in mm; None where
            the input has no geometry.
        min_consecutive: positive slices in a row that make the scan infected.
        breaks: (Z,) bool or None: a jump in slice numbers before slice k (a run restarts).
        cams: slice -> (Grad-CAM map (S, S) in [0, 1], crop box (r0, r1, c0, c1) of the slice).
    """

    volume: np.ndarray
    kind: str
    mask: np.ndarray
    lung: np.ndarray
    pixel_mm: tuple[float, float] = (1.0, 1.0)
    z_mm: list[float] | None = None
    min_consecutive: int = 3
    breaks: np.ndarray | None = None
    cams: dict[int, tuple[np.ndarray, tuple[int, int, int, int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, case: Case, mask, lung, min_consecutive: int, cams=None) -> ViewerData:
        """The viewer data of a predicted case (``mask``, ``lung`` at native size)."""
        image = case.image
        vol = np.asarray(image.array)
        z_mm = None
        if image.affine is not None and vol.ndim == 3:
            z, h, w = vol.shape
            centre = np.stack([np.arange(z), np.full(z, (h - 1) / 2), np.full(z, (w - 1) / 2)])
            affine = np.asarray(image.affine, dtype=float)
            world = affine[:3, :3] @ centre + affine[:3, 3:4]
            z_mm = [round(float(v), 2) for v in world[2]]
        spacing = tuple(float(s) for s in image.spacing)
        return cls(
            volume=vol,
            kind=image.kind,
            mask=np.asarray(mask),
            lung=np.asarray(lung, dtype=bool),
            pixel_mm=(spacing[-2], spacing[-1]),
            z_mm=z_mm,
            min_consecutive=int(min_consecutive),
            breaks=case.breaks,
            cams=dict(cams or {}),
        )


def asset(name: str) -> str:
    """The text of ``viewer.js`` / ``viewer.css`` (package data)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def windowed(slice_: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """A slice as uint8 through a (low, high) window."""
    lo, hi = window
    scaled = (np.asarray(slice_, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def jpeg_url(grey: np.ndarray, quality: int) -> str:
    """A uint8 greyscale picture as a JPEG ``data:`` URL."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey), "L").save(buf, "JPEG", quality=quality)
    return _data_url("image/jpeg", buf.getvalue())


def mask_url(mask: np.ndarray, rgb: tuple[int, int, int]) -> str | None:
    """A binary mask as a PNG ``data:`` URL: ``rgb`` where set, transparent elsewhere; None
    for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    img = Image.fromarray(m.astype(np.uint8), "P")
    img.putpalette([0, 0, 0, *rgb])
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0, bits=1)
    return _data_url("image/png", buf.getvalue())


def cam_url(cam: np.ndarray) -> str:
    """A Grad-CAM map in [0, 1] as an RGBA PNG ``data:`` URL: jet colours, the value as alpha."""
    x = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    rgb = np.stack([np.clip(1.5 - np.abs(4 * x - c), 0, 1) for c in (3.0, 2.0, 1.0)], axis=-1)
    rgba = np.concatenate([rgb, x[..., None]], axis=-1)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(buf, "PNG")
    return _data_url("image/png", buf.getvalue())


def outline(lung: np.ndarray) -> np.ndarray:
    """The border of each slice's lung mask, about 2 px wide on a 512-pixel slice."""
    lung = np.asarray(lung, dtype=bool)
    width = max(1, round(lung.shape[-1] / 256))
    inner = ndimage.binary_erosion(lung, np.ones((1, 3, 3), bool), iterations=width)
    return lung & ~inner


def runs(positive: np.ndarray, breaks: np.ndarray | None = None) -> list[list[int]]:
    """[first, last] of each run of positive slices (a jump in slice numbers ends a run)."""
    out: list[list[int]] = []
    gaps = np.zeros(len(positive), bool) if breaks is None else np.asarray(breaks, dtype=bool)
    for k, (p, gap) in enumerate(zip(np.asarray(positive, dtype=bool), gaps, strict=True)):
        if p and out and out[-1][1] == k - 1 and not gap:
            out[-1][1] = k
        elif p:
            out.append([k, k])
    return out


def _nums(values, digits: int) -> list:
    return [None if v is None or not np.isfinite(v) else round(float(v), digits) for v in values]


def payload(view: ViewerData, slices: pd.DataFrame, summary: dict) -> dict:
    """Everything the script needs, as JSON-ready data (pictures as ``data:`` URLs)."""
    vol = view.volume
    z, h, w = vol.shape
    if view.kind == "hu":
        windows = [
            ["lung", "lung (W 1500 / L -600)", LUNG_WINDOW],
            ["mediastinal", "mediastinal (W 350 / L 40)", MEDIASTINAL_WINDOW],
        ]
    else:
        windows = [["stored", "as stored (8-bit, 0-255)", (0.0, 255.0)]]
    ct = {
        name: [jpeg_url(windowed(vol[k], win), JPEG_QUALITY[name]) for k in range(z)]
        for name, _, win in windows
    }
    borders = outline(view.lung)
    positive = slices["positive"].to_numpy(bool)
    p = slices["p_infected"].to_numpy(float)
    top = [int(t["z"]) for t in summary.get("most_affected_slices", [])]
    mm2 = slices["infected_mm2"] if "infected_mm2" in slices else None
    known_mm2 = mm2 is not None and pd_notna_all(mm2)
    return {
        "case": summary.get("case", ""),
        "n": int(z),
        "h": int(h),
        "w": int(w),
        "kind": view.kind,
        "aspect": (w * view.pixel_mm[1]) / (h * view.pixel_mm[0]),
        "windows": [[name, label] for name, label, _ in windows],
        "ct": ct,
        "infection": [mask_url(view.mask[k], INFECTION_RGB) for k in range(z)],
        "outline": [mask_url(borders[k], OUTLINE_RGB) for k in range(z)],
        "cam": {
            str(k): {"src": cam_url(cam), "box": [int(b) for b in box]}
            for k, (cam, box) in sorted(view.cams.items())
        },
        "ids": [str(s) for s in slices["slice_id"]],
        "p": _nums(p, 4),
        "positive": [bool(v) for v in positive],
        "inf_px": [int(v) for v in slices["infected_px"]],
        "inf_mm2": _nums(mm2.to_numpy(float), 2) if known_mm2 else None,
        "inf_pct": _nums(slices["infected_percent_of_lung"].to_numpy(float), 3),
        "z_mm": view.z_mm,
        "threshold": float(summary.get("slice_threshold", summary.get("threshold", THRESHOLD))),
        "need": int(view.min_consecutive),
        "runs": runs(positive, view.breaks),
        "top": top,
        "initial": top[0] if top else int(z // 2),
    }


def pd_notna_all(series) -> bool:
    """Every value of a column is a number (not None / NaN)."""
    values = np.asarray(series.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    return bool(len(values)) and bool(np.isfinite(values).all())


def payload_json(data: dict) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

"""A procedural chest-CT phantom: lungmtl's built-in data for the demo and the tests.

No real data ships with the package; this module draws CT-like volumes in Hounsfield units with
known lung and infection masks, and writes them in lungmtl's manifest layout
(see docs/data-format.md and the data README: manifest.csv + images/ + masks/ + ...).

Image convention: axial slices, anterior at the top (row 0), patient's right on the image left.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from .manifest import MANIFEST_COLUMNS

# Tissue levels in HU (typical values; the noise is added on top).
AIR = -1000.0
LUNG = -850.0
FAT = -100.0
SOFT_TISSUE = 40.0
BLOOD = 50.0
BONE = 700.0
NOISE_HU = 20.0
FOV_MM = 350.0
SLICE_MM = 5.0


class PhantomVolume(NamedTuple):
    """One phantom volume; every array is (Z, H, W).

    Attributes:
        hu: float32 Hounsfield units.
        infection: uint8 binary infection mask (0/1).
        multiclass: uint8 labels, 0 background, 1 ground-glass, 2 consolidation.
        lung: bool lung mask (lesions and vessels inside the lungs included).
        spacing: (z, y, x) voxel spacing in mm.
    """

    hu: np.ndarray
    infection: np.ndarray
    multiclass: np.ndarray
    lung: np.ndarray
    spacing: tuple[float, float, float]


def _rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]):
    """Gaussian-smoothed white noise rescaled to unit standard deviation (a smooth random field)."""
    # Drawn on a 4x coarser in-plane grid and interpolated up: same look, a fraction of the cost.
    coarse = (shape[0], -(-shape[1] // 4), -(-shape[2] // 4))
    sigma = (sigma[0], sigma[1] / 4, sigma[2] / 4)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma)
    # Repeat then a 4-wide box filter per axis: piecewise-linear upsampling, much faster than zoom.
    field = field.repeat(4, axis=1).repeat(4, axis=2)[:, : shape[1], : shape[2]]
    field = ndimage.uniform_filter1d(ndimage.uniform_filter1d(field, 4, axis=1), 4, axis=2)
    return field / max(float(field.std()), 1e-6)


def make_phantom_volume(
    rng_or_seed: np.random.Generator | int,
    n_slices: int = 24,
    size: int = 256,
    infected: bool = True,
) -> PhantomVolume:
    """Draw one CT-like chest volume, with or without COVID-like lesions.

    Body ellipse (fat rim, soft tissue), two lungs (about -850 HU, with bright vessel-like specks)
    whose size and outline change smoothly along z, heart and aorta, vertebra and ribs, Gaussian
    noise (~20 HU). When ``infected``: a few blob-shaped ground-glass lesions (-700..-300 HU),
    mostly peripheral and posterior, some with a consolidated core (-100..+50 HU), clipped to the
    lungs and spanning a limited range of slices, so an infected volume also has healthy slices
    (the top fifth of the volume is always lesion-free).

    Args:
        rng_or_seed: a numpy Generator or an integer seed; the same seed gives the same volume.
        n_slices: number of axial slices (Z), at least 4.
        size: in-plane side (H = W), at least 32.
        infected: draw lesions.

    Returns:
        :class:`PhantomVolume`.
    """
    if n_slices < 4 or size < 32:
        raise ValueError(f"need n_slices >= 4 and size >= 32, got {n_slices}, {size}")
    rng = _rng(rng_or_seed)
    z_n, n = n_slices, size
    t = np.linspace(0.0, 1.0, z_n, dtype=np.float32)[:, None, None]  # 0 = apex, 1 = base
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    y = coords[None, :, None]
    x = coords[None, None, :]

    # Body: an ellipse slightly wider at the base, with a fat rim under the skin.
    ax, ay = 0.86 + 0.04 * rng.random(), 0.62 + 0.05 * rng.random()
    body_r = np.sqrt((x / ax) ** 2 + ((y - 0.02) / ay) ** 2)
    body = body_r < 1.0
    hu = np.full((z_n, n, n), AIR, dtype=np.float32)
    hu = np.where(body, SOFT_TISSUE, hu)
    hu = np.where(body & (body_r > 0.9), FAT, hu)

    # Lungs: ellipses whose radii follow a smooth apex-to-base profile, outlines perturbed by a
    # smooth random radial field (a different one per lung and per volume, smooth along z).
    scale = (0.45 + 0.55 * np.sin(np.pi * (0.12 + 0.8 * t))).astype(np.float32)
    lung = np.zeros((z_n, n, n), dtype=bool)
    for side in (-1.0, 1.0):
        cx = side * (0.40 + 0.03 * rng.random())
        cy = 0.0 + 0.05 * rng.random()
        rx, ry = 0.27 * scale, 0.46 * scale
        # Outline wobble: harmonics 2-4 of the angle around the lung centre, with phases drifting
        # linearly along z; cos(k*theta + phase(z)) expanded so that only 2-D maps are evaluated.
        theta = np.arctan2(y[0] - cy, x[0] - cx)
        amplitude = rng.normal(0.0, 0.05, size=3)
        phase = (
            rng.uniform(0.0, 2 * np.pi, size=3)[None, :] + rng.normal(0.0, 0.8, size=3) * t[:, :, 0]
        )
        wobble = np.zeros((z_n, n, n), dtype=np.float32)
        for k in range(3):
            cos_k, sin_k = np.cos((k + 2) * theta), np.sin((k + 2) * theta)
            a = (amplitude[k] * np.cos(phase[:, k])).astype(np.float32)[:, None, None]
            b = (amplitude[k] * np.sin(phase[:, k])).astype(np.float32)[:, None, None]
            wobble += a * cos_k - b * sin_k
        r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        lung |= r < 1.0 + wobble
    lung &= body_r < 0.86  # the chest wall stays outside the lungs

    # Mediastinum: heart (anterior, to the patient's left), aorta, spine (posterior) cut the lungs.
    heart = ((x - 0.12) / 0.25) ** 2 + ((y + 0.05) / 0.22) ** 2 < (0.4 + 0.8 * t) ** 2 * 0.6
    aorta = (x - 0.08) ** 2 + (y - 0.3) ** 2 < 0.07**2
    mediastinum = (np.abs(x) < 0.11) & (y < 0.45)
    spine = (x / 0.13) ** 2 + ((y - 0.48) / 0.11) ** 2 < 1.0
    canal = (x / 0.045) ** 2 + ((y - 0.47) / 0.04) ** 2 < 1.0
    ribs = np.zeros((1, n, n), dtype=bool)
    for angle in np.linspace(0.35, np.pi - 0.35, 8):
        for sign in (-1.0, 1.0):
            rib_x, rib_y = sign * 0.93 * ax * np.cos(angle), 0.93 * ay * np.sin(angle) * 0.98
            ribs |= ((x - rib_x) / 0.035) ** 2 + ((y - rib_y) / 0.025) ** 2 < 1.0
    lung &= ~(heart | aorta | mediastinum | spine)
    hu = np.where(heart | aorta, BLOOD, hu)
    hu = np.where(spine, BONE, hu)
    hu = np.where(canal, SOFT_TISSUE, hu)
    hu = np.where(ribs & body, BONE + 100.0, hu)
    hu = np.where(lung, LUNG, hu)

    # Vessels: bright specks from impulses blurred in-plane and along z (smooth tracks).
    impulses = (rng.random((z_n, n, n)) < 0.0015).astype(np.float32)
    vessels = ndimage.gaussian_filter(impulses, sigma=(1.0, 1.2 * n / 256, 1.2 * n / 256))
    vessels = np.clip(vessels / max(float(vessels.max()), 1e-6) * 2.0, 0.0, 0.8)
    hu = np.where(lung, hu + vessels * (SOFT_TISSUE - LUNG), hu)

    multiclass = np.zeros((z_n, n, n), dtype=np.uint8)
    if infected:
        multiclass = _lesions(rng, lung, t, x, y)
        ggo_level = rng.uniform(-700.0, -350.0)
        texture = _smooth_noise(rng, (z_n, n, n), (0.8, 2.0, 2.0))
        ggo = np.clip(ggo_level + 60.0 * texture, -700.0, -300.0)
        consolidation = np.clip(-25.0 + 30.0 * texture, -100.0, 50.0)
        hu = np.where(multiclass == 1, np.maximum(hu, ggo), hu)
        hu = np.where(multiclass == 2, consolidation, hu)

    # Partial-volume blur, then scanner noise; keep within the usual CT range.
    hu = ndimage.gaussian_filter(hu, sigma=(0.0, 0.6, 0.6))
    hu += rng.normal(0.0, NOISE_HU, size=hu.shape).astype(np.float32)
    hu = np.clip(hu, -1024.0, 3071.0).astype(np.float32)
    infection = (multiclass > 0).astype(np.uint8)
    spacing = (SLICE_MM, FOV_MM / n, FOV_MM / n)
    return PhantomVolume(hu, infection, multiclass, lung, spacing)


def _lesions(
    rng: np.random.Generator, lung: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Draw 2-5 blob lesions inside ``lung``: labels 0 bg, 1 ground glass, 2 consolidation."""
    z_n, n = lung.shape[0], lung.shape[1]
    labels = np.zeros(lung.shape, dtype=np.uint8)
    first = max(1, int(np.ceil(0.2 * z_n)))  # the top fifth stays healthy
    half_extent = max(1, z_n // 6)
    shape_noise = _smooth_noise(rng, lung.shape, (1.0, 4.0 * n / 256, 4.0 * n / 256))
    # The noise may stretch a blob past its z radius: keep it below the healthy top anyway.
    allowed = lung & (np.arange(z_n) >= first)[:, None, None]
    for _ in range(int(rng.integers(2, 6))):
        zc = int(rng.integers(first + half_extent, max(first + half_extent + 1, z_n - 1)))
        zc = min(zc, z_n - 1)
        ys, xs = np.nonzero(lung[zc])
        if ys.size == 0:
            continue
        # Prefer peripheral, posterior lung: weight by distance from the midline and by depth.
        weight = (np.abs(xs - n / 2) / n + 0.3) * (ys / n + 0.3)
        pick = rng.choice(ys.size, p=weight / weight.sum())
        cy, cx = _coord(ys[pick], n), _coord(xs[pick], n)
        radius = rng.uniform(0.09, 0.2)
        zr = rng.uniform(1.0, half_extent + 0.5)
        dz = (np.arange(z_n, dtype=np.float32)[:, None, None] - zc) / zr
        r = np.sqrt(((x - cx) / radius) ** 2 + ((y - cy) / (radius * 0.8)) ** 2 + dz**2)
        blob = (r + 0.25 * shape_noise < 1.0) & allowed
        labels[blob & (labels == 0)] = 1
        if rng.random() < 0.5:  # a consolidated core in about half of the lesions
            labels[(r + 0.25 * shape_noise < 0.45) & allowed] = 2
    return labels


def _coord(index: int, n: int) -> float:
    """Pixel index -> the phantom grid's coordinate in [-1, 1] (pixel centre)."""
    return (float(index) + 0.5) / n * 2.0 - 1.0


def write_phantom_dataset(
    out_dir: str | Path,
    n_patients: int = 12,
    n_slices: int = 16,
    size: int = 256,
    infected_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write phantom patients in lungmtl's manifest layout.

    Slices are ``images/<patient>_z<k>.npy`` float32 HU arrays (our reader treats a .npy with
    values below -200 as HU); masks, multiclass masks and lung masks are PNGs (0/255, 0/1/2,
    0/255). Every slice has all three masks (a phantom's truth is known everywhere, so an empty
    infection mask is an annotation). Label per slice: infected iff its mask is non-empty,
    label_level "slice", patient "phantom-XX", source "phantom", split empty.

    Args:
        out_dir: folder to write into (created; existing files of the same names are replaced).
        n_patients: number of volumes (patients), at least 2.
        n_slices: slices per volume.
        size: in-plane side.
        infected_fraction: fraction of patients drawn with lesions; at least one infected and one
            healthy patient are always written, so a patient-level split can hold both classes.
        seed: seed for the whole data set.

    Returns:
        ``out_dir`` as a Path (it contains manifest.csv).
    """
    if n_patients < 2:
        raise ValueError(f"n_patients must be >= 2 (one healthy, one infected), got {n_patients}")
    if not 0.0 <= infected_fraction <= 1.0:
        raise ValueError(f"infected_fraction must lie in [0, 1], got {infected_fraction}")
    out = Path(out_dir)
    for sub in ("images", "masks", "masks_multiclass", "lung_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_infected = min(max(round(infected_fraction * n_patients), 1), n_patients - 1)
    infected_ids = set(rng.permutation(n_patients)[:n_infected].tolist())
    rows = []
    for p in range(n_patients):
        patient = f"phantom-{p:02d}"
        vol = make_phantom_volume(rng.integers(2**31), n_slices, size, infected=p in infected_ids)
        for k in range(n_slices):
            stem = f"{patient}_z{k:03d}"
            np.save(out / "images" / f"{stem}.npy", vol.hu[k])
            Image.fromarray(vol.infection[k] * 255).save(out / "masks" / f"{stem}.png")
            Image.fromarray(vol.multiclass[k]).save(out / "masks_multiclass" / f"{stem}.png")
            lung_png = vol.lung[k].astype(np.uint8) * 255
            Image.fromarray(lung_png).save(out / "lung_masks" / f"{stem}.png")
            rows.append(
                {
                    "image": f"images/{stem}.npy",
                    "mask": f"masks/{stem}.png",
                    "mask_multiclass": f"masks_multiclass/{stem}.png",
                    "lung_mask": f"lung_masks/{stem}.png",
                    "label": "infected" if vol.infection[k].any() else "healthy",
                    "label_level": "slice",
                    "patient": patient,
                    "slice": k,
                    "source": "phantom",
                    "split": "",
                }
            )
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return out

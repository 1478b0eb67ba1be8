"""On-the-fly joint augmentation of image and mask batches, in torch (runs on the GPU too).

One random affine per sample (rotation by 90/270 degrees, shift, zoom, shear) applied with a
single ``grid_sample`` call: bilinear for images, nearest for masks, so both move together.
Written here rather than taken from albumentations/kornia because it is ~50 lines, batched on
the training device, and adds no dependency.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine_matrices(
    n: int,
    *,
    rot90: float = 0.5,
    shift: float = 0.1,
    zoom: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(n, 2, 3) affine matrices in ``affine_grid``'s normalised coordinates.

    Args:
        rot90: probability of a 90 or 270 degree rotation (either, equally likely).
        shift: maximum shift as a fraction of the image size, per axis.
        zoom: range of the isotropic scale factor.
        shear: maximum shear angle in degrees.
    """

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    quarter = torch.where(
        torch.rand(n, generator=generator) < rot90,
        torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, 3.0),
        0.0,
    )
    theta = quarter * (math.pi / 2)
    cos, sin = torch.cos(theta).round(), torch.sin(theta).round()
    s = 1.0 / u(*zoom)  # the grid samples the input, so zooming in means a smaller grid
    sh = torch.tan(torch.deg2rad(u(-shear, shear)))
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_m = torch.eye(2).repeat(n, 1, 1)
    shear_m[:, 0, 1] = sh
    lin = rot @ shear_m * s[:, None, None]
    t = torch.stack([u(-shift, shift), u(-shift, shift)], -1) * 2  # normalised coords span 2
    return torch.cat([lin, t[:, :, None]], dim=2).to(device)


def apply_affine(
    image: torch.Tensor, mask: torch.Tensor | None, matrices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp images (N,C,H,W) bilinearly and masks (N,K,H,W) with nearest neighbours."""
    grid = F.affine_grid(matrices.to(image.dtype), list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if mask is None:
        return out, None
    m = F.grid_sample(
        mask.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out, m.to(mask.dtype)


def random_flip_matrices(
    n: int,
    *,
    lr: float = 0.0,
    ud: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, 2, 2) diagonal +-1 matrices: a left-right flip with probability ``lr`` and an
    up-down flip with probability ``ud`` (some sources store slices upside down)."""
    sx = torch.where(torch.rand(n, generator=generator) < lr, -1.0, 1.0)
    sy = torch.where(torch.rand(n, generator=generator) < ud, -1.0, 1.0)
    return torch.diag_embed(torch.stack([sx, sy], -1))


def with_flips(matrices: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Compose flips (n, 2, 2) into affine matrices (n, 2, 3): flip the sampled grid first."""
    out = matrices.clone()
    out[:, :, :2] = matrices[:, :, :2] @ flips.to(matrices)
    return out


def random_intensity(
    image: torch.Tensor,
    *,
    p: float = 0.8,
    contrast: float = 0.25,
    brightness: float = 0.1,
    gamma: tuple[float, float] = (0.7, 1.5),
    noise: float = 0.05,
    blur: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random per-slice contrast, brightness, gamma, blur and Gaussian noise on (N,1,H,W) images.

    The sources differ in windowing, CLAHE, JPEG and reconstruction kernel; varying these during
    training keeps the network from telling them apart by their look (the source shortcut).
    Each transform is applied to a slice with probability ``p``; the random numbers come from
    ``generator`` on the CPU, so a seeded run stays reproducible on any device.
    """
    n = image.shape[0]

    def draw(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).to(image.device)

    def on() -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).to(image.device)

    def per(v: torch.Tensor) -> torch.Tensor:
        return v.to(image.dtype)[:, None, None, None]

    x = image
    use_c, c = on(), draw(1 - contrast, 1 + contrast)
    use_b, b = on(), draw(-brightness, brightness)
    use_g, g = on(), draw(*gamma)
    use_blur, sigma = on(), draw(0.3, max(blur, 0.3))
    use_n, s = on(), draw(0.0, noise)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(per(use_c) > 0, (x - mean) * per(c) + mean, x)
    x = torch.where(per(use_b) > 0, x + per(b), x)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    gx = ((x - lo) / span).clamp(0, 1) ** per(g) * span + lo
    x = torch.where(per(use_g) > 0, gx, x)
    if blur > 0:
        x = torch.where(per(use_blur) > 0, _gaussian_blur(x, sigma), x)
    if noise > 0:
        eps = torch.randn(x.shape, generator=generator).to(x)
        x = torch.where(per(use_n) > 0, x + eps * per(s), x)
    return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each slice of (N,1,H,W) with its own Gaussian ``sigma`` (pixels), separably."""
    n = x.shape[0]
    r = max(1, math.ceil(2 * float(sigma.max())))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.to(x.dtype)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    y = x.transpose(0, 1)  # (1, N, H, W): one group per slice
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k[:, None, None, :], groups=n)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k[:, None, :, None], groups=n)
    return y.transpose(0, 1)


def random_appearance(
    image: torch.Tensor,
    *,
    lowres: float = 0.0,
    jpeg: float = 0.0,
    clahe: float = 0.0,
    scale: tuple[float, float] = (0.4, 0.9),
    quality: tuple[int, int] = (15, 75),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Export and scanner looks on (N,1,H,W) images, each with its own probability per slice.

    ``lowres``: down-sample by a factor drawn from ``scale`` and back (coarser reconstruction,
    thick slices' partial volume); ``jpeg``: a JPEG round trip at a quality drawn from
    ``quality`` (PIL); ``clahe``: contrast-limited adaptive histogram equalisation
    (scikit-image), which one source applied before publishing and the others did not. JPEG and
    CLAHE run on the CPU (a slice of 128 px costs well under a millisecond and a few ms).
    """
    n, _, h, w = image.shape

    def on(p: float) -> list[bool]:
        return (torch.rand(n, generator=generator) < p).tolist()

    use_low, use_jpeg, use_clahe = on(lowres), on(jpeg), on(clahe)
    factors = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)).tolist()
    qualities = torch.randint(quality[0], quality[1] + 1, (n,), generator=generator).tolist()
    limits = (0.005 + 0.025 * torch.rand(n, generator=generator)).tolist()
    if not any(use_low + use_jpeg + use_clahe):
        return image
    out = image.clone()
    for i in range(n):
        x = out[i : i + 1]
        if use_low[i]:
            size = (max(8, round(h * factors[i])), max(8, round(w * factors[i])))
            small = F.interpolate(x, size=size, mode="area")
            x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        if use_jpeg[i] or use_clahe[i]:
            x = _via_8bit(
                x, qualities[i] if use_jpeg[i] else None, limits[i] if use_clahe[i] else None
            )
        out[i : i + 1] = x
    return out


def _via_8bit(x: torch.Tensor, quality: int | None, clahe_limit: float | None) -> torch.Tensor:
    """One slice (1,1,H,W) through an 8-bit export: CLAHE and/or a JPEG round trip, same range."""
    import io

    import numpy as np
    from PIL import Image

    a = x[0, 0].detach().float().cpu().numpy()
    lo, hi = float(a.min()), float(a.max())
    span = max(hi - lo, 1e-6)
    u = (a - lo) / span
    if clahe_limit is not None:
        from skimage.exposure import equalize_adapthist

        u = equalize_adapthist(u, clip_limit=clahe_limit)
    if quality is not None:
        buf = io.BytesIO()
        Image.fromarray(np.round(u * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        u = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
    back = torch.from_numpy(np.asarray(u, dtype=np.float32) * span + lo)
    return back.to(x)[None, None]

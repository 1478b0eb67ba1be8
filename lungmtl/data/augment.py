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


def augment_batch(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    rot90: float = 0.5,
    shift: float = 0.1,
    zoom: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random joint affine augmentation of a batch (see ``random_affine_matrices``)."""
    mats = random_affine_matrices(
        image.shape[0],
        rot90=rot90,
        shift=shift,
        zoom=zoom,
        shear=shear,
        generator=generator,
        device=image.device,
    )
    return apply_affine(image, mask, mats)

"""Spatial augmentations of torch batches ``(B, C, z, y, x)``.

Rotations are about the z axis only (in the ``(y, x)`` plane): the paper's
crop of sqrt(2) W before rotating implies one rotation axis, and keeping z
fixed preserves the missing-wedge elongation along z that every real
tomogram shows, so augmented windows stay realistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional

SPATIAL_DIMS = (-3, -2, -1)
"""Tensor dimensions of z, y and x."""


def rotate_about_z(x: torch.Tensor, angles: torch.Tensor | np.ndarray,
                   mode: Literal["bilinear", "nearest"] = "bilinear") -> torch.Tensor:
    """Rotate each sample of ``x`` ``(B, C, z, y, x)`` in the ``(y, x)`` plane.

    Args:
        x: batch with equal y and x sizes (the rotation is about the volume centre).
        angles: ``(B,)`` angles in radians, counter-clockwise from +x towards +y.
        mode: ``"bilinear"`` for intensities, ``"nearest"`` for label maps.

    Returns:
        A tensor like ``x``; voxels rotated in from outside are 0.
    """
    angles = torch.as_tensor(angles, dtype=torch.float32, device=x.device).reshape(-1)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    # affine_grid maps output (x, y, z) to input (x, y, z) in normalised coordinates:
    # sampling at R(-angle) p turns the content by +angle.
    theta = torch.stack([
        torch.stack([cos, sin, zero, zero], dim=1),
        torch.stack([-sin, cos, zero, zero], dim=1),
        torch.stack([zero, zero, one, zero], dim=1),
    ], dim=1)
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
    source = x if x.is_floating_point() else x.float()
    rotated = functional.grid_sample(source, grid, mode=mode, padding_mode="zeros",
                                     align_corners=False)
    return rotated if x.is_floating_point() else rotated.round().to(x.dtype)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``-cube of the last three dimensions of ``x``."""
    starts = [(n - size) // 2 for n in x.shape[-3:]]
    if min(starts) < 0:
        raise ValueError(f"cannot crop {size} from {tuple(x.shape[-3:])}")
    z, y, w = starts
    return x[..., z : z + size, y : y + size, w : w + size]


def band_limit(x: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """Sample ``b`` of ``x`` ``(B, C, z, y, x)`` with its detail finer than
    ``factors[b]`` voxels removed: along each axis only the spatial frequencies up
    to ``0.5 / factors[b]`` cycles per voxel stay (what resampling to a voxel size
    ``factors[b]`` times coarser and back keeps, ``resample``); then rescaled about
    its mean to its former standard deviation, as picking normalises a tomogram
    after resampling it, so that its noise is as strong as before. A factor of 1
    leaves the sample unchanged. The boundaries wrap (a Fourier filter)."""
    factors = np.asarray(factors, dtype=np.float64).reshape(-1)
    out = x.clone()
    spectrum = None
    for b in np.flatnonzero(factors > 1.0):
        if spectrum is None:
            spectrum = torch.fft.fftn(x.double(), dim=SPATIAL_DIMS)
        keep = 0.5 / factors[b] + 1e-9
        masks = [torch.fft.fftfreq(n, dtype=torch.float64).abs() <= keep
                 for n in x.shape[-3:]]
        mask = masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]
        limited = torch.fft.ifftn(spectrum[b] * mask, dim=SPATIAL_DIMS).real
        mean, spread = limited.mean(), limited.std()
        scale = x[b].double().std() / spread if spread > 0 else 1.0
        out[b] = (mean + (limited - mean) * scale).to(x.dtype)
    return out


def random_flips(x: torch.Tensor, flips: np.ndarray) -> torch.Tensor:
    """Flip sample ``b`` of ``x`` along spatial axis ``a`` where ``flips[b, a]`` (z, y, x order)."""
    out = x.clone()
    for b, row in enumerate(np.asarray(flips, dtype=bool)):
        dims = [SPATIAL_DIMS[a] for a in np.flatnonzero(row)]
        if dims:
            out[b] = x[b].flip(dims)
    return out


@dataclass(frozen=True)
class ExactTransform:
    """A voxel-exact spatial transform: flips along z, y, x, then ``quarter_turns``
    rotations by 90° in the ``(y, x)`` plane. Needs equal y and x sizes when the
    number of quarter turns is odd."""

    flips: tuple[bool, bool, bool]
    quarter_turns: int

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """Transform a tensor ``(..., z, y, x)`` with any leading dimensions."""
        dims = [d for d, flip in zip(SPATIAL_DIMS, self.flips) if flip]
        out = t.flip(dims) if dims else t
        return torch.rot90(out, self.quarter_turns, dims=(-2, -1))


def random_exact_transform(rng: np.random.Generator) -> ExactTransform:
    """A uniformly drawn non-identity ``ExactTransform``."""
    while True:
        flips = tuple(bool(f) for f in rng.integers(0, 2, size=3))
        turns = int(rng.integers(0, 4))
        if any(flips) or turns:
            return ExactTransform(flips, turns)  # type: ignore[arg-type]

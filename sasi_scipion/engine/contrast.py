"""Which way a tomogram's contrast goes: protein dark (as in reconstructions of
phase-contrast images, and as the simulator makes it) or bright.

Two measures, both on normalised volumes ``(z, y, x)``:

- :func:`label_contrast`, with labels: the mean inside the labelled spheres against
  the mean outside. Training records it in the model.
- :func:`contrast_skew`, without labels: the skewness of the volume after a 3-voxel
  box mean with stride 2 (smooths the noise and reads an eighth of the voxels). Dense
  objects darker than a majority of solvent give a long dark tail: negative. Training
  records it; picking warns when a tomogram's skewness has clearly the other sign
  (:func:`inversion_warning`). Measured on simulated tomograms only
  (``benchmarks/contrast_check.py``, ``docs/method.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from . import mrc_io
from .normalize import Voxels

DARK, BRIGHT = "dark", "bright"
CONTRASTS = (DARK, BRIGHT)
SKEW_POOL = 3
"""Edge (voxels) of the box mean before the skewness; stride ``SKEW_POOL - 1``."""
SKEW_MARGIN = 0.5
"""Smallest skewness magnitude taken as a clear sign: 118 of 120 simulated tomograms
(SNR 0.05 to 0.5, fill 2 to 30 %, with and without distractors) lay beyond it, all with
the right sign (``benchmarks/contrast_check.json``)."""


def label_contrast(volumes: Sequence[Voxels], label_maps: Sequence[np.ndarray]) -> str:
    """:data:`DARK` when the labelled voxels (label map > 0) of the normalised
    ``volumes`` are on average darker than the others, else :data:`BRIGHT`; volumes
    and label maps ``(z, y, x)`` pair in order, read in ``mrc_io.z_slabs``."""
    inside = outside = 0.0
    n_in = n_out = 0
    for volume, labels in zip(volumes, label_maps):
        for planes in mrc_io.z_slabs(volume.shape):
            values, mask = volume[planes], labels[planes] > 0
            labelled = int(mask.sum())
            inside += float(values[mask].sum(dtype=np.float64))
            outside += float(values[~mask].sum(dtype=np.float64))
            n_in, n_out = n_in + labelled, n_out + mask.size - labelled
    return DARK if inside / max(n_in, 1) < outside / max(n_out, 1) else BRIGHT


def contrast_skew(volume: Voxels) -> float:
    """Skewness of ``volume`` ``(z, y, x)`` (an array or a ``NormalisedVolume``) after a
    :data:`SKEW_POOL`-voxel box mean with stride ``SKEW_POOL - 1`` (dimensionless;
    negative for dark objects). Read in z slabs of about ``mrc_io.READ_SLAB_VOXELS`` voxels,
    so a large tomogram is never copied whole."""
    stride = SKEW_POOL - 1
    depth, height, width = volume.shape
    outputs = (depth - SKEW_POOL) // stride + 1
    planes = max(1, mrc_io.READ_SLAB_VOXELS // (stride * height * width))
    sums = np.zeros(4)  # count, and the sums of the shifted pooled values' three powers
    shift = None  # the first slab's mean: moments about it do not cancel
    for first in range(0, max(outputs, 0), planes):
        last = min(first + planes, outputs)
        slab = np.ascontiguousarray(volume[first * stride:(last - 1) * stride + SKEW_POOL],
                                    dtype=np.float32)
        pooled = functional.avg_pool3d(torch.from_numpy(slab)[None, None], SKEW_POOL,
                                       stride=stride).double().reshape(-1)
        shift = float(pooled.mean()) if shift is None else shift
        pooled -= shift
        sums += [pooled.numel(), float(pooled.sum()), float((pooled**2).sum()),
                 float((pooled**3).sum())]
    if not sums[0]:
        return 0.0
    mean, second, third = sums[1:] / sums[0]
    variance = second - mean**2
    if variance <= 1e-12 * max(second, np.finfo(np.float64).tiny):  # constant, to rounding
        return 0.0
    return float((third - 3 * mean * second + 2 * mean**3) / variance**1.5)


def inversion_warning(tomogram_skew: float, model_skew: float | None,
                      source: str) -> str | None:
    """The warning for a tomogram whose skewness has clearly the other sign than the
    model's training tomograms; ``None`` when it has not, or the model recorded none."""
    if model_skew is None or min(abs(tomogram_skew), abs(model_skew)) < SKEW_MARGIN:
        return None
    if (tomogram_skew < 0) == (model_skew < 0):
        return None
    return (f"{source}: its contrast looks inverted relative to the model's training "
            f"tomograms (skewness {tomogram_skew:+.2f} against {model_skew:+.2f}); if "
            "protein is the other way round here, pick with --invert-contrast (or without "
            "it, if you gave it)")

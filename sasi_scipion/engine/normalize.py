"""Per-tomogram input normalisation shared by training and picking."""

from __future__ import annotations

import numpy as np

NORMALISATION = "robust-zscore-v1"
"""Name recorded in model files; picking refuses a model that used another."""

_SAMPLE = 2_000_000


def normalisation_stats(data: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Robust ``(centre, scale)`` of a volume: mean and standard deviation of the
    voxels between the 0.5th and 99.5th percentiles, estimated on at most two
    million randomly chosen voxels (deterministic for a given ``seed``)."""
    flat = data.reshape(-1)
    if flat.size > _SAMPLE:
        flat = flat[np.random.default_rng(seed).integers(0, flat.size, _SAMPLE)]
    low, high = np.percentile(flat, [0.5, 99.5])
    core = flat[(flat >= low) & (flat <= high)]
    if core.size < 2 or float(core.std()) == 0.0:
        core = flat
    scale = float(core.std()) or 1.0
    return float(core.mean()), scale


def normalise(data: np.ndarray, in_place: bool = False) -> np.ndarray:
    """``data`` (any axis order) with robust zero mean and unit scale, ``float32``: a
    new array (one copy of ``data``, no larger temporaries), or with ``in_place``,
    ``data`` itself when it is a ``float32`` array (the caller's own, e.g. a resampled
    tomogram)."""
    centre, scale = normalisation_stats(data)
    if in_place and data.dtype == np.float32:
        out = np.subtract(data, np.float32(centre), out=data)
    else:
        out = np.subtract(data, centre, dtype=np.float32)
    return np.divide(out, np.float32(scale), out=out)

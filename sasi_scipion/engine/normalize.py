"""Per-tomogram input normalisation shared by training and picking.

Two forms of the same values: :func:`normalise` makes a normalised ``float32`` array,
and :class:`NormalisedVolume` normalises each part of a volume as it is read (a
memory-mapped file is then never held in memory as a whole: tiled picking reads its
tiles through it).
"""

from __future__ import annotations

from typing import Union

import numpy as np

NORMALISATION = "robust-zscore-v1"
"""Name recorded in model files; picking refuses a model that used another."""

_SAMPLE = 2_000_000


def normalisation_stats(data: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Robust ``(centre, scale)`` of a volume (any numeric dtype, in memory or
    memory-mapped): mean and standard deviation of the voxels between the 0.5th and
    99.5th percentiles, estimated in ``float32`` on at most two million randomly
    chosen voxels (deterministic for a given ``seed``)."""
    flat = data.reshape(-1)
    if flat.size > _SAMPLE:
        chosen = np.random.default_rng(seed).integers(0, flat.size, _SAMPLE)
        order = np.argsort(chosen, kind="stable")  # a memory map is read front to back
        sample = np.empty(_SAMPLE, dtype=flat.dtype)
        sample[order] = flat[chosen[order]]
        flat = sample
    flat = np.asarray(flat, dtype=np.float32)  # as the float32 copy of a file would give
    low, high = np.percentile(flat, [0.5, 99.5])
    core = flat[(flat >= low) & (flat <= high)]
    if core.size < 2 or float(core.std()) == 0.0:
        core = flat
    scale = float(core.std()) or 1.0
    return float(core.mean()), scale


def normalise(data: np.ndarray, in_place: bool = False) -> np.ndarray:
    """``data`` (any axis order) with robust zero mean and unit scale, ``float32``: a
    new array (one copy of ``data``, no larger temporaries), or with ``in_place``,
    ``data`` itself when it is a writeable ``float32`` array (the caller's own, e.g. a
    resampled tomogram)."""
    centre, scale = normalisation_stats(data)
    if in_place and data.dtype == np.float32 and data.flags.writeable:
        out = np.subtract(data, np.float32(centre), out=data)
    else:
        out = np.subtract(data, np.float32(centre), dtype=np.float32)
    return np.divide(out, np.float32(scale), out=out)


class NormalisedVolume:
    """A volume normalised as it is read: ``volume[index]`` (integers and slices, as
    for an array) is ``float32``, bit for bit what :func:`normalise` gives for those
    voxels (negated with ``negate``), computed from the same voxels of ``raw``.

    Args:
        raw: ``(z, y, x)`` voxels of any numeric dtype, e.g. the read-only memory map
            of an MRC file (``mrc_io.map_volume``); not changed.
        negate: give the negated values (``sasi pick --invert-contrast``).
    """

    def __init__(self, raw: np.ndarray, negate: bool = False) -> None:
        self.raw = raw
        self.negate = negate
        self.centre, self.scale = normalisation_stats(raw)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(z, y, x)`` voxels."""
        return tuple(int(n) for n in self.raw.shape)

    @property
    def dtype(self) -> np.dtype:
        """``float32``, the dtype of what is read."""
        return np.dtype(np.float32)

    def __getitem__(self, index: object) -> np.ndarray:
        part = np.array(self.raw[index], dtype=np.float32)  # type: ignore[index]
        np.subtract(part, np.float32(self.centre), out=part)
        np.divide(part, np.float32(self.scale), out=part)
        return np.negative(part, out=part) if self.negate else part


Voxels = Union[np.ndarray, NormalisedVolume]
"""A normalised tomogram ``(z, y, x)``: an array, or a :class:`NormalisedVolume`."""

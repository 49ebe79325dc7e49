"""Band-limited resampling of tomograms to another voxel size, and the coordinate
maps between the two grids.

A tomogram at voxel size ``a`` Å is resampled to ``b`` Å by truncating (``b > a``:
coarser, an ideal low-pass at the new Nyquist frequency, so nothing aliases) or
zero-padding (``b < a``) its discrete cosine transform (DCT-II) along each axis.
The cosine transform is the Fourier transform of the volume mirrored at its faces,
so, unlike Fourier cropping of the volume itself, the faces do not wrap around and
ring. Per axis, ``n`` voxels become ``m = round(n a / b)``; both grids span the same
physical extent and share its centre: voxel centre ``j`` of the new grid lies at
``(j + 0.5) n / m - 0.5`` of the old one (``to_source_voxels``). Each axis is done
separately (the cut-off is a box in frequency space, which is separable), in
chunks of planes, so memory stays at the two volumes plus one chunk.

Volumes are ``(z, y, x)``; coordinates ``(x, y, z)`` in voxels (``coordinates``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import fft

from .defaults import MAX_RESAMPLING_FACTOR
from .errors import input_name

CHUNK_VOXELS = 16_000_000
"""Voxels of one chunk of planes transformed at once (64 MB of float32; the
transforms' work arrays are a few times that)."""


def resampled_shape(shape_zyx: Sequence[int], voxel_size: float,
                    target_voxel_size: float) -> tuple[int, ...]:
    """The shape of a ``shape_zyx`` volume at ``voxel_size`` Å resampled to
    ``target_voxel_size`` Å (each axis rounded to whole voxels, at least 1)."""
    factor = voxel_size / target_voxel_size
    return tuple(max(1, round(n * factor)) for n in shape_zyx)


def resampling_problem(voxel_size: float, target_voxel_size: float, source: str,
                       target: str) -> str | None:
    """Why ``source`` at ``voxel_size`` Å cannot be resampled to ``target``'s
    ``target_voxel_size`` Å on the fly, or ``None``."""
    ratio = max(voxel_size, target_voxel_size) / min(voxel_size, target_voxel_size)
    if ratio <= MAX_RESAMPLING_FACTOR:
        return None
    return (f"{source}: voxel size {voxel_size:.3f} Å is {ratio:.1f} times "
            f"{'finer' if voxel_size < target_voxel_size else 'coarser'} than {target}'s "
            f"{target_voxel_size:.3f} Å, more than the {MAX_RESAMPLING_FACTOR:g} times sasi "
            f"resamples on the fly: if the header is wrong give {input_name('voxel_size')}, "
            f"else bin or rescale the tomogram to about {target_voxel_size:.3f} Å first")


def resample(volume: np.ndarray, shape_zyx: Sequence[int]) -> np.ndarray:
    """``volume`` ``(z, y, x)`` (any real dtype, for example a memory map) resampled
    band-limited to ``shape_zyx``, as float32; the mean is kept, and a band-limited
    volume keeps its values. An axis whose size does not change is not touched."""
    out = np.asarray(volume)
    if tuple(out.shape) == tuple(shape_zyx):
        return out.astype(np.float32, copy=True)
    # shrinking axes first, so the intermediate volumes are as small as they can be
    order = sorted(range(3), key=lambda axis: shape_zyx[axis] / out.shape[axis])
    for axis in order:
        if out.shape[axis] != shape_zyx[axis]:
            out = _resample_axis(out, axis, shape_zyx[axis])
    return out.astype(np.float32, copy=False)


def _resample_axis(volume: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``volume`` resampled along ``axis`` to ``size`` voxels (DCT-II truncated or
    zero-padded, orthonormal, scaled so that the mean is kept), chunk by chunk along
    the longest other axis."""
    length = volume.shape[axis]
    shape = list(volume.shape)
    shape[axis] = size
    out = np.empty(shape, dtype=np.float32)
    along = max((a for a in range(3) if a != axis), key=lambda a: volume.shape[a])
    per_plane = max(length, size) * math.prod(volume.shape) // (length * volume.shape[along])
    step = max(1, CHUNK_VOXELS // max(per_plane, 1))
    scale = math.sqrt(size / length)
    for start in range(0, volume.shape[along], step):
        index = [slice(None)] * 3
        index[along] = slice(start, start + step)
        chunk = np.asarray(volume[tuple(index)], dtype=np.float32)
        coefficients = fft.dct(chunk, type=2, axis=axis, norm="ortho")
        resampled = fft.idct(coefficients, type=2, n=size, axis=axis, norm="ortho")
        out[tuple(index)] = resampled * scale
    return out


def to_source_voxels(xyz: np.ndarray, source_shape_zyx: Sequence[int],
                     shape_zyx: Sequence[int]) -> np.ndarray:
    """Positions ``(N, 3)`` ``(x, y, z)`` in voxels of a resampled grid of
    ``shape_zyx`` mapped to the voxels of the ``source_shape_zyx`` volume it was
    resampled from (the grids share their extent and centre)."""
    ratio = np.asarray(source_shape_zyx[::-1], dtype=np.float64) / np.asarray(shape_zyx[::-1])
    return (np.asarray(xyz, dtype=np.float64) + 0.5) * ratio - 0.5


def to_resampled_voxels(xyz: np.ndarray, source_shape_zyx: Sequence[int],
                        shape_zyx: Sequence[int]) -> np.ndarray:
    """The inverse of ``to_source_voxels``: source voxels to resampled ones."""
    ratio = np.asarray(shape_zyx[::-1], dtype=np.float64) / np.asarray(source_shape_zyx[::-1])
    return (np.asarray(xyz, dtype=np.float64) + 0.5) * ratio - 0.5


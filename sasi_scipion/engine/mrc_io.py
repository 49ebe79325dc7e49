"""MRC input and output that keeps the voxel size and checks what it reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from .atomic import atomic_output
from .errors import SasiInputError


@dataclass
class Volume:
    """A 3D map.

    Attributes:
        data: ``float32`` array, axis order ``(z, y, x)``.
        voxel_size: Ångström per voxel, or ``None`` when the header holds none.
    """

    data: np.ndarray
    voxel_size: float | None


def read_volume(path: str | os.PathLike, check_values: bool = True) -> Volume:
    """Read a 3D MRC map as ``float32`` ``(z, y, x)``.

    Raises:
        SasiInputError: missing or unreadable file, not 3D, NaN/inf values or a
            constant map (when ``check_values``).
    """
    path = Path(path)
    if not path.is_file():
        raise SasiInputError(f"{path}: no such file; check the path")
    try:
        with mrcfile.open(path, mode="r", permissive=True) as mrc:
            if mrc.data is None:
                raise ValueError("no data block")
            data = np.asarray(mrc.data, dtype=np.float32)
            voxel = float(mrc.voxel_size.x)
    except (OSError, ValueError) as error:
        raise SasiInputError(
            f"{path}: not a readable MRC file ({error}); give an MRC map (.mrc/.rec)"
        ) from error
    if data.ndim != 3 or min(data.shape) < 2:
        raise SasiInputError(
            f"{path}: expected a 3D volume, got shape {data.shape}; give a tomogram, "
            "not an image or a stack"
        )
    if check_values:
        if not np.isfinite(data).all():
            raise SasiInputError(
                f"{path}: holds NaN or infinite values; fix or re-export the tomogram"
            )
        if float(data.max()) == float(data.min()):
            raise SasiInputError(
                f"{path}: all voxels have the same value; this tomogram is empty"
            )
    return Volume(data=data, voxel_size=voxel if voxel > 0 else None)


def write_volume(
    path: str | os.PathLike, data: np.ndarray, voxel_size: float | None
) -> None:
    """Write ``data`` (``(z, y, x)``) to ``path`` atomically, with its voxel size in Å."""
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    with atomic_output(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        if voxel_size:
            mrc.voxel_size = float(voxel_size)

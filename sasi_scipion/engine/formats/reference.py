"""What a coordinate format may need from the tomogram its particles belong to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SasiInputError
from ..mrc_io import inspect_mrc

DEFAULT_FIX = "give the tomogram, with its voxel size in the header"
"""How to supply a missing shape or voxel size, when the caller knows no better."""


@dataclass(frozen=True)
class Reference:
    """The tomogram a coordinate file refers to.

    Attributes:
        shape: ``(z, y, x)`` voxels, or ``None`` when unknown.
        voxel_size: Å per voxel, or ``None`` when unknown.
        name: the tomogram's name (file stem) as formats that hold one write it
            (RELION's ``rlnTomoName``, copick's ``run_name``), or ``None``.
        fix: how the user supplies what is missing, quoted in errors.
    """

    shape: tuple[int, int, int] | None = None
    voxel_size: float | None = None
    name: str | None = None
    fix: str = DEFAULT_FIX

    def need_voxel_size(self, path: str | os.PathLike, what: str) -> float:
        """The voxel size (Å), or an error saying that ``what`` (the format) needs it."""
        if not self.voxel_size:
            raise SasiInputError(f"{path}: {what} needs the tomogram's voxel size (Å) and "
                                 f"none is known; {self.fix}")
        return self.voxel_size

    def need_shape(self, path: str | os.PathLike, what: str) -> tuple[int, int, int]:
        """The shape ``(z, y, x)``, or an error saying that ``what`` needs it."""
        if self.shape is None:
            raise SasiInputError(f"{path}: {what} needs the tomogram's size and none is "
                                 f"known; {self.fix}")
        return self.shape


def tomogram_reference(tomogram: str | os.PathLike | None, voxel_size: float | None = None,
                       fix: str = DEFAULT_FIX) -> Reference:
    """The reference of a tomogram from its MRC header alone; ``voxel_size`` (Å), when
    given, overrides the header's. Without a tomogram only ``voxel_size`` is known."""
    if tomogram is None:
        return Reference(voxel_size=voxel_size, fix=fix)
    info = inspect_mrc(tomogram)
    return Reference(shape=info.shape, voxel_size=voxel_size or info.voxel_size,
                     name=Path(tomogram).stem, fix=fix)

"""SHREC 2021 ``particle_locations.txt``: one particle per line,
``class x y z rotation_Z1 rotation_X rotation_Z2`` separated by spaces.

Coordinates are 0-based voxels of the tomogram (the challenge's evaluation looks the
occupancy mask up at ``[z, y, x]``), the same as SaSi's; the three Euler angles (degrees)
are read past and written as 0.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..coordinates import ParticleTable
from ..errors import SasiInputError
from .text import is_number


def looks_like_locations(rows: list[list[str]]) -> bool:
    """Whether the first rows of a file (split into fields) are SHREC particle
    locations: a non-numeric class, then at least x y z."""
    return bool(rows) and all(
        len(r) >= 4 and not is_number(r[0]) and all(is_number(f) for f in r[1:])
        for r in rows)


def read_locations(path: str | os.PathLike) -> ParticleTable:
    """Particles of a SHREC 2021 ``particle_locations.txt``, 0-based voxels ``(x, y, z)``.

    Raises:
        SasiInputError: a line without a class and three finite numbers.
    """
    path = Path(path)
    xyz, classes = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            point = [float(f) for f in fields[1:4]]
        except ValueError:
            point = []
        if len(point) != 3 or not all(math.isfinite(v) for v in point):
            raise SasiInputError(f"{path}, line {number}: expected 'class x y z' and three "
                                 f"angles, got {line!r}")
        xyz.append(point)
        classes.append(fields[0])
    return ParticleTable(np.array(xyz).reshape(-1, 3), np.array(classes, dtype=object))


def write_locations(path: str | os.PathLike, table: ParticleTable) -> None:
    """Write ``table`` (0-based voxels) as SHREC 2021 particle locations, atomically;
    scores are not part of the format and are left out."""
    lines = [f"{table.classes[i]} {x:.3f} {y:.3f} {z:.3f} 0 0 0"
             for i, (x, y, z) in enumerate(table.xyz)]
    with atomic_output(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))

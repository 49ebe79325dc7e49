"""Dynamo tables (``.tbl``): one particle per line, whitespace-separated numbers.

Columns (1-based, as Dynamo numbers them): 1 tag, 4-6 shifts ``dx dy dz``, 7-9 Euler
angles, 10 cross-correlation (the score), 20 tomogram number, 22 class, 24-26
``x y z``; pixels of the tomogram, 1-based as in MATLAB. A particle's centre is
position plus shift, so SaSi's 0-based voxel is ``v = x + dx - 1``. The class number
becomes the class name. Written tables have Dynamo's 35 columns.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..coordinates import ParticleTable
from ..errors import SasiInputError
from .relion import class_numbers
from .text import is_number

COLUMNS = 35
TAG, ALIGNED, SHIFTS, SCORE, TOMOGRAM, CLASS, POSITION = 0, 1, slice(3, 6), 9, 19, 21, \
    slice(23, 26)
"""0-based indices of the columns SaSi reads or writes."""
MIN_COLUMNS = POSITION.stop
FIRST_PIXEL = 1.0
"""Dynamo's pixel coordinates start at 1; SaSi's voxels at 0."""


def looks_like_table(rows: list[list[str]]) -> bool:
    """Whether the first rows of a file (split into fields) are a Dynamo table."""
    return bool(rows) and all(len(r) >= MIN_COLUMNS for r in rows) and all(
        is_number(f) for r in rows for f in r)


def read_table(path: str | os.PathLike) -> ParticleTable:
    """Particles of a Dynamo table in 0-based voxels ``(x, y, z)``.

    Raises:
        SasiInputError: a non-numeric table, fewer than 26 columns, or particles of
            several tomograms (column 20).
    """
    path = Path(path)
    if not path.read_text().strip():
        return ParticleTable.empty(scored=True)
    try:
        data = np.loadtxt(path, ndmin=2)
    except ValueError as error:
        raise SasiInputError(f"{path}: not a Dynamo table ({error}); each line must hold "
                             f"at least {MIN_COLUMNS} numbers") from error
    if data.shape[1] < MIN_COLUMNS:
        raise SasiInputError(f"{path}: {data.shape[1]} columns, a Dynamo table has at "
                             f"least {MIN_COLUMNS} (x y z in 24-26)")
    tomograms = np.unique(data[:, TOMOGRAM])
    if len(tomograms) > 1:
        raise SasiInputError(
            f"{path}: holds particles of {len(tomograms)} tomograms (column 20: "
            f"{', '.join(f'{t:g}' for t in tomograms[:5])}); give one table per tomogram")
    xyz = data[:, POSITION] + data[:, SHIFTS] - FIRST_PIXEL
    classes = np.array([f"{c:g}" for c in data[:, CLASS]], dtype=object)
    return ParticleTable(xyz, classes, data[:, SCORE])


def write_table(path: str | os.PathLike, table: ParticleTable) -> None:
    """Write ``table`` (0-based voxels ``(x, y, z)``) as a Dynamo table, atomically:
    tags from 1, tomogram 1, class = 1-based rank of the class name, zero shifts
    and angles, the score as cross-correlation."""
    data = np.zeros((len(table), COLUMNS))
    data[:, TAG] = np.arange(1, len(table) + 1)
    data[:, ALIGNED] = 1
    data[:, TOMOGRAM] = 1
    data[:, CLASS] = class_numbers(table)
    data[:, POSITION] = table.xyz + FIRST_PIXEL
    if table.scores is not None:
        data[:, SCORE] = table.scores
    with atomic_output(path) as tmp:
        np.savetxt(tmp, data, fmt="%.6g")

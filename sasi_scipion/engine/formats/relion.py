"""RELION particle STAR files (read and written with the ``starfile`` package).

Two conventions, both ``x, y, z``:

- RELION 5 (``relion5``): ``rlnCenteredCoordinate{X,Y,Z}Angst``, Å from the
  tomogram's centre. RELION decentres them as ``pixel = centred / s + N / 2``
  (``ParticleSet::getPosition``; ``N`` voxels along the axis, ``s`` Å per voxel) into
  its 1-based pixel coordinates, so SaSi's 0-based voxel is
  ``v = centred / s + N / 2 - 1``.
- RELION 3 and 4 (``relion``): ``rlnCoordinate{X,Y,Z}`` in 1-based pixels of the
  tomogram: ``v = coordinate - 1``.

A particle's centre is its coordinate minus its origin shift
(``rlnOrigin{X,Y,Z}Angst``, Å), as RELION applies it. ``rlnTomoName`` selects the
tomogram's particles in a file that holds several tomograms (the tomogram file's name,
or ``rec_<name>`` as RELION 5 writes it); ``rlnClassNumber`` (a
number) becomes the class name; ``rlnAutopickFigureOfMerit`` is the score.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..coordinates import ParticleTable
from ..errors import SasiInputError
from .reference import Reference

AXES = ("X", "Y", "Z")
CENTRED = tuple(f"rlnCenteredCoordinate{a}Angst" for a in AXES)
PIXELS = tuple(f"rlnCoordinate{a}" for a in AXES)
ORIGIN = tuple(f"rlnOrigin{a}Angst" for a in AXES)
TOMO_NAME = "rlnTomoName"
CLASS_NUMBER = "rlnClassNumber"
SCORE = "rlnAutopickFigureOfMerit"
PARTICLES_BLOCK = "particles"
FIRST_PIXEL = 1.0
"""RELION's pixel coordinates start at 1; SaSi's voxels at 0."""


def _particles_block(path: Path):
    """The first block of ``path`` that holds coordinates (a ``pandas.DataFrame``)."""
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as error:  # the parser raises many types for a damaged file
        raise SasiInputError(f"{path}: not a readable STAR file ({error}); give a RELION "
                             "particle STAR file") from error
    for block in blocks.values():
        columns = getattr(block, "columns", ())
        if set(CENTRED) <= set(columns) or set(PIXELS) <= set(columns):
            return block
    raise SasiInputError(f"{path}: no data block holds {', '.join(CENTRED)} (RELION 5) or "
                         f"{', '.join(PIXELS)} (RELION 4); give a particle STAR file")


def _matching_name(names: list[str], stem: str | None) -> str | None:
    """The ``rlnTomoName`` of a tomogram file named ``stem``: the same name, or the one
    name it ends with after an underscore (RELION 5 writes ``rec_<name>.mrc``)."""
    if stem in names:
        return stem
    suffixed = [n for n in names if stem and stem.endswith("_" + n)]
    return suffixed[0] if len(suffixed) == 1 else None


def _this_tomogram(block, path: Path, reference: Reference):
    """The rows of ``block`` that belong to the reference tomogram."""
    if TOMO_NAME not in block.columns:
        return block
    names = sorted({str(n) for n in block[TOMO_NAME]})
    if len(names) <= 1:
        return block
    name = _matching_name(names, reference.name)
    if name is None:
        listed = f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
        which = (f"and none is named {reference.name!r}; name the tomogram file after "
                 "its rlnTomoName") if reference.name else (
            "; give the tomogram to choose, its file named after its rlnTomoName")
        raise SasiInputError(f"{path}: holds particles of {len(names)} tomograms "
                             f"({listed}){' ' if reference.name else ''}{which}")
    return block[block[TOMO_NAME].astype(str) == name]


def read_star(path: str | os.PathLike, reference: Reference,
              default_class: str) -> ParticleTable:
    """Particles of a RELION STAR file in 0-based voxels ``(x, y, z)`` of the reference
    tomogram (see the module docstring for both conventions).

    Raises:
        SasiInputError: an unreadable file, no coordinate block, several tomograms of
            which none is the reference, or RELION 5 coordinates without the tomogram's
            shape and voxel size.
    """
    path = Path(path)
    block = _this_tomogram(_particles_block(path), path, reference)
    columns = set(block.columns)
    shift = np.zeros((len(block), 3))
    if set(ORIGIN) <= columns and len(block):
        shift = block[list(ORIGIN)].to_numpy(np.float64)
        if np.any(shift):
            shift = shift / reference.need_voxel_size(path, "rlnOrigin{X,Y,Z}Angst")
        else:
            shift = np.zeros_like(shift)
    if set(CENTRED) <= columns:
        what = "RELION 5 (tomogram-centred Å)"
        size = reference.need_voxel_size(path, what)
        half = np.array(reference.need_shape(path, what)[::-1], dtype=np.float64) / 2
        xyz = block[list(CENTRED)].to_numpy(np.float64) / size + half - FIRST_PIXEL
    else:
        xyz = block[list(PIXELS)].to_numpy(np.float64) - FIRST_PIXEL
    classes = ([str(int(c)) for c in block[CLASS_NUMBER]] if CLASS_NUMBER in columns
               else [default_class] * len(block))
    scores = block[SCORE].to_numpy(np.float64) if SCORE in columns else None
    return ParticleTable(xyz - shift, np.array(classes, dtype=object), scores)


def class_numbers(table: ParticleTable) -> np.ndarray:
    """Class number per particle: 1-based rank of its class among the sorted names
    (as the Scipion plugin's group ids)."""
    rank = {name: i + 1 for i, name in enumerate(table.class_names)}
    return np.array([rank[str(c)] for c in table.classes], dtype=np.int64)


def write_star(path: str | os.PathLike, table: ParticleTable, reference: Reference,
               centred: bool) -> None:
    """Write ``table`` (0-based voxels ``(x, y, z)``) as a RELION particle STAR file,
    atomically: RELION 5 tomogram-centred Å when ``centred``, else RELION 4 pixels.

    Raises:
        SasiInputError: ``centred`` without the tomogram's shape and voxel size.
    """
    import pandas as pd
    import starfile

    columns: dict[str, object] = {TOMO_NAME: [reference.name or "tomogram"] * len(table)}
    if centred:
        what = "RELION 5 (tomogram-centred Å)"
        size = reference.need_voxel_size(path, what)
        half = np.array(reference.need_shape(path, what)[::-1], dtype=np.float64) / 2
        values, names = (table.xyz - half + FIRST_PIXEL) * size, CENTRED
    else:
        values, names = table.xyz + FIRST_PIXEL, PIXELS
    columns.update({name: values[:, i] for i, name in enumerate(names)})
    columns[CLASS_NUMBER] = class_numbers(table)
    if table.scores is not None:
        columns[SCORE] = table.scores
    with atomic_output(path) as tmp:
        starfile.write({PARTICLES_BLOCK: pd.DataFrame(columns)}, tmp)

"""Particle coordinate formats: read any into, and write any from, a
:class:`~sasi_scipion.engine.coordinates.ParticleTable` in SaSi's 0-based voxels
``(x, y, z)`` (the value at a centre is ``volume[z, y, x]``).

``tsv`` (SaSi's own, :mod:`..coordinates`), ``relion5`` and ``relion`` (STAR),
``dynamo`` (``.tbl``), ``shrec`` (SHREC 2021 ``particle_locations.txt``) and
``copick`` (JSON). Reading chooses the format from the file's content; writing from
the extension; both take an explicit format instead. ``docs/formats.md`` states each
convention.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

from ..coordinates import ParticleTable, read_particles, write_particles
from ..errors import SasiInputError
from .copick import check_one_class, read_picks, write_picks
from .dynamo import looks_like_table, read_table, write_table
from .reference import Reference, tomogram_reference
from .relion import read_star, write_star
from .shrec import looks_like_locations, read_locations, write_locations

CoordinateFormat = Literal["tsv", "relion5", "relion", "dynamo", "shrec", "copick"]
FORMATS: tuple[str, ...] = get_args(CoordinateFormat)
"""Coordinate format names (``sasi convert --format`` and ``sasi pick --format``)."""
WRITE_EXTENSIONS = {".tsv": "tsv", ".star": "relion5", ".tbl": "dynamo", ".txt": "shrec",
                    ".json": "copick"}
"""The format a written file gets from its extension."""
EXTENSIONS = {"tsv": ".tsv", "relion5": ".star", "relion": ".star", "dynamo": ".tbl",
              "shrec": ".txt", "copick": ".json"}
"""The extension a file of each format must have."""
NEEDS = {"relion5": ("shape", "voxel size"), "copick": ("voxel size",)}
"""What writing each format needs from the tomogram (reading needs the same, and
``relion`` an origin shift in Å needs the voxel size)."""
SNIFF_LINES = 5
DEFAULT_CLASS = "particle"

__all__ = ["DEFAULT_CLASS", "EXTENSIONS", "FORMATS", "CoordinateFormat", "Reference",
           "check_classes", "check_reference", "detect_format", "output_format", "read_coordinates",
           "tomogram_reference", "write_coordinates"]


def detect_format(path: str | os.PathLike) -> CoordinateFormat:
    """The format of an existing coordinate file, from its content: JSON is copick,
    STAR blocks are RELION (``relion5`` when the first block with coordinates holds
    centred Å, read per file by :func:`read_coordinates`), rows of 26 numbers or more
    a Dynamo table, ``class x y z ...`` rows SHREC locations, anything else TSV; an
    empty file by its extension."""
    path = Path(path)
    if not path.is_file():
        raise SasiInputError(f"{path}: no such coordinate file; check the path")
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise SasiInputError(f"{path}: not a text file; give a coordinate file") from error
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "copick"
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:  # an empty file (no picks) tells its format by its extension alone
        return WRITE_EXTENSIONS.get(path.suffix.lower(), "tsv")
    if any(ln.lstrip().startswith(("data_", "loop_", "_rln")) for ln in lines[:SNIFF_LINES]):
        return "relion5" if "rlnCenteredCoordinateXAngst" in text else "relion"
    rows = [ln.split() for ln in lines[:SNIFF_LINES]]
    if looks_like_table(rows):
        return "dynamo"
    if looks_like_locations(rows):
        return "shrec"
    return "tsv"


def output_format(path: str | os.PathLike, fmt: CoordinateFormat | None) -> CoordinateFormat:
    """The format to write ``path`` in: ``fmt`` when given (its extension must match),
    else from the extension.

    Raises:
        SasiInputError: an unknown format or extension, or one that does not match.
    """
    suffix = Path(path).suffix.lower()
    if fmt is None:
        if suffix not in WRITE_EXTENSIONS:
            raise SasiInputError(
                f"{path}: a coordinate file must end in .tsv (or "
                f"{', '.join(e for e in WRITE_EXTENSIONS if e != '.tsv')} for the other "
                "formats)")
        return WRITE_EXTENSIONS[suffix]
    if fmt not in FORMATS:
        raise SasiInputError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if suffix != EXTENSIONS[fmt]:
        raise SasiInputError(f"{path}: a {fmt} file must end in {EXTENSIONS[fmt]}")
    return fmt


def check_reference(path: str | os.PathLike, fmt: CoordinateFormat,
                    reference: Reference) -> None:
    """Refuse, before any work, to write ``fmt`` to ``path`` when the reference lacks
    what the format needs (:data:`NEEDS`)."""
    needs = NEEDS.get(fmt, ())
    what = f"the {fmt} format"
    if "voxel size" in needs:
        reference.need_voxel_size(path, what)
    if "shape" in needs:
        reference.need_shape(path, what)


def check_classes(path: str | os.PathLike, fmt: CoordinateFormat,
                  class_names: list[str]) -> None:
    """Refuse, before any work, classes that ``fmt`` cannot hold in one file (copick:
    one object per file)."""
    if fmt == "copick":
        check_one_class(path, class_names)


def read_coordinates(path: str | os.PathLike, reference: Reference | None = None,
                     fmt: CoordinateFormat | None = None, default_class: str = DEFAULT_CLASS,
                     allow_empty: bool = False) -> ParticleTable:
    """Read a coordinate file of any format (``fmt``, else :func:`detect_format`) into
    0-based voxels ``(x, y, z)`` of the ``reference`` tomogram; ``default_class`` names
    the particles of a file that carries no class.

    Raises:
        SasiInputError: a bad file, a format that needs the tomogram's shape or voxel
            size when the reference lacks it, or no particle (unless ``allow_empty``).
    """
    reference = reference or Reference()
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise SasiInputError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "tsv":
        return read_particles(path, default_class=default_class, allow_empty=allow_empty)
    if fmt in ("relion5", "relion"):
        table = read_star(path, reference, default_class)
    elif fmt == "dynamo":
        table = read_table(path)
    elif fmt == "shrec":
        table = read_locations(path)
    else:
        table = read_picks(path, reference, default_class)
    if not len(table) and not allow_empty:
        raise SasiInputError(f"{path}: holds no coordinates; label at least one particle")
    return table


def write_coordinates(path: str | os.PathLike, table: ParticleTable, fmt: CoordinateFormat,
                      reference: Reference | None = None) -> None:
    """Write ``table`` (0-based voxels ``(x, y, z)``) in ``fmt``, atomically.

    Raises:
        SasiInputError: a format that needs the tomogram's shape or voxel size when the
            reference lacks it, or several classes for copick.
    """
    reference = reference or Reference()
    if fmt == "tsv":
        write_particles(path, table)
    elif fmt in ("relion5", "relion"):
        write_star(path, table, reference, centred=fmt == "relion5")
    elif fmt == "dynamo":
        write_table(path, table)
    elif fmt == "shrec":
        write_locations(path, table)
    elif fmt == "copick":
        write_picks(path, table, reference)
    else:
        raise SasiInputError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")

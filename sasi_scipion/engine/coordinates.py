"""Particle coordinate files (``.tsv``).

Format: a header row, tab-separated columns ``x y z class`` and optionally
``score``. Voxel units, 0-based, ``(x, y, z)``: the value at a particle centre is
``volume[z, y, x]`` (x is the last numpy axis). A file without a header holding
``x y z`` per line (whitespace-separated) is read as one class.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_output
from .errors import SasiInputError, SasiWarning

COLUMNS = ("x", "y", "z", "class")


@dataclass
class ParticleTable:
    """Particles of one tomogram.

    Attributes:
        xyz: ``(N, 3)`` float64 centres in voxels, columns ``x, y, z``.
        classes: ``(N,)`` array of class names (``str``).
        scores: ``(N,)`` float64 confidence per particle, or ``None``.
    """

    xyz: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        self.classes = np.asarray(self.classes, dtype=object).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.classes) != len(self.xyz) or (
            self.scores is not None and len(self.scores) != len(self.xyz)
        ):
            raise ValueError("xyz, classes and scores must have the same length")

    def __len__(self) -> int:
        return len(self.xyz)

    @property
    def class_names(self) -> list[str]:
        """Sorted distinct class names."""
        return sorted({str(c) for c in self.classes})

    def subset(self, keep: np.ndarray) -> ParticleTable:
        """The particles where the boolean (or index) array ``keep`` selects."""
        return ParticleTable(
            self.xyz[keep],
            self.classes[keep],
            None if self.scores is None else self.scores[keep],
        )

    @staticmethod
    def empty(scored: bool = False) -> ParticleTable:
        """A table of no particles; with ``scored``, with an (empty) score column."""
        return ParticleTable(np.zeros((0, 3)), np.zeros(0, dtype=object),
                             np.zeros(0) if scored else None)


def _split(line: str) -> list[str]:
    return [f.strip() for f in line.split("\t")] if "\t" in line else line.split()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_particles(path: str | os.PathLike, default_class: str = "particle",
                   allow_empty: bool = False) -> ParticleTable:
    """Read a coordinate file (see the module docstring for the format).

    Args:
        path: the ``.tsv`` file.
        default_class: class of every particle when the file has no ``class`` column.
        allow_empty: accept a file holding only a header (picks of an empty tomogram).

    Raises:
        SasiInputError: missing file, bad header, non-numeric or non-finite
            coordinates, or no particle at all.
    """
    path = Path(path)
    if not path.is_file():
        raise SasiInputError(f"{path}: no such coordinate file; check the path")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise SasiInputError(f"{path}: holds no coordinates; label at least one particle")
    first = _split(lines[0])
    if all(_is_number(f) for f in first):
        header, rows = ["x", "y", "z"], lines
    else:
        header, rows = [h.lower() for h in first], lines[1:]
        missing = [c for c in ("x", "y", "z") if c not in header]
        if missing:
            raise SasiInputError(
                f"{path}: header lacks column(s) {', '.join(missing)}; the header must "
                "name x, y, z and optionally class and score"
            )
    if not rows:
        if allow_empty and header is not rows:
            return ParticleTable(np.zeros((0, 3)), np.zeros(0, dtype=object),
                                 np.zeros(0) if "score" in header else None)
        raise SasiInputError(f"{path}: holds no coordinates; label at least one particle")
    col = {name: i for i, name in enumerate(header)}
    xyz, classes, scores = [], [], []
    for number, line in enumerate(rows, start=2 if header is not rows else 1):
        fields = _split(line)
        try:
            point = [float(fields[col[a]]) for a in ("x", "y", "z")]
            score = float(fields[col["score"]]) if "score" in col else None
        except (IndexError, ValueError) as error:
            raise SasiInputError(
                f"{path}, line {number}: cannot read numbers from {line!r}; each row "
                "needs numeric x y z"
            ) from error
        if not all(math.isfinite(v) for v in point):
            raise SasiInputError(f"{path}, line {number}: coordinate is NaN or infinite")
        xyz.append(point)
        classes.append(fields[col["class"]] if "class" in col else default_class)
        scores.append(score)
    return ParticleTable(
        np.array(xyz), np.array(classes, dtype=object), np.array(scores) if "score" in col else None
    )


def write_particles(path: str | os.PathLike, table: ParticleTable) -> None:
    """Write ``table`` as a tab-separated file with a header, atomically."""
    header = list(COLUMNS) + (["score"] if table.scores is not None else [])
    lines = ["\t".join(header)]
    for i in range(len(table)):
        x, y, z = table.xyz[i]
        row = [f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", str(table.classes[i])]
        if table.scores is not None:
            row.append(f"{table.scores[i]:.5f}")
        lines.append("\t".join(row))
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def drop_duplicates(table: ParticleTable, source: str = "") -> ParticleTable:
    """Remove repeated particles: a later particle of the same class at the same voxel
    (centres rounded to voxels) as an earlier one, with a :class:`SasiWarning` that
    counts them.

    Raises:
        SasiInputError: one voxel labelled with two classes.
    """
    seen: dict[tuple[int, int, int], str] = {}
    keep = np.ones(len(table), dtype=bool)
    for i, (voxel, name) in enumerate(zip(np.rint(table.xyz).astype(int), table.classes)):
        key = (int(voxel[0]), int(voxel[1]), int(voxel[2]))
        if key not in seen:
            seen[key] = str(name)
        elif seen[key] == str(name):
            keep[i] = False
        else:
            raise SasiInputError(
                f"{source or 'coordinates'}: the particle at voxel (x, y, z) = {key} is "
                f"labelled both {seen[key]!r} and {str(name)!r}; keep one label per particle"
            )
    if not keep.all():
        warnings.warn(
            f"{source or 'coordinates'}: removed {int((~keep).sum())} duplicate "
            f"particle(s) (same class at the same voxel as an earlier one)",
            SasiWarning, stacklevel=2)
    return table.subset(keep)


def inside_volume(table: ParticleTable, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Boolean mask of the particles whose centre rounds to a voxel of a volume of shape
    ``(z, y, x)``."""
    upper = np.array(shape_zyx[::-1], dtype=np.float64) - 0.5
    return np.all((table.xyz >= -0.5) & (table.xyz < upper), axis=1)


def drop_outside(
    table: ParticleTable, shape_zyx: tuple[int, int, int], source: str = ""
) -> ParticleTable:
    """Remove particles whose centre lies outside a volume of shape ``(z, y, x)``.

    A :class:`SasiWarning` counts the dropped particles.
    """
    upper = np.array(shape_zyx[::-1], dtype=np.float64) - 0.5
    inside = inside_volume(table, shape_zyx)
    dropped = int((~inside).sum())
    if dropped:
        warnings.warn(
            f"{source or 'coordinates'}: dropped {dropped} of {len(table)} "
            f"particle(s) outside the volume (x, y, z < {tuple(int(u + 0.5) for u in upper)})",
            SasiWarning, stacklevel=2)
    return table.subset(inside)

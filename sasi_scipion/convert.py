"""Scipion sets <-> SaSi engine files.

Engine coordinate files hold voxel positions ``x y z`` measured from the
tomogram's first voxel (the value at a centre is ``volume[z, y, x]``), which
is tomo's ``BOTTOM_LEFT_CORNER`` convention: positions go across unchanged,
scaled only when the coordinates' sampling rate differs from the tomograms'.
Tomograms are matched to coordinates by ``tsId``, never by file name or id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable

import numpy as np
from tomo import constants as tomo_const
from tomo.objects import Coordinate3D, SetOfCoordinates3D, SetOfTomograms, Tomogram

from .engine.coordinates import ParticleTable, read_particles


def tomograms_by_tsid(tomograms: SetOfTomograms) -> dict[str, Tomogram]:
    """Detached copies of the tomograms of a set, keyed by ``tsId``.

    Raises:
        ValueError: a tomogram without ``tsId``, or two with the same one.
    """
    found: dict[str, Tomogram] = {}
    for tomo in tomograms.iterItems():
        ts_id = tomo.getTsId()
        if not ts_id:
            raise ValueError(f"tomogram {tomo.getFileName()} has no tsId; re-import the "
                             "tomograms with tomo's import protocol")
        if ts_id in found:
            raise ValueError(f"two tomograms share tsId {ts_id}; give each tomogram its own")
        found[ts_id] = tomo.clone()
    return found


def coordinate_table(coordinates: SetOfCoordinates3D, tomo: Tomogram, scale: float,
                     class_of: Callable[[Coordinate3D], str | None]) -> ParticleTable:
    """The coordinates of one tomogram as engine positions (voxels of ``tomo``).

    Args:
        coordinates: a set whose precedents include ``tomo`` (same ``tsId``).
        tomo: the tomogram the engine will read.
        scale: coordinates' sampling rate divided by the tomogram's (1 when equal).
        class_of: class name of a coordinate, ``None`` to leave it out.
    """
    xyz, classes = [], []
    for coord in coordinates.iterCoordinates(volume=_precedent(coordinates, tomo)):
        name = class_of(coord)
        if name is None:
            continue
        xyz.append(np.array(coord.getPosition(tomo_const.BOTTOM_LEFT_CORNER), float) * scale)
        classes.append(name)
    return ParticleTable(np.array(xyz).reshape(-1, 3), np.array(classes, dtype=object))


def _precedent(coordinates: SetOfCoordinates3D, tomo: Tomogram) -> Tomogram | None:
    """The precedent of ``coordinates`` with the tsId of ``tomo`` (None if absent)."""
    for candidate in coordinates.getPrecedents().iterItems():
        if candidate.getTsId() == tomo.getTsId():
            return candidate.clone()
    return None


def coordinate_tsids(coordinates: SetOfCoordinates3D) -> set[str]:
    """``tsId`` values that coordinates of the set refer to (none for an empty set,
    whose table does not exist yet)."""
    if coordinates.getSize() == 0:
        return set()
    return {str(v) for v in coordinates.getUniqueValues(Coordinate3D.TOMO_ID_ATTR)}


def class_output_name(prefix: str, class_name: str) -> str:
    """The output attribute of one class's picks: ``prefix`` and the class name with
    every character other than a letter, digit or ``_`` replaced by ``_`` (pyworkflow
    reads a ``.`` in an output name as an attribute path)."""
    return prefix + re.sub(r"\W", "_", class_name, flags=re.ASCII)


def add_picks(output: SetOfCoordinates3D, tomo: Tomogram, picks_path: str | os.PathLike,
              group_ids: dict[str, int], classes: Collection[str] | None = None) -> int:
    """Append the picks of one engine file to ``output``; return how many.

    Positions are voxels of ``tomo`` from its first voxel; the group id is the
    class's 1-based index, the score the engine's mean class probability.
    ``classes``: only picks of these classes (``None``: all).
    """
    picks = read_particles(picks_path, allow_empty=True)
    scores: Iterable[float] = picks.scores if picks.scores is not None else [0.0] * len(picks)
    count = 0
    for (x, y, z), name, score in zip(picks.xyz, picks.classes, scores):
        if classes is not None and str(name) not in classes:
            continue
        coord = Coordinate3D()
        coord.setVolume(tomo)
        coord.setPosition(float(x), float(y), float(z), tomo_const.BOTTOM_LEFT_CORNER)
        coord.setGroupId(group_ids[str(name)])
        coord.setScore(float(score))
        output.append(coord)
        count += 1
    return count

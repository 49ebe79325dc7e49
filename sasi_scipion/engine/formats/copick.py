"""copick picks files (JSON): the points of one object (class) in one run (tomogram).

``{"pickable_object_name": ..., "user_id": ..., "session_id": ..., "run_name": ...,
"voxel_spacing": ..., "unit": "angstrom", "points": [{"location": {"x", "y", "z"},
"transformation_": 4 x 4, "instance_id": 0, "score": ...}, ...]}``. Locations are Å
from the first voxel's centre, ``x, y, z``: SaSi's 0-based voxel is ``v = location / s``
with ``s`` the tomogram's voxel size (Å).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..coordinates import ParticleTable
from ..errors import SasiInputError
from .reference import Reference

WHAT = "a copick picks file (Å)"
USER_ID = "sasi"
SESSION_ID = "0"
IDENTITY = np.eye(4).tolist()


def _load(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SasiInputError(f"{path}: not a readable JSON file ({error}); give a copick "
                             "picks file") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("points", []), list):
        raise SasiInputError(f"{path}: not a copick picks file (no list of points)")
    return payload


def read_picks(path: str | os.PathLike, reference: Reference,
               default_class: str) -> ParticleTable:
    """Particles of a copick picks file in 0-based voxels ``(x, y, z)``; the voxel size
    is the reference tomogram's, else the file's ``voxel_spacing``.

    Raises:
        SasiInputError: unreadable JSON, a point without a finite location, or no
            voxel size.
    """
    path = Path(path)
    payload = _load(path)
    points = payload.get("points") or []
    size = reference.voxel_size or payload.get("voxel_spacing")
    if not size and points:
        size = reference.need_voxel_size(path, WHAT)
    xyz, scores = [], []
    for i, point in enumerate(points):
        try:
            location = [float(point["location"][a]) for a in ("x", "y", "z")]
        except (KeyError, TypeError, ValueError) as error:
            raise SasiInputError(f"{path}: point {i} has no location x, y, z") from error
        if not all(math.isfinite(v) for v in location):
            raise SasiInputError(f"{path}: point {i}: location is NaN or infinite")
        xyz.append(location)
        scores.append(float(point.get("score", 1.0)))
    name = str(payload.get("pickable_object_name") or default_class)
    return ParticleTable(np.array(xyz).reshape(-1, 3) / (size or 1.0),
                         np.array([name] * len(xyz), dtype=object), np.array(scores))


def check_one_class(path: str | os.PathLike, class_names: list[str]) -> None:
    """Refuse to write particles of several classes into one copick picks file."""
    if len(class_names) > 1:
        raise SasiInputError(
            f"{path}: a copick picks file holds one object, these particles are of "
            f"{len(class_names)} classes ({', '.join(class_names)}); write TSV or STAR, "
            "or one copick file per class")


def write_picks(path: str | os.PathLike, table: ParticleTable, reference: Reference) -> None:
    """Write ``table`` (0-based voxels, one class) as a copick picks file, atomically.

    Raises:
        SasiInputError: several classes (a copick picks file holds one object), or no
            voxel size.
    """
    check_one_class(path, table.class_names)
    size = reference.need_voxel_size(path, WHAT)
    scores = table.scores if table.scores is not None else np.ones(len(table))
    payload = {
        "pickable_object_name": table.class_names[0] if len(table) else "particle",
        "user_id": USER_ID, "session_id": SESSION_ID,
        "run_name": reference.name or "tomogram", "voxel_spacing": size,
        "unit": "angstrom", "trust_orientation": False,
        "points": [{"location": dict(zip("xyz", (float(v) for v in table.xyz[i] * size))),
                    "transformation_": IDENTITY, "instance_id": 0,
                    "score": float(scores[i])} for i in range(len(table))],
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")

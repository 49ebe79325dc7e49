"""Small simulated tomograms for the plugin's Scipion tests, with numpy and mrcfile
only (no torch), so that a lean Scipion environment without the engine can make them.

Two classes of bright balls in Gaussian noise, whose MRC headers say 1 Å per voxel
while the tests import them at :data:`SAMPLING_RATE` Å/px (a common wrong header).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.mrc_io import write_volume

SHAPE = (32, 64, 64)
"""Tomogram shape, voxels (z, y, x)."""
HEADER_VOXEL_SIZE = 1.0
"""What the MRC headers say, Å per voxel."""
SAMPLING_RATE = 10.0
"""The true voxel size, Å per voxel, given to Scipion's import."""
CLASSES = {"ribosome": 4.0, "apoferritin": 2.5}
"""Class name -> ball radius (voxels), in a non-alphabetical order on purpose."""
PER_TOMOGRAM = 6
"""Particles of each class per tomogram."""
LABELS = 4
"""Labelled particles of each class, on the first tomogram only."""
CONTRAST = 4.0
"""Ball density over the noise's standard deviation of 1."""


@dataclass
class Dataset:
    """Where :func:`write_dataset` put the files.

    Attributes:
        tomograms: folder of ``tomo_NNN.mrc``.
        labels: per class, a folder of ``tomo_NNN.txt`` (``x y z`` voxels from the
            first voxel) with the labelled particles.
        truth: per class, a folder of ``tomo_NNN.txt`` with every particle.
        ts_ids: the tomograms' names (their tsIds in Scipion).
    """

    tomograms: Path
    labels: dict[str, Path]
    truth: dict[str, Path]
    ts_ids: list[str]


def _centres(rng: np.random.Generator, count: int, margin: float,
             taken: list[np.ndarray]) -> list[np.ndarray]:
    """``count`` centres ``(x, y, z)`` (voxels) at least ``margin`` from the edges and
    12 voxels from each other and from ``taken``."""
    high = np.array(SHAPE[::-1], float) - margin
    found: list[np.ndarray] = []
    while len(found) < count:
        centre = rng.uniform(margin, high)
        if all(np.linalg.norm(centre - other) >= 12 for other in [*taken, *found]):
            found.append(centre)
    return found


def _write_txt(path: Path, xyz: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.2f} {y:.2f} {z:.2f}\n" for x, y, z in xyz))


def write_dataset(folder: str | Path, tomograms: int = 2, seed: int = 0) -> Dataset:
    """Write ``tomograms`` noisy tomograms of :data:`SHAPE` with :data:`PER_TOMOGRAM`
    balls of each class, their truth and :data:`LABELS` labels per class."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(SHAPE, dtype=np.float32)
    ts_ids = [f"tomo_{i:03d}" for i in range(tomograms)]
    for index, ts_id in enumerate(ts_ids):
        volume = rng.normal(size=SHAPE).astype(np.float32)
        taken: list[np.ndarray] = []
        for name, radius in CLASSES.items():
            centres = _centres(rng, PER_TOMOGRAM, radius + 2, taken)
            taken += centres
            for x, y, z in centres:
                distance = np.sqrt((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2)
                volume += CONTRAST / (1 + np.exp(2 * (distance - radius)))
            _write_txt(folder / "truth" / name / f"{ts_id}.txt", centres)
            if index == 0:
                _write_txt(folder / "labels" / name / f"{ts_id}.txt", centres[:LABELS])
        write_volume(folder / "tomograms" / f"{ts_id}.mrc", volume, HEADER_VOXEL_SIZE)
    return Dataset(folder / "tomograms", {n: folder / "labels" / n for n in CLASSES},
                   {n: folder / "truth" / n for n in CLASSES}, ts_ids)

"""Shared fixtures for engine tests: tiny tomograms and label files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.mrc_io import write_volume


@pytest.fixture
def small_tomogram(tmp_path: Path) -> Path:
    """A 32 x 40 x 48 noise tomogram at 10 Å/voxel."""
    path = tmp_path / "tomo.mrc"
    data = np.random.default_rng(0).normal(size=(32, 40, 48)).astype(np.float32)
    write_volume(path, data, 10.0)
    return path


@pytest.fixture
def small_labels(tmp_path: Path) -> Path:
    """Two classes, two particles each, inside ``small_tomogram``."""
    path = tmp_path / "labels.tsv"
    write_particles(path, ParticleTable(
        [[10, 12, 8], [30, 20, 16], [20, 30, 20], [36, 10, 24]], ["a", "a", "b", "b"]))
    return path

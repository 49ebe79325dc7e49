"""The accuracy harness's template-matching baseline (``benchmarks/template_matching.py``)
finds known particles at their known positions, with their classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine.simulate import (
    imaging_transfer,
    procedural_templates,
    random_rotation,
    rotate_template,
    template_radius,
)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
VOXEL_SIZE = 10.0
SHAPE = (40, 64, 64)


@pytest.fixture()
def template_matching(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import template_matching

    return template_matching


def _tomogram(templates: dict[str, np.ndarray], centres: dict[str, tuple[int, int, int]],
              seed: int) -> np.ndarray:
    """Each template turned by the first rotation of ``seed``'s sequence (the first the
    matcher tries), its box centred on ``centres[name]`` (z, y, x), then the simulator's
    CTF and wedge, then weak noise."""
    density = np.zeros(SHAPE, dtype=np.float32)
    for name, centre in centres.items():
        rotated = rotate_template(templates[name], random_rotation(np.random.default_rng(seed)))
        half = rotated.shape[0] // 2
        z, y, x = (c - half for c in centre)
        n = rotated.shape[0]
        density[z:z + n, y:y + n, x:x + n] += rotated
    ctf, wedge = imaging_transfer(SHAPE, VOXEL_SIZE)
    imaged = torch.fft.irfftn(torch.fft.rfftn(torch.from_numpy(density)) * ctf * wedge,
                              s=SHAPE).numpy()
    noise = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    return imaged + 0.1 * imaged.std() * noise


def test_picks_each_particle_at_its_centre_with_its_class(template_matching) -> None:
    templates = procedural_templates(VOXEL_SIZE)
    radii = {name: template_radius(t) for name, t in templates.items()}
    centres = {"globule": (20, 20, 20), "rod": (20, 44, 42)}
    volume = _tomogram(templates, centres, seed=3)
    picks = template_matching.match_particles(
        volume, templates, radii, {"globule": 1, "rod": 1, "disc": 0}, VOXEL_SIZE,
        rotations=3, seed=3)
    assert sorted(picks.classes) == ["globule", "rod"]
    for name, centre in centres.items():
        found = picks.xyz[list(picks.classes).index(name)][::-1]
        assert np.abs(found - np.array(centre)).max() <= 1, (name, found)
    assert picks.scores.min() > 0.8  # the exact rotation was tried: near-perfect NCC


def test_ncc_is_one_for_the_filtered_template_and_low_for_noise(template_matching) -> None:
    templates = procedural_templates(VOXEL_SIZE)
    volume = _tomogram(templates, {"disc": (20, 32, 32)}, seed=5)
    radius = template_radius(templates["disc"])
    scores = template_matching.ncc_map(volume, templates["disc"], radius, VOXEL_SIZE,
                                       rotations=2, seed=5)
    assert scores.shape == SHAPE
    assert scores[20, 32, 32] == pytest.approx(scores.max()) and scores.max() > 0.9
    noise = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    assert template_matching.ncc_map(noise, templates["disc"], radius, VOXEL_SIZE,
                                     rotations=2, seed=5).max() < 0.5

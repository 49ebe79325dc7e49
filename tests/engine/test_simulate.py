"""The synthetic tomogram simulator: files, truth consistency, physics, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.simulate import (
    image,
    load_templates,
    procedural_templates,
    random_rotation,
    rotate_template,
    simulate_dataset,
    simulate_tomogram,
    template_radius,
)

SHREC_TEMPLATES = Path(__file__).resolve().parents[2].parent / "shared/templates/shrec21_10A"
SHAPE = (32, 64, 64)


def test_dataset_files_and_truth_match_the_occupancy(tmp_path: Path) -> None:
    dataset = simulate_dataset(tmp_path, tomograms=2, shape_zyx=SHAPE, seed=3)
    assert dataset == json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["classes"] == ["disc", "globule", "rod"]
    for name in ("tomo_000", "tomo_001"):
        volume = read_volume(tmp_path / f"{name}.mrc")
        assert volume.data.shape == SHAPE and volume.voxel_size == pytest.approx(10.0)
        truth = read_particles(tmp_path / f"{name}.tsv")
        occupancy = read_volume(tmp_path / f"{name}_occupancy.mrc", check_values=False).data
        assert len(truth) >= 6 and set(truth.class_names) == set(dataset["classes"])
        assert set(np.unique(occupancy)) == set(range(len(truth) + 1))
        x, y, z = np.rint(truth.xyz).astype(int).T
        assert np.array_equal(occupancy[z, y, x], np.arange(1, len(truth) + 1))
        # protein is darker than the solvent
        assert volume.data[occupancy > 0].mean() < volume.data[occupancy == 0].mean() - 0.2 * (
            volume.data.std())


def test_seed_makes_it_reproducible(tmp_path: Path) -> None:
    templates = procedural_templates()
    a = simulate_tomogram(SHAPE, templates, np.random.default_rng(1))
    b = simulate_tomogram(SHAPE, templates, np.random.default_rng(1))
    c = simulate_tomogram(SHAPE, templates, np.random.default_rng(2))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[0], c[0])


def test_missing_wedge_and_noise_level() -> None:
    density = np.random.default_rng(0).random((32, 32, 32)).astype(np.float32)
    volume = image(density, 10.0, snr=1.0, rng=np.random.default_rng(0))
    power = np.abs(np.fft.rfftn(volume)) ** 2
    kz = np.abs(np.fft.fftfreq(32)).reshape(-1, 1, 1)
    kx = np.abs(np.fft.rfftfreq(32)).reshape(1, 1, -1)
    wedge = np.broadcast_to(kz > math.tan(math.radians(60)) * kx + 1e-9, power.shape)
    assert power[wedge].mean() < 1e-6 * power[~wedge].mean()
    noisier = image(density, 10.0, snr=0.01, rng=np.random.default_rng(0))
    clean = image(density, 10.0, snr=1e6, rng=np.random.default_rng(0))
    assert np.corrcoef(volume.ravel(), clean.ravel())[0, 1] > 0.6
    assert np.corrcoef(noisier.ravel(), clean.ravel())[0, 1] < 0.2


def test_templates_and_radii() -> None:
    templates = procedural_templates(10.0)
    radii = {name: template_radius(t) for name, t in templates.items()}
    assert all(5 < r < 10 for r in radii.values()), radii
    half = procedural_templates(20.0)
    assert template_radius(half["disc"]) == pytest.approx(radii["disc"] / 2, rel=0.2)


def test_random_rotations_are_proper_and_varied() -> None:
    rng = np.random.default_rng(0)
    rotations = [random_rotation(rng) for _ in range(50)]
    for r in rotations:
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(r) == pytest.approx(1.0)
    assert np.std([r[2, 2] for r in rotations]) > 0.4  # z axis goes everywhere


def test_template_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SasiInputError, match="no such folder"):
        load_templates(tmp_path / "none", 10.0)
    with pytest.raises(SasiInputError, match="no .mrc map"):
        load_templates(tmp_path, 10.0)
    write_volume(tmp_path / "1abc.mrc", np.random.default_rng(0).random((12, 12, 12)), 5.0)
    with pytest.raises(SasiInputError, match="rescale the maps to 10.00 Å"):
        load_templates(tmp_path, 10.0)
    with pytest.raises(SasiInputError, match="positive"):
        simulate_dataset(tmp_path / "out", snr=-1.0)


@pytest.mark.skipif(not SHREC_TEMPLATES.is_dir(), reason="needs ../shared/templates/shrec21_10A")
def test_real_density_maps(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    for name in ("1s3x.mrc", "4v94.mrc"):
        shutil.copy(SHREC_TEMPLATES / name, folder / name)
    dataset = simulate_dataset(tmp_path / "out", tomograms=1, shape_zyx=(48, 96, 96), seed=0,
                               templates_dir=folder)
    assert dataset["classes"] == ["1S3X", "4V94"] and dataset["unscored"] == ["4V94"]
    assert dataset["radii"]["4V94"] > 2 * dataset["radii"]["1S3X"]
    truth = read_particles(tmp_path / "out/tomo_000.tsv")
    assert {"1S3X", "4V94"} == set(truth.class_names)


def test_engine_never_imports_pyworkflow() -> None:
    import subprocess
    import sys

    code = ("import sys, sasi_scipion.engine.cli, sasi_scipion.engine.simulate; "
            "sys.exit(any(m.split('.')[0] in ('pyworkflow', 'pwem', 'tomo') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert torch.__version__  # the engine's own dependencies are importable


def test_crowded_balanced_and_clear_of_the_border() -> None:
    templates = procedural_templates(10.0)
    radii = {name: template_radius(t) for name, t in templates.items()}
    _, truth, occupancy = simulate_tomogram((48, 96, 96), templates, np.random.default_rng(0), 0.5)
    assert occupancy.dtype == np.int32 and 0.06 <= (occupancy > 0).mean() <= 0.13
    counts = [int(np.sum(truth.classes == c)) for c in truth.class_names]
    assert len(counts) == 3 and max(counts) - min(counts) <= 1
    upper = np.array((96, 96, 48), dtype=float)
    for point, cls in zip(truth.xyz, truth.classes):
        assert np.all(point >= radii[cls] - 1) and np.all(point <= upper - radii[cls])


def test_snr_is_signal_over_noise_variance() -> None:
    templates = procedural_templates(10.0)
    clean = simulate_tomogram(SHAPE, templates, np.random.default_rng(1), None)[0]
    noisy = simulate_tomogram(SHAPE, templates, np.random.default_rng(1), 0.25)[0]
    assert float(clean.var() / (noisy - clean).var()) == pytest.approx(0.25, rel=0.05)


@pytest.mark.parametrize("snr", [None, 0.5])
def test_simulated_tomogram_has_the_missing_wedge(snr: float | None) -> None:
    volume = simulate_tomogram(SHAPE, procedural_templates(10.0), np.random.default_rng(2), snr)[0]
    power = np.abs(np.fft.fftn(volume)) ** 2
    kz = np.abs(np.fft.fftfreq(SHAPE[0]))[:, None, None]
    kx = np.abs(np.fft.fftfreq(SHAPE[2]))[None, None, :]
    ratio = kz / np.maximum(kx, 1e-9)
    wedge = np.broadcast_to((kz > 0) & (ratio > math.tan(math.radians(65))), power.shape)
    kept = np.broadcast_to((kx > 0) & (ratio < math.tan(math.radians(55))), power.shape)
    assert power[wedge].mean() < 1e-6 * power[kept].mean()


def test_template_radius_of_a_ball() -> None:
    axis = np.arange(41) - 20.0
    z, y, x = np.meshgrid(axis, axis, axis + 3, indexing="ij")
    ball = (z**2 + y**2 + x**2 <= 10.0**2).astype(np.float32)
    assert template_radius(ball) == pytest.approx(10.0 * 0.95 ** (1 / 3), abs=0.6)


def test_rotate_template_matches_affine_grid() -> None:
    template = procedural_templates(10.0)["rod"]
    rotation = random_rotation(np.random.default_rng(4))
    theta = torch.zeros(1, 3, 4)
    theta[0, :, :3] = torch.from_numpy(rotation.astype(np.float32))
    tensor = torch.from_numpy(template)[None, None]
    grid = functional.affine_grid(theta, list(tensor.shape), align_corners=True)
    expected = functional.grid_sample(tensor, grid, align_corners=True)[0, 0].numpy()
    np.testing.assert_allclose(rotate_template(template, rotation), expected, atol=1e-5)


def test_bad_voxel_size_or_shape_writes_nothing(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    blob = procedural_templates(10.0)["globule"]
    write_volume(maps / "a.mrc", blob, 10.0)
    write_volume(maps / "b.mrc", blob, 8.0)
    with pytest.raises(SasiInputError, match=r"rescale the maps to 10\.00 Å or pass --voxel-size"):
        simulate_dataset(tmp_path / "out", tomograms=1, shape_zyx=SHAPE, templates_dir=str(maps))
    assert not (tmp_path / "out" / "dataset.json").exists()
    with pytest.raises(SasiInputError, match="--shape"):
        simulate_tomogram((16, 64, 64), procedural_templates(10.0), np.random.default_rng(0), 0.5)


@pytest.mark.skipif(not SHREC_TEMPLATES.is_dir(), reason="needs ../shared/templates/shrec21_10A")
def test_real_maps_truth_matches_the_occupancy(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    for stem in ("1s3x", "3qm1", "4v94"):  # 4V94's centre of mass lies off its density
        shutil.copy(SHREC_TEMPLATES / f"{stem}.mrc", maps)
    info = simulate_dataset(tmp_path / "out", tomograms=1, shape_zyx=(41, 80, 80), seed=1,
                            templates_dir=str(maps))
    assert info["templates"] == str(maps) and info["unscored"] == ["4V94"]
    truth = read_particles(tmp_path / "out" / "tomo_000.tsv")
    assert set(truth.class_names) == {"1S3X", "3QM1", "4V94"}
    occupancy = read_volume(tmp_path / "out" / "tomo_000_occupancy.mrc", check_values=False).data
    x, y, z = np.rint(truth.xyz).astype(int).T
    np.testing.assert_array_equal(occupancy[z, y, x], np.arange(1, len(truth) + 1))

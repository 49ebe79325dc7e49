"""The synthetic tomogram simulator: files, truth consistency, physics, errors."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from torch.nn import functional

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.metrics import dilate_occupancy
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.simulate import (
    DISTRACTOR_LABELS,
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
DISTRACTOR_SHAPE = (48, 96, 96)  # room for gold beads (their box is 25 voxels at 10 Å)


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
    assert dataset["distractors"] is False and not list(tmp_path.glob("*distractor*"))


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
    _, truth, occupancy, *_ = simulate_tomogram((48, 96, 96), templates, np.random.default_rng(0),
                                                0.5)
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


# --- distractors ----------------------------------------------------------------------------


def test_without_distractors_the_output_is_that_of_the_code_before_them() -> None:
    # values computed with the simulator before distractors existed (seed 7, default SNR)
    rng = np.random.default_rng(7)
    volume, truth, occupancy, distractors, labels = simulate_tomogram(
        SHAPE, procedural_templates(10.0), rng)
    assert hashlib.sha256(occupancy.tobytes()).hexdigest() == (
        "1e945a1b535c465a2c9e7e952e67032c04b735b13b18a1ec04fbe20c16df66be")
    assert len(truth) == 8 and list(truth.classes[:5]) == ["disc", "globule", "rod", "disc",
                                                           "globule"]
    assert int(rng.integers(0, 2**62)) == 4306812424914278907  # the same random stream
    assert float(volume.mean()) == pytest.approx(-0.004354596138000488, rel=1e-4)
    assert float(volume.std()) == pytest.approx(0.04487127810716629, rel=1e-4)
    voxels = [(0, 0, 0), (16, 32, 32), (5, 40, 20), (31, 63, 63), (10, 10, 50)]
    expected = [0.022025439888238907, -0.06453533470630646, -0.03349734842777252,
                -0.032165687531232834, -0.056694503873586655]
    np.testing.assert_allclose([volume[v] for v in voxels], expected, rtol=1e-4, atol=1e-6)
    assert len(distractors) == 0 and labels is None


def test_distractors_leave_the_particles_alone() -> None:
    templates = procedural_templates(10.0)
    off = simulate_tomogram(DISTRACTOR_SHAPE, templates, np.random.default_rng(0))
    on = simulate_tomogram(DISTRACTOR_SHAPE, templates, np.random.default_rng(0),
                           distractors=True)
    # placed after the particles: the same truth and occupancy, voxel for voxel
    np.testing.assert_array_equal(on.truth.xyz, off.truth.xyz)
    assert list(on.truth.classes) == list(off.truth.classes)
    np.testing.assert_array_equal(on.occupancy, off.occupancy)
    assert not np.array_equal(on.volume, off.volume)
    # no distractor voxel in a particle's occupancy, nor where the SHREC rule's dilation reaches
    assert on.distractor_labels.dtype == np.uint8
    assert set(np.unique(on.distractor_labels)) == {0, 1, 2, 3}
    assert not ((on.distractor_labels > 0) & dilate_occupancy(on.occupancy > 0)).any()
    counts = {name: int(np.sum(on.distractors.classes == name)) for name in DISTRACTOR_LABELS}
    assert counts["gold"] == 2 and counts["junk"] >= 10
    assert 1 <= counts["membrane_vesicle"] <= 2 and counts["membrane"] <= 1
    for (x, y, z), name in zip(np.rint(on.distractors.xyz).astype(int), on.distractors.classes):
        if name in ("gold", "junk"):  # a compact distractor's centre carries its label
            assert on.distractor_labels[z, y, x] == DISTRACTOR_LABELS[name]


@pytest.mark.parametrize("seed", [0, 1])
def test_gold_beads_are_the_darkest_objects(seed: int) -> None:
    tomogram = simulate_tomogram(DISTRACTOR_SHAPE, procedural_templates(10.0),
                                 np.random.default_rng(seed), distractors=True)
    volume, labels = tomogram.volume, tomogram.distractor_labels

    def local_mean(xyz: np.ndarray) -> float:  # 3 x 3 x 3 voxels about (x, y, z)
        x, y, z = np.rint(xyz).astype(int)
        return float(volume[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2].mean())

    gold = tomogram.distractors.xyz[tomogram.distractors.classes == "gold"]
    others = [*tomogram.truth.xyz,
              *tomogram.distractors.xyz[tomogram.distractors.classes == "junk"]]
    assert len(gold) == 2
    # protein is dark after the CTF; gold, 8 times denser, darker still at its listed centre
    assert max(local_mean(c) for c in gold) < min(local_mean(c) for c in others)
    assert labels.flat[np.argmin(volume)] == DISTRACTOR_LABELS["gold"]


def test_distractor_files(tmp_path: Path) -> None:
    assert main(["simulate", str(tmp_path / "on"), "--tomograms", "1", "--shape", "48,96,96",
                 "--distractors"]) == 0
    simulate_dataset(tmp_path / "off", tomograms=1, shape_zyx=DISTRACTOR_SHAPE)
    on, off = tmp_path / "on", tmp_path / "off"
    assert json.loads((on / "dataset.json").read_text())["distractors"] is True
    assert (on / "tomo_000.tsv").read_text() == (off / "tomo_000.tsv").read_text()
    occupancy = read_volume(on / "tomo_000_occupancy.mrc", check_values=False).data
    np.testing.assert_array_equal(
        occupancy, read_volume(off / "tomo_000_occupancy.mrc", check_values=False).data)
    table = read_particles(on / "tomo_000_distractors.tsv")
    assert (on / "tomo_000_distractors.tsv").read_text().startswith("x\ty\tz\tclass\n")
    assert set(table.class_names) == {"gold", "junk", "membrane", "membrane_vesicle"}
    with mrcfile.open(on / "tomo_000_distractor_mask.mrc") as mrc:
        assert mrc.data.dtype == np.int16
        mask = np.array(mrc.data)
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    assert not occupancy[mask > 0].any()  # occupancy 0 on every distractor
    for (x, y, z), name in zip(np.rint(table.xyz).astype(int), table.classes):
        if name in ("gold", "junk"):
            assert mask[z, y, x] == DISTRACTOR_LABELS[name]

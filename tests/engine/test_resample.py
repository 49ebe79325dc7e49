"""Band-limited resampling to another voxel size: positions, values, faces, chunks and
the coordinate maps; training on tomograms of different voxel sizes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine import resample as resample_module
from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.model_file import read_model_file
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.resample import (
    resample,
    resampled_shape,
    to_resampled_voxels,
    to_source_voxels,
)
from sasi_scipion.engine.training_data import load_training_data

SHAPE = (40, 64, 72)
CENTRE_XYZ = np.array([30.3, 25.7, 20.2])


def _blob(shape=SHAPE, centre=CENTRE_XYZ, sigma: float = 3.0) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    squared = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
    return (np.exp(-squared / (2 * sigma**2)) + 2.0).astype(np.float32)


def _centroid(volume: np.ndarray) -> np.ndarray:
    """``(x, y, z)`` centroid of the blob above its flat level of 2."""
    weight = np.clip(volume - 2.0, 0, None)
    weight *= weight > 0.2 * weight.max()
    z, y, x = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    return np.array([(weight * c).sum() for c in (x, y, z)]) / weight.sum()


@pytest.mark.parametrize("voxel_size", [7.5, 13.5])
def test_a_blob_lands_where_the_coordinate_map_says(voxel_size) -> None:
    shape = resampled_shape(SHAPE, 10.0, voxel_size)
    assert shape == tuple(round(n * 10.0 / voxel_size) for n in SHAPE)
    out = resample(_blob(), shape)
    assert out.shape == shape and out.dtype == np.float32
    expected = to_resampled_voxels(CENTRE_XYZ[None], SHAPE, shape)[0]
    np.testing.assert_allclose(_centroid(out), expected, atol=0.03)
    # a map that ignored the shared centre (voxel 0 on voxel 0) is off by a third voxel
    assert np.abs(CENTRE_XYZ * np.array(shape[::-1]) / SHAPE[::-1] - expected).max() > 0.1
    assert out.mean() == pytest.approx(_blob().mean(), abs=1e-5)
    np.testing.assert_allclose(to_source_voxels(to_resampled_voxels(CENTRE_XYZ[None], SHAPE,
                                                                    shape), SHAPE, shape)[0],
                               CENTRE_XYZ)


def test_upsampling_then_downsampling_gives_the_volume_back() -> None:
    volume = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    finer = resample(volume, resampled_shape(SHAPE, 10.0, 7.5))
    np.testing.assert_allclose(resample(finer, SHAPE), volume, atol=1e-4)


def test_downsampling_keeps_the_band_the_coarser_grid_holds_and_removes_the_rest() -> None:
    """Along x (72 voxels -> 53): a cosine of 5 half-periods over the volume (below
    the new Nyquist frequency) becomes the same cosine sampled on the new grid; one
    of 60 half-periods (above it, below the old one) vanishes instead of aliasing."""
    shape = resampled_shape(SHAPE, 10.0, 13.5)
    x_old = np.arange(SHAPE[2]) + 0.5
    x_new = (np.arange(shape[2]) + 0.5) * SHAPE[2] / shape[2]

    def wave(half_periods: int, x: np.ndarray, n: int) -> np.ndarray:
        return np.broadcast_to(np.cos(np.pi * half_periods * x / SHAPE[2]), n)

    for half_periods, expected in ((5, wave(5, x_new, shape[2])), (60, np.zeros(shape[2]))):
        volume = np.broadcast_to(wave(half_periods, x_old, SHAPE[2]), SHAPE).astype(np.float32)
        out = resample(volume + 5.0, shape) - 5.0
        np.testing.assert_allclose(out, np.broadcast_to(expected, shape), atol=1e-4)


def test_faces_do_not_wrap_around() -> None:
    """A bright slab at x = 0 stays there: nothing of it appears at the opposite face,
    as it would with a periodic (plain Fourier) crop."""
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[:, :, :6] = 1.0
    out = resample(volume, resampled_shape(SHAPE, 10.0, 13.5))
    assert out[:, :, 0].mean() > 0.9
    assert np.abs(out[:, :, -3:]).max() < 0.02


def test_chunks_give_the_same_volume(monkeypatch) -> None:
    volume = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    shape = resampled_shape(SHAPE, 10.0, 7.5)
    whole = resample(volume, shape)
    monkeypatch.setattr(resample_module, "CHUNK_VOXELS", 5000)
    np.testing.assert_allclose(resample(volume, shape), whole, atol=1e-5)


def test_same_shape_is_a_float32_copy() -> None:
    volume = np.arange(24 * 24 * 24, dtype=np.int16).reshape(24, 24, 24)
    out = resample(volume, volume.shape)
    assert out.dtype == np.float32 and np.array_equal(out, volume)


def test_training_puts_tomograms_of_two_voxel_sizes_on_the_first_ones_grid(
        tmp_path: Path, caplog) -> None:
    """A 10 Å and a 7.5 Å tomogram of the same blob, each labelled in its own voxels:
    the 7.5 Å one is trained resampled to 10 Å, its label where the blob is."""
    coarse, fine = tmp_path / "coarse.mrc", tmp_path / "fine.mrc"
    fine_shape = resampled_shape(SHAPE, 10.0, 7.5)
    fine_centre = to_resampled_voxels(CENTRE_XYZ[None], SHAPE, fine_shape)[0]
    write_volume(coarse, _blob(), 10.0)
    write_volume(fine, _blob(fine_shape, fine_centre, sigma=4.0), 7.5)
    for path, centre in ((tmp_path / "coarse.tsv", CENTRE_XYZ), (tmp_path / "fine.tsv",
                                                                  fine_centre)):
        write_particles(path, ParticleTable([centre], ["a"]))
    caplog.set_level(logging.INFO, logger="sasi_scipion.engine")
    data = load_training_data([str(coarse), str(fine)],
                              [str(tmp_path / "coarse.tsv"), str(tmp_path / "fine.tsv")],
                              {"a": 3.0}, 24)
    assert "fine.mrc: 7.500 Å per voxel; resampled to 10.000 Å" in caplog.text
    assert data.voxel_size == 10.0
    assert [v.shape for v in data.volumes] == [SHAPE, SHAPE]
    np.testing.assert_allclose(data.particles[1].xyz[0], CENTRE_XYZ, atol=1e-3)  # TSV digits
    # the label sphere and the blob of the resampled tomogram are where they belong
    np.testing.assert_allclose(_label_centre(data.label_maps[1]), CENTRE_XYZ, atol=0.5)
    assert np.unravel_index(data.volumes[1].argmax(), SHAPE) == tuple(
        np.round(CENTRE_XYZ[::-1]).astype(int))
    out = tmp_path / "m.pt"
    assert main(["train", "--tomogram", str(coarse), "--coords", str(tmp_path / "coarse.tsv"),
                 "--tomogram", str(fine), "--coords", str(tmp_path / "fine.tsv"),
                 "--radius", "3", "--out", str(out), "--iterations", "2", "--device", "cpu",
                 "--ssl", "none"]) == 0
    assert read_model_file(out)[0].voxel_size == 10.0


def _label_centre(label_map: np.ndarray) -> np.ndarray:
    z, y, x = np.nonzero(label_map)
    return np.array([x.mean(), y.mean(), z.mean()])

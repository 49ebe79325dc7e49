"""MRC data modes on small files (``mrc_io``): every real mode reads to the same
``float32`` values, IMOD's unsigned bytes are read unsigned, a non-standard axis order
is refused, reading goes through a memory map, and a mapped tomogram normalised on
read (as picking and training read it) gives the values of its normalised copy."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from sasi_scipion.engine import mrc_io, normalize
from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.model_file import ModelMetadata
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import NORMALISATION, NormalisedVolume, normalise
from sasi_scipion.engine.picking import prepare_tomogram
from sasi_scipion.engine.training_data import load_training_data

SHAPE = (4, 5, 6)


def _write(path: Path, data: np.ndarray, edit=None) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 10.0
        if edit:
            edit(mrc.header)


@pytest.mark.parametrize("dtype, mode", [(np.int8, 0), (np.int16, 1), (np.float32, 2),
                                         (np.uint16, 6), (np.float16, 12)])
def test_every_real_mode_reads_its_values(tmp_path: Path, dtype, mode) -> None:
    values = np.arange(np.prod(SHAPE)).reshape(SHAPE) - 40
    if dtype == np.uint16:
        values = values + 40
    data = values.astype(dtype)
    _write(tmp_path / "v.mrc", data)
    with mrcfile.open(tmp_path / "v.mrc", header_only=True) as mrc:
        assert int(mrc.header.mode) == mode
    volume = read_volume(tmp_path / "v.mrc")
    assert volume.data.dtype == np.float32 and volume.data.shape == SHAPE
    np.testing.assert_array_equal(volume.data, data.astype(np.float32))
    assert volume.voxel_size == pytest.approx(10.0)


def _imod(flags: int):
    def edit(header) -> None:
        words = np.array([mrc_io.IMOD_STAMP, flags], dtype=header.nx.dtype)
        raw = bytearray(header.extra2.tobytes())
        raw[mrc_io.IMOD_STAMP_OFFSET:mrc_io.IMOD_STAMP_OFFSET + 8] = words.tobytes()
        header.extra2 = np.frombuffer(bytes(raw), dtype=header.extra2.dtype)
    return edit


@pytest.mark.parametrize("edit, expected", [(None, -56.0), (_imod(0), 200.0),
                                            (_imod(mrc_io.IMOD_SIGNED_BYTES), -56.0)])
def test_imod_bytes_are_unsigned_unless_flagged_signed(tmp_path: Path, edit,
                                                       expected: float) -> None:
    data = np.full(SHAPE, 200, dtype=np.uint8).view(np.int8)
    data[0, 0, 0] = 1  # not constant
    _write(tmp_path / "b.mrc", data, edit)
    assert read_volume(tmp_path / "b.mrc").data[1, 1, 1] == expected


def test_non_standard_axis_order_is_refused(tmp_path: Path) -> None:
    def swap(header) -> None:
        header.mapr, header.maps = 3, 2

    _write(tmp_path / "swapped.mrc", np.random.default_rng(0).normal(size=SHAPE).astype(
        np.float32), swap)
    with pytest.raises(SasiInputError, match=r"\(mapc, mapr, maps\) = \(1, 3, 2\)"):
        read_volume(tmp_path / "swapped.mrc")


def test_reading_maps_the_file_instead_of_loading_it(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path / "v.mrc", np.random.default_rng(0).normal(size=SHAPE).astype(np.float16))
    opened = []
    real_open, real_mmap = mrcfile.open, mrcfile.mmap

    def header_only(*args, **kwargs):
        assert kwargs.get("header_only"), "the data were read with mrcfile.open"
        return real_open(*args, **kwargs)

    monkeypatch.setattr(mrcfile, "open", header_only)
    monkeypatch.setattr(mrcfile, "mmap", lambda *a, **k: opened.append(a) or real_mmap(*a, **k))
    read_volume(tmp_path / "v.mrc")
    assert len(opened) == 1


@pytest.mark.parametrize("dtype", [np.int8, np.float16, np.float32])
def test_a_mapped_tomogram_normalises_on_read_as_its_float32_copy(tmp_path: Path, dtype,
                                                                  monkeypatch) -> None:
    """``map_volume`` keeps the file's dtype in a read-only map, and a
    ``NormalisedVolume`` over it gives, part by part, exactly what normalising the
    whole ``float32`` copy gives (also negated, and past the two-million-voxel sample)."""
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 30.0, size=(6, 40, 50))
    data = np.clip(values, -120, 120).astype(dtype)
    _write(tmp_path / "v.mrc", data)
    mapped = mrc_io.map_volume(tmp_path / "v.mrc")
    assert isinstance(mapped.data, np.memmap) and mapped.data.dtype == dtype
    assert not mapped.data.flags.writeable
    monkeypatch.setattr(normalize, "_SAMPLE", 5_000)  # a sample, as for a large tomogram
    whole = normalise(read_volume(tmp_path / "v.mrc").data)
    lazy = NormalisedVolume(mapped.data)
    assert lazy.shape == data.shape and lazy.dtype == np.float32
    parts = (np.s_[:, :, :], np.s_[2:5, 7:31, :], np.s_[5, 3:9, 40:])
    for part in parts:
        np.testing.assert_array_equal(lazy[part], whole[part])
        np.testing.assert_array_equal(NormalisedVolume(mapped.data, negate=True)[part],
                                      -whole[part])
    np.testing.assert_array_equal(mapped.data, data)  # the map itself is untouched


def test_values_are_checked_slab_by_slab_to_the_last_plane(tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(mrc_io, "READ_SLAB_VOXELS", SHAPE[1] * SHAPE[2])  # one plane a slab
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    data[-1, -1, -1] = np.nan
    _write(tmp_path / "nan.mrc", data)
    with pytest.raises(SasiInputError, match="NaN or infinite"):
        mrc_io.map_volume(tmp_path / "nan.mrc")
    planes = np.broadcast_to(np.arange(SHAPE[0], dtype=np.float32)[:, None, None], SHAPE)
    _write(tmp_path / "planes.mrc", np.ascontiguousarray(planes))  # each slab constant
    assert mrc_io.map_volume(tmp_path / "planes.mrc").data.shape == SHAPE
    _write(tmp_path / "flat.mrc", np.ones(SHAPE, dtype=np.float32))
    with pytest.raises(SasiInputError, match="same value"):
        mrc_io.map_volume(tmp_path / "flat.mrc")


@pytest.mark.parametrize("voxel_size, mapped", [(10.0, True), (8.0, False)])
def test_picking_reads_a_tomogram_at_the_model_s_voxel_size_through_its_map(
        tmp_path: Path, voxel_size: float, mapped: bool) -> None:
    """At the model's voxel size the prepared tomogram is the file's read-only map,
    normalised as it is read (no copy of the whole volume); at another it is the
    resampled array. Both give the normalised values (the first exactly)."""
    data = np.random.default_rng(0).normal(size=(32, 40, 48)).astype(np.float16)
    _write(tmp_path / "t.mrc", data)
    meta = ModelMetadata(arch="deepfinder", arch_params={}, classes=["a"], radii=[3.0],
                         window=24, voxel_size=voxel_size, normalisation=NORMALISATION,
                         pretrained_only=False, iterations=1)
    prepared, shape = prepare_tomogram(meta, tmp_path / "t.mrc")
    assert shape == data.shape
    assert isinstance(prepared, NormalisedVolume) == mapped
    if mapped:
        assert isinstance(prepared.raw, np.memmap) and prepared.raw.dtype == np.float16
        np.testing.assert_array_equal(prepared[:, :, :], normalise(data.astype(np.float32)))
    else:
        assert prepared.shape == (40, 50, 60) and prepared.dtype == np.float32


def test_training_reads_its_windows_from_the_tomogram_s_map(tmp_path: Path) -> None:
    """A training tomogram at its own grid is a ``NormalisedVolume`` over the file's
    read-only map (int8 here): windows are read from it, the volume is never copied."""
    data = np.random.default_rng(0).integers(-100, 100, size=(32, 40, 48)).astype(np.int8)
    _write(tmp_path / "t.mrc", data)
    labels = ParticleTable([[10, 12, 8], [30, 20, 16]], ["a", "a"])
    training = load_training_data([tmp_path / "t.mrc"], [labels], {"a": 3.0}, 24)
    volume = training.volumes[0]
    assert isinstance(volume, NormalisedVolume) and isinstance(volume.raw, np.memmap)
    assert volume.raw.dtype == np.int8
    np.testing.assert_array_equal(volume[:, :, :], normalise(data.astype(np.float32)))
    assert training.label_maps[0].shape == data.shape

"""MRC data modes on small files (``mrc_io``): every real mode reads to the same
``float32`` values, IMOD's unsigned bytes are read unsigned, a non-standard axis order
is refused, and reading goes through a memory map."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from sasi_scipion.engine import mrc_io
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.mrc_io import read_volume

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

"""MRC and coordinate I/O, masks and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from sasi_scipion.engine.atomic import atomic_output, remove_partials
from sasi_scipion.engine.coordinates import (
    ParticleTable,
    drop_duplicates,
    drop_outside,
    read_particles,
    write_particles,
)
from sasi_scipion.engine.errors import SasiInputError, SasiWarning
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.mrc_io import inspect_mrc, read_tomogram, read_volume, write_volume


def test_volume_round_trip_keeps_axis_order_and_voxel_size(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    write_volume(tmp_path / "v.mrc", data, 7.5)
    volume = read_volume(tmp_path / "v.mrc")
    assert volume.data.shape == (2, 3, 4)
    np.testing.assert_array_equal(volume.data, data)
    assert volume.voxel_size == pytest.approx(7.5)
    with mrcfile.open(tmp_path / "v.mrc") as mrc:
        assert (mrc.header.nx, mrc.header.ny, mrc.header.nz) == (4, 3, 2)


def test_unknown_voxel_size_is_none(tmp_path: Path) -> None:
    write_volume(tmp_path / "v.mrc", np.random.rand(3, 3, 3), None)
    assert read_volume(tmp_path / "v.mrc").voxel_size is None


def test_coordinates_round_trip_with_scores(tmp_path: Path) -> None:
    table = ParticleTable([[1.5, 2, 3], [4, 5, 6.25]], ["ribosome", "tric"], [0.9, 0.25])
    write_particles(tmp_path / "p.tsv", table)
    back = read_particles(tmp_path / "p.tsv")
    np.testing.assert_allclose(back.xyz, table.xyz)
    assert list(back.classes) == ["ribosome", "tric"]
    np.testing.assert_allclose(back.scores, [0.9, 0.25])
    assert (tmp_path / "p.tsv").read_text().splitlines()[0] == "x\ty\tz\tclass\tscore"


def test_headerless_file_is_one_class(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("1 2 3\n4 5 6\n")
    table = read_particles(tmp_path / "p.txt", default_class="picked")
    np.testing.assert_allclose(table.xyz, [[1, 2, 3], [4, 5, 6]])
    assert list(table.classes) == ["picked", "picked"]
    assert table.scores is None


@pytest.mark.parametrize("text, message", [
    ("", "holds no coordinates"),
    ("x\ty\tz\tclass\n", "holds no coordinates"),
    ("a\tb\tc\n1\t2\t3\n", "lacks column"),
    ("x\ty\tz\n1\tfoo\t3\n", "cannot read numbers"),
    ("x\ty\tz\n1\tnan\t3\n", "NaN"),
])
def test_bad_coordinate_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "p.tsv").write_text(text)
    with pytest.raises(SasiInputError, match=message):
        read_particles(tmp_path / "p.tsv")


def test_drop_outside_counts_dropped() -> None:
    table = ParticleTable([[1, 1, 1], [47.6, 1, 1], [-1, 0, 0], [47.4, 39, 31]], ["a"] * 4)
    with pytest.warns(SasiWarning, match="labels.tsv: dropped 2 of 4"):
        kept = drop_outside(table, (32, 40, 48), "labels.tsv")
    assert len(kept) == 2


def test_sphere_mask_radius_and_classes() -> None:
    table = ParticleTable([[10, 10, 10], [25, 10, 10]], ["a", "b"])
    labels = sphere_label_volume((20, 20, 40), table, ["a", "b"], [3.0, 2.0])
    assert labels[10, 10, 10] == 1 and labels[10, 10, 25] == 2
    assert labels[10, 10, 13] == 1 and labels[10, 10, 14] == 0
    assert labels[10, 12, 25] == 2 and labels[10, 13, 25] == 0
    assert (labels == 1).sum() == sum(
        1 for dz in range(-3, 4) for dy in range(-3, 4) for dx in range(-3, 4)
        if dz * dz + dy * dy + dx * dx <= 9)


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.tsv") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        write_particles(tmp_path / "p.tsv", ParticleTable([[1, 2, 3]], ["a"]))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "p.tsv").stat().st_mode) == mode


def test_partials_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".m.log.jsonl.0a1b2c3d.part.jsonl"
    stale.write_text("{}")
    (tmp_path / "other.part.jsonl").write_text("{}")
    assert remove_partials(tmp_path / "m.log.jsonl") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.part.jsonl"]


def test_duplicates_are_removed_with_a_warning() -> None:
    table = ParticleTable([[10, 12, 8], [10.2, 11.9, 8], [20, 30, 20], [10, 12, 8]],
                          ["a", "a", "b", "a"])
    with pytest.warns(SasiWarning, match=r"removed 2 duplicate particle\(s\)"):
        kept = drop_duplicates(table, "labels.tsv")
    assert len(kept) == 2 and list(kept.classes) == ["a", "b"]


def test_unknown_voxel_size_is_an_explicit_warning(tmp_path: Path) -> None:
    write_volume(tmp_path / "v.mrc", np.random.rand(24, 24, 24), None)
    with pytest.warns(SasiWarning, match="holds no voxel size"):
        assert read_tomogram(tmp_path / "v.mrc", 24).voxel_size is None


def test_header_checks_need_no_data(tmp_path: Path) -> None:
    write_volume(tmp_path / "v.mrc", np.random.rand(24, 30, 40), 7.5)
    info = inspect_mrc(tmp_path / "v.mrc")
    assert info.shape == (24, 30, 40) and info.voxel_size == pytest.approx(7.5)

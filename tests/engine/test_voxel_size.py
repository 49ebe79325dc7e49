"""``--voxel-size``: the caller's voxel size (Scipion's sampling rate) replaces the MRC
header's for train, pretrain and pick, with a one-line warning when they disagree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.mrc_io import write_volume

HEADER_A = 1.0
"""Voxel size the tomograms' headers claim, Å (a common wrong header)."""
TRUE_A = 10.0
"""Voxel size the caller knows, Å."""


@pytest.fixture
def wrong_header(tmp_path: Path) -> tuple[Path, Path]:
    """A 32 x 40 x 48 tomogram whose header says 1 Å, and two labels."""
    tomo = tmp_path / "tomo.mrc"
    write_volume(tomo, np.random.default_rng(0).normal(size=(32, 40, 48)).astype(np.float32),
                 HEADER_A)
    labels = tmp_path / "labels.tsv"
    write_particles(labels, ParticleTable([[10, 12, 8], [30, 20, 16]], ["a", "a"]))
    return tomo, labels


def _train(tomo: Path, labels: Path, out: Path, *extra: str) -> int:
    return main(["train", "--tomogram", str(tomo), "--coords", str(labels), "--radius", "3",
                 "--out", str(out), "--iterations", "2", "--device", "cpu", "--ssl", "none",
                 *extra])


def test_voxel_size_replaces_the_header_and_warns(wrong_header, tmp_path, capsys) -> None:
    tomo, labels = wrong_header
    model = tmp_path / "model.pt"
    assert _train(tomo, labels, model, "--voxel-size", str(TRUE_A)) == 0
    err = capsys.readouterr().err
    assert err.count("the header says 1.000 Å per voxel, --voxel-size says 10.000 Å") == 1
    assert json.loads(model.with_suffix(".json").read_text())["voxel_size"] == TRUE_A
    picks = tmp_path / "picks.tsv"
    assert main(["pick", "--model", str(model), "--tomogram", str(tomo), "--out", str(picks),
                 "--device", "cpu", "--voxel-size", str(TRUE_A)]) == 0
    assert picks.exists()
    assert "--voxel-size says 10.000" in capsys.readouterr().err


def test_without_the_option_the_header_counts(wrong_header, tmp_path, capsys) -> None:
    """Control: the header's 1 Å goes into the model and a 10 Å pick is refused (ten
    times apart: more than picking resamples on the fly)."""
    tomo, labels = wrong_header
    model = tmp_path / "model.pt"
    assert _train(tomo, labels, model) == 0
    assert "--voxel-size" not in capsys.readouterr().err
    assert json.loads(model.with_suffix(".json").read_text())["voxel_size"] == HEADER_A
    assert main(["pick", "--model", str(model), "--tomogram", str(tomo), "--out",
                 str(tmp_path / "p.tsv"), "--device", "cpu", "--voxel-size", str(TRUE_A)]) == 2
    assert "voxel size 10.000 Å is 10.0 times coarser than the model's 1.000 Å" in (
        capsys.readouterr().err)


def test_pretrain_records_the_given_voxel_size(wrong_header, tmp_path) -> None:
    out = tmp_path / "pre.pt"
    assert main(["pretrain", "--tomogram", str(wrong_header[0]), "--out", str(out),
                 "--iterations", "1", "--device", "cpu", "--voxel-size", str(TRUE_A)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["voxel_size"] == TRUE_A


@pytest.mark.parametrize("value", ["0", "-3", "nan"])
def test_bad_voxel_size_is_refused(wrong_header, tmp_path, capsys, value) -> None:
    assert _train(*wrong_header, tmp_path / "m.pt", "--voxel-size", value) == 2
    assert "--voxel-size" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()

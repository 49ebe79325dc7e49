"""Every bad input of the ``sasi`` command: one line naming the fix, exit 2, no output."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.errors import ERROR_FILE_VARIABLE
from sasi_scipion.engine.model_file import ModelMetadata, save_model
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.normalize import NORMALISATION


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """Run ``sasi argv``; assert exit 2 and a one-line error containing ``fragments``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    line = err[-1]
    assert line.startswith("sasi: error: ")
    for fragment in fragments:
        assert fragment in line, line
    return line


def _train(tomo: Path, coords: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--tomogram", str(tomo), "--coords", str(coords), "--out", str(out),
            "--iterations", "1", "--device", "cpu", *extra]


def _no_output(folder: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_tomogram(tmp_path: Path, small_labels: Path, capsys) -> None:
    out = tmp_path / "m.pt"
    _fails(_train(tmp_path / "nope.mrc", small_labels, out, "--radius", "3"), capsys,
           "nope.mrc", "no such file")
    _no_output(tmp_path, out)


def test_unreadable_mrc(tmp_path: Path, small_labels: Path, capsys) -> None:
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"this is not an MRC file" * 10)
    out = tmp_path / "m.pt"
    _fails(_train(bad, small_labels, out, "--radius", "3"), capsys, "not a readable MRC")
    _no_output(tmp_path, out)


def test_non_3d_mrc(tmp_path: Path, small_labels: Path, capsys) -> None:
    image = tmp_path / "image.mrc"
    write_volume(image, np.random.rand(1, 40, 48).astype(np.float32), 10.0)
    _fails(_train(image, small_labels, tmp_path / "m.pt", "--radius", "3"), capsys,
           "expected a 3D volume")


@pytest.mark.parametrize("value, message", [(np.nan, "NaN"), (1.0, "same value")])
def test_nan_or_constant_volume(tmp_path: Path, small_labels: Path, capsys, value, message) -> None:
    data = np.ones((32, 40, 48), dtype=np.float32)
    data[3, 3, 3] = value
    write_volume(tmp_path / "t.mrc", data, 10.0)
    _fails(_train(tmp_path / "t.mrc", small_labels, tmp_path / "m.pt", "--radius", "3"),
           capsys, message)
    _no_output(tmp_path, tmp_path / "m.pt")


def test_class_without_radius(small_tomogram: Path, small_labels: Path, tmp_path: Path,
                              capsys) -> None:
    _fails(_train(small_tomogram, small_labels, tmp_path / "m.pt", "--radius", "a=3"), capsys,
           "class 'b' has no radius", "--radius b=R")


def test_empty_label_file(small_tomogram: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("x\ty\tz\tclass\n")
    _fails(_train(small_tomogram, empty, tmp_path / "m.pt", "--radius", "3"), capsys,
           "holds no coordinates")


def test_all_coordinates_outside(small_tomogram: Path, tmp_path: Path, capsys) -> None:
    coords = tmp_path / "far.tsv"
    write_particles(coords, ParticleTable([[100, 100, 100], [-5, 2, 2]], ["a", "a"]))
    line = _fails(_train(small_tomogram, coords, tmp_path / "m.pt", "--radius", "3"), capsys,
                  "no labelled particle lies inside")
    assert "units" in line


def test_outside_coordinates_are_dropped_with_a_count(small_tomogram: Path, tmp_path: Path,
                                                      capsys) -> None:
    coords = tmp_path / "some.tsv"
    write_particles(coords, ParticleTable([[10, 12, 8], [100, 2, 2], [20, 30, 20]], ["a"] * 3))
    out = tmp_path / "m.pt"
    assert main(_train(small_tomogram, coords, out, "--radius", "3")) == 0
    assert "dropped 1 of 3 particle(s) outside the volume" in capsys.readouterr().err
    assert out.exists()


def test_model_of_another_format(small_tomogram: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    out = tmp_path / "p.tsv"
    _fails(["pick", "--model", str(other), "--tomogram", str(small_tomogram), "--out", str(out),
            "--device", "cpu"], capsys, "not a SaSi model file")
    _no_output(tmp_path, out)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_model_with_code_is_not_run(small_tomogram: Path, tmp_path: Path, capsys) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Payload()))
    _fails(["pick", "--model", str(evil), "--tomogram", str(small_tomogram),
            "--out", str(tmp_path / "p.tsv"), "--device", "cpu"], capsys, "not a SaSi model")
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_request_without_cuda(small_tomogram: Path, small_labels: Path, tmp_path: Path,
                                   capsys) -> None:
    _fails(_train(small_tomogram, small_labels, tmp_path / "m.pt", "--radius", "3")[:-2]
           + ["--device", "cuda"], capsys, "no usable CUDA GPU", "--device cpu")


def test_voxel_sizes_too_far_apart_to_resample(small_labels: Path, tmp_path: Path,
                                               capsys) -> None:
    data = np.random.default_rng(1).normal(size=(32, 40, 48)).astype(np.float32)
    write_volume(tmp_path / "a.mrc", data, 10.0)
    write_volume(tmp_path / "b.mrc", data, 2.0)
    argv = ["train", "--tomogram", str(tmp_path / "a.mrc"), "--coords", str(small_labels),
            "--tomogram", str(tmp_path / "b.mrc"), "--coords", str(small_labels),
            "--radius", "3", "--out", str(tmp_path / "m.pt"), "--device", "cpu"]
    _fails(argv, capsys, f"b.mrc: voxel size 2.000 Å is 5.0 times finer than {tmp_path}/a.mrc's "
           "10.000 Å", "if the header is wrong give --voxel-size")


def test_unpaired_coordinates(small_tomogram: Path, small_labels: Path, tmp_path: Path,
                              capsys) -> None:
    argv = ["train", "--tomogram", str(small_tomogram), "--coords", str(small_labels),
            "--coords", str(small_labels), "--radius", "3", "--out", str(tmp_path / "m.pt")]
    _fails(argv, capsys, "one coordinate file per tomogram")


def test_bad_radius(small_tomogram: Path, small_labels: Path, tmp_path: Path, capsys) -> None:
    _fails(_train(small_tomogram, small_labels, tmp_path / "m.pt", "--radius", "a=-2"), capsys,
           "positive number of voxels")


def test_failed_pick_keeps_the_previous_outputs_and_says_why_in_the_error_file(
        tmp_path: Path, capsys, monkeypatch) -> None:
    model = tmp_path / "m.pt"
    save_model(model, build_backbone("deepfinder", 2), ModelMetadata(
        arch="deepfinder", arch_params={}, classes=["a"], radii=[3.0], window=24,
        voxel_size=10.0, normalisation=NORMALISATION, pretrained_only=False, iterations=1))
    write_volume(tmp_path / "t2.mrc", np.random.default_rng(2).normal(size=(32, 40, 48)), 2.0)
    (tmp_path / "p.tsv").write_text("x\ty\tz\tclass\n")
    (tmp_path / "p.log.jsonl").write_text('{"tile": 1}\n')
    monkeypatch.setenv(ERROR_FILE_VARIABLE, str(tmp_path / "why.error"))
    line = _fails(["pick", "--model", str(model), "--tomogram", str(tmp_path / "t2.mrc"),
                   "--out", str(tmp_path / "p.tsv"), "--device", "cpu"], capsys,
                  "than the model's 10.000 Å")
    assert (tmp_path / "why.error").read_text() == line.removeprefix("sasi: error: ") + "\n"
    assert (tmp_path / "p.tsv").read_text() == "x\ty\tz\tclass\n"
    assert (tmp_path / "p.log.jsonl").read_text() == '{"tile": 1}\n'
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]

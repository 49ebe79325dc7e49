"""Coordinate formats (``engine/formats``, ``docs/formats.md``): each format read from a
hand-written file whose true voxel positions are known, each written and read back,
detection by content, and the errors of ``sasi convert`` and ``sasi pick --format``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import ParticleTable, read_particles, write_particles
from sasi_scipion.engine.formats import (
    EXTENSIONS,
    FORMATS,
    Reference,
    detect_format,
    read_coordinates,
    write_coordinates,
)
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.training_data import ANY_CLASS, plan_labels

SHAPE = (40, 60, 80)
"""(z, y, x) voxels of the reference tomogram."""
VOXEL = 10.0
REFERENCE = Reference(shape=SHAPE, voxel_size=VOXEL, name="TS_01")
CENTRE_VOXEL = (39.0, 29.0, 19.0)
"""The 0-based voxel (x, y, z) that RELION 5 puts at centred (0, 0, 0) Å:
N / 2 - 1 along each axis."""


def _star(rows: list[str], columns: list[str]) -> str:
    header = "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(columns))
    return "\ndata_particles\n\nloop_\n" + header + "".join(r + "\n" for r in rows)


HAND_WRITTEN = {
    "relion5": (_star(["TS_01 0 0 0 1", "TS_01 -390 -290 -190 2", "TS_02 50 50 50 1",
                       "TS_01 100 0 0 1"],
                      ["rlnTomoName", "rlnCenteredCoordinateXAngst",
                       "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst",
                       "rlnClassNumber"]),
                [CENTRE_VOXEL, (0, 0, 0), (49, 29, 19)], ["1", "2", "1"]),
    "relion": (_star(["1 1 1", "11.5 21 31"],
                     ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]),
               [(0, 0, 0), (10.5, 20, 30)], ["picked", "picked"]),
    "dynamo": (" ".join(["1", "1", "0", "0.5", "0", "-1"] + ["0"] * 3 + ["0.7"] + ["0"] * 9
                        + ["1", "0", "3", "0", "11", "21", "31"] + ["0"] * 9) + "\n",
               [(10.5, 20, 29)], ["3"]),
    "shrec": ("4V94 12 34 56 10 20 30\n1s3x 0 1 2.5 0 0 0\n",
              [(12, 34, 56), (0, 1, 2.5)], ["4V94", "1s3x"]),
    "copick": (json.dumps({"pickable_object_name": "ribosome", "run_name": "TS_01",
                           "unit": "angstrom", "points": [
                               {"location": {"x": 100.0, "y": 0.0, "z": 255.0},
                                "score": 0.5}]}),
               [(10, 0, 25.5)], ["ribosome"]),
    "tsv": ("x\ty\tz\tclass\n1\t2\t3\tdisc\n", [(1, 2, 3)], ["disc"]),
}
"""Per format: a file's text, the true 0-based voxels (x, y, z) it holds for
``REFERENCE`` (TS_02's particle excluded), and their class names."""


@pytest.mark.parametrize("fmt", sorted(HAND_WRITTEN))
def test_hand_written_file_gives_the_known_voxels(tmp_path: Path, fmt: str) -> None:
    text, voxels, classes = HAND_WRITTEN[fmt]
    path = tmp_path / f"labels{EXTENSIONS[fmt]}"
    path.write_text(text)
    assert detect_format(path) == fmt
    table = read_coordinates(path, REFERENCE, default_class="picked")
    np.testing.assert_allclose(table.xyz, voxels, atol=1e-9)
    assert list(table.classes) == classes


@pytest.mark.parametrize("name, rows", [("TS_02", 1), ("rec_TS_02", 1), ("xTS_02", 0)])
def test_relion_rows_of_the_named_tomogram(tmp_path: Path, name: str, rows: int) -> None:
    path = tmp_path / "p.star"
    path.write_text(HAND_WRITTEN["relion5"][0])
    reference = Reference(shape=SHAPE, voxel_size=VOXEL, name=name)
    if rows:
        np.testing.assert_allclose(read_coordinates(path, reference).xyz, [[44, 34, 24]])
    else:
        with pytest.raises(Exception, match="none is named 'xTS_02'"):
            read_coordinates(path, reference)


def test_relion_origin_shift_is_subtracted(tmp_path: Path) -> None:
    path = tmp_path / "p.star"
    path.write_text(_star(["100 0 0 20 0 -10"], [
        "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst", "rlnOriginXAngst", "rlnOriginYAngst",
        "rlnOriginZAngst"]))
    table = read_coordinates(path, REFERENCE)
    np.testing.assert_allclose(table.xyz, [[39 + 8, 29, 19 + 1]])


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_positions_and_scores(tmp_path: Path, fmt: str) -> None:
    classes = ["disc"] * 2 if fmt == "copick" else ["rod", "disc"]
    table = ParticleTable([[1.25, 2.5, 3.0], [79.0, 0.0, 39.5]], classes, [0.9, 0.25])
    path = tmp_path / f"p{EXTENSIONS[fmt]}"
    write_coordinates(path, table, fmt, REFERENCE)
    assert detect_format(path) == fmt
    back = read_coordinates(path, REFERENCE)
    np.testing.assert_allclose(back.xyz, table.xyz, atol=1e-3)
    expected = {"relion5": ["2", "1"], "relion": ["2", "1"], "dynamo": ["2", "1"]}
    assert list(back.classes) == expected.get(fmt, classes)
    if fmt != "shrec":  # SHREC locations carry no score
        np.testing.assert_allclose(back.scores, table.scores, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file_round_trips_as_no_particle(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"p{EXTENSIONS[fmt]}"
    write_coordinates(path, ParticleTable.empty(), fmt, REFERENCE)
    assert len(read_coordinates(path, REFERENCE, allow_empty=True)) == 0
    with pytest.raises(Exception, match="holds no coordinates"):
        read_coordinates(path, REFERENCE)


def test_headerless_txt_is_still_tsv(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("1 2 3\n4 5 6\n")
    assert detect_format(tmp_path / "p.txt") == "tsv"


def test_training_reads_star_labels_like_tsv(tmp_path: Path) -> None:
    tomogram = tmp_path / "TS_01.mrc"
    write_volume(tomogram, np.random.default_rng(0).normal(size=SHAPE).astype(np.float32),
                 VOXEL)
    table = ParticleTable([[10, 12, 8], [30, 20, 16], [50, 40, 30]], ["a", "a", "b"])
    write_particles(tmp_path / "l.tsv", table)
    write_coordinates(tmp_path / "l.star", table, "relion5", REFERENCE)
    plans = [plan_labels([str(tomogram)], [str(tmp_path / name)], {ANY_CLASS: 4.0}, 24)
             for name in ("l.tsv", "l.star")]
    np.testing.assert_allclose(plans[1].particles[0].xyz, plans[0].particles[0].xyz,
                               atol=1e-6)
    assert plans[1].class_names == ["1", "2"] and plans[0].class_names == ["a", "b"]


def _convert(*args: str) -> int:
    return main(["convert", *args])


def test_convert_star_to_tsv_and_back(tmp_path: Path, capsys) -> None:
    tomogram = tmp_path / "TS_01.mrc"
    write_volume(tomogram, np.random.default_rng(0).normal(size=SHAPE).astype(np.float32),
                 VOXEL)
    star = tmp_path / "in.star"
    star.write_text(HAND_WRITTEN["relion5"][0])
    assert _convert(str(star), str(tmp_path / "out.tsv"), "--tomogram", str(tomogram)) == 0
    table = read_particles(tmp_path / "out.tsv")
    np.testing.assert_allclose(table.xyz, HAND_WRITTEN["relion5"][1])
    assert _convert(str(tmp_path / "out.tsv"), str(tmp_path / "back.star"),
                    "--tomogram", str(tomogram)) == 0
    back = read_coordinates(tmp_path / "back.star", REFERENCE)
    np.testing.assert_allclose(back.xyz, table.xyz, atol=1e-4)
    assert _convert(str(tmp_path / "out.tsv"), str(tmp_path / "o.json"), "--format",
                    "copick") == 2  # several classes, and no voxel size
    shrec = tmp_path / "l.txt"
    shrec.write_text("1 2 3\n")
    assert _convert(str(shrec), str(tmp_path / "named.tsv"), "--class", "ribosome") == 0
    assert list(read_particles(tmp_path / "named.tsv").classes) == ["ribosome"]
    assert _convert(str(tmp_path / "named.tsv"), str(tmp_path / "one.json"),
                    "--voxel-size", "5") == 0
    payload = json.loads((tmp_path / "one.json").read_text())
    assert payload["points"][0]["location"] == {"x": 5.0, "y": 10.0, "z": 15.0}
    assert "wrote 1 particle(s) as copick" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["in.star", "out.tsv"], "needs the tomogram's voxel size (Å) and none is known; give "
                             "--tomogram T (its shape and voxel size) or --voxel-size A"),
    (["in.star", "out.tsv", "--voxel-size", "10"], "needs the tomogram's size"),
    (["in.tsv", "out.star"], "the relion5 format needs the tomogram's voxel size"),
    (["in.tsv", "out.json", "--voxel-size", "10"], "a copick picks file holds one object"),
    (["in.tsv", "out.xyz"], "OUT out.xyz: a coordinate file must end in .tsv (or .star"),
    (["in.tsv", "out.tsv", "--format", "dynamo"], "a dynamo file must end in .tbl"),
    (["in.tsv", "in.tsv"], "is also the IN input"),
    (["in.tsv", "out.tsv", "--voxel-size", "-1"], "expected a finite number above 0"),
    (["in.tbl", "out.tsv"], "holds particles of 2 tomograms (column 20: 1, 2)"),
    (["two.star", "out.tsv", "--tomogram", "other.mrc"],
     "holds particles of 2 tomograms (TS_01, TS_02) and none is named 'other'"),
    (["two.star", "out.tsv", "--voxel-size", "10"],
     "(TS_01, TS_02); give the tomogram to choose, its file named after its rlnTomoName"),
])
def test_convert_refuses_in_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capsys,
                                                        args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("in.star").write_text(HAND_WRITTEN["relion5"][0].replace("TS_02", "TS_01"))
    Path("two.star").write_text(HAND_WRITTEN["relion5"][0])
    write_particles(Path("in.tsv"), ParticleTable([[1, 2, 3], [4, 5, 6]], ["a", "b"]))
    row = ["1"] * 35
    Path("in.tbl").write_text(" ".join(row) + "\n" + " ".join(row[:19] + ["2"] + row[20:]))
    write_volume(Path("other.mrc"), np.ones((30, 30, 30), np.float32), VOXEL)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _convert(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sasi: error:") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_pick_refuses_a_format_its_tomogram_cannot_place(tmp_path: Path, capsys) -> None:
    """Checked before the model is even read: a tomogram without a voxel size cannot
    give RELION 5 Å, and --format must match the extension."""
    tomogram = tmp_path / "t.mrc"
    write_volume(tomogram, np.random.default_rng(0).normal(size=(30, 30, 30)).astype(
        np.float32), None)
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    common = ["pick", "--model", str(model), "--tomogram", str(tomogram)]
    assert main([*common, "--out", str(tmp_path / "p.star")]) == 2
    assert "relion5 format needs the tomogram's voxel size" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "p.tsv"), "--format", "shrec"]) == 2
    assert "a shrec file must end in .txt" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "t.mrc"]


def test_pick_to_copick_refuses_a_model_of_several_classes_before_picking(
        tmp_path: Path, capsys) -> None:
    from sasi_scipion.engine.model_file import ModelMetadata, save_model
    from sasi_scipion.engine.models import build_backbone
    from sasi_scipion.engine.normalize import NORMALISATION

    tomogram = tmp_path / "t.mrc"
    write_volume(tomogram, np.random.default_rng(0).normal(size=(30, 30, 30)).astype(
        np.float32), VOXEL)
    meta = ModelMetadata(arch="deepfinder", arch_params={}, classes=["a", "b"],
                         radii=[3.0, 3.0], window=24, voxel_size=VOXEL,
                         normalisation=NORMALISATION, pretrained_only=False, iterations=1)
    save_model(tmp_path / "m.pt", build_backbone("deepfinder", 3), meta)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["pick", "--model", str(tmp_path / "m.pt"), "--tomogram", str(tomogram),
                 "--out", str(tmp_path / "p.json"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "a copick picks file holds one object" in err and "pick t.mrc" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_evaluate_reads_star_picks_against_shrec_truth(tmp_path: Path, capsys) -> None:
    """The occupancy map gives the shape and voxel size the RELION 5 picks need."""
    truth = ParticleTable([[10, 12, 8], [30, 20, 16]], ["a", "b"])
    occupancy = np.zeros(SHAPE, dtype=np.int16)
    for row, (x, y, z) in enumerate(truth.xyz.astype(int)):
        occupancy[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = row + 1
    write_volume(tmp_path / "occ.mrc", occupancy, VOXEL)
    write_coordinates(tmp_path / "truth.txt", truth, "shrec")
    write_coordinates(tmp_path / "picks.star", truth.subset(np.array([True, False])),
                      "relion5", REFERENCE)
    args = ["evaluate", "--picks", str(tmp_path / "picks.star"), "--truth",
            str(tmp_path / "truth.txt")]
    assert main([*args, "--occupancy", str(tmp_path / "occ.mrc"), "--json"]) == 0
    pooled = json.loads(capsys.readouterr().out)["pooled"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (1, 0, 1)
    assert main([*args, "--radius", "3"]) == 2
    assert "give --tomogram T" in capsys.readouterr().err

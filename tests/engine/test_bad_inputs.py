"""The table of bad inputs (``docs/errors.md``): each one goes through the ``sasi``
command and must end with exit status 2 and one ``sasi: error:`` line holding the
expected words, before any work, writing no file (no output, no log, no temporary
file) and leaving every input byte-identical."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.model_file import ModelMetadata, save_model
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.normalize import NORMALISATION

SHAPE = (32, 48, 48)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def _meta(**changes: object) -> ModelMetadata:
    values = dict(arch="deepfinder", arch_params={}, classes=["a", "b"], radii=[3.0, 3.0],
                  window=24, voxel_size=10.0, normalisation=NORMALISATION,
                  pretrained_only=False, iterations=1)
    values.update(changes)
    return ModelMetadata(**values)


def _mrc(path: Path, data: np.ndarray, voxel: tuple[float, float, float] = (10, 10, 10),
         stack: bool = False) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel
        if stack:
            mrc.set_image_stack()


def _edited(source: Path, target: Path, edit) -> None:
    payload = torch.load(source, weights_only=True)
    edit(payload)
    torch.save(payload, target)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every input of the table, good and bad, in one folder."""
    d = tmp_path_factory.mktemp("inputs")
    noise = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    write_volume(d / "t.mrc", noise, 10.0)
    write_volume(d / "t2.mrc", noise, 2.0)
    labels = ParticleTable([[10, 12, 8], [30, 20, 16], [20, 30, 20], [36, 10, 24]],
                           ["a", "a", "b", "b"])
    write_particles(d / "l.tsv", labels)
    write_particles(d / "lab.json", labels)
    write_particles(d / "lost.tsv", ParticleTable([[10, 12, 8], [90, 90, 90]], ["a", "b"]))
    write_particles(d / "far.tsv", ParticleTable([[100, 100, 100]], ["a"]))
    write_particles(d / "clash.tsv", ParticleTable([[10, 12, 8], [10.2, 12, 8]], ["a", "b"]))
    (d / "empty.tsv").write_text("x\ty\tz\tclass\n")
    write_particles(d / "onlybg.tsv", ParticleTable([[10, 12, 8]], ["background"]))
    torch.manual_seed(0)
    save_model(d / "model.pt", build_backbone("deepfinder", 3), _meta())
    save_model(d / "pre.pt", build_backbone("deepfinder", 2),
               _meta(classes=[], radii=[], pretrained_only=True))
    (d / "empty.pt").write_bytes(b"")
    (d / "text.pt").write_text("these are not weights\n" * 20)
    data = (d / "model.pt").read_bytes()
    (d / "cut.pt").write_bytes(data[: len(data) // 2])
    (d / "evil.pt").write_bytes(pickle.dumps(_Payload()))
    torch.save({"a": _Payload()}, d / "evilzip.pt")
    torch.save({"weights": torch.zeros(3)}, d / "other.pt")
    _edited(d / "model.pt", d / "nokey.pt", lambda p: p.pop("classes"))
    _edited(d / "model.pt", d / "badradius.pt", lambda p: p.update(radii=[float("inf"), 3.0]))

    def wrong_head(payload: dict) -> None:
        state = payload["state_dict"]
        key = next(k for k, v in state.items() if v.shape[:1] == (3,))
        state[key] = torch.zeros(5, *state[key].shape[1:])

    _edited(d / "model.pt", d / "head.pt", wrong_head)
    _mrc(d / "complex.mrc", (noise + 1j * noise).astype(np.complex64))
    _mrc(d / "stack.mrc", noise, stack=True)
    _mrc(d / "tiny.mrc", noise[:10, :10, :10].copy())
    _mrc(d / "negative.mrc", noise, voxel=(-10, -10, -10))
    _mrc(d / "noncubic.mrc", noise, voxel=(10, 10, 12))
    _mrc(d / "image.mrc", noise[:1].copy())
    (d / "cut.mrc").write_bytes((d / "t.mrc").read_bytes()[:5000])
    (d / "text.mrc").write_text("not a map\n" * 200)
    header = bytearray((d / "t.mrc").read_bytes())
    header[12:16] = np.int32(7).tobytes()
    (d / "mode7.mrc").write_bytes(bytes(header))
    nan = noise.copy()
    nan[3, 3, 3] = np.nan
    write_volume(d / "nan.mrc", nan, 10.0)
    write_volume(d / "flat.mrc", np.ones(SHAPE, np.float32), 10.0)
    (d / "picks.tsv").mkdir()
    (d / "dir.pt").mkdir()
    (d / "tlink.tsv").symlink_to(d / "t.mrc")
    (d / "tlink.pt").symlink_to(d / "t.mrc")
    (d / "busy.pt.ckpt").write_bytes(b"left by a killed run")
    (d / "bad.pt.ckpt").write_text("not a checkpoint")
    return d


def _train(tomogram: str = "t.mrc", coords: str = "l.tsv", out: str = "m.pt") -> list[str]:
    return ["train", "--tomogram", f"{{d}}/{tomogram}", "--coords", f"{{d}}/{coords}",
            "--out", f"{{d}}/{out}", "--iterations", "1", "--device", "cpu"]


def _pick(model: str = "model.pt", tomogram: str = "t.mrc", out: str = "p.tsv") -> list[str]:
    return ["pick", "--model", f"{{d}}/{model}", "--tomogram", f"{{d}}/{tomogram}",
            "--out", f"{{d}}/{out}", "--device", "cpu"]


def _pretrain(tomogram: str = "t.mrc", out: str = "m.pt") -> list[str]:
    return ["pretrain", "--tomogram", f"{{d}}/{tomogram}", "--out", f"{{d}}/{out}",
            "--iterations", "1", "--device", "cpu"]


R3 = ["--radius", "3"]
CASES = [
    # outputs
    ("pick --out is the tomogram", _pick(out="t.mrc"), ["must end in .tsv"]),
    ("pick --out is the model", _pick(out="model.pt"), ["must end in .tsv"]),
    ("pick --out links to the tomogram", _pick(out="tlink.tsv"), ["also the --tomogram input"]),
    ("pick --out is a folder", _pick(out="picks.tsv"), ["existing folder"]),
    ("pick --out below a file", _pick(out="l.tsv/p.tsv"), ["is a file, not a folder"]),
    ("train --out is --pretrained", [*_train(out="model.pt"), *R3, "--pretrained", "{d}/model.pt"],
     ["also the --pretrained input"]),
    ("train side-car is --coords", [*_train(coords="lab.json", out="lab.pt"), *R3],
     ["would write", "lab.json", "also the --coords input"]),
    ("train --out is a folder", [*_train(out="dir.pt"), *R3], ["existing folder"]),
    ("train --out not .pt", [*_train(out="m.tsv"), *R3], ["must end in .pt"]),
    ("pretrain --out links to the tomogram", _pretrain(out="tlink.pt"),
     ["also the --tomogram input"]),
    ("checkpoint left, no --resume", [*_train(out="busy.pt"), *R3], ["add --resume", "delete"]),
    ("damaged checkpoint with --resume", [*_train(out="bad.pt"), *R3, "--resume"],
     ["not a SaSi checkpoint", "delete"]),
    # numbers
    ("radius inf", [*_train(), "--radius", "inf"], ["finite, positive"]),
    ("radius nan", [*_train(), "--radius", "nan"], ["finite, positive"]),
    ("radius 1e5", [*_train(), "--radius", "1e5"], ["does not fit the 24-voxel window"]),
    ("radius 1e9", [*_train(), "--radius", "1e9"], ["does not fit", "radius in voxels"]),
    ("radius 200", [*_train(), "--radius", "200"], ["does not fit", "radius in voxels"]),
    ("radius 30", [*_train(), "--radius", "a=30", "--radius", "b=3"],
     ["class 'a'", "at most 16", "bin the tomograms and coordinates by 2"]),
    ("radius 0.5", [*_train(), "--radius", "0.5"], ["under 1 voxel"]),
    ("radius negative", [*_train(), "--radius", "a=-2"], ["positive number of voxels"]),
    ("radius of an absent class", [*_train(), *R3, "--radius", "c=3"],
     ["no particle of class 'c'", "remove the option"]),
    ("class without radius", [*_train(), "--radius", "a=3"], ["class 'b' has no radius"]),
    ("only background points", [*_train(coords="onlybg.tsv"), *R3],
     ["only 'background' points", "label at least one particle"]),
    ("radius for background points", [*_train(), *R3, "--radius", "background=3"],
     ["are not particles", "remove the option"]),
    ("iterations 1e12", [*_train(), *R3, "--iterations", "1000000000000"], ["give 1 to 1000000"]),
    ("iterations 0", [*_train(), *R3, "--iterations", "0"], ["positive integer", "--help"]),
    ("seed negative", [*_train(), *R3, "--seed", "-1"], ["--seed -1", "from 0 to"]),
    ("learning rate nan", [*_train(), *R3, "--learning-rate", "nan"], ["--learning-rate nan"]),
    ("learning rate negative", [*_train(), *R3, "--learning-rate", "-1"], ["above 0"]),
    ("band limit 0.5", [*_train(), *R3, "--band-limit", "0.5"],
     ["--band-limit 0.5: give a finite number at least 1 and at most 4"]),
    ("prototype quantile 2", [*_pick(), "--prototype-quantile", "2"],
     ["--prototype-quantile 2: give a quantile from 0 to 1"]),
    ("min score nan", [*_pick(), "--min-score", "nan"], ["--min-score nan"]),
    ("min score 2", [*_pick(), "--min-score", "2"], ["at most 1"]),
    ("unknown network", [*_train(), *R3, "--arch", "transformer"], ["unknown network"]),
    ("unknown option", [*_train(), *R3, "--bogus"], ["unrecognized arguments"]),
    ("demo --out is a file", ["demo", "--out", "{d}/l.tsv", "--device", "cpu"], ["is a file"]),
    # model files
    ("missing model", _pick(model="none.pt"), ["no such SaSi model file"]),
    ("empty model", _pick(model="empty.pt"), ["the file is empty"]),
    ("text model", _pick(model="text.pt"), ["not a PyTorch archive"]),
    ("truncated model", _pick(model="cut.pt"), ["truncated or damaged"]),
    ("pickle attack", _pick(model="evil.pt"), ["not a PyTorch archive"]),
    ("archive with code", _pick(model="evilzip.pt"), ["holds Python objects"]),
    ("model of another format", _pick(model="other.pt"), ["not a SaSi model file"]),
    ("model without classes", _pick(model="nokey.pt"), ["classes missing"]),
    ("model with radius inf", _pick(model="badradius.pt"), ["radii"]),
    ("model with another head", _pick(model="head.pt"), ["weights do not fit"]),
    ("pre-trained model to pick", _pick(model="pre.pt"), ["train it first"]),
    ("damaged pre-trained model", [*_train(), *R3, "--pretrained", "{d}/cut.pt"],
     ["truncated or damaged"]),
    # MRC files
    ("missing tomogram", [*_train(tomogram="none.mrc"), *R3], ["no such file"]),
    ("complex tomogram", [*_train(tomogram="complex.mrc"), *R3], ["complex", "real-space"]),
    ("complex tomogram to pick", _pick(tomogram="complex.mrc"), ["complex"]),
    ("image stack", [*_train(tomogram="stack.mrc"), *R3], ["image stack"]),
    ("10 x 10 x 10 volume", [*_train(tomogram="tiny.mrc"), *R3], ["smaller than the 24-voxel"]),
    ("10 x 10 x 10 to pick", _pick(tomogram="tiny.mrc"), ["smaller than the 24-voxel"]),
    ("negative voxel size", [*_train(tomogram="negative.mrc"), *R3], ["not a positive number"]),
    ("non-cubic voxel", _pretrain(tomogram="noncubic.mrc"), ["not cubic", "10, 10, 12"]),
    ("single image", [*_train(tomogram="image.mrc"), *R3], ["expected a 3D volume"]),
    ("truncated MRC", [*_train(tomogram="cut.mrc"), *R3], ["truncated", "copy"]),
    ("text as MRC", _pretrain(tomogram="text.mrc"), ["not a readable MRC file"]),
    ("unsupported MRC mode", _pretrain(tomogram="mode7.mrc"), ["mode 7 is not supported"]),
    ("NaN tomogram", [*_train(tomogram="nan.mrc"), *R3], ["NaN"]),
    ("constant tomogram", _pretrain(tomogram="flat.mrc"), ["same value"]),
    ("tomogram given twice", [*_pretrain(), "--tomogram", "{d}/t.mrc"], ["already given"]),
    ("unlabelled is the labelled one", [*_train(), *R3, "--unlabelled", "{d}/t.mrc"],
     ["already given"]),
    ("voxel sizes too far apart",
     [*_train(), "--tomogram", "{d}/t2.mrc", "--coords", "{d}/l.tsv", *R3],
     ["5.0 times finer", "--voxel-size"]),
    # coordinates
    ("a class lost outside", [*_train(coords="lost.tsv"), *R3], ["class 'b'", "outside"]),
    ("every particle outside", [*_train(coords="far.tsv"), *R3], ["no labelled particle"]),
    ("one voxel, two classes", [*_train(coords="clash.tsv"), *R3], ["labelled both"]),
    ("no coordinates", [*_train(coords="empty.tsv"), *R3], ["holds no coordinates"]),
    ("unpaired coordinates", [*_train(), "--coords", "{d}/l.tsv", *R3],
     ["one coordinate file per tomogram"]),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "folder" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("argv, words", [(argv, words) for _, argv, words in CASES],
                         ids=[name for name, _, _ in CASES])
def test_bad_input_is_refused(folder: Path, capsys: pytest.CaptureFixture[str],
                              argv: list[str], words: list[str]) -> None:
    before = _snapshot(folder)
    assert main([a.format(d=folder) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines()
             if not line.startswith(f"sasi {argv[0]}: host=")]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sasi: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert "weights_only" not in lines[0]
    assert "code ran" not in captured.out
    assert _snapshot(folder) == before


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40

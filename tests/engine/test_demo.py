"""``sasi demo`` on a small data set: its files and its F1 line; it runs on the library
calls alone (no ``cli``), and a rerun after an interruption goes on from the training's
checkpoint to the model of an uninterrupted demo."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sasi_scipion.engine import demo, resumable
from sasi_scipion.engine.cli import main

SMALL_SHAPE = (32, 64, 64)
ITERATIONS = 3


@pytest.fixture(scope="module")
def small_demo() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "DEMO_SHAPE", SMALL_SHAPE)
        yield patch


def _demo(out: Path) -> int:
    return main(["demo", "--out", str(out), "--iterations", str(ITERATIONS), "--device", "cpu"])


@pytest.fixture(scope="module")
def whole_demo(small_demo, tmp_path_factory) -> tuple[Path, str, str]:
    """An uninterrupted demo: its folder, stdout and stderr."""
    work = tmp_path_factory.mktemp("demo") / "whole"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert _demo(work) == 0, err.getvalue()
    return work, out.getvalue(), err.getvalue()


def test_the_demo_writes_its_files_and_prints_its_f1(whole_demo) -> None:
    work, out, err = whole_demo
    for name in ("data/tomo_000.mrc", "data/tomo_001.mrc", "data/tomo_001_occupancy.mrc",
                 "labels.tsv", "model.pt", "picks_tomo_001.tsv"):
        assert (work / name).is_file(), name
    assert not (work / "model.pt.ckpt").exists()
    assert f"wrote 2 tomogram(s) to {work / 'data'}" in out
    assert f"-> {work / 'model.pt'}" in out and f"-> {work / 'picks_tomo_001.tsv'}" in out
    assert f"train: iteration {ITERATIONS}/{ITERATIONS}" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("demo: trained on ") and " F1 " in last and str(work) in last


def test_the_demo_does_not_import_the_command() -> None:
    probe = ("import sys, sasi_scipion.engine.demo; "
             "print('sasi_scipion.engine.cli' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.split() == ["False"]


class _Interrupting(demo.ProgressLog):
    """Progress that stops training after its second iteration, like Ctrl-C."""

    def update(self, step: int, **values) -> None:
        super().update(step, **values)
        if self.label == "train" and step == 2:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_rerun_goes_on_from_an_interrupted_training(whole_demo, tmp_path: Path,
                                                      monkeypatch, capsys) -> None:
    monkeypatch.setattr(resumable, "CHECKPOINT_INTERVAL_S", 0.0)  # one after every step
    with monkeypatch.context() as patch:
        patch.setattr(demo, "ProgressLog", _Interrupting)
        assert _demo(tmp_path / "cut") == 130
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert torch.load(tmp_path / "cut" / "model.pt.ckpt", weights_only=True)["iteration"] == 1
    capsys.readouterr()
    assert _demo(tmp_path / "cut") == 0
    assert f"resuming from {tmp_path / 'cut' / 'model.pt.ckpt'} after iteration 1" in \
        capsys.readouterr().err
    whole = torch.load(whole_demo[0] / "model.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(v, cut["state_dict"][k]) for k, v in whole["state_dict"].items())
    assert (whole_demo[0] / "picks_tomo_001.tsv").read_text() == \
        (tmp_path / "cut" / "picks_tomo_001.tsv").read_text()

"""Contrast (``engine/contrast.py``): the checks on simulated volumes, the model's
record of its training contrast, and ``sasi pick --invert-contrast`` (the slow test
also writes its picks with ``--out .star``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine import contrast, mrc_io
from sasi_scipion.engine.cli import main
from sasi_scipion.engine.contrast import (
    BRIGHT,
    DARK,
    SKEW_MARGIN,
    contrast_skew,
    inversion_warning,
    label_contrast,
)
from sasi_scipion.engine.coordinates import read_particles, write_particles
from sasi_scipion.engine.demo import few_labels
from sasi_scipion.engine.formats import read_coordinates, tomogram_reference
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.model_file import read_model_file
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.normalize import NormalisedVolume, normalise
from sasi_scipion.engine.simulate import procedural_templates, simulate_tomogram

ITERATIONS = 12
"""Enough for a model that picks something; the test compares picks, not accuracy."""


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray]:
    """A normalised 32 x 64 x 64 simulated tomogram at SNR 0.1 (protein dark) and the
    sphere labels of 5 particles per class."""
    tomogram = simulate_tomogram((32, 64, 64), procedural_templates(10.0),
                                 np.random.default_rng(3), 0.1)
    labels = few_labels(tomogram.truth, 5, seed=0)
    label_map = sphere_label_volume(tomogram.volume.shape, labels, labels.class_names,
                                    [4.0] * len(labels.class_names))
    return normalise(tomogram.volume), label_map


def test_label_contrast_sees_the_simulator_dark_and_its_inversion_bright(simulated) -> None:
    volume, label_map = simulated
    assert label_contrast([volume], [label_map]) == DARK
    assert label_contrast([-volume], [label_map]) == BRIGHT


def test_skewness_sign_follows_the_contrast(simulated) -> None:
    volume, _ = simulated
    skew = contrast_skew(volume)
    assert skew < -SKEW_MARGIN
    assert contrast_skew(-volume) == pytest.approx(-skew, rel=1e-6)
    assert contrast_skew(np.random.default_rng(0).normal(size=(32, 64, 64))) == pytest.approx(
        0, abs=0.1)  # pure noise: no sign, no warning


@pytest.mark.parametrize("planes", [1, 2, 5, 64])
def test_skewness_in_slabs_is_the_skewness_of_the_whole_pooled_volume(
        simulated, monkeypatch, planes: int) -> None:
    """Slabs of any height (in pooled planes; 64: one slab) give the skewness of the
    whole volume's box means, computed here in one piece, two-pass, and from a
    ``NormalisedVolume`` as from an array; the label contrast is read in the same
    slabs."""
    volume, label_map = simulated
    pooled = torch.nn.functional.avg_pool3d(torch.from_numpy(volume)[None, None],
                                            contrast.SKEW_POOL,
                                            stride=contrast.SKEW_POOL - 1).double().ravel()
    centred = pooled - pooled.mean()
    expected = float((centred**3).mean() / (centred**2).mean() ** 1.5)
    monkeypatch.setattr(mrc_io, "READ_SLAB_VOXELS",
                        planes * (contrast.SKEW_POOL - 1) * volume.shape[1] * volume.shape[2])
    assert contrast_skew(volume) == pytest.approx(expected, rel=1e-9)
    raw = volume * 3.0 + 7.0
    assert contrast_skew(NormalisedVolume(raw)) == pytest.approx(
        contrast_skew(normalise(raw)), rel=1e-9)
    assert contrast_skew(np.full((9, 8, 8), 1e4, np.float32)) == 0.0  # no spread, no sign
    assert contrast_skew(volume + np.float32(50)) == pytest.approx(expected, rel=1e-5)
    assert label_contrast([NormalisedVolume(raw)], [label_map]) == DARK  # in slabs too
    assert label_contrast([NormalisedVolume(raw, negate=True)], [label_map]) == BRIGHT


def test_inversion_warning_only_for_a_clear_opposite_sign() -> None:
    assert inversion_warning(-2.0, -1.5, "t.mrc") is None
    assert inversion_warning(2.0, None, "t.mrc") is None  # an older model
    assert inversion_warning(SKEW_MARGIN / 2, -2.0, "t.mrc") is None
    message = inversion_warning(2.0, -1.5, "t.mrc")
    assert message is not None and "--invert-contrast" in message and "+2.00" in message


@pytest.mark.slow
def test_inverted_tomogram_picks_like_the_original_with_invert_contrast(
        tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert main(["simulate", str(data), "--tomograms", "2", "--shape", "32,96,96",
                 "--seed", "1"]) == 0
    dataset = json.loads((data / "dataset.json").read_text())
    write_particles(tmp_path / "labels.tsv",
                    few_labels(read_particles(data / "tomo_000.tsv"), 5, seed=0))
    radii = [a for name, r in dataset["radii"].items() for a in ("--radius", f"{name}={r}")]
    model = tmp_path / "model.pt"
    assert main(["train", "--tomogram", str(data / "tomo_000.mrc"), "--coords",
                 str(tmp_path / "labels.tsv"), *radii, "--out", str(model), "--iterations",
                 str(ITERATIONS), "--batch-size", "4", "--learning-rate", "3e-3", "--ssl",
                 "none", "--no-infill", "--no-consistency", "--device", "cpu"]) == 0
    meta, _ = read_model_file(model)
    assert meta.contrast == DARK and meta.contrast_skew < -SKEW_MARGIN
    original = read_volume(data / "tomo_001.mrc")
    write_volume(tmp_path / "inverted.mrc", -original.data, original.voxel_size)
    runs = {"original": (data / "tomo_001.mrc", []),
            "flagged": (tmp_path / "inverted.mrc", ["--invert-contrast"]),
            "unflagged": (tmp_path / "inverted.mrc", [])}
    picks, warned = {}, {}
    for name, (tomogram, flag) in runs.items():
        capsys.readouterr()
        out = tmp_path / f"{name}.tsv"
        assert main(["pick", "--model", str(model), "--tomogram", str(tomogram), "--out",
                     str(out), "--min-score", "0", "--device", "cpu", *flag]) == 0
        picks[name] = read_particles(out, allow_empty=True)
        warned[name] = "looks inverted" in capsys.readouterr().err
    assert len(picks["original"]) > 0
    np.testing.assert_allclose(picks["flagged"].xyz, picks["original"].xyz, atol=1e-3)
    assert list(picks["flagged"].classes) == list(picks["original"].classes)
    assert warned == {"original": False, "flagged": False, "unflagged": True}
    # the control: without the flag the same model finds other things
    assert len(picks["unflagged"]) != len(picks["original"]) or not np.allclose(
        picks["unflagged"].xyz, picks["original"].xyz, atol=1)
    # the same picks written as RELION 5 (tomogram-centred Å) read back to the voxels
    star = tmp_path / "original.star"
    assert main(["pick", "--model", str(model), "--tomogram", str(data / "tomo_001.mrc"),
                 "--out", str(star), "--min-score", "0", "--device", "cpu"]) == 0
    back = read_coordinates(star, tomogram_reference(data / "tomo_001.mrc"))
    np.testing.assert_allclose(back.xyz, picks["original"].xyz, atol=1e-3)


@pytest.mark.parametrize("changes, words", [({"contrast": "grey"}, "its contrast is not one"),
                                            ({"contrast_skew": "x"}, "skewness is not a number")])
def test_model_file_with_a_bad_contrast_is_refused(tmp_path: Path, changes, words) -> None:
    import torch

    from sasi_scipion.engine.errors import SasiModelFormatError
    from sasi_scipion.engine.model_file import ModelMetadata, save_model
    from sasi_scipion.engine.models import build_backbone
    from sasi_scipion.engine.normalize import NORMALISATION

    values = dict(arch="deepfinder", arch_params={}, classes=["a"], radii=[3.0], window=24,
                  voxel_size=10.0, normalisation=NORMALISATION, pretrained_only=False,
                  iterations=1, contrast=DARK, contrast_skew=-1.0)
    save_model(tmp_path / "good.pt", build_backbone("deepfinder", 2), ModelMetadata(**values))
    assert read_model_file(tmp_path / "good.pt")[0].contrast == DARK
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    payload.update(changes)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(SasiModelFormatError, match=words):
        read_model_file(tmp_path / "bad.pt")

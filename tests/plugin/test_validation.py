"""The engine's input rules in the protocols' ``_validate`` (``docs/errors.md``),
on sets built in memory: no protocol runs, so these take seconds."""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from sasi_scipion.engine.model_file import ModelMetadata, save_model
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.normalize import NORMALISATION

SHAPE = (32, 48, 48)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """A project, tomogram files good and bad, model files good and bad."""
    from pyworkflow.project import Manager

    d = tmp_path_factory.mktemp("validation")
    noise = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    for name in ("a", "b"):
        write_volume(d / f"{name}.mrc", noise, 10.0)
    write_volume(d / "unknown.mrc", noise, None)
    write_volume(d / "one_angstrom.mrc", noise, 1.0)
    write_volume(d / "tiny.mrc", noise[:10, :10, :10], 10.0)
    with mrcfile.new(d / "complex.mrc") as mrc:
        mrc.set_data((noise + 1j * noise).astype(np.complex64))
        mrc.voxel_size = 10.0
    with mrcfile.new(d / "noncubic.mrc") as mrc:
        mrc.set_data(noise)
        mrc.voxel_size = (10, 10, 12)
    torch.manual_seed(0)
    meta = ModelMetadata(arch="deepfinder", arch_params={}, classes=["a", "b"], radii=[3.0, 3.0],
                         window=24, voxel_size=10.0, normalisation=NORMALISATION,
                         pretrained_only=False, iterations=1)
    save_model(d / "model.pt", build_backbone("deepfinder", 3), meta)
    save_model(d / "head.pt", build_backbone("deepfinder", 5), meta)
    (d / "cut.pt").write_bytes((d / "model.pt").read_bytes()[:5000])
    project = Manager().createProject("sasi_validation")
    return project, d


def _tomograms(folder: Path, files: list[tuple[str, str | None]], label: str,
               rate: float = 10.0):
    """A SetOfTomograms of ``(file, tsId)`` (tsId ``None``: none) at ``rate`` Å/px."""
    from tomo.objects import SetOfTomograms, Tomogram

    tomograms = SetOfTomograms(filename=str(folder / f"{label}.sqlite"))
    tomograms.setSamplingRate(rate)
    for name, ts_id in files:
        tomo = Tomogram()
        tomo.setFileName(str(folder / name))
        tomo.setSamplingRate(rate)
        if ts_id:
            tomo.setTsId(ts_id)
        tomograms.append(tomo)
    tomograms.write()
    return tomograms


def _coordinates(folder: Path, tomograms, label: str):
    from tomo import constants
    from tomo.objects import Coordinate3D, SetOfCoordinates3D

    coords = SetOfCoordinates3D(filename=str(folder / f"{label}.sqlite"))
    coords.setPrecedents(tomograms)
    coords.setSamplingRate(10.0)
    coords.setBoxSize(6)
    tomo = next(iter(tomograms.iterItems())).clone()
    for x, y, z in [(10, 12, 8), (30, 20, 16), (20, 30, 20)]:
        coord = Coordinate3D()
        coord.setVolume(tomo)
        coord.setPosition(x, y, z, constants.BOTTOM_LEFT_CORNER)
        coord.setGroupId(1)
        coords.append(coord)
    coords.write()
    return coords


def _errors(protocol) -> str:
    return " ".join(protocol.validate())


TOMOGRAM_CASES = [
    ("tsId twice", [("a.mrc", "t1"), ("b.mrc", "t1")], "share tsId t1"),
    ("tsId missing", [("a.mrc", None)], "has no tsId"),
    ("complex", [("complex.mrc", "t1")], "complex MRC data"),
    ("10 x 10 x 10", [("tiny.mrc", "t1")], "smaller than the 24-voxel window"),
    ("non-cubic voxel", [("noncubic.mrc", "t1")], "not cubic"),
]


@pytest.mark.parametrize("files, words", [(f, w) for _, f, w in TOMOGRAM_CASES],
                         ids=[name for name, _, _ in TOMOGRAM_CASES])
def test_pretrain_and_pick_refuse_bad_tomograms(env, files, words) -> None:
    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiPick, ProtSaSiPretrain

    project, d = env
    tomograms = _tomograms(d, files, f"tomograms_{words[:8]}".replace(" ", "_"))
    pretrain = project.newProtocol(ProtSaSiPretrain, useGpu=False)
    pretrain.inputTomograms.set(tomograms)
    assert words in _errors(pretrain)
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputTomograms.set(tomograms)
    model = SaSiModel(path=str(d / "model.pt"))
    model.setFromMetadata({"classes": ["a", "b"], "radii": [3, 3], "voxel_size": 10.0,
                           "window": 24, "arch": "deepfinder", "pretrained_only": False})
    pick.inputModel.set(model)
    assert words in _errors(pick)


@pytest.mark.parametrize("iterations, seed, words", [
    (10**12, 0, "at most 1000000"), (-3, 0, "0 (default) or more"),
    (0, -1, "Random seed"), (0, 2**40, "Random seed")])
def test_pretrain_numbers(env, iterations, seed, words) -> None:
    from sasi_scipion.protocols import ProtSaSiPretrain

    project, d = env
    pretrain = project.newProtocol(ProtSaSiPretrain, useGpu=False, iterations=iterations,
                                   seed=seed)
    pretrain.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], f"numbers{iterations}{seed}"))
    assert words in _errors(pretrain)


def test_a_header_voxel_size_other_than_scipions_is_a_warning(env) -> None:
    """The engine is given Scipion's sampling rate (10 Å/px here): a header that says 1 Å
    is only a warning, and a header without a voxel size not even that."""
    from sasi_scipion.protocols import ProtSaSiPretrain

    project, d = env
    pretrain = project.newProtocol(ProtSaSiPretrain, useGpu=False)
    pretrain.inputTomograms.set(_tomograms(d, [("one_angstrom.mrc", "t1")], "one_angstrom"))
    assert pretrain.validate() == []
    assert ("the header says 1.000 Å per voxel, the sampling rate in Scipion says 10.000 Å"
            in " ".join(pretrain.warnings()))
    for name in ("unknown.mrc", "a.mrc"):  # controls: no header size, the same size
        pretrain.inputTomograms.set(_tomograms(d, [(name, "t1")], name))
        assert pretrain.validate() == [] and pretrain.warnings() == []


@pytest.mark.parametrize("name, words", [("none.pt", "is missing"), ("cut.pt", "truncated"),
                                         ("head.pt", "weights do not fit")])
def test_pick_refuses_bad_model_files(env, name, words) -> None:
    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiPick

    project, d = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], f"pick_{name}"))
    model = SaSiModel(path=str(d / name))
    model.setFromMetadata({"classes": ["a"], "radii": [3], "voxel_size": 10.0, "window": 24,
                           "arch": "deepfinder", "pretrained_only": False})
    pick.inputModel.set(model)
    assert words in _errors(pick)
    pick.inputModel.set(SaSiModel(path=str(d / "model.pt")))
    pick.minScore.set(float("nan"))
    assert "between 0 and 1" not in _errors(pick)  # not used: the model's cut-offs apply
    pick.useModelCutoffs.set(False)
    assert "between 0 and 1" in _errors(pick)


@pytest.mark.parametrize("radii, words", [
    ("inf", "not a positive number"), ("nan", "not a positive number"),
    ("100", "does not fit the 24-voxel window"), ("1e9", "radius in voxels"),
    ("0.5", "under 1 voxel"), ("20", "bin the tomograms and coordinates by 2")])
def test_train_refuses_bad_radii(env, radii, words) -> None:
    from pyworkflow.object import Pointer

    from sasi_scipion.protocols import ProtSaSiTrain

    project, d = env
    tomograms = _tomograms(d, [("a.mrc", "t1")], f"train_{radii}")
    train = project.newProtocol(ProtSaSiTrain, useGpu=False, radii=radii)
    train.inputCoordinates.append(Pointer(_coordinates(d, tomograms, f"coords_{radii}")))
    train.inputTomograms.set(tomograms)
    assert words in _errors(train)


def test_train_takes_background_points_without_a_radius(env) -> None:
    from pyworkflow.object import Pointer

    from sasi_scipion.protocols import ProtSaSiTrain

    project, d = env
    tomograms = _tomograms(d, [("a.mrc", "t1")], "train_background")
    train = project.newProtocol(ProtSaSiTrain, useGpu=False, radii="3,inf",
                                classNames="a,background")
    for label in ("coords_particles", "coords_background"):
        train.inputCoordinates.append(Pointer(_coordinates(d, tomograms, label)))
    train.inputTomograms.set(tomograms)
    assert train.validate() == []  # the background class's radius is never used
    alone = project.newProtocol(ProtSaSiTrain, useGpu=False, radii="3",
                                classNames="background")
    alone.inputCoordinates.append(Pointer(_coordinates(d, tomograms, "coords_only_background")))
    alone.inputTomograms.set(tomograms)
    assert "Every class is 'background'" in _errors(alone)


def test_train_refuses_a_missing_pretrained_model_and_bad_numbers(env) -> None:
    from pyworkflow.object import Pointer

    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiTrain

    project, d = env
    tomograms = _tomograms(d, [("a.mrc", "t1")], "train_pretrained")
    train = project.newProtocol(ProtSaSiTrain, useGpu=False, radii="3")
    train.inputCoordinates.append(Pointer(_coordinates(d, tomograms, "coords_pretrained")))
    train.inputTomograms.set(tomograms)
    assert train.validate() == []
    train.pretrainedModel.set(SaSiModel(path=str(d / "gone.pt")))
    assert "no such SaSi model file" in _errors(train)
    train.pretrainedModel.set(None)
    train.iterations.set(10**12)
    train.seed.set(-1)
    assert "at most 1000000" in _errors(train) and "Random seed" in _errors(train)


def test_train_passes_the_self_training_choice_the_engine_reads(env, monkeypatch) -> None:
    from pyworkflow.object import Pointer

    from sasi_scipion.engine.cli import build_parser
    from sasi_scipion.engine.defaults import DEFAULT_SELF_TRAINING, SELF_TRAINING_MODES
    from sasi_scipion.protocols import ProtSaSiTrain

    project, d = env
    monkeypatch.chdir(project.path)  # the protocol's folders are relative to the project
    tomograms = _tomograms(d, [("a.mrc", "t1")], "train_self_training")
    train = project.newProtocol(ProtSaSiTrain, useGpu=False, radii="3")
    train.inputCoordinates.append(Pointer(_coordinates(d, tomograms, "coords_self_training")))
    train.inputTomograms.set(tomograms)
    commands: list[list[str]] = []
    monkeypatch.setattr(train, "runTraining", lambda args, out: commands.append(args))
    os.makedirs(train._getExtraPath(), exist_ok=True)
    train.convertInputStep()
    train.trainStep()
    for mode in ("ignore", "labels", "off"):
        train.selfTraining.set(SELF_TRAINING_MODES.index(mode))
        train.trainStep()
    read = [build_parser().parse_args(c).self_training for c in commands]
    assert read == [DEFAULT_SELF_TRAINING, "ignore", "labels", "off"]
    assert "left out of the loss" not in train._methods()[0]
    train.selfTraining.set(SELF_TRAINING_MODES.index("ignore"))
    assert "unlabelled particles found half-way left out of the loss" in train._methods()[0]


def test_evaluate_refuses_a_nan_hit_radius(env) -> None:
    from pyworkflow.object import Pointer

    from sasi_scipion.protocols import ProtSaSiEvaluate

    project, d = env
    tomograms = _tomograms(d, [("a.mrc", "t1")], "evaluate")
    evaluate = project.newProtocol(ProtSaSiEvaluate, hitRadius=float("nan"))
    evaluate.inputCoordinates.set(_coordinates(d, tomograms, "picks"))
    evaluate.referenceCoordinates.append(Pointer(_coordinates(d, tomograms, "truth")))
    assert "hit radius" in _errors(evaluate)


def test_evaluate_refuses_two_reference_classes_scored_against_one_picked_class(env) -> None:
    """'truth_a' and 'old_a' both end in the picked class's name: their per-class
    scores would overwrite each other, so the form asks for distinct names."""
    from pyworkflow.object import Pointer

    from sasi_scipion.protocols import ProtSaSiEvaluate

    project, d = env
    tomograms = _tomograms(d, [("a.mrc", "t1")], "evaluate_shared")
    evaluate = project.newProtocol(ProtSaSiEvaluate)
    evaluate.inputCoordinates.set(_coordinates(d, tomograms, "picks_shared"))
    for label in ("truth_one", "truth_two"):
        evaluate.referenceCoordinates.append(Pointer(_coordinates(d, tomograms, label)))
    picked = list(evaluate.pickClasses().values())[0]
    evaluate.referenceNames.set(f"truth_{picked}, old_{picked}")
    assert (f"The reference classes truth_{picked}, old_{picked} would all be scored "
            f"against the picked class {picked}") in _errors(evaluate)
    evaluate.referenceNames.set(f"truth_{picked}, other")  # control: one each
    assert "would all be scored" not in _errors(evaluate)


def test_each_command_reports_into_its_own_error_file(env) -> None:
    from sasi_scipion.protocols import ProtSaSiPick

    project, _ = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    assert "SASI_ERROR_FILE=/logs/sasi-pick-t1_picks.tsv.error " in pick._program(
        "/logs/sasi-pick-t1_picks.tsv.error")


def test_a_failed_command_quotes_its_own_error_file(env, monkeypatch) -> None:
    from pyworkflow.plugin import Domain

    from sasi_scipion.protocols import ProtSaSiPretrain

    project, d = env
    monkeypatch.chdir(project.path)
    folder = d / "broken"
    folder.mkdir()
    volume = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    volume[0, 0, 0] = np.nan
    write_volume(folder / "broken.mrc", volume, 10.0)
    importer = project.newProtocol(
        Domain.importFromPlugin("tomo.protocols", "ProtImportTomograms"),
        filesPath=str(folder), filesPattern="*.mrc", samplingRate=10.0)
    project.launchProtocol(importer, wait=True)
    pretrain = project.newProtocol(ProtSaSiPretrain, inputTomograms=importer.Tomograms,
                                   iterations=2, useGpu=False)
    project.launchProtocol(pretrain, wait=True)
    assert pretrain.isFailed()
    headline = pretrain.getErrorMessage().splitlines()[0]
    assert "sasi pretrain failed: " in headline and "broken.mrc: holds NaN" in headline
    assert Path(pretrain._getLogsPath("sasi-pretrain-pretrained.pt.error")).exists()


def test_model_summary_warns_of_a_simclr_collapse(env) -> None:
    from sasi_scipion.objects import SaSiModel

    card = {"classes": ["a"], "radii": [3], "voxel_size": 10.0, "window": 24,
            "arch": "deepfinder", "pretrained_only": False}
    healthy = SaSiModel(path="m.pt")
    healthy.setFromMetadata({**card, "settings": {"ssl_collapsed_at": None}})
    assert healthy.collapseWarning() == []
    collapsed = SaSiModel(path="m.pt")
    collapsed.setFromMetadata({**card, "settings": {"ssl_collapsed_at": 27}})
    assert collapsed.getSslCollapsedAt() == 27
    assert "SimCLR collapsed at iteration 27" in collapsed.collapseWarning()[0]


def test_model_summary_says_what_self_training_found(env) -> None:
    from sasi_scipion.objects import SaSiModel

    card = {"classes": ["a"], "radii": [3], "voxel_size": 10.0, "window": 24,
            "arch": "deepfinder", "pretrained_only": False}
    lines = {}
    for mode, found in (("ignore", 7), ("labels", 0), ("off", None)):
        model = SaSiModel(path="m.pt")
        model.setFromMetadata({**card, "settings": {"self_training": mode,
                                                    "self_labels_found": found}})
        lines[mode] = model.selfTrainingLines()
    assert lines["ignore"] == ["Self-training: 7 unlabelled particle(s) found half-way, "
                               "left out of the loss"]
    assert lines["labels"] == ["Self-training: 0 unlabelled particle(s) found half-way, "
                               "taught as labels"]
    older = SaSiModel(path="m.pt")
    older.setFromMetadata(card)
    assert lines["off"] == [] and older.selfTrainingLines() == []


def test_model_summary_says_how_many_labels_the_model_finds_again(env) -> None:
    from sasi_scipion.objects import SaSiModel

    card = {"classes": ["a", "b"], "radii": [3, 3], "voxel_size": 10.0, "window": 24,
            "arch": "deepfinder", "pretrained_only": False}
    model = SaSiModel(path="m.pt")
    model.setFromMetadata({**card, "label_recall": [0.9, 0.25]})
    lines = model.labelRecallLines()
    assert lines[0] == ("Labelled particles picked as their class in the training tomograms: "
                        "a 90%, b 25%")
    assert lines[1].startswith("Warning: the model has not learned b (it picks fewer than 50%")
    model.setFromMetadata({**card, "label_recall": [0.9, 0.5]})
    assert len(model.labelRecallLines()) == 1
    older = SaSiModel(path="m.pt")
    older.setFromMetadata(card)
    assert older.labelRecallLines() == [] and older.getLabelRecall() == {}


def test_pick_passes_invert_contrast_and_no_calibration_only_when_asked(env,
                                                                       monkeypatch) -> None:
    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiPick

    project, d = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], "pick_invert"))
    pick.inputModel.set(SaSiModel(path=str(d / "model.pt")))
    commands: list[list[str]] = []
    monkeypatch.setattr(pick, "runSasi", lambda args, device=True: commands.append(args))
    pick.pickStep("t1")
    pick.invertContrast.set(True)
    pick.pickStep("t1")
    pick.classCalibration.set(False)
    pick.pickStep("t1")
    assert ["--invert-contrast" in c for c in commands] == [False, True, True]
    assert ["--no-class-calibration" in c for c in commands] == [False, False, True]


def test_pick_passes_the_prototype_filter_and_refuses_it_for_a_model_without(env,
                                                                            monkeypatch) -> None:
    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiPick

    project, d = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], "pick_prototypes"))
    card = {"classes": ["a"], "radii": [3], "voxel_size": 10.0, "window": 24,
            "arch": "deepfinder", "pretrained_only": False}
    without, with_prototypes = SaSiModel(path=str(d / "model.pt")), SaSiModel(
        path=str(d / "model.pt"))
    without.setFromMetadata(card)
    with_prototypes.setFromMetadata({**card, "label_prototypes": {"vectors": [[1.0]],
                                                                  "label_similarities": [[]]}})
    assert with_prototypes.hasLabelPrototypes() and not without.hasLabelPrototypes()
    pick.inputModel.set(without)
    commands: list[list[str]] = []
    monkeypatch.setattr(pick, "runSasi", lambda args, device=True: commands.append(args))
    pick.pickStep("t1")
    flag = commands[-1].index("--prototype-filter")
    assert commands[-1][flag:flag + 4] == ["--prototype-filter", "auto",
                                           "--prototype-quantile", "0.1"]
    assert "no label prototypes" not in _errors(pick)
    pick.prototypeFilter.set(1)  # on
    assert "The model has no label prototypes" in _errors(pick)
    pick.inputModel.set(with_prototypes)
    assert "label prototypes" not in _errors(pick)
    pick.prototypeQuantile.set(1.5)
    assert "Prototype strictness must lie between 0 and 1" in _errors(pick)
    pick.prototypeQuantile.set(0.25)
    pick.pickStep("t1")
    assert commands[-1][flag:flag + 4] == ["--prototype-filter", "on",
                                           "--prototype-quantile", "0.25"]


def test_pick_passes_the_statistics_adaptation_the_engine_reads(env, monkeypatch) -> None:
    from sasi_scipion.engine.cli import build_parser
    from sasi_scipion.engine.defaults import STATISTICS_ADAPTATIONS
    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiPick

    project, d = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], "pick_adaptation"))
    model = SaSiModel(path=str(d / "model.pt"))
    model.setFromMetadata({"classes": ["a", "b"], "radii": [3, 4], "voxel_size": 10.0,
                           "window": 24, "arch": "deepfinder", "pretrained_only": False})
    pick.inputModel.set(model)
    commands: list[list[str]] = []
    monkeypatch.setattr(pick, "runSasi", lambda args, device=True: commands.append(args))
    for choice in ("auto", "on", "off"):
        pick.adaptStatistics.set(STATISTICS_ADAPTATIONS.index(choice))
        pick.pickStep("t1")
        parsed = build_parser().parse_args(commands[-1])
        assert parsed.adapt_statistics == choice


def test_pick_refuses_classes_whose_outputs_would_share_a_name(env) -> None:
    """``outputCoordinates_<class>`` keeps letters, digits and _ only: 'a.b' and 'a_b'
    would be one output."""
    from sasi_scipion.objects import SaSiModel
    from sasi_scipion.protocols import ProtSaSiPick

    project, d = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], "pick_output_names"))
    for classes, refused in ((["a.b", "a_b"], True), (["a.b", "c"], False)):  # and a control
        model = SaSiModel(path=str(d / "model.pt"))
        model.setFromMetadata({"classes": classes, "radii": [3, 3], "voxel_size": 10.0,
                               "window": 24, "arch": "deepfinder", "pretrained_only": False})
        pick.inputModel.set(model)
        assert ("give two outputs the same name" in _errors(pick)) is refused


def test_pick_resamples_another_sampling_rate_and_refuses_one_far_off(env) -> None:
    """Tomograms at 7.5 Å/px with a 10 Å/px model are resampled (a warning says so);
    at 2 Å/px (5 times finer: a wrong sampling rate, most likely) they are refused."""
    from sasi_scipion.protocols import ProtSaSiPick

    project, d = env
    pick = project.newProtocol(ProtSaSiPick, useGpu=False)
    pick.inputModel.set(_model(d))
    for rate, refused, warned in ((7.5, False, True), (2.0, True, False), (10.0, False, False)):
        pick.inputTomograms.set(_tomograms(d, [("a.mrc", "t1")], f"pick_rate_{rate}", rate))
        assert ("5.0 times apart" in _errors(pick)) is refused
        assert ("will be resampled to the model's sampling rate (10.00 Å/px)"
                in " ".join(pick.warnings())) is warned


def _model(folder: Path):
    from sasi_scipion.objects import SaSiModel

    model = SaSiModel(path=str(folder / "model.pt"))
    model.setFromMetadata({"classes": ["a", "b"], "radii": [3, 3], "voxel_size": 10.0,
                           "window": 24, "arch": "deepfinder", "pretrained_only": False})
    return model

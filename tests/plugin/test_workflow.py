"""The whole workflow in a real headless project: import, pretrain, train, pick,
evaluate, export; then the outputs, the coordinate round trip, validation,
failures and viewers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tomo import constants as tomo_const

from sasi_scipion.convert import coordinate_table, tomograms_by_tsid
from sasi_scipion.engine.coordinates import read_particles

F1_BAR = 0.4
"""Pooled F1 (distance rule, half-box hit radius) the picks must beat; picking at
random scores below 0.1 on this data."""


def _truth_count(workflow) -> int:
    data = Path(workflow.data_dir) / "tomograms"
    return sum(len(read_particles(p)) for p in data.glob("tomo_???.tsv"))


def test_picks_are_a_proper_coordinate_set(workflow) -> None:
    pick = workflow.protocols["pick"]
    tomograms = workflow.protocols["import_tomograms"].Tomograms
    picks = pick.output3DCoordinates
    assert picks.getPrecedents().getObjId() == tomograms.getObjId()
    assert picks.getSamplingRate() == pytest.approx(tomograms.getSamplingRate())
    assert picks.getBoxSize() >= 16
    assert not picks.isStreamOpen()
    truth = _truth_count(workflow)
    assert 0.5 * truth < picks.getSize() < 1.5 * truth
    ts_ids, groups, scores = set(), set(), []
    for coord in picks.iterCoordinates():
        ts_ids.add(coord.getTomoId())
        groups.add(coord.getGroupId())
        scores.append(coord.getScore())
    assert ts_ids == {"tomo_000", "tomo_001"}
    assert groups <= {1, 2, 3} and len(groups) >= 2
    assert min(scores) > 0 and max(scores) <= 1
    assert pick.output3DCoordinates.getSize() > 0


def test_picks_match_the_truth(workflow) -> None:
    evaluation = workflow.protocols["evaluate"].getEvaluation()
    assert workflow.f1 == pytest.approx(evaluation["pooled"]["f1"])
    assert workflow.f1 > F1_BAR
    assert set(evaluation["per_class"]) == {"truth_disc", "truth_globule", "truth_rod"}
    summary = "\n".join(workflow.protocols["evaluate"].summary())
    assert "pooled" in summary


def test_round_trip_keeps_positions(workflow) -> None:
    pick = workflow.protocols["pick"]
    tomos = tomograms_by_tsid(workflow.protocols["import_tomograms"].Tomograms)
    for ts_id, tomo in tomos.items():
        engine = read_particles(pick._getExtraPath(f"{ts_id}_picks.tsv"), allow_empty=True)
        back = coordinate_table(pick.output3DCoordinates, tomo, 1.0, lambda c: "x")
        assert len(back) == len(engine)
        assert np.allclose(np.sort(back.xyz, axis=0), np.sort(engine.xyz, axis=0), atol=1e-3)


def test_labels_went_to_the_engine_unchanged(workflow) -> None:
    train = workflow.protocols["train"]
    labels = read_particles(train._getExtraPath("tomo_000_labels.tsv"))
    assert labels.class_names == ["disc", "globule", "rod"]
    assert len(labels) == 15
    imported = workflow.protocols["import_labels_disc"].outputCoordinates
    tomo = tomograms_by_tsid(workflow.protocols["import_tomograms"].Tomograms)["tomo_000"]
    source = Path(workflow.data_dir) / "labels/disc/tomo_000.txt"
    written = np.loadtxt(source, ndmin=2)
    assert np.allclose(np.sort(labels.xyz[labels.classes == "disc"], axis=0),
                       np.sort(written, axis=0), atol=1e-3)
    positions = [c.getPosition(tomo_const.BOTTOM_LEFT_CORNER)
                 for c in imported.iterCoordinates(volume=tomo)]
    assert np.allclose(np.sort(np.array(positions), axis=0), np.sort(written, axis=0), atol=1e-3)


def test_export_takes_the_picks_unchanged(workflow) -> None:
    export = workflow.protocols["export"]
    pick = workflow.protocols["pick"]
    for ts_id in ("tomo_000", "tomo_001"):
        exported = np.loadtxt(export._getExportPath(f"{ts_id}.txt"), ndmin=2)
        engine = read_particles(pick._getExtraPath(f"{ts_id}_picks.tsv"))
        assert len(exported) == len(engine)
        assert np.allclose(np.sort(exported, axis=0), np.sort(np.floor(engine.xyz), axis=0),
                           atol=1.0)


def test_model_object(workflow) -> None:
    model = workflow.protocols["train"].outputModel
    assert model.getClassNames() == ["disc", "globule", "rod"]
    assert len(model.getRadii()) == 3 and not model.isPretrainedOnly()
    assert model.getVoxelSize() == pytest.approx(10.0)
    assert os.path.exists(model.getPath())
    assert workflow.protocols["pretrain"].outputModel.isPretrainedOnly()


def _new(workflow, cls, **kwargs):
    from pyworkflow.project import Manager

    project = Manager().loadProject(Path(workflow.project_path).name)
    return project, project.newProtocol(cls, **kwargs)


def test_train_validation(workflow) -> None:
    from sasi_scipion.protocols import ProtSaSiTrain

    _, train = _new(workflow, ProtSaSiTrain)
    assert "at least one coordinate set" in " ".join(train.validate())
    for role in ("import_labels_disc", "import_labels_rod"):
        train.inputCoordinates.append(workflow.protocols[role])
        train.inputCoordinates[-1].setExtended("outputCoordinates")
    assert train.validate() == []
    train.classNames.set("only_one")
    assert "one name per class" in " ".join(train.validate())
    train.classNames.set("same,same")
    assert "same name" in " ".join(train.validate())
    train.classNames.set("")
    train.radii.set("3,4,5")
    assert "one per class" in " ".join(train.validate())
    train.radii.set("abc")
    assert "numbers" in " ".join(train.validate())
    train.radii.set("")
    train.pretrainedModel.set(workflow.protocols["pretrain"])
    train.pretrainedModel.setExtended("outputModel")
    workflow.protocols["pretrain"].outputModel._voxelSize.set(20.0)  # 2x: resampled
    try:
        assert train.validate() == []
        workflow.protocols["pretrain"].outputModel._voxelSize.set(50.0)  # 5x: refused
        assert "50.00 Å/px" in " ".join(train.validate())
    finally:
        workflow.protocols["pretrain"].outputModel._voxelSize.set(10.0)


def test_pick_validation(workflow) -> None:
    from sasi_scipion.protocols import ProtSaSiPick

    _, pick = _new(workflow, ProtSaSiPick)
    pick.inputTomograms.set(workflow.protocols["import_tomograms"])
    pick.inputTomograms.setExtended("Tomograms")
    pick.inputModel.set(workflow.protocols["pretrain"])
    pick.inputModel.setExtended("outputModel")
    assert "only pre-trained" in " ".join(pick.validate())
    pick.inputModel.set(workflow.protocols["train"])
    pick.inputModel.setExtended("outputModel")
    model = workflow.protocols["train"].outputModel
    assert pick.validate() == []
    model._voxelSize.set(13.0)  # resampled while picking: a warning
    try:
        assert pick.validate() == []
        assert "will be resampled to the model's sampling rate (13.00 Å/px)" in " ".join(
            pick.warnings())
        model._voxelSize.set(50.0)  # 5x: refused
        assert "rescale (bin) them to about 50.00 Å/px" in " ".join(pick.validate())
    finally:
        model._voxelSize.set(10.0)
    pick.minScore.set(2.0)
    pick.useModelCutoffs.set(False)
    try:
        assert "between 0 and 1" in " ".join(pick.validate())
    finally:
        pick.useModelCutoffs.set(True)
        pick.minScore.set(0.0)


def test_pretrain_validation(workflow) -> None:
    from sasi_scipion.protocols import ProtSaSiPretrain

    _, pretrain = _new(workflow, ProtSaSiPretrain, iterations=-3)
    pretrain.inputTomograms.set(workflow.protocols["import_tomograms"])
    pretrain.inputTomograms.setExtended("Tomograms")
    assert "0 (default) or more" in " ".join(pretrain.validate())


def test_evaluate_validation(workflow) -> None:
    from sasi_scipion.protocols import ProtSaSiEvaluate

    _, evaluate = _new(workflow, ProtSaSiEvaluate)
    assert "Choose the picks" in " ".join(evaluate.validate())


def test_viewers_draw_pngs(workflow, tmp_path) -> None:
    from pyworkflow.project import Manager

    from sasi_scipion.viewers import SaSiEvaluationViewer, SaSiPicksViewer, SaSiTrainingViewer

    project = Manager().loadProject(Path(workflow.project_path).name)
    cases = [(SaSiTrainingViewer, workflow.protocols["train"].outputModel, 1),
             (SaSiTrainingViewer, workflow.protocols["train"], 1),
             (SaSiPicksViewer, workflow.protocols["pick"], 4),
             (SaSiEvaluationViewer, workflow.protocols["evaluate"], 1)]
    import matplotlib.image as mpimg

    for viewer_class, target, expected in cases:
        viewer = viewer_class(project=project, tmpPath=str(tmp_path / viewer_class.__name__))
        paths = viewer.pngs(target)
        assert len(paths) == expected
        for path in paths:
            image = mpimg.imread(path)
            assert image.shape[0] > 100 and image.std() > 0.01

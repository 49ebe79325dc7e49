"""A short SaSi workflow in a Scipion project, as ``scipion3 tests`` runs it:
import tomograms whose headers say 1 Å per voxel at 10 Å/px, import a few labels of
two classes and the truth, train (a few iterations), pick, evaluate against the
truth given in a non-alphabetical class order, export one class's picks with tomo's
export protocol and import them back as the next step of a pipeline would.

Torch-free itself (the data come from :mod:`sasi_scipion.tests.data`), so it runs in
a lean Scipion environment whose ``sasi`` lives elsewhere (``SASI_ENV_ACTIVATION``).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from pyworkflow.plugin import Domain
from pyworkflow.tests import BaseTest, setupTestProject
from tomo import constants as tomo_const

from ..constants import CLASS_OUTPUT_PREFIX, OUTPUT_COORDINATES, PICKS_SUFFIX
from ..convert import coordinate_table, tomograms_by_tsid
from ..engine.coordinates import read_particles
from ..protocols import ProtSaSiEvaluate, ProtSaSiPick, ProtSaSiTrain
from ..protocols.protocol_train import SSL_CHOICES
from .data import CLASSES, HEADER_VOXEL_SIZE, PER_TOMOGRAM, SAMPLING_RATE, write_dataset

TRAIN_ITERATIONS = 24
"""Optimisation steps, without infill and consistency: enough for the easy balls (40
found all 24 particles), about a minute on an idle 2-core CPU."""
TOMOGRAMS = 2


class TestSaSiWorkflow(BaseTest):
    """Train, pick, evaluate and export on two simulated tomograms."""

    @classmethod
    def setUpClass(cls) -> None:
        setupTestProject(cls)
        cls.data = write_dataset(Path(cls.getOutputPath("data")), TOMOGRAMS)
        import_tomograms = Domain.importFromPlugin("tomo.protocols", "ProtImportTomograms")
        import_coords = Domain.importFromPlugin("tomo.protocols", "ProtImportCoordinates3D")
        export_coords = Domain.importFromPlugin("tomo.protocols", "ProtExportCoordinates3D")
        cls.tomograms = cls._run(import_tomograms, "import tomograms",
                                 filesPath=str(cls.data.tomograms), filesPattern="tomo_*.mrc",
                                 samplingRate=SAMPLING_RATE).Tomograms
        labels, truth = [], []
        for name, radius in CLASSES.items():  # not in alphabetical order
            for sets, folder, label in ((labels, cls.data.labels, name),
                                        (truth, cls.data.truth, f"truth {name}")):
                sets.append(cls._run(import_coords, label, importFrom=1,
                                     filesPath=str(folder[name]), filesPattern="*.txt",
                                     boxSize=int(2 * radius), importTomograms=cls.tomograms))
        cls.truth = truth
        # the paper's norm-free net: in 24 steps the batch-normalised one does not yet
        # call both classes (recall 0 for one of them); this test checks the plugin's
        # class matching, not accuracy
        train = cls.newProtocol(ProtSaSiTrain, iterations=TRAIN_ITERATIONS, useGpu=False,
                                sslSchedule=SSL_CHOICES.index("none"), infill=False,
                                consistency=False, batchNorm=False)
        for protocol in labels:
            train.inputCoordinates.append(protocol)
            train.inputCoordinates[-1].setExtended("outputCoordinates")
        cls.train = cls._launch(train, "sasi train")
        cls.pick = cls._run(ProtSaSiPick, "sasi pick", inputTomograms=cls.tomograms,
                            inputModel=cls.train.outputModel, useGpu=False, numberOfThreads=3)
        evaluate = cls.newProtocol(ProtSaSiEvaluate,
                                   inputCoordinates=getattr(cls.pick, OUTPUT_COORDINATES))
        for protocol in truth:
            evaluate.referenceCoordinates.append(protocol)
            evaluate.referenceCoordinates[-1].setExtended("outputCoordinates")
        cls.evaluate = cls._launch(evaluate, "sasi evaluate")
        cls.export = cls._run(export_coords, "export ribosome",
                              inputCoordinates=cls.classSet("ribosome"), outputFormat=0)
        cls.reimported = cls._run(import_coords, "import exported ribosome", importFrom=1,
                                  filesPath=str(Path(cls.export._getExportPath()).resolve()),
                                  filesPattern="*.txt",
                                  boxSize=cls.classSet("ribosome").getBoxSize(),
                                  importTomograms=cls.tomograms).outputCoordinates

    @classmethod
    def _run(cls, protocol_class: type, label: str, **params):
        return cls._launch(cls.newProtocol(protocol_class, **params), label)

    @classmethod
    def _launch(cls, protocol, label: str):
        """Validate, then run and wait; raise with the errors of a refused protocol."""
        protocol.setObjLabel(label)
        errors = protocol.validate()
        if errors:
            raise AssertionError(f"{label}: {'; '.join(errors)}")
        return cls.launchProtocol(protocol)

    @classmethod
    def classSet(cls, name: str):
        """The pick protocol's output of class ``name``."""
        return getattr(cls.pick, f"{CLASS_OUTPUT_PREFIX}{name}")

    def _engine_picks(self, ts_id: str):
        return read_particles(self.pick._getExtraPath(f"{ts_id}{PICKS_SUFFIX}"),
                              allow_empty=True)

    def test_scipions_sampling_rate_wins_over_the_header(self) -> None:
        model = self.train.outputModel
        self.assertAlmostEqual(model.getVoxelSize(), SAMPLING_RATE)
        self.assertEqual(model.getClassNames(), sorted(CLASSES))
        logs = "".join(Path(p).read_text(errors="replace")
                       for p in glob.glob(self.train._getLogsPath("*")))
        self.assertIn(f"--voxel-size {SAMPLING_RATE!r}", logs)
        self.assertIn(f"the header says {HEADER_VOXEL_SIZE:.3f} Å per voxel, --voxel-size "
                      f"says {SAMPLING_RATE:.3f} Å", logs)
        self.assertEqual(self.pick.validate(), [])

    def test_one_output_set_per_class(self) -> None:
        combined = getattr(self.pick, OUTPUT_COORDINATES)
        self.assertFalse(combined.isStreamOpen())
        tomos = tomograms_by_tsid(self.tomograms)
        names = self.train.outputModel.getClassNames()
        total = 0
        for group, name in enumerate(names, start=1):
            picks = self.classSet(name)
            total += picks.getSize()
            self.assertFalse(picks.isStreamOpen())
            self.assertAlmostEqual(picks.getSamplingRate(), SAMPLING_RATE)
            self.assertEqual(picks.getBoxSize(), combined.getBoxSize())
            self.assertEqual(picks.getPrecedents().getObjId(), self.tomograms.getObjId())
            for coord in picks.iterCoordinates():
                self.assertEqual(coord.getGroupId(), group)
                self.assertIn(coord.getTomoId(), self.data.ts_ids)
                self.assertTrue(0 < coord.getScore() <= 1)
            for ts_id, tomo in tomos.items():
                engine = self._engine_picks(ts_id)
                mine = engine.subset(engine.classes == name)
                back = coordinate_table(picks, tomo, 1.0, lambda c, n=name: n)
                self.assertEqual(len(back), len(mine))
                np.testing.assert_allclose(np.sort(back.xyz, axis=0),
                                           np.sort(mine.xyz, axis=0), atol=1e-3)
        self.assertEqual(total, combined.getSize())
        self.assertGreater(min(self.classSet(n).getSize() for n in names), 0)

    def test_evaluation_matches_classes_by_name(self) -> None:
        """Reference 'truth ribosome' (given first) is scored against the picks of class
        ribosome (group 2), not against group 1 (apoferritin)."""
        result = self.evaluate.getEvaluation()
        self.assertEqual(set(result["per_class"]), {f"truth_{n}" for n in CLASSES})
        for name in CLASSES:
            scores = result["per_class"][f"truth_{name}"]
            self.assertEqual(scores["tp"] + scores["fp"], self.classSet(name).getSize())
            self.assertEqual(scores["tp"] + scores["fn"], PER_TOMOGRAM * TOMOGRAMS)
            self.assertGreater(scores["recall"], 0.5)
        self.assertEqual(result["pooled"]["tp"] + result["pooled"]["fp"],
                         getattr(self.pick, OUTPUT_COORDINATES).getSize())

    def test_export_keeps_one_class_in_place(self) -> None:
        """The text export (whole voxels, no sampling rate in the files) and the set
        imported back from it: same particles, positions and sampling rate."""
        picks = self.classSet("ribosome")
        self.assertEqual(self.reimported.getSize(), picks.getSize())
        self.assertAlmostEqual(self.reimported.getSamplingRate(), picks.getSamplingRate())
        for ts_id, tomo in tomograms_by_tsid(self.tomograms).items():
            expected = np.trunc(np.array([c.getPosition(tomo_const.BOTTOM_LEFT_CORNER)
                                          for c in picks.iterCoordinates(volume=tomo)]))
            path = Path(self.export._getExportPath(f"{ts_id}.txt"))
            if not len(expected):
                self.assertFalse(path.exists())
                continue
            exported = np.loadtxt(path, ndmin=2)
            np.testing.assert_allclose(np.sort(exported, axis=0), np.sort(expected, axis=0))
            back = coordinate_table(self.reimported, tomo, 1.0, lambda c: "ribosome")
            np.testing.assert_allclose(np.sort(back.xyz, axis=0), np.sort(expected, axis=0),
                                       atol=1e-3)

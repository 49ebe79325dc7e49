"""pyworkflow viewers of SaSi models, picks and evaluations.

Each viewer draws PNG files into the viewer's temporary folder (``pngs(obj)``,
usable without a display, which the tests do) and shows them as figures.
"""

from __future__ import annotations

import json
import os

from pyworkflow.viewer import DESKTOP_TKINTER, View, Viewer

from ..constants import OUTPUT_COORDINATES, PICKS_SUFFIX
from ..engine.coordinates import read_particles
from ..engine.model_card import sidecar_paths
from ..engine.mrc_io import read_volume
from ..objects import SaSiModel
from ..protocols import ProtSaSiEvaluate, ProtSaSiPick, ProtSaSiPretrain, ProtSaSiTrain
from ..protocols.protocol_base import tomogram_path
from . import plots


class PngView(View):
    """Shows PNG files in a matplotlib window."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def show(self) -> None:
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        for path in self.paths:
            fig, ax = plt.subplots()
            ax.imshow(mpimg.imread(path))
            ax.set_axis_off()
            ax.set_title(os.path.basename(path))
        plt.show()


class _PngViewer(Viewer):
    """Base of the SaSi viewers: each subclass defines ``pngs(obj) -> PNG paths``."""

    _environments = [DESKTOP_TKINTER]

    def _visualize(self, obj, **kwargs) -> list[View]:
        return [PngView(self.pngs(obj))]

    def _png(self, name: str) -> str:
        os.makedirs(self._getTmpPath(), exist_ok=True)
        return self._getTmpPath(name)


class SaSiTrainingViewer(_PngViewer):
    """Training curves of a SaSi model: loss per iteration and phase."""

    _label = "SaSi training curves"
    _targets = [SaSiModel, ProtSaSiTrain, ProtSaSiPretrain]

    def pngs(self, obj) -> list[str]:
        model = obj if isinstance(obj, SaSiModel) else obj.outputModel
        log = sidecar_paths(model.getPath())[1]
        with open(log) as handle:
            history = [json.loads(line) for line in handle if line.strip()]
        return [plots.save(plots.training_curves(history), self._png("sasi_training.png"))]


class SaSiPicksViewer(_PngViewer):
    """Picks of each tomogram over z sections, and the score histogram."""

    _label = "SaSi picks"
    _targets = [ProtSaSiPick]

    def pngs(self, obj) -> list[str]:
        model = obj.inputModel.get()
        names, radii = model.getClassNames(), model.getRadii()
        output = getattr(obj, OUTPUT_COORDINATES)
        paths = []
        for tomo in output.getPrecedents().iterItems():
            ts_id = tomo.getTsId()
            picks_file = obj._getExtraPath(f"{ts_id}{PICKS_SUFFIX}")
            if not os.path.exists(picks_file):
                continue
            picks = read_particles(picks_file, allow_empty=True)
            volume = read_volume(tomogram_path(tomo)).data
            paths.append(plots.save(plots.picks_over_slices(volume, picks, names, radii),
                                    self._png(f"sasi_picks_{ts_id}.png")))
            paths.append(plots.save(plots.score_histogram(picks),
                                    self._png(f"sasi_scores_{ts_id}.png")))
        return paths


class SaSiEvaluationViewer(_PngViewer):
    """The evaluation table: precision, recall and F1 per class and pooled."""

    _label = "SaSi evaluation"
    _targets = [ProtSaSiEvaluate]

    def pngs(self, obj) -> list[str]:
        return [plots.save(plots.evaluation_table(obj.getEvaluation()),
                           self._png("sasi_evaluation.png"))]

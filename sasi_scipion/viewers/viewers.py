"""pyworkflow viewers of SaSi models, picks and evaluations ("Analyze results").

Each viewer's ``_visualize`` returns Tk views (:mod:`.tk_windows`) that open
windows in the Scipion GUI; ``pngs(obj)`` draws the same figures into PNG files
in the viewer's temporary folder, without a display (reports and tests).
"""

from __future__ import annotations

import json
import os

from matplotlib.figure import Figure
from pyworkflow.protocol import Protocol
from pyworkflow.viewer import DESKTOP_TKINTER, View, Viewer

from ..constants import OUTPUT_COORDINATES, PICKS_SUFFIX
from ..engine.coordinates import read_particles
from ..engine.model_card import sidecar_paths
from ..engine.mrc_io import read_volume
from ..objects import SaSiModel
from ..protocols import ProtSaSiEvaluate, ProtSaSiPick, ProtSaSiPretrain, ProtSaSiTrain
from ..protocols.protocol_base import tomogram_path
from . import plots
from .picks_window import PicksBrowser, TomogramPicks
from .tk_windows import FigureView, TkView


class _SaSiViewer(Viewer):
    """Base of the SaSi viewers: each subclass defines ``figures(obj)`` as
    ``(name, figure)`` pairs; :meth:`pngs` saves them, ``_visualize`` shows them."""

    _environments = [DESKTOP_TKINTER]

    def figures(self, obj) -> list[tuple[str, Figure]]:
        raise NotImplementedError

    def _visualize(self, obj, **kwargs) -> list[View]:
        return [FigureView(self.window_title(obj), figure, self.getTkRoot())
                for _, figure in self.figures(obj)]

    def window_title(self, obj) -> str:
        """``<viewer label>: <run label>`` (of the protocol, or of the one that made
        ``obj``)."""
        owner = obj if self.protocol is None or isinstance(obj, Protocol) else self.protocol
        return f"{self._label}: {owner.getObjLabel() or owner.getClassName()}"

    def pngs(self, obj) -> list[str]:
        """The figures as PNG files in the viewer's temporary folder; their paths."""
        os.makedirs(self._getTmpPath(), exist_ok=True)
        return [plots.save(figure, self._getTmpPath(f"{name}.png"))
                for name, figure in self.figures(obj)]


def _history(model: SaSiModel) -> list[dict]:
    """The loss history of a model: its JSON-lines log, one record per iteration."""

    with open(sidecar_paths(model.getPath())[1]) as handle:
        return [json.loads(line) for line in handle if line.strip()]


class SaSiTrainingViewer(_SaSiViewer):
    """Training curves of a SaSi model: the total loss by phase and each loss term."""

    _label = "SaSi training curves"
    _targets = [SaSiModel, ProtSaSiTrain, ProtSaSiPretrain]

    def figures(self, obj) -> list[tuple[str, Figure]]:
        model = obj if isinstance(obj, SaSiModel) else obj.outputModel
        return [("sasi_training", plots.training_curves(_history(model),
                                                        self.window_title(obj)))]


class SaSiPicksViewer(_SaSiViewer):
    """The picks browser (z slices, tomogram chooser, counts, scores, class averages);
    as PNGs, per tomogram four z slices and the summary."""

    _label = "SaSi picks"
    _targets = [ProtSaSiPick]

    def tomograms(self, obj) -> list[TomogramPicks]:
        """The picked tomograms of a pick protocol, in the set's order."""
        found = []
        for tomo in getattr(obj, OUTPUT_COORDINATES).getPrecedents().iterItems():
            picks_file = obj._getExtraPath(f"{tomo.getTsId()}{PICKS_SUFFIX}")
            if os.path.exists(picks_file):
                found.append(TomogramPicks(tomo.getTsId(), tomogram_path(tomo),
                                           read_particles(picks_file, allow_empty=True)))
        return found

    @staticmethod
    def _classes(obj) -> tuple[list[str], list[float]]:
        model = obj.inputModel.get()
        return model.getClassNames(), model.getRadii()

    def figures(self, obj) -> list[tuple[str, Figure]]:
        names, radii = self._classes(obj)
        out = []
        for entry in self.tomograms(obj):
            volume = read_volume(entry.volume_path, check_values=False).data
            out += [(f"sasi_picks_{entry.ts_id}",
                     plots.picks_overview(volume, entry.picks, names, radii, entry.ts_id)),
                    (f"sasi_picks_summary_{entry.ts_id}",
                     plots.picks_summary(volume, entry.picks, names, radii, entry.ts_id))]
        return out

    def _visualize(self, obj, **kwargs) -> list[View]:
        names, radii = self._classes(obj)
        tomograms = self.tomograms(obj)
        if not tomograms:
            return [self.infoMessage("No picks yet: the pick protocol has not finished a "
                                     "tomogram.", "SaSi picks")]
        return [TkView(self.window_title(obj),
                       lambda window: PicksBrowser(window, tomograms, names, radii),
                       self.getTkRoot())]


class SaSiEvaluationViewer(_SaSiViewer):
    """The evaluation table: per class, class-aware total and class-agnostic scores."""

    _label = "SaSi evaluation"
    _targets = [ProtSaSiEvaluate]

    def figures(self, obj) -> list[tuple[str, Figure]]:
        return [("sasi_evaluation", plots.evaluation_table(obj.getEvaluation()))]

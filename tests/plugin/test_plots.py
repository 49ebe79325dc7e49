"""The viewers' figures on small synthetic data: what a user must be able to read
(tomogram names, every loss term's axis, labelled class-aware and class-agnostic
scores, class averages), and that importing the viewers switches no backend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.metrics import Evaluation, Scores
from sasi_scipion.evaluation_report import CLASS_AGNOSTIC, CLASS_AWARE, report_rows
from sasi_scipion.viewers import plots
from sasi_scipion.viewers.averages import class_averages, half_box

NAMES, RADII = ["disc", "rod"], [3.0, 4.0]


def _volume_with_balls() -> tuple[np.ndarray, ParticleTable]:
    """A (24, 40, 40) volume of noise with bright balls at the picks of class disc and
    dark ones at those of rod."""
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 0.1, (24, 40, 40)).astype(np.float32)
    xyz = np.array([[10, 10, 12], [30, 12, 11], [12, 28, 12], [28, 30, 13]], dtype=float)
    classes = np.array(["disc", "disc", "rod", "rod"], dtype=object)
    z, y, x = np.indices(volume.shape)
    for (px, py, pz), name in zip(xyz, classes):
        ball = (x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2 <= 9
        volume[ball] += 1.0 if name == "disc" else -1.0
    return volume, ParticleTable(xyz, classes, np.array([0.9, 0.8, 0.6, 0.7]))


def test_class_averages_show_the_particle_at_the_centre() -> None:
    volume, picks = _volume_with_balls()
    disc, rod = class_averages(volume, picks, NAMES, RADII)
    assert (disc.count, rod.count) == (2, 2)
    half = half_box(3.0)
    assert disc.average.shape == (2 * half + 1,) * 3
    assert disc.average[half, half, half] > 0.8 > abs(disc.average[0, 0, 0])
    assert rod.average[half_box(4.0)].min() < -0.8
    shifted = ParticleTable(picks.xyz + 6, picks.classes)
    assert class_averages(volume, shifted, NAMES, RADII)[0].average[half, half, half] < 0.5


def test_picks_figures_name_the_tomogram_and_count_per_class() -> None:
    volume, picks = _volume_with_balls()
    overview = plots.picks_overview(volume, picks, NAMES, RADII, "tomo_042")
    assert "tomo_042" in overview.get_suptitle()
    legend = [t.get_text() for t in overview.legends[0].get_texts()]
    assert legend == ["disc (2)", "rod (2)"]
    circles = sum(len(ax.patches) for ax in overview.axes)
    assert circles >= 4
    summary = plots.picks_summary(volume, picks, NAMES, RADII, "tomo_042")
    assert "tomo_042" in summary.get_suptitle()
    counts_ax = summary.axes[0]
    assert [round(p.get_height()) for p in counts_ax.patches] == [2, 2]
    titles = [ax.get_title() for ax in summary.axes]
    assert "disc: mean of 2" in titles and "rod: mean of 2" in titles


def test_every_training_panel_has_labelled_y_ticks() -> None:
    history = [{"iteration": i + 1, "phase": "ssl" if i < 5 else "supervised",
                "loss": 1.0 / (i + 1), "loss_ssl": 4.1 + 1e-4 * i, "loss_sup": 0.5 - 0.01 * i}
               for i in range(20)]
    fig = plots.training_curves(history, "SaSi training: pretrain")
    fig.canvas.draw()
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_ylabel()
        assert any(t.get_text() for t in ax.get_yticklabels()), ax.get_ylabel()
    assert [ax.get_ylabel() for ax in fig.axes[1:]] == ["SimCLR", "supervised (Dice + focal)"]


def test_evaluation_rows_say_which_total_needs_the_class() -> None:
    # one disc pick lands on a rod: a hit class-agnostic, a miss class-aware
    evaluation = Evaluation("distance", Scores(tp=3, fp=0, fn=0),
                            {"disc": Scores(tp=1, fp=1, fn=0), "rod": Scores(tp=1, fp=0, fn=1)})
    rows = dict(report_rows(evaluation.to_dict()))
    assert rows[CLASS_AWARE] == Scores(tp=2, fp=1, fn=1)
    assert rows[CLASS_AGNOSTIC].f1 == pytest.approx(1.0)
    assert rows[CLASS_AWARE].f1 == pytest.approx(2 / 3)
    fig = plots.evaluation_table(evaluation.to_dict())
    fig.canvas.draw()
    texts = {c.get_text().get_text() for c in fig.axes[0].tables[0].get_celld().values()}
    assert {CLASS_AWARE, CLASS_AGNOSTIC, "disc", "rod", "0.667", "1.000"} <= texts


def test_importing_the_viewers_switches_no_backend() -> None:
    code = ("import matplotlib; matplotlib.use('svg'); import sasi_scipion.viewers; "
            "print(matplotlib.get_backend())")
    backend = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    assert backend == "svg"

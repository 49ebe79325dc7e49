"""Figures of the SaSi viewers, as ``matplotlib.figure.Figure`` objects.

No pyplot and no backend switch: a figure is saved as a PNG (:func:`save`) or
drawn on a Tk canvas (:mod:`.tk_windows`), so the viewers leave every other
plugin's matplotlib as it was. Volumes are ``(z, y, x)``; particle positions
voxels ``(x, y, z)``; radii voxels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from ..engine.coordinates import ParticleTable
from ..evaluation_report import COLUMNS, format_cells, report_rows
from .averages import class_averages

PHASE_COLOURS = {"ssl": "tab:orange", "supervised": "tab:blue"}
UNKNOWN_CLASS_COLOUR = "white"
PNG_DPI = 80
LABEL_COLUMN_WIDTH = 0.34
"""Share of the evaluation table's width given to the row labels."""
SCORE_BINS = 20
CONTRAST_PERCENTILES = (1, 99)
"""Grey levels of a tomogram slice span these percentiles of the whole volume."""
TERM_NAMES = {"loss_sup": "supervised (Dice + focal)", "loss_ssl": "SimCLR",
              "loss_cons": "consistency (weighted)"}
"""Readable names of the engine's loss terms; others show their key without ``loss_``."""


def class_colour(index: int) -> tuple[float, float, float, float]:
    """The colour of the class at ``index`` in the model's class order (tab10)."""
    return matplotlib.colormaps["tab10"](index % 10)


def contrast(volume: np.ndarray) -> tuple[float, float]:
    """``(low, high)`` grey levels for every slice of ``volume``."""
    low, high = np.percentile(volume, CONTRAST_PERCENTILES)
    return float(low), float(high)


def training_curves(history: Sequence[dict], title: str = "SaSi training") -> Figure:
    """The total loss per iteration coloured by phase, then one panel per loss term
    (its own linear y axis, so every term is readable), over a shared iteration axis."""
    terms = sorted({k for row in history for k in row if k.startswith("loss_")})
    fig = Figure(figsize=(8, 2.2 * (1 + len(terms))))
    axes = np.atleast_1d(fig.subplots(1 + len(terms), 1, sharex=True))
    iterations = np.array([row["iteration"] for row in history])
    losses = np.array([row["loss"] for row in history])
    for phase, colour in PHASE_COLOURS.items():
        chosen = np.array([row["phase"] == phase for row in history], dtype=bool)
        if chosen.any():
            axes[0].scatter(iterations[chosen], losses[chosen], s=4, color=colour,
                            label=f"{phase} phase")
    axes[0].set_ylabel("total loss")
    axes[0].legend(loc="upper right")
    for ax, term in zip(axes[1:], terms):
        x, y = zip(*[(row["iteration"], row[term]) for row in history if term in row])
        ax.plot(x, y, lw=0.8, color="tab:gray")
        ax.set_ylabel(TERM_NAMES.get(term, term[5:]))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_slice(ax: Axes, volume: np.ndarray, z: int, picks: ParticleTable,
               class_names: Sequence[str], radii: Sequence[float],
               grey: tuple[float, float]) -> None:
    """Slice ``z`` of ``volume`` with the picks that cut it: circles coloured by class,
    of the particle's cross-section at this ``z`` (radius ``sqrt(r² - dz²)``)."""
    ax.imshow(volume[z], cmap="gray", vmin=grey[0], vmax=grey[1], origin="lower")
    radius_of = dict(zip(class_names, radii))
    order = {name: i for i, name in enumerate(class_names)}
    for (x, y, pz), name in zip(picks.xyz, picks.classes):
        r = radius_of.get(name, min(radii, default=5.0))
        if abs(pz - z) < r:
            colour = class_colour(order[name]) if name in order else UNKNOWN_CLASS_COLOUR
            ax.add_patch(Circle((x, y), np.sqrt(r**2 - (pz - z) ** 2), fill=False,
                                color=colour, lw=1.4))
    ax.set_xlim(-0.5, volume.shape[2] - 0.5)
    ax.set_ylim(-0.5, volume.shape[1] - 0.5)


def class_legend(fig: Figure, picks: ParticleTable, class_names: Sequence[str]) -> None:
    """A legend at the bottom of ``fig``: one circle per class with its pick count."""
    handles = [Line2D([], [], marker="o", ls="", mfc="none", color=class_colour(i),
                      label=f"{name} ({int(np.sum(picks.classes == name))})")
               for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), frameon=False)


def picks_overview(volume: np.ndarray, picks: ParticleTable, class_names: Sequence[str],
                   radii: Sequence[float], ts_id: str, sections: int = 4) -> Figure:
    """``sections`` evenly spaced z slices of one tomogram with its picks."""
    depth = volume.shape[0]
    zs = np.linspace(0, depth - 1, sections + 2)[1:-1].round().astype(int)
    fig = Figure(figsize=(4 * sections, 4.6))
    grey = contrast(volume)
    for ax, z in zip(np.atleast_1d(fig.subplots(1, sections)), zs):
        draw_slice(ax, volume, int(z), picks, class_names, radii, grey)
        ax.set_title(f"z = {z}")
        ax.set_axis_off()
    class_legend(fig, picks, class_names)
    fig.suptitle(f"{ts_id}: {len(picks)} picks")
    return fig


def picks_summary(volume: np.ndarray, picks: ParticleTable, class_names: Sequence[str],
                  radii: Sequence[float], ts_id: str) -> Figure:
    """A new figure drawn by :func:`draw_picks_summary`."""
    fig = Figure(figsize=(2.6 * max(2, len(class_names)) + 1, 7.5))
    draw_picks_summary(fig, volume, picks, class_names, radii, ts_id)
    return fig


def draw_picks_summary(fig: Figure, volume: np.ndarray, picks: ParticleTable,
                       class_names: Sequence[str], radii: Sequence[float], ts_id: str) -> None:
    """Into ``fig`` (cleared first): picks per class, the score histogram per class and,
    per class, the central xy and xz slices of the average of the boxes around its
    picks (no alignment)."""
    fig.clear()
    columns = max(2, len(class_names))
    grid = fig.add_gridspec(3, columns, height_ratios=[1.2, 1, 1])
    top = grid[0, :].subgridspec(1, 2, wspace=0.35)
    counts_ax, hist_ax = fig.add_subplot(top[0]), fig.add_subplot(top[1])
    counts = [int(np.sum(picks.classes == name)) for name in class_names]
    colours = [class_colour(i) for i in range(len(class_names))]
    counts_ax.bar(range(len(class_names)), counts, color=colours)
    counts_ax.set_xticks(range(len(class_names)), class_names)
    counts_ax.set_ylabel("picks")
    scores = picks.scores if picks.scores is not None else np.zeros(len(picks))
    for name, colour in zip(class_names, colours):
        hist_ax.hist(scores[picks.classes == name], bins=SCORE_BINS, range=(0, 1), alpha=0.6,
                     color=colour, label=name)
    hist_ax.set_xlabel("score (mean class probability)")
    hist_ax.set_ylabel("picks")
    for column, (average, colour) in enumerate(
            zip(class_averages(volume, picks, class_names, radii), colours)):
        xy, xz = fig.add_subplot(grid[1, column]), fig.add_subplot(grid[2, column])
        xy.set_title(f"{average.name}: mean of {average.count}", color=colour, fontsize=9)
        if average.average is not None:
            centre = average.average.shape[0] // 2
            xy.imshow(average.average[centre], cmap="gray", origin="lower")
            xz.imshow(average.average[:, centre, :], cmap="gray", origin="lower")
        xy.set_ylabel("xy (centre z)", fontsize=8)
        xz.set_ylabel("xz (centre y)", fontsize=8)
        for ax in (xy, xz):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{ts_id}: {len(picks)} picks")
    fig.tight_layout()


def evaluation_table(result: dict) -> Figure:
    """The evaluation (``Evaluation.to_dict()``) as a table: per class, the class-aware
    total and the class-agnostic scores, each labelled."""
    rows = report_rows(result)
    fig = Figure(figsize=(9, 1.4 + 0.4 * len(rows)))
    ax = fig.add_subplot()
    ax.set_axis_off()
    table = ax.table(cellText=[[label, *format_cells(s)] for label, s in rows],
                     colLabels=["class", *COLUMNS], loc="center", cellLoc="center",
                     colWidths=[LABEL_COLUMN_WIDTH] + [(1 - LABEL_COLUMN_WIDTH) / len(COLUMNS)]
                     * len(COLUMNS))
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    table.scale(1, 1.6)
    for (row, column), cell in table.get_celld().items():
        if column == 0 and row > 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.03
        if row >= len(rows) - 1:
            cell.set_text_props(fontweight="bold")
    ax.set_title(f"SaSi evaluation ({result['rule']} rule)", fontsize=13)
    fig.text(0.5, 0.02, "class-aware: a pick is a hit only on a particle of its own class\n"
             "class-agnostic: a pick of any class may match any particle",
             ha="center", va="bottom", fontsize=10)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> str:
    """Write ``fig`` as a PNG; return the path."""
    fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
    return str(path)

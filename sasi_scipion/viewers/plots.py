"""Figures of the SaSi viewers, drawable without a display (matplotlib Agg).

Volumes are ``(z, y, x)``; particle positions voxels ``(x, y, z)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..engine.coordinates import ParticleTable

PHASE_COLOURS = {"ssl": "tab:orange", "supervised": "tab:blue"}


def training_curves(history: Sequence[dict]) -> Figure:
    """Loss per iteration, coloured by phase, with each loss term below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    iterations = np.array([row["iteration"] for row in history])
    losses = np.array([row["loss"] for row in history])
    for phase, colour in PHASE_COLOURS.items():
        chosen = np.array([row["phase"] == phase for row in history])
        if chosen.any():
            top.scatter(iterations[chosen], losses[chosen], s=4, color=colour, label=phase)
    top.set_ylabel("total loss")
    top.legend()
    terms = sorted({k for row in history for k in row if k.startswith("loss_")})
    for term in terms:
        points = [(row["iteration"], row[term]) for row in history if term in row]
        bottom.plot(*zip(*points), lw=0.8, label=term[5:])
    bottom.set_xlabel("iteration")
    bottom.set_ylabel("loss term")
    bottom.set_yscale("symlog", linthresh=1e-3)
    bottom.legend()
    fig.suptitle("SaSi training")
    fig.tight_layout()
    return fig


def picks_over_slices(volume: np.ndarray, picks: ParticleTable, class_names: Sequence[str],
                      radii: Sequence[float], sections: int = 4) -> Figure:
    """``sections`` z slices with the picks near each slice: circles coloured by class,
    sized by the class radius (shrunk with the distance from the slice)."""
    depth = volume.shape[0]
    zs = np.linspace(0, depth - 1, sections + 2)[1:-1].round().astype(int)
    fig, axes = plt.subplots(1, sections, figsize=(4 * sections, 4.4))
    colours = plt.get_cmap("tab10")
    radius_of = dict(zip(class_names, radii))
    low, high = np.percentile(volume, [1, 99])
    for ax, z in zip(np.atleast_1d(axes), zs):
        ax.imshow(volume[z], cmap="gray", vmin=low, vmax=high)
        for (x, y, pz), name in zip(picks.xyz, picks.classes):
            r = radius_of.get(name, 5.0)
            if abs(pz - z) < r:
                shown = np.sqrt(r**2 - (pz - z) ** 2)
                colour = colours(list(class_names).index(name) % 10) \
                    if name in class_names else "white"
                ax.add_patch(plt.Circle((x, y), shown, fill=False, color=colour, lw=1.2))
        ax.set_title(f"z = {z}")
        ax.set_axis_off()
    handles = [plt.Line2D([], [], marker="o", ls="", mfc="none", color=colours(i % 10), label=n)
               for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)))
    fig.suptitle(f"{len(picks)} picks")
    return fig


def score_histogram(picks: ParticleTable) -> Figure:
    """Histogram of the pick scores, one colour per class."""
    fig, ax = plt.subplots(figsize=(6, 4))
    scores = picks.scores if picks.scores is not None else np.zeros(len(picks))
    for name in picks.class_names:
        ax.hist(scores[picks.classes == name], bins=20, range=(0, 1), alpha=0.6, label=name)
    ax.set_xlabel("score (mean class probability)")
    ax.set_ylabel("particles")
    if len(picks):
        ax.legend()
    fig.tight_layout()
    return fig


def evaluation_table(result: dict) -> Figure:
    """The evaluation (``Evaluation.to_dict()``) as a table figure."""
    rows = list(result["per_class"].items()) + [("pooled", result["pooled"])]
    cells = [[name, s["tp"], s["fp"], s["fn"], f"{s['precision']:.3f}", f"{s['recall']:.3f}",
              f"{s['f1']:.3f}"] for name, s in rows]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(cells)))
    ax.set_axis_off()
    ax.table(cellText=cells, colLabels=["class", "TP", "FP", "FN", "precision", "recall", "F1"],
             loc="center")
    ax.set_title(f"Evaluation ({result['rule']} rule)")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | os.PathLike) -> str:
    """Write ``fig`` as a PNG and close it; return the path."""
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)

"""The picks browser: a tomogram's z slices with its picks, and their summary.

Left: one z slice of the chosen tomogram with the picks that cut it (circles by
class and radius); a slider, buttons and the Up/Down keys move through z. Top: the
tomogram, chosen from the set. Right: picks per class, the score histogram and the
per-class average of the boxes around the picks. Volumes are ``(z, y, x)``;
positions voxels ``(x, y, z)``; radii voxels.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Sequence
from dataclasses import dataclass
from tkinter import ttk

import numpy as np
from matplotlib.figure import Figure

from ..engine.coordinates import ParticleTable
from ..engine.mrc_io import read_volume
from . import plots
from .tk_windows import figure_canvas


@dataclass
class TomogramPicks:
    """The picks of one tomogram and where its volume is."""

    ts_id: str
    volume_path: str
    picks: ParticleTable


class PicksBrowser:
    """The browser's widgets in ``master``; :meth:`show_tomogram` and :meth:`show_z`
    are what the controls call.

    Args:
        master: the window to fill.
        tomograms: one entry per tomogram of the set (in the set's order).
        class_names, radii: the model's classes and their radii (voxels), in order.
    """

    def __init__(self, master: tk.Misc, tomograms: Sequence[TomogramPicks],
                 class_names: Sequence[str], radii: Sequence[float]) -> None:
        self.tomograms = list(tomograms)
        self.class_names, self.radii = list(class_names), list(radii)
        self.volume = np.zeros((1, 1, 1), dtype=np.float32)
        self.grey = (0.0, 1.0)
        self.index = -1
        self.drawn_z = -1
        controls = ttk.Frame(master)
        controls.pack(side=tk.TOP, fill=tk.X, padx=6, pady=4)
        ttk.Label(controls, text="Tomogram:").pack(side=tk.LEFT)
        self.chooser = ttk.Combobox(controls, state="readonly", width=24,
                                    values=[t.ts_id for t in self.tomograms])
        self.chooser.pack(side=tk.LEFT, padx=4)
        self.chooser.bind("<<ComboboxSelected>>",
                          lambda _: self.show_tomogram(self.chooser.current()))
        ttk.Button(controls, text="z - 1", command=lambda: self.show_z(self.z.get() - 1)
                   ).pack(side=tk.LEFT, padx=(12, 2))
        self.z = tk.IntVar(master, 0)
        self.slider = tk.Scale(controls, orient=tk.HORIZONTAL, variable=self.z, length=300,
                               label="z slice", command=self._slider_moved)
        self.slider.pack(side=tk.LEFT)
        ttk.Button(controls, text="z + 1", command=lambda: self.show_z(self.z.get() + 1)
                   ).pack(side=tk.LEFT, padx=2)
        master.bind("<Up>", lambda _: self.show_z(self.z.get() + 1))
        master.bind("<Down>", lambda _: self.show_z(self.z.get() - 1))
        panes = ttk.Frame(master)
        panes.pack(side=tk.TOP, fill=tk.BOTH, expand=True)
        left, right = ttk.Frame(panes), ttk.Frame(panes)
        left.pack(side=tk.LEFT, fill=tk.BOTH, expand=True)
        right.pack(side=tk.LEFT, fill=tk.BOTH, expand=True)
        self.slice_figure = Figure(figsize=(6, 6.4))
        self.summary_figure = Figure(figsize=(2.2 * max(2, len(self.class_names)) + 1, 6.4))
        self.slice_canvas = figure_canvas(left, self.slice_figure)
        self.summary_canvas = figure_canvas(right, self.summary_figure)
        if self.tomograms:
            self.show_tomogram(0)

    def show_tomogram(self, index: int) -> None:
        """Read tomogram ``index``, draw its summary and its middle z slice."""
        entry = self.tomograms[index]
        self.index = index
        self.chooser.current(index)
        self.volume = read_volume(entry.volume_path, check_values=False).data
        self.grey = plots.contrast(self.volume)
        self.slider.configure(from_=0, to=self.volume.shape[0] - 1)
        plots.draw_picks_summary(self.summary_figure, self.volume, entry.picks,
                                 self.class_names, self.radii, entry.ts_id)
        self.summary_canvas.draw()
        self.show_z(self.volume.shape[0] // 2)

    def _slider_moved(self, value: str) -> None:
        if int(float(value)) != self.drawn_z:
            self.show_z(int(float(value)))

    def show_z(self, z: int) -> None:
        """Draw slice ``z`` (clipped to the volume) with the picks that cut it."""
        z = int(np.clip(z, 0, self.volume.shape[0] - 1))
        self.drawn_z = z
        self.z.set(z)
        entry = self.tomograms[self.index]
        self.slice_figure.clear()
        ax = self.slice_figure.add_subplot()
        plots.draw_slice(ax, self.volume, z, entry.picks, self.class_names, self.radii,
                         self.grey)
        ax.set_title(f"{entry.ts_id}   z = {z} of 0-{self.volume.shape[0] - 1}")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        plots.class_legend(self.slice_figure, entry.picks, self.class_names)
        self.slice_figure.subplots_adjust(bottom=0.16, top=0.93)
        self.slice_canvas.draw()

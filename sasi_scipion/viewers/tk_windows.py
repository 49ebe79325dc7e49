"""Tk windows for matplotlib figures, the way Scipion viewers show them.

In the Scipion GUI a view's ``show()`` runs inside the GUI's Tk main loop: a
window here is a ``Toplevel`` of the GUI's root and ``show()`` returns at once.
Called without a Tk root (a script), ``show()`` makes one and runs its main loop
until the window closes. Figures are drawn with ``FigureCanvasTkAgg``, which
leaves matplotlib's global backend alone.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from typing import Any

from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg, NavigationToolbar2Tk
from matplotlib.figure import Figure
from pyworkflow.viewer import View

WINDOW_PREFIX = "SaSi"
"""Every SaSi viewer window's title starts with this (tests find windows by it)."""
SCREEN_DPI = 90
"""Dots per inch of figures on screen."""


def new_window(title: str, tk_root: tk.Misc | None) -> tuple[tk.Toplevel | tk.Tk, bool]:
    """A window titled ``title``: a ``Toplevel`` of ``tk_root`` (or of the running Tk
    root), else a new ``Tk`` root; the flag says whether the caller must run its main
    loop (it owns the root)."""
    root = tk_root or tk._default_root  # the GUI's root when running inside Scipion
    window = tk.Tk() if root is None else tk.Toplevel(root)
    window.title(title)
    return window, root is None


def figure_canvas(master: tk.Misc, figure: Figure) -> FigureCanvasTkAgg:
    """``figure`` on a Tk canvas packed into ``master``, with matplotlib's zoom and save
    toolbar below it."""
    figure.set_dpi(SCREEN_DPI)
    canvas = FigureCanvasTkAgg(figure, master=master)
    bar = NavigationToolbar2Tk(canvas, master, pack_toolbar=False)
    bar.update()
    bar.pack(side=tk.BOTTOM, fill=tk.X)
    canvas.draw()
    canvas.get_tk_widget().pack(side=tk.TOP, fill=tk.BOTH, expand=True)
    return canvas


class TkView(View):
    """A view that builds its content into a new window when shown.

    Args:
        title: window title (``WINDOW_PREFIX`` is put in front when missing).
        build: ``build(window)`` fills the window with widgets; what it returns is
            kept as :attr:`content` (the widgets' owner).
        tk_root: the GUI's Tk root (``Viewer.getTkRoot()``), or ``None``.
    """

    def __init__(self, title: str, build: Callable[[tk.Misc], Any],
                 tk_root: tk.Misc | None = None) -> None:
        self.title = title if title.startswith(WINDOW_PREFIX) else f"{WINDOW_PREFIX} {title}"
        self._build = build
        self._tk_root = tk_root
        self.window: tk.Toplevel | tk.Tk | None = None
        self.content: Any = None

    def show(self) -> None:
        window, owns_loop = new_window(self.title, self._tk_root)
        self.window = window
        self.content = self._build(window)
        if owns_loop:
            window.mainloop()


class FigureView(TkView):
    """A matplotlib figure in its own window, with the toolbar."""

    def __init__(self, title: str, figure: Figure, tk_root: tk.Misc | None = None) -> None:
        super().__init__(title, lambda window: figure_canvas(window, figure), tk_root)
        self.figure = figure

""""Analyze results" under a virtual X display: each SaSi viewer, found and opened by
pyworkflow's viewer machinery with a pyworkflow window as its parent (as the project
window does), shows a window whose pixels are not blank; the picks browser moves
through z and between tomograms."""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk

import numpy as np
import pytest

from .xdisplay import (
    close_toplevels,
    grab,
    is_blank,
    save_screenshot,
    settle,
    toplevels,
    wait_for_window,
    widgets,
)

pytestmark = pytest.mark.slow


def _analyze(gui, project, protocol, target) -> tuple[object, str]:
    """What the project window's "Analyze results" does: the first viewer that
    pyworkflow finds for ``target``, with the window as parent, visualizes it."""
    from pyworkflow.plugin import Domain
    from pyworkflow.viewer import DESKTOP_TKINTER

    viewers = Domain.findViewers(target, DESKTOP_TKINTER)
    assert viewers, f"no viewer for {target.getClassName()}"
    viewer = viewers[0](project=project, protocol=protocol, parent=gui)
    viewer.visualize(target)
    return viewer, wait_for_window(viewer.window_title(target), lambda: settle(gui.root, 2))


def test_a_blank_window_counts_as_blank(gui) -> None:
    """The control of the checks below: an empty window is blank."""
    window = tk.Toplevel(gui.root)
    window.title("SaSi blank control")
    window.geometry("400x300")
    try:
        assert is_blank(grab(wait_for_window("SaSi blank control", lambda: settle(gui.root, 2))))
    finally:
        close_toplevels(gui.root)


@pytest.mark.parametrize("role,viewer_name,screenshot", [
    ("pretrain", "SaSiTrainingViewer", "viewer_pretrain"),
    ("train", "SaSiTrainingViewer", "viewer_train"),
    ("evaluate", "SaSiEvaluationViewer", "viewer_evaluate"),
])
def test_analyze_results_opens_a_figure_window(gui, project, tiny_workflow, role, viewer_name,
                                               screenshot) -> None:
    protocol = tiny_workflow.protocols[role]
    try:
        viewer, window = _analyze(gui, project, protocol, protocol)
        assert type(viewer).__name__ == viewer_name
        settle(gui.root)
        pixels = grab(window)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 400
        assert not is_blank(pixels)
        save_screenshot(pixels, screenshot)
    finally:
        close_toplevels(gui.root)


def test_model_output_opens_the_training_curves(gui, project, tiny_workflow) -> None:
    train = tiny_workflow.protocols["train"]
    try:
        viewer, window = _analyze(gui, project, train, train.outputModel)
        assert type(viewer).__name__ == "SaSiTrainingViewer"
        assert viewer.window_title(train.outputModel).endswith(train.getObjLabel())
        settle(gui.root)
        assert not is_blank(grab(window))
    finally:
        close_toplevels(gui.root)


def test_picks_browser_moves_through_z_and_tomograms(gui, project, tiny_workflow) -> None:
    pick = tiny_workflow.protocols["pick"]
    try:
        viewer, window = _analyze(gui, project, pick, pick)
        assert type(viewer).__name__ == "SaSiPicksViewer"
        settle(gui.root)
        middle = grab(window)
        assert not is_blank(middle)
        save_screenshot(middle, "viewer_picks")
        (top,) = toplevels(gui.root)
        (slider,) = widgets(top, tk.Scale)
        (chooser,) = widgets(top, ttk.Combobox)
        assert list(chooser["values"]) == ["tomo_000", "tomo_001"]
        assert chooser.get() == "tomo_000"
        depth = int(slider["to"]) + 1
        assert slider.get() == depth // 2
        slider.set(3)
        settle(gui.root)
        moved = grab(window)
        assert slider.get() == 3
        assert np.abs(moved.astype(int) - middle.astype(int)).sum(axis=2).astype(bool).mean() \
            > 0.01, "moving through z changed no pixel"
        chooser.current(1)
        chooser.event_generate("<<ComboboxSelected>>")
        settle(gui.root)
        other = grab(window)
        assert slider.get() == depth // 2
        assert np.abs(other.astype(int) - moved.astype(int)).sum(axis=2).astype(bool).mean() \
            > 0.01, "choosing the other tomogram changed no pixel"
    finally:
        close_toplevels(gui.root)

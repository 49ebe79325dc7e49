"""``bash scripts/gui`` opens a project of the demo's Scipion home in the real Scipion
GUI (pyworkflow's project window), under a virtual X display; without a display or
a project it ends with one line naming the fix."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import REPOSITORY, VIEWER_PROJECT, WORK
from .xdisplay import grab_drawn, save_screenshot, wait_for_window

GUI_SCRIPT = REPOSITORY / "scripts" / "gui"
STOP_WAIT_S = 30


@pytest.mark.slow
def test_scripts_gui_opens_the_project_window(tiny_workflow, x_display) -> None:
    gui = subprocess.Popen(["bash", str(GUI_SCRIPT), "--work", str(WORK), VIEWER_PROJECT],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        window = wait_for_window(VIEWER_PROJECT, lambda: _still_running(gui))
        pixels = grab_drawn(window, lambda: _still_running(gui))
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        save_screenshot(pixels, "project_window")
    finally:
        gui.terminate()
        gui.wait(timeout=STOP_WAIT_S)


def _still_running(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        raise AssertionError(f"scripts/gui ended ({process.returncode}):\n"
                             f"{process.stdout.read()}")


def test_scripts_gui_names_the_fix_without_a_display_or_project(tmp_path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    for args, fix in ((["--work", str(WORK)], "ssh -X"),
                      (["--work", str(tmp_path)], "bash scripts/demo")):
        (WORK / "scipion" / "data" / "projects").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["bash", str(GUI_SCRIPT), *args], env=environ,
                              capture_output=True, text=True)
        assert done.returncode == 2
        assert fix in done.stderr.strip().splitlines()[-1]

"""Headless Scipion for the plugin tests: a private SCIPION_HOME configured before
pyworkflow is imported, with the SLURM host configuration of ``deploy/`` (protocols
that do not ask for the queue run locally), and one demo workflow project shared by
the tests."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest

from sasi_scipion.scipion_env import configure

REPOSITORY = Path(__file__).resolve().parents[2]
SCIPION_ROOT = Path(tempfile.mkdtemp(prefix="sasi-scipion-tests-"))
WORK = SCIPION_ROOT / "work"
SCIPION_HOME = WORK / "scipion"
"""The home ``run_workflow(WORK)`` configures too, so tests and workflow share it."""

(SCIPION_HOME / "config").mkdir(parents=True)
(SCIPION_HOME / "config" / "hosts.conf").write_text(
    (REPOSITORY / "deploy" / "hosts-slurm.conf").read_text())
configure(SCIPION_HOME)

WORKFLOW_SHAPE = (48, 128, 128)
WORKFLOW_ITERATIONS = 120


@pytest.fixture(scope="session")
def workflow():
    """The README's workflow on a small easy data set (2 tomograms, 5 labels per class)."""
    from sasi_scipion.workflow_demo import run_workflow

    return run_workflow(WORK, tomograms=2, shape=WORKFLOW_SHAPE, labels=5,
                        pretrain_iterations=4, iterations=WORKFLOW_ITERATIONS, seed=1,
                        threads=2, project_name="sasi_tests")


@pytest.fixture(scope="session")
def x_display():
    """A virtual X display (Xvfb) as DISPLAY for the rest of the session."""
    from .xdisplay import start_virtual_display

    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = start_virtual_display()
    yield os.environ["DISPLAY"]
    if previous is None:
        os.environ.pop("DISPLAY")
    else:
        os.environ["DISPLAY"] = previous


@pytest.fixture(scope="session")
def gui(x_display):
    """A pyworkflow ``Window`` on the virtual display, standing for the project
    window: the parent of viewers and forms, as in the GUI."""
    from pyworkflow.gui import Window

    window = Window("SaSi test host")
    yield window
    window.root.master.destroy()


VIEWER_PROJECT = "sasi_viewers"
"""Name of the tiny workflow project that the GUI tests open."""
TINY_ITERATIONS = 6


@pytest.fixture(scope="session")
def tiny_workflow_log() -> io.StringIO:
    """What the tiny workflow printed (each step's start, progress and end)."""
    return io.StringIO()


@pytest.fixture(scope="session")
def tiny_workflow(tiny_workflow_log):
    """The workflow with tiny settings (a few iterations on small tomograms): real
    outputs of every protocol for the viewers, forms and GUI tests, not good picks."""
    from sasi_scipion.workflow_demo import run_workflow

    return run_workflow(WORK, tomograms=2, shape=(32, 80, 80), labels=3,
                        pretrain_iterations=2, iterations=TINY_ITERATIONS, seed=0,
                        threads=2, project_name=VIEWER_PROJECT, log=tiny_workflow_log)


@pytest.fixture(scope="session")
def project(tiny_workflow):
    """The tiny workflow's project, loaded as the GUI loads it."""
    from pyworkflow.project import Manager

    return Manager().loadProject(VIEWER_PROJECT)

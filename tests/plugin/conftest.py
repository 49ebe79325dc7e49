"""Headless Scipion for the plugin tests: a private SCIPION_HOME configured before
pyworkflow is imported, with the SLURM host configuration of ``deploy/`` (protocols
that do not ask for the queue run locally), and one demo workflow project shared by
the tests."""

from __future__ import annotations

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

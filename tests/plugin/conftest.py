"""Headless Scipion for the plugin tests: a private SCIPION_HOME configured before
pyworkflow is imported, and one demo workflow project shared by the tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from sasi_scipion.scipion_env import configure

SCIPION_ROOT = Path(tempfile.mkdtemp(prefix="sasi-scipion-tests-"))
configure(SCIPION_ROOT / "scipion")

WORKFLOW_SHAPE = (48, 128, 128)
WORKFLOW_ITERATIONS = 120


@pytest.fixture(scope="session")
def workflow():
    """The README's workflow on a small easy data set (2 tomograms, 5 labels per class)."""
    from sasi_scipion.workflow_demo import run_workflow

    return run_workflow(SCIPION_ROOT / "work", tomograms=2, shape=WORKFLOW_SHAPE, labels=5,
                        pretrain_iterations=4, iterations=WORKFLOW_ITERATIONS, seed=1,
                        threads=2, project_name="sasi_tests")

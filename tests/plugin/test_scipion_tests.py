"""``scipion3 tests`` finds and passes the plugin's own Scipion tests
(``sasi_scipion.tests``): pyworkflow's test runner, in a fresh process, under the
headless configuration of ``conftest.py``."""

from __future__ import annotations

import re
import subprocess
import sys
import unittest

import pytest

RUNNER = [sys.executable, "-m", "pyworkflow.apps.pw_run_tests"]
"""What ``scipion3 tests`` runs."""
WORKFLOW_TEST = "sasi_scipion.tests.test_workflow"


def _runner(*arguments: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNNER, *arguments], capture_output=True, text=True,
                          timeout=timeout)


def test_scipion_lists_the_plugin_tests() -> None:
    listed = _runner("--show", "--grep", "sasi", timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert f"{WORKFLOW_TEST}.TestSaSiWorkflow" in listed.stdout
    other = _runner("--show", "--grep", "no_such_plugin", timeout=300)  # control
    assert WORKFLOW_TEST not in other.stdout


@pytest.mark.slow
def test_scipion_runs_the_plugin_tests() -> None:
    """``scipion3 tests sasi_scipion.tests.test_workflow``: exit status 0 and every test
    passed (``--run --grep sasi`` runs the same class, but its exit status is always 0)."""
    from sasi_scipion.tests.test_workflow import TestSaSiWorkflow

    expected = unittest.defaultTestLoader.loadTestsFromTestCase(TestSaSiWorkflow).countTestCases()
    run = _runner(WORKFLOW_TEST, timeout=1800)
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)  # no colours
    assert run.returncode == 0, output[-4000:]
    assert f"[  PASSED  ] {expected} tests" in output, output[-4000:]

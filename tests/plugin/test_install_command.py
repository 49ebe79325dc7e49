"""What ``scipion3 installb sasi-engine`` runs: an environment from a source tree or a
wheel of sasi-scipion, never from a package index (``test_lean_install.py`` runs it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sasi_scipion.constants import SASI_ENGINE_SOURCE
from sasi_scipion.plugin import Plugin

REPOSITORY = Path(__file__).resolve().parents[2]


def test_default_source_is_the_checkout_of_an_editable_install() -> None:
    assert Plugin.engineSource() == str(REPOSITORY)
    command = Plugin.engineInstallCommand("/em/sasi-engine-0.1.0")
    assert f"pip install '{REPOSITORY}[engine]'" in command
    assert "sasi-scipion==" not in command


def test_a_wheel_named_by_the_variable_is_installed(monkeypatch) -> None:
    wheel = "/site/wheels/sasi_scipion-0.1.0-py3-none-any.whl"
    monkeypatch.setitem(Plugin._vars, SASI_ENGINE_SOURCE, wheel)
    assert f"pip install '{wheel}[engine]'" in Plugin.engineInstallCommand("/em/x")


def test_without_a_source_the_command_fails_with_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(Plugin, "engineSource", classmethod(lambda cls: None))
    done = subprocess.run(["bash", "-c", Plugin.engineInstallCommand("/em/x")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and SASI_ENGINE_SOURCE in done.stderr

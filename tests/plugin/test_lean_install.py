"""The facility recipe of docs/deployment.md, followed for real: Scipion's environment
holds the plugin without torch, the engine lives in its own environment made by the
plugin's ``defineBinaries`` (``scipion3 installb sasi-engine``) from this source tree,
and ``SASI_ENV_ACTIVATION`` joins them. The plugin's Scipion tests then pass in the
lean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sasi_scipion.constants import SASI_ENV_ACTIVATION, SASI_ENV_NAME
from sasi_scipion.scipion_env import HOSTS_CONF

REPOSITORY = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 1800
WORKFLOW_TEST = "sasi_scipion.tests.test_workflow"

pytestmark = pytest.mark.slow


class _Installer:
    """What ``defineBinaries`` sees of Scipion's installer (``scipion3 installb``): the
    em folder, and ``addPackage`` whose commands the installer runs in a shell."""

    def __init__(self, em_folder: Path) -> None:
        self.em_folder = em_folder
        self.packages: dict[str, dict] = {}

    def getEmFolder(self) -> str:
        return str(self.em_folder)

    def addPackage(self, name: str, **options) -> None:
        self.packages[name] = options


def _shell(command: str, timeout: float = INSTALL_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``command`` in bash, in ``/`` so that no checkout on the way shadows what is
    installed (``python -c`` puts the working directory first on ``sys.path``)."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          timeout=timeout, cwd="/")


@pytest.fixture(scope="module")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scipion3 installb sasi-engine``: run the commands ``defineBinaries`` gives."""
    from sasi_scipion.plugin import Plugin

    installer = _Installer(tmp_path_factory.mktemp("em"))
    Plugin.defineBinaries(installer)
    (command, targets), = installer.packages[SASI_ENV_NAME]["commands"]
    assert "sasi-scipion==" not in command and f"{REPOSITORY}[engine]" in command
    done = _shell(command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(Path(t).exists() for t in targets)
    return Path(targets[0]).parent


@pytest.fixture(scope="module")
def lean_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scipion's environment at a lean site: the plugin installed from this source tree
    without the engine extra."""
    home = tmp_path_factory.mktemp("lean") / "venv"
    done = _shell(f"{sys.executable} -m venv {home} && {home}/bin/pip install -q {REPOSITORY}")
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def test_the_engine_environment_is_built_from_this_source_tree(engine_env) -> None:
    version = _shell(f"{engine_env}/bin/sasi --version", timeout=300)
    assert version.returncode == 0 and version.stdout.startswith("sasi ")
    where = _shell(f"{engine_env}/bin/python -c 'import torch, sasi_scipion; "
                   "print(sasi_scipion.__file__)'", timeout=300)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(engine_env))


def test_scipions_environment_has_no_torch(lean_env) -> None:
    assert _shell(f"{lean_env}/bin/python -c 'import torch'", timeout=300).returncode != 0
    plugin = _shell(f"{lean_env}/bin/python -c 'import sasi_scipion; "
                    "print(sasi_scipion.__file__)'", timeout=300)
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout.strip().startswith(str(lean_env))


def test_lean_scipion_runs_the_workflow_with_the_separate_engine(lean_env, engine_env,
                                                                 tmp_path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "hosts.conf").write_text(HOSTS_CONF)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SCIPION_", "SASI_")) and key != "VIRTUAL_ENV"}
    env.update({
        "SCIPION_DOMAIN": "pwem", "SCIPION_HOME": str(tmp_path),
        "SCIPION_USER_DATA": str(tmp_path / "data"),
        "SCIPION_HOSTS": str(tmp_path / "config" / "hosts.conf"),
        "SCIPION_PYTHON": str(lean_env / "bin" / "python"), "SCIPION_TEST_NOSYNC": "1",
        "SCIPION_NOTIFY": "False", "PATH": f"{lean_env}/bin{os.pathsep}{env['PATH']}",
        SASI_ENV_ACTIVATION: f"source {engine_env}/bin/activate",  # as sites write it
    })
    run = subprocess.run([str(lean_env / "bin" / "python"), "-m",
                          "pyworkflow.apps.pw_run_tests", WORKFLOW_TEST],
                         capture_output=True, text=True, timeout=3600, env=env,
                         cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    logs = "".join(p.read_text(errors="replace")
                   for p in (tmp_path / "data").rglob("Runs/*ProtSaSiTrain/logs/run.stdout"))
    assert f". {engine_env}/bin/activate && " in logs  # runJob's /bin/sh may lack source

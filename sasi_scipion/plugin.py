"""The Scipion ``Plugin`` of SaSi: variables, the ``sasi`` command, optional binaries."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pwem
import pyworkflow.utils as pwutils

from .constants import SASI_DEFAULT_VERSION, SASI_ENGINE_SOURCE, SASI_ENV_ACTIVATION, SASI_ENV_NAME

__version__ = SASI_DEFAULT_VERSION
_references = ["Adethya2025"]
_logo = ""


class Plugin(pwem.Plugin):
    """SaSi few-shot particle picking for cryo-ET (few labels, self-augmented,
    self-interpreted). The heavy work runs as ``sasi`` command lines."""

    _url = "https://github.com/sasi-scipion/sasi-scipion"
    _processingField = ["TOMO"]

    @classmethod
    def _defineVariables(cls) -> None:
        cls._defineVar(
            SASI_ENV_ACTIVATION, "",
            description="Shell command activating a separate environment that holds the "
                        "'sasi' command (e.g. '. /opt/sasi/bin/activate' or "
                        "'conda activate sasi'). Empty: use Scipion's own environment.")
        cls._defineVar(
            SASI_ENGINE_SOURCE, "",
            description="The sasi-scipion source tree or wheel (.whl) that 'scipion3 "
                        "installb sasi-engine' installs with its engine extra. Empty: the "
                        "source tree this plugin was installed from in editable mode.")

    @classmethod
    def getEnviron(cls) -> pwutils.Environ:
        """Environment of ``sasi`` jobs: Scipion's, with unbuffered Python output so
        progress reaches the protocol log as it happens."""
        environ = pwutils.Environ(os.environ)
        environ["PYTHONUNBUFFERED"] = "1"
        return environ

    @classmethod
    def getSasiProgram(cls) -> str:
        """The program part of a ``runJob`` call: ``sasi`` of this environment, or
        ``<activation> && sasi`` when ``SASI_ENV_ACTIVATION`` is set. ``runJob`` runs
        commands with ``/bin/sh``, which on Debian and Ubuntu (dash) has no ``source``:
        a leading ``source`` becomes POSIX ``.``, which does the same."""
        activation = (cls.getVar(SASI_ENV_ACTIVATION) or "").strip()
        if activation.startswith("source "):
            activation = ". " + activation[len("source "):].lstrip()
        if activation:
            return f"{activation} && sasi"
        local = os.path.join(os.path.dirname(sys.executable), "sasi")
        return shlex.quote(local) if os.path.exists(local) else "sasi"

    @classmethod
    def engineSource(cls) -> str | None:
        """What ``scipion3 installb sasi-engine`` installs: ``SASI_ENGINE_SOURCE`` (a
        source tree or a wheel built from it), else the source tree holding this plugin
        (an editable install), else ``None``. Never a package index: sasi-scipion is not
        published on one."""
        given = (cls.getVar(SASI_ENGINE_SOURCE) or "").strip()
        if given:
            return os.path.abspath(os.path.expanduser(given))
        tree = Path(__file__).resolve().parents[1]
        return str(tree) if (tree / "setup.py").is_file() else None

    @classmethod
    def engineInstallCommand(cls, home: str) -> str:
        """The shell command that makes the engine environment ``home``: a virtual
        environment of Scipion's Python with :meth:`engineSource` and its ``engine``
        extra (torch, cc3d); it fails with the fix when there is no source."""
        source = cls.engineSource()
        if source is None:
            return (f"echo '{SASI_ENV_NAME}: set {SASI_ENGINE_SOURCE} to a sasi-scipion "
                    "source tree or wheel (scipion3 config) and install again' >&2 && false")
        return (f"{shlex.quote(sys.executable)} -m venv {shlex.quote(home)} && "
                f"{shlex.quote(home)}/bin/pip install {shlex.quote(source + '[engine]')} && "
                f"touch {shlex.quote(home)}/installed")

    @classmethod
    def defineBinaries(cls, env) -> None:
        """``scipion3 installb sasi-engine``: a separate virtual environment with the
        engine (torch, cc3d) for sites that keep Scipion's Python lean, installed from
        this source tree or a wheel built from it (:meth:`engineSource`). Point
        ``SASI_ENV_ACTIVATION`` at its ``bin/activate`` afterwards."""
        home = os.path.join(env.getEmFolder(), f"{SASI_ENV_NAME}-{SASI_DEFAULT_VERSION}")
        commands = [(cls.engineInstallCommand(home), [f"{home}/installed"])]
        env.addPackage(SASI_ENV_NAME, version=SASI_DEFAULT_VERSION, tar="void.tgz",
                       commands=commands, neededProgs=[], default=False)


# pyworkflow locates a plugin's folder through the module of its Plugin class
# (``sys.modules[Plugin.__module__].__path__``): report the package, from which
# ``sasi_scipion.Plugin`` is imported, rather than this module.
Plugin.__module__ = __package__

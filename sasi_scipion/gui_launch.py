"""Open a project of the demo's Scipion home in the Scipion GUI (``bash scripts/gui``).

The PyPI releases of Scipion have no ``scipion3`` launcher: the GUI is
pyworkflow's ``apps/pw_project.py``, which needs ``SCIPION_DOMAIN`` and the
demo's home (:func:`~sasi_scipion.scipion_env.configure`) in the environment and
``python -O``. Run: ``python -m sasi_scipion.gui_launch [--work DIR] [PROJECT]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .scipion_env import configure

DEFAULT_WORK = "demo-output"
"""The demo's work folder (relative to the repository, which ignores it)."""
SCIPION_SUBFOLDER = "scipion"
"""The Scipion home inside a work folder."""
LAST_PROJECT = "last"
"""pw_project.py's name for the most recently used project."""


def scipion_home(work: str | os.PathLike) -> Path:
    """The Scipion home (config, user data, projects) inside a work folder."""
    return Path(work).resolve() / SCIPION_SUBFOLDER


def gui_command(project: str) -> list[str]:
    """The command line that opens ``project`` in the GUI (it expects the environment
    of :func:`configure`)."""
    import pyworkflow

    script = Path(pyworkflow.__file__).parent / "apps" / "pw_project.py"
    return [sys.executable, "-O", str(script), project]


def how_to_open(work: str | os.PathLike, project: str) -> str:
    """A command a user can paste to open ``project`` of ``work`` in the GUI."""
    scripts_gui = Path(__file__).resolve().parents[1] / "scripts" / "gui"
    args = ["--work", str(Path(work).resolve()), project]
    if scripts_gui.exists():
        return shlex.join(["bash", str(scripts_gui), *args])
    return shlex.join([sys.executable, "-m", __name__, *args])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=DEFAULT_WORK,
                        help=f"the demo's work folder (default {DEFAULT_WORK})")
    parser.add_argument("project", nargs="?", default=LAST_PROJECT,
                        help="project name (default: the most recent one)")
    args = parser.parse_args(argv)
    home = scipion_home(args.work)
    if not (home / "data" / "projects").is_dir():
        print(f"error: no Scipion projects under {home}: run 'bash scripts/demo' first, or "
              "give the demo's --work folder", file=sys.stderr)
        return 2
    if not os.environ.get("DISPLAY"):
        print("error: no display (DISPLAY is empty): run this on a desktop, over 'ssh -X', "
              "or under a virtual display ('xvfb-run bash scripts/gui')", file=sys.stderr)
        return 2
    configure(home)
    command = gui_command(args.project)
    print(f"opening {args.project} of {home} in the Scipion GUI", file=sys.stderr)
    os.execv(command[0], command)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())

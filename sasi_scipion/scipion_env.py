"""A self-contained headless Scipion configuration for scripts and tests.

pyworkflow reads its configuration from the environment when it is first
imported, so ``configure`` must run before any pyworkflow import.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOSTS_CONF = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME = SCIPION_MACHINE
MANDATORY = False
QUEUE_SYSTEM = False
"""


def configure(home: str | os.PathLike) -> Path:
    """Point Scipion at ``home`` (``config/hosts.conf``, user data, projects) and at
    this Python; return the projects folder."""
    home = Path(home).resolve()
    (home / "config").mkdir(parents=True, exist_ok=True)
    hosts = home / "config" / "hosts.conf"
    if not hosts.exists():
        hosts.write_text(HOSTS_CONF)
    bin_dir = str(Path(sys.executable).parent)
    os.environ.update({
        "SCIPION_DOMAIN": "pwem",
        "SCIPION_HOME": str(home),
        "SCIPION_USER_DATA": str(home / "data"),
        "SCIPION_HOSTS": str(hosts),
        "SCIPION_PYTHON": sys.executable,
        "SCIPION_TEST_NOSYNC": "1",
        "SCIPION_NOTIFY": "False",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    })
    return home / "data" / "projects"

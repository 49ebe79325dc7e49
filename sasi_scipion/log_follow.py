"""Echo the lines that a running protocol writes to its log files, as they come.

pyworkflow runs a protocol in another process and sends the ``sasi`` command's
progress (iterations, elapsed time, ETA) to the protocol's ``logs/run.stderr``;
a script waiting for the protocol sees nothing unless someone follows the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

POLL_S = 1.0
"""Seconds between two looks at the files."""


class LogFollower:
    """Prints to ``stream`` every complete new line of the files that ``paths()`` names
    (looked up again at each poll: they may not exist yet), prefixed with ``prefix``."""

    def __init__(self, paths: Callable[[], list[str]], stream: TextIO, prefix: str) -> None:
        self._paths, self._stream, self._prefix = paths, stream, prefix
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, str] = {}

    def poll(self) -> None:
        """Print what was added to the files since the last poll (whole lines only)."""
        for path in self._paths():
            if not os.path.exists(path):
                continue
            with open(path, errors="replace") as handle:
                handle.seek(self._offsets.get(path, 0))
                text = self._partial.pop(path, "") + handle.read()
                self._offsets[path] = handle.tell()
            *lines, rest = text.split("\n")
            if rest:
                self._partial[path] = rest
            for line in lines:
                if line.strip():
                    print(f"{self._prefix}{line.rstrip()}", file=self._stream, flush=True)


@contextmanager
def following(paths: Callable[[], list[str]], stream: TextIO, prefix: str,
              poll_s: float = POLL_S) -> Iterator[LogFollower]:
    """Follow ``paths()`` in a background thread while the block runs, and print what
    is left once it ends."""
    follower = LogFollower(paths, stream, prefix)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(poll_s):
            follower.poll()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield follower
    finally:
        stop.set()
        thread.join()
        follower.poll()

"""Progress of long work: a line on stderr now and then, and a JSON-lines log."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO


class StepReport(Protocol):
    """What a long loop reports its steps to (:class:`ProgressLog`, :class:`Callback`)."""

    def update(self, step: int, **values: Any) -> None:
        """Record that ``step`` (1-based) is done, with named values."""


class Callback:
    """Steps reported to ``callback(step, total)``, or nowhere when it is ``None``."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.callback = callback

    def update(self, step: int, **values: Any) -> None:
        if self.callback is not None:
            self.callback(step, self.total)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLog:
    """Report ``step`` of ``total`` with an ETA on stderr and as JSON lines.

    Every :meth:`update` appends one JSON object to ``log_path`` (when given)
    with ``step_name`` (e.g. ``"iteration"``), the given values, ``elapsed_s``
    and ``eta_s``, and keeps it in :attr:`records`; a human line goes to
    ``stream`` at most every ``print_every_s`` seconds and at the last step.
    ``previous`` holds the records of an interrupted run that this one resumes:
    they are written first, and ``elapsed_s`` goes on from the last of them.
    The log is written where ``log_path`` says; callers give a temporary path
    (``atomic.atomic_output``) so that a failed run keeps the previous log.
    """

    def __init__(
        self,
        total: int,
        label: str,
        log_path: str | os.PathLike | None = None,
        step_name: str = "iteration",
        print_every_s: float = 5.0,
        stream: TextIO | None = None,
        previous: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.step_name = step_name
        self.print_every_s = print_every_s
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.records: list[dict[str, Any]] = []
        self._first_step = previous[-1][step_name] if previous else 0
        self._elapsed_before = previous[-1]["elapsed_s"] if previous else 0.0
        self._last_print = -float("inf")
        self._log: TextIO | None = None
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        for record in previous:
            self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

    def update(self, step: int, **values: Any) -> None:
        """Record that ``step`` (1-based) of ``total`` is done, with named values."""
        here = time.perf_counter() - self.start
        done_here = step - self._first_step
        eta = here / done_here * (self.total - step) if done_here > 0 else 0.0
        elapsed = self._elapsed_before + here
        record = {self.step_name: step, **values, "elapsed_s": round(elapsed, 3),
                  "eta_s": round(eta, 1)}
        self._write(record)
        now = time.perf_counter()
        if now - self._last_print >= self.print_every_s or step >= self.total:
            self._last_print = now
            shown = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
            )
            print(
                f"{self.label}: {self.step_name} {step}/{self.total} {shown} "
                f"elapsed {_clock(elapsed)} eta {_clock(eta)}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Shared output of the benchmark scripts: a JSON report naming the hardware."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import torch


def write_report(rows: list[dict], out: str | None, **extra: object) -> dict:
    """Print ``rows`` with the CPU, thread count and torch version as JSON; also write
    it to ``out`` when given. Returns the report."""
    report = {"cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, **extra,
              "rows": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")
    return report


def current_commit() -> str | None:
    """The short hash of the checkout these benchmarks run from (``None`` outside git,
    e.g. in a ``git archive`` snapshot)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=Path(__file__).parent).stdout.strip() or None

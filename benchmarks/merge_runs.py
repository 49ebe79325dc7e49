"""Several accuracy reports as one: their results together, with the summary (mean and
standard deviation over seeds per row and N, ``accuracy.summarise``) over all of them.

For seeds or label counts run in separate calls of ``accuracy.py`` (or rescored with
``recalibrate.py``) on the same data. ``--rename OLD=NEW`` gives a row another name
first (a rescored run's row under the name the harness gives it), ``--rows`` keeps only
the named rows (after renaming). A seed that two reports hold for the same row, N and
pick mode is refused: one of them would count twice. A ``precise_bn.py`` report counts
with its ``tomogram`` rows only: the same weights with the statistics training now
re-estimates after its last step (a fresh training reproduces them exactly;
``RESULTS.md``).

Usage: python benchmarks/merge_runs.py A.json B.json ... [--rename OLD=NEW ...]
       [--rows sasi ...] --out merged.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accuracy import summarise


def report_results(report: dict) -> list[dict]:
    """The scored rows of an ``accuracy.py`` report, or the ``tomogram`` rows of a
    ``precise_bn.py`` report (without its ``statistics`` field; picked tiled, as
    ``sasi pick`` does by default)."""
    if "results" in report:
        return report["results"]
    return [{"pick_mode": "tiled", **{k: v for k, v in row.items() if k != "statistics"}}
            for row in report["rows"] if row["statistics"] == "tomogram"]


def merge(reports: list[dict], renames: dict[str, str], rows: list[str] | None) -> list[dict]:
    """The results of ``reports``, rows renamed by ``renames`` and kept when in ``rows``
    (``None``: every row).

    Raises:
        SystemExit: one seed of one row, N and pick mode in two reports.
    """
    results, seen = [], set()
    for report in reports:
        for result in report_results(report):
            result = {**result, "row": renames.get(result["row"], result["row"])}
            if rows is not None and result["row"] not in rows:
                continue
            key = (result["row"], result["labels"], result.get("pick_mode"),
                   result.get("components"), result.get("min_score"), result["seed"])
            if key in seen:
                raise SystemExit(f"row {key[0]!r}, N = {key[1]}, seed {key[5]} is in two "
                                 "reports; give each seed once")
            seen.add(key)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    parser.add_argument("--rows", nargs="+")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    renames = dict(item.split("=", 1) for item in args.rename)
    reports = [json.loads(path.read_text()) for path in args.reports]
    results = merge(reports, renames, args.rows)
    merged = {"merged_from": [str(p) for p in args.reports], "renamed": renames,
              "command": " ".join(sys.argv), "summary": summarise(results),
              "results": results}
    args.out.write_text(json.dumps(merged, indent=2) + "\n")
    for entry in merged["summary"]:
        print({k: entry[k] for k in ("row", "labels", "seeds", "pooled_f1", "precision",
                                     "class_aware_f1") if k in entry})


if __name__ == "__main__":
    main()

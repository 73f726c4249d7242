"""The migration report: one JSON per run and one CSV across runs, under ``<reports-dir>/migration/``.

* ``migration-<provider>-<run id>.json``: every step of the run (per-node switch times, every probe stream and
  held connection with its disruption window, the rule audit of every node, the post-switch rows);
* ``windows.csv``: one line per stream or held connection per step, appended by every run, so runs in a row
  compare side by side (``run_id`` tells them apart).
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

CSV_FIELDS = ("run_id", "finished", "provider", "step", "from_mode", "to_mode", "kind", "vantage", "target", "address",
              "window_ms", "bound_ms", "attempts", "failed", "recovered", "broken")


def directory(reports_dir: str | Path) -> Path:
    d = Path(reports_dir) / "migration"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write(reports_dir: str | Path, run: dict) -> tuple[Path, Path]:
    """Write the run's JSON and append its lines to ``windows.csv``; return both paths."""
    d = directory(reports_dir)
    path = d / f"migration-{run['provider']}-{run['run_id']}.json"
    path.write_text(json.dumps(run, indent=1, default=str))
    table = d / "windows.csv"
    new = not table.exists()
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with table.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        for step in run["steps"]:
            for item in step.get("traffic", []):
                w.writerow({"run_id": run["run_id"], "finished": finished, "provider": run["provider"], "step": step["step"],
                            "from_mode": step["from_mode"], "to_mode": step["to_mode"], "bound_ms": run["bound_ms"],
                            "attempts": item.get("attempts", item.get("requests")), "failed": item.get("failed", ""),
                            "recovered": item.get("recovered", ""), "broken": item.get("broken") or "", **{
                                k: item[k] for k in ("kind", "vantage", "target", "address", "window_ms")}})
    return path, table


def summarize(table: "str | os.PathLike") -> list[dict]:
    """Per (step modes, kind, vantage, target): runs, min / median / max window (ms), from ``windows.csv``."""
    import statistics

    groups: dict[tuple, list[float]] = {}
    with Path(table).open() as fh:
        for row in csv.DictReader(fh):
            key = (row["provider"], f"{row['from_mode']}->{row['to_mode']}", row["kind"], row["vantage"], row["target"])
            groups.setdefault(key, []).append(float(row["window_ms"]))
    return [{"provider": k[0], "switch": k[1], "kind": k[2], "vantage": k[3], "target": k[4], "runs": len(v),
             "min_ms": min(v), "median_ms": statistics.median(v), "max_ms": max(v)} for k, v in sorted(groups.items())]


SECTION_NOTE = ("Disruption window per path while kube-proxy switched mode node by node (suites/migration, docs/migration.md): "
                "the longest run of failed new connections (probe) or the longest wait for a reply on a held connection "
                "(held), min / median / max over the runs in windows.csv.")


def summary_table(table: "str | os.PathLike") -> tuple[list[str], list[list[str]]]:
    """The compare-modes report's migration section: header and rows from ``windows.csv``."""
    header = ["switch", "kind", "vantage", "target", "runs", "min ms", "median ms", "max ms"]
    rows = [[r["switch"], r["kind"], r["vantage"], r["target"], str(r["runs"]), f"{r['min_ms']:.0f}", f"{r['median_ms']:.0f}",
             f"{r['max_ms']:.0f}"] for r in summarize(table)]
    return header, rows

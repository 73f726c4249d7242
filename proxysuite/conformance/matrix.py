"""The capability matrix: check × mode × expectation class → result.

Results (:mod:`proxysuite.conformance.verdict`): ``pass``, ``fail``, ``impl-as-declared``
(an implementation-defined row behaved as declared for the mode), ``impl-other-alternative``
(a custom proxy behaved like another mode's declaration), ``record-only`` (no declared
behaviour: observed, never judged), ``skipped`` (with the reason) and ``error`` (could not probe).

Files (under ``<reports-dir>/matrix/``):

``matrix-<mode>.json``  one run of one mode (rewritten by every run of that mode)
``matrix.json``         every ``matrix-*.json`` in the folder merged
``matrix.md``           the merged matrix as Markdown, plus a section listing the
                        implementation-defined differences between modes

Runs of different modes (or providers) therefore merge by just running them into
the same ``--reports-dir``; files from elsewhere merge with::

    python -m proxysuite.conformance.matrix merge a/matrix-iptables.json b/matrix-nftables.json -o reports/matrix

How a record gets here: each test's verdict is appended, as it finishes, to a
per-process part file (``.parts/<run id>/<pid>.jsonl``) — this works the same with
and without pytest-xdist, where workers do not share memory — and every process
rebuilds the run file from all parts of its run when it finishes, so the last
process to finish writes the complete run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from .verdict import RESULTS

SCHEMA = 2
"""2: ``implementation-defined`` results split into ``impl-as-declared`` / ``impl-other-alternative``, and ``record-only``."""
SYMBOL = {"pass": "pass", "fail": "**FAIL**", "impl-as-declared": "impl", "impl-other-alternative": "impl-alt",
          "record-only": "record", "skipped": "skip", "error": "**ERROR**"}


def key(provider: str, mode: str) -> str:
    return mode if provider == "local" else f"{mode}@{provider}"


def part_path(root: Path, run_id: str) -> Path:
    return root / ".parts" / run_id / f"{os.getpid()}.jsonl"


def append_part(root: Path, run_id: str, record: dict) -> None:
    path = part_path(root, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_parts(root: Path, run_id: str) -> list[dict]:
    out = []
    for p in sorted((root / ".parts" / run_id).glob("*.jsonl")):
        for line in p.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def build_run(records: Iterable[dict], provider: str, mode: str, run_id: str) -> dict:
    checks: dict[str, dict] = {}
    for r in records:
        c = checks.setdefault(r["check"], {"capability": r.get("capability", ""), "name": r.get("name", ""), "modes": {}})
        c["modes"][key(provider, mode)] = {k: r.get(k) for k in ("result", "klass", "expected", "observed", "path", "detail", "reason", "notes", "duration")}
    return {
        "schema": SCHEMA,
        "runs": {key(provider, mode): {"provider": provider, "mode": mode, "run_id": run_id,
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "counts": _counts(checks, key(provider, mode))}},
        "checks": checks,
    }


def _counts(checks: dict, column: str) -> dict:
    out = {r: 0 for r in RESULTS}
    for c in checks.values():
        cell = c["modes"].get(column)
        if cell:
            out[cell["result"]] = out.get(cell["result"], 0) + 1
    return out


def merge(docs: Iterable[dict]) -> dict:
    """Union of matrices; a later document's cell for the same check × column wins."""
    out: dict = {"schema": SCHEMA, "runs": {}, "checks": {}}
    for d in docs:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"matrix schema {d.get('schema')} is not {SCHEMA}")
        out["runs"].update(d.get("runs", {}))
        for cid, c in d.get("checks", {}).items():
            dst = out["checks"].setdefault(cid, {"capability": c.get("capability", ""), "name": c.get("name", ""), "modes": {}})
            dst["modes"].update(c.get("modes", {}))
    return out


def differences(doc: dict) -> list[tuple[str, dict]]:
    """Checks whose observed behaviour differs between columns (the implementation-defined differences first)."""
    out = []
    for cid, c in sorted(doc["checks"].items()):
        cells = {m: v for m, v in c["modes"].items() if v.get("result") not in ("skipped", None)}
        observed = {v.get("observed") for v in cells.values()}
        # A value that differs only because each column met its own expectation (e.g. /proxyMode
        # answering the mode's name) is not a difference in behaviour.
        all_as_declared = all(v.get("observed") == v.get("expected") for v in cells.values())
        impl = any(v.get("klass") == "implementation-defined" for v in cells.values())
        if len(cells) > 1 and len(observed) > 1 and (impl or not all_as_declared):
            out.append((cid, cells))
    out.sort(key=lambda x: (not any(v.get("klass") == "implementation-defined" for v in x[1].values()), x[0]))
    return out


def _cell(v: dict | None) -> str:
    if not v:
        return "–"
    res = v.get("result", "")
    klass = {"required": "R", "expected": "E", "implementation-defined": "I"}.get(v.get("klass") or "", "")
    if res == "skipped":
        return f"skip: {(v.get('reason') or '')[:140]}".replace("|", "/")
    text = SYMBOL.get(res, res)
    if res in ("impl-as-declared", "impl-other-alternative", "record-only", "fail") and v.get("observed"):
        text += f" {v['observed']}"
    return f"{text} ({klass})" if klass else text


def to_markdown(doc: dict) -> str:
    columns = sorted(doc["runs"])
    lines = ["# Service-proxy conformance matrix", ""]
    lines.append("Cells: **pass** / **FAIL** / **impl** (implementation-defined, behaved as declared for the mode) / "
                 "**impl-alt** (a custom proxy behaved as another mode declares) / **record** (nothing declared for "
                 "the mode: recorded, not judged) / "
                 "**skip: reason**. Class in brackets: (R) required = Kubernetes conformance, (E) expected = upstream e2e "
                 "or documented proxy behaviour, (I) implementation-defined.")
    lines.append("")
    lines.append("| run | provider | mode | run id | finished | pass | fail | impl | impl-alt | record | skip | error |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in columns:
        r = doc["runs"][c]
        n = r.get("counts", {})
        lines.append(f"| {c} | {r.get('provider')} | {r.get('mode')} | {r.get('run_id')} | {r.get('finished')} | "
                     f"{n.get('pass', 0)} | {n.get('fail', 0)} | {n.get('impl-as-declared', 0)} | "
                     f"{n.get('impl-other-alternative', 0)} | {n.get('record-only', 0)} | {n.get('skipped', 0)} | {n.get('error', 0)} |")
    by_cap: dict[str, list[str]] = {}
    for cid, c in doc["checks"].items():
        by_cap.setdefault(c.get("capability") or "other", []).append(cid)
    for cap in sorted(by_cap):
        lines += ["", f"## {cap}", "", "| check | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for cid in sorted(by_cap[cap]):
            c = doc["checks"][cid]
            lines.append(f"| `{cid}` | " + " | ".join(_cell(c["modes"].get(m)) for m in columns) + " |")
    diffs = differences(doc)
    lines += ["", "## Differences between runs", ""]
    if not diffs:
        lines.append("None observed" + (" (only one run so far)." if len(columns) < 2 else "."))
    for cid, cells in diffs:
        parts = ", ".join(f"{m}: {v.get('observed')} ({v.get('klass')}" + ("" if v.get("result") == v.get("klass") else f", {v.get('result')}")
                          + (f", declared {v.get('expected')}" if v.get("expected") != v.get("observed") else "") + ")"
                          for m, v in sorted(cells.items()))
        lines.append(f"- `{cid}` — {parts}")
    return "\n".join(lines) + "\n"


def write_outputs(root: Path, run_doc: dict | None = None, column: str | None = None) -> tuple[Path, Path]:
    """Write ``matrix-<column>.json`` (when given) and the merged ``matrix.json``/``matrix.md`` of the folder."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if run_doc is not None and column is not None:
            (root / f"matrix-{column}.json").write_text(json.dumps(run_doc, indent=1, sort_keys=True))
        docs = [json.loads(p.read_text()) for p in sorted(root.glob("matrix-*.json"))]
        merged = merge(docs)
        (root / "matrix.json").write_text(json.dumps(merged, indent=1, sort_keys=True))
        (root / "matrix.md").write_text(to_markdown(merged))
    return root / "matrix.json", root / "matrix.md"


def _sweep_parts(root: Path, keep: str, max_age: float = 86400) -> None:
    """Remove part folders of other runs older than ``max_age`` seconds (crashed or finished runs)."""
    import shutil

    for d in (root / ".parts").glob("*"):
        if d.name != keep and time.time() - d.stat().st_mtime > max_age:
            shutil.rmtree(d, ignore_errors=True)


def finish_run(root: Path, run_id: str, provider: str, mode: str) -> tuple[Path, Path] | None:
    _sweep_parts(root, run_id)
    records = read_parts(root, run_id)
    if not records:
        return None
    doc = build_run(records, provider, mode, run_id)
    return write_outputs(root, doc, key(provider, mode))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proxysuite.conformance.matrix", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="merge matrix JSON files into one matrix.json + matrix.md")
    m.add_argument("files", nargs="+", type=Path)
    m.add_argument("-o", "--out", type=Path, default=Path("reports/matrix"))
    args = ap.parse_args(argv)
    docs = [json.loads(f.read_text()) for f in args.files]
    merged = merge(docs)
    args.out.mkdir(parents=True, exist_ok=True)
    for col in merged["runs"]:
        single = {"schema": SCHEMA, "runs": {col: merged["runs"][col]},
                  "checks": {cid: {**c, "modes": {col: c["modes"][col]}} for cid, c in merged["checks"].items() if col in c["modes"]}}
        (args.out / f"matrix-{col}.json").write_text(json.dumps(single, indent=1, sort_keys=True))
    js, md = write_outputs(args.out)
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

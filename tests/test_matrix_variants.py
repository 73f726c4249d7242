"""Cilium's variants (default, maglev, dsr) are separate matrix columns, from the pytest run to the merged table.

The kind workflow runs each variant as its own job and merges the jobs' matrix files; with a
mode-only column the three runs all became ``cilium@kind`` and the merge kept one of them.
The first test goes through the real plugin in a child pytest whose check needs no cluster (and,
judging nothing, is recorded as a failure: all that matters here is where it is recorded), the
second through ``python -m proxysuite.conformance.matrix merge`` as the workflow calls it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from proxysuite.conformance import matrix as mx

CHECK_MODULE = """
import pytest

@pytest.mark.proxysuite_check(capability="routing", name="to-service")
def test_to_service():
    pass
"""


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_each_variant_of_a_run_gets_its_own_column(tmp_path):
    (tmp_path / "test_check.py").write_text(CHECK_MODULE)
    reports = tmp_path / "reports"
    for variant in ("default", "maglev", "dsr"):
        proc = _pytest(tmp_path, "--provider", "kind", "--mode", "cilium", "--cilium-variant", variant,
                       "--reports-dir", str(reports), "test_check.py")
        assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout + proc.stderr
    proc = _pytest(tmp_path, "--provider", "kind", "--mode", "iptables", "--reports-dir", str(reports), "test_check.py")
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout + proc.stderr

    matrix = reports / "matrix"
    assert sorted(p.name for p in matrix.glob("matrix-*.json")) == [
        "matrix-cilium-default@kind.json", "matrix-cilium-dsr@kind.json", "matrix-cilium-maglev@kind.json", "matrix-iptables@kind.json"]
    merged = json.loads((matrix / "matrix.json").read_text())
    cells = merged["checks"]["to-service"]["modes"]
    assert sorted(cells) == ["cilium-default@kind", "cilium-dsr@kind", "cilium-maglev@kind", "iptables@kind"]
    assert {c["result"] for c in cells.values()} == {"fail"}
    assert merged["runs"]["cilium-maglev@kind"]["variant"] == "maglev"
    md = (matrix / "matrix.md").read_text()
    assert "| check | cilium-default@kind | cilium-dsr@kind | cilium-maglev@kind | iptables@kind |" in md
    assert "| cilium-dsr@kind | kind | cilium (dsr) |" in md


def test_merging_the_workflow_artifacts_keeps_every_variant(tmp_path):
    # One folder per job, as actions/download-artifact lays them out.
    files = []
    for variant in ("default", "maglev", "dsr"):
        rec = {"check": "affinity", "capability": "session-affinity", "result": "pass", "klass": "required"}
        doc = mx.build_run([rec], "kind", "cilium", f"run-{variant}", variant)
        folder = tmp_path / f"conformance-cilium-{variant}" / "matrix"
        mx.write_outputs(folder, doc, mx.key("kind", "cilium", variant))
        files += [str(p) for p in folder.glob("matrix-*@kind.json")]
    assert mx.main(["merge", *files, "-o", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "matrix.json").read_text())
    assert sorted(merged["runs"]) == ["cilium-default@kind", "cilium-dsr@kind", "cilium-maglev@kind"]
    assert {m: c["result"] for m, c in merged["checks"]["affinity"]["modes"].items()} == {
        "cilium-default@kind": "pass", "cilium-dsr@kind": "pass", "cilium-maglev@kind": "pass"}


def test_column_names():
    assert mx.key("local", "iptables") == "iptables"
    assert mx.key("kind", "nftables") == "nftables@kind"
    assert mx.key("kind", "cilium", "maglev") == "cilium-maglev@kind"
    # A variant given as a values overlay file is named by the file.
    assert mx.key("kind", "cilium", "/home/me/values/kpr-xdp.yaml") == "cilium-kpr-xdp@kind"

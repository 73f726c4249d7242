"""Every pytest run from the checkout leaves JUnit XML under <reports-dir>/junit/ (conftest.py), also under xdist."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_run_writes_junit_named_after_what_ran(tmp_path, workers):
    proc = _pytest("tests/test_matrix_variants.py::test_column_names", "-n", workers, "--reports-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name for p in (tmp_path / "junit").iterdir()] == ["tests-test_matrix_variants.xml"]
    suite = ET.parse(tmp_path / "junit" / "tests-test_matrix_variants.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "proxysuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")
    assert [c.get("name") for c in suite.iter("testcase")] == ["test_column_names"]


def test_an_explicit_junitxml_wins(tmp_path):
    target = tmp_path / "mine.xml"
    proc = _pytest("tests/test_matrix_variants.py::test_column_names", "--reports-dir", str(tmp_path), f"--junitxml={target}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert target.exists() and not (tmp_path / "junit").exists()

"""The compare-modes report opens in headless Chromium with every chart drawn and no console errors.

Input: the real captured runs in tests/data/perf-runs. The screenshot is kept in
reports/compare-modes-test/ for a human to look at (reports/ is not committed).
"""

import shutil
from pathlib import Path

import pytest

from proxysuite.report import compare
from proxysuite.report.browser import CHROMIUM, check_report

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "perf-runs"

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)")


def test_report_renders_in_chromium():
    out = ROOT / "reports" / "compare-modes-test"
    assert compare.main(["compare-modes", *map(str, sorted(p for p in RUNS.iterdir() if p.is_dir())), "-o", str(out)]) == 0
    shot = out / "screenshot.png"
    res = check_report(out / "compare-modes.html", shot)

    assert res["console_errors"] == []
    assert res["remote_requests"] == [], "the report must be self-contained"
    keys = [c["key"] for c in res["charts"]]
    assert keys == ["sync", "npl", "first_packet", "position", "locust", "trend"]
    for c in res["charts"]:
        # Drawn, not just present: a real size on the page, lines/markers and axis labels inside.
        assert c["svg"] and c["width"] > 300 and c["height"] > 200, c
        assert c["marks"] > 20 and c["texts"] > 5, c
    assert "generator-bound" in res["flags"]
    assert shot.stat().st_size > 50_000

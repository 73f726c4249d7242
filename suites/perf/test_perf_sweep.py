"""Perf checks: one sweep per session, one test per scale, then the frame and the report.

Each scale test grows the fleet and measures everything at that scale (see
``proxysuite.perf.pipeline``); its assertions are about the *measurement* being
valid (enough samples, ≤ 10 ms resolution, kube-proxy's metric agreeing with the
datapath), not about the proxy being fast: numbers are data, compared across
modes and against baselines by ``proxysuite report compare-modes``.
"""

from pathlib import Path

import numpy as np
import pytest

from proxysuite.perf import catalogue as C
from proxysuite.perf.pipeline import Sweep
from proxysuite.perf.run import delete_namespace, perf_namespace

pytestmark = [pytest.mark.perf, pytest.mark.slow]


def _progress(msg):
    print(f"[proxysuite] {msg}", flush=True)


@pytest.fixture(scope="module")
def sweep(cluster, k8s, suite_config, perf_options):
    ns = perf_namespace(k8s, suite_config.run_id, cluster.mode)
    sw = Sweep(cluster, k8s, ns, suite_config.run_id, perf_options, suite_config.reports_dir, progress=_progress)
    try:
        sw.start()
        yield sw
    finally:
        try:
            rec = sw.finish()
            if rec is not None:
                sw.saved = rec.save(suite_config.reports_dir)
                _progress(f"perf: results in {sw.saved['parquet'].parent}")
        finally:
            delete_namespace(k8s, ns)


def _rows(sw, scale, metric, stat=None, kind="summary"):
    return [r for r in sw.rec.rows if r.get("scale") == scale and r["metric"] == metric.name and r["kind"] == kind
            and (stat is None or r["stat"] == stat)]


def test_scale(sweep, scale):
    sweep.measure(scale)
    fp = _rows(sweep, scale, C.FIRST_PACKET, kind="sample")
    assert len(fp) >= sweep.opts.first_packet_rounds * 5, "first-packet samples missing"
    npl = _rows(sweep, scale, C.NPL_DP, kind="sample")
    assert len(npl) == sweep.opts.npl_changes + sweep.opts.npl_creates
    res = np.array([r["resolution_ms"] for r in npl])
    assert np.median(res) <= 10, f"programming latency resolved to {np.median(res):.1f} ms (p50), not ≤ 10 ms"
    sync = _rows(sweep, scale, C.SYNC, "count")
    assert sync and all(r["value"] > 0 for r in sync if r.get("phase") == C.NPL), "kube-proxy reported no syncs"
    ours = _rows(sweep, scale, C.NPL_ALL, "mean")
    metric = [r for r in _rows(sweep, scale, C.NPL_METRIC, "mean") if r.get("phase") == C.NPL]
    if ours and metric:
        # Same changes, two observers: the datapath (≤ 10 ms) and kube-proxy (exact mean, end of its sync).
        assert abs(ours[0]["value"] - metric[0]["value"] * 1000) < max(100, 0.25 * ours[0]["value"]), (ours, metric)


def test_report(sweep, tmp_path_factory, suite_config):
    from proxysuite.report import compare

    if sweep.fleet is None or not sweep.fleet.services:
        pytest.skip("no scale was measured")
    rec = sweep.finish()
    sweep.saved = rec.save(suite_config.reports_dir)
    out = Path(suite_config.reports_dir) / "perf" / f"report-{suite_config.run_id}-{sweep.cluster.mode}"
    assert compare.main([str(sweep.saved["parquet"]), "-o", str(out)]) == 0
    assert (out / "compare-modes.html").exists()

"""metrics.py against exposition text produced by prometheus_client itself.

The text is real Prometheus exposition (the same writer Go's client mirrors);
the histogram uses kube-proxy's own bucket layouts so the quantile estimates are
checked at the resolution the suite will see from a real kube-proxy.
"""

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest

from proxysuite.perf import metrics

# kube-proxy pkg/proxy/metrics: sync durations use prometheus.ExponentialBuckets(0.001, 2, 15).
SYNC_BUCKETS = [0.001 * 2**k for k in range(15)]
# ... and network programming latency: 0.25, 0.5, then 1..59 s, 60..115 s by 5, 120..300 by 30.
NPL_BUCKETS = [0.25, 0.5] + list(range(1, 60)) + list(range(60, 120, 5)) + list(range(120, 301, 30))


def _registry():
    reg = CollectorRegistry()
    sync = Histogram("kubeproxy_sync_proxy_rules_duration_seconds", "sync", ["ip_family"], buckets=SYNC_BUCKETS, registry=reg)
    npl = Histogram("kubeproxy_network_programming_duration_seconds", "npl", buckets=NPL_BUCKETS, registry=reg)
    ProcessCollector(registry=reg)  # real process_resident_memory_bytes / process_cpu_seconds_total of this process
    return reg, sync, npl


def test_histogram_delta_excludes_earlier_observations():
    reg, sync, npl = _registry()
    sync.labels("IPv4").observe(5.0)  # a big start-up sync that must not show in the delta
    before = metrics.parse(generate_latest(reg).decode(), at=100.0)
    for v in (0.010, 0.020, 0.030, 0.040):
        sync.labels("IPv4").observe(v)
    sync.labels("IPv6").observe(0.050)
    after = metrics.parse(generate_latest(reg).decode(), at=110.0)

    d = metrics.Delta(before, after)
    h = d.histogram(metrics.SYNC)
    assert h.count == 5
    assert h.mean == pytest.approx(0.030)
    v4 = d.histogram(metrics.SYNC, ip_family="IPv4")
    assert v4.count == 4 and v4.mean == pytest.approx(0.025)
    assert d.seconds == 10.0


def test_quantile_matches_promql_interpolation():
    reg, sync, npl = _registry()
    for _ in range(100):
        npl.observe(0.3)  # all in the (0.25, 0.5] bucket
    h = metrics.parse(generate_latest(reg).decode()).histogram(metrics.NPL)
    # histogram_quantile interpolates linearly inside (0.25, 0.5]: rank 50 of 100 → 0.375.
    assert h.quantile(0.5) == pytest.approx(0.375)
    assert h.quantile(0.99) == pytest.approx(0.25 + 0.25 * 0.99)
    assert h.resolution_at(0.3) == pytest.approx(0.25)
    assert math.isnan(metrics.Histogram((), 0, 0).quantile(0.5))


def test_quantile_in_inf_bucket_returns_last_bound():
    reg, sync, npl = _registry()
    sync.labels("IPv4").observe(100.0)  # beyond 16.384 s, the last finite bucket
    h = metrics.parse(generate_latest(reg).decode()).histogram(metrics.SYNC)
    assert h.quantile(0.5) == pytest.approx(SYNC_BUCKETS[-1])


def test_summarize_has_process_and_histogram_rows():
    reg, sync, npl = _registry()
    c = Counter("kubeproxy_sync_proxy_rules_endpoint_changes_total", "x", registry=reg)
    before = metrics.parse(generate_latest(reg).decode(), at=0.0)
    sync.labels("IPv4").observe(0.2)
    c.inc()
    sum(i * i for i in range(200_000))  # burn a little CPU so the process counter moves
    after = metrics.parse(generate_latest(reg).decode(), at=2.0)
    rows = {r["metric"]: r for r in metrics.summarize(metrics.Delta(before, after))}
    assert rows["sync.count"]["value"] == 1
    assert rows["sync.mean"]["value"] == pytest.approx(0.2)
    assert rows["sync.p50"]["estimate"] is True
    assert rows["proxy.rss"]["value"] > 1_000_000  # a Python process is well over 1 MB resident
    assert rows["proxy.cpu_seconds"]["value"] >= 0
    assert metrics.Delta(before, after).counter("kubeproxy_sync_proxy_rules_endpoint_changes_total") == 1
    assert "npl_metric.mean" not in rows  # no NPL observations → no mean row


def test_real_kube_proxy_scrapes():
    """Text captured from the local provider's kube-proxy v1.37.2 (iptables and nftables mode, 1 node, dual-stack)."""
    from pathlib import Path

    for mode in ("iptables", "nftables"):
        text = (Path(__file__).parent / "data" / f"kube-proxy-metrics-{mode}.txt").read_text()
        s = metrics.parse(text)
        for fam in metrics.HISTOGRAMS:
            assert s.families.get(fam) == "histogram", (mode, fam)
        v4 = s.histogram(metrics.SYNC_FULL, ip_family="IPv4")
        v6 = s.histogram(metrics.SYNC_FULL, ip_family="IPv6")
        assert v4.count >= 1 and v6.count >= 1
        # Against an empty earlier scrape the delta is the whole process life; only IPv4 is summarised.
        rows = {r["metric"]: r for r in metrics.summarize(metrics.Delta(metrics.Scrape(at=s.at - 1), s))}
        assert rows["sync_full.count"]["value"] == v4.count
        assert rows["sync_full.mean"]["value"] == pytest.approx(v4.mean)
        assert rows["proxy.rss"]["value"] == s.value(metrics.RSS) > 10 * 2**20
        assert rows["npl_metric.count"]["value"] > 0
        assert any(m.startswith("rules.") for m in rows)


def test_real_cilium_agent_scrape():
    """Text captured from a Cilium 1.20.2 agent on kind with the suite's values (its reconciler histogram turned on):
    the load-balancer reconciler's map writes become ``dp_write`` rows, never kube-proxy's ``sync`` ones, and its
    round counter and failing-object gauge are found for the settle check."""
    from pathlib import Path

    s = metrics.parse((Path(__file__).parent / "data" / "cilium-agent-metrics.txt").read_text())
    h = s.histogram(metrics.CILIUM_SYNC, **metrics.CILIUM_LB, op="update")
    assert h is not None and h.count > 100  # one per Service frontend written while 100 Services were created
    assert s.value(metrics.CILIUM_ROUNDS, **metrics.CILIUM_LB) > 0
    assert s.value("cilium_reconciler_errors_current", **metrics.CILIUM_LB) == 0
    rows = {r["metric"]: r for r in metrics.summarize(metrics.Delta(metrics.Scrape(at=s.at - 1), s))}
    assert rows["dp_write.update_count"]["value"] == h.count
    assert rows["dp_write.update_mean"]["value"] == pytest.approx(h.mean)
    assert not any(m.startswith(("sync", "npl_metric", "rules.")) for m in rows)
    assert rows["proxy.rss"]["value"] == s.value("cilium_process_resident_memory_bytes") > 10 * 2**20
    assert rows["proxy.rss"]["source"] == "cilium_process_resident_memory_bytes"
    # Another reconciler of the agent (sysctl) is not counted as the load balancer's.
    assert h.count < s.histogram(metrics.CILIUM_SYNC, op="update").count

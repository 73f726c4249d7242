"""Perf per IP family: the fleet's Services and slices per family, and the report's per-family series."""

from __future__ import annotations

import pandas as pd
import pytest

from proxysuite.perf import metrics
from proxysuite.perf.frames import RunRecorder
from proxysuite.perf import catalogue as C
from proxysuite.perf.phases import proxy_rows
from proxysuite.perf.scale import FleetService, ServiceFleet
from proxysuite.report import tables


def _fleet(families, **kw):
    from kubernetes.client import ApiClient

    return ServiceFleet(ApiClient(), "ns", "run1", ["10.244.1.2", "10.244.1.3"], families=families,
                        family_backend_ips={"ipv6": ["fd00:10:244:1::2", "fd00:10:244:1::3"]}, **kw)


def test_single_stack_ipv4_fleet_is_unchanged():
    f = _fleet(("ipv4",))
    assert "ipFamilyPolicy" not in f.service_body("perf-00001")["spec"]
    body = f.slice_body("perf-00001", 1)
    assert body["metadata"]["name"] == "perf-00001-ps" and body["addressType"] == "IPv4"
    assert [e["addresses"][0] for e in body["endpoints"]] == ["10.244.1.3", "10.244.1.2"]


def test_dual_stack_fleet_asks_for_both_families_and_writes_a_slice_per_family():
    f = _fleet(("ipv4", "ipv6"))
    spec = f.service_body("perf-00001")["spec"]
    assert spec["ipFamilyPolicy"] == "RequireDualStack" and spec["ipFamilies"] == ["IPv4", "IPv6"]
    v6 = f.slice_body("perf-00001", 0, ready=False, trigger=1.0, family="ipv6")
    assert v6["metadata"]["name"] == "perf-00001-ps-ipv6" and v6["addressType"] == "IPv6"
    assert [e["addresses"][0] for e in v6["endpoints"]] == ["fd00:10:244:1::2", "fd00:10:244:1::3"]
    assert not any(e["conditions"]["ready"] for e in v6["endpoints"])
    assert v6["metadata"]["annotations"]


def test_ipv6_only_fleet_is_single_stack_ipv6():
    f = _fleet(("ipv6",))
    spec = f.service_body("perf-00001")["spec"]
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == ["IPv6"]
    assert f.slice_body("perf-00001", 0)["metadata"]["name"] == "perf-00001-ps"


def test_fleet_service_ip_per_family():
    s = FleetService("perf-00001", "10.96.0.10", 1, ("10.96.0.10", "fd00:10:96::a"))
    assert s.ip() == "10.96.0.10" and s.ip("ipv4") == "10.96.0.10" and s.ip("ipv6") == "fd00:10:96::a"
    with pytest.raises(ValueError, match="no ipv6 cluster IP"):
        FleetService("perf-00002", "10.96.0.11", 2, ("10.96.0.11",)).ip("ipv6")


SCRAPE = """
# TYPE kubeproxy_network_programming_duration_seconds histogram
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="0.5"} 4
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="+Inf"} 4
kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"} 1.2
kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 4
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv6",le="0.5"} 2
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv6",le="+Inf"} 4
kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv6"} 3.0
kubeproxy_network_programming_duration_seconds_count{ip_family="IPv6"} 4
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 5e7
"""


def test_proxy_rows_read_each_proxier_once_and_the_process_once():
    before, after = metrics.parse("", at=0.0), metrics.parse(SCRAPE, at=10.0)
    rows = proxy_rows(metrics.Delta(before, after), ("ipv4", "ipv6"))
    npl = {r["ip_family"]: r["value"] for r in rows if r["metric"] == C.NPL_METRIC.key("mean")}
    assert npl == {"ipv4": pytest.approx(0.3), "ipv6": pytest.approx(0.75)}
    assert sum(r["metric"] == C.PROXY.key("rss") for r in rows) == 1


def _run(run_id, families, rows):
    rec = RunRecorder(run_id, mode="iptables", provider="local", meta={"ip_families": list(families)})
    for family, value in rows:
        rec.record(C.NPL_DP, "p50", value, scale=1000, phase=C.NPL, target="endpoint_flip", ip_family=family)
    rec.record(C.PROXY, "rss", 5e7, scale=1000, phase=C.NPL)
    return rec.frame()


def test_report_gives_each_family_of_a_dual_run_its_own_series():
    df = pd.concat([_run("a", ("ipv4",), [("ipv4", 40.0)]), _run("b", ("ipv4", "ipv6"), [("ipv4", 41.0), ("ipv6", 55.0)])])
    split = tables.split_ip_families(df)
    assert sorted(split["mode"].unique()) == ["iptables", "iptables/ipv4", "iptables/ipv6"]
    got = tables.pick(tables.latest_runs(split), C.NPL_DP, "p50")
    assert got.loc[1000].to_dict() == {"iptables": 40.0, "iptables/ipv4": 41.0, "iptables/ipv6": 55.0}
    # the process row of the dual run goes to its primary family's series
    rss = split[(split["run_id"] == "b") & (split["metric"] == C.PROXY.name)]
    assert list(rss["mode"]) == ["iptables/ipv4"]
    assert tables.split_ip_families(_run("c", ("ipv4",), [("ipv4", 1.0)]))["mode"].unique().tolist() == ["iptables"]


def test_a_proxier_that_has_not_synced_has_no_histogram():
    """The IPv6 proxier's full sync is not the IPv4 one's: waiting for every family must not fall back across them."""
    only_v4 = "\n".join(line for line in SCRAPE.splitlines() if "IPv6" not in line)
    s = metrics.parse(only_v4, at=1.0)
    name = "kubeproxy_network_programming_duration_seconds"
    assert s.of_family(name, "IPv4").count == 4
    assert s.of_family(name, "IPv6") is None
    unlabelled = metrics.parse(only_v4.replace('ip_family="IPv4",', "").replace('{ip_family="IPv4"}', ""), at=1.0)
    assert unlabelled.of_family(name, "IPv6").count == 4  # a proxy without per-family metrics: its one histogram

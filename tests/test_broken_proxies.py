"""The catalogue fails proxies that are broken on purpose (tests/broken_proxies/README.md).

Each case runs a slice of the real catalogue (``pytest suites/conformance -m conformance -k ...``) in a
child pytest against the local provider in ``--mode custom``, with a broken proxy standing in for
kube-proxy, and reads the matrix it wrote. The rows the breakage is about must be ``fail`` — not
``impl``, not ``pass`` — and rows the breakage does not touch must still pass, so each failure is
about the breakage and not about the set-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxysuite.cluster.local import components

pytestmark = [pytest.mark.live, pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "broken_proxies"
KUBE_PROXY_ARGS = ("--kubeconfig {kubeconfig} --hostname-override {node} --cluster-cidr {cluster_cidr} "
                   "--conntrack-max-per-core 0 --metrics-bind-address {metrics_addr} --healthz-bind-address {healthz_addr}")


PROGRAMMING_WAIT = 10
"""Seconds; the wrapped kube-proxies program a change within about 2 s here, the default ceiling is 45 s."""


def _kube_proxy() -> str:
    return str(components.ensure(progress=lambda m: None)["kube-proxy"])


def _catalogue(tmp_path: Path, name: str, proxy_cmd: str, select: str, *extra: str) -> dict:
    """Run the selected checks against the broken proxy; the matrix cells of the custom column, by check id."""
    reports = tmp_path / "reports"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites" / "conformance"), "-m", "conformance", "-k", select,
         "-p", "no:cacheprovider", "-q", "-n", "2", "--provider", "local", "--mode", "custom", "--proxy-cmd", proxy_cmd,
         "--cluster-name", f"pstest-broken-{name}-{worker}", "--reports-dir", str(reports),
         # Each red row would otherwise wait the full default ceiling for a programming that never comes.
         "--programming-wait", str(PROGRAMMING_WAIT), *extra],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    # The column is the mode, with the IP family unless it is the default (docs/ip-family.md).
    family = extra[extra.index("--ip-family") + 1] if "--ip-family" in extra else "ipv4"
    column = "custom" if family == "ipv4" else f"custom-{family}"
    matrix = reports / "matrix" / f"matrix-{column}.json"
    assert matrix.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = {cid: c["modes"][column] for cid, c in json.loads(matrix.read_text())["checks"].items()}
    assert cells, proc.stdout[-3000:]
    return cells


def _results(cells: dict, *, contains: str = "", startswith: str = "") -> dict[str, str]:
    return {cid: c["result"] for cid, c in cells.items() if contains in cid and cid.startswith(startswith)}


def test_a_proxy_that_forwards_nothing(tmp_path):
    cells = _catalogue(tmp_path, "nothing", f"python3 {BROKEN / 'forward_nothing.py'} {{healthz_addr}} {{metrics_addr}}",
                       "test_routing and (clusterip or nodeport) and not localhost or test_healthz")
    routing = _results(cells, startswith="to-service[")
    # The routing scenario cannot even be built (its barrier Service never answers), so every row is red:
    # "error" with the scenario's forensics, or "fail" for a row judged after the build.
    assert routing and set(routing.values()) <= {"fail", "error"}, routing
    assert all("barrier" in cells[cid]["reason"] or cells[cid]["result"] == "fail" for cid in routing), \
        {cid: cells[cid]["reason"] for cid in routing}
    # What it does serve is judged as served: the failures above are about forwarding.
    assert set(_results(cells, startswith="healthz").values()) == {"pass"}


def test_a_proxy_that_drops_where_it_should_reject(tmp_path):
    cells = _catalogue(tmp_path, "drop", f"sh {BROKEN / 'drop_not_reject.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_no_endpoints_rejects and (clusterip or nodeport)")
    rejects = _results(cells, startswith="reject[")
    assert rejects and set(rejects.values()) == {"fail"}, rejects
    assert {c["observed"] for cid, c in cells.items() if cid in rejects} == {"TIMEOUT"}


def test_a_proxy_that_serves_no_metrics(tmp_path):
    cells = _catalogue(tmp_path, "nometrics", f"sh {BROKEN / 'no_metrics.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_metrics or test_proxy_mode or test_healthz")
    assert set(_results(cells, startswith="metrics").values()) == {"fail"}
    assert set(_results(cells, startswith="proxy-mode").values()) == {"fail"}
    assert set(_results(cells, startswith="healthz").values()) == {"pass"}


def test_a_proxy_whose_rules_are_right_only_intermittently(tmp_path):
    cells = _catalogue(tmp_path, "flap", f"sh {BROKEN / 'intermittent.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_routing and (nodeport or clusterip) and tcp and not localhost")
    nodeports = _results(cells, contains="->nodeport-")
    clusterips = _results(cells, contains="->clusterip/")
    assert nodeports and set(nodeports.values()) == {"fail"}, nodeports
    assert clusterips and set(clusterips.values()) == {"pass"}, clusterips


def _patched_kube_proxy(patch: str) -> Path:
    """tests/broken_proxies/patched_kube_proxy.py: kube-proxy with one source patch, built (cached) before the run."""
    sys.path.insert(0, str(BROKEN))
    try:
        from patched_kube_proxy import build
    finally:
        sys.path.remove(str(BROKEN))
    return build(patch, progress=lambda m: None)


def test_a_proxy_that_never_clears_stale_udp_conntrack_entries(tmp_path):
    binary = _patched_kube_proxy("no-conntrack-cleanup")
    cells = _catalogue(tmp_path, "staleudp", f"{binary} {KUBE_PROXY_ARGS} --proxy-mode=iptables",
                       "test_udp_conntrack or test_routing and udp and (clusterip or nodeport) and not localhost")
    flows = _results(cells, startswith="server-pod-cycles[") | _results(cells, startswith="endpoints-appear[")
    assert len(flows) == 6 and set(flows.values()) == {"fail"}, flows
    # Each failed because the flow never reached the new backend, not because the check could not run.
    assert all(cells[cid]["observed"] != "FLOW_MOVES(<=10s)" and "no datagram was answered by" in cells[cid]["detail"]
               for cid in flows), {cid: cells[cid]["detail"] for cid in flows}
    # The same proxy programs UDP Services correctly: fresh datagrams (a new source port each) are answered.
    routing = _results(cells, startswith="to-service[")
    assert routing and set(routing.values()) == {"pass"}, routing


def test_a_proxy_that_takes_the_wrong_zone(tmp_path):
    cells = _catalogue(tmp_path, "zone", f"sh {BROKEN / 'wrong_zone.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_traffic_distribution")
    rows = _results(cells, startswith="prefer-nearby[")
    nearby = {cid: r for cid, r in rows.items() if any(f"@{s}/" in cid for s in ("close", "same-zone", "same-node"))}
    # Every row of a Service that asks for nearby endpoints is answered by the other zone's backends.
    assert len(nearby) == 6 and set(nearby.values()) == {"fail"}, rows
    assert all("must not get traffic" in cells[cid]["detail"] for cid in nearby), {cid: cells[cid]["detail"] for cid in nearby}
    # Services that ask for nothing are served as usual: the failures are about topology.
    plain = {cid: r for cid, r in rows.items() if "@plain/" in cid}
    assert len(plain) == 2 and set(plain.values()) == {"pass"}, rows


def test_a_proxy_without_the_topology_fallback(tmp_path):
    binary = _patched_kube_proxy("no-topology-fallback")
    cells = _catalogue(tmp_path, "nofallback", f"{binary} {KUBE_PROXY_ARGS} --proxy-mode=iptables", "test_traffic_distribution")
    rows = _results(cells, startswith="prefer-nearby[")
    fallback = {cid: r for cid, r in rows.items() if "@fallback/" in cid}
    # The zone's only endpoint is not ready: this proxy keeps to the zone anyway and has no endpoint left.
    assert fallback and set(fallback.values()) == {"fail"}, rows
    assert {cells[cid]["observed"] for cid in fallback} <= {"REFUSED", "TIMEOUT"}, {cid: cells[cid]["detail"] for cid in fallback}
    # Where the zone has ready endpoints its hint handling is kube-proxy's own: the failure is about the fallback.
    others = {cid: r for cid, r in rows.items() if "@fallback/" not in cid}
    assert len(others) == 8 and set(others.values()) == {"pass"}, rows


def test_a_proxy_that_prefers_its_node_unasked(tmp_path):
    binary = _patched_kube_proxy("always-same-node")
    cells = _catalogue(tmp_path, "samenode", f"{binary} {KUBE_PROXY_ARGS} --proxy-mode=iptables", "test_traffic_distribution")
    rows = _results(cells, startswith="prefer-nearby[")
    plain = {cid: r for cid, r in rows.items() if "@plain/" in cid}
    # The Service asks for no distribution, yet only the two backends on the client's node answer.
    assert len(plain) == 2 and set(plain.values()) == {"fail"}, rows
    # Services that ask for nearby endpoints get them from kube-proxy's own hint handling; the fallback's only
    # ready endpoint is on another node, so it is used: the failures are about the unasked preference.
    others = {cid: r for cid, r in rows.items() if "@plain/" not in cid}
    assert len(others) == 7 and set(others.values()) == {"pass"}, rows


def test_a_proxy_that_flushes_conntrack_breaks_established_connections(tmp_path):
    cells = _catalogue(tmp_path, "ctflush", f"sh {BROKEN / 'flush_conntrack.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_long_lived or (test_routing and pod-other-node and clusterip and not wrong)")
    # A restart and an unrelated Service update flush conntrack, and so does the sync that takes the not-ready
    # endpoint out: established connections re-balance (TCP: reset, UDP: another backend). The UDP flow's move
    # away from the not-ready endpoint is what kube-proxy does on purpose, so that row is not about this breakage;
    # the rules-flush check skips (custom modes define no flush).
    long_lived = _results(cells, startswith="across-")
    assert {cid: r for cid, r in long_lived.items() if "rules-flush" not in cid} == {
        "across-service-update": "fail", "across-proxy-restart": "fail", "across-endpoint-not-ready": "fail"}, long_lived
    for cid in ("across-service-update", "across-proxy-restart", "across-endpoint-not-ready"):
        assert cells[cid]["expected"] == "SURVIVES" and "did not survive" in cells[cid]["detail"], cells[cid]
    routing = _results(cells, startswith="to-service[")
    assert routing and set(routing.values()) == {"pass"}, routing


def test_a_proxy_that_knows_only_its_configured_service_range(tmp_path):
    cells = _catalogue(tmp_path, "stalecidr", f"sh {BROKEN / 'stale_service_cidr.sh'} {{service_cidr}} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_second_range_reaches or (test_routing and clusterip and pod-other-node)")
    second = _results(cells, startswith="second-range-reach[")
    assert second and set(second.values()) == {"fail"}, second
    assert {c["observed"] for cid, c in cells.items() if cid in second} == {"TIMEOUT"}
    # ClusterIPs of the configured range are served: the failures are about the second ServiceCIDR. The routing
    # module runs beside the one that adds the range, so this also proves none of its Services landed in it.
    assert set(_results(cells, startswith="to-service[").values()) == {"pass"}


def test_a_proxy_that_answers_unallocated_cluster_ips(tmp_path):
    cells = _catalogue(tmp_path, "unalloc", f"sh {BROKEN / 'answer_unallocated.sh'} {{service_cidr}} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_unallocated_in_each_range or (test_routing and clusterip and pod-other-node)")
    rows = _results(cells, startswith="unallocated-in-each-range[")
    # No mode answers an address no Service holds, in either range: every row fails with the answer it got.
    assert len(rows) == 4 and set(rows.values()) == {"fail"}, rows
    # Answered: REACH, or MIXED(ok:N, ...) where a row's classes do not include REACH. One of a row's two UDP
    # datagrams may go unanswered (seen once in a CI run); a proxy that does not answer at all gets no "ok".
    assert all(cells[cid]["observed"] == "REACH" or "ok:" in cells[cid]["observed"] for cid in rows), \
        {cid: (cells[cid]["observed"], cells[cid]["detail"]) for cid in rows}
    # Allocated cluster IPs keep their own rules: the failures are about the catch-all.
    assert set(_results(cells, startswith="to-service[").values()) == {"pass"}


def test_a_proxy_that_ignores_lb_ip_mode(tmp_path):
    cells = _catalogue(tmp_path, "ipmode",
                       f"{sys.executable} {BROKEN / 'vip_for_every_ingress.py'} {{kubeconfig}} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_lb_ip_mode_proxy")
    in_cluster = {cid: r for cid, r in _results(cells, startswith="lb-ipmode-proxy[").items() if "external->" not in cid}
    assert in_cluster and set(in_cluster.values()) == {"fail"}, in_cluster
    assert {c["observed"] for cid, c in cells.items() if cid in in_cluster} == {"REACH"}
    # The load balancer's own path still works: the failures are about the short-circuit.
    assert set(_results(cells, contains="external->lb").values()) == {"pass"}


def test_a_proxy_that_drops_services_behind_a_proxying_load_balancer(tmp_path):
    binary = _patched_kube_proxy("skip-ipmode-proxy-services")
    cells = _catalogue(tmp_path, "skipproxylb", f"{binary} {KUBE_PROXY_ARGS} --proxy-mode=iptables",
                       "test_lb_ip_mode_proxy or (test_routing and external and lb)")
    rows = _results(cells, startswith="lb-ipmode-proxy[")
    external = {cid: r for cid, r in rows.items() if "external->" in cid}
    # The load balancer sends the client's packets to the Service's NodePorts, which this proxy never programmed.
    assert len(external) == 2 and set(external.values()) == {"fail"}, rows
    assert {cells[cid]["observed"] for cid in external} <= {"REFUSED", "TIMEOUT"}, {cid: cells[cid]["detail"] for cid in external}
    # Leaving the ingress IP alone is right (in-cluster rows), and a VIP-mode LoadBalancer is served: the
    # failures are about dropping the whole Service.
    assert {r for cid, r in rows.items() if cid not in external} == {"pass"}, rows
    assert set(_results(cells, startswith="to-service[external->lb").values()) == {"pass"}


def test_a_proxy_that_never_resyncs_in_full_stays_flushed(tmp_path):
    from proxysuite.modes import get_mode

    binary = _patched_kube_proxy("no-full-resync")
    # The flush the suite uses for kube-proxy's iptables mode, handed over as a custom proxy's --proxy-flush.
    flush = get_mode("iptables").datapath.flush[2]
    cells = _catalogue(tmp_path, "noresync", f"{binary} {KUBE_PROXY_ARGS} --proxy-mode=iptables",
                       "test_rules_flushed or test_across_rules_flush or test_proxy_restart", "--proxy-flush", flush)
    # Its partial syncs reference chains the flush removed and never restore the jumps into KUBE-SERVICES: traffic
    # stays broken after the flush and the Service change that should make any proxy resync.
    assert cells["rules-flushed"]["result"] == "fail" and cells["rules-flushed"]["observed"] in ("TIMEOUT", "REFUSED"), cells["rules-flushed"]
    assert cells["across-rules-flush"]["result"] == "fail" and "rules resynced" in cells["across-rules-flush"]["reason"], cells["across-rules-flush"]
    # A restarted process starts with a full sync and is served again: the failures are about the missing resync.
    assert cells["proxy-restart"]["result"] == "pass", cells["proxy-restart"]


def test_a_proxy_that_is_blind_for_ipv6_only(tmp_path):
    cells = _catalogue(tmp_path, "v6blind", f"sh {BROKEN / 'ipv6_blind.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_routing and (clusterip or nodeport) and (pod-other-node or external) and tcp and not localhost",
                       "--ip-family", "dual")
    v6 = _results(cells, contains="/ipv6]")
    v4 = _results(cells, contains="/ipv4]")
    # The IPv6 proxier programs no ClusterIP or NodePort: every IPv6 row fails, from a pod and from outside.
    assert len(v6) >= 3 and set(v6.values()) == {"fail"}, v6
    # The same rows over IPv4 pass: the failures are about the family, not the Services or the vantages.
    assert {cid.replace("/ipv4]", "/ipv6]") for cid in v4} == set(v6) and set(v4.values()) == {"pass"}, v4

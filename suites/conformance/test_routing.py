"""Routing: every address kind of a Service, from every vantage point, TCP and UDP.

Scenario (built once per module, read-only for the rows): two netexec backends on
the first node; Service ``web`` of type LoadBalancer (so it also has a ClusterIP
and NodePorts) with TCP 80→8080, UDP 81→8081 and one externalIP; client pods and
host-network clients on every node.

Release: v1.0 (ClusterIP), v1.0 (NodePort), v1.5 (LoadBalancer on bare clusters: provider LB controller)
Testname: Service, routing matrix
Description: A Service MUST be reachable on its ClusterIP from pods and nodes, and on
its NodePort on every node IP from pods, nodes and outside the cluster, whether or
not that node hosts a backend. Its LoadBalancer ingress IP and its externalIPs
SHOULD be reachable (upstream e2e; no [Conformance] tag without a cloud). Every
answer MUST come from a ready backend of the Service.
"""

from __future__ import annotations

import pytest

from proxysuite.conformance import (
    ANY_DECLARED,
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    REACH,
    RECORD_ONLY,
    REFUSED,
    REQUIRED,
    Row,
    check,
    per_mode,
)
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, external_ip

pytestmark = pytest.mark.xdist_group("routing")

CLASS = {"clusterip": REQUIRED, "nodeport-local": REQUIRED, "nodeport-remote": REQUIRED, "lb": EXPECTED, "external-ip": EXPECTED}

ROWS = [
    Row(v, t, p, expect=REACH, klass=CLASS[t])
    for v in ("pod-same-node", "pod-other-node", "node", "external")
    for t in ("clusterip", "nodeport-local", "nodeport-remote", "lb", "external-ip")
    for p in ("tcp", "udp")
    if not (v == "external" and t == "clusterip")  # cluster IPs are not routed outside the cluster
] + [
    Row("node", "nodeport-localhost", "tcp",
        expect=per_mode(iptables=REACH, nftables=REFUSED, ipvs=RECORD_ONLY, cilium=RECORD_ONLY, custom=ANY_DECLARED),
        klass=IMPLEMENTATION_DEFINED,
        note="iptables serves NodePorts on 127.0.0.1 (route_localnet, --iptables-localhost-nodeports); "
             "nftables never does (kk PR #124383 release note)"),
]


@pytest.fixture(scope="module")
def routing(cluster, k8s, suite_config, scenario_namespace):
    ns = scenario_namespace("routing")
    eip, routed = external_ip(cluster, ns)
    sc = build_scenario(
        cluster, k8s, suite_config.run_id, ns,
        backends={0: 2},
        services={"web": ServiceSpec("LoadBalancer", tweak=lambda b: b["spec"].update(externalIPs=[eip]))},
    )
    sc.external_ip_routed = routed
    return sc


@check("routing", "to-service", rows=ROWS)
def test_routing(row, routing, conformance):
    if row.vantage == "external" and row.target == "external-ip" and not routing.external_ip_routed:
        pytest.skip("the provider does not route an externalIP range from its external client (no external_ip_cidr)")
    conformance.run_row(routing.jig, row, routing.svc("web"))

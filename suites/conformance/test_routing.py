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
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, external_ips
from proxysuite.ipfamily import families_in

pytestmark = pytest.mark.xdist_group("routing")

CLASS = {"clusterip": REQUIRED, "nodeport-local": REQUIRED, "nodeport-remote": REQUIRED, "lb": EXPECTED, "external-ip": EXPECTED}

SOURCES = (
    "ipvs: one IPVS virtual server per ClusterIP, externalIP, LB IP and node IP x NodePort; the Service IPs are "
    "bound to kube-ipvs0 on every node (pkg/proxy/ipvs/proxier.go syncProxyRules); "
    "cilium: socket-LB translates ClusterIP, NodePort and LB IP at connect()/sendmsg() for pods and the host "
    "(bpf/bpf_sock.c __sock4_xlate_fwd), traffic from outside is served by bpf/lib/nodeport.h nodeport_svc_lb4"
)
EIP_IN_CLUSTER = per_mode(REACH, cilium=RECORD_ONLY)
"""An externalIP from inside the cluster: Cilium's socket-LB deliberately leaves it alone."""
EIP_NOTE = (
    "cilium record-only: socket-LB does not translate an externalIP that is not a local address (bpf_sock.c "
    "sock4_skip_xlate, the CVE-2020-8554 mitigation; kubeproxy-free.rst); whether the per-packet LB of "
    "bpf_lxc.c translates it instead depends on compile-time flags: unknown. " + SOURCES
)

PER_FAMILY = ("clusterip", "nodeport-local", "nodeport-remote", "lb", "external-ip")
"""Targets whose rows run once per IP family on a cluster that is not single-stack IPv4 (kube-proxy programs each
family in its own tables: ip6tables, ``table ip6 kube-proxy``); the ids gain ``/ipv4`` or ``/ipv6``."""

ROWS = [
    Row(v, t, p, expect=EIP_IN_CLUSTER if t == "external-ip" and v != "external" else REACH, klass=CLASS[t],
        note=EIP_NOTE if t == "external-ip" and v != "external" else SOURCES, per_family=t in PER_FAMILY)
    for v in ("pod-same-node", "pod-other-node", "node", "external")
    for t in ("clusterip", "nodeport-local", "nodeport-remote", "lb", "external-ip")
    for p in ("tcp", "udp")
    if not (v == "external" and t == "clusterip")  # cluster IPs are not routed outside the cluster
] + [
    Row("node", "nodeport-localhost", "tcp",
        expect=per_mode(iptables=REACH, nftables=REFUSED, ipvs=REFUSED, cilium=REACH, custom=ANY_DECLARED),
        klass=IMPLEMENTATION_DEFINED,
        note="iptables serves NodePorts on 127.0.0.1 (route_localnet, --iptables-localhost-nodeports); "
             "nftables never does (kk PR #124383 release note); ipvs neither (--iptables-localhost-nodeports help "
             "in cmd/kube-proxy/app/options.go; ipvs/netlink_linux.go drops loopback from the NodePort addresses), "
             "nothing listens and the node answers RST; cilium: socket-LB serves 127.0.0.1:NodePort from the host "
             "(kubeproxy-free.rst, NodePort bind settings; bpf_sock.c wildcard lookup for host loopback)"),
]


@pytest.fixture(scope="module")
def routing(cluster, k8s, suite_config, scenario_namespace):
    ns = scenario_namespace("routing")
    eips, routed = external_ips(cluster, ns)
    sc = build_scenario(
        cluster, k8s, suite_config.run_id, ns,
        backends={0: 2},
        services={"web": ServiceSpec("LoadBalancer", tweak=lambda b: b["spec"].update(externalIPs=eips))},
    )
    sc.external_ip_routed = routed
    return sc


@check("routing", "to-service", rows=ROWS)
def test_routing(row, routing, conformance):
    if row.vantage == "external" and row.target == "external-ip" and not routing.external_ip_routed:
        pytest.skip(routing.jig.cluster.features().require("external_ips")[1])
    if row.target == "nodeport-localhost" and "ipv4" not in families_in(routing.svc("web")["spec"].get("clusterIPs") or []):
        # An IPv4 proxier never sees a Service without an IPv4 cluster IP, and localhost NodePorts do not exist
        # for IPv6 ("localhost NodePorts are not supported on IPv6", pkg/proxy/iptables/proxier.go).
        pytest.skip("127.0.0.1:NodePort is IPv4-only (route_localnet) and the Service has no IPv4 family on this "
                    "single-stack IPv6 cluster; kube-proxy never serves NodePorts on ::1")
    conformance.run_row(routing.jig, row, routing.svc("web"))

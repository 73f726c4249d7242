"""No endpoints, wrong ports, unallocated addresses: how the proxy says "nothing here".

Scenario (module-shared): Service ``empty`` of type LoadBalancer with an externalIP
whose selector matches no pod, next to Service ``web`` with two backends (the
barrier proves every node's proxy has programmed ``empty`` before any row looks).

Release: upstream e2e ("should be rejected when no endpoints exist"); kube-proxy unit tests
Testname: Service, no endpoints
Description: A Service without endpoints SHOULD actively reject new connections on
every address kind (ClusterIP, NodePort, LoadBalancer, externalIP), from pods,
nodes and outside, so clients fail fast (TCP RST / ICMP port unreachable) instead
of timing out. How the proxy treats a port or protocol the Service does not have on
a valid cluster IP, and an unallocated address inside the service range, is left to
the implementation: kube-proxy's nftables mode rejects the former and drops the
latter (cluster-ips-check chain); the iptables mode has no rule for either.
"""

from __future__ import annotations

import pytest

from proxysuite.conformance import (
    ANY_DECLARED,
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    Row,
    check,
    per_mode,
)
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, external_ips, icmp_rate_limit_note

pytestmark = pytest.mark.xdist_group("no-endpoints")

IN_CLUSTER_EMPTY = dict(expect=per_mode(REFUSED, cilium=UNREACHABLE), klass=per_mode(EXPECTED, cilium=IMPLEMENTATION_DEFINED),
                        note="ipvs: the virtual server exists without destinations and IPVS answers ICMP port unreachable "
                             "(pkg/proxy/ipvs/proxier.go syncService/syncEndpoint; Linux ip_vs_core.c ip_vs_leave); "
                             "cilium: socket-LB fails connect()/sendmsg() with EHOSTUNREACH for a frontend with no "
                             "backends, no packet leaves (bpf/bpf_sock.c __sock4_xlate_fwd, enable-no-service-endpoints-"
                             "routable default true); upstream's 'rejected' e2e expects REFUSED, Cilium's kind CI skips it "
                             "(.github/workflows/k8s-kind-network-e2e.yaml), hence implementation-defined for cilium. With "
                             "socketLB.hostNamespaceOnly=true pod traffic takes bpf_lxc.c and is REFUSED instead")
FROM_OUTSIDE_EMPTY = dict(expect=REFUSED, klass=EXPECTED,
                          note="ipvs: IPVS answers ICMP port unreachable (ip_vs_core.c ip_vs_leave); cilium: "
                               "nodeport_svc_lb4 finds no backend and tail_no_service_ipv4 answers ICMP port unreachable "
                               "from BPF (bpf/lib/lb.h, nodeport.h; serviceNoBackendResponse default reject; with drop "
                               "it would be TIMEOUT), not under the kernel's ICMP rate limit")

EMPTY_ROWS = [
    Row(v, t, p, count=3, interval=0.5, service="empty", **(FROM_OUTSIDE_EMPTY if v == "external" else IN_CLUSTER_EMPTY))
    for v, targets in (
        ("pod-other-node", ("clusterip", "nodeport-local", "nodeport-remote", "lb", "external-ip")),
        ("node", ("clusterip", "nodeport-remote")),
        ("external", ("nodeport-local", "nodeport-remote", "lb", "external-ip")),
    )
    for t in targets
    for p in ("tcp", "udp")
]

WRONG_PORT_NOTE = (
    "nftables: cluster-ips-check rejects unknown ports on a cluster IP; iptables: no rule, the packet leaves by the "
    "default route; ipvs: the cluster IP is bound to kube-ipvs0 and KUBE-IPVS-FILTER rejects any ip,port (with its "
    "protocol) that is not a Service's (pkg/proxy/ipvs/proxier.go writeIptablesRules, kk#72236); cilium: socket-LB "
    "finds no frontend for that ip,port,protocol and leaves the socket alone, no BPF catch-all for the service "
    "range exists, so the packet leaves as with iptables (bpf/bpf_sock.c, -ENXIO path)"
)
ODD_TIMEOUT = {"tcp": 2.0, "udp": 1.0}
"""Seconds a probe of an odd-destination row waits. TCP waits past the first SYN retransmission (1 s): on providers
whose nodes share the client's kernel (local, kind), an ICMPv6 rejection of the first SYN arrives while connect()
still holds the socket lock and is only noted (TcpExtLockDroppedIcmps), so an IPv6 REFUSED shows after the retransmit,
at 1.02 s (measured on nftables, dual-stack); IPv4 rejections arrive at once."""
ODD_ROWS = [
    Row("pod-other-node", "clusterip-wrong-port", p, service="web", count=2, interval=0.5, timeout=ODD_TIMEOUT[p], klass=IMPLEMENTATION_DEFINED,
        expect=per_mode(iptables=TIMEOUT, nftables=REFUSED, ipvs=REFUSED, cilium=TIMEOUT, custom=ANY_DECLARED),
        note=WRONG_PORT_NOTE)
    for p in ("tcp", "udp")
] + [
    Row("pod-other-node", "clusterip-wrong-proto", p, service="web", count=2, interval=0.5, timeout=ODD_TIMEOUT[p], klass=IMPLEMENTATION_DEFINED,
        expect=per_mode(iptables=TIMEOUT, nftables=REFUSED, ipvs=REFUSED, cilium=TIMEOUT, custom=ANY_DECLARED),
        note="a port the Service has only for the other protocol. " + WRONG_PORT_NOTE)
    for p in ("tcp", "udp")
] + [
    Row("pod-other-node", "unallocated-ip", p, service="web", count=2, timeout=1.0, klass=IMPLEMENTATION_DEFINED,
        expect=per_mode(iptables=TIMEOUT, nftables=TIMEOUT, ipvs=TIMEOUT, cilium=TIMEOUT, custom=ANY_DECLARED),
        note="nftables drops traffic to unallocated cluster IPs (cluster-ips-check); iptables has no rule; ipvs binds "
             "only Service addresses to kube-ipvs0 and has no rule for the rest (proxier.go syncProxyRules); cilium "
             "has no frontend and no catch-all (bpf_sock.c, bpf_lxc.c): the packet leaves by the default route")
    for p in ("tcp", "udp")
]


@pytest.fixture(scope="module")
def empty(cluster, k8s, suite_config, scenario_namespace):
    ns = scenario_namespace("no-endpoints")
    eips, routed = external_ips(cluster, ns)
    sc = build_scenario(
        cluster, k8s, suite_config.run_id, ns, backends={0: 2},
        services={
            "empty": ServiceSpec("LoadBalancer", selector={"proxysuite.io/app": "nothing"}, endpoints=0,
                                 tweak=lambda b: b["spec"].update(externalIPs=eips)),
            "web": ServiceSpec("ClusterIP"),
        },
    )
    sc.external_ip_routed = routed
    sc.icmp_note = icmp_rate_limit_note(cluster)
    return sc


@check("no-endpoints", "reject", rows=EMPTY_ROWS, per_family=True)
def test_no_endpoints_rejects(row, empty, conformance):
    if row.vantage == "external" and row.target == "external-ip" and not empty.external_ip_routed:
        pytest.skip(empty.jig.cluster.features().require("external_ips")[1])
    if empty.icmp_note:
        conformance.record.notes.append(empty.icmp_note)
    conformance.run_row(empty.jig, row, empty.svc(row.service))


@check("no-endpoints", "odd-destinations", rows=ODD_ROWS, per_family=True)
def test_odd_destinations(row, empty, conformance):
    conformance.run_row(empty.jig, row, empty.svc(row.service))

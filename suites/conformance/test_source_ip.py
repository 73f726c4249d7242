"""Source IP and traffic policies: who the backend sees, and which node may answer.

Scenario (module-shared): two backends on the first node; Services over them:
``cluster`` (LoadBalancer, eTP=Cluster), ``local`` (LoadBalancer, eTP=Local),
``itp`` (ClusterIP, iTP=Local), ``allow`` and ``block`` (LoadBalancer with
loadBalancerSourceRanges that do / do not contain the external client).

Release: upstream e2e (source pod IP, ESIPP, iTP=Local, hairpin); kube-proxy unit tests (source ranges)
Testname: Service, source IP and traffic policies
Description: Traffic to a ClusterIP SHOULD reach the backend with the client pod's
own IP. With externalTrafficPolicy Cluster, traffic from outside SHOULD be
masqueraded; with Local it SHOULD keep the client IP, be served only by endpoints
on the receiving node, and be dropped on nodes without one; the health-check
NodePort SHOULD answer 200 where the node has local endpoints and 503 where it has
none. With internalTrafficPolicy Local, in-cluster traffic SHOULD only reach
endpoints on the client's node and be dropped when there is none. A pod SHOULD
reach itself through its own Service (hairpin). loadBalancerSourceRanges SHOULD
let listed clients through the LB IP and drop the others.
"""

from __future__ import annotations

import json

import pytest

from proxysuite.conformance import (
    ANY_DECLARED,
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    REACH,
    REACH_LOCAL,
    REFUSED,
    SRC_IP_MASQUERADED,
    SRC_IP_PRESERVED,
    TIMEOUT,
    UNREACHABLE,
    Row,
    check,
    for_mode,
    per_mode,
)
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, node_http

pytestmark = pytest.mark.xdist_group("source-ip")

BLOCKED_RANGES = {"ipv4": "192.0.2.0/24", "ipv6": "2001:db8:ff::/48"}
"""Per family, a source range no vantage is in (TEST-NET-1; a documentation /48 apart from the externalIPs one).
The ``block`` Service lists one per family the cluster serves: kube-proxy keeps only the ranges of the family it
proxies (``FilterCIDRs`` in pkg/proxy/servicechangetracker.go), so an IPv4-only list would leave IPv6 open."""
HOST_PREFIX = {"ipv4": 32, "ipv6": 128}

DROP = dict(expect=TIMEOUT, count=2, timeout=1.0)
NO_LOCAL = dict(count=2, timeout=1.0)
IMPL = IMPLEMENTATION_DEFINED

POD_SRC = ("ipvs: KUBE-CLUSTER-IP masquerades only sources outside the pod CIDR (pkg/proxy/ipvs/proxier.go "
           "writeIptablesRules); cilium: the pod's own socket is connected to the backend by socket-LB (bpf/bpf_sock.c)")
ETP_CLUSTER = ("ipvs: KUBE-NODE-PORT / KUBE-LOAD-BALANCER mark for masquerade (proxier.go writeIptablesRules); "
               "cilium: nodeport_svc_lb4 SNATs only when it forwards to another node (bpf/lib/nodeport.h; "
               "kubeproxy-free.rst, DSR and Client Source IP Preservation), DSR never does: the client IP under "
               "eTP=Cluster is the datapath's choice, not an upstream assertion")
ETP_LOCAL = ("ipvs: KUBE-NODE-PORT-LOCAL / KUBE-LOAD-BALANCER-LOCAL return before masquerade, local endpoints only "
             "(proxier.go syncEndpoint); cilium: the external-scope frontend holds node-local backends only "
             "(pkg/loadbalancer/writer/writer.go shouldUseLocalBackends; kubeproxy-free.rst, Client Source IP Preservation)")
ITP_LOCAL = ("ipvs: local endpoints only (pkg/proxy/topology.go CategorizeEndpoints, proxier.go syncEndpoint); cilium: "
             "the writer filters the ClusterIP frontend to node-local backends whatever the source "
             "(writer.go shouldUseLocalBackends; kubeproxy-free.rst, Internal Traffic Policy)")
ITP_NONE_HERE = ("no local endpoint under iTP=Local; upstream e2e asserts only that it fails. ipvs: a ClusterIP-only "
                 "Service with iTP=Local gets no cluster endpoints (serviceport.go UsesClusterEndpoints false), so the "
                 "virtual server has no destination and IPVS answers ICMP port unreachable (topology.go, proxier.go "
                 "syncEndpoint, ip_vs_core.c ip_vs_leave); cilium: the frontend has 0 backends on this node and "
                 "socket-LB fails connect() with EHOSTUNREACH (bpf_sock.c __sock4_xlate_fwd; pods under "
                 "socketLB.hostNamespaceOnly=true would see REFUSED)")
SOURCE_RANGES = ("ipvs: KUBE-LOAD-BALANCER-SOURCE-CIDR returns for listed sources, KUBE-SOURCE-RANGES-FIREWALL drops "
                 "the rest (proxier.go writeIptablesRules); cilium: nodeport_svc_lb4 drops sources outside the ranges "
                 "(DROP_NOT_IN_SRC_RANGE; kubeproxy-free.rst, LoadBalancer Source Ranges Checks)")

ROWS = [
    # ClusterIP: the client pod's own address arrives.
    Row("pod-same-node", "clusterip", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="cluster", note=POD_SRC),
    Row("pod-other-node", "clusterip", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="cluster", note=POD_SRC),
    Row("pod-other-node", "clusterip", "udp", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="cluster", note=POD_SRC),
    # eTP=Cluster: kube-proxy masquerades external traffic; Cilium only when it forwards to another node (snat), or never (dsr).
    Row("external", "nodeport-local", service="cluster", klass=per_mode(EXPECTED, cilium=IMPL, custom=IMPL),
        expect=per_mode(REACH & SRC_IP_MASQUERADED, cilium=REACH & SRC_IP_PRESERVED, custom=ANY_DECLARED), note=ETP_CLUSTER),
    # ... towards the node without the backends: snat masquerades, dsr preserves; the variant is a run attribute,
    # so Cilium is declared only to reach (see docs/conformance.md, Cilium variants).
    Row("external", "nodeport-remote", service="cluster", klass=per_mode(EXPECTED, cilium=IMPL, custom=IMPL),
        expect=per_mode(REACH & SRC_IP_MASQUERADED, cilium=REACH, custom=ANY_DECLARED),
        note=ETP_CLUSTER + "; cilium declares REACH only: snat/maglev masquerade here, dsr preserves the client IP"),
    Row("external", "lb", service="cluster", klass=per_mode(EXPECTED, cilium=IMPL, custom=IMPL),
        expect=per_mode(REACH & SRC_IP_MASQUERADED, cilium=REACH, custom=ANY_DECLARED),
        note=ETP_CLUSTER + "; cilium declares REACH only: the client IP depends on which node the LB picks (preserved "
             "on the backends' node, masqueraded via the other under snat, preserved always under dsr)"),
    # eTP=Local: client IP kept, local endpoints only, nothing where there is none.
    Row("external", "nodeport-local", expect=REACH_LOCAL & SRC_IP_PRESERVED, klass=EXPECTED, service="local", note=ETP_LOCAL),
    Row("external", "nodeport-local", "udp", expect=REACH_LOCAL & SRC_IP_PRESERVED, klass=EXPECTED, service="local", note=ETP_LOCAL),
    # Which node the LB hands the packet to is the LB's choice (health-checked nodes), so "local" cannot be
    # pinned to a node here; the preserved client IP is what shows eTP=Local was applied.
    Row("external", "lb", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="local", note=ETP_LOCAL),
    Row("external", "nodeport-remote", service="local", **NO_LOCAL, klass=per_mode(EXPECTED, ipvs=IMPL, cilium=IMPL, custom=IMPL),
        expect=per_mode(TIMEOUT, ipvs=TIMEOUT, cilium=REFUSED, custom=ANY_DECLARED),
        note="ipvs: with no local endpoint the virtual server gets the cluster endpoints, unmasqueraded (proxier.go "
             "syncEndpoint, kk PR #97081), so the backend answers from its pod IP and the client discards the reply: "
             "a timeout by reply path, not by rule; cilium: the external-scope frontend is empty on this node and "
             "tail_no_service_ipv4 answers ICMP port unreachable (writer.go, reflectors/conversions.go, bpf/lib/lb.h; "
             "TIMEOUT with serviceNoBackendResponse=drop); Cilium's kind CI skips upstream's externalTrafficPolicy e2e"),
    Row("pod-other-node", "nodeport-remote", service="local", klass=IMPLEMENTATION_DEFINED, expect=per_mode(REACH),
        note="pod -> NodePort of a node without local endpoints under eTP=Local: kube-proxy treats pod traffic as "
             "internal and forwards cluster-wide; upstream deliberately does not assert it (kk PR #123622); ipvs: "
             "the same for local pods (proxier.go syncEndpoint, kk PR #97081); cilium: in-cluster access reaches "
             "every endpoint (kubeproxy-free.rst, Client Source IP Preservation; cilium#37613 is about a client pod "
             "on another node)"),
    # iTP=Local: only the client's node's endpoints; none there → not served.
    Row("pod-same-node", "clusterip", expect=REACH_LOCAL & SRC_IP_PRESERVED, klass=EXPECTED, service="itp", note=ITP_LOCAL),
    Row("node-same-node", "clusterip", expect=REACH_LOCAL, klass=EXPECTED, service="itp", note=ITP_LOCAL),
    *(Row(v, "clusterip", p, service="itp", **NO_LOCAL, klass=per_mode(EXPECTED, ipvs=IMPL, cilium=IMPL, custom=IMPL),
          expect=per_mode(TIMEOUT, ipvs=REFUSED, cilium=UNREACHABLE, custom=ANY_DECLARED), note=ITP_NONE_HERE)
      for v, p in (("pod-other-node", "tcp"), ("pod-other-node", "udp"), ("node", "tcp"))),
    # loadBalancerSourceRanges.
    Row("external", "lb", expect=REACH, klass=EXPECTED, service="allow", note=SOURCE_RANGES),
    Row("external", "lb", klass=EXPECTED, service="block", **DROP, note=SOURCE_RANGES),
    Row("external", "nodeport-local", expect=REACH, klass=IMPLEMENTATION_DEFINED, service="block",
        note="kube-proxy applies source ranges to the LB IP only; the NodePort stays open (TestLoadBalancer); ipvs: "
             "only LB ingress entries go into KUBE-LOAD-BALANCER-FW (proxier.go); cilium: ranges apply to the LB "
             "frontend only unless bpf.lbSourceRangeAllTypes (kubeproxy-free.rst, LoadBalancer Source Ranges Checks)"),
    Row("pod-other-node", "lb", service="block", klass=IMPLEMENTATION_DEFINED, count=2, timeout=1.0,
        expect=per_mode(TIMEOUT, cilium=REACH, custom=ANY_DECLARED),
        note="in-cluster pods are not in the range: kube-proxy drops them too; ipvs: the LB IP is local (kube-ipvs0) "
             "and KUBE-PROXY-FIREWALL drops the pod source (proxier.go); cilium: in-cluster pods and host processes "
             "ignore the ranges, socket-LB has no source-range check (kubeproxy-free.rst, LoadBalancer Source "
             "Ranges Checks)"),
]

HAIRPIN = Row("backend", "clusterip", expect=REACH, klass=EXPECTED, count=5,
              note="ipvs: KUBE-LOOP-BACK set masquerades the hairpin (proxier.go writeIptablesRules); cilium: socket-LB "
                   "connects the pod to itself (bpf_sock.c; Cilium connectivity test pod-to-itself-via-service)")


def _ranges(cidrs):
    return lambda b: b["spec"].update(loadBalancerSourceRanges=list(cidrs))


@pytest.fixture(scope="module")
def policies(cluster, k8s, suite_config, scenario_namespace):
    # Without an external client nothing is allowed by address: the "allow" range then admits everyone.
    from proxysuite.ipfamily import family_of

    has_external, _ = cluster.features().require("external_client")
    families = tuple(cluster.ip_families)
    if has_external:
        ext = cluster.external_vantage()
        allowed = [f"{ip}/{HOST_PREFIX[family_of(ip)]}" for ip in (ext.source_ips or (ext.source_ip,)) if family_of(ip) in families]
    else:
        allowed = [{"ipv4": "0.0.0.0/0", "ipv6": "::/0"}[f] for f in families]
    return build_scenario(
        cluster, k8s, suite_config.run_id, scenario_namespace("source-ip"),
        backends={0: 2},
        services={
            "cluster": ServiceSpec("LoadBalancer"),
            "local": ServiceSpec("LoadBalancer", tweak=lambda b: b["spec"].update(externalTrafficPolicy="Local")),
            "itp": ServiceSpec("ClusterIP", tweak=lambda b: b["spec"].update(internalTrafficPolicy="Local")),
            "allow": ServiceSpec("LoadBalancer", tweak=_ranges(allowed)),
            "block": ServiceSpec("LoadBalancer", tweak=_ranges([BLOCKED_RANGES[f] for f in families])),
        },
    )


@check("source-ip", "policy", rows=ROWS, per_family=True)
def test_source_ip_and_policies(row, policies, conformance):
    conformance.run_row(policies.jig, row, policies.svc(row.service))


HC_COUNT = per_mode("endpoints", cilium="backends")
"""What healthCheckNodePort's ``localEndpoints`` counts: kube-proxy (iptables, nftables, IPVS alike) counts the
node's ready endpoint IPs, squashing a pod's ports on purpose (pkg/proxy/endpointschangetracker.go
LocalReadyEndpoints: "10.0.0.1:80 and 10.0.0.1:443 ... 1 endpoint, not 2"); Cilium counts
its local active backends, and a Cilium backend is an (address, port, protocol) triple (pkg/loadbalancer/
healthserver/healthserver.go getLocalEndpointCount; pkg/loadbalancer/backend.go, ``Address L3n4Addr``), so a
pod behind a two-port Service counts twice. Both answer 200 exactly when the node has a ready endpoint."""
HC_CLASS = per_mode(EXPECTED, cilium=IMPL)


@check("source-ip", "health-check-node-port")
@pytest.mark.parametrize("where", ["node-with-endpoints", "node-without-endpoints"])
def test_health_check_node_port(where, policies, conformance, cluster):
    """eTP=Local health check: 200 with the local endpoint count where there are some, 503 where there are none."""
    jig = policies.jig
    nodes = jig.node_names
    if where == "node-without-endpoints" and len(nodes) < 2:
        pytest.skip("needs a node without endpoints: run with --nodes 2 or more")
    node = nodes[0] if where == "node-with-endpoints" else nodes[1]
    svc = policies.svc("local")
    conformance.forensics.watch(jig)
    hc = svc["spec"]["healthCheckNodePort"]
    status, body = node_http(cluster, node, hc, "/healthz")
    local = len(jig.ready_backends(node=node))
    if for_mode(HC_COUNT, cluster.mode) == "backends":
        local *= len(svc["spec"]["ports"])
    try:
        reported = json.loads(body).get("localEndpoints")
    except ValueError:
        reported = None
    want = 200 if local else 503
    conformance.judge_value(f"{node}:{hc}/healthz (healthCheckNodePort of {jig.namespace}/local; counts "
                            f"{for_mode(HC_COUNT, cluster.mode)})", for_mode(HC_CLASS, cluster.mode),
                            f"{want} with localEndpoints {local}", f"{status} with localEndpoints {reported}",
                            status == want and reported == local, detail=body[:300])


@check("source-ip", "hairpin", rows=[HAIRPIN], per_family=True)
def test_hairpin(row, cluster, k8s, suite_config, namespace, conformance):
    """A pod reaches itself through its own Service (the proxy must masquerade the hairpin)."""
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 1},
                        services={"self": ServiceSpec("ClusterIP")}, clients=False, host_clients=False, barrier=False)
    (me,) = sc.jig.ready_backends()
    conformance.run_row(sc.jig, row, sc.svc(), backend_pod=me)

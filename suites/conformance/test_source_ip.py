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
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    REACH,
    REACH_LOCAL,
    SRC_IP_MASQUERADED,
    SRC_IP_PRESERVED,
    TIMEOUT,
    Row,
    check,
    per_mode,
)
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, node_http

pytestmark = pytest.mark.xdist_group("source-ip")

BLOCKED_RANGE = "192.0.2.0/24"
"""TEST-NET-1: a source range no vantage is in."""

DROP = dict(expect=TIMEOUT, count=2, timeout=1.0)

ROWS = [
    # ClusterIP: the client pod's own address arrives.
    Row("pod-same-node", "clusterip", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="cluster"),
    Row("pod-other-node", "clusterip", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="cluster"),
    Row("pod-other-node", "clusterip", "udp", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="cluster"),
    # eTP=Cluster: external traffic is masqueraded.
    Row("external", "nodeport-local", expect=REACH & SRC_IP_MASQUERADED, klass=EXPECTED, service="cluster"),
    Row("external", "nodeport-remote", expect=REACH & SRC_IP_MASQUERADED, klass=EXPECTED, service="cluster"),
    Row("external", "lb", expect=REACH & SRC_IP_MASQUERADED, klass=EXPECTED, service="cluster"),
    # eTP=Local: client IP kept, local endpoints only, nothing where there is none.
    Row("external", "nodeport-local", expect=REACH_LOCAL & SRC_IP_PRESERVED, klass=EXPECTED, service="local"),
    Row("external", "nodeport-local", "udp", expect=REACH_LOCAL & SRC_IP_PRESERVED, klass=EXPECTED, service="local"),
    # Which node the LB hands the packet to is the LB's choice (health-checked nodes), so "local" cannot be
    # pinned to a node here; the preserved client IP is what shows eTP=Local was applied.
    Row("external", "lb", expect=REACH & SRC_IP_PRESERVED, klass=EXPECTED, service="local"),
    Row("external", "nodeport-remote", klass=EXPECTED, service="local", **DROP),
    Row("pod-other-node", "nodeport-remote", service="local", klass=IMPLEMENTATION_DEFINED, expect=per_mode(REACH),
        note="pod -> NodePort of a node without local endpoints under eTP=Local: kube-proxy treats pod traffic as "
             "internal and forwards cluster-wide; upstream deliberately does not assert it (kk PR #123622)"),
    # iTP=Local: only the client's node's endpoints; none there → dropped.
    Row("pod-same-node", "clusterip", expect=REACH_LOCAL & SRC_IP_PRESERVED, klass=EXPECTED, service="itp"),
    Row("node-same-node", "clusterip", expect=REACH_LOCAL, klass=EXPECTED, service="itp"),
    Row("pod-other-node", "clusterip", klass=EXPECTED, service="itp", **DROP),
    Row("pod-other-node", "clusterip", "udp", klass=EXPECTED, service="itp", **DROP),
    Row("node", "clusterip", klass=EXPECTED, service="itp", **DROP),
    # loadBalancerSourceRanges.
    Row("external", "lb", expect=REACH, klass=EXPECTED, service="allow"),
    Row("external", "lb", klass=EXPECTED, service="block", **DROP),
    Row("external", "nodeport-local", expect=REACH, klass=IMPLEMENTATION_DEFINED, service="block",
        note="kube-proxy applies source ranges to the LB IP only; the NodePort stays open (TestLoadBalancer)"),
    Row("pod-other-node", "lb", service="block", klass=IMPLEMENTATION_DEFINED, expect=per_mode(TIMEOUT), count=2, timeout=1.0,
        note="in-cluster pods are not in the range: kube-proxy drops them too"),
]


def _ranges(cidrs):
    return lambda b: b["spec"].update(loadBalancerSourceRanges=list(cidrs))


@pytest.fixture(scope="module")
def policies(cluster, k8s, suite_config, scenario_namespace):
    ext = cluster.external_vantage()
    allowed = [f"{ext.source_ip}/32"] if ext is not None else ["0.0.0.0/0"]
    return build_scenario(
        cluster, k8s, suite_config.run_id, scenario_namespace("source-ip"),
        backends={0: 2},
        services={
            "cluster": ServiceSpec("LoadBalancer"),
            "local": ServiceSpec("LoadBalancer", tweak=lambda b: b["spec"].update(externalTrafficPolicy="Local")),
            "itp": ServiceSpec("ClusterIP", tweak=lambda b: b["spec"].update(internalTrafficPolicy="Local")),
            "allow": ServiceSpec("LoadBalancer", tweak=_ranges(allowed)),
            "block": ServiceSpec("LoadBalancer", tweak=_ranges([BLOCKED_RANGE])),
        },
    )


@check("source-ip", "policy", rows=ROWS)
def test_source_ip_and_policies(row, policies, conformance):
    conformance.run_row(policies.jig, row, policies.svc(row.service))


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
    try:
        reported = json.loads(body).get("localEndpoints")
    except ValueError:
        reported = None
    want = 200 if local else 503
    conformance.judge_value(f"{node}:{hc}/healthz (healthCheckNodePort of {jig.namespace}/local)", EXPECTED,
                            f"{want} with localEndpoints {local}", f"{status} with localEndpoints {reported}",
                            status == want and reported == local, detail=body[:300])


@check("source-ip", "hairpin")
def test_hairpin(cluster, k8s, suite_config, namespace, conformance):
    """A pod reaches itself through its own Service (the proxy must masquerade the hairpin)."""
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 1},
                        services={"self": ServiceSpec("ClusterIP")}, clients=False, host_clients=False, barrier=False)
    (me,) = sc.jig.ready_backends()
    conformance.run_row(sc.jig, Row("backend", "clusterip", expect=REACH, klass=EXPECTED, count=5), sc.svc(), backend_pod=me)

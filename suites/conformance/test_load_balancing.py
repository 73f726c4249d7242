"""Load balancing: every ready endpoint gets traffic, uniformly; scaling is followed.

Scenario (module-shared): three backends on the first node, Service ``spread`` of
type NodePort. Each row sends enough new connections (TCP) or new flows (UDP, a
fresh source port each) for a chi-square uniformity test at alpha = 0.001 with
power 0.9 against a 2:1 skew (:func:`proxysuite.probes.analysis.samples_for_uniformity`);
a rejected sample is confirmed on a fresh one twice as large before the row fails.

Release: v1.0
Testname: Service, load balancing
Description: Traffic to a Service MUST be spread over all its ready endpoints; the
kube-proxy modes pick an endpoint uniformly at random per new connection
(iptables: statistic random cascade; nftables: numgen random), so the observed
distribution SHOULD be consistent with uniform. After the backing Deployment is
scaled up or down, the datapath MUST follow (new endpoints get traffic, removed
ones get none).

ipvs balances with its default scheduler rr (pkg/proxy/ipvs/proxier.go defaultScheduler), which the
uniformity test accepts; a user-chosen source-hashing scheduler (sh, mh) would fail UNIFORM from one
client by configuration. Removed destinations go to weight 0 and get no new connections
(graceful_termination.go). Cilium's default algorithm is random (kubeproxy-free.rst, Maglev), socket-LB
picks a slot per connect() (bpf/bpf_sock.c); Maglev (variant ``maglev``) hashes the 5-tuple for
north-south traffic only, still uniform over varying source ports. Cilium's kind CI skips "Granular
Checks: Services should update endpoints" without a reason, so watch scale-up-down there.
"""

from __future__ import annotations

import pytest

from proxysuite.conformance import EXPECTED, REACH, REACH_ALL, REQUIRED, UNIFORM, Row, check
from proxysuite.conformance.scenario import ServiceSpec, build_scenario
from proxysuite.probes.analysis import samples_for_uniformity

N = samples_for_uniformity(3)

SOURCES = ("ipvs: scheduler rr by default (pkg/proxy/ipvs/proxier.go), each new connection or UDP flow is a new IPVS "
           "connection; cilium: algorithm random by default, socket-LB picks per connect() (bpf/bpf_sock.c; "
           "kubeproxy-free.rst, Maglev: maglev applies to north-south only)")
ROWS = [
    Row("pod-same-node", "clusterip", "tcp", expect=REACH_ALL & UNIFORM, klass=EXPECTED, count=N, note=SOURCES),
    Row("pod-other-node", "clusterip", "tcp", expect=REACH_ALL & UNIFORM, klass=EXPECTED, count=N, note=SOURCES),
    Row("pod-other-node", "clusterip", "udp", expect=REACH_ALL & UNIFORM, klass=EXPECTED, count=N, note=SOURCES),
    Row("node", "clusterip", "tcp", expect=REACH_ALL & UNIFORM, klass=EXPECTED, count=N, note=SOURCES),
    Row("external", "nodeport-remote", "tcp", expect=REACH_ALL & UNIFORM, klass=EXPECTED, count=N, note=SOURCES),
]


@pytest.fixture(scope="module")
def spread(cluster, k8s, suite_config, scenario_namespace):
    return build_scenario(cluster, k8s, suite_config.run_id, scenario_namespace("load-balancing"),
                          backends={0: 3}, services={"spread": ServiceSpec("NodePort")})


@pytest.mark.xdist_group("load-balancing")
@check("load-balancing", "uniform", rows=ROWS, per_family=True)
def test_uniform(row, spread, conformance):
    conformance.run_row(spread.jig, row, spread.svc(), ask="hostname")


@check("load-balancing", "scale-up-down")
def test_scale_up_down(cluster, k8s, suite_config, namespace, conformance):
    """Scale 1 → 4: all four get traffic; 4 → 1: only the survivor does."""
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 1},
                        services={"scaled": ServiceSpec("ClusterIP")}, host_clients=False)
    jig = sc.jig
    (group,) = jig.groups
    jig.scale(group, 4)
    jig.wait_pods(group)
    jig.wait_endpoints("scaled", ready=4)
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH_ALL, klass=REQUIRED, count=80),
                        sc.svc(), settle="expect", ask="hostname")
    jig.scale(group, 1)
    jig.wait_endpoints("scaled", ready=1)
    survivor = jig.ready_backends()
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH, klass=REQUIRED, count=40),
                        sc.svc(), settle="expect", allowed=survivor, ask="hostname")

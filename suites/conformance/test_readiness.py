"""Readiness and termination: who may get traffic while pods are unready or terminating.

Release: v1.0 (readiness), v1.26 (ProxyTerminatingEndpoints GA in v1.28)
Testname: Service, readiness and terminating endpoints
Description: A pod that is not ready MUST NOT receive Service traffic, unless the
Service sets publishNotReadyAddresses, in which case it SHOULD. A terminating pod
that is still serving SHOULD receive traffic only when the Service has no ready
endpoint (for the traffic policy in effect: cluster-wide for iTP/eTP=Cluster, on
the receiving node for iTP/eTP=Local), and the eTP=Local health check SHOULD answer
503 when a node has only terminating endpoints (upstream e2e "fallback to
terminating endpoints", "fail health check node port if there are only
terminating endpoints").

ipvs shares kube-proxy's endpoint selection (pkg/proxy/topology.go CategorizeEndpoints) and keeps a removed
destination at weight 0 until its connections end (pkg/proxy/ipvs/graceful_termination.go). Cilium uses
active backends only, serving-terminating ones only when no active one is left, and keeps datapath state
for established connections (kubeproxy-free.rst, Graceful Termination); its eTP=Local health server counts
active backends only (pkg/loadbalancer/healthserver/healthserver.go). One Cilium step is record-only
(:data:`FALLBACK`).
"""

from __future__ import annotations

import time

import pytest

from proxysuite.conformance import EXPECTED, REACH, REACH_ALL, RECORD_ONLY, Row, check, per_mode
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, node_http

SHUTDOWN_DELAY = 40
"""netexec keeps serving this long after SIGTERM (--delay-shutdown), so terminating pods stay serving."""
GRACE = SHUTDOWN_DELAY + 10


@pytest.fixture(scope="module")
def unready(cluster, k8s, suite_config, scenario_namespace):
    return build_scenario(
        cluster, k8s, suite_config.run_id, scenario_namespace("readiness"),
        backends={0: 2}, unready={0: 1},
        services={
            "ready-only": ServiceSpec("NodePort"),
            "publish": ServiceSpec("ClusterIP", tweak=lambda b: b["spec"].update(publishNotReadyAddresses=True), endpoints=3),
        },
    )


READY_ONLY = ("ipvs: ready endpoints only (pkg/proxy/topology.go CategorizeEndpoints, shared by every kube-proxy mode); "
              "cilium: only backends in state active are selected (kubeproxy-free.rst, Graceful Termination)")
NOT_READY_ROWS = [
    Row("pod-other-node", "clusterip", expect=REACH_ALL, klass=EXPECTED, count=40, service="ready-only", note=READY_ONLY),
    Row("node", "clusterip", expect=REACH, klass=EXPECTED, count=20, service="ready-only", note=READY_ONLY),
    Row("external", "nodeport-local", expect=REACH, klass=EXPECTED, count=20, service="ready-only", note=READY_ONLY),
]
PUBLISH_ROW = Row("pod-other-node", "clusterip", expect=REACH_ALL, klass=EXPECTED, count=40, service="publish",
                  note="ipvs: publishNotReadyAddresses endpoints are ready in the EndpointSlice, topology.go selects "
                       "them; cilium follows the same EndpointSlice conditions (kubeproxy-free.rst, Graceful Termination)")


@pytest.mark.xdist_group("readiness")
@check("readiness", "not-ready-gets-no-traffic", rows=NOT_READY_ROWS, per_family=True)
def test_not_ready_gets_no_traffic(row, unready, conformance):
    conformance.run_row(unready.jig, row, unready.svc(row.service), ask="hostname")


@pytest.mark.xdist_group("readiness")
@check("readiness", "publish-not-ready-addresses", rows=[PUBLISH_ROW], per_family=True)
def test_publish_not_ready(row, unready, conformance):
    everyone = [b.name for b in unready.jig.backend_pods()]
    conformance.run_row(unready.jig, row, unready.svc(row.service), allowed=everyone, ask="hostname")


POLICIES = {
    # variant: (service tweak, vantage, target)
    "cluster": (lambda b: None, "pod-other-node", "clusterip"),
    "itp-local": (lambda b: b["spec"].update(internalTrafficPolicy="Local"), "pod-same-node", "clusterip"),
    "etp-cluster": (lambda b: None, "external", "nodeport-remote"),
    "etp-local": (lambda b: b["spec"].update(externalTrafficPolicy="Local"), "external", "nodeport-local"),
}
FALLBACK_SOURCES = ("ipvs: topology.go CategorizeEndpoints (serving-terminating only when no ready endpoint), shared "
                    "with iptables/nftables; cilium: kubeproxy-free.rst, Graceful Termination")
ITP_LOCAL_UNKNOWN = ("; cilium record-only: Cilium's kind CI skips upstream's 'fallback to local terminating endpoints "
                     "when there are no ready endpoints with internalTrafficPolicy=Local' without a reason "
                     "(.github/workflows/k8s-kind-network-e2e.yaml); its code suggests it works (writer.go local filter)")
FALLBACK = {
    policy: Row(vantage, target, klass=EXPECTED, count=20,
                expect=per_mode(REACH, cilium=RECORD_ONLY) if policy == "itp-local" else REACH,
                note=FALLBACK_SOURCES + (ITP_LOCAL_UNKNOWN if policy == "itp-local" else ""))
    for policy, (_, vantage, target) in POLICIES.items()
}
"""The row each terminating-fallback variant probes (both steps)."""


@check("readiness", "terminating-fallback")
@pytest.mark.parametrize("policy", list(POLICIES))
def test_terminating_fallback(policy, cluster, k8s, suite_config, namespace, conformance):
    """Ready beats serving-terminating; with no ready endpoint left, serving-terminating ones are used."""
    tweak, _, _ = POLICIES[policy]
    stype = "LoadBalancer" if policy == "etp-local" else "NodePort"
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, host_clients=False,
                        services={"term": ServiceSpec(stype, tweak=tweak, endpoints=0)})
    jig = sc.jig
    node = jig.node_names[0]
    a, = jig.backends({node: 1}, prefix="a", grace=GRACE, delay_shutdown=SHUTDOWN_DELAY)
    b, = jig.backends({node: 1}, prefix="b", grace=GRACE, delay_shutdown=SHUTDOWN_DELAY)
    jig.wait_pods()
    jig.wait_endpoints("term", ready=2)
    pod_a, pod_b = jig.ready_backends(a)[0], jig.ready_backends(b)[0]
    row = FALLBACK[policy]

    # Step 1: a terminates while b is ready: only b gets traffic.
    jig.scale(a, 0)
    jig.wait_endpoints("term", ready=1, terminating=1)
    conformance.run_row(jig, row, sc.svc(), allowed=[pod_b], settle="expect", ask="hostname")

    # Step 2: b terminates too: no ready endpoint, both serving-terminating: fallback to them.
    jig.scale(b, 0)
    jig.wait_endpoints("term", ready=0, terminating=2)
    jig.barrier()
    conformance.run_row(jig, row, sc.svc(), allowed=[pod_a, pod_b], settle=False, ask="hostname")

    if policy == "etp-local":
        hc = sc.svc()["spec"]["healthCheckNodePort"]
        status, body = node_http(cluster, node, hc, "/")
        conformance.judge_value(f"healthCheckNodePort {hc} on {node} with only terminating endpoints", EXPECTED,
                                "503", str(status), status == 503, detail=body[:200])


HOLD = 6.0
"""Seconds the draining probe keeps its connection open between its two requests."""
DRAIN_SOURCES = {
    "ipvs": "ipvs: the destination stays at weight 0 in the graceful-termination list until its connections end "
            "(pkg/proxy/ipvs/graceful_termination.go)",
    "cilium": "cilium: datapath state is kept for established connections, and a socket-LB socket is connected to "
              "the pod IP itself (kubeproxy-free.rst, Graceful Termination)",
}


@check("readiness", "established-connection-drains")
def test_established_connection_drains(cluster, k8s, suite_config, namespace, conformance):
    """A connection opened before the pod starts terminating keeps being served by that pod (upstream: graceful termination)."""
    import threading

    from proxysuite.probes.engine import ProbeRequest

    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, host_clients=False,
                        services={"drain": ServiceSpec("ClusterIP", endpoints=0)})
    jig = sc.jig
    (group,) = jig.backends({jig.node_names[0]: 1}, prefix="d", grace=GRACE, delay_shutdown=SHUTDOWN_DELAY)
    jig.wait_pods()
    jig.wait_endpoints("drain", ready=1)
    (pod,) = jig.ready_backends(group)
    row = Row("pod-other-node", "clusterip", expect=REACH, klass=EXPECTED, count=1)
    if conformance.mode in DRAIN_SOURCES:
        conformance.record.notes.append(DRAIN_SOURCES[conformance.mode])
    conformance.run_row(jig, row, sc.svc(), ask="hostname")
    v, t, _ = conformance.resolve(jig, row, sc.svc())
    result = {}
    req = ProbeRequest(t.host, t.port, "tcp", ask="both", timeout=HOLD + 5, hold=HOLD, label="held across termination")
    th = threading.Thread(target=lambda: result.setdefault("obs", v.run([req])))
    th.start()
    time.sleep(1.0)
    jig.scale(group, 0)
    jig.wait_endpoints("drain", ready=0, terminating=1)
    th.join(HOLD + 15)
    obs = result.get("obs") or []
    jig.log("probe", f"{v.name} -> {t} held {HOLD:g}s while {pod} terminated", obs)
    conformance.judge(REACH, EXPECTED, obs, conformance.context(jig, v, t, None, [pod]),
                      f"{v.name} -> {t}: connection opened before {pod} terminated, second request after")

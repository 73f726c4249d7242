"""Traffic distribution: a Service that asks for nearby endpoints gets them, and falls back when there are none.

Scenario (module-shared): nodes carry ``topology.kubernetes.io/zone`` (the local and kind providers
alternate two zones, see :mod:`proxysuite.cluster.zones`; an existing cluster needs two zones of its
own or the module skips with the reason). Two backends on the first node (zone A, group ``near``),
two on the first node of another zone (``far``); Services over those four with
``spec.trafficDistribution`` PreferClose, PreferSameZone, PreferSameNode and none; a ``fallback``
Service with PreferClose over one ready backend in the far zone and one never-ready backend in
zone A. Before any row is judged the EndpointSlice controller must have written the hints the
Service asks for (``hints.forZones`` = the endpoint's zone, plus ``forNodes`` for PreferSameNode)
and no hints where it asks for none (bounded wait), and a barrier Service proves every proxy has
synced them. Each row then sends enough new connections that every allowed backend must answer
(``REACH_ALL`` over the allowed set) and nothing else may.

Release: v1.31 (trafficDistribution beta, PreferClose), v1.33 GA; PreferSameZone / PreferSameNode v1.34 beta,
v1.35 GA (feature gate PreferSameTrafficDistribution, locked on)
Testname: Service, traffic distribution
Description: With ``trafficDistribution: PreferClose`` (or its newer name PreferSameZone) traffic from a
zone that has ready endpoints SHOULD go only to the endpoints of that zone; with PreferSameNode only to
endpoints on the client's node; when the client's zone has no ready endpoint the proxy SHOULD fall back
to every ready endpoint; a Service that does not set the field gets no hints and SHOULD spread over all
endpoints (upstream e2e test/e2e/network/traffic_distribution.go, "should route traffic to an endpoint in
the same zone when using PreferClose" and its PreferSameZone / PreferSameNode siblings; KEP-4444
trafficDistribution, KEP-3015 PreferSameZone/PreferSameNode, KEP-2433 topology-aware hints for the
safeguards).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proxysuite import waits
from proxysuite.cluster import zones
from proxysuite.conformance import EXPECTED, REACH_ALL, Row, check
from proxysuite.conformance.scenario import ServiceSpec, build_scenario

pytestmark = pytest.mark.xdist_group("traffic-distribution")

TOPOLOGY_LABEL = "proxysuite.io/topology"
ZONED = {TOPOLOGY_LABEL: "zoned"}
FALLBACK = {TOPOLOGY_LABEL: "fallback"}

DISTRIBUTION = {"close": "PreferClose", "same-zone": "PreferSameZone", "same-node": "PreferSameNode",
                "plain": None, "fallback": "PreferClose"}
"""Service name → its spec.trafficDistribution."""

KUBE_PROXY = ("kube-proxy (iptables, nftables and ipvs alike): pkg/proxy/topology.go CategorizeEndpoints / "
              "topologyModeFromHints keeps the ready endpoints hinted for the node's zone (forNodes for its node "
              "first) when every ready endpoint has hints and one is for this zone, else all ready endpoints; the "
              "hints come from the EndpointSlice controller (k8s.io/endpointslice trafficdist.go: forZones = the "
              "endpoint's zone, forNodes = its node for PreferSameNode, none without trafficDistribution)")
CILIUM = ("cilium: with loadBalancer.serviceTopology=true, which the project's default values set "
          "(kubeproxy-free.rst, 'Traffic Distribution and Topology Aware Hints'), pkg/loadbalancer/writer/writer.go "
          "selects same-node backends for PreferSameNode, backends hinted for its zone for PreferClose/PreferSameZone "
          "when all have hints and one is for its zone, else all")
NOTES = {
    "close": "e2e 'should route traffic to an endpoint in the same zone when using PreferClose'; " + KUBE_PROXY + "; " + CILIUM,
    "same-zone": "e2e 'should route traffic to an endpoint in the same zone when using PreferSameZone'; " + KUBE_PROXY + "; " + CILIUM,
    "same-node": "e2e 'should route traffic to an endpoint on the same node or fall back to same zone when using "
                 "PreferSameNode'; " + KUBE_PROXY + "; " + CILIUM,
    "fallback": "KEP-2433 safeguards: no endpoint hinted for the zone means all endpoints; " + KUBE_PROXY + "; " + CILIUM,
    "plain": "no trafficDistribution: the controller writes no hints (trafficdist.go defaultHeuristic) and every "
             "ready endpoint is used; " + KUBE_PROXY + "; cilium: same, zone hints are consulted only for the "
             "PreferClose/PreferSameZone/PreferSameNode values (writer.go)",
}


def _row(vantage: str, target: str, proto: str, service: str, count: int = 20) -> Row:
    # 20 probes over two allowed backends leave a topology-honouring proxy a 2 in a million chance of missing one.
    return Row(vantage, target, proto, expect=REACH_ALL, klass=EXPECTED, count=count, service=service, note=NOTES[service])


ROWS = [
    _row("pod-same-node", "clusterip", "tcp", "close"),
    _row("pod-same-node", "clusterip", "udp", "close"),
    _row("node-same-node", "clusterip", "tcp", "close"),
    _row("external", "nodeport-local", "tcp", "close"),
    _row("pod-same-node", "clusterip", "tcp", "same-zone"),
    _row("pod-same-node", "clusterip", "tcp", "same-node"),
    _row("pod-same-node", "clusterip", "tcp", "fallback"),
    # Four allowed backends: 40 probes miss one with probability 4e-5.
    _row("pod-same-node", "clusterip", "tcp", "plain", count=40),
    _row("external", "nodeport-local", "tcp", "plain", count=40),
]


def _distribution(value: str | None):
    def tweak(body: dict) -> None:
        if value:
            body["spec"]["trafficDistribution"] = value
    return tweak


def _hints_written(jig, service: str, ready: int, node_zone: dict[str, str]):
    """The slices of ``service`` carry exactly the hints its trafficDistribution asks for, on ``ready`` endpoints."""
    wanted = DISTRIBUTION[service]
    eps = [e for e in jig.endpoints(service) if e["ready"]]
    if len(eps) != ready:
        return None
    for e in eps:
        if e["zone"] != node_zone.get(e["node"]):
            return None
        if e["for_zones"] != ([e["zone"]] if wanted else []):
            return None
        if e["for_nodes"] != ([e["node"]] if wanted == "PreferSameNode" else []):
            return None
    return eps


@pytest.fixture(scope="module")
def topo(cluster, k8s, suite_config, scenario_namespace):
    from kubernetes import client

    node_zone = zones.node_zones(client.CoreV1Api(k8s))
    names = [n.name for n in cluster.nodes()]
    here = names[0]
    far = next((n for n in names[1:] if node_zone.get(n) and node_zone[n] != node_zone.get(here)), None)
    if not node_zone.get(here) or far is None:
        seen = ", ".join(f"{n}={node_zone.get(n) or '(none)'}" for n in names)
        pytest.skip(f"traffic distribution needs nodes in two zones (label {zones.ZONE_LABEL}); this cluster has {seen}")
    services = {name: ServiceSpec("NodePort" if name in ("close", "plain") else "ClusterIP",
                                  tweak=_distribution(value), selector=FALLBACK if name == "fallback" else ZONED)
                for name, value in DISTRIBUTION.items()}
    sc = build_scenario(cluster, k8s, suite_config.run_id, scenario_namespace("traffic-distribution"),
                        services=services, host_clients=False, barrier=False)
    jig = sc.jig
    try:
        (near,) = jig.backends({here: 2}, prefix="near", extra_labels=ZONED)
        (remote,) = jig.backends({far: 2}, prefix="far", extra_labels=ZONED)
        (fb_far,) = jig.backends({far: 1}, prefix="fbfar", extra_labels=FALLBACK)
        jig.backends({here: 1}, prefix="fbnear", ready=False, extra_labels=FALLBACK)
        jig.wait_pods()
        for name in DISTRIBUTION:
            ready = 1 if name == "fallback" else 4
            waits.wait_until(waits.ENDPOINTS, lambda name=name, ready=ready: _hints_written(jig, name, ready, node_zone),
                             what=f"the EndpointSlices of {name} carry the hints trafficDistribution="
                                  f"{DISTRIBUTION[name]} asks for", on_attempt=jig._log_wait)
            jig.log("note", f"{name}: " + "; ".join(f"{e['name']} zone={e['zone']} forZones={e['for_zones']} "
                                                   f"forNodes={e['for_nodes']}" for e in jig.endpoints(name)))
        # Every proxy applies changes in order: once a Service created after the hints answers on every
        # node, the hints are in every datapath.
        jig.barrier()
    except Exception as exc:
        exc.proxysuite_jig = jig
        raise
    near_pods, far_pods = jig.ready_backends(near), jig.ready_backends(remote)
    allowed = {"close": near_pods, "same-zone": near_pods, "same-node": near_pods,
               "plain": near_pods + far_pods, "fallback": jig.ready_backends(fb_far)}
    return SimpleNamespace(sc=sc, jig=jig, allowed=allowed, here=here, far=far, zones=node_zone)


@check("traffic-distribution", "prefer-nearby", rows=ROWS, per_family=True)
def test_traffic_distribution(row, topo, conformance):
    z = topo.zones
    conformance.record.notes.append(f"client zone {z[topo.here]} ({topo.here}), other zone {z[topo.far]} ({topo.far})")
    conformance.run_row(topo.jig, row, topo.sc.svc(row.service), allowed=topo.allowed[row.service], ask="hostname")

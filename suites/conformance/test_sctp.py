"""SCTP: a Service port with protocol SCTP routes like TCP does, on its ClusterIP and its NodePorts.

Scenario (module-shared): two netexec backends on the first node serving SCTP on :8082 (``--sctp-port``,
one command per association) besides HTTP; Service ``sctp`` of type NodePort with SCTP 8082→8082 (port
equal to targetPort, so a proxy that cannot rewrite SCTP ports is not penalised for it) and TCP 80→8080.

Before anything is created, every node vantage tries ``socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)`` in its
own network namespace: a kernel without SCTP sockets (no ``sctp`` module; conntrack may still track SCTP)
cannot run netexec's SCTP server or send a probe, so the module skips with the kernel's answer. Where the
kernel has SCTP, each row sends real SCTP associations (:func:`proxysuite.probes.engine.probe_sctp`); a row
whose own vantage cannot open an SCTP socket skips with that reason.

Release: v1.20 (SCTPSupport GA)
Testname: Service, SCTP
Description: A Service port with protocol SCTP SHOULD be reachable on the ClusterIP from pods and nodes and
on its NodePorts from pods and outside the cluster, answered by the Service's backends (upstream e2e
[Feature:SCTPConnectivity] "should function for pod-Service: sctp", "should function for node-Service:
sctp", test/e2e/network/networking.go; "should allow creating a basic SCTP service with pod and
endpoints", service.go).
"""

from __future__ import annotations

import pytest

from proxysuite.conformance import EXPECTED, REACH, RECORD_ONLY, Row, check, per_mode
from proxysuite.conformance.scenario import ServiceSpec, build_scenario
from proxysuite.errors import Unsupported
from proxysuite.probes.engine import NO_SCTP, ProbeRequest

pytestmark = pytest.mark.xdist_group("sctp")

SCTP_PORT = 8082
SOURCES = ("kube-proxy: iptables and nftables match -p sctp like tcp/udp (pkg/proxy/iptables/proxier.go, "
           "nftables/proxier.go); ipvs creates SCTP virtual services (pkg/proxy/ipvs/proxier.go, protocol SCTP); "
           "cilium record-only: SCTP is beta and off unless sctp.enabled=true (Documentation/configuration/sctp.rst, "
           "not set in the project's values), and with kube-proxy replacement NodePort is not supported for SCTP")
EXPECT = per_mode(REACH, cilium=RECORD_ONLY)
ROWS = [
    Row(v, t, "sctp", expect=EXPECT, klass=EXPECTED, note=SOURCES)
    for v, t in (("pod-same-node", "clusterip"), ("pod-other-node", "clusterip"), ("node", "clusterip"),
                 ("pod-other-node", "nodeport-remote"), ("external", "nodeport-local"), ("external", "nodeport-remote"))
]


def no_sctp(vantage) -> str | None:
    """Why ``vantage`` cannot open an SCTP socket (the engine's answer), or None when it can."""
    (obs,) = vantage.run([ProbeRequest("127.0.0.1", 9, "sctp", timeout=1.0, label="SCTP socket support")])
    return obs.error if (obs.error or "").startswith(NO_SCTP) else None


def _conntrack_note(cluster, node: str) -> str:
    if not cluster.features().node_exec:
        return ""
    try:
        cluster.node_exec(node, ["cat", "/proc/sys/net/netfilter/nf_conntrack_sctp_timeout_established"], timeout=5)
    except Exception:  # noqa: BLE001 - only a detail of the reason
        return ""
    return " (the kernel does track SCTP in conntrack: net.netfilter.nf_conntrack_sctp_* exists)"


def _serve_sctp(body: dict) -> None:
    c = body["spec"]["template"]["spec"]["containers"][0]
    c["args"].append(f"--sctp-port={SCTP_PORT}")
    c["ports"].append({"name": "sctp", "containerPort": SCTP_PORT, "protocol": "SCTP"})


@pytest.fixture(scope="module")
def sctp(cluster, k8s, suite_config, scenario_namespace):
    # Decided before any backend exists: netexec exits when it cannot listen on SCTP. A node vantage shares
    # its kernel with the node's pods and costs nothing to make; where a provider has none, the client pods
    # the scenario makes anyway are asked instead.
    def skip_without_sctp(vantages) -> None:
        for node, vantage in vantages:
            why = no_sctp(vantage)
            if why:
                pytest.skip(f"{node}: {why}; this kernel has no SCTP sockets{_conntrack_note(cluster, node)}, so no "
                            "backend can serve SCTP and no client can send it; these rows run where the kernel has SCTP")

    node_vantages = []
    for node in cluster.nodes():
        try:
            node_vantages.append((node.name, cluster.node_vantage(node.name)))
        except Unsupported:
            node_vantages = []
            break
    skip_without_sctp(node_vantages)
    ports = [{"name": "sctp", "port": SCTP_PORT, "targetPort": SCTP_PORT, "protocol": "SCTP"},
             {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    sc = build_scenario(cluster, k8s, suite_config.run_id, scenario_namespace("sctp"), host_clients=False,
                        services={"sctp": ServiceSpec("NodePort", ports=ports, endpoints=0)}, barrier=False)
    jig = sc.jig
    if not node_vantages:
        skip_without_sctp([(n, jig.pod_vantage(n)) for n in jig.node_names])
    try:
        jig.backends({jig.node_names[0]: 2}, tweak=_serve_sctp)
        jig.wait_pods()
        jig.wait_endpoints("sctp", ready=2)
        jig.barrier()
    except Exception as exc:
        exc.proxysuite_jig = jig
        raise
    return sc


@check("sctp", "sctp-to-service", rows=ROWS)
def test_sctp(row, sctp, conformance):
    v, _, _ = conformance.resolve(sctp.jig, row, sctp.svc())
    why = no_sctp(v)
    if why:
        conformance.record.notes.append(f"skipped: {why}")
        pytest.skip(f"{row.id}: {v.name}: {why}")
    conformance.run_row(sctp.jig, row, sctp.svc(), ask="hostname")

"""Vantage and target names, resolved against a scenario's placement.

Rows name where traffic starts and where it goes *relative to the backends*, so
the same row means the same path on every provider and node count:

=================  ==========================================================
vantage            where the probe runs
=================  ==========================================================
pod-same-node      a client pod on a node that hosts a backend
pod-other-node     a client pod on a node that hosts no backend
node-same-node     the host network of a node that hosts a backend
node               the host network of a node that hosts no backend
external           the client outside the cluster (provider's external vantage)
backend            a backend pod itself (hairpin through its own Service)
=================  ==========================================================

=====================  =========================================================
target                 address
=====================  =========================================================
clusterip              the Service's cluster IP
nodeport-local         a NodePort on the IP of a node that hosts a backend
nodeport-remote        a NodePort on the IP of a node that hosts no backend
nodeport-localhost     127.0.0.1:NodePort (only meaningful from a node vantage)
lb                     the first load-balancer ingress IP
external-ip            the first of spec.externalIPs
clusterip-wrong-port   the cluster IP on a port the Service does not have
clusterip-wrong-proto  the cluster IP on a port the Service has only for the other protocol
unallocated-ip         an address in the service range that no Service holds
=====================  =========================================================

A name that cannot exist on this cluster (one node has no "other node"; no
external client) raises :class:`~proxysuite.errors.Unsupported` with the reason,
which the checks turn into a skip.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Unsupported

VANTAGES = {
    "pod-same-node": "client pod on a node that hosts a backend",
    "pod-other-node": "client pod on a node that hosts no backend",
    "node-same-node": "host network of a node that hosts a backend",
    "node": "host network of a node that hosts no backend",
    "external": "client outside the cluster",
    "backend": "a backend pod (hairpin)",
}
TARGETS = {
    "clusterip": "cluster IP",
    "nodeport-local": "NodePort on a node with a backend",
    "nodeport-remote": "NodePort on a node without backends",
    "nodeport-localhost": "127.0.0.1:NodePort",
    "lb": "load-balancer ingress IP",
    "external-ip": "spec.externalIPs[0]",
    "clusterip-wrong-port": "cluster IP, port not in the Service",
    "clusterip-wrong-proto": "cluster IP, port of the other protocol",
    "unallocated-ip": "unallocated address in the service range",
}


@dataclass(frozen=True)
class Placement:
    """Which nodes host backends in a scenario."""

    nodes: tuple[str, ...]
    backend_nodes: tuple[str, ...]

    @property
    def other_nodes(self) -> tuple[str, ...]:
        return tuple(n for n in self.nodes if n not in self.backend_nodes)

    def same_node(self) -> str:
        if not self.backend_nodes:
            raise Unsupported("the scenario has no backends, so no node hosts one", "give the scenario backends")
        return self.backend_nodes[0]

    def other_node(self) -> str:
        if not self.other_nodes:
            raise Unsupported(
                f"every node ({', '.join(self.nodes)}) hosts a backend, so there is no node without one",
                "run with --nodes 2 or more",
            )
        return self.other_nodes[0]


def placement_of(jig) -> Placement:
    # A group scaled to zero still marks its node as a backend node: rows keep their path
    # while a check scales backends away (termination, scale-down).
    backend_nodes = []
    for g in jig.groups.values():
        if g["ready"] and g["node"] not in backend_nodes:
            backend_nodes.append(g["node"])
    return Placement(tuple(jig.node_names), tuple(sorted(backend_nodes, key=jig.node_names.index)))


def vantage(jig, name: str, placement: Placement | None = None, backend_pod: str | None = None):
    """The vantage object for a row's vantage name (creating client pods on first use)."""
    p = placement or placement_of(jig)
    if name == "pod-same-node":
        return jig.pod_vantage(p.same_node())
    if name == "pod-other-node":
        return jig.pod_vantage(p.other_node())
    if name == "node-same-node":
        return jig.node_vantage(p.same_node())
    if name == "node":
        return jig.node_vantage(p.other_node())
    if name == "external":
        return jig.external_vantage()
    if name == "backend":
        if not backend_pod:
            raise ValueError("vantage 'backend' needs backend_pod")
        return jig.backend_vantage(backend_pod)
    raise ValueError(f"unknown vantage {name!r}; known: {', '.join(VANTAGES)}")


def target(jig, svc, name: str, proto: str, placement: Placement | None = None, family: str | None = None):
    """The :class:`~proxysuite.workloads.jig.Target` for a row's target name (of ``family``, or the primary one)."""
    p = placement or placement_of(jig)
    fam = {"family": family} if family else {}
    if name == "nodeport-local":
        return jig.target(svc, "nodeport", proto, node=p.same_node(), **fam)
    if name == "nodeport-remote":
        return jig.target(svc, "nodeport", proto, node=p.other_node(), **fam)
    if name == "nodeport-localhost":
        return jig.target(svc, "nodeport-localhost", proto, node=None, **fam)
    if name in ("clusterip", "lb", "external-ip", "clusterip-wrong-port", "clusterip-wrong-proto", "unallocated-ip"):
        return jig.target(svc, name, proto, **fam)
    raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")


def receiving_node(jig, vantage_obj, tgt, placement: Placement) -> str | None:
    """The node whose proxy handles the packet first: the NodePort's node, or the vantage's own node."""
    if tgt.kind == "nodeport" and tgt.node:
        return tgt.node
    return getattr(vantage_obj, "node", None)

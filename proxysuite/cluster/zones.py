"""Topology labels the providers put on nodes, and how a check reads them back.

Nodes alternate between two zones of one region, by position: the 1st, 3rd, 5th... node is in
zone ``proxysuite-a``, the 2nd, 4th... in ``proxysuite-b``. So every cluster of two or more nodes
has two zones, and the first node (the one the catalogue's scenarios place backends on first) is
always in zone a. The local provider's node agent registers its Node with these labels; the kind
configs carry them as node labels on the two worker entries, which ``--nodes N`` repeats in turn.
An existing cluster keeps whatever labels it has (:func:`node_zones`).
"""

from __future__ import annotations

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
REGION = "proxysuite"
ZONES = ("proxysuite-a", "proxysuite-b")


def zone_for(position: int) -> str:
    """The zone of the node at 1-based ``position`` among the workers."""
    return ZONES[(position - 1) % len(ZONES)]


def labels_for(position: int) -> dict[str, str]:
    return {ZONE_LABEL: zone_for(position), REGION_LABEL: REGION}


def node_zones(core) -> dict[str, str]:
    """Node name → zone label ("" when a node has none), read from the API (``core``: a CoreV1Api)."""
    return {n.metadata.name: (n.metadata.labels or {}).get(ZONE_LABEL, "") for n in core.list_node().items}

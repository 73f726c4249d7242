"""The one interface every provider implements.

Suites never ask which provider runs them: they get a :class:`Cluster` and
ask it for vantage points, proxy endpoints and node forensics. The data flow is
provider → cluster → fixtures → probes → observations → verdict / report.

Vantage points are the places traffic starts from:

* ``pod``       a client pod (the suite creates it in the test's namespace, pinned to a node);
* ``node``      the node itself (a hostNetwork client pod, or the node namespace on local);
* ``external``  a client outside the cluster on the nodes' network (local: its own netns;
                kind: a container on the kind network; existing: none, checks skip).

Every provider runs the same probe engine (``proxysuite.probes.engine``) at the
vantage point, so an observation means the same thing everywhere.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable

from ..probes.engine import Observation, ProbeRequest


@dataclass(frozen=True)
class NodeInfo:
    name: str
    internal_ip: str
    pod_cidr: str | None = None


@dataclass(frozen=True)
class Vantage:
    """A place probes run from. ``run`` sends real packets and returns observations."""

    name: str
    """Readable id used in test ids and reports, e.g. ``pod@node-1``, ``node-2``, ``external``."""
    kind: str
    """``pod``, ``node`` or ``external``."""
    node: str | None
    """Node the vantage sits on (None for external)."""
    source_ip: str
    """The address packets leave with (before any SNAT)."""
    runner: Callable[[list[ProbeRequest]], list[Observation]] = field(repr=False, compare=False)

    def run(self, requests: list[ProbeRequest]) -> list[Observation]:
        return self.runner(requests)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Features:
    """What this cluster can offer; checks that need a missing feature skip with ``reason``."""

    load_balancer: bool = False
    external_client: bool = False
    node_exec: bool = False
    """Can read rules, conntrack and logs from the node (forensics, disruptive checks)."""
    proxy_restart: bool = False
    cluster_dns: bool = False
    udp: bool = True
    proxy_health_endpoints: bool = True
    """The proxy serves kube-proxy's /healthz, /livez (:10256) and /metrics, /proxyMode (:10249)."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why a feature is missing, keyed by feature name."""

    def require(self, name: str) -> tuple[bool, str]:
        if getattr(self, name):
            return True, ""
        return False, self.reasons.get(name, f"the cluster does not offer {name}")


class Cluster(abc.ABC):
    """A running cluster with a proxy under test."""

    provider: str
    mode: str
    name: str
    kubeconfig: str
    """Path of an admin kubeconfig the suite (and the user) can use."""
    client_image: str
    """Image for client pods; it must carry python3 (the probe engine runs there)."""
    backend_image: str
    """agnhost image for backends (netexec)."""
    created: bool = True
    """Whether this process brought the cluster up. Only such a cluster is taken down when the pytest
    session or ``perf run`` ends; a reused one belongs to whoever started it."""

    # --- topology -----------------------------------------------------------------
    @abc.abstractmethod
    def nodes(self) -> list[NodeInfo]:
        """Worker nodes that run pods and the proxy, in a stable order."""

    @abc.abstractmethod
    def features(self) -> Features: ...

    # --- vantage points ------------------------------------------------------------
    @abc.abstractmethod
    def pod_vantage(self, namespace: str, pod: str) -> Vantage:
        """A vantage inside a running pod (client pods, or a backend for hairpin checks)."""

    def node_vantage(self, node: str) -> Vantage:
        """The node itself (host network namespace): the local node netns, or a hostNetwork pod elsewhere."""
        raise NotImplementedError(f"{self.provider} provider offers no node vantage")

    def external_vantage(self) -> Vantage | None:
        """The client outside the cluster, or None (see ``features().reasons['external_client']``)."""
        return None

    # --- the proxy -----------------------------------------------------------------
    external_ip_cidr: str | None = None
    """A range the external client routes to the nodes, for Service externalIPs (None: externalIP checks skip)."""

    @abc.abstractmethod
    def proxy_http(self, node: str, port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
        """GET an endpoint on a node from the node itself: the proxy's (10249 metrics, /proxyMode; 10256 healthz,
        /livez) on loopback, or ``host`` = the node IP for healthCheckNodePorts (nftables serves those only there).

        Any HTTP status is returned; :class:`~proxysuite.errors.ProbeError` when nothing answers."""

    def node_exec(self, node: str, argv: list[str], timeout: float = 30) -> str:
        """Run a command in the node's network context (rules, conntrack); forensics only."""
        raise NotImplementedError(self.features().reasons.get("node_exec", "node exec is not available"))

    def proxy_logs(self, node: str, tail: int = 200) -> str:
        return "(proxy logs are not available from this provider)"

    def restart_proxy(self, node: str) -> None:
        raise NotImplementedError(self.features().reasons.get("proxy_restart", "proxy restart is not available"))

    def proxy_children_cpu_seconds(self, node: str) -> float | None:
        """CPU seconds spent by the proxy's exited children (iptables-restore, nft) since it started.

        A proxy's own ``process_cpu_seconds_total`` leaves out the programs it execs for
        every sync. None where the provider cannot see the proxy's process.
        """
        return None

    def proxy_rules(self, node: str) -> str:
        """The datapath rules the proxy programmed on ``node`` (iptables-save / nft list ruleset)."""
        argv = ["nft", "list", "ruleset"] if self.mode == "nftables" else ["iptables-save"]
        return self.node_exec(node, argv)

    # --- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Release client-side resources; does not delete the cluster."""

"""The two interfaces a provider implements: :class:`Provider` (lifecycle) and :class:`Cluster` (a running one).

Suites never ask which provider runs them: they get a :class:`Cluster` and
ask it for vantage points, proxy endpoints and node forensics. The data flow is
provider → cluster → fixtures → probes → observations → verdict / report.

Adding a provider
-----------------
Write one module with a :class:`Provider` subclass (``check_prereqs``, ``up``,
``down``, ``status``; ``janitor``, ``clusters`` and ``images`` when it has
something to say) and a :class:`Cluster` subclass, then add one line to
:data:`PROVIDERS`. ``--provider``, ``proxysuite cluster …``, ``proxysuite
images`` and ``proxysuite cluster list`` read that registry.

Optional capabilities
---------------------
What a cluster may lack is a named :class:`Features` flag with a reason. One
convention everywhere: ask ``cluster.features().require(name)`` → ``(ok,
reason)`` before using it; a method whose feature is missing raises
:class:`~proxysuite.errors.Unsupported` with that same reason (pytest turns it
into a skip, the CLI into a one-line message).

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
import importlib
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Callable

from ..errors import SuiteError, Unsupported
from ..probes.engine import Observation, ProbeRequest

if TYPE_CHECKING:
    from ..config import SuiteConfig
    from ..images import ImageRef

Progress = Callable[[str], None]


@dataclass(frozen=True)
class NodeInfo:
    name: str
    internal_ip: str
    """The primary InternalIP (the first one in the Node's status)."""
    pod_cidr: str | None = None
    internal_ips: tuple[str, ...] = ()
    """Every InternalIP, primary first (one per family on a dual-stack node); empty means just ``internal_ip``."""

    def ip_of(self, family: str) -> str | None:
        """The InternalIP of ``family`` (``ipv4``/``ipv6``), or None when the node has none."""
        from ..ipfamily import pick

        return pick(self.internal_ips or (self.internal_ip,), family)


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
    source_ips: tuple[str, ...] = ()
    """Every address the vantage has, one per family, primary first (empty: just ``source_ip``)."""

    def for_family(self, family: str) -> "Vantage":
        """This vantage as seen by a probe of ``family``: ``source_ip`` is its address of that family.

        :raises Unsupported: when the vantage has no address of ``family``.
        """
        from ..ipfamily import pick

        ip = pick(self.source_ips or (self.source_ip,), family)
        if ip is None:
            raise Unsupported(f"{self.name} has no {family} address (it has {', '.join(self.source_ips or (self.source_ip,))})",
                              f"run on a cluster with --ip-family dual or {family}")
        return self if ip == self.source_ip else replace(self, source_ip=ip)

    def run(self, requests: list[ProbeRequest]) -> list[Observation]:
        return self.runner(requests)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Features:
    """What this cluster can offer. A missing feature always carries the reason, keyed by its name."""

    load_balancer: bool = False
    """LoadBalancer Services get an address reachable from pods, nodes and the external client."""
    lb_via_proxy: bool = True
    """Traffic to a LoadBalancer address meets the proxy's own LoadBalancer rules (not a forwarder in front of it
    that hits NodePorts, as cloud-provider-kind's Envoy does), so rows probing that address judge the proxy."""
    external_client: bool = False
    """A client outside the cluster on the nodes' network (:meth:`Cluster.external_vantage`)."""
    external_ips: bool = False
    """The external client routes :attr:`Cluster.external_ip_cidr` to the nodes (Service externalIPs from outside)."""
    node_exec: bool = False
    """Can read rules, conntrack and logs from the node (:meth:`Cluster.node_exec`: forensics, disruptive checks)."""
    proxy_restart: bool = False
    """:meth:`Cluster.restart_proxy` restarts the proxy on one node."""
    proxy_children_cpu: bool = False
    """:meth:`Cluster.proxy_children_cpu_seconds`: CPU of the programs the proxy execs (the perf sweep's sync cost)."""
    load_generation: bool = False
    """:meth:`Cluster.load_netns`: a load generator on this machine can send as a client pod (the perf load phase)."""
    cluster_dns: bool = False
    """Pods resolve Service names (a cluster DNS serves ``kube-system/kube-dns``)."""
    udp: bool = True
    """UDP Services can be probed."""
    proxy_health_endpoints: bool = True
    """The proxy serves kube-proxy's /healthz, /livez (``Datapath.healthz_port``) and /metrics, /proxyMode
    (``Datapath.metrics_port``)."""
    proxy_migration: bool = False
    """:meth:`Cluster.migrate_proxy` switches the running proxy's mode node by node, as the provider's runbook does
    (local: restart each node's kube-proxy with the new mode; kind: the kube-proxy ConfigMap's ``mode`` and a
    rollout restart of its DaemonSet)."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why a feature is missing, keyed by feature name."""

    def __post_init__(self) -> None:
        unknown = set(self.reasons) - set(self.names())
        if unknown:
            raise ValueError(f"reasons for unknown features {sorted(unknown)}; features are {', '.join(self.names())}")
        silent = [n for n in self.names() if not getattr(self, n) and not self.reasons.get(n)]
        if silent:
            raise ValueError(f"missing features without a reason: {', '.join(silent)} (a skip must say why)")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "reasons")

    def require(self, name: str) -> tuple[bool, str]:
        """``(True, "")`` when the cluster offers ``name``, else ``(False, why not)``; an unknown name is a bug."""
        if name not in self.names():
            raise ValueError(f"unknown feature {name!r}; features are {', '.join(self.names())}")
        if getattr(self, name):
            return True, ""
        return False, self.reasons[name]

    def unsupported(self, name: str) -> Unsupported:
        """The error a method raises when its feature ``name`` is missing."""
        return Unsupported(self.reasons.get(name, f"the cluster does not offer {name}"),
                           f"check cluster.features().require({name!r}) first, or use a provider that offers it")


class Cluster(abc.ABC):
    """A running cluster with a proxy under test.

    Abstract methods are what every provider offers. The others belong to a :class:`Features` flag of
    the same purpose: the base implementation raises :class:`~proxysuite.errors.Unsupported` with the
    provider's reason, and a provider that offers the feature overrides the method.
    """

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
    proxy_restart_seconds: float = 3.0
    """About how long :meth:`restart_proxy` plus the proxy's first sync take here: a hint for checks whose traffic
    must outlast a restart (sized from it), never a ceiling (waits.PROXY_RECOVERY is)."""
    external_ip_cidr: str | None = None
    """A range the external client routes to the nodes, for Service externalIPs (set iff ``features().external_ips``)."""
    external_ip_cidrs: tuple[str, ...] = ()
    """One such range per family the cluster serves, primary first (empty: just ``external_ip_cidr``)."""
    ip_families: tuple[str, ...] = ("ipv4",)
    """The IP families the cluster serves (Service CIDRs, node and pod addresses), primary first: ``ipv4``,
    ``ipv6``. A row of a family not listed here skips with :meth:`family_reason`."""

    def family_reason(self, family: str) -> str | None:
        """None when the cluster serves ``family``, else why a row of that family cannot run here."""
        if family in self.ip_families:
            return None
        return (f"the cluster serves {' and '.join(self.ip_families) or 'no family the suite recognised'}, not {family} "
                f"(provider {self.provider})")

    # --- topology -----------------------------------------------------------------
    @abc.abstractmethod
    def nodes(self) -> list[NodeInfo]:
        """Worker nodes that run pods and the proxy, in a stable order."""

    @abc.abstractmethod
    def features(self) -> Features: ...

    def _unavailable(self, feature: str) -> Unsupported:
        return self.features().unsupported(feature)

    # --- vantage points ------------------------------------------------------------
    @abc.abstractmethod
    def pod_vantage(self, namespace: str, pod: str) -> Vantage:
        """A vantage inside a running pod (client pods, or a backend for hairpin checks)."""

    @abc.abstractmethod
    def node_vantage(self, node: str) -> Vantage:
        """The node itself (host network namespace): the local node netns, or a hostNetwork pod elsewhere."""

    def external_vantage(self) -> Vantage:
        """The client outside the cluster (feature ``external_client``)."""
        raise self._unavailable("external_client")

    def load_netns(self, namespace: str, pod: str) -> str:
        """The network namespace on this machine that holds ``pod``'s network, so a load generator started here
        sends as that pod (feature ``load_generation``)."""
        raise self._unavailable("load_generation")

    # --- the proxy -----------------------------------------------------------------
    @abc.abstractmethod
    def proxy_http(self, node: str, port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
        """GET an endpoint on a node from the node itself: the proxy's (see ``Mode.datapath`` for its ports) on
        loopback, or ``host`` = the node IP for healthCheckNodePorts (nftables serves those only there).

        Any HTTP status is returned; :class:`~proxysuite.errors.ProbeError` when nothing answers."""

    @abc.abstractmethod
    def proxy_logs(self, node: str, tail: int = 200) -> str:
        """The last ``tail`` lines of the proxy's log on ``node`` (forensics)."""

    def node_exec(self, node: str, argv: list[str], timeout: float = 30) -> str:
        """Run a command in the node's network context (rules, conntrack; feature ``node_exec``)."""
        raise self._unavailable("node_exec")

    def restart_proxy(self, node: str) -> None:
        """Restart the proxy on ``node`` and return once it serves again (feature ``proxy_restart``)."""
        raise self._unavailable("proxy_restart")

    def migrate_proxy(self, to_mode: str, progress: Progress = lambda _m: None) -> "list[ProxySwitch]":
        """Switch the running proxy to ``to_mode`` one node at a time, each node serving its first sync in the new
        mode before the next one starts (feature ``proxy_migration``); afterwards :attr:`mode` is ``to_mode``.

        :raises Unsupported: when the provider cannot, or cannot run ``to_mode``;
            :class:`~proxysuite.errors.SuiteError` when a node's proxy does not come back.
        """
        raise self._unavailable("proxy_migration")

    def proxy_children_cpu_seconds(self, node: str) -> float:
        """CPU seconds spent by the proxy's exited children (iptables-restore, nft) since it started.

        A proxy's own ``process_cpu_seconds_total`` leaves out the programs it execs for every sync
        (feature ``proxy_children_cpu``: the provider must see the proxy's process).
        """
        raise self._unavailable("proxy_children_cpu")

    def proxy_rules(self, node: str) -> str:
        """The datapath rules the proxy programmed on ``node`` (the mode's dump command; feature ``node_exec``)."""
        from ..modes import get_mode

        argv = get_mode(self.mode).datapath.dump
        if not argv:
            raise Unsupported(f"mode {self.mode} has no rule dump the suite knows", "read the proxy's own state on the node")
        return self.node_exec(node, list(argv))

    # --- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Release client-side resources; does not delete the cluster."""


@dataclass(frozen=True)
class ProxySwitch:
    """One node's step of :meth:`Cluster.migrate_proxy`; times are wall-clock seconds (``time.time()``)."""

    node: str
    from_mode: str
    to_mode: str
    stopped: float
    """The old proxy was told to stop (local: SIGTERM; kind: the rollout deleted its pod)."""
    started: float
    """The new proxy process or pod started."""
    synced: float
    """The new proxy's first completed sync (``kubeproxy_sync_proxy_rules_last_timestamp_seconds``)."""
    serving: float
    """The suite saw ``/proxyMode`` answer ``to_mode`` and that sync."""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class ClusterEntry:
    """One cluster a provider knows on this machine (``proxysuite cluster list``)."""

    provider: str
    name: str
    mode: str | None = None
    alive: bool | None = None
    """The cluster answers (None: not checked)."""
    owner_pid: int | None = None
    """The session that owns it (the janitor removes it once that process is gone); None: kept on purpose."""
    owner_alive: bool | None = None
    run_id: str | None = None
    kubeconfig: str | None = None
    note: str = ""


class Provider(abc.ABC):
    """Where clusters come from: one instance per provider, found through :func:`get_provider`.

    An abstract base rather than a ``typing.Protocol``: ``janitor``, ``clusters`` and ``images`` have
    sensible defaults, and a forgotten lifecycle method fails at import of the provider, not mid-run.
    """

    name: str
    """The value of ``--provider``."""
    description: str
    """One line for ``--help``."""
    janitor_note: str = ""
    """Why ``janitor`` has nothing to do here (empty when it sweeps something)."""

    @abc.abstractmethod
    def check_prereqs(self, config: "SuiteConfig") -> None:
        """Raise :class:`SuiteError` (fixable) or :class:`Unsupported` (cannot exist here) before touching anything."""

    @abc.abstractmethod
    def up(self, config: "SuiteConfig", progress: Progress = lambda _m: None, owner_pid: int | None = None) -> Cluster:
        """Create the cluster ``config`` names, or reuse it (then ``Cluster.created`` is False).

        ``owner_pid``: the session that owns a cluster this call creates; the janitor removes it once that
        process is gone (None: kept on purpose, ``--keep-cluster`` or ``cluster up``)."""

    @abc.abstractmethod
    def down(self, config: "SuiteConfig", progress: Progress = lambda _m: None) -> None:
        """Remove what ``up`` created for ``config`` (idempotent)."""

    @abc.abstractmethod
    def status(self, config: "SuiteConfig") -> dict:
        """JSON-able facts about the cluster ``config`` names; always has ``provider`` and ``exists``."""

    def janitor(self, progress: Progress = lambda _m: None, everything: bool = False) -> dict:
        """Remove what crashed runs left behind (``everything``: clusters kept on purpose too)."""
        return {"skipped": self.janitor_note or f"the {self.name} provider leaves nothing to sweep"}

    def clusters(self) -> list[ClusterEntry]:
        """Clusters of this provider on this machine (``proxysuite cluster list``).

        :raises SuiteError: when they cannot be listed (a tool or engine missing), with the reason;
            :class:`Unsupported` where the provider keeps no clusters at all.
        """
        raise Unsupported(f"the {self.name} provider keeps no clusters on this machine", "nothing to list")

    def images(self, mode: str, k8s_version: str, proxy_manifest: str | None = None) -> "list[ImageRef]":
        """Every container image a run of ``mode`` pulls, in pull order (``proxysuite images``)."""
        return []


PROVIDERS: dict[str, str] = {
    "local": "proxysuite.cluster.local.provider:LocalProvider",
    "kind": "proxysuite.cluster.kind:KindProvider",
    "existing": "proxysuite.cluster.existing:ExistingProvider",
}
"""The provider registry: ``--provider`` name → ``module:class``. Imported on first use, so a provider's
dependencies (Docker SDK, pyroute2) load only when it is chosen."""


def get_provider(name: str) -> Provider:
    """The provider registered as ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in PROVIDERS:
        raise SuiteError(f"unknown provider {name!r}", f"use --provider one of {', '.join(PROVIDERS)}")
    module, _, cls = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()

"""Scenarios: a jig with its backends, Services and clients built in one go, then shared by rows.

::

    sc = build_scenario(cluster, k8s, run_id, ns,
                        backends={0: 2},                      # node index → replicas
                        services={"web": ServiceSpec("LoadBalancer")})
    sc.svc("web")                                             # the Service as the API returns it now

Building creates everything first and waits afterwards (pods, EndpointSlices,
load-balancer IPs, one answered probe per node), so the waits overlap; it ends
with a :meth:`~proxysuite.workloads.jig.ServiceJig.barrier` so negative rows can
trust the datapath. Node indexes beyond the cluster's node count fold onto the
last node (a one-node cluster still runs every row that does not need a second node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..workloads.jig import ServiceJig


@dataclass
class ServiceSpec:
    type: str = "ClusterIP"
    tweak: Callable[[dict], None] | None = None
    ports: list[dict] | None = None
    selector: dict | None = None
    endpoints: int | None = None
    """Ready endpoints to wait for (default: every ready backend the selector matches; 0 for none)."""


@dataclass
class Scenario:
    jig: ServiceJig
    services: dict[str, dict] = field(default_factory=dict)
    default: str = ""

    def svc(self, name: str = "") -> dict:
        name = name or self.default
        return self.jig.get_service(name)


def fold(jig: ServiceJig, per_index: dict[int, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    names = jig.node_names
    for idx, n in per_index.items():
        node = names[min(idx, len(names) - 1)]
        out[node] = out.get(node, 0) + n
    return out


def build_scenario(cluster, k8s, run_id: str, namespace: str, *, backends: dict[int, int] | None = None,
                   unready: dict[int, int] | None = None, services: dict[str, ServiceSpec] | None = None,
                   clients: bool = True, host_clients: bool = True, grace: int = 2, delay_shutdown: int = 0,
                   barrier: bool = True) -> Scenario:
    jig = ServiceJig(cluster, k8s, namespace, run_id)
    try:
        if backends:
            jig.backends(fold(jig, backends), grace=grace, delay_shutdown=delay_shutdown)
        if unready:
            jig.backends(fold(jig, unready), ready=False, grace=grace)
        sc = Scenario(jig)
        for name, spec in (services or {}).items():
            sc.services[name] = jig.service(name, spec.type, spec.ports, spec.selector, spec.tweak)
            sc.default = sc.default or name
        wanted = [(n, False) for n in jig.node_names] if clients else []
        if host_clients:
            wanted += [(n, True) for n in jig.node_names]
        jig.ensure_clients(wanted)
        if jig.groups:
            jig.wait_pods()
        n_ready = sum(g["replicas"] for g in jig.groups.values() if g["ready"])
        for name, spec in (services or {}).items():
            if spec.type == "ExternalName":
                continue
            want = spec.endpoints if spec.endpoints is not None else (n_ready if spec.selector is None else None)
            if want is not None:
                jig.wait_endpoints(name, ready=want)
            if spec.type == "LoadBalancer" and cluster.features().load_balancer:
                jig.wait_lb(name)
        for name in sc.services:
            sc.services[name] = jig.get_service(name)
        if barrier and n_ready and clients:
            jig.barrier()
        return sc
    except Exception as exc:
        # No check has run yet, so no harness holds this jig: hand it to the conformance plugin with the
        # error, so a failed build (pods not ready, no endpoints, a rejected Service) gets forensics too.
        exc.proxysuite_jig = jig
        raise


FALLBACK_EXTERNAL_IP_CIDR = "203.0.113.0/24"
"""TEST-NET-3, as upstream e2e uses for externalIPs not assigned to a node; pods and nodes reach it through
the proxy's own rules, the external client only if the provider routes it."""
FALLBACK_EXTERNAL_IP_CIDRS = {"ipv4": FALLBACK_EXTERNAL_IP_CIDR, "ipv6": "2001:db8:203::/120"}
"""The same per family: an IPv6 documentation range apart from the local provider's routed one."""


def external_ips(cluster, salt: str) -> tuple[list[str], bool]:
    """One externalIP per family the cluster serves (primary first), and whether the external client can route them.

    A provider whose external client routes an externalIP range to the nodes offers the ``external_ips`` feature
    and names the ranges in ``external_ip_cidrs`` (``external_ip_cidr`` for the primary family); elsewhere the
    addresses come from :data:`FALLBACK_EXTERNAL_IP_CIDRS`. Each is picked by hashing ``salt`` so modules running
    in parallel do not collide.
    """
    import hashlib
    import ipaddress

    from ..ipfamily import family_of

    routed, _why = cluster.features().require("external_ips")
    ranges = {}
    if routed:
        for c in getattr(cluster, "external_ip_cidrs", None) or (cluster.external_ip_cidr,):
            ranges.setdefault(family_of(c), c)
    out = []
    for family in getattr(cluster, "ip_families", None) or ("ipv4",):
        net = ipaddress.ip_network(ranges.get(family) or FALLBACK_EXTERNAL_IP_CIDRS[family])
        hosts = net.num_addresses - 2
        offset = int(hashlib.sha1(salt.encode()).hexdigest(), 16) % max(hosts - 10, 1) + 10
        out.append(str(net.network_address + offset))
    return out, routed


def external_ip(cluster, salt: str) -> tuple[str, bool]:
    """The primary family's address of :func:`external_ips`, and whether the external client routes it."""
    ips, routed = external_ips(cluster, salt)
    return ips[0], routed


def node_http(cluster, node: str, port: int, path: str) -> tuple[int, str]:
    """GET ``http://<node IP>:<port><path>`` as seen on the node (health-check NodePorts).

    kube-proxy's nftables mode serves health-check NodePorts on the node's own
    address only, never on 127.0.0.1 (the same rule as its NodePorts), so the
    request goes to the node address from the node itself.
    """
    ip = next(n.internal_ip for n in cluster.nodes() if n.name == node)
    return cluster.proxy_http(node, port, path, host=ip)


def icmp_rate_limit_note(cluster) -> str | None:
    """A note when nodes rate-limit ICMP errors: a REJECT then looks like a DROP to a busy client.

    The kernel limits ICMP errors per peer (net.ipv4.icmp_ratelimit, 1000 ms by default). This
    catalogue sends many rejected probes from one external client, and on kernel 6.18 the limiter
    silenced every rejection after the first few (IcmpOutRateLimitHost climbing, no ICMP on the wire).
    Test clusters should set it to 0 on nodes; the provider owns that setting.
    """
    if not cluster.features().node_exec:
        return None
    limited = []
    for n in cluster.nodes():
        try:
            value = cluster.node_exec(n.name, ["sysctl", "-n", "net.ipv4.icmp_ratelimit"], timeout=5).strip()
        except Exception:  # noqa: BLE001
            continue
        if value not in ("0", ""):
            limited.append(f"{n.name}={value}ms")
    if limited:
        return ("nodes rate-limit ICMP errors (net.ipv4.icmp_ratelimit " + ", ".join(limited)
                + "): some rejections reach a busy client as silence")
    return None

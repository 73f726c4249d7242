"""LoadBalancer Services on kind through the proxy under test, and the guard routes of the suite's engine.

**The load balancer.** cloud-provider-kind answers a LoadBalancer address with an Envoy container that
forwards to NodePorts and enforces ``loadBalancerSourceRanges`` itself, so the proxy's own LoadBalancer
rules, source ranges and client-IP handling would never be what a row observes. Instead the kind provider
runs the local provider's controller (:class:`proxysuite.cluster.local.lb.Controller`, the same code) for
the life of the cluster object: it allocates each VIP from a pool at the top of the ``kind`` network's IPv4
subnet (:func:`pool_for`), writes ``status.loadBalancer.ingress`` (``ipMode: VIP``) and routes the VIP
*inside the external client container's network namespace* to the schedulable nodes — for
``externalTrafficPolicy: Local`` only to nodes whose ``healthCheckNodePort`` answers 200, checked from that
container. The VIP is on no interface: kube-proxy on the node matches it, as behind a cloud LB.
The rest of the pool is routed to the network's gateway, so an address no Service holds goes nowhere
(on the suite's engine that gateway drops it: see below).

**Service externalIPs.** The cluster takes them from :data:`EXTERNAL_IP_CIDR`, which the external client's
namespace routes to one node (:func:`external_ip_route`), as a router in front of the cluster would; the node's
proxy matches the address (no interface holds it). An address no Service holds leaves that node by its
default route and ends at the guard's blackhole.

**The guard routes** (:func:`guard_engine`). A probe that is expected to time out (a port no Service has, an
address nobody holds) leaves a node by its default route, towards the ``kind`` network's gateway. On the
suite's own engine that gateway lives in the engine's network namespace (``psdocker-<run id>``); blackhole
routes there for the Service CIDR(s), the pod CIDR, the LB pool and both externalIP ranges make sure such
packets are dropped there, silently (so they still time out), whatever else that namespace ever gets. The
routes live and die with that namespace; nothing is written in the machine's root namespace. On an engine
that is not the suite's, nothing is changed (its gateway is the machine's).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Callable

from ...errors import SuiteError
from ..local import netns

Progress = Callable[[str], None]
log = logging.getLogger("proxysuite.kind.lb")

POOL_PREFIX = 24
"""Size of the LB pool: the last /24 of the ``kind`` network (Docker hands out addresses from the bottom)."""
EXTERNAL_IP_TEST_RANGE = "203.0.113.0/24"
"""The conformance scenario's fallback externalIP range (TEST-NET-3); guarded like the Service CIDR."""
EXTERNAL_IP_CIDR = "198.51.100.0/24"
"""The range kind clusters take Service externalIPs from (TEST-NET-2, RFC 5737: routed nowhere on the internet),
routed from the external client container to a node (:func:`external_ip_route`)."""


def pool_for(subnet: str, prefix: int = POOL_PREFIX) -> str:
    """The LB pool for a ``kind`` network: its last ``/prefix`` (the upper half of a smaller network)."""
    net = ipaddress.ip_network(subnet, strict=False)
    if net.version != 4:
        raise SuiteError(f"the kind network's subnet {subnet} is not IPv4", "recreate the kind network with an IPv4 subnet")
    want = max(prefix, net.prefixlen + 1)
    if want > 30:
        raise SuiteError(f"the kind network {subnet} is too small for a LoadBalancer pool", "use a /24 or larger kind network")
    size = 2 ** (32 - want)
    return str(ipaddress.ip_network((int(net.broadcast_address) - size + 1, want)))


def guard_cidrs(service_cidrs: list[str], pod_cidrs: list[str], pool: str | None) -> list[str]:
    """Every range the guard blackholes in the engine's namespace, de-duplicated, in a stable order."""
    out: list[str] = []
    for cidr in [*service_cidrs, *pod_cidrs, *([pool] if pool else []), EXTERNAL_IP_CIDR, EXTERNAL_IP_TEST_RANGE]:
        norm = str(ipaddress.ip_network(cidr.strip(), strict=False))
        if norm not in out:
            out.append(norm)
    return out


def external_ip_route(cidr: str, node_ips: list[str], network: str, taken: list[str]) -> tuple[str, str]:
    """(range, next hop): where the external client sends Service externalIPs.

    One node, the first of ``node_ips``, as a router in front of a cluster would (the local provider routes its
    range to its first node too): kube-proxy on any node matches an externalIP, so one next hop is enough and keeps
    the path the same for every row. The range must lie outside the ``kind`` network (an on-link address would be
    ARPed for, not routed) and outside every range of the cluster in ``taken`` (Service and pod CIDRs, the LB pool).
    """
    net = ipaddress.ip_network(cidr.strip(), strict=False)
    if net.version != 4:
        raise SuiteError(f"the externalIP range {cidr} is not IPv4", "the kind network routes IPv4 only; use an IPv4 range")
    if not node_ips:
        raise SuiteError("no node to route the externalIP range to", "wait for the nodes to register, then cluster up again")
    for other, what in [(network, "the kind network"), *((t, "a range of the cluster") for t in taken)]:
        o = ipaddress.ip_network(other.strip(), strict=False)
        if o.version == net.version and net.overlaps(o):
            raise SuiteError(f"the externalIP range {net} overlaps {what} ({o})",
                             "recreate the kind network or the cluster with ranges outside TEST-NET-2 (198.51.100.0/24)")
    return str(net), node_ips[0]


def route_external_ips(ext_container: str, cidr: str, next_hop: str) -> None:
    """``ip route replace CIDR via NEXT_HOP`` in the external client container's network namespace only; the
    route lives and dies with that container."""
    with netns.ipr(container_netns(ext_container)) as ns:
        ns.route("replace", dst=cidr, gateway=next_hop)


def install_blackholes(ns_name: str, cidrs: list[str]) -> list[str]:
    """``ip route replace blackhole CIDR`` for each range in namespace ``ns_name`` (a name under
    /var/run/netns or a /proc/PID/ns/net path); returns what is installed. Idempotent."""
    with netns.ipr(ns_name) as ns:
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr)
            ns.route("replace", dst=str(net), type="blackhole", family=10 if net.version == 6 else 2)
    return cidrs


def blackholes(ns_name: str) -> list[str]:
    """The blackhole routes of namespace ``ns_name`` as CIDRs."""
    out = []
    with netns.ipr(ns_name) as ns:
        for family in (2, 10):
            for r in ns.get_routes(family=family, type="blackhole"):
                out.append(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
    return out


# --- docker facts -------------------------------------------------------------------------------------

def _docker_json(*args: str) -> object:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    try:
        if proc.returncode == 0:
            return json.loads(proc.stdout)
    except ValueError:
        pass
    raise SuiteError(f"`docker {' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()[:300]}",
                     "check that the Docker engine answers (docker info)")


def kind_network(network: str = "kind") -> tuple[str, str]:
    """(IPv4 subnet, gateway) of the ``kind`` Docker network."""
    nets = _docker_json("network", "inspect", network)
    configs = ((nets[0].get("IPAM") or {}).get("Config") or []) if isinstance(nets, list) and nets else []
    for cfg in configs:
        subnet = cfg.get("Subnet", "")
        if subnet and ipaddress.ip_network(subnet, strict=False).version == 4:
            gateway = cfg.get("Gateway") or str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
            return subnet, gateway
    raise SuiteError(f"the Docker network {network} has no IPv4 subnet", "recreate it: kind delete cluster, then cluster up again")


def container_netns(container: str) -> str:
    """``/proc/<pid>/ns/net`` of a running container (the engine runs it on this machine's kernel)."""
    pid = _docker_json("inspect", "--format", "{{json .State.Pid}}", container)
    if not pid:
        raise SuiteError(f"container {container} is not running", "start the cluster again (cluster up)")
    path = f"/proc/{pid}/ns/net"
    if not os.path.exists(path):
        raise SuiteError(f"{path} of container {container} is not visible here", "run the suite on the machine of the Docker engine")
    return path


# --- the controller -----------------------------------------------------------------------------------

@dataclass
class KindLoadBalancer:
    """The local provider's LB controller, run in a thread of this process against a kind cluster."""

    kubeconfig: str
    ext_container: str
    node_ips: list[str]
    network: str = "kind"
    pool: str = ""
    ext_netns: str = ""
    _controller: object = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, progress: Progress) -> None:
        from kubernetes import client, config

        from ..local.lb import Controller

        subnet, gateway = kind_network(self.network)
        self.pool = self.pool or pool_for(subnet)
        self.ext_netns = container_netns(self.ext_container)
        with netns.ipr(self.ext_netns) as ns:
            # Addresses of the pool that no Service holds go to the gateway (dropped there), not on-link ARP.
            ns.route("replace", dst=self.pool, gateway=gateway)
        api = client.CoreV1Api(config.new_client_from_config(config_file=self.kubeconfig))
        ctl = Controller(api, self.pool, self.ext_netns, list(self.node_ips))
        self._controller = ctl
        self._thread = threading.Thread(target=ctl.run, daemon=True, name="kind-lb")
        self._thread.start()
        progress(f"LoadBalancer: VIPs from {self.pool} (kind network {subnet}) routed from the external client "
                 f"{self.ext_container} to nodes {', '.join(self.node_ips)} through the proxy under test")

    def stop(self) -> None:
        ctl = self._controller
        if ctl is not None:
            ctl.stop.set()  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._controller = None
        self._thread = None


def guard_engine(service_cidrs: list[str], pod_cidrs: list[str], pool: str | None, progress: Progress) -> list[str]:
    """Blackhole the cluster's ranges in the suite engine's namespace (see the module doc); [] on another engine."""
    from . import engine

    rec = engine.running_suite_engine()
    if rec is None or os.environ.get("DOCKER_HOST") != rec.docker_host:
        return []
    cidrs = install_blackholes(rec.netns, guard_cidrs(service_cidrs, pod_cidrs, pool))
    progress(f"guard routes in the engine's namespace {rec.netns}: blackhole {', '.join(cidrs)} "
             "(probes expected to time out end there)")
    return cidrs

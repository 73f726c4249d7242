"""The local provider's load-balancer controller (what a cloud controller does for type=LoadBalancer).

It allocates a VIP from the pool for every ``type: LoadBalancer`` Service,
writes ``status.loadBalancer.ingress`` (``ipMode: VIP``), and programs the
external client's namespace so the VIP is routed to the nodes, as a cloud LB
would forward to them: every node for ``externalTrafficPolicy: Cluster``, only
nodes whose ``healthCheckNodePort`` answers 200 for ``Local`` (checked from the
external namespace every second, like a cloud health checker). The VIP is
never assigned to an interface: kube-proxy on the node matches it, exactly as
on a cloud. When no node is healthy the route stays on every node (fail open),
so a Service without endpoints is still observable through the LB.

A Service annotated ``proxysuite.io/lb-ip-mode: Proxy`` gets ``ipMode: Proxy``
instead (KEP-1860): the load balancer then proxies, so the external client's
namespace rewrites the VIP's ports to a healthy node's NodePorts (nftables DNAT on
its output path, table ``proxysuite_lb``) and the packet reaches the node addressed
to the node, as from a proxying cloud LB. Nodes and pods have no route to the pool
except their default route to the control plane, which does not forward: a proxy
that rightly leaves a ``Proxy`` ingress IP alone lets in-cluster packets to it die there.

Run: ``python -m proxysuite.cluster.local.lb --kubeconfig K --pool CIDR --ext-netns NS --nodes ip,ip``
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import subprocess
import sys
import threading
import time

from kubernetes import client, config, watch

from ...probes.engine import http_get
from . import netns

log = logging.getLogger("proxysuite.lb")

IP_MODE_ANNOTATION = "proxysuite.io/lb-ip-mode"
"""``VIP`` (default) or ``Proxy``: the ``ipMode`` this controller writes into the Service's ingress."""
NFT_TABLE = "proxysuite_lb"


def wanted_ip_mode(svc) -> str:
    mode = ((svc.metadata.annotations or {}).get(IP_MODE_ANNOTATION) or "VIP").strip()
    return "Proxy" if mode.lower() == "proxy" else "VIP"


def _family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


class Controller:
    """``pool``: one CIDR per family, comma-separated (dual-stack); ``node_ips``: the nodes' addresses of every family.

    A Service gets one ingress IP per family in its ``spec.ipFamilies`` that has a pool, in that order; each is
    routed to the nodes' addresses of its own family."""

    def __init__(self, api: client.CoreV1Api, pool: str, ext_ns: str, node_ips: list[str]):
        self.api, self.ext_ns = api, ext_ns
        self.pools = {_family(c): [str(ip) for ip in ipaddress.ip_network(c).hosts()] for c in pool.split(",") if c}
        self.family_nodes = {f: [ip for ip in node_ips if _family(ip) == f] for f in ("IPv4", "IPv6")}
        self.node_ips = self.family_nodes["IPv4"] or self.family_nodes["IPv6"]
        self.pool = self.pools.get("IPv4") or self.pools.get("IPv6") or []
        self.services: dict[tuple[str, str], client.V1Service] = {}
        self.lock = threading.Lock()
        self.routes: dict[str, tuple[str, ...]] = {}
        self.stop = threading.Event()
        self.make_socket = netns.socket_factory(ext_ns)
        self.proxied: str | None = None
        """The nft ruleset last written for ``ipMode: Proxy`` VIPs (rewritten only when it changes)."""

    # ---- watching --------------------------------------------------------------------
    def watch_loop(self) -> None:
        while not self.stop.is_set():
            try:
                listing = self.api.list_service_for_all_namespaces()
                with self.lock:
                    self.services = {(s.metadata.namespace, s.metadata.name): s for s in listing.items}
                rv = listing.metadata.resource_version
                for ev in watch.Watch().stream(self.api.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=300):
                    svc = ev["object"]
                    key = (svc.metadata.namespace, svc.metadata.name)
                    with self.lock:
                        if ev["type"] == "DELETED":
                            self.services.pop(key, None)
                        else:
                            self.services[key] = svc
                    if self.stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - reconnect on any watch failure
                log.warning("service watch restarting: %s", exc)
                time.sleep(1)

    # ---- reconciling -----------------------------------------------------------------
    def _in_use(self, services) -> set[str]:
        used = set()
        for svc in services:
            for ing in (svc.status.load_balancer.ingress or []) if svc.status and svc.status.load_balancer else []:
                if ing.ip:
                    used.add(ing.ip)
        return used

    def _healthy_nodes(self, svc, family: str = "IPv4") -> list[str]:
        node_ips = self.family_nodes.get(family) or self.node_ips
        if svc.spec.external_traffic_policy != "Local" or not svc.spec.health_check_node_port:
            return list(node_ips)
        healthy = []
        for ip in node_ips:
            try:
                status, _ = http_get(ip, svc.spec.health_check_node_port, "/", timeout=0.5, make_socket=self.make_socket)
            except OSError:
                continue
            if status == 200:
                healthy.append(ip)
        return healthy or list(node_ips)

    def reconcile(self) -> None:
        with self.lock:
            services = list(self.services.values())
        lbs = [s for s in services if s.spec.type == "LoadBalancer"]
        used = self._in_use(lbs)
        wanted: dict[str, tuple[str, ...]] = {}
        proxied: list[tuple[str, str, int, str, int]] = []
        for svc in lbs:
            ingress = (svc.status.load_balancer.ingress or []) if svc.status and svc.status.load_balancer else []
            have = [i.ip for i in ingress if i.ip]
            mode = wanted_ip_mode(svc)
            families = [f for f in (svc.spec.ip_families or ["IPv4"]) if f in self.pools]
            ips = []
            for fam in families:
                ip = next((i for i in have if _family(i) == fam), None)
                if ip is None:
                    ip = self._pick(svc, used, fam)
                    if ip is None:
                        break
                    used.add(ip)
                ips.append(ip)
            if not ips or len(ips) != len(families):
                continue
            if ips != have or any(i.ip_mode != mode for i in ingress if i.ip):
                if not self._write_status(svc, ips):
                    continue
            for ip in ips:
                wanted[ip] = tuple(self._healthy_nodes(svc, _family(ip)))
                if mode == "Proxy":
                    proxied += [(ip, (p.protocol or "TCP").lower(), p.port, wanted[ip][0], p.node_port)
                                for p in svc.spec.ports or [] if p.node_port]
        self._program(wanted)
        self._program_proxied(proxied)

    def _pick(self, svc, used: set[str], family: str = "IPv4") -> str | None:
        requested = svc.spec.load_balancer_ip
        free = [ip for ip in self.pools.get(family, []) if ip not in used]
        ip = requested if requested in free else (free[0] if free else None)
        if ip is None:
            log.error("LB pool (%s) exhausted; %s/%s stays pending", family, svc.metadata.namespace, svc.metadata.name)
        return ip

    def _write_status(self, svc, ips: list[str]) -> bool:
        body = {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": wanted_ip_mode(svc)} for ip in ips]}}}
        try:
            self.api.patch_namespaced_service_status(svc.metadata.name, svc.metadata.namespace, body)
            log.info("assigned %s (ipMode %s) to %s/%s", ", ".join(ips), wanted_ip_mode(svc), svc.metadata.namespace, svc.metadata.name)
        except client.ApiException as exc:
            log.warning("could not write LB status of %s/%s: %s", svc.metadata.namespace, svc.metadata.name, exc.reason)
            return False
        return True

    def _program_proxied(self, proxied: list[tuple[str, str, int, str, int]]) -> None:
        """DNAT each ``ipMode: Proxy`` VIP:port to a node's NodePort, for the external client's own packets."""
        rules = "".join(f"    ip daddr {ip} {proto} dport {port} dnat to {node}:{node_port}\n"
                        for ip, proto, port, node, node_port in sorted(proxied) if ":" not in ip)
        text = (f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n"
                f"  chain output {{\n    type nat hook output priority -100; policy accept;\n{rules}  }}\n}}\n")
        if "IPv6" in self.pools:
            rules6 = "".join(f"    ip6 daddr {ip} {proto} dport {port} dnat to [{node}]:{node_port}\n"
                             for ip, proto, port, node, node_port in sorted(proxied) if ":" in ip)
            text += (f"table ip6 {NFT_TABLE}\ndelete table ip6 {NFT_TABLE}\ntable ip6 {NFT_TABLE} {{\n"
                     f"  chain output {{\n    type nat hook output priority -100; policy accept;\n{rules6}  }}\n}}\n")
        if text == self.proxied:
            return
        proc = subprocess.run(netns.exec_argv(self.ext_ns, ["nft", "-f", "-"]), input=text, capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            log.error("could not program ipMode Proxy DNAT in %s: %s", self.ext_ns, proc.stderr.strip()[:300])
            return
        self.proxied = text

    def _program(self, wanted: dict[str, tuple[str, ...]]) -> None:
        with netns.ipr(self.ext_ns) as ns:
            for ip, nodes in wanted.items():
                if self.routes.get(ip) == nodes:
                    continue
                v6 = ":" in ip
                fam = {"family": socket.AF_INET6} if v6 else {}
                dst = f"{ip}/128" if v6 else f"{ip}/32"
                if len(nodes) == 1:
                    ns.route("replace", dst=dst, gateway=nodes[0], **fam)
                else:
                    ns.route("replace", dst=dst, multipath=[{"gateway": n} for n in nodes], **fam)
                self.routes[ip] = nodes
            for ip in list(self.routes):
                if ip not in wanted:
                    try:
                        ns.route("del", dst=f"{ip}/128" if ":" in ip else f"{ip}/32",
                                 **({"family": socket.AF_INET6} if ":" in ip else {}))
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    del self.routes[ip]

    def run(self, interval: float = 1.0) -> None:
        threading.Thread(target=self.watch_loop, daemon=True, name="watch").start()
        while not self.stop.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # noqa: BLE001 - keep serving; log the cause
                log.exception("reconcile failed: %s", exc)
            self.stop.wait(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="proxysuite local load-balancer controller")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--pool", required=True, help="the VIP range; dual-stack: one per family, comma-separated")
    ap.add_argument("--ext-netns", required=True)
    ap.add_argument("--nodes", required=True, help="comma-separated node IPs (of every family the pools have)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    ctl = Controller(api, args.pool, args.ext_netns, args.nodes.split(","))
    signal.signal(signal.SIGTERM, lambda *_: ctl.stop.set())
    ctl.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

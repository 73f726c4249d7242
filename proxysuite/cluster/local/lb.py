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

Run: ``python -m proxysuite.cluster.local.lb --kubeconfig K --pool CIDR --ext-netns NS --nodes ip,ip``
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
import time

from kubernetes import client, config, watch

from ...probes.engine import http_get
from . import netns

log = logging.getLogger("proxysuite.lb")


class Controller:
    def __init__(self, api: client.CoreV1Api, pool: str, ext_ns: str, node_ips: list[str]):
        self.api, self.ext_ns, self.node_ips = api, ext_ns, node_ips
        self.pool = [str(ip) for ip in ipaddress.ip_network(pool).hosts()]
        self.services: dict[tuple[str, str], client.V1Service] = {}
        self.lock = threading.Lock()
        self.routes: dict[str, tuple[str, ...]] = {}
        self.stop = threading.Event()
        self.make_socket = netns.socket_factory(ext_ns)

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

    def _healthy_nodes(self, svc) -> list[str]:
        if svc.spec.external_traffic_policy != "Local" or not svc.spec.health_check_node_port:
            return list(self.node_ips)
        healthy = []
        for ip in self.node_ips:
            try:
                status, _ = http_get(ip, svc.spec.health_check_node_port, "/", timeout=0.5, make_socket=self.make_socket)
            except OSError:
                continue
            if status == 200:
                healthy.append(ip)
        return healthy or list(self.node_ips)

    def reconcile(self) -> None:
        with self.lock:
            services = list(self.services.values())
        lbs = [s for s in services if s.spec.type == "LoadBalancer"]
        used = self._in_use(lbs)
        wanted: dict[str, tuple[str, ...]] = {}
        for svc in lbs:
            ingress = (svc.status.load_balancer.ingress or []) if svc.status and svc.status.load_balancer else []
            ip = next((i.ip for i in ingress if i.ip), None)
            if ip is None:
                ip = self._allocate(svc, used)
                if ip is None:
                    continue
                used.add(ip)
            wanted[ip] = tuple(self._healthy_nodes(svc))
        self._program(wanted)

    def _allocate(self, svc, used: set[str]) -> str | None:
        requested = svc.spec.load_balancer_ip
        free = [ip for ip in self.pool if ip not in used]
        ip = requested if requested in free else (free[0] if free else None)
        if ip is None:
            log.error("LB pool exhausted; %s/%s stays pending", svc.metadata.namespace, svc.metadata.name)
            return None
        body = {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}
        try:
            self.api.patch_namespaced_service_status(svc.metadata.name, svc.metadata.namespace, body)
            log.info("assigned %s to %s/%s", ip, svc.metadata.namespace, svc.metadata.name)
        except client.ApiException as exc:
            log.warning("could not write LB status of %s/%s: %s", svc.metadata.namespace, svc.metadata.name, exc.reason)
            return None
        return ip

    def _program(self, wanted: dict[str, tuple[str, ...]]) -> None:
        with netns.ipr(self.ext_ns) as ns:
            for ip, nodes in wanted.items():
                if self.routes.get(ip) == nodes:
                    continue
                if len(nodes) == 1:
                    ns.route("replace", dst=f"{ip}/32", gateway=nodes[0])
                else:
                    ns.route("replace", dst=f"{ip}/32", multipath=[{"gateway": n} for n in nodes])
                self.routes[ip] = nodes
            for ip in list(self.routes):
                if ip not in wanted:
                    try:
                        ns.route("del", dst=f"{ip}/32")
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
    ap.add_argument("--pool", required=True)
    ap.add_argument("--ext-netns", required=True)
    ap.add_argument("--nodes", required=True, help="comma-separated node IPs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    ctl = Controller(api, args.pool, args.ext_netns, args.nodes.split(","))
    signal.signal(signal.SIGTERM, lambda *_: ctl.stop.set())
    ctl.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

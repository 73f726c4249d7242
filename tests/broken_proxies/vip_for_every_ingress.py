"""kube-proxy (iptables mode) plus a writer that short-circuits every load-balancer ingress IP, ipMode or not.

This is how kube-proxy behaved before KEP-1860 (v1.29): it programmed every ``status.loadBalancer.ingress[].ip``
as a VIP. The writer watches Services through the proxy's own kubeconfig and, for each ingress IP whose ipMode
is ``Proxy``, puts a jump to kube-proxy's own external-traffic chain for that port (``KUBE-EXT-*``, found
through the Service's KUBE-NODEPORTS rule) at the top of nat PREROUTING and OUTPUT, chains kube-proxy never
flushes. Pods and nodes then reach the backends directly instead of going to the load balancer.

Usage: python vip_for_every_ingress.py KUBECONFIG KUBE-PROXY ARGS...  (the interpreter needs the kubernetes client)
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from kubernetes import client, config

COMMENT = "proxysuite-broken: ipMode Proxy programmed as VIP"


def wanted(api: client.CoreV1Api, nat: str) -> set[tuple[str, str, int, str]]:
    out = set()
    for svc in api.list_service_for_all_namespaces().items:
        ingress = (svc.status.load_balancer.ingress or []) if svc.status and svc.status.load_balancer else []
        for ing in ingress:
            if not ing.ip or ing.ip_mode != "Proxy":
                continue
            for p in svc.spec.ports or []:
                proto = (p.protocol or "TCP").lower()
                name = f"{svc.metadata.namespace}/{svc.metadata.name}" + (f":{p.name}" if p.name else "")
                comment = re.compile(rf'--comment "?{re.escape(name)}"?( |$)')
                for line in nat.splitlines():
                    m = re.search(r"-j (KUBE-EXT-\S+)", line)
                    if line.startswith("-A KUBE-NODEPORTS ") and f"-p {proto} " in line and comment.search(line) and m:
                        out.add((ing.ip, proto, p.port, m.group(1)))
    return out


def main() -> int:
    kubeconfig, argv = sys.argv[1], sys.argv[2:]
    kp = subprocess.Popen([*argv, "--proxy-mode=iptables"])
    signal.signal(signal.SIGTERM, lambda *_: (kp.terminate(), sys.exit(0)))
    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    while kp.poll() is None:
        try:
            nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
            for ip, proto, port, chain in wanted(api, nat):
                for hook in ("PREROUTING", "OUTPUT"):
                    spec = ["-d", f"{ip}/32", "-p", proto, "-m", proto, "--dport", str(port),
                            "-m", "comment", "--comment", COMMENT, "-j", chain]
                    if subprocess.run(["iptables", "-t", "nat", "-C", hook, *spec], capture_output=True).returncode != 0:
                        subprocess.run(["iptables", "-t", "nat", "-I", hook, "1", *spec], capture_output=True)
        except Exception as exc:  # noqa: BLE001 - keep the proxy running; the next round retries
            print(f"vip_for_every_ingress: {exc}", file=sys.stderr)
        time.sleep(0.5)
    return kp.returncode or 0


if __name__ == "__main__":
    sys.exit(main())

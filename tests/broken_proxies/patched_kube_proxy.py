"""kube-proxy built from the pinned module source with one small source patch: a proxy broken in one way.

Each patch is the pinned kube-proxy (proxysuite/data/components/go.mod) with one change; rules, endpoints, health
and metrics are otherwise kube-proxy's own:

* ``no-conntrack-cleanup``: ``CleanStaleEntries`` (pkg/proxy/conntrack/cleanup.go), which every proxier calls
  after a sync in which a UDP Service's endpoints changed, returns at once. Flows whose conntrack entry points at
  a deleted backend, or at nothing (an entry made before the Service was programmed), stay black-holed for as
  long as the client keeps sending.
* ``no-topology-fallback``: ``topologyModeFromHints`` (pkg/proxy/topology.go) keeps to the zone's endpoints even
  when none is hinted for this node's zone, so a Service whose nearby endpoints are all gone gets no endpoint on
  that node instead of all of them (KEP-2433's safeguard removed).
* ``always-same-node``: ``CategorizeEndpoints`` (pkg/proxy/topology.go) keeps a Service's traffic on the node
  whenever the node has a ready endpoint of it, also for Services that ask for no traffic distribution (where
  topology is not in use, including the fallback), as a proxy with a built-in "local first" preference would.
* ``skip-ipmode-proxy-services``: ``serviceToServiceMap`` (pkg/proxy/servicechangetracker.go) drops a whole
  Service as soon as one of its load-balancer ingress IPs has ``ipMode: Proxy``, as a proxy that reads KEP-1860 as
  "the load balancer handles this Service" would: its ingress IP is rightly left alone, but so are its cluster IP
  and NodePorts, which the proxying load balancer sends its traffic to.
* ``no-full-resync``: ``syncProxyRules`` (pkg/proxy/iptables/proxier.go) does its first full sync and from then on
  only partial ones, ignoring both a failed restore and the canary monitor's call for a full resync: it trusts its
  memory of the kernel's rules, so rules flushed behind its back stay gone (for up to ``FullSyncPeriod``, an hour).

    python3 patched_kube_proxy.py build PATCH          # build (cached) and print the binary's path
    python3 patched_kube_proxy.py run PATCH ARGS...    # build if needed, then exec it as kube-proxy ARGS --proxy-mode=iptables

The build reuses the Go build cache of the components, so only the changed package and its dependents
compile (about 30 s warm). The binaries are cached under ``~/.cache/proxysuite/broken/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from proxysuite.cluster.local import components
from proxysuite.config import default_cache_root

PATCHES: dict[str, tuple[str, str, str]] = {
    # name: (file in the kubernetes module, text that must occur exactly once, its replacement)
    "no-conntrack-cleanup": (
        "pkg/proxy/conntrack/cleanup.go",
        "\tsvcPortMap proxy.ServicePortMap, endpointsMap proxy.EndpointsMap) {\n\n\tstart := time.Now()\n",
        "\tsvcPortMap proxy.ServicePortMap, endpointsMap proxy.EndpointsMap) {\n"
        "\t// proxysuite broken proxy: never remove stale UDP conntrack entries.\n\tif true {\n\t\treturn\n\t}\n"
        "\n\tstart := time.Now()\n",
    ),
    "no-topology-fallback": (
        "pkg/proxy/topology.go",
        "\t\tif hasEndpointForZone {\n",
        "\t\tif hasEndpointForZone || zone != \"\" { // proxysuite broken proxy: the zone's endpoints even when none is hinted for it\n",
    ),
    "always-same-node": (
        "pkg/proxy/topology.go",
        "\t\t// If we didn't get any endpoints, try again using terminating endpoints.\n",
        "\t\tif topologyMode == \"\" { // proxysuite broken proxy: this node's endpoints whenever it has one\n"
        "\t\t\tif local := filterEndpoints(clusterEndpoints, func(ep Endpoint) bool { return ep.IsLocal() }); len(local) > 0 {\n"
        "\t\t\t\tclusterEndpoints = local\n\t\t\t}\n\t\t}\n"
        "\t\t// If we didn't get any endpoints, try again using terminating endpoints.\n",
    ),
    "skip-ipmode-proxy-services": (
        "pkg/proxy/servicechangetracker.go",
        "\tif proxyutil.ShouldSkipService(service) {\n\t\treturn nil\n\t}\n",
        "\tif proxyutil.ShouldSkipService(service) {\n\t\treturn nil\n\t}\n"
        "\t// proxysuite broken proxy: a Service with an ipMode Proxy ingress IP is left to its load balancer entirely.\n"
        "\tfor _, ing := range service.Status.LoadBalancer.Ingress {\n"
        "\t\tif ing.IP != \"\" && !proxyutil.IsVIPMode(ing) {\n\t\t\treturn nil\n\t\t}\n\t}\n",
    ),
    "no-full-resync": (
        "pkg/proxy/iptables/proxier.go",
        "\tdoFullSync := proxier.needFullSync ||\n",
        "\t// proxysuite broken proxy: after the first full sync, only partial ones (rules flushed behind its back stay gone).\n"
        "\tdoFullSync := (proxier.needFullSync && proxier.lastFullSync.IsZero()) ||\n",
    ),
}


def build(patch: str, progress=lambda m: print(m, file=sys.stderr)) -> Path:
    path, old, new = PATCHES[patch]
    pins = components.read_pins()
    out = default_cache_root() / "broken" / f"kube-proxy-{patch}-{pins.kubernetes}-{pins.digest}"
    binary = out / "kube-proxy"
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".lock")):
        if binary.exists():
            return binary
        go = components.find_go(pins) or components.install_go(pins, progress)
        env = {**components._go_env(), "CGO_ENABLED": "0"}
        mod = components.module_dir()
        src = Path(subprocess.run([str(go), "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], cwd=mod, env=env,
                                  capture_output=True, text=True, check=True).stdout.strip())
        tree = out / "kubernetes"
        if tree.exists():
            shutil.rmtree(tree)
        # Hard links: the module cache's files stay untouched; only the one patched file is a new file.
        subprocess.run(["cp", "-al", str(src), str(tree)], check=True)
        target = tree / path
        text = target.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{target}: the text patch {patch!r} replaces occurs {text.count(old)} times, not once; update {__file__}")
        target.parent.chmod(0o755)
        target.unlink()
        target.write_text(text.replace(old, new))
        work = out / "module"
        work.mkdir(exist_ok=True)
        for name in ("go.mod", "go.sum"):
            shutil.copyfile(mod / name, work / name)
        with open(work / "go.mod", "a") as fh:
            fh.write(f"\nreplace k8s.io/kubernetes => {tree}\n")
        progress(f"building kube-proxy {pins.kubernetes} with patch {patch} into {binary}")
        proc = subprocess.run([str(go), "build", "-mod=mod", "-trimpath", "-ldflags", components._ldflags(pins.kubernetes),
                               "-o", str(binary) + ".tmp", "k8s.io/kubernetes/cmd/kube-proxy"],
                              cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"building the broken kube-proxy ({patch}) failed:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
        os.rename(str(binary) + ".tmp", binary)
        shutil.rmtree(tree)  # only the binary is kept
        shutil.rmtree(work)
    return binary


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "build" and argv[2] in PATCHES:
        print(build(argv[2]))
        return 0
    if len(argv) >= 3 and argv[1] == "run" and argv[2] in PATCHES:
        binary = build(argv[2])
        os.execv(binary, [str(binary), *argv[3:], "--proxy-mode=iptables"])
    print(__doc__, file=sys.stderr)
    print(f"patches: {', '.join(PATCHES)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The local provider: :class:`LocalProvider` (``up`` / ``down`` / ``status`` / ``janitor`` / ``clusters``) and the :class:`LocalCluster`.

Bring-up, in order (each step idempotent, every artefact tagged with the run id):

1. build or reuse the pinned components (``components.py``);
2. wire the namespaces (``topology.py``);
3. PKI and one identity per component (``controlplane.py``);
4. etcd → kube-apiserver → loopback relay → controller-manager + scheduler, in ``cp``;
5. a node agent per node (registers the Node, with alternating topology zones from ``../zones.py``, and runs its pods; ``nodeagent.py``);
6. the proxy per node, inside the node namespace: kube-proxy in the chosen mode, or ``--proxy-cmd``;
7. the load-balancer controller (``lb.py``).

A failure or Ctrl-C during bring-up removes what was made. ``down`` removes a
cluster; ``janitor`` removes what crashed runs left (namespaces named
``ps-<run id>-*``, processes tagged ``PROXYSUITE_RUN_ID``, state directories).
The root network namespace is never given addresses, routes or rules.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ... import images, ipfamily
from ...config import SuiteConfig
from ...errors import ProbeError, SuiteError, Unsupported
from ...modes import get_mode, require_ipvs_kernel
from ...probes import engine
from .. import zones
from ..base import Cluster, ClusterEntry, Features, NodeInfo, Provider, ProxySwitch, Vantage
from . import components, controlplane, netns, procs, topology
from .state import ClusterState, all_states, code_digest, new_state

Progress = Callable[[str], None]

# Same image names as kind/existing, so a suite's manifests are identical everywhere; the node agent maps them.
CLIENT_IMAGE = images.CLIENT_IMAGE
BACKEND_IMAGE = images.AGNHOST_IMAGE
MIGRATABLE = ("iptables", "nftables")
"""Modes ``migrate_proxy`` switches between (the kube-proxy modes the local provider runs)."""
READY_TIMEOUT = 90.0
"""Ceiling for each bring-up wait (apiserver ready, nodes Ready, proxies healthy); a warm start takes seconds."""


# ---------------------------------------------------------------------------------------------
# prerequisites
# ---------------------------------------------------------------------------------------------
def check_prereqs(config: SuiteConfig) -> None:
    mode = get_mode(config.mode)
    if mode.name == "ipvs":
        require_ipvs_kernel()
        raise Unsupported("IPVS on the local provider is not wired up", "run --mode ipvs with --provider kind")
    if mode.name == "cilium":
        raise Unsupported("Cilium kube-proxy replacement needs its agent and eBPF datapath on real nodes; the local provider runs kube-proxy only",
                          "run --mode cilium with --provider kind")
    if config.proxy_cmd:
        argv = controlplane.render_proxy_cmd(config.proxy_cmd, {k: "x" for k in controlplane.PROXY_CMD_PLACEHOLDERS})
        if not argv:
            raise SuiteError("--proxy-cmd is empty", "pass the command that starts your proxy")
    if os.geteuid() != 0:
        raise SuiteError("the local provider creates network namespaces and needs root", "run as root (e.g. sudo -E pytest ...)")
    needed = {"ip": "iproute2", "unshare": "util-linux", "sysctl": "procps"}
    if mode.name == "iptables":
        needed.update({"iptables": "iptables", "iptables-save": "iptables", "iptables-restore": "iptables"})
    if mode.name == "nftables":
        needed.update({"nft": "nftables"})
    missing = sorted({pkg for binary, pkg in needed.items() if not shutil.which(binary)})
    if missing:
        raise SuiteError(f"--mode {mode.name} on the local provider needs {', '.join(missing)}", f"apt-get install -y {' '.join(missing)}")
    if mode.name == "nftables" and not _kernel_has_nftables(config.run_id):
        raise Unsupported("this kernel has no nf_tables", "use --mode iptables, or a kernel >= 5.13 with nf_tables")


def _kernel_has_nftables(run_id: str) -> bool:
    """Ask the kernel itself: create a table in a scratch namespace (nf_tables may be built in or a module)."""
    scratch = netns.name_for(run_id, "probe-nft")
    netns.add(scratch)
    try:
        return subprocess.run(netns.exec_argv(scratch, ["nft", "add", "table", "ip", "proxysuite_probe"]),
                              capture_output=True).returncode == 0
    finally:
        netns.delete(scratch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_port(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SuiteError(f"127.0.0.1:{port} (the apiserver relay port) is already in use", "pass --api-port 0 to pick a free port, or another port") from None


# ---------------------------------------------------------------------------------------------
# waiting
# ---------------------------------------------------------------------------------------------
def _wait(what: str, probe: Callable[[], bool], timeout: float, logs: Path | None = None, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(interval)
    hint = f"see {logs}" if logs else "see the logs under the cluster state dir"
    raise SuiteError(f"{what} was not ready within {timeout:.0f}s", hint)


def _api_get(st: ClusterState, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(st.pki / "ca.crt"))
    token = _token(st, "admin")
    req = urllib.request.Request(f"https://127.0.0.1:{st.api_port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _token(st: ClusterState, who: str) -> str:
    import yaml

    doc = yaml.safe_load(st.kubeconfig(who).read_text())
    return doc["users"][0]["user"]["token"]


def _healthy(st: ClusterState) -> bool:
    if not st.ready or not all(procs.alive(pid) for pid in st.procs.values()):
        return False
    try:
        return _api_get(st, "/readyz")[0] == 200
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------
def up(config: SuiteConfig, progress: Progress = print, owner_pid: int | None = None) -> "LocalCluster":
    """Bring the cluster up, or reuse a healthy one with the same name and mode."""
    check_prereqs(config)
    existing = ClusterState.load(config.name)
    if existing is not None:
        if (existing.mode, existing.proxy_cmd, existing.proxy_health) != (config.mode, config.proxy_cmd, config.proxy_health):
            raise SuiteError(f"local cluster {config.name} already runs mode {existing.mode}",
                             f"run `proxysuite cluster down --cluster-name {config.name}` or pass another --cluster-name")
        if existing.ip_family != config.ip_family:
            raise SuiteError(f"local cluster {config.name} is --ip-family {existing.ip_family}, not {config.ip_family}",
                             f"run `proxysuite cluster down --cluster-name {config.name}` or pass another --cluster-name")
        if _healthy(existing) and len(existing.nodes) == config.nodes:
            progress(f"reusing local cluster {existing.name} (run {existing.run_id}, {existing.mode})")
            if existing.code_digest != code_digest():
                progress(f"note: {existing.name} was started by other proxysuite code (its node agents and LB controller "
                         f"still run that); `proxysuite cluster down --cluster-name {existing.name}` to refresh it")
            return LocalCluster(existing, created=False)
        progress(f"local cluster {existing.name} is not healthy or has another node count; recreating it")
        _teardown(existing, progress)
    janitor(progress=progress, quiet=True)

    bins = components.ensure(config.k8s_version, progress)
    st = new_state(config)
    st.owner_pid = owner_pid
    if config.api_port:
        _check_port(config.api_port)
        st.api_port = config.api_port
    else:
        st.api_port = _free_port()
    started = time.monotonic()
    try:
        st.dir.mkdir(parents=True, exist_ok=True)
        st.save()
        progress(f"local cluster {st.name}: run {st.run_id}, {config.nodes} node(s), mode {st.mode}"
                 + ("" if st.ip_family == "ipv4" else f", --ip-family {st.ip_family}"))
        topology.build(st, config.nodes)
        st.save()
        controlplane.write_pki(st)
        controlplane.write_identities(st)
        _start_control_plane(st, bins, progress)
        _start_nodes(st, bins, progress)
        _start(st, "lb-controller", [sys.executable, "-m", "proxysuite.cluster.local.lb",
                                     f"--kubeconfig={st.kubeconfig('lb-controller')}",
                                     f"--pool={','.join(st.addressing.lb_pools(st.families))}",
                                     f"--ext-netns={netns.name_for(st.run_id, topology.EXT)}",
                                     f"--nodes={','.join(ip for n in st.nodes for ip in n.addresses)}"])
        st.ready = True
        st.save()
    except BaseException:
        kept = _keep_logs(st)
        progress(f"bring-up failed; removing what was created (logs kept in {kept})")
        _teardown(st, progress)
        raise
    progress(f"local cluster {st.name} ready in {time.monotonic() - started:.1f}s; kubeconfig: {st.kubeconfig()}")
    return LocalCluster(st, created=True)


def _start(st: ClusterState, name: str, argv: list[str], netns_name: str | None = None) -> int:
    pid = procs.spawn(argv, run_id=st.run_id, log=st.logs / f"{name}.log", netns=netns_name,
                      env={"PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    st.procs[name] = pid
    st.argv[name] = argv
    if netns_name:
        st.proc_netns[name] = netns_name
    st.save()
    return pid


def _start_control_plane(st: ClusterState, bins: dict[str, Path], progress: Progress) -> None:
    cp = netns.name_for(st.run_id, topology.CP)
    progress("starting etcd and kube-apiserver")
    _start(st, "etcd", controlplane.etcd_argv(st, bins["etcd"]), cp)
    cp_socket = netns.socket_factory(cp)
    _wait("etcd", lambda: engine.http_get("127.0.0.1", 2379, "/health", make_socket=cp_socket)[0] == 200, READY_TIMEOUT, st.logs / "etcd.log")
    _start(st, "kube-apiserver", controlplane.apiserver_argv(st, bins["kube-apiserver"]), cp)
    _start(st, "api-relay", [sys.executable, "-m", "proxysuite.cluster.local.relay", f"--listen=127.0.0.1:{st.api_port}",
                             f"--netns={cp}", f"--target={st.addressing.cp_ip}:{controlplane.APISERVER_PORT}"])
    _wait("kube-apiserver", lambda: _api_get(st, "/readyz")[0] == 200, READY_TIMEOUT, st.logs / "kube-apiserver.log")
    progress("starting kube-controller-manager and kube-scheduler")
    _start(st, "kube-controller-manager", controlplane.controller_manager_argv(st, bins["kube-controller-manager"]), cp)
    _start(st, "kube-scheduler", controlplane.scheduler_argv(st, bins["kube-scheduler"]), cp)
    for name, port in (("kube-controller-manager", 10257), ("kube-scheduler", 10259)):
        _wait(name, lambda: _tls_healthz(cp_socket, port), READY_TIMEOUT, st.logs / f"{name}.log")


def _tls_healthz(make_socket, port: int) -> bool:
    """GET https://127.0.0.1:<port>/healthz inside a namespace (self-signed serving cert: not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    raw = make_socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(2)
    raw.connect(("127.0.0.1", port))
    with ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return tls.recv(64).startswith(b"HTTP/1.1 200")


def _nodes_ready(st: ClusterState) -> bool:
    status, body = _api_get(st, "/api/v1/nodes")
    if status != 200:
        return False
    items = json.loads(body)["items"]
    ready = {n["metadata"]["name"] for n in items
             if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))}
    return all(n.name in ready for n in st.nodes)


def _start_nodes(st: ClusterState, bins: dict[str, Path], progress: Progress) -> None:
    progress(f"starting {len(st.nodes)} node agent(s)")
    for position, node in enumerate(st.nodes, 1):
        topology = [a for k, v in zones.labels_for(position).items() for a in ("--label", f"{k}={v}")]
        _start(st, f"nodeagent-{node.name}", [
            sys.executable, "-m", "proxysuite.cluster.local.nodeagent",
            "--kubeconfig", str(st.kubeconfig(f"node-{node.name}")), "--node", node.name, "--node-netns", node.netns,
            "--node-ip", ",".join(node.addresses), "--pod-cidr", ",".join(node.cidrs), "--run-id", st.run_id,
            "--state-dir", str(st.dir / "nodes" / node.name), "--agnhost", str(bins["agnhost"]), *topology,
        ])
    _wait("node registration (Ready nodes)", lambda: _nodes_ready(st), READY_TIMEOUT, st.logs)
    what = "custom proxy" if st.mode == "custom" else f"kube-proxy ({st.mode})"
    progress(f"starting {what} on every node")
    for node in st.nodes:
        argv = controlplane.custom_proxy_argv(st, node) if st.mode == "custom" else controlplane.kube_proxy_argv(st, bins["kube-proxy"], node.name)
        _start(st, f"proxy-{node.name}", argv, node.netns)
    if st.proxy_health == "none":
        progress(f"not waiting for the {what}: --proxy-health none")
        return
    for node in st.nodes:
        if st.proxy_health.startswith("exec:"):
            argv = controlplane.render_proxy_cmd(st.proxy_health[5:], controlplane.proxy_cmd_values(st, node))
            _wait(f"{what} on {node.name} (--proxy-health exec: {' '.join(argv)})",
                  lambda: subprocess.run(netns.exec_argv(node.netns, argv), capture_output=True, timeout=10).returncode == 0,
                  READY_TIMEOUT, st.logs / f"proxy-{node.name}.log")
            continue
        sock = netns.socket_factory(node.netns)
        _wait(f"{what} on {node.name} (/healthz on :{controlplane.PROXY_HEALTHZ_PORT})",
              lambda: engine.http_get("127.0.0.1", controlplane.PROXY_HEALTHZ_PORT, "/healthz", make_socket=sock)[0] == 200,
              READY_TIMEOUT, st.logs / f"proxy-{node.name}.log")
        if st.mode != "custom":
            # kube-proxy's /healthz answers 200 before its first sync (nothing queued yet counts as healthy): a
            # cluster handed over then has no Service rules for a few seconds, and a loaded machine makes that long.
            _wait(f"{what} on {node.name}: first sync", lambda: _last_sync(engine.http_get(
                      "127.0.0.1", controlplane.PROXY_METRICS_PORT, "/metrics", make_socket=sock), st.families) > 0,
                  READY_TIMEOUT, st.logs / f"proxy-{node.name}.log")


def _last_sync(response: tuple[int, str], families: tuple[str, ...]) -> float:
    """kube-proxy's last sync of every family the cluster serves, from a /metrics response (the earliest of them;
    0 while one has not synced or when the page failed)."""
    status, body = response
    if status != 200:
        return 0.0
    # One series per IP family ({ip_family="IPv4"}); kube-proxy runs a proxier for each family it finds.
    want = {f'ip_family="{ipfamily.k8s_name(f)}"' for f in families}
    seen = {label: float(line.split()[-1]) for line in body.splitlines()
            if line.startswith("kubeproxy_sync_proxy_rules_last_timestamp_seconds")
            for label in want if label in line}
    return min(seen.values()) if seen.keys() == want else 0.0


def _keep_logs(st: ClusterState) -> Path:
    dest = st.dir.parent.parent / "failed" / f"{st.name}-{st.run_id}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if st.logs.exists():
        shutil.copytree(st.logs, dest, dirs_exist_ok=True)
    return dest


def _teardown(st: ClusterState, progress: Progress) -> None:
    # Reverse order of bring-up: nothing reconciles against a half-dead control plane.
    order = ["lb-controller"] + [n for n in st.procs if n.startswith("proxy-")] + [n for n in st.procs if n.startswith("nodeagent-")]
    order += ["kube-scheduler", "kube-controller-manager", "api-relay", "kube-apiserver", "etcd"]
    for name in order + [n for n in st.procs if n not in order]:
        procs.stop(st.procs.get(name), grace=3)
    leftovers = procs.pids_with_run_id(st.run_id)
    procs.kill_all(list(leftovers))
    removed = topology.teardown_namespaces(st)
    st.remove_files()
    progress(f"removed local cluster {st.name} (run {st.run_id}): {len(removed)} namespaces, {len(st.procs) + len(leftovers)} processes")


def down(config: SuiteConfig, progress: Progress = print) -> bool:
    st = ClusterState.load(config.name)
    if st is None:
        progress(f"no local cluster named {config.name}")
        return False
    _teardown(st, progress)
    return True


def status(config: SuiteConfig) -> dict:
    st = ClusterState.load(config.name)
    if st is None:
        return {"name": config.name, "provider": "local", "exists": False}
    return {"name": st.name, "provider": "local", "exists": True, "healthy": _healthy(st), "run_id": st.run_id,
            "mode": st.mode, "ip_family": st.ip_family, "kubeconfig": str(st.kubeconfig()), "api": f"https://127.0.0.1:{st.api_port}",
            "nodes": [{"name": n.name, "ip": n.ip, "pod_cidr": n.pod_cidr, "internal_ips": n.addresses, "pod_cidrs": n.cidrs}
                      for n in st.nodes],
            "processes": {k: {"pid": v, "alive": procs.alive(v)} for k, v in st.procs.items()},
            "owner_pid": st.owner_pid, "logs": str(st.logs)}


ORPHAN_MIN_AGE = 600.0
"""The automatic sweep at bring-up spares orphan namespaces younger than this: another run may be creating them."""


def _age(name: str) -> float:
    try:
        return time.time() - os.stat(f"/var/run/netns/{name}").st_mtime
    except FileNotFoundError:
        return 0.0


def _forget_session_markers() -> None:
    """Drop the plugin's "this session created cluster X" markers once X is gone (a killed session leaves them)."""
    from ...config import default_state_root

    live = {st.name for st in all_states()}
    for marker in default_state_root().glob(".session-*-local-*"):
        try:
            name = json.loads(marker.read_text()).get("name")
        except (OSError, ValueError):
            name = None
        if name not in live:
            marker.unlink(missing_ok=True)


def janitor(progress: Progress = print, everything: bool = False, quiet: bool = False) -> dict:
    """Remove clusters whose owning session died (or all with ``everything``), then orphans of any run.

    A cluster kept on purpose (``cluster up`` from the CLI, ``--keep-cluster``) has no owner and is
    left alone unless ``everything`` is set.
    """
    removed = {"clusters": [], "netns": [], "processes": []}
    live_runs = set()
    for st in all_states():
        dead_owner = st.owner_pid is not None and not procs.alive(st.owner_pid)
        if everything or dead_owner:
            _teardown(st, progress)
            removed["clusters"].append(st.name)
        else:
            live_runs.add(st.run_id)
    for name in netns.listing():
        rid = netns.run_id_of(name)
        if rid and rid not in live_runs and (everything or not quiet or _age(name) > ORPHAN_MIN_AGE):
            procs.kill_all(netns.pids_in(name))
            netns.delete(name)
            removed["netns"].append(name)
    strays = {pid: rid for pid, rid in procs.pids_with_run_id().items() if rid not in live_runs and not quiet}
    _forget_session_markers()
    procs.kill_all(list(strays))
    removed["processes"] = sorted(strays)
    if not quiet or any(removed.values()):
        progress(f"janitor: removed {len(removed['clusters'])} cluster(s), {len(removed['netns'])} namespace(s), "
                 f"{len(removed['processes'])} process(es)")
    return removed


# ---------------------------------------------------------------------------------------------
# the Cluster
# ---------------------------------------------------------------------------------------------
class LocalCluster(Cluster):
    provider = "local"
    client_image = CLIENT_IMAGE
    backend_image = BACKEND_IMAGE

    def __init__(self, st: ClusterState, created: bool):
        self.state = st
        self.created = created
        self.mode = st.mode
        self.name = st.name
        self.kubeconfig = str(st.kubeconfig())
        self.ip_families = st.families
        self.external_ip_cidrs = tuple(st.addressing.external_ip_ranges(st.families))
        self.external_ip_cidr = self.external_ip_cidrs[0]
        self._core = None

    @property
    def core(self):
        if self._core is None:
            from kubernetes import client, config as kconfig

            self._core = client.CoreV1Api(kconfig.new_client_from_config(config_file=self.kubeconfig))
        return self._core

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(n.name, n.addresses[0], n.cidrs[0], internal_ips=tuple(n.addresses)) for n in self.state.nodes]

    def features(self) -> Features:
        health = self.state.proxy_health
        return Features(load_balancer=True, external_client=True, external_ips=True, node_exec=True, proxy_restart=True,
                        proxy_children_cpu=True, load_generation=True, cluster_dns=False, udp=True,
                        proxy_health_endpoints=health == "kube-proxy", proxy_migration=self.state.mode in MIGRATABLE,
                        reasons={"proxy_migration": f"mode {self.state.mode} is not kube-proxy in a mode the local provider runs "
                                                    f"({', '.join(MIGRATABLE)}); migration restarts kube-proxy with another --proxy-mode",
                                 "cluster_dns": "the local provider runs no cluster DNS (its pods share the host's /etc/resolv.conf: no mount namespaces)",
                                 "proxy_health_endpoints": f"the custom proxy declares --proxy-health {health}: it does not "
                                                           "serve kube-proxy's health and metrics endpoints"})

    def _node(self, name: str):
        for n in self.state.nodes:
            if n.name == name:
                return n
        raise SuiteError(f"no node {name!r} in local cluster {self.name}", f"use one of {', '.join(n.name for n in self.state.nodes)}")

    def _vantage(self, name: str, kind: str, node: str | None, ns_name: str, source_ip: str,
                 source_ips: tuple[str, ...] = ()) -> Vantage:
        make = netns.socket_factory(ns_name)
        return Vantage(name=name, kind=kind, node=node, source_ip=source_ip, runner=lambda reqs: engine.run(reqs, make),
                       source_ips=source_ips)

    def pod_netns(self, pod) -> str:
        if pod.spec.host_network:
            return self._node(pod.spec.node_name).netns
        return f"{self.state.netns_prefix}pod-{pod.metadata.uid.replace('-', '')[:12]}"

    def load_netns(self, namespace: str, pod: str) -> str:
        return self.pod_netns(self.core.read_namespaced_pod(pod, namespace))

    def pod_vantage(self, namespace: str, pod: str) -> Vantage:
        p = self.core.read_namespaced_pod(pod, namespace)
        if not p.status.pod_ip:
            raise SuiteError(f"pod {namespace}/{pod} has no IP yet", "wait for it to be Running before probing from it")
        kind = "node" if p.spec.host_network else "pod"
        label = p.spec.node_name if p.spec.host_network else f"pod@{p.spec.node_name}"
        ips = tuple(i.ip for i in p.status.pod_ips or []) or (p.status.pod_ip,)
        return self._vantage(label, kind, p.spec.node_name, self.pod_netns(p), p.status.pod_ip, ips)

    def node_vantage(self, node: str) -> Vantage:
        n = self._node(node)
        return self._vantage(n.name, "node", n.name, n.netns, n.addresses[0], tuple(n.addresses))

    def external_vantage(self) -> Vantage:
        a = self.state.addressing
        ips = tuple(a.ext_ip if f == "ipv4" else a.ext_ip6 for f in self.state.families)
        return self._vantage("external", "external", None, netns.name_for(self.state.run_id, topology.EXT), ips[0], ips)

    def proxy_http(self, node: str, port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
        try:
            return engine.http_get(host, port, path, make_socket=netns.socket_factory(self._node(node).netns))
        except OSError as exc:
            raise ProbeError(f"GET {host}:{port}{path} on {node} failed: {type(exc).__name__}: {exc}") from exc

    def node_exec(self, node: str, argv: list[str], timeout: float = 30) -> str:
        return netns.run(self._node(node).netns, argv, timeout=timeout)

    def proxy_logs(self, node: str, tail: int = 200) -> str:
        path = self.state.logs / f"proxy-{node}.log"
        if not path.exists():
            return f"(no proxy log at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-tail:])

    def _current(self) -> ClusterState:
        """The cluster's state as saved now. Several processes hold this cluster at once (pytest-xdist workers, a
        ``perf run`` beside a session): one that restarts a proxy saves the new pid, and another that stopped by
        its own, older copy would signal a pid that is gone and start a second kube-proxy beside the live one
        (seen: two kube-proxies syncing one node's rules; a flush then took 18 s to heal instead of 1.3 s)."""
        fresh = ClusterState.load(self.name)
        if fresh is not None and fresh.run_id == self.state.run_id:
            self.state = fresh
        return self.state

    def proxy_children_cpu_seconds(self, node: str) -> float:
        pid = self._current().procs.get(f"proxy-{node}")
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError) as exc:
            raise ProbeError(f"cannot read /proc/{pid}/stat of the proxy on {node} (is it running?): {exc}") from None
        # proc(5): cutime and cstime (fields 16 and 17) count the children the process has waited for;
        # kube-proxy waits for every iptables-restore / nft it runs.
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def restart_proxy(self, node: str) -> None:
        name = f"proxy-{node}"
        st = self._current()
        procs.stop(st.procs.get(name))
        _start(st, name, st.argv[name], st.proc_netns[name])

    def restart_proxy_with(self, node: str, flags: dict[str, str | None]) -> None:
        """Restart kube-proxy on ``node`` with ``--flag=value`` set, replacing the flag if it is there (a value of
        None drops it, back to kube-proxy's default): tuning sweeps. Later plain restarts keep these flags."""
        name = f"proxy-{node}"
        if self.mode == "custom":
            raise SuiteError("restart_proxy_with sets kube-proxy flags; --mode custom runs another proxy", "use a kube-proxy mode")
        st = self._current()
        argv = [a for a in st.argv[name] if a.split("=", 1)[0] not in {f"--{k}" for k in flags}]
        argv += [f"--{k}={v}" for k, v in flags.items() if v is not None]
        procs.stop(st.procs.get(name))
        _start(st, name, argv, st.proc_netns[name])

    def proxy_iptables_tool(self, node: str) -> str | None:
        """The file ``iptables`` resolves to on the running kube-proxy's own PATH (read from /proc/<pid>/environ)."""
        pid = self._current().procs.get(f"proxy-{node}")
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        except OSError:
            return None
        found = shutil.which("iptables", path=env.get(b"PATH", b"").decode())
        return os.path.realpath(found) if found else None

    def migrate_proxy(self, to_mode: str, progress: Progress = lambda _m: None) -> list[ProxySwitch]:
        """The local runbook: per node, stop kube-proxy and start it again with ``--proxy-mode=<to_mode>``.

        The new kube-proxy removes the other mode's rules itself before its first sync (``platformCleanup`` in
        cmd/kube-proxy/app/server_linux.go), as on any node; nothing here touches the datapath.
        """
        if not self.features().proxy_migration:
            raise self._unavailable("proxy_migration")
        if to_mode not in MIGRATABLE:
            get_mode(to_mode)  # an unknown name: the usual one-line error
            raise Unsupported(f"the local provider runs kube-proxy in {' and '.join(MIGRATABLE)} only, not {to_mode}",
                              f"migrate to one of {', '.join(MIGRATABLE)}")
        check_prereqs(SuiteConfig(provider="local", mode=to_mode, cluster_name=self.name, run_id=self.state.run_id))
        from_mode = self.mode
        steps = []
        self._current()
        for node in self.state.nodes:
            name = f"proxy-{node.name}"
            argv = [f"--proxy-mode={to_mode}" if a.startswith("--proxy-mode=") else a for a in self.state.argv[name]]
            progress(f"{node.name}: kube-proxy {from_mode} -> {to_mode}")
            stopped = time.time()
            procs.stop(self.state.procs.get(name))
            started = time.time()
            _start(self.state, name, argv, self.state.proc_netns[name])
            synced = self._wait_first_sync(node.name, to_mode, started)
            steps.append(ProxySwitch(node.name, from_mode, to_mode, stopped, started, synced, time.time()))
            # The state follows each node, so a failure half way leaves argv right for each node's restart_proxy.
        self.state.mode = self.mode = to_mode
        self.state.save()
        return steps

    def _wait_first_sync(self, node: str, mode: str, since: float) -> float:
        """Wait until the proxy on ``node`` reports ``mode`` and a sync after ``since``; return that sync's time."""
        box: dict[str, float] = {}

        def synced() -> bool:
            if self.proxy_http(node, controlplane.PROXY_METRICS_PORT, "/proxyMode")[1].strip() != mode:
                return False
            box["t"] = _last_sync(self.proxy_http(node, controlplane.PROXY_METRICS_PORT, "/metrics"), self.state.families)
            return box["t"] >= since - 1

        _wait(f"kube-proxy ({mode}) on {node}: first sync", synced, READY_TIMEOUT, self.state.logs / f"proxy-{node}.log", interval=0.05)
        return box["t"]

    def close(self) -> None:
        if self._core is not None:
            self._core.api_client.close()
            self._core = None


class LocalProvider(Provider):
    name = "local"
    description = "network namespaces on this machine, no Docker: kube-proxy built from source (needs root)"

    def check_prereqs(self, config: SuiteConfig) -> None:
        check_prereqs(config)

    def up(self, config: SuiteConfig, progress: Progress = lambda _m: None, owner_pid: int | None = None) -> LocalCluster:
        return up(config, progress, owner_pid)

    def down(self, config: SuiteConfig, progress: Progress = lambda _m: None) -> None:
        down(config, progress)

    def status(self, config: SuiteConfig) -> dict:
        return status(config)

    def janitor(self, progress: Progress = lambda _m: None, everything: bool = False) -> dict:
        return janitor(progress=progress, everything=everything)

    def clusters(self) -> list[ClusterEntry]:
        """Every local cluster with a state directory, healthy or not, and whether its owning session lives."""
        return [ClusterEntry(provider="local", name=st.name, mode=st.mode, alive=_healthy(st), owner_pid=st.owner_pid,
                             owner_alive=None if st.owner_pid is None else procs.alive(st.owner_pid), run_id=st.run_id,
                             kubeconfig=str(st.kubeconfig()),
                             note="" if st.owner_pid is not None else "kept on purpose (cluster up / --keep-cluster)")
                for st in all_states()]

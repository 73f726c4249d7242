"""The ``existing`` provider: run the suites against a cluster you already have.

::

    pytest --provider existing --kubeconfig ~/.kube/config --context prod-like -m conformance

What it does to your cluster
----------------------------
* Reads: Nodes, ``kube-system`` ConfigMaps ``kube-proxy`` and ``cilium-config``,
  and (when allowed) ``cilium-dbg status`` from a Cilium agent, to detect the
  proxy mode (see :mod:`proxysuite.cluster.detect`).
* Creates only namespaces labelled ``proxysuite.io/run-id=<run id>``: one per
  test (by the pytest plugin) and ``proxysuite-<run id>`` for the hostNetwork
  vantage pods (one per node, Pod Security level ``privileged``). ``down``
  deletes the namespaces with this run's label and nothing else.
* Never touches nodes, kube-proxy, Cilium or anything in ``kube-system``:
  node exec, proxy restarts and the external client are unavailable, and the
  checks that need them skip with the reason from :meth:`ExistingCluster.features`.

The RBAC this needs is in ``clusters/existing/proxysuite-rbac.yaml``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from ..config import SuiteConfig, default_state_root
from ..errors import ProbeError, SuiteError, Unsupported
from ..images import ImageRef, pod_images
from ..modes import KUBE_PROXY_METRICS_PORT
from .base import ClusterEntry, Features, Provider
from .detect import Detection, detect
from .remote import RUN_LABEL, Kubectl, KubectlCluster, ToolError, delete_run_namespaces, require_tool, run_tool

Progress = Callable[[str], None]

REACHABLE_TIMEOUT = 20
"""Seconds for the apiserver to answer ``/readyz`` before the cluster counts as unreachable."""


def _kubeconfig_path(config: SuiteConfig) -> str:
    path = config.kubeconfig or os.path.expanduser("~/.kube/config")
    if not os.path.exists(path):
        raise SuiteError(f"kubeconfig {path} does not exist", "pass --kubeconfig PATH of the cluster to test (and --context NAME)")
    return os.path.abspath(path)


def check_prereqs(config: SuiteConfig) -> None:
    """kubectl on PATH, a kubeconfig file, and an apiserver that answers."""
    require_tool("kubectl")
    path = _kubeconfig_path(config)
    kubectl = Kubectl(path, config.context)
    try:
        kubectl.run("get", "--raw", "/readyz", timeout=REACHABLE_TIMEOUT)
    except ToolError as exc:
        where = f"context {config.context}" if config.context else "its current context"
        raise SuiteError(f"the cluster in {path} ({where}) is not reachable: {exc}",
                         "check --kubeconfig and --context, and that `kubectl get --raw /readyz` works") from None


def _state_dir(config: SuiteConfig) -> Path:
    return default_state_root() / "existing" / config.run_id


def _session_kubeconfig(config: SuiteConfig, progress: Progress) -> str:
    """A kubeconfig the whole session uses. With ``--context`` it is a flattened copy holding only that context,
    so that the Python client (which reads the current context) talks to the same cluster as kubectl."""
    path = _kubeconfig_path(config)
    if not config.context:
        return path
    out = _state_dir(config) / "kubeconfig"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = run_tool(["kubectl", "--kubeconfig", path, "config", "view", "--minify", "--flatten", "--context", config.context])
    out.write_text(proc.stdout)
    out.chmod(0o600)
    progress(f"context {config.context} of {path} → {out}")
    return str(out)


class ExistingCluster(KubectlCluster):
    def __init__(self, config: SuiteConfig, kubeconfig: str, detection: Detection | None = None):
        super().__init__(provider="existing", mode=config.mode, name=config.context or "existing", kubeconfig=kubeconfig,
                         run_id=config.run_id)
        self.detection = detection
        self._features: Features | None = None
        self._families: tuple[str, ...] | None = None

    def features(self) -> Features:
        if self._features is None:
            reasons = {
                "external_client": "the existing provider has no client outside the cluster (only kind and local start one); "
                                   "run this check on --provider kind or local",
                "node_exec": "the existing provider does not exec on your nodes (it would need privileged host access it does not ask for)",
                "proxy_restart": "the existing provider never restarts the proxy of a cluster it does not own",
                "proxy_migration": "the existing provider never changes the proxy mode of a cluster it does not own; run the "
                                   "runbook yourself (kube-proxy ConfigMap mode, rollout restart; docs/migration.md) and then the catalogue",
                "external_ips": "the existing provider has no external client to route an externalIP range from",
                "proxy_children_cpu": "the existing provider cannot see the proxy's process on your nodes",
                "load_generation": "the existing provider's clients run on your nodes, not in a network namespace on this machine; "
                                   "the perf load phase runs on --provider local",
                "load_balancer": "the existing provider does not assume a LoadBalancer implementation (set "
                                 "PROXYSUITE_EXISTING_LOAD_BALANCER=1 if yours assigns addresses reachable from pods and nodes); "
                                 "LoadBalancer checks also run on --provider kind and local (their own LB through the proxy under test)",
            }
            dns = self.kubectl.run("get", "service", "-n", "kube-system", "kube-dns", "-o", "name", check=False).returncode == 0
            if not dns:
                reasons["cluster_dns"] = "no Service kube-system/kube-dns on this cluster"
            lb = os.environ.get("PROXYSUITE_EXISTING_LOAD_BALANCER", "").lower() in ("1", "true", "yes")
            if lb:
                reasons.pop("load_balancer")
            self._features = Features(load_balancer=lb, external_client=False, node_exec=False, proxy_restart=False,
                                      cluster_dns=dns, udp=True, reasons=reasons)
        return self._features

    # A property here: detecting the families needs the API, so it waits for first use.
    @property
    def ip_families(self) -> tuple[str, ...]:  # type: ignore[override]
        """The families the cluster serves: its ServiceCIDR objects' CIDRs (networking.k8s.io/v1, 1.33+), else the
        families of the ``kubernetes`` Service's clusterIPs, else those of the nodes' InternalIPs."""
        if self._families is None:
            self._families = detect_ip_families(self.kubectl.run, self.all_nodes)
        return self._families

    def proxy_logs(self, node: str, tail: int = 200) -> str:
        selector = "k8s-app=cilium" if self.mode == "cilium" else "k8s-app=kube-proxy"
        pod = self.kube_system_pod(node, selector)
        if not pod:
            return f"(no pod with {selector} on {node} in kube-system)"
        proc = self.kubectl.run("logs", "-n", "kube-system", pod, f"--tail={tail}", "--all-containers", check=False)
        return proc.stdout or proc.stderr


def detect_ip_families(run: Callable[..., subprocess.CompletedProcess], all_nodes: Callable[[], list]) -> tuple[str, ...]:
    """Families of a running cluster, primary first. ``run`` is :meth:`Kubectl.run` (argv → CompletedProcess)."""
    import json

    from ..ipfamily import families_in

    proc = run("get", "servicecidrs.networking.k8s.io", "-o", "json", check=False)
    if proc.returncode == 0:
        try:
            items = json.loads(proc.stdout).get("items") or []
        except ValueError:
            items = []
        # The apiserver's own ServiceCIDR is named "kubernetes" and lists the primary family first.
        items.sort(key=lambda i: (i.get("metadata") or {}).get("name") != "kubernetes")
        found = families_in(c for i in items for c in (i.get("spec") or {}).get("cidrs") or [])
        if found:
            return found
    proc = run("get", "service", "-n", "default", "kubernetes", "-o", "json", check=False)
    if proc.returncode == 0:
        try:
            spec = json.loads(proc.stdout).get("spec") or {}
        except ValueError:
            spec = {}
        found = families_in(spec.get("clusterIPs") or [spec.get("clusterIP")])
        if found:
            return found
    return families_in(ip for n in all_nodes() for ip in (n.internal_ips or (n.internal_ip,)))


def _get_configmap(kubectl: Kubectl) -> Callable[[str, str], dict | None]:
    def get(namespace: str, name: str) -> dict | None:
        proc = kubectl.run("get", "configmap", "-n", namespace, name, "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    return get


def _cilium_status(kubectl: Kubectl) -> Callable[[], str | None]:
    def status() -> str | None:
        proc = kubectl.run("exec", "-n", "kube-system", "ds/cilium", "-c", "cilium-agent", "--", "cilium-dbg", "status", "--verbose",
                           check=False, timeout=60)
        return proc.stdout if proc.returncode == 0 and proc.stdout.strip() else None

    return status


def detect_cluster_mode(cluster: KubectlCluster, *, ask_kube_proxy: bool = True) -> Detection:
    """Detect the proxy mode of ``cluster`` (``ask_kube_proxy`` starts a node vantage pod to GET /proxyMode)."""

    def proxy_mode() -> tuple[str, str] | None:
        node = cluster.nodes()[0].name
        status, body = cluster.proxy_http(node, KUBE_PROXY_METRICS_PORT, "/proxyMode")
        if status != 200:
            raise ProbeError(f"GET /proxyMode on {node} answered HTTP {status}")
        return node, body

    return detect(get_configmap=_get_configmap(cluster.kubectl), cilium_status=_cilium_status(cluster.kubectl),
                  proxy_mode_answers=proxy_mode if ask_kube_proxy else None)


def check_mode(config: SuiteConfig, detection: Detection, progress: Progress) -> None:
    """The detected mode must be the mode under test: the expectations tables are chosen by it."""
    if detection.mode is None:
        progress(f"could not detect the proxy mode ({detection}); trusting --mode {config.mode}")
        return
    if config.mode == "custom":
        progress(f"--mode custom: the cluster also shows {detection}; testing whatever proxy serves Services")
        return
    if detection.mode != config.mode:
        raise SuiteError(f"the cluster's Service proxy is {detection} but --mode is {config.mode}",
                         f"pass --mode {detection.mode} (the expectations depend on it)")


def up(config: SuiteConfig, progress: Progress = lambda _m: None, owner_pid: int | None = None) -> ExistingCluster:
    """Connect to the cluster, detect its proxy mode and check it is the mode under test. Creates nothing yet."""
    check_prereqs(config)
    kubeconfig = _session_kubeconfig(config, progress)
    cluster = ExistingCluster(config, kubeconfig)
    progress(f"existing cluster via {kubeconfig}: {len(cluster.nodes())} schedulable node(s)")
    detection = detect_cluster_mode(cluster)
    cluster.detection = detection
    progress(f"proxy: {detection}")
    progress(f"vantages: {cluster.transport()} ({cluster.transport_reason})")
    check_mode(config, detection, progress)
    return cluster


def down(config: SuiteConfig, progress: Progress = lambda _m: None) -> None:
    """Delete the namespaces this run created (label ``proxysuite.io/run-id=<run id>``); the cluster stays."""
    path = config.kubeconfig or os.path.expanduser("~/.kube/config")
    session = _state_dir(config) / "kubeconfig"
    kubeconfig = str(session) if session.exists() else path
    if not os.path.exists(kubeconfig) or not shutil.which("kubectl"):
        return
    names = delete_run_namespaces(Kubectl(kubeconfig, None if session.exists() else config.context), config.run_id, progress)
    if names:
        progress(f"deleted namespaces of run {config.run_id}: {', '.join(names)}")
    if session.exists():
        session.unlink()
        try:
            session.parent.rmdir()
        except OSError:
            pass


def status(config: SuiteConfig) -> dict:
    """Reachability, nodes, detected proxy and any namespaces left by proxysuite runs (by run id). Creates nothing."""
    out: dict = {"provider": "existing", "kubeconfig": config.kubeconfig, "context": config.context}
    try:
        check_prereqs(config)
    except SuiteError as exc:
        return {**out, "exists": False, "reachable": False, "error": str(exc)}
    kubectl = Kubectl(_kubeconfig_path(config), config.context)
    cluster = ExistingCluster(config, kubectl.kubeconfig)
    cluster.kubectl = kubectl
    detection = detect_cluster_mode(cluster, ask_kube_proxy=False)
    proc = kubectl.run("get", "namespaces", "-l", RUN_LABEL, "-o", "json", check=False)
    leftovers: dict[str, list[str]] = {}
    if proc.returncode == 0:
        for item in json.loads(proc.stdout).get("items", []):
            leftovers.setdefault(item["metadata"]["labels"].get(RUN_LABEL, "?"), []).append(item["metadata"]["name"])
    return {**out, "exists": True, "reachable": True, "kubeconfig": kubectl.kubeconfig, "nodes": [n.name for n in cluster.nodes()],
            "mode": detection.mode,
            "mode_source": detection.source, "mode_details": detection.details, "run_namespaces": leftovers}


class ExistingProvider(Provider):
    name = "existing"
    description = "a cluster you already have (--kubeconfig, --context); creates only labelled namespaces"
    janitor_note = ("the existing provider owns no cluster; a session's namespaces (label proxysuite.io/run-id) are deleted when "
                    "it ends; `proxysuite cluster status --provider existing` lists any a crashed run left")

    def check_prereqs(self, config: SuiteConfig) -> None:
        check_prereqs(config)

    def up(self, config: SuiteConfig, progress: Progress = lambda _m: None, owner_pid: int | None = None) -> ExistingCluster:
        return up(config, progress, owner_pid)

    def down(self, config: SuiteConfig, progress: Progress = lambda _m: None) -> None:
        down(config, progress)

    def status(self, config: SuiteConfig) -> dict:
        return status(config)

    def clusters(self) -> list[ClusterEntry]:
        raise Unsupported("the existing provider owns no cluster: it tests the one a kubeconfig names",
                          "proxysuite cluster status --provider existing --kubeconfig PATH")

    def images(self, mode: str, k8s_version: str, proxy_manifest: str | None = None) -> list[ImageRef]:
        return pod_images()

"""The ``kind`` provider: Kubernetes-in-Docker clusters in each proxy mode.

::

    proxysuite cluster up --provider kind --mode nftables        # or: pytest --provider kind --mode nftables
    pytest --provider kind --mode cilium -m conformance           # PROXYSUITE_CILIUM_VARIANT=maglev|dsr for the others
    pytest --provider kind --mode custom --proxy-manifest my-proxy.yaml

What ``up`` does, in order (every command is printed through ``progress``):

1. checks docker (CLI and a reachable engine), kind, kubectl (and helm for
   ``--mode cilium`` from the chart repository); IPVS needs the host kernel's IPVS (kind nodes share it);
2. reuses the cluster named ``--cluster-name`` (default ``proxysuite-<mode>``)
   when it exists and was made for the same mode, else renders
   ``proxysuite/data/kind-configs/<mode>.yaml`` (node image for ``--k8s-version``,
   ``--nodes`` workers) and runs ``kind create cluster``; a cluster it
   created and could not finish is deleted again (unless ``--keep-cluster``);
3. ``--mode cilium``: builds (once, cached) Cilium's agent and operator images,
   its chart and Helm from the pinned Go modules (:mod:`.kindsetup.cilium`, no
   registry), ``kind load``s the images, ``helm upgrade --install``s the chart with
   ``cilium-values/default.yaml`` plus the variant overlay, waits for the
   DaemonSet and checks ``cilium-dbg status`` reports KubeProxyReplacement
   (``PROXYSUITE_CILIUM_SOURCE=repo``: helm.cilium.io and quay.io instead);
   ``--mode custom``: ``kubectl apply`` of ``--proxy-manifest`` and a rollout
   wait on each DaemonSet it defines;
4. waits for every node Ready and for kube-proxy/CoreDNS to roll out;
5. on the suite's own engine, blackholes the cluster's ranges in the engine's
   namespace (:func:`.kindsetup.lb.guard_engine`: probes expected to time out
   end there);
6. starts the **external client**: a python3 container on the ``kind``
   network, started with testcontainers so its Ryuk reaper removes it even if
   the test process is killed;
7. Service externalIPs: ``external_ip_cidr`` (TEST-NET-2) is routed from the
   external client to the first worker (:func:`.kindsetup.lb.external_ip_route`);
8. LoadBalancer Services: the suite's own controller
   (:mod:`.kindsetup.lb`, the local provider's code) allocates VIPs from the
   top of the ``kind`` network and routes them from the external client to
   the nodes, so the rows observe the proxy's own LoadBalancer rules. With
   ``PROXYSUITE_KIND_LB=cloud-provider-kind`` the shared cloud-provider-kind
   container (``proxysuite-cloud-provider-kind``) answers them instead; its
   Envoy forwards to NodePorts, so rows that probe the LB address are skipped
   as not judging the proxy.

Vantages are client pods and hostNetwork pods reached by ``kubectl exec``
(:mod:`.remote`), and the external container reached by ``docker exec``;
``node_exec`` is ``docker exec <node container>``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import yaml

from .. import images
from ..config import SuiteConfig, default_state_root
from ..data import KIND_CONFIGS
from ..errors import ProbeError, SuiteError, Unsupported, require_extra
from ..ipfamily import families_of
from ..modes import KUBE_PROXY_METRICS_PORT, require_ipvs_kernel
from ..probes.engine import Observation, ProbeRequest
from .base import ClusterEntry, Features, Provider, ProxySwitch, Vantage
from .detect import cilium_from_status
from .kindsetup import hooks as kindsetup_hooks
from .kindsetup import lb as kindsetup_lb
from .kindsetup import podns as kindsetup_podns
from .local.netns import exec_argv
from .remote import (ROLE_LABEL, RUN_LABEL, KubectlCluster, ToolError, exec_budget, exec_engine, parse_nodes,
                     parse_observations, require_tool, run_tool)

Progress = Callable[[str], None]

KIND_NETWORK = "kind"
CLUSTER_LABEL = "proxysuite.io/kind-cluster"
CLOUD_PROVIDER_CONTAINER = "proxysuite-cloud-provider-kind"
CILIUM_VARIANTS = ("default", "maglev", "dsr")
LB_ENV = "PROXYSUITE_KIND_LB"
ICMP_SETTINGS = (("net.ipv4.icmp_ratelimit", "0"), ("net.ipv4.icmp_msgs_per_sec", "100000"))
LB_CHOICES = ("suite", "cloud-provider-kind")
CLOUD_PROVIDER_NOT_JUDGED = ("cloud-provider-kind (PROXYSUITE_KIND_LB) answers LoadBalancer addresses with an Envoy that forwards "
                             "to NodePorts and enforces loadBalancerSourceRanges itself, so this row would not observe the "
                             "proxy under test; unset PROXYSUITE_KIND_LB to route the VIP to the proxy")

CREATE_TIMEOUT = 900
"""Seconds for ``kind create cluster``: pulling the node image the first time is what lags."""
NODES_READY_TIMEOUT = 300
"""Seconds for every node to turn Ready after creation (the CNI must start first)."""
ROLLOUT_TIMEOUT = 300
"""Seconds for kube-proxy, CoreDNS or a custom proxy DaemonSet to finish rolling out."""
CILIUM_INSTALL_TIMEOUT = 600
"""Seconds for ``helm --wait`` on Cilium: the agents compile their datapath at start."""
CILIUM_LOAD_TIMEOUT = 900
"""Seconds for ``kind load docker-image`` of one offline Cilium image into every node (the agent's is ~1 GB)."""
PROXY_RESTART_TIMEOUT = 120
"""Seconds for a deleted proxy pod to be replaced by a Ready one on the same node."""


# --- files --------------------------------------------------------------------------------------

def configs_dir() -> Path:
    """``PROXYSUITE_KIND_CONFIGS``, else the configs shipped in the package (``proxysuite/data/kind-configs``)."""
    env = os.environ.get("PROXYSUITE_KIND_CONFIGS")
    if env:
        return Path(env)
    return KIND_CONFIGS


def source_config(mode: str) -> Path:
    path = configs_dir() / f"{mode}.yaml"
    if not path.exists():
        fix = (f"point PROXYSUITE_KIND_CONFIGS at a folder holding {mode}.yaml, or unset it to use the shipped configs"
               if os.environ.get("PROXYSUITE_KIND_CONFIGS") else "reinstall proxysuite: its package data lacks the kind configs")
        raise SuiteError(f"kind config {path} is missing", fix)
    return path


def cilium_variant(config: SuiteConfig | None = None) -> str:
    """``--cilium-variant``, else ``PROXYSUITE_CILIUM_VARIANT``, else ``default``."""
    if config is not None and config.cilium_variant:
        return config.cilium_variant
    return os.environ.get("PROXYSUITE_CILIUM_VARIANT", "default")


def cilium_values_files(variant: str | None = None, config: SuiteConfig | None = None) -> list[Path]:
    """``default.yaml`` plus the variant overlay; a variant may also be the path of your own overlay."""
    variant = variant or cilium_variant(config)
    base = configs_dir() / "cilium-values"
    files = [base / "default.yaml"]
    if variant in CILIUM_VARIANTS:
        if variant != "default":
            files.append(base / f"{variant}.yaml")
    elif os.path.exists(variant):
        files.append(Path(variant).resolve())
    else:
        raise SuiteError(f"unknown Cilium variant {variant!r}", f"pass --cilium-variant one of {', '.join(CILIUM_VARIANTS)} or to a Helm values file")
    return files


def state_dir(config: SuiteConfig) -> Path:
    return default_state_root() / "kind" / config.name


def _minor_tuple(version: str | None) -> tuple[int, int] | None:
    if not version:
        return None
    minor = images.k8s_minor(version)
    major, _, mn = minor.partition(".")
    return int(major), int(mn)


def render_config(config: SuiteConfig, node_image: str) -> dict:
    """The kind Cluster object for this run: the mode's file, ``--nodes`` workers, one node image everywhere."""
    with open(source_config(config.mode), encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    doc = copy.deepcopy(doc)
    doc["name"] = config.name
    nodes = doc.get("nodes") or [{"role": "control-plane"}]
    control = [n for n in nodes if n.get("role", "control-plane") == "control-plane"]
    workers = [n for n in nodes if n.get("role") == "worker"]
    # The worker entries are repeated in turn, so their zone labels alternate (proxysuite/cluster/zones.py).
    workers = workers or [{"role": "worker"}]
    doc["nodes"] = control + [copy.deepcopy(workers[i % len(workers)]) for i in range(config.nodes)]
    for node in doc["nodes"]:
        node["image"] = node_image
    version = _minor_tuple(images.image_version(node_image))
    gates = doc.get("featureGates") or {}
    if "KubeProxyIPVS" in gates and version is not None and version < (1, 37):
        # The gate only exists from 1.37; older components refuse unknown gates.
        del gates["KubeProxyIPVS"]
    if gates:
        doc["featureGates"] = gates
    else:
        doc.pop("featureGates", None)
    if config.ip_family != "ipv4":
        # kind's own values are ipv4 | ipv6 | dual, the same words as --ip-family. The shipped configs pin IPv4
        # subnets, which kind refuses for ipv6 and wants paired for dual: the IPv6 ones are kind's own defaults.
        net = doc.setdefault("networking", {})
        net["ipFamily"] = config.ip_family
        for key, v6 in (("podSubnet", "fd00:10:244::/56"), ("serviceSubnet", "fd00:10:96::/112")):
            v4 = [c for c in str(net.get(key) or "").split(",") if c and ":" not in c]
            if v4 or config.ip_family == "ipv6":
                net[key] = v6 if config.ip_family == "ipv6" else ",".join(v4 + [v6])
    return kindsetup_hooks.adjust_config(doc, node_image)


# --- prerequisites ------------------------------------------------------------------------------

def docker_engine_version() -> str:
    """The engine's version, or SuiteError when the CLI cannot reach an engine."""
    try:
        proc = run_tool(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except ToolError as exc:
        raise SuiteError(f"the Docker engine is not reachable ({exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc})",
                         "start the Docker engine, set DOCKER_HOST to one, or run `proxysuite kind setup-engine` (installs and starts the suite's own); kind runs its nodes as containers") from None
    version = proc.stdout.strip()
    if not version:
        raise SuiteError("the Docker engine did not report a version", "check `docker info`; kind needs a running engine")
    return version


def check_prereqs(config: SuiteConfig) -> None:
    """docker (CLI + engine), kind, kubectl, helm for Cilium; the kernel for IPVS; a manifest for custom."""
    kindsetup_hooks.before_prereqs()
    for tool in ("docker", "kind", "kubectl"):
        require_tool(tool)
    if config.mode == "cilium" and cilium_source() == "repo":
        require_tool("helm")
    if config.mode == "custom":
        if not config.proxy_manifest:
            raise SuiteError("--mode custom on kind needs your proxy's manifest", "pass --proxy-manifest PATH (a DaemonSet YAML)")
        if not os.path.exists(config.proxy_manifest):
            raise SuiteError(f"proxy manifest {config.proxy_manifest} does not exist", "pass --proxy-manifest PATH of an existing YAML file")
    elif config.proxy_manifest:
        raise SuiteError("--proxy-manifest installs a proxy in place of kube-proxy, so it only goes with --mode custom", "add --mode custom")
    if config.mode == "cilium":
        cilium_values_files(config=config)
    if config.mode == "ipvs":
        require_ipvs_kernel()
    lb_choice()
    docker_engine_version()


# --- cluster lifecycle ---------------------------------------------------------------------------

def existing_clusters() -> list[str]:
    return [line.strip() for line in run_tool(["kind", "get", "clusters"]).stdout.splitlines() if line.strip()]


KUBE_PROXY_MODES = ("iptables", "nftables", "ipvs")
"""Modes kind runs as kube-proxy from its ConfigMap (the ones :meth:`KindCluster.migrate_proxy` switches between)."""


def _k8s_time(stamp: str | None) -> float | None:
    """An API timestamp (``2026-11-30T21:00:00Z``) as epoch seconds."""
    import datetime

    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _record_path(config: SuiteConfig) -> Path:
    return state_dir(config) / "cluster.json"


def _read_record(config: SuiteConfig) -> dict | None:
    try:
        return json.loads(_record_path(config).read_text())
    except (OSError, ValueError):
        return None


def _kubectl(kubeconfig: str, *args: str) -> list[str]:
    return ["kubectl", "--kubeconfig", kubeconfig, *args]


def _say(progress: Progress, argv: list[str]) -> None:
    progress("$ " + " ".join(argv))


def _run(progress: Progress, argv: list[str], timeout: float, input: str | None = None) -> str:
    _say(progress, argv)
    return run_tool(argv, timeout=timeout, input=input).stdout


def manifest_daemonsets(path: str) -> list[tuple[str, str, dict]]:
    """(namespace, name, selector matchLabels) of each DaemonSet in a proxy manifest."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for doc in yaml.safe_load_all(fh):
            if isinstance(doc, dict) and doc.get("kind") == "DaemonSet":
                meta = doc.get("metadata", {})
                labels = (doc.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
                out.append((meta.get("namespace", "default"), meta["name"], labels))
    return out


CILIUM_SOURCE_ENV = images.CILIUM_SOURCE_ENV
cilium_source = images.cilium_source


def cilium_helm_argv(config: SuiteConfig, kubeconfig: str, progress: Progress) -> list[str]:
    """The ``helm upgrade --install`` of Cilium; offline, it first builds (cached) and loads the images into the nodes."""
    if cilium_source() == "repo":
        head = ["helm", "upgrade", "--install", "cilium", "cilium", "--repo", images.CILIUM_CHART_REPO, "--version", images.cilium_version()]
        tail: list[str] = []
    else:
        from .kindsetup import cilium as offline  # the Go builds and image imports are only for this mode

        bins = offline.ensure(progress)
        refs = offline.build_images(progress)
        for ref in refs.values():
            # No registry: the nodes' containerd gets the images from the engine (the chart says pullPolicy Never).
            _run(progress, ["kind", "load", "docker-image", ref, "--name", config.name], CILIUM_LOAD_TIMEOUT)
        head = [str(bins["helm"]), "upgrade", "--install", "cilium", str(offline.chart_dir(progress))]
        tail = offline.helm_image_args(refs)
    argv = head + ["--namespace", "kube-system", "--kubeconfig", kubeconfig]
    for f in cilium_values_files(config=config):
        argv += ["--values", str(f)]
    # No kube-proxy programs the kubernetes Service for the agents: they reach the apiserver by the node's name.
    return argv + tail + ["--set", f"k8sServiceHost={config.name}-control-plane", "--set", "k8sServicePort=6443",
                          "--wait", "--timeout", f"{CILIUM_INSTALL_TIMEOUT}s"]


def install_cilium(config: SuiteConfig, kubeconfig: str, progress: Progress) -> dict:
    """Install Cilium with Helm, wait for it, and return the agent's KubeProxyReplacement facts."""
    _run(progress, cilium_helm_argv(config, kubeconfig, progress), CILIUM_INSTALL_TIMEOUT + 60)
    _run(progress, _kubectl(kubeconfig, "-n", "kube-system", "rollout", "status", "daemonset/cilium", f"--timeout={ROLLOUT_TIMEOUT}s"),
         ROLLOUT_TIMEOUT + 30)
    status = _run(progress, _kubectl(kubeconfig, "-n", "kube-system", "exec", "daemonset/cilium", "-c", "cilium-agent", "--",
                                     "cilium-dbg", "status", "--verbose"), 120)
    facts = cilium_from_status(status)
    if not facts.get("kpr"):
        raise SuiteError("Cilium came up without kube-proxy replacement (cilium-dbg status: KubeProxyReplacement is not True)",
                         "check the values files in proxysuite/data/kind-configs/cilium-values (kubeProxyReplacement: true)")
    progress("cilium: " + ", ".join(f"{k}={v}" for k, v in sorted(facts.items())))
    return facts


def apply_proxy_manifest(config: SuiteConfig, kubeconfig: str, progress: Progress) -> None:
    _run(progress, _kubectl(kubeconfig, "apply", "-f", os.path.abspath(config.proxy_manifest)), 120)
    daemonsets = manifest_daemonsets(config.proxy_manifest)
    if not daemonsets:
        progress(f"{config.proxy_manifest} defines no DaemonSet; not waiting for a rollout")
    for ns, name, _labels in daemonsets:
        _run(progress, _kubectl(kubeconfig, "-n", ns, "rollout", "status", f"daemonset/{name}", f"--timeout={ROLLOUT_TIMEOUT}s"),
             ROLLOUT_TIMEOUT + 30)


def wait_ready(config: SuiteConfig, kubeconfig: str, progress: Progress) -> None:
    _run(progress, _kubectl(kubeconfig, "wait", "--for=condition=Ready", "nodes", "--all", f"--timeout={NODES_READY_TIMEOUT}s"),
         NODES_READY_TIMEOUT + 30)
    if config.mode in ("iptables", "nftables", "ipvs"):
        _run(progress, _kubectl(kubeconfig, "-n", "kube-system", "rollout", "status", "daemonset/kube-proxy", f"--timeout={ROLLOUT_TIMEOUT}s"),
             ROLLOUT_TIMEOUT + 30)
    _run(progress, _kubectl(kubeconfig, "-n", "kube-system", "rollout", "status", "deployment/coredns", f"--timeout={ROLLOUT_TIMEOUT}s"),
         ROLLOUT_TIMEOUT + 30)


def create(config: SuiteConfig, progress: Progress) -> str:
    """Create the cluster and bring its proxy up; return the kubeconfig path. Deletes it again on failure."""
    sd = state_dir(config)
    sd.mkdir(parents=True, exist_ok=True)
    kubeconfig = str(sd / "kubeconfig")
    node_image = kindsetup_hooks.resolve_node_image(config.kind_node_image or images.kind_node_image(config.k8s_version), progress,
                                                    explicit=bool(config.kind_node_image or os.environ.get("PROXYSUITE_KIND_NODE_IMAGE")))
    image_version = images.image_version(node_image)
    if image_version and image_version != config.k8s_version:
        progress(f"kind {images.KIND_VERSION} has no {config.k8s_version} node image; using {image_version} ({node_image})")
    cfg_path = sd / "kind-config.yaml"
    cfg_path.write_text(yaml.safe_dump(render_config(config, node_image), sort_keys=False))
    try:
        _run(progress, ["kind", "create", "cluster", "--name", config.name, "--config", str(cfg_path), "--kubeconfig", kubeconfig],
             CREATE_TIMEOUT)
        kindsetup_hooks.after_kubeconfig(config.name, kubeconfig, progress, node_image)
        record = {"name": config.name, "mode": config.mode, "node_image": node_image, "created_by": "proxysuite"}
        if config.mode == "cilium":
            record["cilium_variant"] = cilium_variant(config)
            record["cilium_version"] = images.cilium_version()
            record["cilium"] = install_cilium(config, kubeconfig, progress)
        if config.mode == "custom":
            record["proxy_manifest"] = os.path.abspath(config.proxy_manifest)
            apply_proxy_manifest(config, kubeconfig, progress)
        wait_ready(config, kubeconfig, progress)
        _record_path(config).write_text(json.dumps(record, indent=2))
    except BaseException as exc:
        if config.keep_cluster:
            progress(f"bring-up failed; keeping cluster {config.name} for inspection (--keep-cluster); remove it with: kind delete cluster --name {config.name}")
        else:
            progress(f"bring-up failed; deleting the half-made cluster {config.name}")
            try:
                run_tool(["kind", "delete", "cluster", "--name", config.name], timeout=300)
            except ProbeError as del_exc:
                progress(f"could not delete {config.name}: {del_exc}")
        if isinstance(exc, ProbeError):
            raise SuiteError(f"kind cluster {config.name} ({config.mode}) could not be brought up: {exc}",
                             "read the command output above; rerun with --keep-cluster and inspect it with "
                             f"kind export logs --name {config.name}") from None
        raise
    return kubeconfig


def reuse(config: SuiteConfig, progress: Progress) -> str:
    record = _read_record(config)
    if record and record.get("mode") != config.mode:
        raise SuiteError(f"kind cluster {config.name} exists but runs --mode {record.get('mode')}, not {config.mode}",
                         f"delete it (proxysuite cluster down --provider kind --cluster-name {config.name}) or pick another --cluster-name")
    if record and config.mode == "cilium" and record.get("cilium_variant") != cilium_variant(config):
        raise SuiteError(f"kind cluster {config.name} runs Cilium variant {record.get('cilium_variant')}, not {cilium_variant(config)}",
                         f"delete it (proxysuite cluster down --provider kind --cluster-name {config.name}) or pick another --cluster-name")
    sd = state_dir(config)
    sd.mkdir(parents=True, exist_ok=True)
    kubeconfig = str(sd / "kubeconfig")
    progress(f"reusing kind cluster {config.name}")
    _run(progress, ["kind", "export", "kubeconfig", "--name", config.name, "--kubeconfig", kubeconfig], 60)
    kindsetup_hooks.after_kubeconfig(config.name, kubeconfig, progress, (record or {}).get("node_image"))
    if record is None:
        progress(f"kind cluster {config.name} was not made by proxysuite; its proxy mode will be detected")
    return kubeconfig


def lb_choice() -> str:
    """``PROXYSUITE_KIND_LB``: ``suite`` (default) or ``cloud-provider-kind``."""
    choice = os.environ.get(LB_ENV, "suite") or "suite"
    if choice not in LB_CHOICES:
        raise SuiteError(f"{LB_ENV}={choice} is not a LoadBalancer choice", f"set {LB_ENV} to one of {', '.join(LB_CHOICES)} or unset it")
    return choice


def cluster_cidrs(kubectl_json: Callable[..., dict]) -> tuple[list[str], list[str]]:
    """(Service CIDRs, pod CIDRs) from kubeadm's ClusterConfiguration (any kind cluster has it)."""
    try:
        cm = kubectl_json("get", "configmap", "-n", "kube-system", "kubeadm-config")
        doc = yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration") or "{}") or {}
    except (ProbeError, ValueError, AttributeError, yaml.YAMLError):
        doc = {}  # not a kubeadm cluster: kind's default ranges
    net = doc.get("networking") or {}
    split = lambda v: [c.strip() for c in (v or "").split(",") if c.strip()]  # noqa: E731
    return split(net.get("serviceSubnet")) or ["10.96.0.0/16"], split(net.get("podSubnet"))


# --- side containers ------------------------------------------------------------------------------

def cloud_provider_argv() -> list[str]:
    return ["docker", "run", "-d", "--name", CLOUD_PROVIDER_CONTAINER, "--network", KIND_NETWORK, "--restart", "unless-stopped",
            "--label", f"{ROLE_LABEL}=cloud-provider-kind",
            "-v", "/var/run/docker.sock:/var/run/docker.sock", images.cloud_provider_kind_image()]


def ensure_cloud_provider(progress: Progress) -> None:
    """Start the shared cloud-provider-kind container unless it already runs (it serves every kind cluster)."""
    running = run_tool(["docker", "ps", "-q", "--filter", f"name=^{CLOUD_PROVIDER_CONTAINER}$"]).stdout.strip()
    if running:
        return
    run_tool(["docker", "rm", "-f", CLOUD_PROVIDER_CONTAINER], check=False)
    _run(progress, cloud_provider_argv(), 300)


def external_client_spec(config: SuiteConfig) -> dict:
    """What the external client container is: image, name, command, network and labels."""
    return {
        "image": images.client_image(),
        "name": f"proxysuite-ext-{config.name}-{config.run_id}-{os.getpid()}",
        "command": ["python3", "-c", "import signal,sys; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); signal.pause()"],
        "network": KIND_NETWORK,
        "labels": {RUN_LABEL: config.run_id, CLUSTER_LABEL: config.name, ROLE_LABEL: "external-client"},
    }


def start_external_client(spec: dict):
    """Start the container with testcontainers (Ryuk reaps it when this process dies); return (container, id, ip)."""
    require_extra("kind", "testcontainers")
    from testcontainers.core.container import DockerContainer

    container = (DockerContainer(spec["image"]).with_name(spec["name"]).with_command(spec["command"])
                 .with_kwargs(network=spec["network"], labels=spec["labels"]))
    container.start()
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    ip = wrapped.attrs["NetworkSettings"]["Networks"][spec["network"]]["IPAddress"]
    return container, wrapped.id, ip


# --- the cluster ----------------------------------------------------------------------------------

class KindCluster(KubectlCluster):
    @property
    def proxy_restart_seconds(self) -> float:  # type: ignore[override]
        """A restart deletes the proxy pod and waits for the DaemonSet's Ready replacement (kubelet, readiness probe):
        kube-proxy 4.8 s measured on an idle machine, more under load; a Cilium agent also reloads its datapath and
        was healthy 13.6 s after one restart (maglev variant, 2026-12-01)."""
        return 20.0 if self.mode == "cilium" else 12.0

    def __init__(self, config: SuiteConfig, kubeconfig: str):
        super().__init__(provider="kind", mode=config.mode, name=config.name, kubeconfig=kubeconfig, run_id=config.run_id)
        self.config = config
        # Written into the kind config (networking.ipFamily); the side containers stay IPv4 (never run on IPv6 here).
        self.ip_families = families_of(config.ip_family)
        self.reasons: dict[str, str] = {
            "load_balancer": "the LoadBalancer controller was not started (start_side_containers was not called)",
            "external_client": "the external client container was not started (start_side_containers was not called)",
            "external_ips": "the externalIP range is routed from the external client, which was not started "
                            "(start_side_containers was not called)",
        }
        self.load_balancer = False
        self.lb_via_proxy = True
        self._lb: kindsetup_lb.KindLoadBalancer | None = None
        self._external = None
        self._external_id: str | None = None
        self._external_ip: str | None = None
        self._pods_here: bool | None = None

    # --- side containers ---------------------------------------------------------------------------
    def start_side_containers(self, progress: Progress) -> None:
        choice = lb_choice()
        pool = gateway = None
        try:
            subnet, gateway = kindsetup_lb.kind_network(KIND_NETWORK)
            pool = kindsetup_lb.pool_for(subnet)
        except SuiteError as exc:
            progress(f"no LoadBalancer pool: {exc}")
        service_cidrs, pod_cidrs = cluster_cidrs(self.kubectl.json)
        kindsetup_lb.guard_engine(service_cidrs, pod_cidrs, pool, progress)
        self._unthrottle_icmp(progress)
        if choice == "cloud-provider-kind":
            try:
                ensure_cloud_provider(progress)
                self.load_balancer = True
                self.lb_via_proxy = False
                self.reasons.pop("load_balancer", None)
            except (ProbeError, SuiteError) as exc:
                self.reasons["load_balancer"] = f"cloud-provider-kind did not start: {exc}"
                progress(self.reasons["load_balancer"])
        spec = external_client_spec(self.config)
        try:
            progress(f"starting external client {spec['name']} ({spec['image']}) on network {spec['network']} via testcontainers")
            self._external, self._external_id, self._external_ip = start_external_client(spec)
            self.reasons.pop("external_client", None)
            self._wire_like_checksums(progress)
        except Exception as exc:  # noqa: BLE001 - docker SDK errors come in many types; each means "no external client"
            self.reasons["external_client"] = f"the external client container did not start: {type(exc).__name__}: {exc}"
            progress(self.reasons["external_client"])
        node_ips = self._worker_ips() if self._external_id is not None else []
        self._route_external_ips(node_ips, [*service_cidrs, *pod_cidrs, *([pool] if pool else [])], progress)
        if choice == "suite":
            self._start_lb(pool, node_ips, progress)
            if self._lb is not None and gateway:
                self._pool_behind_gateway(pool, gateway, progress)

    def _wire_like_checksums(self, progress: Progress) -> None:
        """Turn off TX checksum offload on the external client's interface, so its packets reach the nodes with
        their checksums filled in, as from a wire.

        From a veth peer on the same kernel a TCP SYN arrives CHECKSUM_PARTIAL. Cilium answers a Service without
        backends by rewriting that very packet into an ICMP port unreachable in BPF (bpf/lib/lb.h,
        tail_no_service_ipv4) and sending it back; the reply keeps the request's partial-checksum state and
        the ``kind`` bridge never delivers it (measured: seen leaving the node, never arriving at the client),
        so a client in a container on the same machine times out where a real one is refused. kube-proxy's
        REJECT builds a new packet and is unaffected either way. Where the engine runs elsewhere the client is
        left alone."""
        if self._external_id is None or not self._pods_on_this_kernel():
            return
        try:
            pid = run_tool(["docker", "inspect", "--format", "{{.State.Pid}}", self._external_id], timeout=30).stdout.strip()
            kindsetup_podns.tx_checksum_offload_off(f"/proc/{pid}/ns/net", "eth0")
        except (ProbeError, OSError, ValueError) as exc:
            progress(f"could not turn off TX checksum offload on the external client ({exc}); a Cilium reject to it may time out")

    def _pool_behind_gateway(self, pool: str, gateway: str, progress: Progress) -> None:
        """Route the LB pool from every node to the ``kind`` network's gateway (in the node containers' own
        namespaces).

        The pool is carved from the ``kind`` network, so without this a node ARPs for a pool address that no
        one holds (an ipMode Proxy ingress the proxy rightly leaves alone, a freed VIP) and the client sees
        EHOSTUNREACH, an on-link failure no cloud shows: a cloud's LB addresses sit behind a router. Through
        the gateway such packets end at the guard's blackhole and time out, as on the local provider. A VIP
        the proxy programs is translated before this route matters."""
        try:
            nodes = run_tool(["kind", "get", "nodes", "--name", self.name], timeout=30).stdout.split()
        except ProbeError as exc:
            progress(f"could not list the nodes to route the LB pool behind the gateway: {exc}")
            return
        routed = []
        for node in nodes:
            try:
                run_tool(["docker", "exec", node, "ip", "route", "replace", pool, "via", gateway], timeout=30)
                routed.append(node)
            except ProbeError as exc:
                progress(f"{node}: could not route {pool} via {gateway}: {exc}")
        progress(f"nodes {', '.join(routed)}: {pool} via {gateway} (the LB pool behind the router, not on-link)")

    def _worker_ips(self) -> list[str]:
        """Every worker's address, as a cloud LB or a router targets them (kind labels its control plane to be
        excluded); read afresh rather than through nodes(), whose cached answer must not be taken while a taint
        is still lifting."""
        parsed = parse_nodes(self.kubectl.json("get", "nodes"))
        return [n.internal_ip for n, cp, _ in parsed if not cp] or [n.internal_ip for n, _, _ in parsed]

    def _route_external_ips(self, node_ips: list[str], taken: list[str], progress: Progress) -> None:
        """Route :data:`.kindsetup.lb.EXTERNAL_IP_CIDR` from the external client to a node (the ``external_ips``
        feature); on failure the feature stays off with the reason."""
        if self._external_id is None:
            self.reasons["external_ips"] = "externalIPs are routed from the external client, which did not start"
            return
        try:
            subnet, _gateway = kindsetup_lb.kind_network(KIND_NETWORK)
            cidr, hop = kindsetup_lb.external_ip_route(kindsetup_lb.EXTERNAL_IP_CIDR, node_ips, subnet, taken)
            kindsetup_lb.route_external_ips(self._external_id, cidr, hop)
        except (SuiteError, OSError) as exc:
            self.reasons["external_ips"] = f"the externalIP range could not be routed from the external client: {exc}"
            progress(self.reasons["external_ips"])
            return
        self.external_ip_cidr = cidr
        self.reasons.pop("external_ips", None)
        progress(f"externalIPs: {cidr} routed from the external client {self._external_id[:12]} to node {hop}")

    def _unthrottle_icmp(self, progress: Progress) -> None:
        """No ICMP error rate limit in the nodes' network namespaces, as on the local provider's nodes.

        The catalogue sends many rejected probes from one client; under the default limit (1000 ms per peer)
        the kernel silences most rejections and a REJECT reads as a DROP. Both settings belong to the node
        container's network namespace (on a kernel where one is not per-namespace, it does not exist
        there and the write fails harmlessly), so nothing on the machine changes."""
        try:
            nodes = run_tool(["kind", "get", "nodes", "--name", self.name], timeout=30).stdout.split()
        except ProbeError:
            return
        for node in nodes:
            for key, value in ICMP_SETTINGS:
                run_tool(["docker", "exec", node, "sysctl", "-q", "-w", f"{key}={value}"], timeout=30, check=False)
        progress(f"nodes {', '.join(nodes)}: " + ", ".join(f"{k}={v}" for k, v in ICMP_SETTINGS) + " (their own network namespaces)")

    def _start_lb(self, pool: str | None, node_ips: list[str], progress: Progress) -> None:
        """The suite's LB controller (see :mod:`.kindsetup.lb`); needs the external client to route from."""
        if self._external_id is None:
            self.reasons["load_balancer"] = "LoadBalancer VIPs are routed from the external client, which did not start"
            return
        if pool is None:
            self.reasons["load_balancer"] = "the kind network has no IPv4 subnet to take a LoadBalancer pool from"
            return
        lb = kindsetup_lb.KindLoadBalancer(kubeconfig=self.kubeconfig, ext_container=self._external_id,
                                           node_ips=node_ips, network=KIND_NETWORK, pool=pool)
        try:
            lb.start(progress)
        except (SuiteError, OSError) as exc:
            self.reasons["load_balancer"] = f"the suite's LoadBalancer controller did not start: {exc}"
            progress(self.reasons["load_balancer"])
            return
        self._lb = lb
        self.load_balancer = True
        self.reasons.pop("load_balancer", None)

    def features(self) -> Features:
        reasons = dict(self.reasons)
        restart = True
        if self.mode == "custom" and not self._proxy_selector()[1]:
            restart = False
            reasons["proxy_restart"] = "the --proxy-manifest defines no DaemonSet with a selector, so its pods cannot be found to restart"
        here = self._pods_on_this_kernel()
        if not here:
            reasons.setdefault("proxy_children_cpu", "the Docker engine does not share this machine's kernel, so the proxy "
                                                     "pod's exited children are not visible from here (run perf on --provider local)")
            reasons.setdefault("load_generation", "the Docker engine does not share this machine's kernel (a VM or a remote "
                                                  "DOCKER_HOST), so no process here can send as a client pod; run perf load "
                                                  "on --provider local")
        migratable = self.mode in KUBE_PROXY_MODES
        if not migratable:
            reasons["proxy_migration"] = (f"mode {self.mode} does not run kube-proxy from its ConfigMap; migration patches the "
                                          "kube-proxy ConfigMap's mode and restarts its DaemonSet")
        if not self.lb_via_proxy:
            reasons["lb_via_proxy"] = CLOUD_PROVIDER_NOT_JUDGED
        return Features(load_balancer=self.load_balancer, lb_via_proxy=self.lb_via_proxy,
                        external_client=self._external_id is not None,
                        external_ips=self._external_id is not None and self.external_ip_cidr is not None, node_exec=True,
                        proxy_restart=restart, cluster_dns=True, udp=True, proxy_migration=migratable,
                        proxy_children_cpu=here, load_generation=here, reasons=reasons)

    def migrate_proxy(self, to_mode: str, progress: Progress = lambda _m: None) -> list[ProxySwitch]:
        """The kubeadm runbook: set ``mode`` in the kube-proxy ConfigMap, ``kubectl rollout restart daemonset kube-proxy``.

        The DaemonSet's rolling update replaces one node's pod at a time (maxUnavailable 1); each node's step ends when
        its new pod reports ``to_mode`` on /proxyMode and a sync. Returns one switch per node running kube-proxy,
        workers first, then the control plane.
        """
        import time

        if not self.features().proxy_migration:
            raise self._unavailable("proxy_migration")
        if to_mode not in KUBE_PROXY_MODES:
            raise Unsupported(f"kind migrates between kube-proxy modes ({', '.join(KUBE_PROXY_MODES)}), not to {to_mode}",
                              "pick one of those; Cilium replaces kube-proxy (a new cluster: --mode cilium)")
        if to_mode == "ipvs":
            require_ipvs_kernel()
        from_mode = self.mode
        conf = yaml.safe_load(self.kubectl.run("get", "configmap", "-n", "kube-system", "kube-proxy", "-o", "jsonpath={.data.config\\.conf}").stdout)
        conf["mode"] = to_mode
        self.kubectl.run("patch", "configmap", "-n", "kube-system", "kube-proxy", "--type", "merge",
                         "-p", json.dumps({"data": {"config.conf": yaml.safe_dump(conf, sort_keys=False)}}))
        # Every node the DaemonSet runs on, the control plane too: its proxy switches as well and is audited.
        old = {n: self._proxy_pod(n)[1] for n in [*(w.name for w in self.nodes()), self.control_plane]}
        old = {n: pod for n, pod in old.items() if pod}
        progress(f"kube-proxy ConfigMap: mode {from_mode} -> {to_mode}; kubectl rollout restart daemonset kube-proxy")
        begun = time.time()
        self.kubectl.run("rollout", "restart", "daemonset", "-n", "kube-system", "kube-proxy")
        done: dict[str, ProxySwitch] = {}

        def progressed() -> bool:
            for node, before in old.items():
                if node in done:
                    continue
                _ns, pod = self._proxy_pod(node)
                if not pod or pod == before:
                    continue
                try:
                    if self.proxy_http(node, KUBE_PROXY_METRICS_PORT, "/proxyMode")[1].strip() != to_mode:
                        continue
                    metrics = self.proxy_http(node, KUBE_PROXY_METRICS_PORT, "/metrics")[1]
                except ProbeError:
                    continue
                synced = [float(line.split()[-1]) for line in metrics.splitlines()
                          if line.startswith("kubeproxy_sync_proxy_rules_last_timestamp_seconds") and 'ip_family="IPv6"' not in line]
                if synced:
                    info = json.loads(self.kubectl.run("get", "pod", "-n", "kube-system", pod, "-o", "json").stdout)
                    started = _k8s_time(info["status"].get("startTime")) or begun
                    created = _k8s_time(info["metadata"].get("creationTimestamp")) or begun
                    done[node] = ProxySwitch(node, from_mode, to_mode, stopped=created, started=started, synced=synced[0], serving=time.time())
                    progress(f"{node}: kube-proxy {to_mode} serving")
            return len(done) == len(old)

        self.wait_deadline(f"kube-proxy pods on every node serving {to_mode} after the rollout", PROXY_RESTART_TIMEOUT * len(old), progressed, every=0.5)
        self.mode = to_mode
        record = _read_record(self.config)
        if record is not None:
            record["mode"] = to_mode
            _record_path(self.config).write_text(json.dumps(record, indent=2))
        # The name stays the cluster's: a default name derives from the mode (proxysuite-<mode>), and a cluster
        # does not change its name by changing its proxy.
        self.config = self.config.with_(mode=to_mode, cluster_name=self.config.name)
        return [done[n] for n in old]

    def external_vantage(self) -> Vantage:
        if self._external_id is None:
            raise self._unavailable("external_client")
        prefix = ["docker", "exec", self._external_id]

        def runner(requests: list[ProbeRequest]) -> list[Observation]:
            from dataclasses import asdict

            out = exec_engine(prefix, [asdict(r) for r in requests], exec_budget(requests), "the external client container")
            return parse_observations(out)

        return Vantage(name="external", kind="external", node=None, source_ip=self._external_ip or "", runner=runner)

    def _pods_on_this_kernel(self) -> bool:
        """Whether the node containers' processes are processes of this machine (an engine on this kernel)."""
        if self._pods_here is None:
            node = self.control_plane
            proc = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}} {{.Id}}", node], capture_output=True, text=True)
            pid, _, cid = proc.stdout.strip().partition(" ")
            self._pods_here = proc.returncode == 0 and pid.isdigit() and kindsetup_podns.engine_shares_kernel(int(pid), cid)
        return self._pods_here

    def pod_vantage(self, namespace: str, pod: str, container: str | None = None) -> Vantage:
        """A pod whose image has no python3 (agnhost backends: the hairpin rows) is probed from this machine's
        python3 inside the pod's network namespace, where the engine shares this kernel."""
        try:
            return super().pod_vantage(namespace, pod, container)
        except Unsupported:
            if not self._pods_on_this_kernel():
                raise
        doc = self.kubectl.json("get", "pod", pod, "-n", namespace)
        spec, status, uid = doc.get("spec", {}), doc.get("status", {}), doc["metadata"]["uid"]
        where = f"pod {namespace}/{pod} (its network, entered from this machine)"

        def runner(requests: list[ProbeRequest]) -> list[Observation]:
            from dataclasses import asdict

            # Looked up per batch: the process found for the last one may have exited since.
            prefix = exec_argv(kindsetup_podns.pod_netns_path(uid), [])
            return parse_observations(exec_engine(prefix, [asdict(r) for r in requests], exec_budget(requests), where))

        node = spec.get("nodeName")
        return Vantage(name=f"{pod}@{node}", kind="node" if spec.get("hostNetwork") else "pod", node=node,
                       source_ip=status.get("podIP", ""), runner=runner,
                       source_ips=tuple(i.get("ip") for i in status.get("podIPs") or [] if i.get("ip")))

    def load_netns(self, namespace: str, pod: str) -> str:
        """The pod's network namespace as ``/proc/<pid>/ns/net`` (see :mod:`.kindsetup.podns`)."""
        if not self._pods_on_this_kernel():
            raise self._unavailable("load_generation")
        uid = self.kubectl.json("get", "pod", pod, "-n", namespace)["metadata"]["uid"]
        return kindsetup_podns.pod_netns_path(uid)

    def proxy_children_cpu_seconds(self, node: str) -> float:
        if not self._pods_on_this_kernel():
            raise self._unavailable("proxy_children_cpu")
        ns, pod = self._proxy_pod(node)
        if pod is None:
            raise ProbeError(f"no proxy pod runs on {node}")
        return kindsetup_podns.children_cpu_seconds(self.kubectl.json("get", "pod", pod, "-n", ns)["metadata"]["uid"])

    # --- nodes and the proxy -------------------------------------------------------------------------
    @property
    def control_plane(self) -> str:
        """kind's name for the (single) control-plane node's container."""
        return f"{self.config.name}-control-plane"

    def node_exec(self, node: str, argv: list[str], timeout: float = 30) -> str:
        return run_tool(["docker", "exec", node, *argv], timeout=timeout).stdout

    def proxy_http(self, node: str, port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
        if node != self.control_plane:
            return super().proxy_http(node, port, path, host)
        # The control plane runs no host pod of the suite (it is tainted); its container is the node's own
        # network namespace, where kube-proxy listens, so curl there sees what a host pod would. (Decided by
        # kind's node name, so the workers' calls cost no extra API request.)
        try:
            out = self.node_exec(node, ["curl", "-sS", "-m", "5", "-w", "\n%{http_code}", f"http://{host}:{port}{path}"], timeout=15)
        except ToolError as exc:
            raise ProbeError(f"GET {host}:{port}{path} on {node} failed: {exc}") from None
        body, _, status = out.rpartition("\n")
        return int(status), body

    def _proxy_selector(self) -> tuple[str, str]:
        """(namespace, label selector) of the proxy's pods."""
        if self.mode == "cilium":
            return "kube-system", "k8s-app=cilium"
        if self.mode == "custom":
            if self.config.proxy_manifest and os.path.exists(self.config.proxy_manifest):
                for ns, _name, labels in manifest_daemonsets(self.config.proxy_manifest):
                    if labels:
                        return ns, ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            return "kube-system", ""
        return "kube-system", "k8s-app=kube-proxy"

    def _proxy_pod(self, node: str) -> tuple[str, str | None]:
        ns, selector = self._proxy_selector()
        if not selector:
            return ns, None
        proc = self.kubectl.run("get", "pods", "-n", ns, "-l", selector, "--field-selector", f"spec.nodeName={node}", "-o", "name",
                                check=False)
        names = [line.split("/", 1)[-1] for line in proc.stdout.split()]
        return ns, (names[0] if names else None)

    def proxy_logs(self, node: str, tail: int = 200) -> str:
        ns, pod = self._proxy_pod(node)
        if not pod:
            return f"(no proxy pod found on {node})"
        proc = self.kubectl.run("logs", "-n", ns, pod, f"--tail={tail}", "--all-containers", check=False)
        return proc.stdout or proc.stderr

    def restart_proxy(self, node: str) -> None:
        """Delete the proxy pod on ``node`` and wait until its DaemonSet has a Ready replacement there."""
        ns, old = self._proxy_pod(node)
        if not old:
            raise ProbeError(f"no proxy pod on {node} to restart")
        self.kubectl.run("delete", "pod", "-n", ns, old, "--wait=false")

        def replaced() -> bool:
            cur_ns, cur = self._proxy_pod(node)
            if not cur or cur == old:
                return False
            proc = self.kubectl.run("get", "pod", "-n", cur_ns, cur, "-o",
                                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            return proc.stdout.strip() == "True"

        self.wait_deadline(f"a Ready proxy pod replacing {ns}/{old} on {node}", PROXY_RESTART_TIMEOUT, replaced)

    def proxy_rules(self, node: str) -> str:
        if self.mode == "cilium":
            ns, pod = self._proxy_pod(node)
            if not pod:
                return f"(no cilium agent on {node})"
            return self.kubectl.run("exec", "-n", ns, pod, "-c", "cilium-agent", "--", "cilium-dbg", "service", "list",
                                    check=False).stdout
        return super().proxy_rules(node)

    def close(self) -> None:
        if self._lb is not None:
            self._lb.stop()
            self._lb = None
            self.load_balancer = False
            self.reasons["load_balancer"] = "the LoadBalancer controller was stopped (the cluster object was closed)"
        if self._external is not None:
            try:
                self._external.stop()
            except Exception:  # noqa: BLE001 - Ryuk removes it anyway when the process exits
                pass
            self._external = None
            self._external_id = None
            self.reasons["external_client"] = "the external client was stopped (the cluster object was closed)"
            self.external_ip_cidr = None
            self.reasons["external_ips"] = "the external client, which routed the externalIP range, was stopped"


def up(config: SuiteConfig, progress: Progress = lambda _m: None, owner_pid: int | None = None) -> KindCluster:
    """Create (or reuse) the kind cluster for ``config`` and start its side containers."""
    check_prereqs(config)
    if config.name in existing_clusters():
        kubeconfig = reuse(config, progress)
        cluster = KindCluster(config, kubeconfig)
        cluster.created = False
        if _read_record(config) is None:
            from .existing import check_mode, detect_cluster_mode

            detection = detect_cluster_mode(cluster)
            progress(f"proxy: {detection}")
            check_mode(config, detection, progress)
    else:
        kubeconfig = create(config, progress)
        cluster = KindCluster(config, kubeconfig)
    cluster.start_side_containers(progress)
    return cluster


def down(config: SuiteConfig, progress: Progress = lambda _m: None) -> None:
    """Delete the cluster, this cluster's leftover side containers, and cloud-provider-kind once no kind cluster is left."""
    kindsetup_hooks.before_prereqs()
    for tool in ("docker", "kind"):
        require_tool(tool)
    if config.name in existing_clusters():
        _run(progress, ["kind", "delete", "cluster", "--name", config.name], 300)
    leftovers = run_tool(["docker", "ps", "-aq", "--filter", f"label={CLUSTER_LABEL}={config.name}"], check=False).stdout.split()
    if leftovers:
        _run(progress, ["docker", "rm", "-f", *leftovers], 120)
    if not existing_clusters():
        if run_tool(["docker", "ps", "-aq", "--filter", f"name=^{CLOUD_PROVIDER_CONTAINER}$"], check=False).stdout.strip():
            _run(progress, ["docker", "rm", "-f", CLOUD_PROVIDER_CONTAINER], 120)
    kindsetup_hooks.stop_relay(config.name)
    shutil.rmtree(state_dir(config), ignore_errors=True)


def status(config: SuiteConfig) -> dict:
    """Whether the cluster exists, its nodes, what proxysuite recorded at creation, and the side containers."""
    out: dict = {"provider": "kind", "name": config.name, "state_dir": str(state_dir(config))}
    kindsetup_hooks.before_prereqs()
    try:
        for tool in ("docker", "kind"):
            require_tool(tool)
        docker_engine_version()
    except SuiteError as exc:
        return {**out, "exists": False, "error": str(exc)}
    exists = config.name in existing_clusters()
    out["exists"] = exists
    if exists:
        out["nodes"] = run_tool(["kind", "get", "nodes", "--name", config.name]).stdout.split()
        out["kubeconfig"] = str(state_dir(config) / "kubeconfig")
    out["record"] = _read_record(config)
    out["cloud_provider_kind"] = bool(run_tool(["docker", "ps", "-q", "--filter", f"name=^{CLOUD_PROVIDER_CONTAINER}$"],
                                               check=False).stdout.strip())
    return out


class KindProvider(Provider):
    name = "kind"
    description = "Kubernetes in Docker: real nodes as containers, every proxy mode (needs a Docker engine)"
    janitor_note = ("kind clusters are deleted by the session that created them; `proxysuite cluster list` shows any left, "
                    "`proxysuite cluster down --provider kind --cluster-name NAME` removes one, and the external client "
                    "container is removed by the testcontainers reaper")

    def check_prereqs(self, config: SuiteConfig) -> None:
        check_prereqs(config)

    def up(self, config: SuiteConfig, progress: Progress = lambda _m: None, owner_pid: int | None = None) -> KindCluster:
        return up(config, progress, owner_pid)

    def down(self, config: SuiteConfig, progress: Progress = lambda _m: None) -> None:
        down(config, progress)

    def status(self, config: SuiteConfig) -> dict:
        return status(config)

    def janitor(self, progress: Progress = lambda _m: None, everything: bool = False) -> dict:
        """The suite's own Docker engine (``proxysuite kind setup-engine``): what a dead one left; with
        ``everything`` the running one too, with its containers, networks and images."""
        from .kindsetup import engine

        result = engine.janitor(progress, everything)
        return result if result.get("engine") else {"skipped": self.janitor_note}

    def clusters(self) -> list[ClusterEntry]:
        """Every kind cluster on this Docker engine, with the mode proxysuite recorded when it made it."""
        kindsetup_hooks.before_prereqs()
        for tool in ("docker", "kind"):
            require_tool(tool)
        docker_engine_version()
        out = []
        for name in existing_clusters():
            cfg = SuiteConfig(provider="kind", cluster_name=name)
            record = _read_record(cfg) or {}
            running = run_tool(["docker", "ps", "-q", "--filter", f"label=io.x-k8s.kind.cluster={name}"], check=False).stdout.split()
            sd = state_dir(cfg)
            out.append(ClusterEntry(provider="kind", name=name, mode=record.get("mode"), alive=bool(running),
                                    kubeconfig=str(sd / "kubeconfig") if (sd / "kubeconfig").exists() else None,
                                    note="" if record else "not made by proxysuite (mode detected on reuse)"))
        return out

    def images(self, mode: str, k8s_version: str, proxy_manifest: str | None = None) -> list[images.ImageRef]:
        return images.kind_images(mode, k8s_version, proxy_manifest)

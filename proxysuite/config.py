"""The suite's configuration: one frozen dataclass, filled from CLI flags or pytest options.

The same option table feeds ``pytest --provider …`` (see ``plugin.py``) and
``proxysuite cluster up --provider …`` (see ``cli.py``), so a flag means the
same thing everywhere and is documented once.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .cluster.base import PROVIDERS as PROVIDER_REGISTRY
from .errors import SuiteError
from .ipfamily import CHOICES as IP_FAMILIES, check_choice as check_ip_family
from .modes import MODES, get_mode

PROVIDERS = tuple(PROVIDER_REGISTRY)
DEFAULT_K8S_VERSION = "v1.37.2"


def default_state_root() -> Path:
    """Where clusters keep their state (kubeconfigs, certs, PIDs, logs)."""
    return Path(os.environ.get("PROXYSUITE_STATE_DIR", "/var/lib/proxysuite"))


def default_cache_root() -> Path:
    """Where built components are cached, keyed by version."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("PROXYSUITE_CACHE_DIR", os.path.join(base, "proxysuite")))


@dataclass(frozen=True)
class Option:
    """One user-facing option, shared by the CLI and the pytest plugin."""

    name: str
    help: str
    default: object = None
    choices: tuple[str, ...] | None = None
    type: type = str
    flag: bool = False

    def help_text(self) -> str:
        """The help line with its default, unless the help already says what the default is."""
        if self.flag or self.default is None or "default" in self.help:
            return self.help
        return f"{self.help} (default: {self.default})"


OPTIONS: tuple[Option, ...] = (
    Option("provider", "where the cluster runs: local (netns, no Docker), kind, or existing (kubeconfig)", "local", PROVIDERS),
    Option("mode", f"proxy under test: {', '.join(MODES)}", "iptables"),
    Option("nodes", "number of worker nodes (local and kind)", 2, type=int),
    Option("k8s-version", "Kubernetes version of the components (local builds it; kind picks the node image)", DEFAULT_K8S_VERSION),
    Option("proxy-cmd", "custom proxy command template run on every local node; placeholders "
           "{kubeconfig} {node} {node_ip} {cluster_cidr} {service_cidr} {metrics_addr} {healthz_addr}"),
    Option("proxy-health", "--mode custom: how the proxy shows it is ready: kube-proxy (serves kube-proxy's "
           "/healthz on {healthz_addr} and /metrics, /proxyMode on {metrics_addr}: bring-up waits for /healthz and "
           "the proxy-health checks judge them), none (bring-up waits for nothing; the proxy-health checks skip), or "
           "exec:COMMAND (bring-up waits until COMMAND, run in each node's namespace with --proxy-cmd's placeholders, "
           "exits 0; the proxy-health checks skip)", "kube-proxy"),
    Option("proxy-flush", "--mode custom: a shell command, run in a node's network namespace, that removes the proxy's "
           "rules (or tables, maps) and prints how many are left, 0 when it worked; the rules-flushed and "
           "across-rules-flush checks run with it (unset: they skip for a custom proxy, which the suite cannot flush)"),
    Option("proxy-manifest", "YAML applied on a kind custom.yaml cluster to install your proxy (DaemonSet)"),
    Option("cilium-variant", "kind + --mode cilium: Helm values variant default|maglev|dsr, or a values file "
           "(default: $PROXYSUITE_CILIUM_VARIANT or default)"),
    Option("kind-node-image", "kind: node image to use instead of the pinned one for --k8s-version; "
           "local: the offline image of `proxysuite kind build-node-image` (built when missing), which is also "
           "used when the pinned image cannot be pulled"),
    Option("kubeconfig", "kubeconfig of an existing cluster (--provider existing)", os.environ.get("KUBECONFIG")),
    Option("context", "kubeconfig context (--provider existing)"),
    Option("cluster-name", "name of the cluster to create or reuse (default: proxysuite-<mode>)"),
    Option("keep-cluster", "leave the cluster running after the test session", False, type=bool, flag=True),
    Option("api-port", "loopback port of the local apiserver relay (0 = pick a free port)", 0, type=int),
    Option("reports-dir", "where reports, matrices and forensics are written", "reports"),
    Option("iptables-backend", "local, --mode iptables: the iptables backend kube-proxy uses, nft or legacy (its node's "
           "kube-proxy gets the matching iptables-nft / iptables-legacy tools first on its PATH; the host's "
           "alternatives are never changed); default: whatever `iptables` is on this host", None, ("nft", "legacy")),
    Option("ip-family", "IP families of the cluster: ipv4 (single-stack), ipv6 (single-stack) or dual (dual-stack, IPv4 "
           "primary). local: addresses, Service CIDRs, pods and kube-proxy of those families; kind: networking.ipFamily; "
           "existing: rows of a family the cluster does not serve skip. On a cluster that is not single-stack IPv4 the "
           "family-independent rows run once per family (ids end in /ipv4, /ipv6)", "ipv4", IP_FAMILIES),
)


@dataclass(frozen=True)
class SuiteConfig:
    provider: str = "local"
    """local | kind | existing."""
    mode: str = "iptables"
    """Proxy mode under test, see ``proxysuite.modes``."""
    nodes: int = 2
    """Worker nodes (the local provider runs the control plane in its own namespace, not on a node)."""
    k8s_version: str = DEFAULT_K8S_VERSION
    proxy_cmd: str | None = None
    proxy_health: str = "kube-proxy"
    """How the proxy under test shows readiness: ``kube-proxy``, ``none`` or ``exec:COMMAND`` (custom mode)."""
    proxy_flush: str | None = None
    """A custom proxy's flush (``sh -c`` in a node's namespace, prints what is left); see :func:`proxysuite.modes.flush_command`."""
    proxy_manifest: str | None = None
    cilium_variant: str | None = None
    kind_node_image: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    cluster_name: str | None = None
    keep_cluster: bool = False
    api_port: int = 0
    reports_dir: str = "reports"
    iptables_backend: str | None = None
    """``nft`` | ``legacy`` | None (the host's ``iptables``): which iptables tools the local kube-proxy execs."""
    ip_family: str = "ipv4"
    """``ipv4`` | ``ipv6`` | ``dual`` (see :mod:`proxysuite.ipfamily`)."""
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    """Short id stamped on everything this run creates (namespaces, processes, files)."""

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise SuiteError(f"unknown provider {self.provider!r}", f"use --provider one of {', '.join(PROVIDERS)}")
        get_mode(self.mode)
        check_ip_family(self.ip_family)
        if not 1 <= self.nodes <= 20:
            raise SuiteError(f"--nodes {self.nodes} is out of range", "use 1 to 20 nodes")
        if self.mode == "custom" and self.provider == "local" and not self.proxy_cmd:
            raise SuiteError("--mode custom on the local provider needs the proxy's command", "pass --proxy-cmd 'TEMPLATE'")
        if self.proxy_health != "kube-proxy" and self.mode != "custom":
            raise SuiteError(f"--proxy-health {self.proxy_health} describes a custom proxy; {self.mode} is judged as itself",
                             "drop --proxy-health, or add --mode custom")
        if not (self.proxy_health in ("kube-proxy", "none") or
                (self.proxy_health.startswith("exec:") and self.proxy_health[5:].strip())):
            raise SuiteError(f"--proxy-health {self.proxy_health!r} is not one of kube-proxy, none, exec:COMMAND",
                             "pass --proxy-health kube-proxy|none|exec:'my-check --node {node}'")
        if self.iptables_backend is not None:
            if self.iptables_backend not in ("nft", "legacy"):
                raise SuiteError(f"--iptables-backend {self.iptables_backend!r} is not nft or legacy", "pass --iptables-backend nft|legacy")
            if self.provider != "local" or self.mode != "iptables":
                raise SuiteError(f"--iptables-backend chooses the tools of the local provider's kube-proxy in iptables mode, "
                                 f"not --provider {self.provider} --mode {self.mode}", "drop --iptables-backend, or use --provider local --mode iptables")
        if self.proxy_flush is not None and (self.mode != "custom" or not self.proxy_flush.strip()):
            raise SuiteError(f"--proxy-flush is how a custom proxy's rules are flushed; {self.mode} has its own" if self.mode != "custom"
                             else "--proxy-flush is empty", "drop --proxy-flush, or pass --mode custom --proxy-flush 'COMMAND'")
        if self.proxy_cmd and self.mode != "custom":
            raise SuiteError("--proxy-cmd replaces kube-proxy, so it only goes with --mode custom", "add --mode custom")

    @property
    def name(self) -> str:
        return self.cluster_name or f"proxysuite-{self.mode}"

    def with_(self, **changes) -> "SuiteConfig":
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: dict) -> "SuiteConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k.replace("-", "_"): v for k, v in values.items() if k.replace("-", "_") in known and v is not None})

"""Proxy modes the suite knows, and which provider can run each.

A mode names the Service proxy under test. ``kube-proxy`` modes differ in the
datapath they program; ``cilium`` replaces kube-proxy with eBPF; ``custom`` is
any implementation the user brings (``--proxy-cmd`` on the local provider,
``--proxy-manifest`` on kind).

Each mode carries a :class:`Datapath`: how to read, flush and measure what the
proxy programmed, and which endpoints and metrics it serves. Forensics, the
disruptive checks, the perf sweep and mode detection read it from here.

Adding a mode: one ``Mode(...)`` line in :data:`MODES` with its datapath record;
then the provider(s) that can run it (``check_prereqs`` and how they start it)
and its expectations in the conformance catalogue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import SuiteError, Unsupported


KUBE_PROXY_METRICS_PORT = 10249
"""kube-proxy's ``--metrics-bind-address`` port: ``/metrics``, ``/proxyMode``, ``/configz`` (on loopback by default)."""
KUBE_PROXY_HEALTHZ_PORT = 10256
"""kube-proxy's ``--healthz-bind-address`` port: ``/healthz``, ``/livez``."""

CILIUM_METRICS_PORT = 9962
"""The Cilium agent's Prometheus port (chart ``prometheus.port``; the suite's values turn it on)."""

KUBE_PROXY_SYNC_METRICS = ("kubeproxy_sync_proxy_rules_duration_seconds", "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                           "kubeproxy_network_programming_duration_seconds")
"""Metrics every kube-proxy mode exposes from its first sync."""


@dataclass(frozen=True)
class Datapath:
    """What a mode programs and how the suite looks at it. Commands run on a node through ``Cluster.node_exec``;
    an empty command means the suite knows none for this mode (the caller skips with that reason)."""

    dump: tuple[str, ...] = ()
    """Prints the rules the proxy programmed (forensics, ``Cluster.proxy_rules``)."""
    flush: tuple[str, ...] = ()
    """Removes the proxy's rules behind its back (the disruptive ``rules-flushed`` check), then prints how many of
    its rules (iptables) or tables (nftables) are left, in the same shell, so the evidence that the flush happened
    is taken before the proxy can restore anything. A flush that fails makes the command fail."""
    size: tuple[str, ...] = ()
    """Prints the proxy's own ruleset, one rule a line; its line count is the perf sweep's ruleset size."""
    metrics_port: int = KUBE_PROXY_METRICS_PORT
    """Where the suite reads the proxy's metrics and ``/proxyMode`` (kube-proxy's port; other proxies may not serve it)."""
    healthz_port: int = KUBE_PROXY_HEALTHZ_PORT
    """Where the suite reads the proxy's ``/healthz`` and ``/livez`` (kube-proxy's port)."""
    sync_metrics: tuple[str, ...] = ()
    """Metrics the proxy exposes from its first sync."""
    mode_metrics: tuple[str, ...] = ()
    """Metrics only this mode has, present from the start (nftables' failure counters appear only after a failure)."""

    def describe(self, argv: tuple[str, ...]) -> str:
        """A command as a user would type it (``sh -c`` unwrapped)."""
        return argv[2] if argv[:2] == ("sh", "-c") else " ".join(argv)


@dataclass(frozen=True)
class Mode:
    name: str
    """The value of ``--mode``."""
    family: str
    """``kube-proxy``, ``cilium`` or ``custom``."""
    description: str
    datapath: Datapath = field(default_factory=Datapath)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("iptables", "kube-proxy", "kube-proxy --proxy-mode=iptables (the Linux default)", Datapath(
            dump=("iptables-save",),
            flush=("sh", "-c", "iptables-save | grep -v KUBE | iptables-restore && { iptables-save | grep -c '^-A KUBE-'; true; }"),
            size=("iptables-save",),
            sync_metrics=KUBE_PROXY_SYNC_METRICS, mode_metrics=("kubeproxy_sync_proxy_rules_iptables_total",))),
        Mode("nftables", "kube-proxy", "kube-proxy --proxy-mode=nftables (GA since 1.33)", Datapath(
            dump=("nft", "list", "ruleset"),
            flush=("sh", "-c", "nft delete table ip kube-proxy && { nft delete table ip6 kube-proxy 2>/dev/null; true; } "
                               "&& { nft list tables | grep -c kube-proxy; true; }"),
            size=("nft", "list", "table", "ip", "kube-proxy"),
            sync_metrics=KUBE_PROXY_SYNC_METRICS)),
        Mode("ipvs", "kube-proxy", "kube-proxy --proxy-mode=ipvs (deprecated since 1.35; needs CONFIG_IP_VS)", Datapath(
            dump=("sh", "-c", "iptables-save; echo '# ipvsadm -Ln'; ipvsadm -Ln 2>&1 || true"),
            sync_metrics=KUBE_PROXY_SYNC_METRICS)),
        Mode("cilium", "cilium", "Cilium eBPF kube-proxy replacement (kind only)", Datapath(
            metrics_port=CILIUM_METRICS_PORT, sync_metrics=("cilium_reconciler_duration_seconds",))),
        Mode("custom", "custom", "a proxy you bring: --proxy-cmd (local) or --proxy-manifest (kind)"),
    )
}


def flush_command(mode: str, custom: str | None = None) -> tuple[str, ...] | None:
    """What removes the proxy's rules on a node and prints how many are left: the mode's own flush, or for a custom
    proxy the ``--proxy-flush`` command its author gave (None: the flush checks skip)."""
    if mode == "custom":
        return ("sh", "-c", custom) if custom else None
    return get_mode(mode).datapath.flush or None


def get_mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise SuiteError(
            f"unknown proxy mode {name!r}", f"use --mode one of {', '.join(MODES)}"
        ) from None


def kernel_has_ipvs() -> bool:
    """True when the running kernel exposes IPVS (built in or the module loaded/loadable)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    release = os.uname().release
    for base in (f"/lib/modules/{release}", f"/usr/lib/modules/{release}"):
        dep = os.path.join(base, "modules.dep")
        if os.path.exists(dep):
            with open(dep, encoding="utf-8", errors="replace") as fh:
                if any("/ip_vs.ko" in line for line in fh):
                    return True
    return False


def require_ipvs_kernel() -> None:
    if not kernel_has_ipvs():
        raise Unsupported(
            f"IPVS mode needs CONFIG_IP_VS, which kernel {os.uname().release} lacks (/proc/net/ip_vs is absent)",
            "run --mode ipvs on kind on a kernel with IPVS, or use --mode nftables",
        )

"""Proxy modes the suite knows, and which provider can run each.

A mode names the Service proxy under test. ``kube-proxy`` modes differ in the
datapath they program; ``cilium`` replaces kube-proxy with eBPF; ``custom`` is
any implementation the user brings (``--proxy-cmd`` on the local provider,
``--proxy-manifest`` on kind).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import SuiteError, Unsupported


@dataclass(frozen=True)
class Mode:
    name: str
    """The value of ``--mode``."""
    family: str
    """``kube-proxy``, ``cilium`` or ``custom``."""
    description: str


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("iptables", "kube-proxy", "kube-proxy --proxy-mode=iptables (the Linux default)"),
        Mode("nftables", "kube-proxy", "kube-proxy --proxy-mode=nftables (GA since 1.33)"),
        Mode("ipvs", "kube-proxy", "kube-proxy --proxy-mode=ipvs (deprecated since 1.35; needs CONFIG_IP_VS)"),
        Mode("cilium", "cilium", "Cilium eBPF kube-proxy replacement (kind only)"),
        Mode("custom", "custom", "a proxy you bring: --proxy-cmd (local) or --proxy-manifest (kind)"),
    )
}


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

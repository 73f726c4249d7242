"""Which Service proxy runs on a cluster, and in which mode.

Used by the ``existing`` provider (where the user did not build the cluster)
and by ``kind`` when it reuses a cluster it has no record of. Evidence is
tried from the most to the least direct:

1. **Cilium kube-proxy replacement**: the agent's own ``cilium-dbg status``
   (``KubeProxyReplacement: True``), else the ``kube-system/cilium-config``
   ConfigMap (``kube-proxy-replacement: "true"``). The ConfigMap is only the
   declared state (``bpf-lb-sock: "false"`` there does not mean socket-LB is
   off under full replacement), so the status answer wins when both exist.
2. **kube-proxy's own answer**: ``GET /proxyMode`` on ``127.0.0.1:10249`` from
   the node (``iptables``, ``ipvs``, ``nftables``; ``kernelspace`` on Windows).
3. **kube-proxy's ConfigMap** ``kube-system/kube-proxy`` (kubeadm's
   ``config.conf``): ``mode: ""`` means the platform default, iptables on
   Linux in every release up to 1.37.

The parsers are pure functions over the text each source returns, so they
are tested on real answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import yaml

KUBE_PROXY_MODES = ("iptables", "ipvs", "nftables", "kernelspace")
LINUX_DEFAULT_MODE = "iptables"


@dataclass
class Detection:
    mode: str | None
    """``iptables``, ``ipvs``, ``nftables``, ``cilium``, or None when nothing answered."""
    source: str
    """Where the answer came from, e.g. ``kube-proxy /proxyMode on kind-worker``."""
    evidence: str = ""
    """The raw text (trimmed) the answer was read from."""
    details: dict = field(default_factory=dict)
    """Mode specifics, e.g. Cilium's ``lb_mode`` (snat/dsr/hybrid), ``lb_algorithm`` (random/maglev), ``socket_lb``."""
    tried: list[str] = field(default_factory=list)
    """Each source tried before this one and why it gave no answer."""

    def __str__(self) -> str:
        if self.mode is None:
            return "proxy mode unknown (" + "; ".join(self.tried) + ")"
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.details.items()))
        return f"{self.mode} (from {self.source}{'; ' + extra if extra else ''})"


def parse_proxy_mode(body: str) -> str:
    """Normalise kube-proxy's ``/proxyMode`` answer; ValueError for anything that is not a mode."""
    text = body.strip().lower()
    if text not in KUBE_PROXY_MODES:
        raise ValueError(f"not a kube-proxy mode: {body.strip()[:80]!r}")
    return text


def mode_from_kube_proxy_config(text: str) -> str:
    """The mode a ``KubeProxyConfiguration`` document (the ConfigMap's ``config.conf``) selects."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ValueError("kube-proxy config is not a mapping")
    mode = str(doc.get("mode") or "").strip().lower()
    if not mode:
        return LINUX_DEFAULT_MODE
    if mode not in KUBE_PROXY_MODES:
        raise ValueError(f"kube-proxy config names an unknown mode {mode!r}")
    return mode


def kube_proxy_config_text(configmap: dict) -> str:
    """The KubeProxyConfiguration text from a ``kube-system/kube-proxy`` ConfigMap object (kubeadm calls the key ``config.conf``)."""
    data = configmap.get("data") or {}
    for key in ("config.conf", "config.yaml", "kube-proxy-config.yaml", "config"):
        if key in data:
            return data[key]
    for value in data.values():
        if "KubeProxyConfiguration" in value:
            return value
    raise ValueError(f"ConfigMap has no KubeProxyConfiguration (keys: {', '.join(sorted(data)) or 'none'})")


_TRUE = ("true", "strict", "enabled")


def cilium_from_config(data: dict) -> dict:
    """Facts from the ``kube-system/cilium-config`` ConfigMap data: ``kpr`` plus the declared LB settings."""
    kpr = str(data.get("kube-proxy-replacement", "")).strip().lower()
    out: dict = {"kpr": kpr in _TRUE}
    if data.get("bpf-lb-mode"):
        out["lb_mode"] = str(data["bpf-lb-mode"]).lower()
    if data.get("bpf-lb-algorithm"):
        out["lb_algorithm"] = str(data["bpf-lb-algorithm"]).lower()
    if data.get("bpf-lb-dsr-dispatch"):
        out["dsr_dispatch"] = str(data["bpf-lb-dsr-dispatch"]).lower()
    return out


_STATUS_KEYS = {
    "socket lb": "socket_lb",
    "socket lb coverage": "socket_lb_coverage",
    "mode": "lb_mode",
    "backend selection": "lb_algorithm",
    "session affinity": "session_affinity",
    "xdp acceleration": "xdp",
    "protocols": "protocols",
}


def cilium_from_status(text: str) -> dict:
    """Facts from ``cilium-dbg status --verbose``: ``kpr`` and the KubeProxyReplacement Details block."""
    out: dict = {}
    m = re.search(r"^KubeProxyReplacement:\s*(\S+)", text, re.M)
    if not m:
        raise ValueError("no KubeProxyReplacement line in cilium status output")
    out["kpr"] = m.group(1).strip().lower() in _TRUE
    block = re.search(r"^KubeProxyReplacement Details:\n((?:[ \t]+.*\n?)+)", text, re.M)
    if block:
        for line in block.group(1).splitlines():
            key, sep, value = line.strip().partition(":")
            name = _STATUS_KEYS.get(key.strip().lower())
            if sep and name and value.strip():
                value = value.strip()
                if name in ("socket_lb", "session_affinity"):
                    out[name] = value.lower().startswith("enabled")
                else:
                    out[name] = value.lower()
    return out


def detect(*, get_configmap: Callable[[str, str], dict | None],
           cilium_status: Callable[[], str | None] | None = None,
           proxy_mode_answers: Callable[[], tuple[str, str] | None] | None = None) -> Detection:
    """Decide the proxy mode from the sources above.

    :param get_configmap: ``(namespace, name) -> ConfigMap object`` or None when absent.
    :param cilium_status: returns ``cilium-dbg status --verbose`` text from an agent, or None (no agent / no exec right).
    :param proxy_mode_answers: returns ``(node, body)`` of ``GET 127.0.0.1:10249/proxyMode`` from a node, or None.
    """
    tried: list[str] = []

    cilium_cm = get_configmap("kube-system", "cilium-config")
    if cilium_cm is not None:
        declared = cilium_from_config(cilium_cm.get("data") or {})
        status_text = cilium_status() if cilium_status else None
        if status_text:
            try:
                facts = cilium_from_status(status_text)
                if facts.get("kpr"):
                    return Detection("cilium", "cilium-dbg status", _trim(status_text), {**declared, **facts, "kpr": True}, tried)
                tried.append("cilium-dbg status: KubeProxyReplacement is off (Cilium is only the CNI)")
            except ValueError as exc:
                tried.append(f"cilium-dbg status: {exc}")
        elif declared.get("kpr"):
            return Detection("cilium", "ConfigMap kube-system/cilium-config", f"kube-proxy-replacement: {(cilium_cm.get('data') or {}).get('kube-proxy-replacement')}", declared, tried)
        else:
            tried.append("ConfigMap kube-system/cilium-config: kube-proxy-replacement is not true")
    else:
        tried.append("no ConfigMap kube-system/cilium-config (no Cilium)")

    if proxy_mode_answers is not None:
        try:
            answer = proxy_mode_answers()
        except Exception as exc:  # noqa: BLE001 - any failure only means this source gave no answer
            answer = None
            tried.append(f"kube-proxy /proxyMode: {exc}")
        if answer is not None:
            node, body = answer
            try:
                return Detection(parse_proxy_mode(body), f"kube-proxy /proxyMode on {node}", body.strip(), {}, tried)
            except ValueError as exc:
                tried.append(f"kube-proxy /proxyMode on {node}: {exc}")

    kp_cm = get_configmap("kube-system", "kube-proxy")
    if kp_cm is not None:
        try:
            text = kube_proxy_config_text(kp_cm)
            mode = mode_from_kube_proxy_config(text)
            details = {} if re.search(r"^mode:\s*\S", text, re.M) and not re.search(r"^mode:\s*(\"\"|'')\s*$", text, re.M) else {"default": True}
            return Detection(mode, "ConfigMap kube-system/kube-proxy", _trim(text), details, tried)
        except ValueError as exc:
            tried.append(f"ConfigMap kube-system/kube-proxy: {exc}")
    else:
        tried.append("no ConfigMap kube-system/kube-proxy")
    return Detection(None, "", "", {}, tried)


def _trim(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"

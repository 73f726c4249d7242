"""Proxy health: kube-proxy's own endpoints on every node.

Release: upstream e2e ("should check kube-proxy urls")
Testname: Proxy, health and metrics endpoints
Description: On every node the proxy's healthz endpoint (:10256/healthz) SHOULD
answer 200 with a JSON body carrying lastUpdated, /livez SHOULD answer 200, the
metrics endpoint (:10249/metrics) SHOULD expose the sync metrics that every
kube-proxy mode has, and /proxyMode SHOULD name the mode under test.

A proxy that is not kube-proxy says whether it serves these endpoints: a custom
proxy with ``--proxy-health kube-proxy`` (the default) is judged like kube-proxy
(its /proxyMode may name any mode); with ``none`` or ``exec:`` the checks skip
with that reason. Every provider judges them the same way: a proxy that cannot be
reached on these ports fails, whether the provider saw a refused connection or a
failed request from a host-network pod.

ipvs serves the same endpoints as the other kube-proxy modes (cmd/kube-proxy/app/server.go, the shared
pkg/proxy/healthcheck; pkg/proxy/metrics RegisterMetrics registers the sync metrics for every mode).
Cilium's kube-proxy replacement serves only /healthz, and only where the chart sets
``kubeProxyReplacementHealthzBindAddr`` (the project's cilium-values/default.yaml sets 0.0.0.0:10256):
its health server registers /healthz alone (daemon/healthz/kube_proxy_healthz.go, Cilium v1.20.2), and
nothing listens on :10249. Those checks skip for Cilium with that reason (:data:`NOT_SERVED`).
"""

from __future__ import annotations

import json

import pytest

from proxysuite.conformance import EXPECTED, check
from proxysuite.errors import ProbeError
from proxysuite.modes import KUBE_PROXY_HEALTHZ_PORT as HEALTHZ_PORT
from proxysuite.modes import KUBE_PROXY_METRICS_PORT as METRICS_PORT
from proxysuite.modes import KUBE_PROXY_SYNC_METRICS, MODES, get_mode


def _wanted_metrics(mode: str) -> list[str]:
    """kube-proxy's sync metrics and the mode's own (a custom proxy that serves kube-proxy's endpoints: the sync ones)."""
    dp = get_mode(mode).datapath
    return list(dp.sync_metrics or KUBE_PROXY_SYNC_METRICS) + list(dp.mode_metrics)


_CILIUM_HEALTHZ_ONLY = ("its kube-proxy replacement serves only /healthz on kubeProxyReplacementHealthzBindAddr "
                        "(daemon/healthz/kube_proxy_healthz.go; kubeproxy-free.rst, kube-proxy Replacement Health Check "
                        "server)")
NOT_SERVED = {
    # mode: {check: why the mode does not serve this kube-proxy endpoint}
    "cilium": {
        "livez": "Cilium does not serve kube-proxy's /livez: " + _CILIUM_HEALTHZ_ONLY,
        "metrics": "Cilium does not serve kube-proxy's :10249/metrics (nothing listens on 10249; its own metrics are "
                   "cilium_* on the agent's Prometheus port): " + _CILIUM_HEALTHZ_ONLY,
        "proxy-mode": "Cilium does not serve kube-proxy's :10249/proxyMode (written by kube-proxy's serveMetrics, "
                      "cmd/kube-proxy/app/server.go): " + _CILIUM_HEALTHZ_ONLY,
    },
}
"""kube-proxy endpoints a mode declares it does not serve: the check skips with the reason."""
HEALTHZ_SOURCE = {
    "ipvs": "ipvs: the shared ProxyHealthServer (pkg/proxy/healthcheck), updated by the ipvs proxier's syncProxyRules",
    "cilium": "cilium: 200 with lastUpdated from daemon/healthz/kube_proxy_healthz.go, served only because the chart "
              "sets kubeProxyReplacementHealthzBindAddr (cilium-values/default.yaml; chart default: not served)",
}
"""Where /healthz comes from in the modes that are not iptables/nftables (recorded in the matrix notes)."""


def _node(cluster, index: int, check: str) -> str:
    why = NOT_SERVED.get(cluster.mode, {}).get(check)
    if why:
        pytest.skip(why)
    ok, why = cluster.features().require("proxy_health_endpoints")
    if not ok:
        pytest.skip(why)
    nodes = [n.name for n in cluster.nodes()]
    if index >= len(nodes):
        pytest.skip(f"the cluster has {len(nodes)} node(s); no node #{index + 1}")
    return nodes[index]


def _get(cluster, node, port, path):
    """(status, body); status None when nothing answered (every provider raises ProbeError then)."""
    try:
        return cluster.proxy_http(node, port, path)
    except ProbeError as exc:
        return None, f"{type(exc).__name__}: {exc}"


@check("proxy-health", "healthz")
@pytest.mark.parametrize("index", [0, 1], ids=["node-1", "node-2"])
def test_healthz(index, cluster, conformance):
    node = _node(cluster, index, "healthz")
    if cluster.mode in HEALTHZ_SOURCE:
        conformance.record.notes.append(HEALTHZ_SOURCE[cluster.mode])
    status, body = _get(cluster, node, HEALTHZ_PORT, "/healthz")
    try:
        last = json.loads(body).get("lastUpdated")
    except (ValueError, AttributeError):
        last = None
    conformance.judge_value(f"{node} 127.0.0.1:{HEALTHZ_PORT}/healthz", EXPECTED, "200 with lastUpdated",
                            f"{status}" + (" with lastUpdated" if last else " without lastUpdated"), status == 200 and bool(last), body[:300])


@check("proxy-health", "livez")
@pytest.mark.parametrize("index", [0, 1], ids=["node-1", "node-2"])
def test_livez(index, cluster, conformance):
    node = _node(cluster, index, "livez")
    status, body = _get(cluster, node, HEALTHZ_PORT, "/livez")
    conformance.judge_value(f"{node} 127.0.0.1:{HEALTHZ_PORT}/livez", EXPECTED, "200", str(status), status == 200, body[:300])


@check("proxy-health", "metrics")
@pytest.mark.parametrize("index", [0, 1], ids=["node-1", "node-2"])
def test_metrics(index, cluster, conformance):
    node = _node(cluster, index, "metrics")
    status, body = _get(cluster, node, METRICS_PORT, "/metrics")
    wanted = _wanted_metrics(cluster.mode)
    missing = [m for m in wanted if m not in (body or "")]
    conformance.judge_value(f"{node} 127.0.0.1:{METRICS_PORT}/metrics", EXPECTED, "200 exposing " + ", ".join(wanted),
                            f"{status}" + (f", missing {missing}" if missing else ", all present"), status == 200 and not missing)


@check("proxy-health", "proxy-mode")
@pytest.mark.parametrize("index", [0, 1], ids=["node-1", "node-2"])
def test_proxy_mode(index, cluster, conformance):
    node = _node(cluster, index, "proxy-mode")
    status, body = _get(cluster, node, METRICS_PORT, "/proxyMode")
    answer = (body or "").strip()
    if cluster.mode == "custom":
        # A custom proxy that serves kube-proxy's endpoints names whichever datapath it programs.
        wanted, ok = "200 naming a mode (" + "|".join(MODES) + ")", answer in MODES
    else:
        wanted, ok = f"200 {cluster.mode}", answer == cluster.mode
    conformance.judge_value(f"{node} 127.0.0.1:{METRICS_PORT}/proxyMode", EXPECTED, wanted,
                            f"{status} {answer[:40]}", status == 200 and ok)

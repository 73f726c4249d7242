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
"""

from __future__ import annotations

import json

import pytest

from proxysuite.conformance import EXPECTED, check
from proxysuite.errors import ProbeError
from proxysuite.modes import MODES

HEALTHZ_PORT = 10256
METRICS_PORT = 10249
SYNC_METRICS = ("kubeproxy_sync_proxy_rules_duration_seconds", "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                "kubeproxy_network_programming_duration_seconds")
MODE_METRICS = {"iptables": "kubeproxy_sync_proxy_rules_iptables_total"}
"""Mode-specific metrics that exist from the start. nftables' failure counters
(``…_nftables_sync_failures_total``) only appear after a failure in v1.37, so none is required there."""


def _node(cluster, index: int) -> str:
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
    node = _node(cluster, index)
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
    node = _node(cluster, index)
    status, body = _get(cluster, node, HEALTHZ_PORT, "/livez")
    conformance.judge_value(f"{node} 127.0.0.1:{HEALTHZ_PORT}/livez", EXPECTED, "200", str(status), status == 200, body[:300])


@check("proxy-health", "metrics")
@pytest.mark.parametrize("index", [0, 1], ids=["node-1", "node-2"])
def test_metrics(index, cluster, conformance):
    node = _node(cluster, index)
    status, body = _get(cluster, node, METRICS_PORT, "/metrics")
    wanted = list(SYNC_METRICS) + ([MODE_METRICS[cluster.mode]] if cluster.mode in MODE_METRICS else [])
    missing = [m for m in wanted if m not in (body or "")]
    conformance.judge_value(f"{node} 127.0.0.1:{METRICS_PORT}/metrics", EXPECTED, "200 exposing " + ", ".join(wanted),
                            f"{status}" + (f", missing {missing}" if missing else ", all present"), status == 200 and not missing)


@check("proxy-health", "proxy-mode")
@pytest.mark.parametrize("index", [0, 1], ids=["node-1", "node-2"])
def test_proxy_mode(index, cluster, conformance):
    node = _node(cluster, index)
    status, body = _get(cluster, node, METRICS_PORT, "/proxyMode")
    answer = (body or "").strip()
    if cluster.mode == "custom":
        # A custom proxy that serves kube-proxy's endpoints names whichever datapath it programs.
        wanted, ok = "200 naming a mode (" + "|".join(MODES) + ")", answer in MODES
    else:
        wanted, ok = f"200 {cluster.mode}", answer == cluster.mode
    conformance.judge_value(f"{node} 127.0.0.1:{METRICS_PORT}/proxyMode", EXPECTED, wanted,
                            f"{status} {answer[:40]}", status == 200 and ok)

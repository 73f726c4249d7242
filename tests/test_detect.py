"""Proxy mode detection: the parsers on the texts each source returns, and the order of evidence.

The real-cluster test at the bottom asks the local provider's kube-proxy for ``/proxyMode``.
"""

from __future__ import annotations

import pytest

from proxysuite.cluster.detect import (Detection, cilium_from_config, cilium_from_status, detect, kube_proxy_config_text,
                                       mode_from_kube_proxy_config, parse_proxy_mode)

# kubeadm's kube-proxy ConfigMap as kind v0.33 writes it (trimmed to the fields that matter).
KUBEADM_CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clusterCIDR: 10.244.0.0/16
conntrack:
  maxPerCore: 0
iptables:
  minSyncPeriod: 1s
kind: KubeProxyConfiguration
metricsBindAddress: ""
mode: {mode}
nftables:
  minSyncPeriod: 1s
"""

CILIUM_STATUS_DSR_MAGLEV = """KubeProxyReplacement:    True   [eth0   172.18.0.2 (Direct Routing)]
KubeProxyReplacement Details:
  Status:                True
  Socket LB:             Enabled
  Socket LB Coverage:    Full
  Protocols:             TCP, UDP
  Devices:               eth0   172.18.0.2 (Direct Routing)
  Mode:                  DSR
    DSR Dispatch Mode:   IP Option/Extension
  Backend Selection:     Maglev (Table Size: 16381)
  Session Affinity:      Enabled
  XDP Acceleration:      Disabled
Cilium:                  Ok   1.20.5
"""


def cm(data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": data}


@pytest.mark.parametrize("body,mode", [("iptables", "iptables"), ("nftables\n", "nftables"), ("ipvs", "ipvs"),
                                       ("kernelspace", "kernelspace")])
def test_parse_proxy_mode(body, mode):
    assert parse_proxy_mode(body) == mode


@pytest.mark.parametrize("body", ["", "404 page not found", "userspace", "<html>"])
def test_parse_proxy_mode_rejects_non_modes(body):
    with pytest.raises(ValueError):
        parse_proxy_mode(body)


@pytest.mark.parametrize("mode_field,mode", [('""', "iptables"), ("iptables", "iptables"), ("nftables", "nftables"), ("ipvs", "ipvs")])
def test_kube_proxy_configmap(mode_field, mode):
    text = kube_proxy_config_text(cm({"config.conf": KUBEADM_CONFIG.format(mode=mode_field), "kubeconfig.conf": "..."}))
    assert mode_from_kube_proxy_config(text) == mode


def test_kube_proxy_configmap_without_config():
    with pytest.raises(ValueError, match="keys: kubeconfig.conf"):
        kube_proxy_config_text(cm({"kubeconfig.conf": "apiVersion: v1\nkind: Config\n"}))


def test_cilium_status_details():
    facts = cilium_from_status(CILIUM_STATUS_DSR_MAGLEV)
    assert facts["kpr"] is True and facts["socket_lb"] is True and facts["session_affinity"] is True
    assert facts["lb_mode"] == "dsr" and facts["lb_algorithm"].startswith("maglev")
    assert cilium_from_status("KubeProxyReplacement:   False\n") == {"kpr": False}
    with pytest.raises(ValueError):
        cilium_from_status("Cilium: Ok\n")


def test_cilium_config_declares_kpr():
    assert cilium_from_config({"kube-proxy-replacement": "true", "bpf-lb-mode": "dsr", "bpf-lb-algorithm": "maglev"}) == {
        "kpr": True, "lb_mode": "dsr", "lb_algorithm": "maglev"}
    assert cilium_from_config({"kube-proxy-replacement": "strict"})["kpr"] is True  # Cilium < 1.14 spelling
    assert cilium_from_config({"kube-proxy-replacement": "false"})["kpr"] is False


def configmaps(**objs):
    def get(namespace, name):
        assert namespace == "kube-system"
        return objs.get(name.replace("-", "_"))
    return get


def test_detect_prefers_cilium_status_over_its_configmap():
    d = detect(get_configmap=configmaps(cilium_config=cm({"kube-proxy-replacement": "true", "bpf-lb-sock": "false"})),
               cilium_status=lambda: CILIUM_STATUS_DSR_MAGLEV, proxy_mode_answers=lambda: pytest.fail("not asked"))
    assert d.mode == "cilium" and d.source == "cilium-dbg status" and d.details["socket_lb"] is True


def test_detect_cilium_from_configmap_when_status_is_not_available():
    d = detect(get_configmap=configmaps(cilium_config=cm({"kube-proxy-replacement": "true"})), cilium_status=lambda: None)
    assert d.mode == "cilium" and d.source == "ConfigMap kube-system/cilium-config"


def test_cilium_as_cni_only_falls_through_to_kube_proxy():
    d = detect(get_configmap=configmaps(cilium_config=cm({"kube-proxy-replacement": "false"})), cilium_status=lambda: None,
               proxy_mode_answers=lambda: ("kind-worker", "iptables"))
    assert (d.mode, d.source) == ("iptables", "kube-proxy /proxyMode on kind-worker")
    assert "kube-proxy-replacement is not true" in d.tried[0]


def test_proxy_mode_answer_beats_the_configmap():
    d = detect(get_configmap=configmaps(kube_proxy=cm({"config.conf": KUBEADM_CONFIG.format(mode='""')})),
               proxy_mode_answers=lambda: ("n1", "nftables"))
    assert d.mode == "nftables"


def test_configmap_is_the_last_resort_and_says_default():
    def unreachable():
        raise RuntimeError("connection refused")

    d = detect(get_configmap=configmaps(kube_proxy=cm({"config.conf": KUBEADM_CONFIG.format(mode='""')})),
               proxy_mode_answers=unreachable)
    assert (d.mode, d.details) == ("iptables", {"default": True})
    assert any("connection refused" in t for t in d.tried)


def test_nothing_answers():
    d = detect(get_configmap=configmaps(), proxy_mode_answers=lambda: None)
    assert d.mode is None and "no ConfigMap kube-system/kube-proxy" in str(d)
    assert isinstance(d, Detection)


# --- real answers from the local provider's kube-proxy ---------------------------------------------

@pytest.fixture(scope="module", params=["iptables", "nftables"])
def local_cluster(request):
    import os

    if os.geteuid() != 0:
        pytest.skip("the local provider needs root")
    from proxysuite.cluster.local import provider
    from proxysuite.config import SuiteConfig

    cfg = SuiteConfig(provider="local", mode=request.param, nodes=2, cluster_name=f"pstest-detect-{request.param}")
    cl = provider.up(cfg, progress=lambda m: print(f"[up] {m}"), owner_pid=os.getpid())
    yield cl
    cl.close()
    provider.down(cfg, progress=print)


@pytest.mark.live
def test_real_proxy_mode_answers_parse(local_cluster):
    for node in local_cluster.nodes():
        status, body = local_cluster.proxy_http(node.name, 10249, "/proxyMode")
        assert status == 200
        assert parse_proxy_mode(body) == local_cluster.mode


@pytest.mark.live
def test_detect_on_a_real_cluster(local_cluster):
    """The whole chain on real sources: the apiserver's ConfigMaps (none for Cilium or kube-proxy here: the local
    provider runs kube-proxy as a process) and kube-proxy's real /proxyMode answer."""
    import json

    from proxysuite.cluster.remote import Kubectl

    kubectl = Kubectl(local_cluster.kubeconfig)

    def get_configmap(namespace, name):
        proc = kubectl.run("get", "configmap", "-n", namespace, name, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    node = local_cluster.nodes()[0].name
    d = detect(get_configmap=get_configmap, cilium_status=lambda: None,
               proxy_mode_answers=lambda: (node, local_cluster.proxy_http(node, 10249, "/proxyMode")[1]))
    assert d.mode == local_cluster.mode
    assert d.source == f"kube-proxy /proxyMode on {node}"
    assert d.tried == ["no ConfigMap kube-system/cilium-config (no Cilium)"]

"""The existing provider, for real, against a local-provider cluster reached only through its kubeconfig.

The local cluster's nodes serve no kubelet API, so ``kubectl exec`` is unavailable there: the
provider must notice and use the apiserver pod-proxy transport (probe-server pods). Mode
detection runs through a hostNetwork vantage pod asking kube-proxy's real ``/proxyMode``.
The last test runs the conformance smoke (the routing matrix) with ``--provider existing``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxysuite.cluster import existing
from proxysuite.cluster.remote import RUN_LABEL, Kubectl
from proxysuite.config import SuiteConfig
from proxysuite.errors import SuiteError
from proxysuite.probes.engine import OK, ProbeRequest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.live, pytest.mark.skipif(os.geteuid() != 0, reason="the local provider (the cluster these tests use) needs root")]


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def local(request):
    from proxysuite.cluster.local import provider

    cfg = SuiteConfig(provider="local", mode=request.param, nodes=2, cluster_name=f"pstest-existing-{request.param}")
    cl = provider.up(cfg, progress=lambda m: print(f"[up] {m}"), owner_pid=os.getpid())
    yield cl
    cl.close()
    provider.down(cfg, progress=print)


def ecfg(local, **kw) -> SuiteConfig:
    base = dict(provider="existing", mode=local.mode, kubeconfig=local.kubeconfig)
    base.update(kw)
    return SuiteConfig(**base)


def test_up_detects_the_mode_through_a_host_vantage_and_cleans_up(local):
    cfg = ecfg(local)
    messages: list[str] = []
    cl = existing.up(cfg, progress=messages.append)
    try:
        assert cl.detection.mode == local.mode
        assert cl.detection.source.startswith("kube-proxy /proxyMode on node-")
        assert cl.transport() == "proxy"  # the local nodes report no kubelet endpoint
        assert [n.name for n in cl.nodes()] == [n.name for n in local.nodes()]
        # a node vantage sends real packets from the node's network namespace
        node = cl.nodes()[0]
        v = cl.node_vantage(node.name)
        assert v.source_ip == node.internal_ip
        status, body = cl.proxy_http(node.name, 10256, "/healthz")
        assert status == 200 and "lastUpdated" in body
        feats = cl.features()
        for name in ("external_client", "node_exec", "proxy_restart", "load_balancer"):
            ok, reason = feats.require(name)
            assert not ok and reason
    finally:
        cl.close()
    kubectl = Kubectl(local.kubeconfig)
    foreign = f"not-ours-{cfg.run_id}"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": foreign, "labels": {RUN_LABEL: "ffffff"}}})
    try:
        existing.down(cfg, progress=messages.append)
        left = kubectl.json("get", "namespaces", "-l", f"{RUN_LABEL}={cfg.run_id}")["items"]
        assert [i for i in left if i["status"].get("phase") != "Terminating"] == []
        assert kubectl.run("get", "namespace", foreign, check=False).returncode == 0, "down deleted another run's namespace"
    finally:
        kubectl.run("delete", "namespace", foreign, "--wait=false", check=False)


def test_client_pod_vantage_through_the_pod_proxy(local):
    """A client pod the suite made (sleep, no probe server) gets a probe companion; packets reach a real Service."""
    cfg = ecfg(local)
    cl = existing.up(cfg, progress=print)
    kubectl = cl.kubectl
    ns = f"ps-{cfg.run_id}-vantage"
    try:
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {RUN_LABEL: cfg.run_id}}})
        node = cl.nodes()[-1].name
        kubectl.apply([
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": ns, "labels": {"proxysuite.io/role": "client"}},
             "spec": {"nodeName": node, "containers": [{"name": "client", "image": cl.client_image, "command": ["sleep", "infinity"]}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo", "namespace": ns, "labels": {"app": "echo"}},
             "spec": {"nodeName": cl.nodes()[0].name,
                      "containers": [{"name": "echo", "image": cl.backend_image, "args": ["netexec", "--http-port=8080"],
                                      "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": ns},
             "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        ])
        kubectl.run("wait", "-n", ns, "--for=condition=Ready", "pod/client", "pod/echo", "--timeout=120s", timeout=150)
        svc_ip = kubectl.json("get", "service", "echo", "-n", ns)["spec"]["clusterIP"]
        v = cl.pod_vantage(ns, "client")
        assert (v.kind, v.node) == ("pod", node)
        obs = []
        for _ in range(30):  # the proxy programs the Service within a second or two
            obs = v.run([ProbeRequest(svc_ip, 80, ask="both", count=3)])
            if all(o.outcome == OK for o in obs):
                break
        assert [o.outcome for o in obs] == [OK] * 3
        assert {o.backend for o in obs} == {"echo"}
        assert {o.client_ip for o in obs} == {v.source_ip}  # no SNAT on pod → ClusterIP, as iptables/nftables do
        # a backend (agnhost, no python3) is not a vantage here: a skip with the reason, not a crash
        from proxysuite.errors import Unsupported

        with pytest.raises(Unsupported, match="no python3"):
            cl.pod_vantage(ns, "echo")
    finally:
        cl.close()
        existing.down(cfg, progress=print)


def test_wrong_mode_names_the_fix(local):
    other = "nftables" if local.mode == "iptables" else "iptables"
    cfg = ecfg(local, mode=other)
    with pytest.raises(SuiteError) as info:
        existing.up(cfg, progress=print)
    text = str(info.value)
    assert f"--mode is {other}" in text and f"pass --mode {local.mode}" in text and "\n" not in text
    existing.down(cfg, progress=print)


def test_context_gets_its_own_flattened_kubeconfig(local, tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(tmp_path))
    ctx = Kubectl(local.kubeconfig).run("config", "current-context").stdout.strip()
    cfg = ecfg(local, context=ctx)
    cl = existing.up(cfg, progress=print)
    try:
        assert cl.kubeconfig == str(tmp_path / "existing" / cfg.run_id / "kubeconfig")
        doc = json.loads(Kubectl(cl.kubeconfig).run("config", "view", "-o", "json").stdout)
        assert [c["name"] for c in doc["contexts"]] == [ctx]
        assert cl.detection.mode == local.mode
    finally:
        cl.close()
        existing.down(cfg, progress=print)
    assert not (tmp_path / "existing" / cfg.run_id / "kubeconfig").exists()


def test_status_reads_without_creating(local):
    cfg = ecfg(local)
    st = existing.status(cfg)
    assert st["reachable"] and st["mode"] is None  # no ConfigMaps to read and status never starts vantage pods
    assert "kube-proxy /proxyMode" not in st["mode_source"]
    assert Kubectl(local.kubeconfig).json("get", "namespaces", "-l", f"{RUN_LABEL}={cfg.run_id}")["items"] == []


def test_missing_kubeconfig_and_unreachable_cluster(tmp_path):
    with pytest.raises(SuiteError, match="does not exist"):
        existing.check_prereqs(SuiteConfig(provider="existing", kubeconfig=str(tmp_path / "nope")))
    bad = tmp_path / "kc"
    bad.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                               "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
                               "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
                               "users": [{"name": "x", "user": {"token": "t"}}]}))
    with pytest.raises(SuiteError) as info:
        existing.check_prereqs(SuiteConfig(provider="existing", kubeconfig=str(bad)))
    assert "is not reachable" in str(info.value) and "--context" in str(info.value) and "\n" not in str(info.value)


def test_conformance_smoke_passes_with_provider_existing(local, tmp_path):
    """The routing matrix of the conformance catalogue, run by pytest exactly as a user would, against the
    local cluster as if it were any cluster: every row passes or skips with the existing provider's reason."""
    argv = [sys.executable, "-m", "pytest", str(ROOT / "suites" / "conformance" / "test_routing.py"), "-m", "conformance",
            "--provider", "existing", "--kubeconfig", local.kubeconfig, "--mode", local.mode,
            "--reports-dir", str(tmp_path / "reports"), "-p", "no:cacheprovider", "-q", "-rs"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in out and "failed" not in out and "error" not in out.lower().split("short test summary")[-1]
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all(("existing provider" in s) or ("externalIP range" in s) for s in skipped), "\n".join(skipped)

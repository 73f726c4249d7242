"""The kind provider's exact command lines, and its errors for missing tools.

kind cannot run on this machine (no Docker engine), so these tests put the recording stand-ins
of tests/bin (kind, kubectl, helm, docker) first on PATH and compare the commands the provider
runs with the commands a user would type. The stand-ins are used for nothing else. Where the
real environment gives a real answer (no Docker engine here, no IPVS in this kernel), the tests
use it instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from proxysuite import images
from proxysuite.cluster import kind
from proxysuite.config import SuiteConfig
from proxysuite.data import KIND_CONFIGS
from proxysuite.errors import SuiteError, Unsupported
from proxysuite.probes.engine import ProbeRequest

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "tests" / "bin"
CONFIGS = KIND_CONFIGS  # the package data the provider reads, wherever proxysuite is installed

CILIUM_STATUS = """KVStore:                 Disabled
Kubernetes:              Ok   1.37 (v1.37.0) [linux/amd64]
KubeProxyReplacement:    True   [eth0   172.18.0.3 fc00:f853:ccd:e793::3 fe80::42:acff:fe12:3 (Direct Routing)]
KubeProxyReplacement Details:
  Status:                True
  Socket LB:             Enabled
  Socket LB Tracing:     Enabled
  Socket LB Coverage:    Full
  Devices:               eth0   172.18.0.3 (Direct Routing)
  Mode:                  SNAT
  Backend Selection:     Random
  Session Affinity:      Enabled
  Graceful Termination:  Enabled
  XDP Acceleration:      Disabled
  Services:
  - ClusterIP:      Enabled
  - NodePort:       Enabled (Range: 30000-32767)
Cilium:                  Ok   1.20.5 (v1.20.5-abcdef0)
"""


class Tools:
    """Drives the stand-ins: ``script`` sets their answers, ``commands`` reads what was run."""

    def __init__(self, tmp: Path):
        self.record = tmp / "record.jsonl"
        self.script_path = tmp / "script.json"
        self.state = tmp / "state"

    def script(self, rules: list[dict]) -> None:
        self.script_path.write_text(json.dumps(rules))

    def calls(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        return [[c["tool"], *c["argv"]] for c in self.calls()]

    def clear(self) -> None:
        for p in (self.record, Path(str(self.record) + ".count")):
            p.unlink(missing_ok=True)


@pytest.fixture
def tools(tmp_path, monkeypatch) -> Tools:
    t = Tools(tmp_path)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PROXYSUITE_RECORD", str(t.record))
    monkeypatch.setenv("PROXYSUITE_SCRIPT", str(t.script_path))
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(t.state))
    # testcontainers talks to the engine through the Docker SDK, not the CLI: point it at nothing,
    # so that a developer machine with Docker does not start a real container from these tests.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/proxysuite-test/docker.sock")
    for name in ("PROXYSUITE_KIND_NODE_IMAGE", "PROXYSUITE_CILIUM_VARIANT", "PROXYSUITE_CILIUM_VERSION", "PROXYSUITE_CLIENT_IMAGE",
                 "PROXYSUITE_CLOUD_PROVIDER_KIND_IMAGE", "PROXYSUITE_KIND_CONFIGS", "PROXYSUITE_VANTAGE_TRANSPORT",
                 "PROXYSUITE_KIND_LB"):
        monkeypatch.delenv(name, raising=False)
    return t


def cfg(**kw) -> SuiteConfig:
    base = dict(provider="kind", mode="iptables", cluster_name="ps-t", run_id="abc123")
    base.update(kw)
    return SuiteConfig(**base)


def engine_ok_rules() -> list[dict]:
    return [{"tool": "docker", "match": ["info"], "stdout": "28.2.2\n"}]


def kc(sd: Path, *args: str) -> list[str]:
    return ["kubectl", "--kubeconfig", str(sd / "kubeconfig"), *args]


# The one-time check that kubectl exec really works (nodes may report a kubelet endpoint nobody serves).
EXEC_WORKS = {"tool": "kubectl", "match": ["exec", "python3", "-c", "print('proxysuite-exec-ok')"], "stdout": "proxysuite-exec-ok\n"}

CPK = ["docker", "ps", "-q", "--filter", "name=^proxysuite-cloud-provider-kind$"]
CPK_START = [["docker", "rm", "-f", "proxysuite-cloud-provider-kind"],
             ["docker", "run", "-d", "--name", "proxysuite-cloud-provider-kind", "--network", "kind", "--restart", "unless-stopped",
              "--label", "proxysuite.io/role=cloud-provider-kind", "-v", "/var/run/docker.sock:/var/run/docker.sock",
              images.CLOUD_PROVIDER_KIND_IMAGE]]


NODE_IMAGE_CHECK = ["docker", "image", "inspect", images.KIND_NODE_IMAGES["1.37"]]
"""Before ``kind create``: is the pinned node image in the engine? (The stand-in says yes: no pull, no offline image.)"""


def side(sd: Path) -> list[list[str]]:
    """What start_side_containers runs before the external client: the kind network (LB pool) and the cluster's
    ranges (guard routes); the suite's own LB controller then needs the external client, which these tests lack."""
    return [["docker", "network", "inspect", "kind"], kc(sd, "get", "configmap", "-n", "kube-system", "kubeadm-config", "-o", "json"),
            ["kind", "get", "nodes", "--name", "ps-t"]]


# --- the commands of a bring-up --------------------------------------------------------------------

def test_up_iptables_runs_exactly_these_commands(tools):
    tools.script(engine_ok_rules())
    messages: list[str] = []
    cluster = kind.up(cfg(), progress=messages.append)
    sd = tools.state / "kind" / "ps-t"
    assert tools.commands() == [
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["kind", "get", "clusters"],
        NODE_IMAGE_CHECK,
        ["kind", "create", "cluster", "--name", "ps-t", "--config", str(sd / "kind-config.yaml"), "--kubeconfig", str(sd / "kubeconfig")],
        kc(sd, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=300s"),
        kc(sd, "-n", "kube-system", "rollout", "status", "daemonset/kube-proxy", "--timeout=300s"),
        kc(sd, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=300s"),
        *side(sd),
    ]
    # the config kind was given is the mode's file, rendered: valid v1alpha4, 1 + 2 nodes, pinned image
    rendered = yaml.safe_load((sd / "kind-config.yaml").read_text())
    schema = json.loads((CONFIGS / "kind-v1alpha4.schema.json").read_text())
    jsonschema.validate(rendered, schema)
    assert rendered["name"] == "ps-t" and rendered["networking"]["kubeProxyMode"] == "iptables"
    assert [n["image"] for n in rendered["nodes"]] == [images.KIND_NODE_IMAGES["1.37"]] * 3
    # kind v0.33.0 has no v1.37.2 image: the provider says which one it used
    assert any("using v1.37.0" in m for m in messages)
    # the record that makes a later reuse safe
    assert json.loads((sd / "cluster.json").read_text())["mode"] == "iptables"
    # the external client could not start (no engine behind DOCKER_HOST), so neither could the LB routed from it;
    # features say why
    feats = cluster.features()
    assert feats.node_exec and feats.proxy_restart and feats.lb_via_proxy
    ok, reason = feats.require("external_client")
    assert not ok and reason.startswith("the external client container did not start:")
    ok, lb_reason = feats.require("load_balancer")
    assert not ok and "routed from the external client" in lb_reason
    ok, eip_reason = feats.require("external_ips")
    assert not ok and "routed from the external client, which did not start" in eip_reason and cluster.external_ip_cidr is None
    # the one convention for "not available": the method raises Unsupported with the same reason
    with pytest.raises(Unsupported) as missing:
        cluster.external_vantage()
    assert missing.value.what == reason


@pytest.mark.parametrize("variant,overlay", [("default", None), ("maglev", "maglev.yaml"), ("dsr", "dsr.yaml")])
def test_up_cilium_installs_with_helm_from_the_values_files(tools, monkeypatch, variant, overlay):
    # The chart repository's flow (PROXYSUITE_CILIUM_SOURCE=repo); the offline default is proven on a real
    # cluster by tests/test_kind_cilium_cluster.py.
    monkeypatch.setenv("PROXYSUITE_CILIUM_SOURCE", "repo")
    monkeypatch.setenv("PROXYSUITE_CILIUM_VARIANT", variant)
    tools.script(engine_ok_rules() + [{"tool": "kubectl", "match": ["exec", "cilium-dbg", "status"], "stdout": CILIUM_STATUS}])
    kind.up(cfg(mode="cilium"), progress=lambda m: None)
    sd = tools.state / "kind" / "ps-t"
    values = ["--values", str(CONFIGS / "cilium-values" / "default.yaml")]
    if overlay:
        values += ["--values", str(CONFIGS / "cilium-values" / overlay)]
    assert tools.commands()[2:10] == [
        NODE_IMAGE_CHECK,
        ["kind", "create", "cluster", "--name", "ps-t", "--config", str(sd / "kind-config.yaml"), "--kubeconfig", str(sd / "kubeconfig")],
        ["helm", "upgrade", "--install", "cilium", "cilium", "--repo", "https://helm.cilium.io", "--version", "1.20.2",
         "--namespace", "kube-system", "--kubeconfig", str(sd / "kubeconfig"), *values,
         "--set", "k8sServiceHost=ps-t-control-plane", "--set", "k8sServicePort=6443", "--wait", "--timeout", "600s"],
        kc(sd, "-n", "kube-system", "rollout", "status", "daemonset/cilium", "--timeout=300s"),
        kc(sd, "-n", "kube-system", "exec", "daemonset/cilium", "-c", "cilium-agent", "--", "cilium-dbg", "status", "--verbose"),
        kc(sd, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=300s"),
        kc(sd, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=300s"),
        *side(sd)[:1],
    ]
    rendered = yaml.safe_load((sd / "kind-config.yaml").read_text())
    assert rendered["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none", "podSubnet": "10.244.0.0/16",
                                      "serviceSubnet": "10.96.0.0/16"}
    record = json.loads((sd / "cluster.json").read_text())
    assert record["cilium_variant"] == variant and record["cilium"]["kpr"] is True and record["cilium"]["socket_lb"] is True


def test_cilium_without_kpr_is_an_error_and_the_cluster_is_deleted(tools, monkeypatch):
    monkeypatch.setenv("PROXYSUITE_CILIUM_SOURCE", "repo")
    tools.script(engine_ok_rules() + [{"tool": "kubectl", "match": ["exec", "cilium-dbg", "status"],
                                       "stdout": "KubeProxyReplacement:   False\n"}])
    with pytest.raises(SuiteError) as info:
        kind.up(cfg(mode="cilium"), progress=lambda m: None)
    assert "without kube-proxy replacement" in str(info.value)
    assert tools.commands()[-1] == ["kind", "delete", "cluster", "--name", "ps-t"]


def test_up_custom_applies_the_manifest_and_waits_for_its_daemonsets(tools, tmp_path):
    manifest = tmp_path / "my-proxy.yaml"
    manifest.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "myproxy", "namespace": "kube-system"}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "myproxy", "namespace": "kube-system"},
         "spec": {"selector": {"matchLabels": {"app": "myproxy"}},
                  "template": {"metadata": {"labels": {"app": "myproxy"}},
                               "spec": {"containers": [{"name": "p", "image": "example.org/myproxy:1.0"}]}}}},
    ]))
    tools.script(engine_ok_rules())
    cluster = kind.up(cfg(mode="custom", proxy_manifest=str(manifest)), progress=lambda m: None)
    sd = tools.state / "kind" / "ps-t"
    assert tools.commands()[4:8] == [
        kc(sd, "apply", "-f", str(manifest)),
        kc(sd, "-n", "kube-system", "rollout", "status", "daemonset/myproxy", "--timeout=300s"),
        kc(sd, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=300s"),
        kc(sd, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=300s"),
    ]
    assert cluster._proxy_selector() == ("kube-system", "app=myproxy")
    assert images.manifest_images(str(manifest))[0].ref == "example.org/myproxy:1.0"


def test_cloud_provider_kind_is_an_opt_in_whose_lb_rows_are_marked(tools, monkeypatch):
    monkeypatch.setenv("PROXYSUITE_KIND_LB", "cloud-provider-kind")
    tools.script(engine_ok_rules())
    cluster = kind.up(cfg(), progress=lambda m: None)
    sd = tools.state / "kind" / "ps-t"
    assert tools.commands()[7:] == [*side(sd), CPK, *CPK_START]
    feats = cluster.features()
    assert feats.load_balancer and not feats.lb_via_proxy
    assert "Envoy that forwards to NodePorts" in feats.require("lb_via_proxy")[1]
    tools.clear()
    tools.script(engine_ok_rules() + [{"tool": "kind", "match": ["get", "clusters"], "stdout": "ps-t\n"},
                                      {"tool": "docker", "match": ["ps", "-q"], "stdout": "f00dcafe\n"}])
    kind.up(cfg(), progress=lambda m: None)
    assert CPK in tools.commands() and CPK_START[1] not in tools.commands()  # already running: not started again
    monkeypatch.setenv("PROXYSUITE_KIND_LB", "metallb")
    with pytest.raises(SuiteError, match="PROXYSUITE_KIND_LB=metallb is not a LoadBalancer choice"):
        kind.up(cfg(), progress=lambda m: None)


def test_reuse_exports_the_kubeconfig_and_refuses_another_mode(tools):
    tools.script(engine_ok_rules())
    assert kind.up(cfg(), progress=lambda m: None).created
    sd = tools.state / "kind" / "ps-t"
    tools.clear()
    tools.script(engine_ok_rules() + [{"tool": "kind", "match": ["get", "clusters"], "stdout": "other\nps-t\n"},
                                      {"tool": "docker", "match": ["ps", "-q"], "stdout": "f00dcafe\n"}])
    # a reused cluster is not this session's to delete at its end
    assert not kind.up(cfg(), progress=lambda m: None).created
    assert tools.commands() == [
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["kind", "get", "clusters"],
        ["kind", "export", "kubeconfig", "--name", "ps-t", "--kubeconfig", str(sd / "kubeconfig")],
        *side(sd),
    ]
    with pytest.raises(SuiteError) as info:
        kind.up(cfg(mode="nftables"), progress=lambda m: None)
    assert "runs --mode iptables, not nftables" in str(info.value)
    assert "proxysuite cluster down --provider kind --cluster-name ps-t" in str(info.value)


def test_failed_create_deletes_the_half_made_cluster(tools):
    tools.script(engine_ok_rules() + [{"tool": "kubectl", "match": ["rollout", "status", "daemonset/kube-proxy"], "rc": 1,
                                       "stderr": "error: timed out waiting for the condition\n"}])
    with pytest.raises(SuiteError) as info:
        kind.up(cfg(), progress=lambda m: None)
    text = str(info.value)
    assert "could not be brought up" in text and "timed out waiting for the condition" in text and "\n" not in text
    assert tools.commands()[-1] == ["kind", "delete", "cluster", "--name", "ps-t"]


def test_failed_create_keeps_the_cluster_with_keep_cluster(tools):
    tools.script(engine_ok_rules() + [{"tool": "kind", "match": ["create", "cluster"], "rc": 1, "stderr": "ERROR: boom\n"}])
    with pytest.raises(SuiteError):
        kind.up(cfg(keep_cluster=True), progress=lambda m: None)
    assert ["kind", "delete", "cluster", "--name", "ps-t"] not in tools.commands()


def test_down_deletes_cluster_side_containers_and_the_shared_lb_controller(tools):
    tools.script([
        {"tool": "kind", "match": ["get", "clusters"], "stdout": "ps-t\n", "times": 1},
        {"tool": "docker", "match": ["ps", "-aq", "--filter", "label=proxysuite.io/kind-cluster=ps-t"], "stdout": "aaa\nbbb\n"},
        {"tool": "docker", "match": ["ps", "-aq", "--filter", "name=^proxysuite-cloud-provider-kind$"], "stdout": "ccc\n"},
    ])
    kind.down(cfg(), progress=lambda m: None)
    assert tools.commands() == [
        ["kind", "get", "clusters"],
        ["kind", "delete", "cluster", "--name", "ps-t"],
        ["docker", "ps", "-aq", "--filter", "label=proxysuite.io/kind-cluster=ps-t"],
        ["docker", "rm", "-f", "aaa", "bbb"],
        ["kind", "get", "clusters"],
        ["docker", "ps", "-aq", "--filter", "name=^proxysuite-cloud-provider-kind$"],
        ["docker", "rm", "-f", "proxysuite-cloud-provider-kind"],
    ]


def test_down_keeps_the_lb_controller_while_other_kind_clusters_exist(tools):
    tools.script([{"tool": "kind", "match": ["get", "clusters"], "stdout": "someone-else\n"}])
    kind.down(cfg(), progress=lambda m: None)
    assert ["docker", "rm", "-f", "proxysuite-cloud-provider-kind"] not in tools.commands()
    assert ["kind", "delete", "cluster", "--name", "ps-t"] not in tools.commands()


# --- vantages and node access on a kind cluster -------------------------------------------------------

def make_cluster(tools) -> kind.KindCluster:
    tools.script(engine_ok_rules())
    cluster = kind.up(cfg(), progress=lambda m: None)
    tools.clear()
    return cluster


def test_node_exec_is_docker_exec_into_the_node_container(tools):
    cluster = make_cluster(tools)
    tools.script([{"tool": "docker", "match": ["exec", "ps-t-worker", "iptables-save"], "stdout": "*nat\nCOMMIT\n"}])
    assert cluster.node_exec("ps-t-worker", ["iptables-save"]) == "*nat\nCOMMIT\n"
    assert cluster.proxy_rules("ps-t-worker") == "*nat\nCOMMIT\n"
    assert tools.commands() == [["docker", "exec", "ps-t-worker", "iptables-save"]] * 2


def test_proxy_http_on_the_control_plane_is_curl_in_its_container(tools):
    # The migration suite asks every node that runs kube-proxy, the control plane too, for /proxyMode.
    cluster = make_cluster(tools)
    tools.script([{"tool": "docker", "match": ["exec", "ps-t-control-plane", "curl"], "stdout": "nftables\n200"}])
    assert cluster.proxy_http("ps-t-control-plane", 10249, "/proxyMode") == (200, "nftables")
    assert tools.commands() == [["docker", "exec", "ps-t-control-plane", "curl", "-sS", "-m", "5", "-w", "\n%{http_code}",
                                 "http://127.0.0.1:10249/proxyMode"]]


def test_proxy_http_execs_the_engine_in_a_host_network_pod_on_the_node(tools):
    cluster = make_cluster(tools)
    sd = tools.state / "kind" / "ps-t"
    node = {"metadata": {"name": "ps-t-worker"}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}
    pod = {"metadata": {"name": "host-ps-t-worker", "namespace": "proxysuite-abc123"},
           "spec": {"nodeName": "ps-t-worker", "hostNetwork": True, "containers": [{"name": "client"}]},
           "status": {"phase": "Running", "podIP": "172.18.0.3"}}
    tools.script([
        {"tool": "kubectl", "match": ["get", "nodes", "-o", "json"], "stdout": json.dumps({"items": [node]})},
        {"tool": "kubectl", "match": ["get", "pod", "host-ps-t-worker"], "stdout": json.dumps(pod)},
        EXEC_WORKS,
        {"tool": "kubectl", "match": ["exec", "python3"], "stdout": json.dumps({"status": 200, "body": "nftables"}) + "\n"},
    ])
    assert cluster.proxy_http("ps-t-worker", 10249, "/proxyMode") == (200, "nftables")
    cmds = tools.commands()
    assert cmds[0] == kc(sd, "apply", "-f", "-")
    applied = json.loads(tools.calls()[0]["stdin"])["items"][0]
    assert applied["kind"] == "Namespace" and applied["metadata"]["labels"]["proxysuite.io/run-id"] == "abc123"
    host = json.loads(tools.calls()[1]["stdin"])["items"][0]
    assert host["spec"]["hostNetwork"] is True and host["spec"]["nodeName"] == "ps-t-worker"
    assert host["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert cmds[2] == kc(sd, "wait", "-n", "proxysuite-abc123", "--for=condition=Ready", "pod/host-ps-t-worker", "--timeout=180s")
    assert kc(sd, "exec", "-n", "proxysuite-abc123", "host-ps-t-worker", "-c", "client", "--", "python3", "-c",
              "print('proxysuite-exec-ok')") in cmds
    assert (cluster.transport(), cluster.transport_reason) == ("exec", "kubectl exec works")
    exec_cmd = cmds[-1]
    assert exec_cmd[:9] == kc(sd, "exec", "-n", "proxysuite-abc123", "host-ps-t-worker", "-c", "client", "--")[:9]
    assert exec_cmd[9:12] == ["--", "python3", "-c"]
    assert "def probe_tcp" in exec_cmd[12]  # the engine's own source
    assert json.loads(exec_cmd[13]) == {"http_get": {"host": "127.0.0.1", "port": 10249, "path": "/proxyMode", "timeout": 5.0}}


def test_exec_that_does_not_work_falls_back_to_the_pod_proxy(tools):
    cluster = make_cluster(tools)
    node = {"metadata": {"name": "ps-t-worker"}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}
    tools.script([
        {"tool": "kubectl", "match": ["get", "nodes", "-o", "json"], "stdout": json.dumps({"items": [node]})},
        {"tool": "kubectl", "match": ["exec", "python3"], "rc": 1,
         "stderr": 'error: Internal error occurred: error sending request: Post "https://ps-t-worker:10250/exec/x/y/client?command=python3&command=-c&command=print": dial tcp: i/o timeout\n'},
    ])
    assert cluster.transport() == "proxy"
    assert cluster.transport_reason == ('kubectl exec failed: error: Internal error occurred: error sending request: '
                                        'Post "https://ps-t-worker:10250/exec/x/y/client?command=…": dial tcp: i/o timeout')


def test_pod_vantage_sends_requests_and_reads_observations(tools):
    cluster = make_cluster(tools)
    pod = {"metadata": {"name": "client-a", "namespace": "ps-x"},
           "spec": {"nodeName": "ps-t-worker2", "containers": [{"name": "client"}]},
           "status": {"phase": "Running", "podIP": "10.244.2.7"}}
    obs = {"host": "10.96.0.10", "port": 80, "protocol": "tcp", "outcome": "ok", "backend": "echo-1", "client_ip": "10.244.2.7",
           "connect_us": 120.0, "total_us": 900.0, "started": 1.0, "error": None, "label": ""}
    tools.script([
        {"tool": "kubectl", "match": ["get", "pod", "client-a"], "stdout": json.dumps(pod)},
        {"tool": "kubectl", "match": ["get", "nodes"], "stdout": json.dumps({"items": [
            {"metadata": {"name": "n"}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}]})},
        EXEC_WORKS,
        {"tool": "kubectl", "match": ["exec", "python3"], "stdout": json.dumps(obs) + "\n" + json.dumps({**obs, "backend": "echo-2"}) + "\n"},
    ])
    v = cluster.pod_vantage("ps-x", "client-a")
    assert (v.name, v.kind, v.node, v.source_ip) == ("client-a@ps-t-worker2", "pod", "ps-t-worker2", "10.244.2.7")
    req = ProbeRequest("10.96.0.10", 80, count=2)
    got = v.run([req])
    assert [o.backend for o in got] == ["echo-1", "echo-2"]
    sent = json.loads(tools.commands()[-1][-1])
    # The pod gets the engine's own request, every field of it (the engine there rebuilds ProbeRequest(**r)).
    assert sent == [dataclasses.asdict(req)] and sent[0]["host"] == "10.96.0.10" and sent[0]["count"] == 2


def test_restart_proxy_deletes_the_pod_and_waits_for_a_ready_replacement(tools):
    cluster = make_cluster(tools)
    sd = tools.state / "kind" / "ps-t"
    tools.script([
        {"tool": "kubectl", "match": ["get", "pods", "-l", "k8s-app=kube-proxy"], "stdout": "pod/kube-proxy-aaaaa\n", "times": 1},
        {"tool": "kubectl", "match": ["get", "pods", "-l", "k8s-app=kube-proxy"], "stdout": "pod/kube-proxy-bbbbb\n"},
        {"tool": "kubectl", "match": ["get", "pod", "kube-proxy-bbbbb"], "stdout": "True"},
    ])
    cluster.restart_proxy("ps-t-worker")
    cmds = tools.commands()
    assert cmds[1] == kc(sd, "delete", "pod", "-n", "kube-system", "kube-proxy-aaaaa", "--wait=false")
    assert cmds[0] == kc(sd, "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "--field-selector",
                         "spec.nodeName=ps-t-worker", "-o", "name")


def test_external_client_container_spec():
    spec = kind.external_client_spec(cfg())
    assert spec["image"] == images.CLIENT_IMAGE and spec["network"] == "kind"
    assert spec["name"].startswith("proxysuite-ext-ps-t-abc123-")
    assert spec["labels"] == {"proxysuite.io/run-id": "abc123", "proxysuite.io/kind-cluster": "ps-t", "proxysuite.io/role": "external-client"}
    assert spec["command"][:2] == ["python3", "-c"]


def test_external_vantage_is_docker_exec_into_the_container(tools):
    cluster = make_cluster(tools)
    cluster._external_id, cluster._external_ip = "c0ffee", "172.18.0.9"
    obs = {"host": "172.18.0.2", "port": 30080, "protocol": "tcp", "outcome": "refused", "error": "ConnectionRefusedError"}
    tools.script([{"tool": "docker", "match": ["exec", "c0ffee", "python3"], "stdout": json.dumps(obs) + "\n"}])
    v = cluster.external_vantage()
    assert (v.kind, v.source_ip, v.node) == ("external", "172.18.0.9", None)
    assert v.run([ProbeRequest("172.18.0.2", 30080)])[0].outcome == "refused"
    assert tools.commands()[0][:5] == ["docker", "exec", "c0ffee", "python3", "-c"]


# --- prerequisites: one line naming the fix ---------------------------------------------------------

@pytest.fixture
def only(tmp_path, monkeypatch):
    """PATH holding only the named stand-ins (plus nothing else), to make the other tools missing."""
    def make(*names: str) -> None:
        d = tmp_path / "onlybin"
        d.mkdir(exist_ok=True)
        (d / "python3").symlink_to(sys.executable)  # the stand-ins' interpreter; not a tool the provider checks
        for name in names:
            (d / name).symlink_to(BIN / "recording-tool")
        monkeypatch.setenv("PATH", str(d))
        # Nor the kind and engine that `proxysuite kind setup-engine` may have left on this machine.
        monkeypatch.setenv("PROXYSUITE_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(tmp_path / "state"))
    return make


@pytest.mark.parametrize("present,missing,fix_words", [
    ((), "docker", "Docker"),
    (("docker",), "kind", "go install sigs.k8s.io/kind@v0.33.0"),
    (("docker", "kind"), "kubectl", "install kubectl"),
])
def test_missing_tool_is_one_line_naming_the_fix(only, present, missing, fix_words):
    only(*present)
    with pytest.raises(SuiteError) as info:
        kind.check_prereqs(cfg())
    text = str(info.value)
    assert text.startswith(f"{missing} is not installed") and fix_words in text and "\n" not in text


def test_missing_helm_only_matters_for_cilium_from_the_chart_repository(only, monkeypatch, tmp_path):
    only("docker", "kind", "kubectl")
    script = tmp_path / "s.json"
    script.write_text(json.dumps(engine_ok_rules()))
    monkeypatch.setenv("PROXYSUITE_SCRIPT", str(script))
    kind.check_prereqs(cfg())  # iptables: no helm needed
    monkeypatch.delenv("PROXYSUITE_CILIUM_SOURCE", raising=False)
    kind.check_prereqs(cfg(mode="cilium"))  # offline: the suite builds its own helm
    monkeypatch.setenv("PROXYSUITE_CILIUM_SOURCE", "repo")
    with pytest.raises(SuiteError) as info:
        kind.check_prereqs(cfg(mode="cilium"))
    assert str(info.value).startswith("helm is not installed") and "--mode cilium needs it" in str(info.value)


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI (present on this machine, without an engine)")
def test_no_docker_engine_is_reported_with_the_fix(tools, monkeypatch, tmp_path):
    # The real docker CLI against a socket where no engine listens: exactly this machine's situation.
    real = tmp_path / "realbin"
    real.mkdir()
    (real / "docker").symlink_to(shutil.which("docker", path=os.environ["PATH"].split(os.pathsep, 1)[1]))
    for name in ("kind", "kubectl"):
        (real / name).symlink_to(BIN / "recording-tool")
    (real / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(real))
    with pytest.raises(SuiteError) as info:
        kind.check_prereqs(cfg())
    text = str(info.value)
    assert text.startswith("the Docker engine is not reachable") and "start the Docker engine" in text and "\n" not in text


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS")
def test_ipvs_on_a_kernel_without_it_is_unsupported(tools):
    tools.script(engine_ok_rules())
    with pytest.raises(Unsupported) as info:
        kind.check_prereqs(cfg(mode="ipvs"))
    assert "CONFIG_IP_VS" in str(info.value) and "--mode nftables" in str(info.value)


def test_custom_needs_a_manifest_and_the_manifest_needs_custom(tools, tmp_path):
    tools.script(engine_ok_rules())
    with pytest.raises(SuiteError, match="--proxy-manifest PATH"):
        kind.check_prereqs(cfg(mode="custom"))
    m = tmp_path / "p.yaml"
    m.write_text("kind: List\n")
    with pytest.raises(SuiteError, match="only goes with --mode custom"):
        kind.check_prereqs(cfg(proxy_manifest=str(m)))


def test_recording_tool_is_executable():
    assert os.stat(BIN / "recording-tool").st_mode & stat.S_IXUSR
    for name in ("kind", "kubectl", "helm", "docker"):
        assert os.path.realpath(BIN / name) == str((BIN / "recording-tool").resolve())


def test_a_vantage_pod_another_xdist_worker_created_first_is_reused(tools):
    cluster = make_cluster(tools)
    tools.script([{"tool": "kubectl", "match": ["apply"], "rc": 1,
                   "stderr": 'Error from server (AlreadyExists): error when creating "STDIN": pods "host-ps-t-worker" already exists\n'}])
    assert cluster.host_pod("ps-t-worker") == ("proxysuite-abc123", "host-ps-t-worker")
    assert tools.commands()[-1][-3:] == ["--for=condition=Ready", "pod/host-ps-t-worker", "--timeout=180s"]


def test_the_lb_pool_is_routed_behind_the_gateway_in_every_node(tools):
    """A pool address nobody holds must not be on-link for the nodes (ARP failure = EHOSTUNREACH)."""
    cluster = make_cluster(tools)
    tools.script([{"tool": "kind", "match": ["get", "nodes"], "stdout": "ps-t-control-plane\nps-t-worker\n"}])
    said: list[str] = []
    cluster._pool_behind_gateway("172.18.255.0/24", "172.18.0.1", said.append)
    assert tools.commands() == [
        ["kind", "get", "nodes", "--name", "ps-t"],
        ["docker", "exec", "ps-t-control-plane", "ip", "route", "replace", "172.18.255.0/24", "via", "172.18.0.1"],
        ["docker", "exec", "ps-t-worker", "ip", "route", "replace", "172.18.255.0/24", "via", "172.18.0.1"],
    ]
    assert said == ["nodes ps-t-control-plane, ps-t-worker: 172.18.255.0/24 via 172.18.0.1 (the LB pool behind the router, not on-link)"]

"""The provider registry, Features reasons, Mode datapath records, run-scoped names and the CLI's
version / cluster list / status -o json. No cluster: kind and kubectl are the recording stand-ins of
tests/bin (as in test_kind_provider.py); everything else is the real code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from proxysuite import cli, images
from proxysuite.cluster import PROVIDERS, Cluster, Features, Provider, get_provider
from proxysuite.cluster.existing import ExistingCluster
from proxysuite.cluster.kind import KindCluster
from proxysuite.cluster.local.provider import LocalCluster
from proxysuite.config import DEFAULT_K8S_VERSION, SuiteConfig
from proxysuite.errors import SuiteError, Unsupported
from proxysuite.modes import MODES, get_mode
from proxysuite.runscope import RUN_LABEL, helper_namespace, namespace_labels, namespace_name

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "tests" / "bin"


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """kind/kubectl/docker stand-ins first on PATH, answering from ``script(rules)``; state under tmp_path."""
    script = tmp_path / "script.json"
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PROXYSUITE_RECORD", str(tmp_path / "record.jsonl"))
    monkeypatch.setenv("PROXYSUITE_SCRIPT", str(script))
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(tmp_path / "state"))
    return lambda rules: script.write_text(json.dumps(rules))


# --- the registry ------------------------------------------------------------------------------------

def test_registry_names_every_provider_and_each_is_a_provider():
    assert list(PROVIDERS) == ["local", "kind", "existing"]
    for name in PROVIDERS:
        p = get_provider(name)
        assert isinstance(p, Provider) and p.name == name and p.description


def test_unknown_provider_is_one_line_naming_the_known_ones():
    with pytest.raises(SuiteError) as err:
        get_provider("minikube")
    assert "unknown provider 'minikube'" in str(err.value) and "local, kind, existing" in str(err.value)
    with pytest.raises(SuiteError):
        SuiteConfig(provider="minikube")


def test_options_and_images_read_the_registry():
    from proxysuite.config import OPTIONS

    assert next(o for o in OPTIONS if o.name == "provider").choices == tuple(PROVIDERS)
    assert images.images_for("iptables", "local") == []
    assert [r.ref for r in images.images_for("iptables", "existing")] == [images.CLIENT_IMAGE, images.AGNHOST_IMAGE]
    assert images.images_for("iptables", "kind")[0].ref == images.kind_node_image(DEFAULT_K8S_VERSION)


def test_janitor_is_a_no_op_with_a_reason_where_a_provider_has_none():
    for name in ("kind", "existing"):
        assert get_provider(name).janitor()["skipped"], name


# --- Features -----------------------------------------------------------------------------------------

def test_a_missing_feature_needs_a_reason_and_names_must_exist():
    with pytest.raises(ValueError, match="without a reason: node_exec"):
        Features(load_balancer=True, external_client=True, external_ips=True, proxy_restart=True, proxy_children_cpu=True,
                 load_generation=True, cluster_dns=True, reasons={})
    feats = Features(reasons={n: f"no {n}" for n in Features.names() if n != "udp"})
    assert feats.require("udp") == (True, "")
    assert feats.require("load_generation") == (False, "no load_generation")
    with pytest.raises(ValueError, match="unknown feature 'load_balancers'"):
        feats.require("load_balancers")  # a typo is a bug, not "missing"
    with pytest.raises(ValueError, match="unknown features"):
        Features(udp=True, reasons={"nope": "x", **feats.reasons})


def _kind_cluster(tmp_path) -> KindCluster:
    return KindCluster(SuiteConfig(provider="kind", cluster_name="ps-t", run_id="abc123"), str(tmp_path / "kubeconfig"))


def test_each_provider_gives_a_reason_for_every_missing_feature(tmp_path, stand_ins):
    stand_ins([])  # kubectl answers 0 with no output: kube-dns "exists"
    bare = object.__new__(LocalCluster)  # features() reads only the state's --proxy-health and mode
    bare.state = SimpleNamespace(proxy_health="kube-proxy", mode="iptables")
    local = bare.features()
    kind = _kind_cluster(tmp_path).features()
    existing = ExistingCluster(SuiteConfig(provider="existing", run_id="abc123"), str(tmp_path / "kubeconfig")).features()
    for provider, feats in (("local", local), ("kind", kind), ("existing", existing)):
        for name in Features.names():
            ok, reason = feats.require(name)
            assert ok or reason, f"{provider}: {name} is missing without a reason"
    assert local.require("load_generation") == (True, "")
    assert "does not share this machine's kernel" in kind.require("load_generation")[1]  # no node container here
    assert "--provider local" in existing.require("load_generation")[1]
    assert local.require("proxy_migration") == kind.require("proxy_migration") == (True, "")
    assert "does not own" in existing.require("proxy_migration")[1]


def test_missing_capabilities_raise_unsupported_with_the_features_reason(tmp_path):
    cluster = _kind_cluster(tmp_path)  # side containers not started: no external client yet
    feats = cluster.features()
    for call, feature in ((lambda: cluster.external_vantage(), "external_client"),
                          (lambda: cluster.load_netns("ns", "client"), "load_generation"),
                          (lambda: cluster.proxy_children_cpu_seconds("ps-t-worker"), "proxy_children_cpu")):
        with pytest.raises(Unsupported) as err:
            call()
        assert err.value.what == feats.require(feature)[1]


def test_cluster_requires_what_every_provider_offers():
    missing = {name for name in dir(Cluster) if getattr(getattr(Cluster, name), "__isabstractmethod__", False)}
    assert missing == {"nodes", "features", "pod_vantage", "node_vantage", "proxy_http", "proxy_logs"}


# --- Mode datapath --------------------------------------------------------------------------------------

def test_every_kube_proxy_mode_has_its_datapath_record():
    for mode in MODES.values():
        dp = mode.datapath
        # Cilium's agent serves its metrics on its own Prometheus port; its kube-proxy-style healthz on kube-proxy's.
        assert (dp.metrics_port, dp.healthz_port) == ((9962, 10256) if mode.name == "cilium" else (10249, 10256)), mode.name
        if mode.family == "kube-proxy":
            assert dp.dump and "kubeproxy_sync_proxy_rules_duration_seconds" in dp.sync_metrics, mode.name
    assert get_mode("iptables").datapath.flush[:2] == ("sh", "-c")
    assert get_mode("nftables").datapath.size == ("nft", "list", "table", "ip", "kube-proxy")
    assert get_mode("iptables").datapath.describe(get_mode("iptables").datapath.flush).startswith("iptables-save | grep -v KUBE | iptables-restore")
    assert not get_mode("cilium").datapath.dump and not get_mode("ipvs").datapath.flush


def test_proxy_rules_run_the_modes_dump_on_the_node(tmp_path, monkeypatch):
    cluster = _kind_cluster(tmp_path)
    seen = []
    monkeypatch.setattr(cluster, "node_exec", lambda node, argv, timeout=30: seen.append(argv) or "rules")
    for mode in ("iptables", "nftables", "ipvs"):
        cluster.mode = mode
        assert cluster.proxy_rules("n1") == "rules"
    assert seen == [list(get_mode(m).datapath.dump) for m in ("iptables", "nftables", "ipvs")]


# --- run-scoped names -------------------------------------------------------------------------------------

def test_namespace_names_carry_the_run_id_and_are_dns_labels():
    a = namespace_name("abc123", "test_routing[pod->ClusterIP/tcp]", unique="suites/x.py::test_routing[pod->ClusterIP/tcp]")
    b = namespace_name("abc123", "test_routing[pod->ClusterIP/tcp]", unique="suites/y.py::test_routing[pod->ClusterIP/tcp]")
    assert a.startswith("ps-abc123-test-routing-pod-clusterip") and a != b and len(a) <= 63
    assert all(c.isalnum() or c == "-" for c in a) and a == a.lower()
    assert namespace_name("abc123", "perf-nftables") == "ps-abc123-perf-nftables"
    assert helper_namespace("abc123") == "proxysuite-abc123"
    assert namespace_labels("abc123", privileged=True) == {RUN_LABEL: "abc123", "pod-security.kubernetes.io/enforce": "privileged"}


# --- CLI ------------------------------------------------------------------------------------------------------

def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxysuite.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_version_names_the_pins_and_python():
    doc = json.loads(run_cli("version", "-o", "json").stdout)
    assert doc["kubernetes"] == DEFAULT_K8S_VERSION and doc["kind"] == images.KIND_VERSION
    assert doc["python"].startswith(sys.version.split()[0]) and doc["proxysuite"]
    text = run_cli("version").stdout
    assert f"kubernetes: {DEFAULT_K8S_VERSION}" in text


def test_cluster_list_reads_local_state_and_kind(tmp_path, stand_ins):
    from proxysuite.cluster.local.state import new_state

    # A local cluster whose owning session is gone (a PID that cannot exist) and one kept on purpose.
    crashed = new_state(SuiteConfig(cluster_name="ps-crashed", mode="nftables", run_id="c0ffee"))
    crashed.owner_pid = 2**22 + 1
    crashed.save()
    new_state(SuiteConfig(cluster_name="ps-kept", run_id="beef00")).save()
    stand_ins([{"tool": "docker", "match": ["info"], "stdout": "28.2.2\n"},
               {"tool": "kind", "match": ["get", "clusters"], "stdout": "ps-a\nother\n"},
               {"tool": "docker", "match": ["ps", "label=io.x-k8s.kind.cluster=ps-a"], "stdout": "c0ffee\n"}])
    record = tmp_path / "state" / "kind" / "ps-a" / "cluster.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"name": "ps-a", "mode": "nftables"}))
    doc = cli.cluster_list()
    kind = {c["name"]: c for c in doc["clusters"] if c["provider"] == "kind"}
    assert kind["ps-a"]["mode"] == "nftables" and kind["ps-a"]["alive"] is True
    assert kind["other"]["mode"] is None and kind["other"]["alive"] is False and "not made by proxysuite" in kind["other"]["note"]
    assert "owns no cluster" in doc["not_listed"]["existing"]
    local = {c["name"]: c for c in doc["clusters"] if c["provider"] == "local"}
    assert local["ps-crashed"]["mode"] == "nftables" and local["ps-crashed"]["run_id"] == "c0ffee"
    assert local["ps-crashed"]["alive"] is False and local["ps-crashed"]["owner_alive"] is False
    assert local["ps-kept"]["owner_pid"] is None and "kept on purpose" in local["ps-kept"]["note"]
    proc = run_cli("cluster", "list", env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].split() == ["PROVIDER", "NAME", "MODE", "ALIVE", "OWNER", "NOTE"]
    assert any(line.startswith("kind") and "ps-a" in line and "nftables" in line for line in proc.stdout.splitlines())


def test_cluster_list_says_why_kind_is_not_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PROXYSUITE_CACHE_DIR", str(tmp_path / "cache"))  # nor a kind `proxysuite kind setup-engine` built
    # An empty PATH: neither docker nor kind, whatever this machine has installed where (docker.io puts docker in
    # /usr/bin, a static install in /usr/local/bin). The first missing tool is named, with its fix.
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    doc = cli.cluster_list()
    assert "kind" in doc["not_listed"], doc
    assert "docker is not installed" in doc["not_listed"]["kind"] and "(fix: install the Docker CLI" in doc["not_listed"]["kind"], doc


def test_cluster_status_json_and_text(tmp_path):
    env = {"PROXYSUITE_STATE_DIR": str(tmp_path)}
    proc = run_cli("cluster", "status", "--cluster-name", "ps-none", "-o", "json", env=env)
    assert proc.returncode == 1  # no such cluster
    assert json.loads(proc.stdout) == {"name": "ps-none", "provider": "local", "exists": False}
    text = run_cli("cluster", "status", "--cluster-name", "ps-none", env=env).stdout
    assert "exists: False" in text and "provider: local" in text


def test_images_lists_the_manifest_named_by_the_flag_its_hint_names(tmp_path):
    manifest = tmp_path / "proxy.yaml"
    manifest.write_text("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: p, namespace: kube-system}\n"
                        "spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: "
                        "[{name: p, image: example.org/myproxy:1.0}]}}}\n")
    hint = run_cli("images", "--mode", "custom").stdout
    assert "--proxy-manifest PATH" in hint
    listed = run_cli("images", "--mode", "custom", "--proxy-manifest", str(manifest))
    assert listed.returncode == 0 and "example.org/myproxy:1.0" in listed.stdout.splitlines()


def test_every_cli_flag_has_help():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"proxysuite {name} {action.option_strings[0]} has no help"


def test_unsupported_anywhere_in_a_test_is_a_skip_with_the_reason(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "from proxysuite.errors import Unsupported\n"
        "@pytest.fixture\n"
        "def needs_lb():\n"
        "    raise Unsupported('no LoadBalancer here', 'use kind')\n"
        "def test_fixture(needs_lb):\n"
        "    pass\n"
        "def test_body():\n"
        "    raise Unsupported('no external client', 'use local')\n"
        "def test_plain_failure():\n"
        "    assert False\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "1 failed, 2 skipped" in proc.stdout, proc.stdout
    assert "no LoadBalancer here" in proc.stdout and "no external client" in proc.stdout


def test_proxy_flush_belongs_to_a_custom_proxy_and_is_its_flush():
    from proxysuite.config import SuiteConfig
    from proxysuite.modes import flush_command

    with pytest.raises(SuiteError, match="iptables has its own"):
        SuiteConfig(mode="iptables", proxy_flush="true")
    with pytest.raises(SuiteError, match="is empty"):
        SuiteConfig(mode="custom", proxy_cmd="p", proxy_flush=" ")
    cfg = SuiteConfig(mode="custom", proxy_cmd="p", proxy_flush="nft delete table ip p && echo 0")
    assert flush_command(cfg.mode, cfg.proxy_flush) == ("sh", "-c", "nft delete table ip p && echo 0")
    # Without it the flush checks skip for a custom proxy; kube-proxy's modes keep their own.
    assert flush_command("custom", None) is None
    assert flush_command("iptables", "ignored")[2].startswith("iptables-save")
    assert flush_command("cilium") is None


def test_schedulable_nodes_ignore_the_not_ready_taint_of_a_ready_node():
    """Read in the moment between a worker turning Ready and its not-ready taint lifting, the list must still be
    the workers: falling back to every node put kind's backends on the control plane, which LBs exclude."""
    from proxysuite.cluster.remote import NOT_READY_TAINT, schedulable_nodes

    def node(name, cp=False, ready=True, taints=()):
        labels = {"node-role.kubernetes.io/control-plane": ""} if cp else {}
        return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": list(taints)},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                           "addresses": [{"type": "InternalIP", "address": f"10.0.0.{len(name)}"}]}}

    lifting = {"key": NOT_READY_TAINT, "effect": "NoSchedule"}
    cp = node("kind-control-plane", cp=True, taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    doc = {"items": [cp, node("kind-worker", taints=[lifting]), node("kind-worker2", taints=[lifting])]}
    assert [n.name for n in schedulable_nodes(doc)] == ["kind-worker", "kind-worker2"]
    # A worker that is really not Ready stays out; with none left, every node (a single-node cluster's control plane).
    doc = {"items": [cp, node("kind-worker", ready=False, taints=[lifting]), node("kind-worker2")]}
    assert [n.name for n in schedulable_nodes(doc)] == ["kind-worker2"]
    doc = {"items": [cp]}
    assert [n.name for n in schedulable_nodes(doc)] == ["kind-control-plane"]

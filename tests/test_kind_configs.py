"""The kind configs in proxysuite/data/kind-configs: valid v1alpha4 Cluster objects that say what each mode needs.

The schema (proxysuite/data/kind-configs/kind-v1alpha4.schema.json) is written from kind's
``pkg/apis/config/v1alpha4/types.go`` and ``validate.go``; kind decodes strictly, so an
unknown field fails here as it would fail ``kind create cluster``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from proxysuite import images
from proxysuite.cluster import kind
from proxysuite.config import SuiteConfig
from proxysuite.data import KIND_CONFIGS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = KIND_CONFIGS  # the package data the provider reads, wherever proxysuite is installed
MODES = ("iptables", "ipvs", "nftables", "cilium", "custom")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((CONFIGS / "kind-v1alpha4.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load(mode: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{mode}.yaml").read_text())


def errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("mode", MODES)
def test_config_is_a_valid_kind_cluster(validator, mode):
    assert errors(validator, load(mode)) == []


@pytest.mark.parametrize("mode", MODES)
def test_one_control_plane_two_workers_pinned_image(mode):
    doc = load(mode)
    roles = [n["role"] for n in doc["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    for node in doc["nodes"]:
        assert node["image"] == images.DEFAULT_KIND_NODE_IMAGE
        assert "@sha256:" in node["image"], "kind images must be pinned by digest"


@pytest.mark.parametrize("mode,proxy_mode,default_cni", [
    ("iptables", "iptables", True), ("ipvs", "ipvs", True), ("nftables", "nftables", True),
    ("cilium", "none", False), ("custom", "none", True),
])
def test_networking_per_mode(mode, proxy_mode, default_cni):
    net = load(mode)["networking"]
    assert net["kubeProxyMode"] == proxy_mode
    assert net.get("disableDefaultCNI", False) is (not default_cni)


def test_ipvs_sets_its_feature_gate():
    assert load("ipvs")["featureGates"] == {"KubeProxyIPVS": True}
    for mode in ("iptables", "nftables", "cilium", "custom"):
        assert "featureGates" not in load(mode)


def test_the_schema_rejects_what_kind_rejects(validator):
    good = load("iptables")
    cases = {
        "unknown top-level field": {**good, "kubeProxy": "iptables"},
        "unknown proxy mode": {**good, "networking": {**good["networking"], "kubeProxyMode": "userspace"}},
        "no control plane": {**good, "nodes": [{"role": "worker"}]},
        "bad role": {**good, "nodes": [{"role": "control-plane"}, {"role": "master"}]},
        "bad name": {**good, "name": "Proxy_Suite"},
        "gate not a bool": {**good, "featureGates": {"KubeProxyIPVS": "true"}},
        "unknown node field": {**good, "nodes": [{"role": "control-plane", "img": "x"}]},
    }
    for what, doc in cases.items():
        assert errors(validator, doc), f"schema accepted: {what}"
    # and accepts kind's own minimal config
    assert errors(validator, {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4"}) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workers", [1, 2, 5])
def test_rendered_configs_stay_valid(validator, mode, workers):
    cfg = SuiteConfig(provider="kind", mode=mode, nodes=workers, cluster_name="ps-test",
                      proxy_manifest="x.yaml" if mode == "custom" else None)
    doc = kind.render_config(cfg, images.KIND_NODE_IMAGES["1.37"])
    assert errors(validator, doc) == []
    assert doc["name"] == "ps-test"
    assert [n["role"] for n in doc["nodes"]] == ["control-plane"] + ["worker"] * workers
    assert load(mode)["networking"] == doc["networking"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workers", [1, 2, 5])
def test_workers_alternate_between_two_zones(mode, workers):
    from proxysuite.cluster import zones

    cfg = SuiteConfig(provider="kind", mode=mode, nodes=workers, cluster_name="ps-test",
                      proxy_manifest="x.yaml" if mode == "custom" else None)
    doc = kind.render_config(cfg, images.KIND_NODE_IMAGES["1.37"])
    labels = [n.get("labels") or {} for n in doc["nodes"] if n["role"] == "worker"]
    assert [lab.get(zones.ZONE_LABEL) for lab in labels] == [zones.zone_for(i) for i in range(1, workers + 1)]
    assert {lab.get(zones.REGION_LABEL) for lab in labels} == {zones.REGION}
    assert "labels" not in doc["nodes"][0], "the control plane is in no zone: workers only carry Services' endpoints"


def test_render_drops_the_ipvs_gate_for_images_that_predate_it(validator):
    cfg = SuiteConfig(provider="kind", mode="ipvs")
    assert kind.render_config(cfg, images.KIND_NODE_IMAGES["1.37"])["featureGates"] == {"KubeProxyIPVS": True}
    old = kind.render_config(cfg, images.KIND_NODE_IMAGES["1.36"])
    assert "featureGates" not in old
    assert {n["image"] for n in old["nodes"]} == {images.KIND_NODE_IMAGES["1.36"]}
    assert errors(validator, old) == []


def test_node_image_follows_k8s_version_and_override(monkeypatch):
    monkeypatch.delenv("PROXYSUITE_KIND_NODE_IMAGE", raising=False)
    assert images.kind_node_image("v1.37.2") == images.KIND_NODE_IMAGES["1.37"]
    assert images.kind_node_image("1.35.1") == images.KIND_NODE_IMAGES["1.35"]
    monkeypatch.setenv("PROXYSUITE_KIND_NODE_IMAGE", "kindest/node:v1.38.0")
    assert images.kind_node_image("v1.37.2") == "kindest/node:v1.38.0"


def test_unknown_k8s_minor_is_unsupported_with_a_fix(monkeypatch):
    monkeypatch.delenv("PROXYSUITE_KIND_NODE_IMAGE", raising=False)
    from proxysuite.errors import Unsupported

    with pytest.raises(Unsupported) as info:
        images.kind_node_image("v1.29.0")
    assert "PROXYSUITE_KIND_NODE_IMAGE" in str(info.value) and "\n" not in str(info.value)


# --- Cilium Helm values ----------------------------------------------------------------------------

def merged_values(variant: str) -> dict:
    def merge(a: dict, b: dict) -> dict:
        out = copy.deepcopy(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    result: dict = {}
    for path in kind.cilium_values_files(variant):
        result = merge(result, yaml.safe_load(path.read_text()))
    return result


def test_cilium_default_is_full_kpr_with_socket_lb():
    v = merged_values("default")
    assert v["kubeProxyReplacement"] is True
    assert v["socketLB"]["enabled"] is True
    assert v["loadBalancer"] == {"algorithm": "random", "mode": "snat", "serviceTopology": True}
    assert "k8sServiceHost" not in v, "the provider sets k8sServiceHost per cluster name"


def test_cilium_maglev_variant():
    v = merged_values("maglev")
    assert v["kubeProxyReplacement"] is True
    assert v["loadBalancer"]["algorithm"] == "maglev"
    assert v["maglev"]["tableSize"] in (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
    import base64

    assert len(base64.b64decode(v["maglev"]["hashSeed"])) == 12


def test_cilium_dsr_variant_uses_native_routing():
    v = merged_values("dsr")
    assert v["loadBalancer"]["mode"] == "dsr"
    assert v["loadBalancer"]["dsrDispatch"] == "opt"
    assert v["routingMode"] == "native" and v["autoDirectNodeRoutes"] is True
    net = load("cilium")["networking"]
    assert v["ipv4NativeRoutingCIDR"] == net["podSubnet"]


def test_unknown_cilium_variant_names_the_choices():
    from proxysuite.errors import SuiteError

    with pytest.raises(SuiteError) as info:
        kind.cilium_values_files("turbo")
    assert "default, maglev, dsr" in str(info.value)


def test_example_rbac_is_a_clusterrole_with_binding():
    docs = list(yaml.safe_load_all((ROOT / "clusters" / "existing" / "proxysuite-rbac.yaml").read_text()))
    kinds = {d["kind"] for d in docs}
    assert {"ClusterRole", "ClusterRoleBinding"} <= kinds
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for needed in [("", "namespaces"), ("", "pods"), ("", "pods/exec"), ("", "nodes"), ("", "configmaps")]:
        assert needed in granted, needed


# --- the image list (proxysuite images) ----------------------------------------------------------------

def test_images_per_provider_and_mode(monkeypatch):
    for name in ("PROXYSUITE_KIND_NODE_IMAGE", "PROXYSUITE_CLIENT_IMAGE", "PROXYSUITE_BACKEND_IMAGE", "PROXYSUITE_CILIUM_VERSION"):
        monkeypatch.delenv(name, raising=False)
    kind_ipt = [r.ref for r in images.images_for("iptables")]
    assert kind_ipt[0] == images.KIND_NODE_IMAGES["1.37"]
    assert images.CLIENT_IMAGE in kind_ipt and images.AGNHOST_IMAGE in kind_ipt and images.CLOUD_PROVIDER_KIND_IMAGE in kind_ipt
    assert not any("cilium" in r for r in kind_ipt)
    # Cilium is built here by default (nothing to pull); from the chart repository it is quay.io's, at the pin.
    monkeypatch.delenv("PROXYSUITE_CILIUM_SOURCE", raising=False)
    assert not any("cilium" in r.ref for r in images.images_for("cilium"))
    monkeypatch.setenv("PROXYSUITE_CILIUM_SOURCE", "repo")
    cil = [r.ref for r in images.images_for("cilium")]
    assert "quay.io/cilium/cilium:v1.20.2" in cil and "quay.io/cilium/operator-generic:v1.20.2" in cil
    assert [r.ref for r in images.images_for("nftables", "existing")] == [images.CLIENT_IMAGE, images.AGNHOST_IMAGE]
    assert images.images_for("iptables", "local") == []
    every = [str(r) for r in images.images_for(None)]
    assert len(every) == len(set(every)) and "quay.io/cilium/cilium:v1.20.2" in every and not any(s.startswith("#") for s in every)


def test_format_images_is_pullable_after_grep(tmp_path):
    manifest = tmp_path / "p.yaml"
    manifest.write_text("kind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n        - image: example.org/p:1\n"
                        "      initContainers:\n        - image: example.org/init:1\n")
    text = images.format_images("custom", "kind", proxy_manifest=str(manifest))
    refs = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert refs[-2:] == ["example.org/p:1", "example.org/init:1"]
    assert all(" " not in r for r in refs)

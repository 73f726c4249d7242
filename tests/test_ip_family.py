"""--ip-family: option parsing, the per-family address helpers, the kind config, an existing cluster's family
detection (from kubectl answers), the local provider's address plan and a jig's target of each family.
No cluster: everything here is pure code."""

from __future__ import annotations

import json
import subprocess

import pytest

from proxysuite import ipfamily
from proxysuite.cli import build_parser
from proxysuite.cluster.base import NodeInfo, Vantage
from proxysuite.cluster.existing import detect_ip_families
from proxysuite.cluster.kind import render_config
from proxysuite.config import SuiteConfig
from proxysuite.errors import SuiteError, Unsupported


def test_default_is_ipv4_and_unknown_is_one_line():
    assert SuiteConfig().ip_family == "ipv4"
    assert SuiteConfig(ip_family="dual").ip_family == "dual"
    with pytest.raises(SuiteError) as err:
        SuiteConfig(ip_family="IPv6")
    assert "\n" not in str(err.value) and "--ip-family ipv4|ipv6|dual" in str(err.value)


def test_cli_flag_reaches_the_config():
    from proxysuite.cli import _config

    args = build_parser().parse_args(["cluster", "up", "--ip-family", "dual"])
    assert _config(args).ip_family == "dual"


@pytest.mark.parametrize("choice,families", [("ipv4", ("ipv4",)), ("ipv6", ("ipv6",)), ("dual", ("ipv4", "ipv6"))])
def test_families_of(choice, families):
    assert ipfamily.families_of(choice) == families


def test_address_helpers():
    assert ipfamily.family_of("10.96.0.1") == "ipv4"
    assert ipfamily.family_of("fd00:10:96::1") == "ipv6"
    assert ipfamily.family_of("fd00:10:244::/56") == "ipv6"
    assert ipfamily.pick(["10.96.0.10", "fd00:10:96::a"], "ipv6") == "fd00:10:96::a"
    assert ipfamily.pick(["10.96.0.10", "None", None], "ipv6") is None
    assert ipfamily.families_in(["fd00::/64", "10.0.0.0/8", "fd01::/64"]) == ("ipv6", "ipv4")
    assert ipfamily.host_port("fd00::1", 80) == "[fd00::1]:80"
    assert ipfamily.host_port("10.0.0.1", 80) == "10.0.0.1:80"
    assert ipfamily.normalize("FD00:0:0::0001") == "fd00::1"


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "dual"])
def test_kind_config_ip_family(family):
    net = render_config(SuiteConfig(provider="kind", ip_family=family), "kindest/node:v1.37.2").get("networking") or {}
    if family == "ipv4":
        assert "ipFamily" not in net and ":" not in net.get("podSubnet", "")
        return
    assert net["ipFamily"] == family
    import jsonschema
    from proxysuite.data import KIND_CONFIGS

    schema = json.loads((KIND_CONFIGS / "kind-v1alpha4.schema.json").read_text())
    doc = render_config(SuiteConfig(provider="kind", ip_family=family), "kindest/node:v1.37.2")
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    for key in ("podSubnet", "serviceSubnet"):
        fams = ipfamily.families_in(net[key].split(","))
        assert fams == (("ipv6",) if family == "ipv6" else ("ipv4", "ipv6")), (key, net[key])


def _kubectl(answers: dict):
    def run(*argv, check=True):
        key = argv[1]
        if key not in answers:
            return subprocess.CompletedProcess(list(argv), 1, "", "error: the server doesn't have a resource type")
        return subprocess.CompletedProcess(list(argv), 0, json.dumps(answers[key]), "")
    return run


def test_existing_families_from_service_cidrs_primary_first():
    answers = {"servicecidrs.networking.k8s.io": {"items": [
        {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.100.0.0/16"]}},
        {"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["fd00:10:96::/112", "10.96.0.0/16"]}}]}}
    assert detect_ip_families(_kubectl(answers), lambda: []) == ("ipv6", "ipv4")


def test_existing_families_fall_back_to_kubernetes_service_then_nodes():
    svc = {"service": {"spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"]}}}
    assert detect_ip_families(_kubectl(svc), lambda: []) == ("ipv4",)
    nodes = [NodeInfo("a", "fd00::11", internal_ips=("fd00::11",))]
    assert detect_ip_families(_kubectl({}), lambda: nodes) == ("ipv6",)


def test_node_and_vantage_pick_their_family():
    n = NodeInfo("n1", "10.200.0.11", internal_ips=("10.200.0.11", "fd00:10:200::11"))
    assert n.ip_of("ipv6") == "fd00:10:200::11" and n.ip_of("ipv4") == "10.200.0.11"
    assert NodeInfo("old", "10.0.0.1").ip_of("ipv6") is None
    v = Vantage("pod@n1", "pod", "n1", "10.244.1.2", runner=lambda r: [], source_ips=("10.244.1.2", "fd00:10:244:1::2"))
    assert v.for_family("ipv6").source_ip == "fd00:10:244:1::2"
    assert v.for_family("ipv4") is v
    with pytest.raises(Unsupported):
        Vantage("pod@n1", "pod", "n1", "10.244.1.2", runner=lambda r: []).for_family("ipv6")


# ---- the local provider's address plan --------------------------------------------------------------------
from proxysuite.cluster.local.state import Addressing  # noqa: E402


def test_local_plan_per_family():
    a = Addressing()
    a.check(2, ("ipv4", "ipv6"))
    assert a.node_ips(1, ("ipv4", "ipv6")) == ["10.200.0.11", "fd00:10:200::b"]
    assert a.node_ips(1, ("ipv6",)) == ["fd00:10:200::b"]
    assert a.node_pod_cidrs(2, ("ipv4", "ipv6")) == ["10.244.2.0/24", "fd00:10:244:2::/64"]
    assert a.service_cidrs(("ipv4", "ipv6")) == ["10.96.0.0/16", "fd00:10:96::/112"]
    assert a.service_cidrs(("ipv4",)) == ["10.96.0.0/16"]
    assert a.service_vips(("ipv6",)) == ["fd00:10:96::1"]
    assert a.external_ip_ranges(("ipv4", "ipv6"))[1].startswith("2001:db8:")
    # every IPv6 range is unique-local, or documentation for externalIPs: never anything routed
    import ipaddress
    for key in Addressing.V6_KEYS:
        net = ipaddress.ip_network(getattr(a, key))
        assert net.subnet_of(ipaddress.ip_network("fc00::/7")) or net.subnet_of(ipaddress.ip_network("2001:db8::/32")), key


def test_local_plan_refuses_ipv6_overlap_in_one_line():
    a = Addressing(lb_pool6="fd00:10:96::/120")
    a.check(2, ("ipv4",))  # an IPv4 cluster never uses the IPv6 ranges
    with pytest.raises(SuiteError) as err:
        a.check(2, ("ipv4", "ipv6"))
    assert "overlaps" in str(err.value) and "\n" not in str(err.value)


def test_local_plan_refuses_wrong_family_and_sizes():
    with pytest.raises(SuiteError, match="not an IPv6 range"):
        Addressing(pod_cidr6="10.250.0.0/16").check(2, ("ipv6",))
    with pytest.raises(SuiteError, match="at most /108"):
        Addressing(service_cidr6="fd00:10:96::/64").check(2, ("ipv6",))
    with pytest.raises(SuiteError, match="/64 for each"):
        Addressing(pod_cidr6="fd00:10:244::/64").check(2, ("ipv6",))


def test_ipam_hands_out_from_a_64_without_listing_it(tmp_path):
    from proxysuite.cluster.local.podruntime import IPAM

    ipam = IPAM(tmp_path, "fd00:10:244:1::/64", "ipam-2.json")
    assert ipam.gateway == "fd00:10:244:1::1"
    assert ipam.allocate("a") == "fd00:10:244:1::2"
    assert ipam.allocate("b") == "fd00:10:244:1::3"
    assert ipam.allocate("a") == "fd00:10:244:1::2"
    assert (tmp_path / "ipam-2.json").exists() and not (tmp_path / "ipam.json").exists()
    v4 = IPAM(tmp_path, "10.244.1.0/24")
    assert len(v4._hosts()) == 254  # an IPv4 /24 is handed out as before


def test_apiserver_and_kube_proxy_flags_per_family(tmp_path, monkeypatch):
    from pathlib import Path

    from proxysuite.cluster.local import controlplane
    from proxysuite.cluster.local.state import new_state

    monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(tmp_path))
    v4 = new_state(SuiteConfig(cluster_name="t4"))
    dual = new_state(SuiteConfig(cluster_name="t6", ip_family="dual"))
    v6 = new_state(SuiteConfig(cluster_name="t66", ip_family="ipv6"))

    def flag(argv, name):
        return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))

    bin_ = Path("/bin/true")
    assert flag(controlplane.apiserver_argv(v4, bin_), "service-cluster-ip-range") == "10.96.0.0/16"
    assert flag(controlplane.apiserver_argv(v4, bin_), "bind-address") == "10.200.0.1"
    assert flag(controlplane.apiserver_argv(dual, bin_), "service-cluster-ip-range") == "10.96.0.0/16,fd00:10:96::/112"
    assert flag(controlplane.apiserver_argv(dual, bin_), "advertise-address") == "10.200.0.1"
    assert flag(controlplane.apiserver_argv(v6, bin_), "service-cluster-ip-range") == "fd00:10:96::/112"
    assert flag(controlplane.apiserver_argv(v6, bin_), "advertise-address") == "fd00:10:200::1"
    assert flag(controlplane.kube_proxy_argv(v4, bin_, "node-1"), "cluster-cidr") == "10.244.0.0/16"
    assert flag(controlplane.kube_proxy_argv(dual, bin_, "node-1"), "cluster-cidr") == "10.244.0.0/16,fd00:10:244::/56"
    assert flag(controlplane.kube_proxy_argv(v6, bin_, "node-1"), "cluster-cidr") == "fd00:10:244::/56"


# ---- rows and targets per family ------------------------------------------------------------------------------
from proxysuite.conformance.rows import Row, expand_families  # noqa: E402


def test_rows_expand_per_family_only_off_single_stack_ipv4():
    rows = [Row("pod-other-node", "clusterip", per_family=True), Row("external", "lb")]
    assert [r.id for r in expand_families(rows, ("ipv4",))] == ["pod-other-node->clusterip/tcp", "external->lb/tcp"]
    assert [r.id for r in expand_families(rows, ("ipv4", "ipv6"))] == [
        "pod-other-node->clusterip/tcp/ipv4", "pod-other-node->clusterip/tcp/ipv6", "external->lb/tcp"]
    assert [r.id for r in expand_families(rows, ("ipv6",))] == ["pod-other-node->clusterip/tcp/ipv6", "external->lb/tcp"]
    with pytest.raises(ValueError, match="family"):
        Row("pod-other-node", "clusterip", family="IPv6")


class _Cluster:
    ip_families = ("ipv4", "ipv6")
    backend_image = client_image = "agnhost"

    def nodes(self):
        return [NodeInfo("node-1", "10.200.0.11", internal_ips=("10.200.0.11", "fd00:10:200::b")),
                NodeInfo("node-2", "10.200.0.12", internal_ips=("10.200.0.12",))]


@pytest.fixture
def jig():
    from kubernetes.client import ApiClient

    from proxysuite.workloads.jig import ServiceJig

    return ServiceJig(_Cluster(), ApiClient(), "ns", "run1")


SVC = {"metadata": {"name": "web"},
       "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
                "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack", "externalIPs": ["10.202.0.9", "2001:db8:202::9"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}}


def test_target_picks_the_family(jig):
    assert str(jig.target(SVC, "clusterip")) == "10.96.0.10:80/tcp"
    assert str(jig.target(SVC, "clusterip", family="ipv6")) == "[fd00:10:96::a]:80/tcp"
    assert jig.target(SVC, "clusterip", family="ipv4").host == "10.96.0.10"
    assert jig.target(SVC, "nodeport", node="node-1", family="ipv6").host == "fd00:10:200::b"
    assert jig.target(SVC, "nodeport", node="node-1").host == "10.200.0.11"
    assert jig.target(SVC, "nodeport-localhost", family="ipv6").host == "::1"
    assert jig.target(SVC, "external-ip", family="ipv6").host == "2001:db8:202::9"
    wrong = jig.target(SVC, "clusterip-wrong-port", family="ipv6")
    assert wrong.host == "fd00:10:96::a" and wrong.port != 80


def test_target_of_a_missing_family_is_a_skip_with_the_reason(jig):
    single = {"metadata": {"name": "one"}, "spec": {**SVC["spec"], "clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"],
                                                    "ipFamilyPolicy": "SingleStack"}}
    with pytest.raises(Unsupported, match="no ipv6 cluster IP.*SingleStack"):
        jig.target(single, "clusterip", family="ipv6")
    with pytest.raises(Unsupported, match="node node-2 has no ipv6 InternalIP"):
        jig.target(SVC, "nodeport", node="node-2", family="ipv6")


def test_dual_stack_cluster_gets_prefer_dual_stack_services(jig):
    assert jig.service_body("web")["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    jig.cluster.ip_families = ("ipv4",)
    assert "ipFamilyPolicy" not in jig.service_body("web")["spec"]


def test_check_per_family_expands_every_row_but_family_pinned_ones():
    from proxysuite.conformance import check

    rows = [Row("pod-other-node", "clusterip"), Row("external", "lb", family="ipv4")]

    @check("routing", "probe", rows=rows, per_family=True)
    def probe(row):
        pass

    (marker,) = [m for m in probe.pytestmark if m.name == "proxysuite_rows"]
    assert [r.id for r in expand_families(marker.args[0], ("ipv4", "ipv6"))] == [
        "pod-other-node->clusterip/tcp/ipv4", "pod-other-node->clusterip/tcp/ipv6", "external->lb/tcp/ipv4"]


class _Features:
    def __init__(self, routed):
        self.routed = routed

    def require(self, name):
        return (self.routed, "" if self.routed else "the provider routes no externalIP range")


class _EipCluster:
    def __init__(self, families, routed):
        self.ip_families, self._routed = families, routed
        self.external_ip_cidrs = ("10.202.0.0/24", "2001:db8:202::/120")[: len(families)] if families[0] == "ipv4" \
            else ("2001:db8:202::/120",)
        self.external_ip_cidr = self.external_ip_cidrs[0]

    def features(self):
        return _Features(self._routed)


@pytest.mark.parametrize("families", [("ipv4",), ("ipv6",), ("ipv4", "ipv6")])
@pytest.mark.parametrize("routed", [True, False])
def test_external_ips_one_per_family_primary_first(families, routed):
    import ipaddress

    from proxysuite.conformance.scenario import FALLBACK_EXTERNAL_IP_CIDRS, external_ip, external_ips

    c = _EipCluster(families, routed)
    ips, was_routed = external_ips(c, "ns-a")
    assert was_routed is routed and [ipfamily.family_of(i) for i in ips] == list(families)
    ranges = dict(zip(families, c.external_ip_cidrs)) if routed else FALLBACK_EXTERNAL_IP_CIDRS
    for ip, family in zip(ips, families):
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(ranges[family])
    assert external_ip(c, "ns-a") == (ips[0], routed)
    assert external_ips(c, "ns-b")[0] != ips  # salted, so parallel modules do not collide


def test_second_service_range_is_filled_in_every_family():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "suites" / "conformance" / "test_service_cidrs.py"
    spec = importlib.util.spec_from_file_location("_cidrs_module", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ranges = {"ipv4": "198.51.100.0/30", "ipv6": "fd00:10:97::/126"}
    assert mod._fill_plan(ranges, ("ipv4", "ipv6")) == {
        "second": ["198.51.100.1", "fd00:10:97::1"], "second-peer": ["198.51.100.2", "fd00:10:97::2"],
        "second-v6": ["fd00:10:97::3"]}
    assert mod._fill_plan(ranges, ("ipv6",)) == {
        "second": ["fd00:10:97::1"], "second-peer": ["fd00:10:97::2"], "second-v6": ["fd00:10:97::3"]}
    assert mod._fill_plan(ranges, ("ipv4",)) == {"second": ["198.51.100.1"], "second-peer": ["198.51.100.2"]}

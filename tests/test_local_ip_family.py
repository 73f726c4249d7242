"""``--ip-family dual`` on the local provider, for real: a dual-stack Service answers over IPv6 (and IPv4) from a
pod on another node, from a node and from the external client, with the client's own address seen by the backend
where nothing masquerades. Real apiserver, real kube-proxy (iptables mode), real packets between namespaces.

One 2-node cluster for the module; run it alone under the shared lock (see CONTRIBUTING / the helpers' brief).
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from kubernetes import client, config as kconfig

from proxysuite.cluster.local import provider
from proxysuite.ipfamily import family_of
from proxysuite.probes.engine import OK, ProbeRequest
from support import local_cluster, wait_for

pytestmark = [pytest.mark.live, pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")]


@pytest.fixture(scope="module")
def dual():
    with local_cluster("dual", mode="iptables", nodes=2, ip_family="dual") as cl:
        yield cl


@pytest.fixture(scope="module")
def app(dual):
    api = kconfig.new_client_from_config(config_file=dual.kubeconfig)
    core = client.CoreV1Api(api)
    ns = "dual"
    core.create_namespace({"metadata": {"name": ns}})
    labels = {"app": "backend"}
    core.create_namespaced_pod(ns, {"metadata": {"name": "backend", "labels": labels}, "spec": {
        "nodeName": "node-1", "containers": [{"name": "netexec", "image": provider.BACKEND_IMAGE,
                                              "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
                                              "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}})
    core.create_namespaced_pod(ns, {"metadata": {"name": "client"}, "spec": {
        "nodeName": "node-2", "containers": [{"name": "c", "image": dual.client_image, "command": ["sleep", "infinity"]}]}})
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {
        "type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack", "selector": labels,
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "udp", "port": 81, "targetPort": 8081, "protocol": "UDP"}]}})

    def ready():
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(ns).items}
        svc = core.read_namespaced_service("web", ns)
        ok = all(p.status.pod_ips and len(p.status.pod_ips) == 2 and p.status.phase == "Running" for p in pods.values())
        ing = (svc.status.load_balancer and svc.status.load_balancer.ingress) or []
        return ok and len(pods) == 2 and len(ing) == 2 and (pods, svc)

    pods, svc = wait_for("dual-stack pods Running with two IPs, LB with two ingress IPs", ready, timeout=90)
    yield {"core": core, "ns": ns, "pods": pods, "svc": svc}
    core.delete_namespace(ns)
    api.close()


def test_cluster_is_dual_stack(dual, app):
    assert dual.ip_families == ("ipv4", "ipv6")
    for n in app["core"].list_node().items:
        internal = [a.address for a in n.status.addresses if a.type == "InternalIP"]
        assert [family_of(a) for a in internal] == ["ipv4", "ipv6"], internal
        assert [family_of(c) for c in n.spec.pod_cidrs] == ["ipv4", "ipv6"], n.spec.pod_cidrs
    svc = app["svc"]
    assert [family_of(ip) for ip in svc.spec.cluster_ips] == ["ipv4", "ipv6"]
    assert [family_of(i.ip) for i in svc.status.load_balancer.ingress] == ["ipv4", "ipv6"]
    backend = app["pods"]["backend"]
    assert ipaddress.ip_address(backend.status.pod_ips[1].ip) in ipaddress.ip_network("fd00:10:244:1::/64")


def _answers(vantage, host: str, port: int, proto: str = "tcp", count: int = 5):
    def reached():
        obs = vantage.run([ProbeRequest(host, port, proto, ask="both", count=count, timeout=2.0)])
        return obs if all(o.outcome == OK for o in obs) else None

    return wait_for(f"{vantage.name} -> [{host}]:{port}/{proto} answered", reached, timeout=30)


@pytest.mark.parametrize("proto,port", [("tcp", 80), ("udp", 81)])
def test_ipv6_cluster_ip_from_a_pod_on_another_node(dual, app, proto, port):
    v6 = app["svc"].spec.cluster_ips[1]
    pod = dual.pod_vantage(app["ns"], "client").for_family("ipv6")
    obs = _answers(pod, v6, port, proto)
    assert {o.backend for o in obs} == {"backend"}
    # Pod to pod across nodes: no masquerade, the backend sees the client pod's own IPv6 address.
    assert {o.client_ip for o in obs} == {pod.source_ip} and family_of(pod.source_ip) == "ipv6"


def test_ipv6_cluster_ip_and_nodeport_from_a_node(dual, app):
    svc = app["svc"]
    node = dual.node_vantage("node-2").for_family("ipv6")
    assert node.source_ip == dual.nodes()[1].ip_of("ipv6")
    for host, port in ((svc.spec.cluster_ips[1], 80), (dual.nodes()[0].ip_of("ipv6"), svc.spec.ports[0].node_port)):
        obs = _answers(node, host, port)
        assert all(family_of(o.client_ip) == "ipv6" for o in obs), [o.client_ip for o in obs]


def test_ipv6_nodeport_and_vip_from_the_external_client(dual, app):
    svc = app["svc"]
    ext = dual.external_vantage().for_family("ipv6")
    targets = [(n.ip_of("ipv6"), svc.spec.ports[0].node_port) for n in dual.nodes()]
    targets.append((svc.status.load_balancer.ingress[1].ip, 80))
    for host, port in targets:
        obs = _answers(ext, host, port)
        assert {o.backend for o in obs} == {"backend"}
        assert all(family_of(o.client_ip) == "ipv6" for o in obs)


def test_ipv4_still_answers_on_the_dual_stack_service(dual, app):
    pod = dual.pod_vantage(app["ns"], "client")
    assert family_of(pod.source_ip) == "ipv4"
    obs = _answers(pod, app["svc"].spec.cluster_ips[0], 80)
    assert {o.client_ip for o in obs} == {pod.source_ip}


def test_single_stack_ipv4_service_is_not_served_over_ipv6(dual, app):
    """kube-proxy's IPv6 proxier never sees a Service without an IPv6 cluster IP: its NodePort is closed on IPv6."""
    core, ns = app["core"], app["ns"]
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "v4only"}, "spec": {
        "type": "NodePort", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "selector": {"app": "backend"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    ext = dual.external_vantage()
    node1 = dual.nodes()[0]
    port = svc.spec.ports[0].node_port
    _answers(ext, node1.internal_ip, port)  # programmed for IPv4 ...
    obs = ext.for_family("ipv6").run([ProbeRequest(node1.ip_of("ipv6"), port, "tcp", count=3, timeout=1.0)])
    assert not any(o.outcome == OK for o in obs), [o.outcome for o in obs]  # ... and nothing answers over IPv6

"""The local provider, for real: real apiserver, real kube-proxy, real packets between network namespaces.

Per mode (iptables, nftables) one 2-node cluster is brought up for the module.
A 3-replica agnhost Deployment sits behind a LoadBalancer Service; the checks
are the provider's acceptance criteria, not the conformance catalogue.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from kubernetes import client, config as kconfig

from proxysuite.cluster.local import provider
from proxysuite.probes.engine import OK, ProbeRequest
from support import local_cluster, wait_for

pytestmark = [pytest.mark.live, pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")]

BACKEND_ARGS = ["netexec", "--http-port=8080", "--udp-port=8081", "--delay-shutdown=60"]
GRACE = 15  # seconds; netexec's --delay-shutdown keeps the process serving past SIGTERM for the whole period


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def local(request):
    with local_cluster(request.param, mode=request.param, nodes=2) as cl:
        yield cl


@pytest.fixture(scope="module")
def core(local):
    api = kconfig.new_client_from_config(config_file=local.kubeconfig)
    yield client.CoreV1Api(api)
    api.close()


def backend_pod_template(labels: dict, readiness_port: int = 8080, grace: int = 30) -> dict:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{
                "name": "netexec", "image": provider.BACKEND_IMAGE, "args": BACKEND_ARGS,
                "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 8081, "protocol": "UDP", "name": "udp"}],
                "readinessProbe": {"tcpSocket": {"port": readiness_port}, "periodSeconds": 1},
            }],
        },
    }


@pytest.fixture(scope="module")
def app(local, core):
    """Namespace with a 3-replica Deployment, a LoadBalancer Service and a client pod on each node."""
    ns = "smoke"
    core.create_namespace({"metadata": {"name": ns}})
    apps = client.AppsV1Api(core.api_client)
    labels = {"app": "backend"}
    apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "backend"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": backend_pod_template(labels)},
    })
    core.create_namespaced_service(ns, {
        "metadata": {"name": "backend"},
        "spec": {"type": "LoadBalancer", "selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
    for node in local.nodes():
        core.create_namespaced_pod(ns, {
            "metadata": {"name": f"client-{node.name}"},
            "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": local.client_image, "command": ["sleep", "infinity"]}]},
        })

    def ready_backends():
        pods = core.list_namespaced_pod(ns, label_selector="app=backend").items
        names = [p.metadata.name for p in pods if _ready(p)]
        return names if len(names) == 3 else None

    backends = wait_for("3 ready backends", ready_backends)
    for node in local.nodes():
        wait_for(f"client pod on {node.name}", lambda: core.read_namespaced_pod(f"client-{node.name}", ns).status.pod_ip)
    svc = wait_for("LoadBalancer ingress", lambda: _lb_ip(core.read_namespaced_service("backend", ns)) and core.read_namespaced_service("backend", ns))
    # Programming the datapath lags the API; wait (bounded) until every node's proxy serves the Service.
    ext, node_port = local.external_vantage(), svc.spec.ports[0].node_port
    for node in local.nodes():
        programmed(local.pod_vantage(ns, f"client-{node.name}"), svc.spec.cluster_ip, 80)
        programmed(ext, node.internal_ip, node_port)
    programmed(ext, _lb_ip(svc), 80)
    return {"ns": ns, "svc": svc, "backends": set(backends)}


def programmed(vantage, host: str, port: int) -> None:
    wait_for(f"{host}:{port} answering from {vantage}", lambda: all(
        o.outcome == OK for o in vantage.run([ProbeRequest(host, port, count=3, timeout=1)])))


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _lb_ip(svc) -> str | None:
    ing = svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None
    return ing[0].ip if ing else None


def settled(vantage, host: str, port: int, expected: set | None = None, count: int = 30, excluding: str | None = None) -> Counter:
    """Probe rounds until one round is served by exactly ``expected`` (or by anyone but ``excluding``); the proxy lags the API."""
    def good(seen: Counter) -> bool:
        return set(seen) == expected if expected is not None else excluding not in seen

    what = f"exactly {sorted(expected)}" if expected is not None else f"anyone but {excluding}"
    return wait_for(f"{host}:{port} from {vantage} served by {what}",
                    lambda: (lambda seen: seen if good(seen) else None)(backends_seen(vantage, host, port, count)))


def backends_seen(vantage, host: str, port: int, count: int = 60) -> Counter:
    obs = vantage.run([ProbeRequest(host, port, ask="hostname", count=count, timeout=2)])
    assert all(o.outcome == OK for o in obs), [o.error for o in obs if o.outcome != OK][:3]
    return Counter(o.backend for o in obs)


def test_clusterip_from_a_client_pod_on_each_node_reaches_all_backends(local, app):
    svc = app["svc"]
    for node in local.nodes():
        vantage = local.pod_vantage(app["ns"], f"client-{node.name}")
        settled(vantage, svc.spec.cluster_ip, 80, app["backends"])
        # ClusterIP traffic from a pod is not masqueraded: the backend sees the client pod's IP.
        obs = vantage.run([ProbeRequest(svc.spec.cluster_ip, 80, ask="clientip", count=5)])
        assert {o.client_ip for o in obs} == {vantage.source_ip}


def test_nodeport_and_loadbalancer_from_the_external_client(local, app):
    svc, ext = app["svc"], local.external_vantage()
    node_port = svc.spec.ports[0].node_port
    for node in local.nodes():
        settled(ext, node.internal_ip, node_port, app["backends"])
    settled(ext, _lb_ip(svc), 80, app["backends"])


def test_pod_failing_readiness_gets_no_traffic(local, app, core):
    ns = app["ns"]
    tmpl = backend_pod_template({"app": "backend"}, readiness_port=9999)  # nothing listens there
    core.create_namespaced_pod(ns, {"metadata": {"name": "unready", **tmpl["metadata"]}, "spec": {**tmpl["spec"], "nodeName": "node-1"}})
    try:
        # It must be Running and listed as a not-ready endpoint: the proxy, not the controller, keeps it out.
        wait_for("unready pod running", lambda: core.read_namespaced_pod("unready", ns).status.phase == "Running")
        disc = client.DiscoveryV1Api(core.api_client)

        def listed_not_ready():
            for sl in disc.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=backend").items:
                for ep in sl.endpoints or []:
                    if ep.target_ref and ep.target_ref.name == "unready":
                        return ep.conditions.ready is False
            return False

        wait_for("unready pod in the EndpointSlice with ready=false", listed_not_ready)
        vantage = local.pod_vantage(ns, "client-node-2")
        unready_ip = core.read_namespaced_pod("unready", ns).status.pod_ip
        direct = vantage.run([ProbeRequest(unready_ip, 8080, ask="hostname")])[0]
        assert direct.outcome == OK and direct.backend == "unready", "the unready pod itself serves (so exclusion is the proxy's doing)"
        settled(vantage, app["svc"].spec.cluster_ip, 80, app["backends"])
        # Once settled, the unready pod stays out however often we ask.
        seen = backends_seen(vantage, app["svc"].spec.cluster_ip, 80, count=60)
        assert "unready" not in seen, dict(seen)
    finally:
        core.delete_namespaced_pod("unready", ns, grace_period_seconds=0)


def test_deleted_pod_serves_during_grace_then_gets_nothing(local, app, core):
    ns = app["ns"]
    victim = sorted(app["backends"])[0]
    pod = core.read_namespaced_pod(victim, ns)
    ip = pod.status.pod_ip
    vantage = local.pod_vantage(ns, "client-node-1" if pod.spec.node_name == "node-2" else "client-node-2")
    core.delete_namespaced_pod(victim, ns, grace_period_seconds=GRACE)
    deleted_at = time.monotonic()
    try:
        time.sleep(1.5)  # let the endpointslice controller and the proxy react
        during = vantage.run([ProbeRequest(ip, 8080, ask="hostname", count=3, interval=0.5)])
        assert all(o.outcome == OK and o.backend == victim for o in during), "a terminating pod keeps serving during its grace period"
        # New Service connections avoid the terminating pod (ready endpoints exist, so no fallback).
        settled(vantage, app["svc"].spec.cluster_ip, 80, excluding=victim, count=20)
        assert time.monotonic() - deleted_at < GRACE, "exclusion must be observed while the pod is still terminating"
        wait_for("pod object removed after its grace period", lambda: not [p for p in core.list_namespaced_pod(ns).items if p.metadata.name == victim], timeout=GRACE + 30)
        elapsed = time.monotonic() - deleted_at
        assert elapsed >= GRACE - 1, f"pod vanished after {elapsed:.1f}s, before its {GRACE}s grace period"
        gone = vantage.run([ProbeRequest(ip, 8080, ask="hostname", timeout=1)])[0]
        assert gone.outcome != OK, "after the grace period the pod no longer answers"
        seen = backends_seen(vantage, app["svc"].spec.cluster_ip, 80, count=30)
        assert victim not in seen
    finally:
        # The Deployment replaces the victim; the module's other tests see 3 ready backends again.
        def three_ready():
            pods = core.list_namespaced_pod(ns, label_selector="app=backend").items
            names = {p.metadata.name for p in pods if _ready(p) and not p.metadata.deletion_timestamp}
            return names if len(names) == 3 else None
        app["backends"] = wait_for("replacement backend", three_ready)


def test_proxy_endpoints_and_mode(local):
    for node in local.nodes():
        assert local.proxy_http(node.name, 10249, "/proxyMode") == (200, local.mode)
        status, body = local.proxy_http(node.name, 10256, "/healthz")
        assert status == 200 and "lastUpdated" in body
    rules = local.proxy_rules("node-1")
    assert ("KUBE-SERVICES" in rules) if local.mode == "iptables" else ("table ip kube-proxy" in rules)


def test_root_namespace_is_untouched(local):
    import shutil
    import subprocess

    if shutil.which("iptables-save"):
        assert "KUBE-" not in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    if shutil.which("nft"):
        assert "kube-proxy" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    # ...and no address of the suite's plan was given to the root namespace.
    ours = {n.internal_ip for n in local.nodes()} | {local.state.addressing.cp_ip, local.state.addressing.ext_ip}
    root_addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    assert not [ip for ip in ours if f" {ip}/" in root_addrs], root_addrs

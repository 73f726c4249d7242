"""Service lifecycle: headless, ExternalName, multi-port, TCP+UDP on one port, type/port/selector changes,
deletion, and the service-proxy-name label.

Scenario (module-shared backends, one Service per check): two backends ``be`` on the
first node and one ``alt`` backend with an extra label (the selector-change target).
Each check creates, changes and deletes its own Service; the backends are only read.

Release: v1.0 .. v1.29 ([Conformance]: multiport, ExternalName→ClusterIP/NodePort, same port different
protocols); upstream e2e for the rest
Testname: Service, lifecycle
Description: Named targetPorts MUST resolve per pod; TCP and UDP on the same port
MUST both be served, and dropping one protocol MUST stop its forwarding; a type
change ExternalName→ClusterIP→NodePort MUST make the Service reachable on the new
addresses and NodePort/ClusterIP→ExternalName MUST release them; port and selector
updates MUST reach the datapath; deleting a Service MUST remove its VIP; a Service
labelled service.kubernetes.io/service-proxy-name for another proxy SHOULD be
ignored by this one, and served again once the label is removed. A headless
Service has no VIP; its EndpointSlices list the pods, which answer directly.

ipvs and Cilium are held to the same outcomes; where a removed address fails differently, the step
declares it per mode (:data:`OLD_PORT_GONE`). ipvs keeps a Service's cluster IP bound to kube-ipvs0
while any port of it remains, and KUBE-IPVS-FILTER rejects the ports it no longer has (pkg/proxy/ipvs/
proxier.go writeIptablesRules, kk#72236); removed addresses are unbound (cleanLegacyService). Cilium's
socket-LB leaves a socket to an ip,port,protocol without frontend untranslated (bpf/bpf_sock.c), so the
packet leaves by the default route; it honours service.kubernetes.io/service-proxy-name with
k8s.serviceProxyName empty (kubeproxy-free.rst, Service Proxy Name Configuration).
"""

from __future__ import annotations

import pytest

from proxysuite import waits
from proxysuite.conformance import EXPECTED, NO_REACH, REACH, REACH_ALL, REFUSED, REQUIRED, TIMEOUT, Row, check, for_mode, per_mode
from proxysuite.conformance.scenario import build_scenario
from proxysuite.probes.engine import ProbeRequest
from proxysuite.workloads.jig import GROUP_LABEL, HTTP_PORT, UDP_PORT, Target

pytestmark = pytest.mark.xdist_group("lifecycle")

GONE = dict(expect=NO_REACH, count=2, timeout=1.0)
OLD_PORT_GONE = per_mode(NO_REACH, ipvs=REFUSED, cilium=TIMEOUT)
"""A port (or protocol) removed from a Service whose cluster IP stays: ipvs rejects it (KUBE-IPVS-FILTER),
Cilium has no frontend and leaves the packet alone (socket-LB -ENXIO path, no catch-all)."""


@pytest.fixture(scope="module")
def life(cluster, k8s, suite_config, scenario_namespace):
    sc = build_scenario(cluster, k8s, suite_config.run_id, scenario_namespace("lifecycle"), backends={0: 2})
    sc.jig.backends({sc.jig.node_names[0]: 1}, prefix="alt", extra_labels={"proxysuite.io/alt": "yes"})
    sc.jig.wait_pods()
    return sc


def _be(jig):
    return [b.name for b in jig.backend_pods() if b.name.startswith("be-") and b.ready]


def _alt(jig):
    return [b.name for b in jig.backend_pods() if b.name.startswith("alt-") and b.ready]


def _be_selector(jig):
    return {**jig.selector, GROUP_LABEL: "be-n1"}


@check("routing", "multiport-named-target-ports")
def test_multiport_named_target_ports(life, conformance):
    jig = life.jig
    svc = jig.service("multi", ports=[
        {"name": "web", "port": 100, "targetPort": "http", "protocol": "TCP"},
        {"name": "dns-ish", "port": 101, "targetPort": "udp", "protocol": "UDP"},
    ], selector=_be_selector(jig))
    jig.wait_endpoints("multi", ready=2)
    for proto in ("tcp", "udp"):
        conformance.run_row(jig, Row("pod-other-node", "clusterip", proto, expect=REACH_ALL, klass=REQUIRED, count=20),
                            svc, allowed=_be(jig), ask="hostname")


@check("routing", "same-port-tcp-and-udp")
def test_same_port_tcp_udp(life, conformance):
    jig = life.jig
    svc = jig.service("dual", ports=[
        {"name": "t", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "u", "port": 80, "targetPort": UDP_PORT, "protocol": "UDP"},
    ], selector=_be_selector(jig))
    jig.wait_endpoints("dual", ready=2)
    for proto in ("tcp", "udp"):
        conformance.run_row(jig, Row("pod-other-node", "clusterip", proto, expect=REACH, klass=REQUIRED), svc, allowed=_be(jig))
    # Drop UDP: its forwarding stops, TCP keeps working.
    jig.replace_service("dual", lambda s: s["spec"].update(ports=[p for p in s["spec"]["ports"] if p["protocol"] == "TCP"]))
    udp = Target("clusterip", svc["spec"]["clusterIP"], 80, "udp", service="dual")
    jig.wait_unreachable(jig.pod_vantage(jig.node_names[-1]), udp)
    obs = jig.probe(jig.pod_vantage(jig.node_names[-1]), udp, count=2, timeout=1.0)
    conformance.judge(for_mode(OLD_PORT_GONE, conformance.mode), REQUIRED, obs,
                      conformance.context(jig, jig.pod_vantage(jig.node_names[-1]), udp, None, []), f"UDP {udp} after the UDP port was removed")
    conformance.run_row(jig, Row("pod-other-node", "clusterip", "tcp", expect=REACH, klass=REQUIRED), jig.get_service("dual"),
                        allowed=_be(jig))


@check("routing", "type-changes")
def test_type_changes(life, conformance):
    """ExternalName → ClusterIP → NodePort → ExternalName (upstream [Conformance] ×2 plus the release direction)."""
    jig = life.jig
    jig.service("morph", type="ExternalName", ports=[{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}],
                selector=_be_selector(jig), tweak=lambda b: b["spec"].update(externalName="backend.example.invalid"))

    def to_cluster_ip(s):
        s["spec"].update(type="ClusterIP")
        s["spec"].pop("externalName", None)

    svc = jig.replace_service("morph", to_cluster_ip)
    jig.wait_endpoints("morph", ready=2)
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH, klass=REQUIRED), svc, allowed=_be(jig))
    svc = jig.replace_service("morph", lambda s: s["spec"].update(type="NodePort"))
    for row in (Row("external", "nodeport-remote", expect=REACH, klass=REQUIRED),
                Row("pod-other-node", "nodeport-local", expect=REACH, klass=REQUIRED)):
        conformance.run_row(jig, row, svc, allowed=_be(jig))
    old_vip = Target("clusterip", svc["spec"]["clusterIP"], 80, "tcp", service="morph")
    old_np = Target("nodeport", jig.node_ip(jig.node_names[0]), svc["spec"]["ports"][0]["nodePort"], "tcp", node=jig.node_names[0])

    def to_external_name(s):
        s["spec"] = {"type": "ExternalName", "externalName": "backend.example.invalid",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}

    jig.replace_service("morph", to_external_name)
    after = jig.get_service("morph")
    conformance.judge_value("ClusterIP and NodePort released after NodePort→ExternalName", REQUIRED, "no clusterIP, no nodePort",
                            f"clusterIP {after['spec'].get('clusterIP')}, nodePort {after['spec']['ports'][0].get('nodePort')}",
                            not after["spec"].get("clusterIP") and not after["spec"]["ports"][0].get("nodePort"))
    jig.barrier()
    pod = jig.pod_vantage(jig.node_names[-1])
    for t in (old_vip, old_np):
        obs = jig.probe(pod, t, count=2, timeout=1.0)
        conformance.judge(NO_REACH, EXPECTED, obs, conformance.context(jig, pod, t, None, []), f"{pod.name} -> {t} after the change to ExternalName")


@check("routing", "port-update")
def test_port_update(life, conformance):
    jig = life.jig
    svc = jig.service("port", ports=[{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}], selector=_be_selector(jig))
    jig.wait_endpoints("port", ready=2)
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH, klass=REQUIRED), svc, allowed=_be(jig))
    # Read-modify-write: a strategic merge patch would add port 8088 next to 80 (ports merge by port number).
    svc = jig.replace_service("port", lambda s: s["spec"]["ports"][0].update(port=8088))
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH, klass=REQUIRED), svc, allowed=_be(jig))
    # The proxy applies one Service change in one sync: once 8088 answers, 80 must be gone.
    pod = jig.pod_vantage(jig.node_names[-1])
    old = Target("clusterip", svc["spec"]["clusterIP"], 80, "tcp", service="port")
    obs = jig.probe(pod, old, count=2, timeout=1.0)
    conformance.judge(for_mode(OLD_PORT_GONE, conformance.mode), REQUIRED, obs, conformance.context(jig, pod, old, None, []),
                      f"{pod.name} -> {old} (the old port)")


@check("routing", "selector-update")
def test_selector_update(life, conformance):
    jig = life.jig
    svc = jig.service("sel", ports=[{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}], selector=_be_selector(jig))
    jig.wait_endpoints("sel", ready=2)
    row = Row("pod-other-node", "clusterip", expect=REACH, klass=REQUIRED, count=20)
    conformance.run_row(jig, row, svc, allowed=_be(jig), ask="hostname")
    jig.replace_service("sel", lambda s: s["spec"].update(selector={"proxysuite.io/alt": "yes"}))  # a patch would merge selectors
    jig.wait_endpoints("sel", ready=1)
    conformance.run_row(jig, row, svc, allowed=_alt(jig), settle="expect", ask="hostname")


@check("routing", "delete-removes-vip")
def test_delete_removes_vip(life, conformance):
    jig = life.jig
    svc = jig.service("doomed", type="NodePort", selector=_be_selector(jig))
    jig.wait_endpoints("doomed", ready=2)
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH, klass=EXPECTED), svc, allowed=_be(jig))
    jig.delete_service("doomed")
    jig.services.remove("doomed")
    jig.barrier()
    pod = jig.pod_vantage(jig.node_names[-1])
    for t in (Target("clusterip", svc["spec"]["clusterIP"], 80, "tcp", service="doomed"),
              Target("nodeport", jig.node_ip(jig.node_names[-1]), svc["spec"]["ports"][0]["nodePort"], "tcp", node=jig.node_names[-1])):
        obs = jig.probe(pod, t, count=2, timeout=1.0)
        conformance.judge(NO_REACH, EXPECTED, obs, conformance.context(jig, pod, t, None, []), f"{pod.name} -> {t} after delete")


@check("routing", "service-proxy-name")
def test_service_proxy_name(life, conformance):
    """A Service labelled for another proxy is ignored; removing the label brings it back (upstream e2e)."""
    jig = life.jig
    label = "service.kubernetes.io/service-proxy-name"
    svc = jig.service("other-proxy", selector=_be_selector(jig),
                      tweak=lambda b: b["metadata"]["labels"].update({label: "some-other-proxy"}))
    jig.wait_endpoints("other-proxy", ready=2)
    jig.barrier()
    conformance.run_row(jig, Row("pod-other-node", "clusterip", klass=EXPECTED, **GONE), svc)
    jig.patch_service("other-proxy", {"metadata": {"labels": {label: None}}})
    conformance.run_row(jig, Row("pod-other-node", "clusterip", expect=REACH, klass=EXPECTED), svc, allowed=_be(jig))


@check("routing", "headless")
def test_headless(life, conformance):
    """No VIP is allocated; the EndpointSlices list the ready pods, and those answer on their own IPs."""
    jig = life.jig
    svc = jig.service("headless", selector=_be_selector(jig), tweak=lambda b: b["spec"].update(clusterIP="None"))
    eps = jig.wait_endpoints("headless", ready=2)
    conformance.judge_value("headless Service cluster IP", EXPECTED, "None", str(svc["spec"].get("clusterIP")),
                            svc["spec"].get("clusterIP") == "None")
    pod = jig.pod_vantage(jig.node_names[-1])
    for e in eps:
        for addr in e["addresses"]:
            obs = pod.run([ProbeRequest(addr, HTTP_PORT, "tcp", ask="hostname", count=2)])
            jig.log("probe", f"{pod.name} -> {addr}:{HTTP_PORT}/tcp (endpoint of headless)", obs)
            conformance.judge(REACH, EXPECTED, obs, conformance.context(jig, pod, Target("pod", addr, HTTP_PORT, "tcp"), None, [e["name"]]),
                              f"{pod.name} -> endpoint {addr}:{HTTP_PORT}")


def _cluster_domain(jig) -> str:
    """The kubelet's clusterDomain (from its /configz), or the Kubernetes default."""
    import json

    try:
        # _preload_content=False: the client would otherwise turn the JSON body into a Python repr string.
        resp = jig.core.connect_get_node_proxy_with_path(jig.node_names[0], "configz", _preload_content=False)
        cfg = json.loads(resp.data)
        return cfg["kubeletconfig"]["clusterDomain"].strip(".") or "cluster.local"
    except Exception as exc:  # noqa: BLE001 - configz is optional; the default is what kind and kubeadm use
        jig.log("note", f"kubelet /configz unreadable ({type(exc).__name__}); assuming cluster domain cluster.local")
        return "cluster.local"


@check("routing", "external-name")
def test_external_name(cluster, life, conformance):
    """An ExternalName Service is a CNAME: a pod that dials its name reaches what the CNAME names.

    The CNAME points at another Service of this namespace, so no packet leaves the cluster. The
    proxy programs nothing for the alias; the name resolves through cluster DNS to the target's
    ClusterIP, and that must answer from the target's backends.
    """
    ok, why = cluster.features().require("cluster_dns")
    if not ok:
        pytest.skip(f"ExternalName is a DNS CNAME and this cluster has no cluster DNS: {why}")
    jig = life.jig
    jig.service("cname-target", selector=_be_selector(jig))
    jig.wait_endpoints("cname-target", ready=2)
    fqdn = f"cname-target.{jig.namespace}.svc.{_cluster_domain(jig)}"
    alias = jig.service("alias", type="ExternalName", ports=[{"name": "http", "port": 80, "protocol": "TCP"}],
                        tweak=lambda b: (b["spec"].pop("selector", None), b["spec"].update(externalName=fqdn)))
    conformance.judge_value("ExternalName allocates no cluster IP", REQUIRED, "no clusterIP",
                            str(alias["spec"].get("clusterIP")), not alias["spec"].get("clusterIP"))
    pod = jig.pod_vantage(jig.node_names[-1])
    # The pod's resolver expands the short name with its search path; CoreDNS answers the CNAME.
    t = Target("external-name", f"alias.{jig.namespace}.svc", 80, "tcp", service="alias")
    ctx = conformance.context(jig, pod, t, None, _be(jig))

    def answered():
        obs = jig.probe(pod, t, count=4, ask="hostname", label="external-name (settling)")
        return REACH.evaluate(obs, ctx).ok

    try:
        waits.wait_until(waits.PROXY_PROGRAMMED, answered, what=f"{pod.name} reaches {t.host} (CNAME to {fqdn})")
    except AssertionError as exc:
        jig.log("note", f"not resolvable yet: {exc}")
    obs = jig.probe(pod, t, count=20, ask="hostname", label="external-name")
    conformance.judge(REACH, REQUIRED, obs, ctx, f"{pod.name} -> {t} (ExternalName CNAME to {fqdn})")

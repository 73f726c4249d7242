"""A second service range (ServiceCIDR) and LoadBalancer ``ipMode``: Proxy versus VIP.

Scenario (module-shared): a second ``ServiceCIDR`` object (networking.k8s.io/v1, labelled with the
run id, deleted afterwards) with a /30 that overlaps nothing the cluster uses; two netexec backends on
the first node; Service ``first`` (ClusterIP from the cluster's own range), Services ``second`` and
``second-peer`` (their ClusterIPs requested inside the second range, filling it: see
:data:`SECOND_RANGE_SERVICES`) and Service ``proxy-lb`` of type LoadBalancer annotated
``proxysuite.io/lb-ip-mode: Proxy``, for which the local provider's load balancer writes
``ipMode: Proxy`` and proxies to the NodePorts itself (``proxysuite/cluster/local/lb.py``).

Both ranges are routed alike on the local provider: nodes have a default route to the control plane
(which does not forward) and pods a default route to their node, so a cluster IP from either range is
reachable only through the proxy's rules, and an address the proxy leaves alone dies at the control plane.

Release: v1.33 (ServiceCIDR GA, KEP-1880), v1.32 (LoadBalancer ipMode GA, KEP-1860)
Testname: Service, multiple service CIDRs and LoadBalancer ipMode
Description: A Service whose ClusterIP comes from a second ServiceCIDR SHOULD be reachable from pods
and nodes like one from the first (upstream e2e "should create Services and serve on different Service
CIDRs"). What the proxy does with an unallocated address of a service range is implementation-defined,
but it SHOULD treat every range the same way (kube-proxy's nftables mode drops both: its
cluster-ips-check rule lists every ServiceCIDR it watches). An ingress IP with ``ipMode: Proxy``
MUST NOT be short-circuited by the proxy: in-cluster traffic to it goes to the load balancer (here: it
is not answered, as nothing routes the pool inside the cluster), while the external client still
reaches the backends through the load balancer and the NodePorts. The VIP half (``ipMode: VIP``,
short-circuited) is the routing module's ``lb`` rows: the local load balancer writes ``ipMode: VIP``
for every Service without the annotation.
"""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from proxysuite import runlocks, waits
from proxysuite.conformance import (
    ANY_DECLARED,
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    REACH,
    RECORD_ONLY,
    TIMEOUT,
    Row,
    check,
    per_mode,
)
from proxysuite.conformance.expectations import DROPPED_ON_SENDER, Context, classify
from proxysuite.conformance.scenario import FALLBACK_EXTERNAL_IP_CIDR, ServiceSpec, build_scenario
from proxysuite.runscope import RUN_LABEL
from proxysuite.workloads.jig import ServiceJig

pytestmark = pytest.mark.xdist_group("service-cidrs")

SECOND_RANGE_CANDIDATES = {
    "ipv4": ("198.51.100.0/24", "10.97.0.0/24", "192.168.240.0/24", "172.31.240.0/24"),
    "ipv6": ("fd00:10:97::/112", "fd00:10:98::/112", "fd00:198:51:100::/112"),
}
"""Where the second ServiceCIDR comes from, per family the cluster serves: the first subnet of these (of
:data:`SECOND_RANGE_PREFIX`) that overlaps no ServiceCIDR, node, pod CIDR, ingress IP or externalIP range of the
cluster. TEST-NET-2 first for IPv4 (upstream's e2e uses TEST-NET-3, which this catalogue already uses for
externalIPs on providers that route none); unique-local ranges beside the local provider's for IPv6."""
SECOND_RANGE_PREFIX = {"ipv4": 30, "ipv6": 126}
"""Each family's second range is as small as the apiserver allows, so the module can fill it: a /30 has two
allocatable addresses (network and broadcast are reserved), a /126 three (only the subnet-router anycast
address, the first, is reserved; measured on v1.37.2: ``::0`` is refused, ``::1`` to ``::3`` allocated)."""
SECOND_RANGE_SERVICES = ("second", "second-peer", "second-v6")
"""The module's Services in the second range, filling it. The apiserver picks a Ready range at random for every
Service that does not ask for an address, so a range with room left would take other modules' Services; full, it
leaves them to the cluster's own range, and a proxy that misses the second range fails this module's rows only.
``second`` and ``second-peer`` hold one address of every family the cluster serves (both IPv4 ones), ``second-v6``
the third IPv6 one (an IPv6 single-stack Service). The range's unallocated address is then its IPv4 broadcast and
its IPv6 network address."""
IP_MODE_ANNOTATION = "proxysuite.io/lb-ip-mode"
"""Asks the local provider's load balancer for ``ipMode: Proxy`` (see proxysuite/cluster/local/lb.py)."""

QUIET = 0.5
"""Seconds a probe of a negative row waits. Where these rows fail, the proxy short-circuits the packet and the
backend answers within milliseconds; 0.5 s keeps the module's eight negative rows inside its time budget."""

SECOND_NOTE = (
    "KEP-1880 (multiple Service CIDRs, GA v1.33); upstream e2e 'Service CIDRs should create Services and serve on "
    "different Service CIDRs' (test/e2e/network/service_cidrs.go, not [Conformance]); kube-proxy (iptables, nftables, "
    "ipvs) matches each ClusterIP by address whatever its range (pkg/proxy/*/proxier.go syncProxyRules); ipvs binds it "
    "to kube-ipvs0 like any other; cilium: socket-LB and bpf_lxc.c look the frontend up by address in the service map, "
    "with no notion of a service range (bpf/bpf_sock.c __sock4_xlate_fwd)"
)
REACH_ROWS = [
    Row(v, "clusterip", p, service="second", klass=EXPECTED, note=SECOND_NOTE, per_family=True)
    for v in ("pod-same-node", "pod-other-node", "node")
    for p in ("tcp", "udp")
]

UNALLOCATED_NOTE = (
    "nftables: cluster-ips-check drops new connections to every range it learns from ServiceCIDR objects "
    "(pkg/proxy/nftables/proxier.go setupNFTables 'Drop traffic to unallocated ClusterIPs'; cmd/kube-proxy/app/server.go "
    "NewServiceCIDRConfig), in filter-output for a node's own packets, so a node's UDP send fails with EPERM (a TCP "
    "connect just times out: tcp_connect ignores the local error and retransmits); from a pod it drops in filter-forward. "
    "iptables has no such rule: the packet leaves by the default route (here: to the control plane, which does not "
    "forward); ipvs binds only Service addresses to kube-ipvs0 and has no rule for the rest; cilium has no frontend and "
    "no catch-all for a service range (bpf_sock.c, bpf_lxc.c); where ipvs/cilium lose the packet is unknown beyond "
    "'not answered'"
)
LAG_NOTE = (
    "nftables v1.37.2 learns a ServiceCIDR created at runtime (OnServiceCIDRsChanged) but rewrites the drop rule only "
    "in a full sync (setupNFTables runs when doFullSync; OnServiceCIDRsChanged does not set needFullSync; "
    "proxyutil.FullSyncPeriod = 1 h), so for up to an hour the second range's unallocated addresses leave the node "
    "like iptables'; TIMEOUT holds either way and the note says which was seen"
)
UNALLOCATED_ROWS = [
    Row("node", "unallocated-ip", "udp", service="first", klass=IMPLEMENTATION_DEFINED, count=2, timeout=QUIET, per_family=True,
        note=UNALLOCATED_NOTE,
        expect=per_mode(iptables=TIMEOUT, nftables=DROPPED_ON_SENDER, ipvs=TIMEOUT, cilium=TIMEOUT, custom=ANY_DECLARED)),
    Row("node", "unallocated-ip", "udp", service="second", klass=IMPLEMENTATION_DEFINED, count=2, timeout=QUIET, per_family=True,
        note=UNALLOCATED_NOTE + ". " + LAG_NOTE, expect=per_mode(TIMEOUT, custom=ANY_DECLARED)),
] + [
    Row("pod-other-node", "unallocated-ip", p, service="second", klass=IMPLEMENTATION_DEFINED, count=2, timeout=QUIET, per_family=True,
        note=UNALLOCATED_NOTE, expect=per_mode(TIMEOUT, custom=ANY_DECLARED))
    for p in ("tcp", "udp")
]

PROXY_NOTE = (
    "KEP-1860 (LoadBalancer ipMode, GA v1.32): with ipMode Proxy the proxy must not program the ingress IP; kube-proxy "
    "keeps only VIP-mode ingress IPs (pkg/proxy/serviceport.go newBaseServiceInfo, proxyutil.IsVIPMode), in every mode "
    "(iptables, nftables, ipvs share it). In-cluster packets then go where the node routes them; on the local provider "
    "nothing inside the cluster routes the LB pool (default route to the control plane, which does not forward), "
    "so they are not answered; cilium record-only: no source read here settles whether its service watcher skips ipMode Proxy ingress IPs"
)
PROXY_IN_CLUSTER = dict(expect=per_mode(TIMEOUT, cilium=RECORD_ONLY), klass=EXPECTED, count=2, timeout=QUIET,
                        service="proxy-lb", note=PROXY_NOTE)
PROXY_ROWS = [
    Row(v, "lb", p, **PROXY_IN_CLUSTER)
    for v in ("pod-same-node", "pod-other-node", "node")
    for p in ("tcp", "udp")
] + [
    Row("external", "lb", p, service="proxy-lb", expect=REACH, klass=EXPECTED,
        note="the proxying load balancer sends the client's packets to a node's NodePort (local provider: DNAT in the "
             "external client's namespace), which the proxy serves as any NodePort. " + PROXY_NOTE)
    for p in ("tcp", "udp")
]


def _overlaps(net, used: list) -> bool:
    return any(net.version == u.version and net.overlaps(u) for u in used)


def second_range(cluster, k8s, family: str) -> str:
    """The first subnet of :data:`SECOND_RANGE_CANDIDATES` of ``family`` that overlaps nothing the cluster uses."""
    from kubernetes import client

    net, core = client.NetworkingV1Api(k8s), client.CoreV1Api(k8s)
    plain = net.api_client.sanitize_for_serialization
    used = [ipaddress.ip_network(FALLBACK_EXTERNAL_IP_CIDR)]
    texts: list[str] = []
    for sc in plain(net.list_service_cidr().items):
        texts += (sc.get("spec") or {}).get("cidrs") or []
    for n in plain(core.list_node().items):
        texts += (n.get("spec") or {}).get("podCIDRs") or []
        texts += [a["address"] for a in (n.get("status") or {}).get("addresses") or [] if a.get("type", "").endswith("IP")]
    for s in plain(core.list_service_for_all_namespaces().items):
        texts += [i["ip"] for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")]
    used += [ipaddress.ip_network(t, strict=False) for t in texts]
    used += [ipaddress.ip_network(c) for c in _provider_ranges(cluster)]
    for block in SECOND_RANGE_CANDIDATES[family]:
        for cand in ipaddress.ip_network(block).subnets(new_prefix=SECOND_RANGE_PREFIX[family]):
            if not _overlaps(cand, used):
                return str(cand)
    pytest.skip(f"every candidate second service range {SECOND_RANGE_CANDIDATES[family]} overlaps a range this cluster uses")


def _provider_ranges(cluster) -> list[str]:
    """The provider's externalIP ranges (routed from the external client), of every family it has."""
    return list(getattr(cluster, "external_ip_cidrs", None) or ()) or [c for c in (getattr(cluster, "external_ip_cidr", None),) if c]


def _fill_plan(cidrs: dict[str, str], families: tuple[str, ...]) -> dict[str, list[str]]:
    """Service name → its clusterIPs (primary family first), taking every allocatable address of the second range."""
    hosts = {f: [str(ip) for ip in ipaddress.ip_network(cidrs[f]).hosts()] for f in families}
    plan = {svc: [hosts[f][i] for f in families] for i, svc in enumerate(SECOND_RANGE_SERVICES[:2])}
    if "ipv6" in families:
        plan["second-v6"] = hosts["ipv6"][2:3]
    return plan


@pytest.fixture(scope="module")
def cidrs(cluster, k8s, suite_config, scenario_namespace):
    from kubernetes import client

    families = tuple(cluster.ip_families)
    net = client.NetworkingV1Api(k8s)
    try:
        first = [c for sc in net.api_client.sanitize_for_serialization(net.list_service_cidr().items)
                 for c in (sc.get("spec") or {}).get("cidrs") or []]
    except client.ApiException as exc:
        pytest.skip(f"the cluster does not serve networking.k8s.io/v1 ServiceCIDR ({exc.status} {exc.reason}); needs v1.33+")
    ns = scenario_namespace("service-cidrs")
    name = f"ps-{suite_config.run_id}-{hashlib.sha1(ns.encode()).hexdigest()[:6]}"
    plan: dict[str, list[str]] = {}
    try:
        # Until every address of the range is ours, another module's Service could be given one of them.
        with runlocks.held(suite_config.run_id, "clusterip", exclusive=True):
            ranges = {f: second_range(cluster, k8s, f) for f in families}
            net.create_service_cidr({
                "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                "metadata": {"name": name, "labels": {RUN_LABEL: suite_config.run_id}},
                "spec": {"cidrs": [ranges[f] for f in families]}})

            def ready():
                obj = net.api_client.sanitize_for_serialization(net.read_service_cidr(name))
                return any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in (obj.get("status") or {}).get("conditions") or [])

            waits.wait_until(waits.ENDPOINTS, ready, what=f"ServiceCIDR {name} ({', '.join(ranges.values())}) is Ready")
            fill = ServiceJig(cluster, k8s, ns, suite_config.run_id)
            plan = _fill_plan(ranges, families)
            for svc, ips in plan.items():
                fill.service(svc, tweak=lambda b, ips=ips: b["spec"].update(
                    clusterIP=ips[0], clusterIPs=ips, ipFamilies=[f"IPv{ipaddress.ip_address(i).version}" for i in ips],
                    ipFamilyPolicy="PreferDualStack" if len(ips) > 1 else "SingleStack"))
        proxy_annotation = {IP_MODE_ANNOTATION: "Proxy"}
        sc = build_scenario(
            cluster, k8s, suite_config.run_id, ns, backends={0: 2},
            services={
                "first": ServiceSpec("ClusterIP"),
                "proxy-lb": ServiceSpec("LoadBalancer", tweak=lambda b: b["metadata"].setdefault("annotations", {}).update(proxy_annotation)),
            },
        )
        for svc in plan:
            sc.jig.services.append(svc)
            sc.jig.wait_endpoints(svc, ready=2)
            sc.services[svc] = sc.jig.get_service(svc)
        sc.cidrs, sc.cidr_name, sc.first_cidrs, sc.first_seen = ranges, name, first, {}
        sc.cidr = ", ".join(ranges.values())
        sc.describe = lambda: _describe(net, sc)
        yield sc
    finally:
        # The ServiceCIDR keeps a finalizer until no IPAddress in it is left: delete its Services first.
        for svc in plan:
            try:
                client.CoreV1Api(k8s).delete_namespaced_service(svc, ns)
            except client.ApiException:
                pass
        try:
            net.delete_service_cidr(name)
        except client.ApiException as exc:
            if exc.status not in (404,):
                print(f"[proxysuite] could not delete ServiceCIDR {name}: {exc.reason}")


def _describe(net, sc) -> str:
    """Forensics: every ServiceCIDR with its status, and the ingress (ipMode) of the Proxy Service."""
    import yaml

    out = []
    for d in net.api_client.sanitize_for_serialization(net.list_service_cidr().items):
        d.get("metadata", {}).pop("managedFields", None)
        out.append(yaml.safe_dump(d, sort_keys=False))
    try:
        lb = sc.svc("proxy-lb")
        out.append("# proxy-lb status.loadBalancer: " + repr((lb.get("status") or {}).get("loadBalancer")))
    except Exception as exc:  # noqa: BLE001
        out.append(f"# proxy-lb: {exc}")
    return "\n---\n".join(out)


def _with_forensics(conformance, cidrs, *mentions: str) -> None:
    conformance.forensics.add("servicecidrs", cidrs.describe, *cidrs.cidrs.values(), *cidrs.first_cidrs, *mentions)


@check("service-cidrs", "second-range-reach", rows=REACH_ROWS)
def test_second_range_reaches(row, cidrs, conformance):
    _with_forensics(conformance, cidrs)
    svc = cidrs.svc(row.service)
    for ip in svc["spec"].get("clusterIPs") or [svc["spec"]["clusterIP"]]:
        if not any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in cidrs.cidrs.values()):
            pytest.fail(f"service {row.service} got clusterIP {ip}, outside the second range {cidrs.cidr}")
    conformance.run_row(cidrs.jig, row, svc)


@check("service-cidrs", "unallocated-in-each-range", rows=UNALLOCATED_ROWS)
def test_unallocated_in_each_range(row, cidrs, conformance):
    _with_forensics(conformance, cidrs)
    jig = cidrs.jig
    svc = cidrs.svc(row.service)
    if row.vantage == "node" and row.service == "first":
        cidrs.first_seen[row.family] = classify(conformance.run_row(jig, row, svc), Context(), [DROPPED_ON_SENDER])
        return
    if row.vantage == "node" and row.service == "second":
        # What the first range gets from this vantage, beside the second range's verdict (the matrix shows both);
        # probed here only when the first-range row did not run first.
        first = cidrs.first_seen.get(row.family)
        if first is None:
            v, t, _ = conformance.resolve(jig, Row(row.vantage, "unallocated-ip", row.proto, family=row.family), cidrs.svc("first"))
            first = classify(jig.probe(v, t, count=row.count, timeout=row.timeout, label=f"{row.id} (first range)"),
                             Context(), [DROPPED_ON_SENDER])
        obs = conformance.run_row(jig, row, svc)
        second = classify(obs, Context(), [DROPPED_ON_SENDER])
        conformance.record.notes.append(f"unallocated address: first range {', '.join(cidrs.first_cidrs)} {first}, "
                                        f"second range {cidrs.cidr} {second}")
        return
    conformance.run_row(jig, row, svc)


@check("service-cidrs", "lb-ipmode-proxy", rows=PROXY_ROWS)
def test_lb_ip_mode_proxy(row, cidrs, conformance):
    svc = cidrs.svc(row.service)
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress and ingress[0].get("ipMode") != "Proxy":
        pytest.skip(f"the provider's load balancer wrote ipMode {ingress[0].get('ipMode')!r} for {IP_MODE_ANNOTATION}=Proxy; "
                    "this check needs one that proxies (the local provider's)")
    _with_forensics(conformance, cidrs, *(i.get("ip", "") for i in ingress))
    conformance.run_row(cidrs.jig, row, svc)

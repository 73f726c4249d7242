"""IP families: what ``ipFamilyPolicy`` allocates, and that each allocated family is served (dual-stack, KEP-563).

Scenario (module-shared): two netexec backends on the first node, and one NodePort Service per policy,
``single`` (``SingleStack``), ``prefer`` (``PreferDualStack``) and, on a dual-stack cluster only,
``require`` (``RequireDualStack``; a single-stack apiserver refuses it, which is the apiserver's business,
not the proxy's). Each row is one policy and one family: the Service must hold a cluster IP of that family
exactly when the policy and the cluster's families call for one; when it does, a client pod on another node
reaches it over that family. A ``SingleStack`` Service's NodePort is served on the node addresses of its own
family only: kube-proxy runs one proxier per family, and the other family's proxier never sees a Service
without a cluster IP of its family (``GetClusterIPByFamily`` in pkg/proxy/servicechangetracker.go).

On a dual-stack cluster three more checks build their own Service each: ``family-order`` (``ipFamilies`` with the
secondary family first, or alone: ``clusterIPs`` follow it and each answers), ``family-change`` (SingleStack →
PreferDualStack → SingleStack: the added cluster IP answers, then is gone) and ``headless-dual-stack`` (one
EndpointSlice set per family, every endpoint address answers).

On a single-stack IPv4 run the IPv6 rows skip with the reason; pick a family with ``--ip-family``.

Release: v1.23 (dual-stack GA, KEP-563)
Testname: Service, ipFamilyPolicy allocation and reach per family
Description: A SingleStack Service MUST get one cluster IP, of the cluster's primary family; a PreferDualStack
Service MUST get one per family the cluster serves, primary first, and a RequireDualStack one both. Every
allocated cluster IP MUST be reachable from pods, and a NodePort on every node address of each of the
Service's families. A SingleStack Service's NodePort SHOULD NOT be served on a node address of the other family.
"""

from __future__ import annotations

import pytest

from proxysuite.conformance import EXPECTED, NO_REACH, REACH, REQUIRED, Row, check
from proxysuite.conformance.scenario import ServiceSpec, build_scenario
from proxysuite.ipfamily import families_in, host_port, k8s_name
from proxysuite.probes import vantages as vsel
from proxysuite.probes.engine import ProbeRequest
from proxysuite.workloads.jig import HTTP_PORT, Target

pytestmark = pytest.mark.xdist_group("ip-families")

POLICIES = {"single": "SingleStack", "prefer": "PreferDualStack", "require": "RequireDualStack"}
SOURCE = ("KEP-563 (dual-stack): ipFamilyPolicy; kube-proxy builds one proxier per family and each sees only "
          "Services with a cluster IP of its family (pkg/proxy/servicechangetracker.go GetClusterIPByFamily)")


def _policy(policy: str):
    return lambda body: body["spec"].update(ipFamilyPolicy=policy)


@pytest.fixture(scope="module")
def families(cluster, k8s, suite_config, scenario_namespace):
    ns = scenario_namespace("ip-families")
    services = {name: ServiceSpec("NodePort", tweak=_policy(policy)) for name, policy in POLICIES.items()
                if name != "require" or len(cluster.ip_families) > 1}
    return build_scenario(cluster, k8s, suite_config.run_id, ns, backends={0: 2}, services=services)


def _expected_families(policy: str, cluster_families: tuple[str, ...]) -> tuple[str, ...]:
    return cluster_families[:1] if policy == "SingleStack" else cluster_families


@check("ip-families", "family-policy-allocation")
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("svc_name", list(POLICIES))
def test_allocation_and_reach(svc_name, family, families, cluster, conformance):
    """The cluster IP of ``family`` is there exactly when the policy calls for it, and then it answers."""
    policy = POLICIES[svc_name]
    why = cluster.family_reason(family)
    if why:
        pytest.skip(why)
    if svc_name not in families.services:
        pytest.skip(f"{policy} needs a dual-stack cluster; this one serves {' and '.join(cluster.ip_families)} "
                    "(the apiserver refuses the Service)")
    svc = families.svc(svc_name)
    spec = svc["spec"]
    got = families_in(spec.get("clusterIPs") or [])
    want = _expected_families(policy, cluster.ip_families)
    conformance.judge_value(
        f"{svc_name} ({policy}) clusterIPs", REQUIRED,
        expected=f"families {', '.join(want)} (ipFamilies {[k8s_name(f) for f in want]})",
        observed=f"clusterIPs {spec.get('clusterIPs')}, ipFamilies {spec.get('ipFamilies')}",
        ok=got == want and spec.get("ipFamilies") == [k8s_name(f) for f in want])
    if family in want:
        conformance.run_row(families.jig, Row("pod-other-node", "clusterip", "tcp", expect=REACH, klass=REQUIRED,
                                              service=svc_name, family=family, note=SOURCE), svc)


@check("ip-families", "nodeport-on-each-node-address")
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("svc_name", ["single", "prefer"])
def test_nodeport_per_node_address(svc_name, family, families, cluster, conformance):
    """From the external client, the NodePort on a node's address of ``family``: served iff the Service has that family."""
    why = cluster.family_reason(family)
    if why:
        pytest.skip(why)
    svc = families.svc(svc_name)
    has = family in families_in(svc["spec"].get("clusterIPs") or [])
    row = Row("external", "nodeport-remote", "tcp", expect=REACH if has else NO_REACH, klass=REQUIRED if has else EXPECTED,
              service=svc_name, family=family, count=10 if has else 3, interval=0.0 if has else 1.0, note=SOURCE)
    conformance.run_row(families.jig, row, svc)


def _dual_only(cluster) -> None:
    if len(cluster.ip_families) < 2:
        pytest.skip(f"needs a dual-stack cluster (--ip-family dual); this one serves {' and '.join(cluster.ip_families)}")


ORDER_SOURCE = ("KEP-563: spec.ipFamilies orders spec.clusterIPs, and spec.clusterIP is clusterIPs[0]; the order is "
                "the user's, not the cluster's (pkg/registry/core/service/storage/alloc.go initIPFamilyFields); each "
                "per-family proxier serves its own address whatever its position")
ORDERS = {
    # name: (ipFamilyPolicy, ipFamilies) asking for the secondary family first, or alone
    "prefer-secondary-first": ("PreferDualStack", ["secondary", "primary"]),
    "require-secondary-first": ("RequireDualStack", ["secondary", "primary"]),
    "single-secondary": ("SingleStack", ["secondary"]),
}


@check("ip-families", "family-order")
@pytest.mark.parametrize("order", list(ORDERS))
def test_family_order(order, cluster, k8s, suite_config, namespace, conformance):
    """``ipFamilies`` with the secondary family first (or alone): clusterIPs follow that order, each one answers,
    and a family the Service does not have is not served on its NodePort."""
    _dual_only(cluster)
    policy, wanted = ORDERS[order]
    primary, secondary = cluster.ip_families[0], cluster.ip_families[1]
    fams = [secondary if w == "secondary" else primary for w in wanted]
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 2}, host_clients=False,
                        services={"ordered": ServiceSpec("NodePort", tweak=lambda b: b["spec"].update(
                            ipFamilyPolicy=policy, ipFamilies=[k8s_name(f) for f in fams]))})
    spec = sc.svc()["spec"]
    got = list(families_in(spec.get("clusterIPs") or []))
    conformance.judge_value(f"ordered ({policy}, ipFamilies {[k8s_name(f) for f in fams]}) clusterIPs", REQUIRED,
                            expected=f"families {fams} in that order, clusterIP of {fams[0]}",
                            observed=f"clusterIPs {spec.get('clusterIPs')}, clusterIP {spec.get('clusterIP')}",
                            ok=got == fams and families_in([spec.get("clusterIP")]) == (fams[0],))
    for f in fams:
        conformance.run_row(sc.jig, Row("pod-other-node", "clusterip", "tcp", expect=REACH, klass=REQUIRED, family=f,
                                        note=ORDER_SOURCE), sc.svc())
    for f in cluster.ip_families:
        has = f in fams
        conformance.run_row(sc.jig, Row("external", "nodeport-remote", "tcp", expect=REACH if has else NO_REACH,
                                        klass=REQUIRED if has else EXPECTED, family=f, count=10 if has else 3,
                                        interval=0.0 if has else 1.0, note=SOURCE), sc.svc())


CHANGE_SOURCE = ("KEP-563: ipFamilyPolicy is mutable; SingleStack -> PreferDualStack allocates the other family's "
                 "cluster IP, PreferDualStack -> SingleStack releases clusterIPs[1] (pkg/registry/core/service/storage/"
                 "alloc.go); kube-proxy's per-family proxiers add and remove the Service as its cluster IP of their "
                 "family appears and goes (servicechangetracker.go GetClusterIPByFamily)")


@check("ip-families", "family-change")
def test_family_change(cluster, k8s, suite_config, namespace, conformance):
    """SingleStack → PreferDualStack: the new family's cluster IP answers; back to SingleStack: it is gone, and the
    primary one still answers."""
    _dual_only(cluster)
    primary, secondary = cluster.ip_families[0], cluster.ip_families[1]
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 2}, host_clients=False,
                        services={"changing": ServiceSpec("ClusterIP", tweak=_policy("SingleStack"))})
    jig = sc.jig
    primary_row = Row("pod-other-node", "clusterip", "tcp", expect=REACH, klass=REQUIRED, family=primary, note=CHANGE_SOURCE)
    conformance.run_row(jig, primary_row, sc.svc())
    up = jig.patch_service("changing", {"spec": {"ipFamilyPolicy": "PreferDualStack"}})
    added = [ip for ip in up["spec"].get("clusterIPs") or [] if families_in([ip]) == (secondary,)]
    conformance.judge_value("changing: SingleStack -> PreferDualStack clusterIPs", REQUIRED,
                            expected=f"one {primary} then one {secondary} cluster IP",
                            observed=f"clusterIPs {up['spec'].get('clusterIPs')}", ok=len(added) == 1 and
                            list(families_in(up["spec"].get("clusterIPs") or [])) == [primary, secondary])
    jig.wait_endpoints("changing", ready=2)
    conformance.run_row(jig, Row("pod-other-node", "clusterip", "tcp", expect=REACH, klass=REQUIRED, family=secondary,
                                 note=CHANGE_SOURCE), sc.svc(), settle="expect")
    down = jig.patch_service("changing", {"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": [k8s_name(primary)],
                                                   "clusterIPs": up["spec"]["clusterIPs"][:1]}})
    conformance.judge_value("changing: PreferDualStack -> SingleStack clusterIPs", REQUIRED,
                            expected=f"only the {primary} cluster IP", observed=f"clusterIPs {down['spec'].get('clusterIPs')}",
                            ok=list(families_in(down["spec"].get("clusterIPs") or [])) == [primary])
    jig.barrier()  # every node's proxy has applied the downgrade before the old address is judged
    pod = jig.pod_vantage(vsel.placement_of(jig).other_node()).for_family(secondary)
    gone = Target("clusterip", added[0], up["spec"]["ports"][0]["port"], "tcp", service="changing")
    conformance.gone(jig, pod, gone, EXPECTED, f"{pod.name} -> released {secondary} cluster IP {gone}")
    conformance.run_row(jig, primary_row, sc.svc())


HEADLESS_SOURCE = ("KEP-563: a headless Service's ipFamilies come from its policy (PreferDualStack: every family of "
                   "the cluster) and the EndpointSlice controller writes one slice set per family "
                   "(pkg/controller/endpointslice); no proxy programs a headless Service")


@check("ip-families", "headless-dual-stack")
def test_headless_dual_stack(cluster, k8s, suite_config, namespace, conformance):
    """A PreferDualStack headless Service: both families listed, one EndpointSlice set per family, and every
    endpoint address of each family answers from a pod on another node."""
    _dual_only(cluster)
    sc = build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 2}, host_clients=False,
                        services={"headless": ServiceSpec("ClusterIP", tweak=lambda b: b["spec"].update(clusterIP="None"))})
    jig = sc.jig
    spec = sc.svc()["spec"]
    want = [k8s_name(f) for f in cluster.ip_families]
    conformance.judge_value("headless (PreferDualStack) ipFamilies", EXPECTED, f"clusterIP None, ipFamilies {want}",
                            f"clusterIP {spec.get('clusterIP')}, ipFamilies {spec.get('ipFamilies')}",
                            ok=spec.get("clusterIP") == "None" and spec.get("ipFamilies") == want, detail=HEADLESS_SOURCE)
    client = jig.pod_vantage(vsel.placement_of(jig).other_node())
    for f in cluster.ip_families:
        eps = [e for e in jig.endpoints("headless", family=f) if e["ready"]]
        addrs = [a for e in eps for a in e["addresses"]]
        conformance.judge_value(f"headless {f} EndpointSlices", EXPECTED, f"2 ready {f} endpoints",
                                f"{len(eps)} ready: {addrs}", ok=len(eps) == 2 and families_in(addrs) == (f,))
        v = client.for_family(f)
        for e in eps:
            for addr in e["addresses"]:
                obs = v.run([ProbeRequest(addr, HTTP_PORT, "tcp", ask="hostname", count=2)])
                jig.log("probe", f"{v.name} -> {addr}:{HTTP_PORT}/tcp (headless {f} endpoint)", obs)
                conformance.judge(REACH, EXPECTED, obs, conformance.context(jig, v, Target("pod", addr, HTTP_PORT, "tcp"),
                                                                            None, [e["name"]]),
                                  f"{v.name} -> {f} endpoint {host_port(addr, HTTP_PORT)}")

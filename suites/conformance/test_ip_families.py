"""IP families: what ``ipFamilyPolicy`` allocates, and that each allocated family is served (dual-stack, KEP-563).

Scenario (module-shared): two netexec backends on the first node, and one NodePort Service per policy,
``single`` (``SingleStack``), ``prefer`` (``PreferDualStack``) and, on a dual-stack cluster only,
``require`` (``RequireDualStack``; a single-stack apiserver refuses it, which is the apiserver's business,
not the proxy's). Each row is one policy and one family: the Service must hold a cluster IP of that family
exactly when the policy and the cluster's families call for one; when it does, a client pod on another node
reaches it over that family. A ``SingleStack`` Service's NodePort is served on the node addresses of its own
family only: kube-proxy runs one proxier per family, and the other family's proxier never sees a Service
without a cluster IP of its family (``GetClusterIPByFamily`` in pkg/proxy/servicechangetracker.go).

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
from proxysuite.ipfamily import families_in, k8s_name

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

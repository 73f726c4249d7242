"""UDP flows and stale conntrack entries: a flow that keeps its source port follows its Service's backends.

Scenario (module-shared): backend ``old`` (one pod, selected by Service ``cycle``, NodePort, UDP only),
backend ``next`` (a Deployment at zero replicas with the same labels) and backend ``be`` (selected by no
Service yet), all on the first node; client pods on every node. Each check runs its flows at once, each a
UDP client sending ``hostname`` every 100 ms from ONE fixed source port (one conntrack entry for the whole
flow, :meth:`~proxysuite.workloads.jig.ServiceJig.flow`), so the rows of a check share one change.

* server-pod-cycles: while the flows run, ``next`` scales to one pod, and once it is an endpoint ``old``
  scales to zero (upstream's order: pod2 is created, then pod1 deleted). The conntrack entry of each flow
  was DNATed to ``old``; it must be removed so the next datagram is translated afresh and reaches ``next``.
* endpoints-appear: the flows start towards an address in the service range just before Service ``late``
  is created there without endpoints (a client that beat the proxy's sync, as a DNS client does when the
  Service is new), then the Service's selector changes to match ``be``: no endpoints to one endpoint. On
  iptables the early datagrams leave un-NATed by the default route and their conntrack entry outlives the
  REJECT (which matches new connections only); the proxy must remove it once the Service has an endpoint.

The black-hole (last answer from the old backend, or the endpoint change, to the first answer from the new
one) is measured at the flow's resolution (100 ms), recorded in the matrix notes, and judged against
:data:`STALE_FLOW_BOUND`. Failure forensics add the flow's conntrack entries on every node (by its source
port, and by the old backend's address).

Release: upstream e2e [sig-network] Conntrack ("should be able to preserve UDP traffic when server pod cycles
for a ClusterIP service" / "... for a NodePort service", "should be able to preserve UDP traffic when initial
unready endpoints get ready"), not [Conformance]
Testname: Service, UDP conntrack
Description: A UDP client that keeps its source port SHOULD reach the Service's current backend within
STALE_FLOW_BOUND after its backend is replaced, and after a Service it was already sending to gets its first
endpoint, from pods, nodes and outside: the proxy removes the conntrack entries that point at a backend that
is no longer serving, or at nothing.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from proxysuite.conformance import EXPECTED, IMPLEMENTATION_DEFINED, RECORD_ONLY, Row, check, per_mode
from proxysuite.conformance.expectations import flow_moves
from proxysuite.conformance.rows import expand_families
from proxysuite.conformance.scenario import build_scenario
from proxysuite.errors import Unsupported
from proxysuite.ipfamily import families_of
from proxysuite.probes import analysis
from proxysuite.probes import vantages as vsel
from proxysuite.workloads.jig import GROUP_LABEL, UDP_PORT

pytestmark = pytest.mark.xdist_group("udp-conntrack")

STALE_FLOW_BOUND = 10.0
"""Seconds a flow may be black-holed. What lies in it: the EndpointSlice controller noticing the old pod is
gone (or the new endpoint), kube-proxy's next sync (minSyncPeriod 1 s), which removes the stale entries in
the same sync (pkg/proxy/conntrack/cleanup.go CleanStaleEntries, called when a UDP Service's endpoints
changed), all on two busy cores. Upstream e2e polls for a minute; kube-proxy v1.37.2 needs about 1-2 s here
(see docs/conformance.md). A proxy that never removes the entry black-holes the flow for as long as it sends."""
FLOW_INTERVAL = 0.1
"""Seconds between the datagrams of a flow: the resolution of the black-hole measurement."""
FLOW_SECONDS = 40.0
"""Longest a flow runs: the new backend starting (PODS_READY-bounded, seconds here) plus the bound plus a tail.
A flow that moved ends after :data:`MOVED_AFTER` answers from the new backend."""
MOVED_AFTER = 5
"""Answers in a row from the new backend that end a flow early."""
LEAD = 0.6
"""Seconds the flows run before the change: their conntrack entries exist (and were answered) by then."""
PORT_BASE = 23450
"""Fixed client source ports, one per row: below the kernel's ephemeral range (32768-60999), so no other
probe on a shared vantage (a node, the external client) takes them."""
CYCLE_LABEL = "proxysuite.io/udp-cycle"

SOURCES = (
    "iptables, nftables: kube-proxy removes, in the sync after a UDP Service's endpoints change, every entry whose "
    "original destination is a Service IP:port or NodePort and whose reply source is not a serving endpoint "
    "(pkg/proxy/conntrack/cleanup.go CleanStaleEntries, endpointschangetracker.go ConntrackCleanupRequired); "
    "upstream e2e test/e2e/network/conntrack.go. ipvs: the ipvs proxier calls the same CleanStaleEntries "
    "(pkg/proxy/ipvs/proxier.go syncProxyRules) and sets net/ipv4/vs/expire_nodest_conn=1, so IPVS expires its own "
    "connection entry to a removed real server on the next packet; not run here (no IP_VS in this kernel), hence "
    "implementation-defined. cilium: record-only: socket-LB translates a connected UDP socket at connect()/sendmsg "
    "time and keeps the backend in its own maps; whether a flow moves, or its socket is terminated so the client "
    "reconnects (bpf-lb-sock-terminate-pod-connections, kernel sock_destroy), depends on version and settings; "
    "no source settles it for this client, which never reconnects"
)
CYCLE = dict(
    expect=per_mode(flow_moves(STALE_FLOW_BOUND, "kube-proxy's next sync removes the stale entry"), cilium=RECORD_ONLY),
    klass=per_mode(EXPECTED, ipvs=IMPLEMENTATION_DEFINED, cilium=IMPLEMENTATION_DEFINED),
    note=SOURCES,
)
CYCLE_ROWS = [
    Row("pod-other-node", "clusterip", "udp", **CYCLE),
    Row("node", "clusterip", "udp", **CYCLE),
    # Both NodePort rows dial the node without backends. Dialling the backend's own node would also pass on a
    # proxy that never cleans up: that node masquerades the flow out of the backend pod's interface, and the
    # kernel drops conntrack entries masqueraded out of an interface that goes away (nf_nat_masquerade's
    # netdevice notifier), so the flow moves without the proxy (seen here with the broken proxy: 200 ms).
    Row("pod-other-node", "nodeport-remote", "udp", **CYCLE),
    Row("external", "nodeport-remote", "udp", **CYCLE),
]
LATE = dict(
    expect=per_mode(flow_moves(STALE_FLOW_BOUND, "kube-proxy's sync for the new endpoint removes the stale entry"),
                    ipvs=RECORD_ONLY, cilium=RECORD_ONLY),
    klass=per_mode(EXPECTED, ipvs=IMPLEMENTATION_DEFINED, cilium=IMPLEMENTATION_DEFINED),
    note=SOURCES.replace("hence implementation-defined", "and ipvs: record-only here: how an un-NATed conntrack entry "
                         "made before the Service existed meets IPVS's own connection table (net/ipv4/vs/conntrack=1) "
                         "is not settled by a source"),
)
LATE_ROWS = [
    Row("pod-other-node", "clusterip", "udp", **LATE),
    Row("node", "clusterip", "udp", **LATE),
]

UDP_ONLY = [{"name": "udp", "port": 81, "targetPort": UDP_PORT, "protocol": "UDP"}]


class Flows:
    """What one shared change did to every row's flow. (A plain class: the README test loads catalogue
    modules outside sys.modules, where a dataclass cannot resolve its annotations.)"""

    def __init__(self):
        self.flows: dict = {}
        """Row id → (vantage, target, source port, observations)."""
        self.skipped: dict = {}
        """Row id → why the cluster cannot offer that row."""
        self.new: list = []
        """Backends the flows must reach after the change."""
        self.old_ips: list = []
        self.since: float | None = None
        """When the change took effect (the late Service's selector changed), for flows no backend answered before."""
        self.created: float | None = None
        """When the late Service was created (its flows ran against an unallocated address until then)."""
        self.notes: list = []
        self.error: BaseException | None = None


@pytest.fixture(scope="module")
def udp(cluster, k8s, suite_config, scenario_namespace):
    sc = build_scenario(cluster, k8s, suite_config.run_id, scenario_namespace("udp-conntrack"), backends={0: 1},
                        barrier=False)  # one barrier below, once every Service exists
    jig = sc.jig
    node = jig.node_names[0]
    jig.backends({node: 1}, prefix="old", extra_labels={CYCLE_LABEL: "yes"})
    jig.backends({node: 0}, prefix="next", extra_labels={CYCLE_LABEL: "yes"})
    jig.service("cycle", type="NodePort", ports=UDP_ONLY, selector={CYCLE_LABEL: "yes"})
    jig.wait_pods()
    jig.wait_endpoints("cycle", ready=1)
    jig.barrier()
    sc.shared = {}
    sc.families = families_of(suite_config.ip_family)  # as the rows were expanded at collection
    return sc


def _plan(jig, rows, svc, first_port: int, families: tuple[str, ...]) -> tuple[dict, dict]:
    """Vantage, target and source port of each row the cluster can offer; the reason for each it cannot."""
    placement = vsel.placement_of(jig)
    plan, skipped = {}, {}
    # Every family's flows run through the one shared change, each from its own source port.
    for i, row in enumerate(expand_families([dataclasses.replace(r, per_family=True) for r in rows], families)):
        try:
            if row.vantage == "external":
                ok, why = jig.cluster.features().require("external_client")
                if not ok:
                    raise Unsupported(why, "")
            v = vsel.vantage(jig, row.vantage, placement)
            if row.family:
                v = v.for_family(row.family)
            plan[row.id] = (v, vsel.target(jig, svc, row.target, "udp", placement, family=row.family or None), first_port + i)
        except Unsupported as exc:
            skipped[row.id] = exc.what
    return plan, skipped


def _run_flows(jig, plan: dict, leaving: str, change) -> dict:
    """Start every flow, let them run :data:`LEAD` seconds, make the change, and return their observations."""
    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        futures = {rid: pool.submit(jig.flow, v, t, source_port=port, seconds=FLOW_SECONDS, interval=FLOW_INTERVAL,
                                    until=MOVED_AFTER, leaving=leaving, label=rid)
                   for rid, (v, t, port) in plan.items()}
        time.sleep(LEAD)
        change()
        return {rid: (*plan[rid], f.result()) for rid, f in futures.items()}


def _cycle(sc) -> Flows:
    """Replace the only backend of ``cycle`` under every cycle row's flow (once per module)."""
    if "cycle" in sc.shared:
        return sc.shared["cycle"]
    jig = sc.jig
    out = sc.shared["cycle"] = Flows()
    try:
        plan, out.skipped = _plan(jig, CYCLE_ROWS, sc.svc("cycle"), PORT_BASE, sc.families)
        old = [b for b in jig.backend_pods("old-n1") if b.ready]
        out.old_ips = [b.ip for b in old]
        if not plan:
            return out

        def replace():
            t0 = time.monotonic()
            jig.scale("next-n1", 1)
            jig.wait_pods("next-n1")
            jig.wait_endpoints("cycle", ready=2)
            joined = time.monotonic() - t0
            jig.scale("old-n1", 0)
            out.notes.append(f"the new backend was an endpoint {joined:.1f}s after it was asked for; then the old one was deleted")

        out.flows = _run_flows(jig, plan, old[0].name, replace)
        out.new = jig.ready_backends("next-n1")
    except BaseException as exc:  # noqa: BLE001 - every row re-raises it
        out.error = exc
    return out


def _late(sc) -> Flows:
    """Send to an address just before Service ``late`` is created there without endpoints; then give it one."""
    if "late" in sc.shared:
        return sc.shared["late"]
    jig = sc.jig
    out = sc.shared["late"] = Flows()
    try:
        cycle = sc.svc("cycle")["spec"]
        ips = [jig.unallocated_cluster_ip(near) for near in cycle.get("clusterIPs") or [cycle["clusterIP"]]]

        def with_address(body):
            body["spec"].update(clusterIP=ips[0], clusterIPs=ips)

        stand_in = {"metadata": {"name": "late"}, "spec": {"clusterIP": ips[0], "clusterIPs": ips,
                                                           "ports": [{"port": 81, "protocol": "UDP"}]}}
        plan, out.skipped = _plan(jig, LATE_ROWS, stand_in, PORT_BASE + 2 * len(CYCLE_ROWS), sc.families)
        out.new = jig.ready_backends("be-n1")
        if not plan:
            return out

        def appear():
            jig.service("late", ports=UDP_ONLY, selector={CYCLE_LABEL: "none"}, tweak=with_address)
            t_created = time.time()
            jig.barrier()  # every node's proxy has programmed the Service without endpoints
            out.since = time.time()
            jig.replace_service("late", lambda s: s["spec"].update(selector={GROUP_LABEL: "be-n1"}))
            out.notes.append(f"the Service was created {out.since - t_created:.1f}s before it got an endpoint")
            out.created = t_created

        out.flows = _run_flows(jig, plan, "", appear)
    except BaseException as exc:  # noqa: BLE001
        out.error = exc
    return out


def _judge(conformance, sc, row, flows: Flows) -> None:
    jig = sc.jig
    # The whole transcript: the shared change (the writes, the flows) ran before most rows are judged.
    conformance.forensics.watch(jig, whole=True)
    if flows.error is not None:
        raise flows.error
    if row.id in flows.skipped:
        conformance.record.notes.append(f"skipped: {flows.skipped[row.id]}")
        pytest.skip(f"{row.id}: {flows.skipped[row.id]}")
    if not jig.cluster.features().udp:
        pytest.skip(f"{row.id}: " + jig.cluster.features().reasons.get("udp", "the cluster does not carry UDP"))
    v, t, port, obs = flows.flows[row.id]
    conformance.forensics.watch_flow(f"{row.id} (source port {port})", ["-p", "udp", "--orig-port-src", str(port)])
    for ip in flows.old_ips:
        conformance.forensics.watch_flow(f"to the old backend {ip}", ["-p", "udp", "--reply-src", ip])
    placement = vsel.placement_of(jig)
    ctx = dataclasses.replace(conformance.context(jig, v, t, placement, flows.new), since=flows.since)
    move = analysis.flow_move(obs, flows.new, flows.since)
    notes = list(flows.notes)
    if flows.since is not None:
        created = flows.created or flows.since
        for what, lo, hi in (("before the Service existed", 0, created), ("without endpoints", created, flows.since)):
            phase = [o for o in obs if lo <= o.started < hi]
            if phase:
                notes.append(f"{what}: {analysis.summary(phase)}")
    ms = f"{move.gap_s * 1000:.0f} ms" if move.gap_s is not None else "not measured"
    notes.append(f"black-hole {ms} (flow from {v.name}:{port} every {FLOW_INTERVAL * 1000:.0f} ms; {move.detail})")
    conformance.record.notes.extend(notes + [row.note])
    path = f"{v.name}:{port} -> {t} ({row.target}{'@' + t.node if t.node else ''}) flow"
    conformance.judge(row.expectation_for(conformance.mode), row.klass_for(conformance.mode), obs, ctx, path,
                      alternatives=row.alternatives())


@check("udp-conntrack", "server-pod-cycles", rows=CYCLE_ROWS, per_family=True)
def test_flow_follows_a_replaced_backend(row, udp, conformance):
    _judge(conformance, udp, row, _cycle(udp))


@check("udp-conntrack", "endpoints-appear", rows=LATE_ROWS, per_family=True)
def test_flow_reaches_a_first_endpoint(row, udp, conformance):
    _judge(conformance, udp, row, _late(udp))

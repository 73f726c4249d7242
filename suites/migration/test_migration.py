"""Live mode migration: switch a running cluster's proxy mode under traffic, then prove it is clean and serves.

Scenario (built once, kept through every step): the routing catalogue's — two netexec backends on the first
node, Service ``web`` of type LoadBalancer (ClusterIP, NodePorts, LB IP) with one externalIP, client pods on
every node.

Each step (one test per mode change, in order):

1. traffic starts: a new connection every ``--migration-interval`` from every vantage (pod on the backends'
   node, pod on the other node, the other node itself, the external client) to the ClusterIP (not from outside)
   and to the NodePort on both nodes; and held connections (keep-alive HTTP) from both client pods to the
   ClusterIP and the remote NodePort (feature ``load_generation``: a socket in the pod's namespace);
2. ``cluster.migrate_proxy(to)``: node by node, each serving its first sync in the new mode before the next;
3. traffic stops ``--migration-settle`` seconds later; every stream's and connection's disruption window is
   recorded (``<reports-dir>/migration/``) and must be within ``--migration-bound-ms``; every stream must have
   recovered and no held connection may break;
4. every node is audited: the old mode's rules are gone from every iptables backend and from nftables (except
   what kube-proxy leaves on purpose, :data:`proxysuite.migration.rules.KNOWN_LEFTOVERS`), the new mode's rules
   carry the Service;
5. the routing catalogue's TCP rows run through the conformance harness, judged for the *new* mode (the
   ``127.0.0.1:NodePort`` row is REACH on iptables and REFUSED on nftables: it shows which datapath answers).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from proxysuite.conformance.check import Conformance, Record
from proxysuite.conformance.forensics import Forensics
from proxysuite.conformance.scenario import ServiceSpec, build_scenario, external_ip
from proxysuite.migration import report, rules
from proxysuite.migration.traffic import HeldConnection, ProbeStream
from proxysuite.probes import vantages as vsel
from proxysuite.runscope import progress

pytestmark = pytest.mark.migration

VANTAGES = ("pod-same-node", "pod-other-node", "node", "external")
TARGETS = ("clusterip", "nodeport-local", "nodeport-remote")
HELD = (("pod-same-node", "clusterip"), ("pod-other-node", "clusterip"), ("pod-same-node", "nodeport-remote"),
        ("pod-other-node", "nodeport-remote"))


def _routing_rows():
    """The routing catalogue's rows (suites/conformance/test_routing.py), TCP only: the post-switch slice."""
    path = Path(__file__).resolve().parents[1] / "conformance" / "test_routing.py"
    spec = importlib.util.spec_from_file_location("proxysuite_migration_routing_rows", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [r for r in mod.ROWS if r.proto == "tcp"]


@pytest.fixture(scope="module")
def migration(cluster, k8s, suite_config, scenario_namespace, migration_options):
    for feature in ("proxy_migration", "node_exec"):
        ok, why = cluster.features().require(feature)
        if not ok:
            pytest.skip(why)
    ns = scenario_namespace("migration")
    eip, routed = external_ip(cluster, ns)
    sc = build_scenario(cluster, k8s, suite_config.run_id, ns, backends={0: 2},
                        services={"web": ServiceSpec("LoadBalancer", tweak=lambda b: b["spec"].update(externalIPs=[eip]))})
    sc.external_ip_routed = routed
    run = {"run_id": suite_config.run_id, "provider": cluster.provider, "start_mode": cluster.mode, "nodes": [n.name for n in cluster.nodes()],
           "interval_s": migration_options["interval"], "bound_ms": migration_options["bound_ms"],
           "settle_s": migration_options["settle"], "known_leftovers": sorted(f"{t}/{c}" for t, c in rules.KNOWN_LEFTOVERS), "steps": []}
    yield sc, run
    if run["steps"]:
        path, table = report.write(suite_config.reports_dir, run)
        progress(f"migration report: {path} (windows appended to {table})")


def _streams(sc, cluster, interval: float) -> tuple[list[ProbeStream], list[HeldConnection], list[str]]:
    jig, svc = sc.jig, sc.svc("web")
    placement = vsel.placement_of(jig)
    skipped = []
    streams = []
    for v in VANTAGES:
        if v == "external":
            ok, why = cluster.features().require("external_client")
            if not ok:
                skipped.append(f"external: {why}")
                continue
        vantage = vsel.vantage(jig, v, placement)
        for t in TARGETS:
            if v == "external" and t == "clusterip":
                continue  # cluster IPs are not routed outside the cluster
            streams.append(ProbeStream(vantage, vsel.target(jig, svc, t, "tcp", placement), v, t, interval))
    held = []
    ok, why = cluster.features().require("load_generation")
    if not ok:
        skipped.append(f"held connections: {why}")
    else:
        from proxysuite.cluster.local.netns import socket_factory

        for v, t in HELD:
            vantage = vsel.vantage(jig, v, placement)  # creates the client pod if needed
            pod = jig._clients[(vantage.node, False)]
            held.append(HeldConnection(socket_factory(cluster.load_netns(jig.namespace, pod)), vsel.target(jig, svc, t, "tcp", placement),
                                       v, t, interval))
    return streams, held, skipped


def _run_rows(cluster, k8s, sc, suite_config, nodeid: str) -> list[dict]:
    """The routing TCP rows through the conformance harness, judged for the mode the cluster runs now."""
    out = []
    for row in _routing_rows():
        if row.vantage == "external" and row.target == "external-ip" and not sc.external_ip_routed:
            out.append({"row": row.id, "result": "skipped", "detail": "the provider routes no externalIP range from outside"})
            continue
        record = Record()
        forensics = Forensics(cluster, k8s, f"{nodeid}::{row.id}", suite_config.reports_dir)
        harness = Conformance(cluster.mode, forensics, record)
        try:
            harness.run_row(sc.jig, row, sc.svc("web"))
            out.append({"row": row.id, "result": record.result, "expected": record.expected, "observed": record.observed})
        except pytest.skip.Exception as exc:
            out.append({"row": row.id, "result": "skipped", "detail": str(exc)})
        except pytest.fail.Exception as exc:
            # What the catalogue attaches to a failed check (rules, conntrack, transcript), taken right away.
            folder = forensics.write(forensics.collect())
            out.append({"row": row.id, "result": "fail", "expected": record.expected, "observed": record.observed, "detail": str(exc),
                        "forensics": str(folder)})
    return out


def test_migrate(step, migration, cluster, k8s, suite_config, migration_options, request):
    number, from_mode, to_mode = step
    sc, run = migration
    if cluster.mode != from_mode:
        pytest.fail(f"step {number} starts from {from_mode} but the cluster runs {cluster.mode}: an earlier step did not finish", pytrace=False)
    interval, bound, settle = migration_options["interval"], migration_options["bound_ms"], migration_options["settle"]
    streams, held, skipped = _streams(sc, cluster, interval)
    for h in held:
        h.open()
    for s in [*streams, *held]:
        s.start()
    record = {"step": number, "from_mode": from_mode, "to_mode": to_mode, "not_measured": skipped}
    run["steps"].append(record)
    try:
        time.sleep(settle)
        record["switch_started"] = time.time()
        switches = cluster.migrate_proxy(to_mode, progress=progress)
        record["switch_done"] = time.time()
        time.sleep(settle)
    finally:
        for s in [*streams, *held]:
            s.stop()
    until = time.time()
    record["nodes"] = [{**s.to_dict(), "restart_to_first_sync_ms": round((s.synced - s.stopped) * 1000, 1)} for s in switches]
    record["traffic"] = [s.result(until) for s in streams] + [h.result(until) for h in held]

    problems = []
    # Every step switches every node that runs the proxy: as many as the first step did (a step that lost a node
    # would leave that node's proxy in the old mode, unaudited).
    first = run["steps"][0]["nodes"]
    missing = sorted({n["node"] for n in first} - {s.node for s in switches})
    if missing or not switches:
        problems.append(f"the switch did not cover every node running the proxy: missing {', '.join(missing) or 'all'}")
    for item in record["traffic"]:
        where = f"{item['kind']} {item['vantage']} -> {item['target']} ({item['address']})"
        if item["kind"] == "probe":
            if item["attempts"] == 0:
                problems.append(f"{where}: no probe ran ({'; '.join(item['vantage_errors']) or 'no error recorded'})")
            elif not item["recovered"]:
                problems.append(f"{where}: still failing at the end ({', '.join(item['outcomes'])})")
        elif item["broken"]:
            problems.append(f"{where}: the held connection broke: {item['broken']}")
        if item["window_ms"] > bound:
            problems.append(f"{where}: disruption window {item['window_ms']:.0f} ms > bound {bound:.0f} ms")

    cluster_ip = sc.svc("web")["spec"]["clusterIP"]
    record["audit"] = []
    for node in [s.node for s in switches]:  # every node whose proxy switched (on kind, the control plane too)
        audit = rules.audit(cluster, node)
        present, detail = rules.new_mode_present(cluster, node, to_mode, cluster_ip)
        stale = rules.stale_after(audit, to_mode)
        record["audit"].append({**audit.summary(), "stale": stale, "new_mode": detail})
        problems += [f"{node}: {p}" for p in stale]
        if not present:
            problems.append(f"{node}: {detail}")
        mode_now = cluster.proxy_http(node, 10249, "/proxyMode")[1].strip()
        if mode_now != to_mode:
            problems.append(f"{node}: /proxyMode says {mode_now!r}, not {to_mode}")

    record["rows"] = _run_rows(cluster, k8s, sc, suite_config, request.node.nodeid)
    problems += [f"row {r['row']}: {r['detail']}" for r in record["rows"] if r["result"] == "fail"]

    windows = ", ".join(f"{i['vantage']}->{i['target']}{' (held)' if i['kind'] == 'held' else ''} {i['window_ms']:.0f}"
                        for i in record["traffic"])
    progress(f"step {number} {from_mode}->{to_mode}: windows ms: {windows}")
    if problems:
        pytest.fail(f"{from_mode} -> {to_mode}: " + "; ".join(problems), pytrace=False)

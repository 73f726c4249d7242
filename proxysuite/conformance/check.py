"""The check harness: declare a check, run its rows, judge, record for the matrix.

A check module declares rows and one function::

    ROWS = [Row("pod-same-node", "clusterip"), Row("external", "nodeport-remote", expect=REACH)]

    @check("routing", "pod-to-service", rows=ROWS)
    def test_routing(row, routing, conformance):
        conformance.run_row(routing.jig, row, routing.svc)

``@check`` adds the ``conformance`` marker, parametrizes over the rows (ids like
``pod-other-node->clusterip/tcp``) and tags the test with its capability for the
matrix. The ``conformance`` fixture (:class:`Conformance`) resolves names to
real vantages and addresses, waits until a positive path is programmed, probes,
evaluates the row's expectation for the mode under test and records the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pytest

from .. import waits
from ..errors import Unsupported
from ..probes import analysis
from ..probes import vantages as vsel
from ..probes.engine import Observation
from . import verdict as vd
from .expectations import Context, Expectation, Klass
from .rows import Row

SAMPLE_SPAN = 2.0
"""Seconds over which a positive row's measured probes are spread (at least). kube-proxy syncs at most
once per minSyncPeriod (1 s by default) and a busy cluster makes it sync about that often, so the sample
covers two or more resyncs: a proxy whose rules are right only for a moment after each sync (a resync
race, two writers on one table) fails instead of being sampled inside its good moment. Measured: such a
proxy passed every NodePort row when the sample was taken within one second of the first answer."""


def check(capability: str, name: str, rows: Sequence[Row] | None = None, *, disruptive: bool = False,
          per_family: bool = False):
    """Declare a conformance check.

    :param capability: the matrix group: ``routing``, ``load-balancing``, ``session-affinity``,
        ``readiness``, ``no-endpoints``, ``source-ip``, ``traffic-policy``, ``traffic-distribution``, ``proxy-health``,
        ``disruption``, ``sctp``, ``udp-conntrack``, ``long-lived``, ``service-cidrs``, ``ip-families``.
    :param name: kebab-case scenario name that reads source-to-target, e.g. ``pod-to-clusterip``.
    :param rows: parametrize the test over these rows (argument ``row``).
    :param per_family: every row means the same in each IP family (as ``Row(per_family=True)`` on each): on a
        cluster that is not single-stack IPv4 the rows run once per family it serves.
    """
    if per_family and rows is not None:
        from dataclasses import replace

        rows = [r if r.family else replace(r, per_family=True) for r in rows]

    def deco(fn):
        marks = [pytest.mark.conformance, pytest.mark.proxysuite_check(capability=capability, name=name)]
        if disruptive:
            marks.append(pytest.mark.disruptive)
        if rows is not None and any(r.per_family for r in rows):
            # Expanded per IP family at collection, when --ip-family is known (plugin.pytest_generate_tests).
            marks.append(pytest.mark.proxysuite_rows(list(rows)))
        elif rows is not None:
            marks.append(pytest.mark.parametrize("row", list(rows), ids=[r.id for r in rows]))
        for m in reversed(marks):
            fn = m(fn)
        return fn

    return deco


@dataclass
class Record:
    """What the matrix stores for one test (one row, or one non-row check)."""

    result: str = ""
    """The worst step result (:data:`proxysuite.conformance.verdict.RESULTS`); empty until a step is judged."""
    klass: str = ""
    expected: str = ""
    observed: str = ""
    path: str = ""
    detail: str = ""
    notes: list[str] = field(default_factory=list)


_RANK = {vd.PASS: 0, vd.IMPL_AS_DECLARED: 1, vd.IMPL_OTHER: 2, vd.RECORD: 3, vd.FAIL: 4}


class Conformance:
    """Per-test harness; created by the ``conformance`` fixture."""

    def __init__(self, mode: str, forensics, record: Record):
        self.mode = mode
        self.forensics = forensics
        self.record = record

    def _push_step(self) -> None:
        # A check with several steps keeps the last verdict in the record and the earlier ones as notes.
        r = self.record
        if r.path:
            r.notes.append(f"step: {r.path}: expected {r.expected} ({r.klass}), observed {r.observed}")

    # --- generic verdicts ----------------------------------------------------------------------
    def _record(self, decision: vd.Decision, klass: Klass, path: str, notes: Sequence[str] = ()) -> None:
        self._push_step()
        r = self.record
        r.klass = klass.value
        r.expected, r.observed, r.path, r.detail = decision.expected, decision.observed, path, decision.detail
        r.result = max(r.result or vd.PASS, decision.result, key=_RANK.__getitem__)
        r.notes.extend(notes)
        if decision.result == vd.IMPL_OTHER:
            r.notes.append(f"{self.mode}: {decision.detail}")
        if decision.failed:
            notes = [n for n in r.notes if not n.startswith("step:")]
            pytest.fail(f"{path}: expected {decision.expected} ({klass.value} for {self.mode}), observed "
                        f"{decision.observed}: {decision.detail}" + (f" [notes: {'; '.join(notes)}]" if notes else ""),
                        pytrace=False)

    def judge(self, expectation: Expectation, klass: Klass, obs: Sequence[Observation], ctx: Context, path: str,
              alternatives: Sequence[Expectation] = ()) -> vd.Decision:
        """Judge observations by the one verdict rule (:mod:`~proxysuite.conformance.verdict`), record, fail."""
        decision = vd.decide(self.mode, expectation, klass, obs, ctx, alternatives)
        self._record(decision, klass, path)
        return decision

    def judge_value(self, what: str, klass: Klass, expected: str, observed: str, ok: bool, detail: str = "") -> vd.Decision:
        """A verdict that is not about probe outcomes (HTTP status of /healthz, a metric's presence).

        The same rule as :meth:`judge`: a value that is not what the row declares fails in every class.
        """
        decision = vd.decide_value(klass, expected, observed, ok, detail)
        self._record(decision, klass, what)
        return decision

    def gone(self, jig, vantage, target, klass: Klass, path: str, expectation: Expectation | None = None,
             count: int = 3) -> list[Observation]:
        """This address must now be gone: no probe from ``vantage`` to ``target`` is answered.

        For lifecycle checks (a port changed, a Service deleted or turned into ExternalName).
        ``expectation`` defaults to NO_REACH; pass a precise one (REFUSED, TIMEOUT) where the mode declares it.
        """
        from .expectations import NO_REACH

        obs = jig.probe(vantage, target, count=count, timeout=1.0, label=path)
        self.judge(expectation or NO_REACH, klass, obs, self.context(jig, vantage, target, None, []), path)
        return obs

    # --- rows ----------------------------------------------------------------------------------
    def resolve(self, jig, row: Row, svc, backend_pod: str | None = None):
        """(vantage, target, placement) for a row; skips the test with the reason when the cluster cannot offer them."""
        placement = vsel.placement_of(jig)
        feats = jig.cluster.features()
        for needed, feature in (("lb", "load_balancer"), ("external", "external_client")):
            if needed in (row.target, row.vantage):
                ok, why = feats.require(feature)
                if not ok:
                    self.record.notes.append(f"skipped: {why}")
                    pytest.skip(f"{row.id}: {why}")
        if row.target == "lb":
            ok, why = feats.require("lb_via_proxy")
            if not ok:
                self.record.notes.append(f"skipped: {why}")
                pytest.skip(f"{row.id}: {why}")
        if row.family:
            why = jig.cluster.family_reason(row.family)
            if why:
                self.record.notes.append(f"skipped: {why}")
                pytest.skip(f"{row.id}: {why}")
        try:
            v = vsel.vantage(jig, row.vantage, placement, backend_pod=backend_pod)
            if row.family:
                v = v.for_family(row.family)
            t = vsel.target(jig, svc, row.target, row.proto, placement, family=row.family or None)
        except Unsupported as exc:
            self.record.notes.append(f"skipped: {exc.what}")
            pytest.skip(f"{row.id}: {exc.what}")
        if row.proto == "udp" and not jig.cluster.features().udp:
            pytest.skip(f"{row.id}: " + jig.cluster.features().reasons.get("udp", "the cluster does not carry UDP"))
        return v, t, placement

    def context(self, jig, vantage, tgt, placement, allowed: Sequence[str] | None = None) -> Context:
        node = vsel.receiving_node(jig, vantage, tgt, placement)
        ready = jig.ready_backends() if allowed is None else list(allowed)
        local = [b.name for b in jig.backend_pods() if b.name in ready and b.node == node]
        return Context(source_ip=getattr(vantage, "source_ip", None), backends=ready, local_backends=local)

    def run_row(self, jig, row: Row, svc, *, count: int | None = None, allowed: Sequence[str] | None = None,
                backend_pod: str | None = None, settle: bool | str | None = None, ask: str = "both") -> list[Observation]:
        """Resolve, settle, probe and judge one row; return the observations.

        :param allowed: backends that may answer (default: the ready, non-terminating backends now).
        :param settle: wait until one probe is answered before the measured probes; defaults to
            True for positive expectations (negative rows rely on the scenario's :meth:`~ServiceJig.barrier`);
            ``"expect"`` waits until a small batch already meets the expectation (after a change).
        """
        self.forensics.watch(jig)
        v, t, placement = self.resolve(jig, row, svc, backend_pod)
        expectation = row.expectation_for(self.mode)
        klass = row.klass_for(self.mode)
        path = f"{v.name} -> {t} ({row.target}{'@' + t.node if t.node else ''})"
        if settle is None:
            settle = expectation.positive
        if settle == "expect":
            # The datapath is changing under us (scale, readiness, selector): wait until a small
            # batch already satisfies the expectation, then take the measured sample.
            def holds():
                batch = jig.probe(v, t, count=min(10, count or row.count), ask=ask, label=row.id + " (settling)")
                return expectation.evaluate(batch, self.context(jig, v, t, placement, allowed)).ok

            try:
                waits.wait_until(waits.PROXY_PROGRAMMED, holds, what=f"{path} shows {expectation.name}")
            except AssertionError as exc:
                jig.log("note", f"did not settle: {exc}")
        elif settle:
            try:
                jig.wait_reachable(v, t)
            except AssertionError as exc:
                jig.log("note", f"not programmed yet: {exc}")
        n = count or row.count
        interval = row.interval
        if expectation.positive and n > 1:
            interval = max(interval, SAMPLE_SPAN / (n - 1))
        obs = jig.probe(v, t, count=n, ask=ask, label=row.id, interval=interval, timeout=row.timeout)
        ctx = self.context(jig, v, t, placement, allowed)
        if expectation.rejected_by_chance_alone(obs, ctx):
            first = expectation.evaluate(obs, ctx).detail
            n = analysis.CONFIRMATION_FACTOR * len(obs)
            self.record.notes.append(f"first sample rejected ({first}); judged on a fresh sample of {n}")
            jig.log("note", f"{path}: uniformity rejected on {len(obs)} probes; confirming on {n}")
            obs = jig.probe(v, t, count=n, ask=ask, label=row.id + " (confirming)",
                            interval=max(row.interval, SAMPLE_SPAN / (n - 1)), timeout=row.timeout)
            ctx = self.context(jig, v, t, placement, allowed)
        if row.note:
            self.record.notes.append(row.note)
        self.judge(expectation, klass, obs, ctx, path, alternatives=row.alternatives())
        return obs

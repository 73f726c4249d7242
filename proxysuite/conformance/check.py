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
from .expectations import (
    IMPLEMENTATION_DEFINED,
    Context,
    Expectation,
    Klass,
    classify,
)
from .rows import Row

POSITIVE = ("REACH", "REACH_ALL", "REACH_LOCAL", "UNIFORM", "STICKY", "SRC_IP_PRESERVED", "SRC_IP_MASQUERADED")


def check(capability: str, name: str, rows: Sequence[Row] | None = None, *, disruptive: bool = False):
    """Declare a conformance check.

    :param capability: the matrix group: ``routing``, ``load-balancing``, ``session-affinity``,
        ``readiness``, ``no-endpoints``, ``source-ip``, ``traffic-policy``, ``proxy-health``, ``disruption``.
    :param name: kebab-case scenario name that reads source-to-target, e.g. ``pod-to-clusterip``.
    :param rows: parametrize the test over these rows (argument ``row``).
    """

    def deco(fn):
        marks = [pytest.mark.conformance, pytest.mark.proxysuite_check(capability=capability, name=name)]
        if disruptive:
            marks.append(pytest.mark.disruptive)
        if rows is not None:
            marks.append(pytest.mark.parametrize("row", list(rows), ids=[r.id for r in rows]))
        for m in reversed(marks):
            fn = m(fn)
        return fn

    return deco


@dataclass
class Record:
    """What the matrix stores for one test (one row, or one non-row check)."""

    klass: str = ""
    expected: str = ""
    observed: str = ""
    path: str = ""
    detail: str = ""
    notes: list[str] = field(default_factory=list)


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
    def judge(self, expectation: Expectation | None, klass: Klass, obs: Sequence[Observation], ctx: Context, path: str,
              alternatives: Sequence[Expectation] = ()) -> None:
        """Evaluate, record, and fail the test when the verdict says so."""
        candidates = ([expectation] if expectation else []) + [a for a in alternatives if a is not expectation]
        observed = classify(obs, ctx, candidates)
        self._push_step()
        self.record.klass = klass.value
        self.record.expected = expectation.name if expectation else "(none declared)"
        self.record.observed = observed
        self.record.path = path
        if expectation is None:
            self.record.notes.append(f"no expectation declared for mode {self.mode}; observed {observed}")
            return
        verdict = expectation.evaluate(obs, ctx)
        self.record.detail = verdict.detail
        if verdict.ok:
            return
        if klass is IMPLEMENTATION_DEFINED and any(a.evaluate(obs, ctx).ok for a in alternatives):
            self.record.notes.append(f"implementation-defined: documented {expectation.name} for {self.mode}, observed {observed}")
            return
        notes = [n for n in self.record.notes if not n.startswith("step:")]
        pytest.fail(f"{path}: expected {expectation.name} ({klass.value} for {self.mode}), observed {observed}: {verdict.detail}"
                    + (f" [notes: {'; '.join(notes)}]" if notes else ""), pytrace=False)

    def judge_value(self, what: str, klass: Klass, expected: str, observed: str, ok: bool, detail: str = "") -> None:
        """A verdict that is not about probe outcomes (HTTP status of /healthz, a metric's presence)."""
        self._push_step()
        self.record.klass = klass.value
        self.record.expected = expected
        self.record.observed = observed
        self.record.path = what
        self.record.detail = detail
        if not ok and klass is not IMPLEMENTATION_DEFINED:
            pytest.fail(f"{what}: expected {expected} ({klass.value} for {self.mode}), observed {observed}. {detail}", pytrace=False)
        if not ok:
            self.record.notes.append(f"implementation-defined: documented {expected}, observed {observed}")

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
        try:
            v = vsel.vantage(jig, row.vantage, placement, backend_pod=backend_pod)
            t = vsel.target(jig, svc, row.target, row.proto, placement)
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
            settle = expectation is not None and expectation.name.split("+")[0] in POSITIVE
        if settle == "expect" and expectation is not None:
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
        obs = jig.probe(v, t, count=count or row.count, ask=ask, label=row.id, interval=row.interval,
                        timeout=row.timeout)
        ctx = self.context(jig, v, t, placement, allowed)
        if expectation is not None and expectation.rejected_by_chance_alone(obs, ctx):
            first = expectation.evaluate(obs, ctx).detail
            n = analysis.CONFIRMATION_FACTOR * len(obs)
            self.record.notes.append(f"first sample rejected ({first}); judged on a fresh sample of {n}")
            jig.log("note", f"{path}: uniformity rejected on {len(obs)} probes; confirming on {n}")
            obs = jig.probe(v, t, count=n, ask=ask, label=row.id + " (confirming)", interval=row.interval,
                            timeout=row.timeout)
            ctx = self.context(jig, v, t, placement, allowed)
        if row.note:
            self.record.notes.append(row.note)
        self.judge(expectation, klass, obs, ctx, path, alternatives=row.alternatives())
        return obs

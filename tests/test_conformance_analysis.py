"""Verdict machinery without a cluster: uniformity statistics, expectations, rows, matrix merge."""

from __future__ import annotations

import json
import random

import pytest

from proxysuite.conformance import (
    IMPLEMENTATION_DEFINED,
    NO_REACH,
    REACH,
    REACH_ALL,
    REACH_LOCAL,
    REFUSED,
    SRC_IP_MASQUERADED,
    SRC_IP_PRESERVED,
    STICKY,
    TIMEOUT,
    UNIFORM,
    Context,
    Row,
    per_mode,
)
from proxysuite.conformance import matrix as mx
from proxysuite.conformance.expectations import classify
from proxysuite.probes import analysis
from proxysuite.probes.engine import Observation


def ok(backend, client_ip="10.244.2.5"):
    return Observation("10.96.0.10", 80, "tcp", "ok", backend=backend, client_ip=client_ip)


def bad(outcome, error=None):
    return Observation("10.96.0.10", 80, "tcp", outcome, error=error)


BACKENDS = ["a", "b", "c"]


def test_sample_size_gives_stated_power():
    n = analysis.samples_for_uniformity(3)
    assert analysis.chi_square_power(n, 3) >= analysis.DEFAULT_POWER
    assert analysis.chi_square_power(n - 3, 3) < analysis.DEFAULT_POWER
    assert n % 3 == 0


def test_uniform_sample_passes_and_skew_fails():
    rng = random.Random(7)
    n = analysis.samples_for_uniformity(3)
    fair = [ok(rng.choice(BACKENDS)) for _ in range(n)]
    skew = [ok(rng.choices(BACKENDS, weights=[2, 1, 1])[0]) for _ in range(n)]
    ctx = Context(backends=BACKENDS)
    assert UNIFORM.evaluate(fair, ctx).ok
    v = UNIFORM.evaluate(skew, ctx)
    assert not v.ok and "chi-square" in v.detail and "power" in v.detail


def test_false_alarm_rate_matches_alpha():
    # 2000 fair samples of the test: at alpha 0.001 expect about 2 rejections; allow up to 10.
    rng = random.Random(11)
    fails = sum(not analysis.uniformity([ok(rng.choice(BACKENDS)) for _ in range(120)], BACKENDS).uniform for _ in range(2000))
    assert fails <= 10


def test_only_a_chance_rejection_is_confirmed():
    ctx = Context(backends=BACKENDS, source_ip="10.244.2.5")
    expectation = REACH_ALL & UNIFORM
    lopsided = [ok("a")] * 67 + [ok("b")] * 40 + [ok("c")] * 85  # the CI sample that went red by chance
    assert not expectation.evaluate(lopsided, ctx).ok
    assert expectation.rejected_by_chance_alone(lopsided, ctx)
    # deterministic failures are judged at once: a missing or stray backend, a failed probe, another part
    assert not expectation.rejected_by_chance_alone([ok("a")] * 60 + [ok("b")] * 60, ctx)
    assert not expectation.rejected_by_chance_alone(lopsided + [ok("zombie")], ctx)
    assert not expectation.rejected_by_chance_alone(lopsided + [bad("timeout")], ctx)
    assert not (UNIFORM & SRC_IP_MASQUERADED).rejected_by_chance_alone(lopsided, ctx)
    assert not REACH_ALL.rejected_by_chance_alone(lopsided, ctx)
    fair = [ok(b) for b in BACKENDS] * 40
    assert not expectation.rejected_by_chance_alone(fair, ctx)


def test_reject_then_confirm_keeps_power_and_cuts_false_alarms():
    n = analysis.samples_for_uniformity(3)
    assert analysis.two_stage_power(n, 3) >= 0.99 * analysis.chi_square_power(n, 3)
    # Simulated checks: a uniform proxy almost never fails both stages, a 2:1 skewed one nearly always does.
    rng = random.Random(5)

    def check_fails(weights):
        first = analysis.uniformity([ok(b) for b in rng.choices(BACKENDS, weights, k=n)], BACKENDS)
        if first.uniform:
            return False
        k = analysis.CONFIRMATION_FACTOR * n
        return not analysis.uniformity([ok(b) for b in rng.choices(BACKENDS, weights, k=k)], BACKENDS).uniform

    assert sum(check_fails([1, 1, 1]) for _ in range(3000)) == 0
    assert sum(check_fails([2, 1, 1]) for _ in range(300)) >= 0.8 * 300


def test_missing_and_unexpected_backends():
    obs = [ok("a")] * 10 + [ok("b")] * 10
    assert not REACH_ALL.evaluate(obs, Context(backends=BACKENDS)).ok
    assert "c" in analysis.uniformity(obs, BACKENDS).missing
    stray = obs + [ok("zombie")]
    v = REACH.evaluate(stray, Context(backends=["a", "b"]))
    assert not v.ok and "zombie" in v.detail


def test_refused_tolerates_icmp_rate_limit_but_not_drop():
    assert REFUSED.evaluate([bad("refused"), bad("timeout"), bad("refused")], Context()).ok
    assert not REFUSED.evaluate([bad("timeout")] * 3, Context()).ok  # that is a DROP
    assert TIMEOUT.evaluate([bad("timeout")] * 3, Context()).ok
    assert not REFUSED.evaluate([bad("refused"), ok("a")], Context()).ok
    # A bare EPERM is no longer read as a refusal (a DROP on the sender's output path gives EPERM too);
    # the engine tells them apart (tests/test_probe_drop_reject.py).
    eperm = bad("error", "PermissionError: [Errno 1] Operation not permitted")
    assert not REFUSED.evaluate([eperm, eperm], Context()).ok


def test_source_ip_and_locality():
    ctx = Context(source_ip="10.200.0.200", backends=BACKENDS, local_backends=["a"])
    kept = [ok("a", "10.200.0.200")] * 5
    snat = [ok("a", "10.244.1.1")] * 5
    assert (REACH & SRC_IP_PRESERVED).evaluate(kept, ctx).ok
    assert not SRC_IP_PRESERVED.evaluate(snat, ctx).ok
    assert SRC_IP_MASQUERADED.evaluate(snat, ctx).ok
    assert not REACH_LOCAL.evaluate(kept + [ok("b", "10.200.0.200")], ctx).ok
    assert (REACH_LOCAL & SRC_IP_PRESERVED).name == "REACH_LOCAL+SRC_IP_PRESERVED"
    # Without the vantage's own address neither source-IP claim can be made.
    for unknown in (None, ""):
        blind = Context(source_ip=unknown, backends=BACKENDS)
        assert not SRC_IP_MASQUERADED.evaluate(snat, blind).ok
        assert not SRC_IP_PRESERVED.evaluate(kept, blind).ok


def test_sticky():
    assert STICKY.evaluate([ok("a")] * 20, Context()).ok
    assert not STICKY.evaluate([ok("a")] * 19 + [ok("b")], Context()).ok


def test_classify_names_the_most_specific_behaviour():
    assert classify([bad("timeout")] * 2, Context(), [NO_REACH]) == "TIMEOUT"
    assert classify([bad("refused")] * 2, Context(), [NO_REACH]) == "REFUSED"
    assert classify([bad("unreachable")] * 2, Context(), [NO_REACH]) == "UNREACHABLE"
    # Some unreachable, some silent: no single outcome describes every probe.
    assert classify([bad("unreachable"), bad("timeout")], Context(), [NO_REACH]) == "NO_REACH"
    assert classify([ok("a"), bad("timeout")], Context()).startswith("MIXED")


def test_row_ids_and_per_mode_tables():
    row = Row("node", "nodeport-localhost", expect=per_mode(REACH, nftables=REFUSED), klass=IMPLEMENTATION_DEFINED)
    assert row.id == "node->nodeport-localhost/tcp"
    assert row.expectation_for("nftables") is REFUSED
    assert row.expectation_for("iptables") is REACH
    assert row.expectation_for("custom") is REACH
    assert Row("external", "lb", "udp", service="local").id == "external->lb@local/udp"


def _run(mode, result, observed, klass="implementation-defined"):
    rec = {"check": "to-service[node->nodeport-localhost/tcp]", "capability": "routing", "name": "to-service",
           "result": result, "klass": klass, "expected": observed, "observed": observed, "path": "p", "reason": "", "notes": []}
    return mx.build_run([rec], "local", mode, "r1")


def test_matrix_merges_modes_and_lists_differences(tmp_path):
    ipt = _run("iptables", "impl-as-declared", "REACH")
    nft = _run("nftables", "impl-as-declared", "REFUSED")
    skip = mx.build_run([{"check": "to-service[node->nodeport-localhost/tcp]", "capability": "routing", "result": "skipped",
                          "reason": "IPVS mode needs CONFIG_IP_VS"}], "local", "ipvs", "r2")
    root = tmp_path / "matrix"
    for doc, col in ((ipt, "iptables"), (nft, "nftables"), (skip, "ipvs")):
        mx.write_outputs(root, doc, col)
    merged = json.loads((root / "matrix.json").read_text())
    assert sorted(merged["runs"]) == ["iptables", "ipvs", "nftables"]
    cells = merged["checks"]["to-service[node->nodeport-localhost/tcp]"]["modes"]
    assert cells["iptables"]["observed"] == "REACH" and cells["nftables"]["observed"] == "REFUSED"
    md = (root / "matrix.md").read_text()
    assert "| `to-service[node->nodeport-localhost/tcp]` | impl REACH (I) | skip: IPVS mode needs CONFIG_IP_VS | impl REFUSED (I) |" in md
    assert "## Differences between runs" in md and "iptables: REACH" in md and "nftables: REFUSED" in md
    # The CLI merges files from different folders the same way.
    out = tmp_path / "merged"
    assert mx.main(["merge", str(root / "matrix-iptables.json"), str(root / "matrix-nftables.json"), "-o", str(out)]) == 0
    assert sorted(json.loads((out / "matrix.json").read_text())["runs"]) == ["iptables", "nftables"]


def test_matrix_parts_from_several_processes(tmp_path):
    root = tmp_path / "m"
    rec = {"check": "c1", "capability": "x", "result": "pass"}
    mx.append_part(root, "run1", rec)
    (root / ".parts" / "run1" / "999999.jsonl").write_text(json.dumps({**rec, "check": "c2"}) + "\n")
    js, _ = mx.finish_run(root, "run1", "local", "iptables")
    assert sorted(json.loads(js.read_text())["checks"]) == ["c1", "c2"]


def test_schema_mismatch_is_refused():
    with pytest.raises(ValueError):
        mx.merge([{"schema": 99}])


def _flow(answers, start=1000.0, step=0.1):
    from proxysuite.probes.engine import OK, TIMEOUT

    return [Observation("10.96.0.10", 81, "udp", OK if a else TIMEOUT, backend=a, started=start + i * step)
            for i, a in enumerate(answers)]


def test_flow_move_measures_the_black_hole_from_the_last_old_answer():
    move = analysis.flow_move(_flow(["old"] * 3 + [None] * 12 + ["new"] * 5), ["new"])
    assert move.moved and abs(move.gap_s - 1.3) < 1e-9, move
    assert "last answer from old" in move.detail and "1300 ms" in move.detail


def test_flow_move_from_since_when_nothing_answered_before():
    move = analysis.flow_move(_flow([None] * 8 + ["new"] * 5), ["new"], since=1000.25)
    assert move.moved and abs(move.gap_s - 0.55) < 1e-9


def test_flow_move_fails_when_the_flow_stays_or_flaps():
    assert not analysis.flow_move(_flow(["old"] * 3 + [None] * 20), ["new"]).moved
    flap = analysis.flow_move(_flow(["old", None, "new", "old", "new"]), ["new"])
    assert not flap.moved and "answered again by ['old']" in flap.detail


def test_flow_moves_judges_the_bound():
    from proxysuite.conformance.expectations import Context, flow_moves

    exp = flow_moves(1.0, "test")
    ctx = Context(backends=["new"])
    assert exp.evaluate(_flow(["old"] + [None] * 5 + ["new"] * 3), ctx).ok
    slow = exp.evaluate(_flow(["old"] + [None] * 15 + ["new"] * 3), ctx)
    assert not slow.ok and "over the 1 s bound" in slow.detail
    assert not exp.evaluate(_flow([None] * 5 + ["new"]), ctx).ok, "no old answer and no since: cannot be timed"


# --- long-lived streams ------------------------------------------------------------------------------
def _exchanges(conn, proto, plan, t0=1000.0):
    """``plan``: one entry per 100 ms tick: a backend name, or an outcome such as ``reset``/``timeout``."""
    from proxysuite.probes.engine import Observation

    out = []
    for i, what in enumerate(plan):
        ok = what not in ("reset", "timeout", "refused")
        out.append(Observation("10.96.0.10", 80, proto, "ok" if ok else what, backend=what if ok else None,
                               started=t0 + i * 0.1, stream=conn))
    return out


def test_stream_summaries_say_who_answered_whether_it_broke_and_the_longest_gap():
    from proxysuite.probes.analysis import streams

    obs = (_exchanges(0, "tcp", ["a"] * 10) + _exchanges(1, "tcp", ["a"] * 4 + ["reset"])
           + _exchanges(2, "tcp", ["b"] * 3, t0=1000.0) + _exchanges(2, "tcp", ["b"], t0=1000.8))
    s0, s1, s2 = streams(obs)
    assert s0.survived and s0.backends == ["a"] and s0.exchanges == 10 and round(s0.longest_gap_ms) == 100
    assert not s1.survived and s1.broken.startswith("reset") and round(s1.longest_gap_ms) == 600, "the gap runs to the stream's end"
    assert s2.survived and round(s2.longest_gap_ms) == 600


def test_udp_flows_survive_lost_datagrams_but_not_a_new_backend():
    from proxysuite.conformance.expectations import Context, moves_to_ready, survives
    from proxysuite.probes.analysis import streams

    lossy = _exchanges(0, "udp", ["a", "timeout", "a", "a"])
    moved = _exchanges(0, "udp", ["a", "a", "b", "b"])
    assert streams(lossy)[0].survived and not streams(moved)[0].survived
    assert survives(3.0).evaluate(lossy, Context()).ok
    assert not survives(0.15).evaluate(lossy, Context()).ok, "a gap over the bound fails"
    verdict = survives(3.0).evaluate(moved, Context())
    assert not verdict.ok and "did not survive" in verdict.detail
    assert moves_to_ready(3.0).evaluate(moved, Context(backends=["b"])).ok
    assert not moves_to_ready(3.0).evaluate(lossy, Context(backends=["b"])).ok, "still on the not-ready backend"
    assert not moves_to_ready(3.0).evaluate(_exchanges(0, "tcp", ["a", "reset"]), Context(backends=["b"])).ok

"""The judge itself: every class × declaration × observation × mode, and the definition errors.

The verdict rule (proxysuite/conformance/verdict.py) is one pure function; this table is its
specification. A second, exhaustive sweep checks the property the whole suite rests on: no
observation that matches none of a row's declarations is ever a pass or an ``impl`` result.
"""

from __future__ import annotations

import itertools

import pytest

from proxysuite.conformance import (
    ANY_DECLARED,
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    NO_REACH,
    REACH,
    RECORD_ONLY,
    REFUSED,
    REQUIRED,
    SRC_IP_MASQUERADED,
    TIMEOUT,
    UNREACHABLE,
    Context,
    Row,
    for_mode,
    per_mode,
)
from proxysuite.conformance import verdict as vd
from proxysuite.modes import MODES
from proxysuite.probes.engine import Observation


def _obs(outcome: str, n: int = 3, backend: str = "a", client_ip: str = "10.244.1.5") -> list[Observation]:
    if outcome == "ok":
        return [Observation("10.96.0.10", 80, "tcp", "ok", backend=backend, client_ip=client_ip) for _ in range(n)]
    return [Observation("10.96.0.10", 80, "tcp", outcome, error=f"{outcome} for the test") for _ in range(n)]


OBSERVED = {
    "reach": _obs("ok"),
    "refused": _obs("refused"),
    "timeout": _obs("timeout"),
    "mixed": _obs("ok", 2) + _obs("timeout", 1),
    "error": _obs("error"),
    "unreachable": _obs("unreachable"),
    "unreachable-some-silent": _obs("unreachable", 2) + _obs("timeout", 1),
    "stray": _obs("ok", backend="zombie"),
    "none": [],
}
CTX = Context(source_ip="10.244.1.5", backends=["a", "b"])

NO_EP = per_mode(iptables=TIMEOUT, nftables=REFUSED, ipvs=RECORD_ONLY, cilium=RECORD_ONLY, custom=ANY_DECLARED)
LOCALHOST = per_mode(REACH, nftables=REFUSED)
# The shape of the in-cluster no-endpoint rows: kube-proxy rejects, Cilium's socket-LB fails the connect().
EMPTY = per_mode(REFUSED, cilium=UNREACHABLE, custom=ANY_DECLARED)

# (row expectation, klass, mode, observed) -> result
TABLE = [
    # required and expected rows: the declaration or fail, in every mode, custom included
    (REACH, REQUIRED, "iptables", "reach", vd.PASS),
    (REACH, REQUIRED, "iptables", "stray", vd.FAIL),
    (REACH, REQUIRED, "iptables", "refused", vd.FAIL),
    (REACH, REQUIRED, "iptables", "timeout", vd.FAIL),
    (REACH, REQUIRED, "iptables", "mixed", vd.FAIL),
    (REACH, REQUIRED, "iptables", "error", vd.FAIL),
    (REACH, REQUIRED, "iptables", "none", vd.FAIL),
    (REACH, REQUIRED, "custom", "refused", vd.FAIL),
    (REFUSED, EXPECTED, "nftables", "refused", vd.PASS),
    (REFUSED, EXPECTED, "nftables", "timeout", vd.FAIL),  # a DROP where a REJECT is declared
    (REFUSED, EXPECTED, "nftables", "reach", vd.FAIL),
    (REFUSED, EXPECTED, "custom", "timeout", vd.FAIL),
    (TIMEOUT, EXPECTED, "iptables", "refused", vd.FAIL),
    (NO_REACH, REQUIRED, "iptables", "refused", vd.PASS),
    (NO_REACH, REQUIRED, "iptables", "timeout", vd.PASS),
    (NO_REACH, REQUIRED, "iptables", "mixed", vd.FAIL),
    (REACH & SRC_IP_MASQUERADED, EXPECTED, "iptables", "reach", vd.FAIL),  # the client's own address arrived
    # UNREACHABLE: every probe failed with host/net unreachable, nothing else
    (UNREACHABLE, EXPECTED, "cilium", "unreachable", vd.PASS),
    (UNREACHABLE, EXPECTED, "cilium", "refused", vd.FAIL),
    (UNREACHABLE, EXPECTED, "cilium", "timeout", vd.FAIL),
    (UNREACHABLE, EXPECTED, "cilium", "unreachable-some-silent", vd.FAIL),  # no packet leaves: no rate limit to excuse
    (UNREACHABLE, EXPECTED, "cilium", "reach", vd.FAIL),
    (UNREACHABLE, EXPECTED, "cilium", "error", vd.FAIL),
    (REFUSED, EXPECTED, "ipvs", "unreachable", vd.FAIL),
    (TIMEOUT, EXPECTED, "iptables", "unreachable", vd.FAIL),
    (NO_REACH, REQUIRED, "iptables", "unreachable", vd.PASS),
    (NO_REACH, REQUIRED, "iptables", "unreachable-some-silent", vd.PASS),
    # implementation-defined: each kube-proxy / Cilium mode is held to its own declaration
    (NO_EP, IMPLEMENTATION_DEFINED, "iptables", "timeout", vd.IMPL_AS_DECLARED),
    (NO_EP, IMPLEMENTATION_DEFINED, "iptables", "refused", vd.FAIL),  # nftables' behaviour is not iptables'
    (NO_EP, IMPLEMENTATION_DEFINED, "iptables", "reach", vd.FAIL),
    (NO_EP, IMPLEMENTATION_DEFINED, "iptables", "error", vd.FAIL),
    (NO_EP, IMPLEMENTATION_DEFINED, "nftables", "refused", vd.IMPL_AS_DECLARED),
    (NO_EP, IMPLEMENTATION_DEFINED, "nftables", "timeout", vd.FAIL),
    (NO_EP, IMPLEMENTATION_DEFINED, "nftables", "mixed", vd.FAIL),
    # ... a custom proxy may behave as any mode declares, and nothing else
    (NO_EP, IMPLEMENTATION_DEFINED, "custom", "refused", vd.IMPL_OTHER),
    (NO_EP, IMPLEMENTATION_DEFINED, "custom", "timeout", vd.IMPL_OTHER),
    (NO_EP, IMPLEMENTATION_DEFINED, "custom", "reach", vd.FAIL),
    (NO_EP, IMPLEMENTATION_DEFINED, "custom", "error", vd.FAIL),
    (NO_EP, IMPLEMENTATION_DEFINED, "custom", "none", vd.FAIL),
    (LOCALHOST, IMPLEMENTATION_DEFINED, "custom", "reach", vd.IMPL_AS_DECLARED),
    (LOCALHOST, IMPLEMENTATION_DEFINED, "custom", "refused", vd.IMPL_OTHER),
    (LOCALHOST, IMPLEMENTATION_DEFINED, "custom", "timeout", vd.FAIL),
    (LOCALHOST, IMPLEMENTATION_DEFINED, "cilium", "refused", vd.FAIL),  # only custom takes alternatives
    (EMPTY, IMPLEMENTATION_DEFINED, "cilium", "unreachable", vd.IMPL_AS_DECLARED),
    (EMPTY, IMPLEMENTATION_DEFINED, "cilium", "refused", vd.FAIL),  # Cilium is held to its own declaration
    (EMPTY, IMPLEMENTATION_DEFINED, "ipvs", "unreachable", vd.FAIL),
    (EMPTY, IMPLEMENTATION_DEFINED, "ipvs", "refused", vd.IMPL_AS_DECLARED),
    (EMPTY, IMPLEMENTATION_DEFINED, "custom", "unreachable", vd.IMPL_OTHER),
    (EMPTY, IMPLEMENTATION_DEFINED, "custom", "refused", vd.IMPL_OTHER),
    (EMPTY, IMPLEMENTATION_DEFINED, "custom", "timeout", vd.FAIL),
    (EMPTY, IMPLEMENTATION_DEFINED, "custom", "unreachable-some-silent", vd.FAIL),
    # record-only: recorded, never a pass, whatever was observed
    (NO_EP, IMPLEMENTATION_DEFINED, "ipvs", "reach", vd.RECORD),
    (NO_EP, IMPLEMENTATION_DEFINED, "cilium", "error", vd.RECORD),
]


def _row(expect, klass) -> Row:
    return Row("pod-other-node", "clusterip", expect=expect, klass=klass)


@pytest.mark.parametrize("expect,klass,mode,observed,result", TABLE,
                         ids=[f"{k.value}-{m}-{o}-{r}" for _, k, m, o, r in TABLE])
def test_verdict_table(expect, klass, mode, observed, result):
    row = _row(expect, klass)
    d = vd.decide(mode, row.expectation_for(mode), row.klass_for(mode), OBSERVED[observed], CTX, row.alternatives())
    assert d.result == result, d


def test_the_table_covers_every_result_and_class():
    assert {r for *_, r in TABLE} == {vd.PASS, vd.FAIL, vd.IMPL_AS_DECLARED, vd.IMPL_OTHER, vd.RECORD}
    assert {k for _, k, *_ in TABLE} == {REQUIRED, EXPECTED, IMPLEMENTATION_DEFINED}
    assert {o for *_, o, _ in TABLE} == set(OBSERVED)


def test_unreachable_is_named_as_observed():
    """A report reads "expected REFUSED, observed UNREACHABLE", not the vaguer NO_REACH."""
    d = vd.decide("ipvs", REFUSED, EXPECTED, OBSERVED["unreachable"], CTX, [REFUSED, UNREACHABLE])
    assert (d.result, d.observed) == (vd.FAIL, "UNREACHABLE")
    d = vd.decide("cilium", UNREACHABLE, EXPECTED, OBSERVED["unreachable-some-silent"], CTX)
    assert (d.result, d.observed) == (vd.FAIL, "NO_REACH")


def test_for_mode_resolves_step_declarations():
    table = per_mode(NO_REACH, ipvs=REFUSED, cilium=TIMEOUT)
    assert [for_mode(table, m) for m in ("iptables", "ipvs", "cilium", "custom")] == [NO_REACH, REFUSED, TIMEOUT, NO_REACH]
    assert for_mode(REACH, "cilium") is REACH
    with pytest.raises(ValueError, match="no declaration for mode 'cilium'"):
        for_mode(per_mode(iptables=REACH), "cilium")


SIMPLE = [REACH, REFUSED, TIMEOUT, UNREACHABLE, NO_REACH]


@pytest.mark.parametrize("klass", [REQUIRED, EXPECTED, IMPLEMENTATION_DEFINED])
def test_nothing_that_matches_no_declaration_is_accepted(klass):
    """Exhaustive: every pair of declarations, every mode, every observation."""
    for own, other in itertools.product(SIMPLE, SIMPLE):
        table = per_mode(own, nftables=other)
        row = _row(table, klass)
        for mode, (name, obs) in itertools.product(MODES, OBSERVED.items()):
            declared = row.expectation_for(mode)
            d = vd.decide(mode, declared, row.klass_for(mode), obs, CTX, row.alternatives())
            matches_own = declared.evaluate(obs, CTX).ok
            matches_any = any(a.evaluate(obs, CTX).ok for a in row.alternatives())
            where = f"{klass.value} {mode} declared {declared} observed {name}: {d}"
            if d.result in (vd.PASS, vd.IMPL_AS_DECLARED):
                assert matches_own, where
                assert (d.result == vd.IMPL_AS_DECLARED) == (klass is IMPLEMENTATION_DEFINED), where
            elif d.result == vd.IMPL_OTHER:
                assert mode == "custom" and klass is IMPLEMENTATION_DEFINED and matches_any and not matches_own, where
            else:
                assert d.result == vd.FAIL and not (matches_own or (mode == "custom" and klass is IMPLEMENTATION_DEFINED
                                                                     and matches_any)), where


@pytest.mark.parametrize("klass", [REQUIRED, EXPECTED, IMPLEMENTATION_DEFINED])
def test_values_fail_in_every_class(klass):
    assert vd.decide_value(klass, "200", "503", False).result == vd.FAIL
    assert vd.decide_value(klass, "200", "200", True).result == (
        vd.IMPL_AS_DECLARED if klass is IMPLEMENTATION_DEFINED else vd.PASS)


# --- definition errors: caught when the catalogue is defined, not when a mode runs ----------------
def test_a_mode_without_a_declaration_cannot_be_defined():
    with pytest.raises(ValueError, match="no expectation declared for mode.*ipvs, cilium, custom"):
        Row("node", "nodeport-localhost", expect=per_mode(iptables=REACH, nftables=REFUSED))


def test_a_mistyped_mode_name_is_refused():
    with pytest.raises(ValueError, match="nftable"):
        per_mode(REACH, nftable=REFUSED)
    with pytest.raises(ValueError, match="nftabels"):
        Row("node", "clusterip", expect={"*": REACH, "nftabels": REFUSED})
    with pytest.raises(ValueError, match="unknown mode"):
        Row("node", "clusterip", klass={"*": REQUIRED, "iptable": EXPECTED})


def test_unknown_vantage_target_or_protocol_is_refused():
    with pytest.raises(ValueError, match="unknown vantage"):
        Row("pod-elsewhere", "clusterip")
    with pytest.raises(ValueError, match="unknown target"):
        Row("node", "cluster-ip")
    with pytest.raises(ValueError, match="tcp, udp or sctp"):
        Row("node", "clusterip", "quic")
    assert Row("node", "clusterip", "sctp").id == "node->clusterip/sctp"


def test_any_declared_only_on_implementation_defined_rows():
    with pytest.raises(ValueError, match="ANY_DECLARED"):
        Row("node", "clusterip", expect=per_mode(REACH, custom=ANY_DECLARED), klass=REQUIRED)
    with pytest.raises(ValueError, match="cannot be combined"):
        REACH & RECORD_ONLY


def _catalogue_rows() -> list[Row]:
    """Every Row the catalogue's modules define at module level (in lists, dicts or alone)."""
    import importlib
    import pathlib
    import sys

    suites = pathlib.Path(__file__).resolve().parents[1] / "suites" / "conformance"
    sys.path.insert(0, str(suites))
    rows = []
    try:
        for f in sorted(suites.glob("test_*.py")):
            mod = importlib.import_module(f.stem)
            for value in vars(mod).values():
                items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
                rows += [r for r in items if isinstance(r, Row)]
    finally:
        sys.path.remove(str(suites))
    return rows


def test_every_catalogue_row_declares_every_mode():
    """Import every module of the catalogue: a row that leaves a mode undeclared would raise here."""
    rows = _catalogue_rows()
    assert len(rows) > 80
    for row in rows:
        for mode in MODES:
            assert row.expectation_for(mode) is not None, (row, mode)


def test_catalogue_notes_cite_ipvs_and_cilium_sources():
    """Nothing here runs ipvs (no IP_VS in this kernel) and the catalogue's Cilium declarations come from its
    sources, so each row's note must say where its ipvs and cilium behaviour comes from, or (record-only)
    what is unknown. The note names the mode, next to its source."""
    import re

    missing = []
    for row in _catalogue_rows():
        for mode in ("ipvs", "cilium"):
            if not re.search(rf"\b{mode}\b", row.note, re.IGNORECASE):
                missing.append(f"{row.id}: {mode} declares {row.expectation_for(mode)} without a source in its note")
    assert not missing, "\n".join(missing)


def test_record_only_declarations_say_what_is_unknown():
    import re

    for row in _catalogue_rows():
        for mode in MODES:
            if row.expectation_for(mode).record_only:
                assert re.search(rf"\b{mode}\b[^.;]*record-only", row.note, re.IGNORECASE), (row.id, mode, row.note)


# --- the plugin: a check must judge something ------------------------------------------------------


def test_a_check_that_judges_nothing_fails(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.proxysuite_check(capability="routing", name="judges-nothing")
        def test_nothing():
            pass
    """)
    reports = pytester.path / "reports"
    result = pytester.runpytest("-p", "no:cacheprovider", "--reports-dir", str(reports))
    result.assert_outcomes(failed=1)
    assert "finished without a verdict" in result.stdout.str()
    import json

    cell = json.loads((reports / "matrix" / "matrix-iptables.json").read_text())["checks"]["judges-nothing"]["modes"]["iptables"]
    assert cell["result"] == "fail"

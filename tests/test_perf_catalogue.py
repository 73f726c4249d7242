"""perf.catalogue: every figure a run records is named there, old runs still read, docs match."""

from pathlib import Path

import pytest

from proxysuite.perf import catalogue as C
from proxysuite.perf import frames, metrics, options

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "perf-runs"
DATA = ROOT / "tests" / "data"


def test_every_row_of_the_captured_runs_is_in_the_catalogue():
    # Runs saved before the catalogue existed: their names, stats and units are the catalogue's.
    df, _ = frames.load([RUNS])
    pairs = df[["metric", "stat", "unit"]].drop_duplicates()
    assert len(pairs) > 50
    for _, r in pairs.iterrows():
        C.lookup(r["metric"], r["stat"], r["unit"])


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_summarized_scrapes_are_catalogued(mode):
    # Real kube-proxy exposition text; RunRecorder.add_rows checks every row against the catalogue.
    text = (DATA / f"kube-proxy-metrics-{mode}.txt").read_text()
    rows = metrics.summarize(metrics.Delta(metrics.Scrape(at=0.0), metrics.parse(text, at=10.0)))
    rec = frames.RunRecorder("r1", mode=mode, provider="local")
    rec.add_rows(rows, scale=100, phase=C.CREATE)
    got = {(r["metric"], r["stat"]) for r in rec.rows}
    assert ("sync", "count") in got and ("proxy", "rss") in got
    assert any(m == "rules" for m, _ in got)


def test_unknown_names_and_wrong_units_fail_at_the_first_write():
    rec = frames.RunRecorder("r1", mode="nftables", provider="local")
    with pytest.raises(KeyError, match="catalogue.py"):
        rec.add("npl_al.mean", 1.0, "ms", scale=100)          # a typo of npl_all
    with pytest.raises(KeyError, match="no stat 'p95'"):
        rec.record(C.FIRST_PACKET, "p95", 1.0)
    with pytest.raises(ValueError, match="catalogue says 'us'"):
        rec.add("first_packet.p50", 0.001, "s", scale=100)
    with pytest.raises(KeyError):
        rec.add_samples("first_pakcet", [1.0], "us")
    rec.record(C.FIRST_PACKET, "p50", 41.0, scale=100, target="last")
    assert rec.rows[-1] | {} == {"metric": "first_packet", "stat": "p50", "value": 41.0, "unit": "us", "scale": 100,
                                 "kind": "summary", "target": "last"}


def test_skipped_phase_is_a_row_and_meta():
    rec = frames.RunRecorder("r1", mode="nftables", provider="kind")
    rec.ran(C.CREATE, 100)
    rec.skipped(C.LOAD, 100, "no pod netns")
    df = rec.frame()
    row = df[df["metric"] == "phase"].iloc[0]
    assert (row["stat"], row["phase"], row["note"], row["value"]) == ("skipped", "load", "no pod netns", 1.0)
    assert rec.meta["phases"]["load"] == {"ran": [], "skipped": [100], "reason": "no pod netns"}
    assert rec.meta["phases"]["create"]["ran"] == [100]


def test_shown_in_names_real_charts():
    for m in C.METRICS.values():
        assert set(m.shown_in) <= {*C.CHARTS, C.TABLE, C.BASELINE}, m.name
        assert set(m.phases) <= set(C.PHASES), m.name
        assert m.stats or m.stat_pattern, m.name


def test_docs_carry_the_generated_tables():
    doc = (ROOT / "docs" / "perf.md").read_text()
    assert C.markdown() in doc, "docs/perf.md: refresh the metric table with `python -m proxysuite.perf.catalogue`"
    assert options.markdown() in doc, "docs/perf.md: refresh the flag table with `python -m proxysuite.perf.options`"

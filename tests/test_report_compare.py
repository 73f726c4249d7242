"""compare-modes on real runs captured from the local provider (tests/data/perf-runs, see its README)."""

from pathlib import Path

import pandas as pd
import pytest

from proxysuite.perf import frames
from proxysuite.report import compare, tables

RUNS = Path(__file__).parent / "data" / "perf-runs"
IPT, NFT_OLD, NFT = sorted(RUNS.glob("*-iptables-*"))[0], *sorted(RUNS.glob("*-nftables-*"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert compare.main(["compare-modes", str(IPT), str(NFT_OLD), str(NFT), "-o", str(out)]) == 0
    return out


def test_outputs_exist(report):
    html = (report / "compare-modes.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http://" not in html.split("<svg", 1)[0]
    for chart in ("sync", "npl", "first_packet", "position", "locust", "trend"):
        assert (report / "charts" / f"{chart}.png").stat().st_size > 5000, chart
        assert f"data-chart='{chart}'" in html


def test_markdown_table_has_measured_values_for_both_modes(report):
    md = (report / "summary.md").read_text()
    table = md.split("## Per-mode comparison (measured)")[1].split("##")[0]
    assert "| iptables (nf_tables) | nftables |" in table  # the header names the iptables backend
    for row in ("Service lookup cost", "Rule sync time", "Network programming latency", "Proxy memory", "Proxy CPU", "Load through"):
        line = next(l for l in table.splitlines() if l.startswith(f"| {row}"))
        cells = [c.strip() for c in line.split("|")[2:-1]]
        assert all(c and c != "–" for c in cells), line
    assert "22–24 ns per KUBE-SERVICES rule" in md and "Why the figures differ" in md


def test_newest_run_per_mode_is_compared_and_generator_bound_flagged(report):
    md = (report / "summary.md").read_text()
    assert NFT.name.rsplit("-", 1)[1] in md.split("## Per-mode")[0]       # newest nftables run
    assert NFT_OLD.name.rsplit("-", 1)[1] not in md.split("## Per-mode")[0]
    assert "## Generator-bound load runs" in md and "closed-loop run: Locust was CPU-bound" in md
    assert "data-flag='generator-bound'" in (report / "compare-modes.html").read_text()


def test_npl_cross_check_agrees_with_kube_proxy_metric():
    df, _ = frames.load([IPT, NFT])
    st = tables.npl_stats(df)
    metric = df[(df["metric"] == "npl_metric") & (df["stat"] == "mean") & (df["phase"] == "npl")]
    for _, m in metric.iterrows():
        ours = st[(st["mode"] == m["mode"]) & (st["scale"] == m["scale"])]["all_mean"].item()
        # Same changes seen from both ends: the datapath mean and kube-proxy's exact mean (sum/count)
        # agree within 50 ms; kube-proxy observes at the end of its sync, we at the next probe.
        assert abs(ours - m["value"] * 1000) < 50, (m["mode"], m["scale"], ours, m["value"])
    assert st["resolution_p50"].max() <= 10


def test_baseline_flags_exactly_the_regressed_figure(tmp_path):
    df, metas = frames.load([NFT])
    worse = df.copy()
    sel = (worse["metric"] == "sync_full") & (worse["stat"] == "mean") & (worse["phase"] == "restart") & (worse["scale"] == 300)
    assert sel.sum() == 1
    worse.loc[sel, "value"] *= 1.5   # a 50 % slower full sync at 300 Services
    cur = tmp_path / "cur.parquet"
    worse.to_parquet(cur)
    res = tables.compare_to_baseline(frames.load([cur])[0], df, tolerance=0.25)
    flagged = res[res["regression"]]
    assert flagged[["scale", "key"]].values.tolist() == [[300, "full sync mean (s)"]]
    assert flagged["change"].item() == pytest.approx(0.5)
    rc = compare.main([str(cur), "--baseline", str(NFT), "-o", str(tmp_path / "r"), "--fail-on-regression"])
    assert rc == 3
    assert "1 regression(s)" in (tmp_path / "r" / "summary.md").read_text()
    assert compare.main([str(NFT), "--baseline", str(NFT), "-o", str(tmp_path / "same"), "--fail-on-regression"]) == 0


def test_cross_mode_slope_is_kep_arithmetic():
    pooled = pd.DataFrame([{"mode": "iptables", "scale": 10000, "p99": 260.0}, {"mode": "nftables", "scale": 10000, "p99": 35.0}])
    # KEP-3866 at 10k: (260 − 35) µs / 10,000 Services = 22.5 ns per rule.
    assert tables.cross_mode_slope(pooled)["ns_per_rule"].item() == pytest.approx(22.5)


def test_a_skipped_phase_is_reported_with_its_reason(tmp_path):
    # The captured nftables run as a kind cluster would have recorded it: no load, and why.
    df, _ = frames.load([NFT])
    df = df[df["metric"] != "locust"].copy()
    reason = "the kind provider does not expose the client pod's network namespace on this host, and Locust must run inside it"
    skipped = pd.DataFrame([{**df.iloc[0].to_dict(), "metric": "phase", "stat": "skipped", "value": 1.0, "unit": "bool",
                             "kind": "summary", "scale": s, "phase": "load", "note": reason} for s in (100, 300)])
    cur = tmp_path / "kind.parquet"
    pd.concat([df, skipped], ignore_index=True).to_parquet(cur)
    assert compare.main([str(cur), "-o", str(tmp_path / "r")]) == 0
    table = (tmp_path / "r" / "summary.md").read_text().split("## Per-mode comparison (measured)")[1].split("##")[0]
    assert f"| Load through a Service (Locust, new connection per request) | – (skipped: {reason}) |" in table
    assert f"| Phases skipped | load: {reason} |" in table

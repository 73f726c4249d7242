"""``--slo FILE`` on real frames (tests/data/perf-runs, see its README): objectives met, exceeded, unmeasured, and
bad files; ``report compare-modes --slo`` and ``perf run --slo`` exit non-zero with the table."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from proxysuite.errors import SuiteError
from proxysuite.perf import frames, slo
from proxysuite.perf import run as perf_run
from proxysuite.report import compare

RUNS = Path(__file__).parent / "data" / "perf-runs"
IPT = sorted(RUNS.glob("*-iptables-7f31f4"))[0]
NFT = sorted(RUNS.glob("*-nftables-3f93f2"))[0]


@pytest.fixture(scope="module")
def df():
    d, _ = frames.load([IPT, NFT])
    return d


def write(tmp_path, objectives) -> Path:
    p = tmp_path / "slo.yaml"
    p.write_text(yaml.safe_dump(objectives))
    return p


def measured_p99(df, mode, scale=300):
    s = df[(df["mode"] == mode) & (df["metric"] == "npl") & (df["kind"] == "sample") & (df["scale"] == scale)]["value"]
    return float(np.percentile(s, 99))


def test_percentile_is_read_from_the_raw_samples(df, tmp_path):
    objs = slo.load(write(tmp_path, [{"metric": "npl", "scale": 300, "percentile": 99, "bound": 1e6}]))
    res = slo.check(df, objs)
    assert set(res["mode"]) == {"iptables", "nftables"} and res["ok"].all()
    for _, r in res.iterrows():
        assert r["value"] == pytest.approx(measured_p99(df, r["mode"]))
        assert r["how"].startswith("p99 of ") and r["unit"] == "ms"


def test_a_bound_between_the_modes_fails_only_the_slower_one(df, tmp_path):
    ipt, nft = measured_p99(df, "iptables"), measured_p99(df, "nftables")
    assert ipt != nft
    bound = (ipt + nft) / 2
    res = slo.check(df, slo.load(write(tmp_path, [{"metric": "npl", "scale": 300, "percentile": 99, "bound": bound}])))
    verdict = dict(zip(res["mode"], res["verdict"]))
    slower, faster = ("iptables", "nftables") if ipt > nft else ("nftables", "iptables")
    assert verdict == {slower: "EXCEEDED", faster: "ok"}
    assert "**EXCEEDED**" in slo.table(res)


def test_summary_stat_with_phase_and_an_unmeasured_scale(df, tmp_path):
    objs = slo.load(write(tmp_path, {"slos": [
        {"metric": "sync_full", "stat": "mean", "phase": "restart", "scale": 100, "bound": 60, "unit": "s", "mode": "nftables"},
        {"metric": "npl", "scale": "5k", "percentile": 50, "bound": 1e9, "mode": "nftables"},
    ]}))
    res = slo.check(df, objs)
    assert list(res["verdict"]) == ["ok", "NO DATA"]  # an objective that cannot be checked is not met
    want = df[(df["mode"] == "nftables") & (df["metric"] == "sync_full") & (df["stat"] == "mean") & (df["phase"] == "restart")
              & (df["scale"] == 100)]["value"].max()
    assert res["value"].iloc[0] == pytest.approx(want)


@pytest.mark.parametrize("bad, says", [
    ([{"metric": "nope", "scale": 100, "percentile": 99, "bound": 1}], "not in the perf catalogue"),
    ([{"metric": "npl", "scale": 100, "bound": 1}], "needs a percentile or a stat"),
    ([{"metric": "npl", "scale": 100, "percentile": 99, "stat": "p99", "bound": 1}], "not both"),
    ([{"metric": "npl", "scale": 100, "percentile": 99, "bound": 1, "unit": "s"}], "recorded in ms, not s"),
    ([{"metric": "npl", "scale": 100, "percentile": 120, "bound": 1}], "not in (0, 100]"),
    ([{"metric": "npl", "scale": 100, "percentile": 99, "bound": 1, "colour": "red"}], "unknown key(s) colour"),
    ([{"metric": "npl", "percentile": 99, "bound": 1}], "scale is missing"),
    ([], "non-empty list"),
])
def test_bad_files_are_one_line_errors_naming_the_fix(tmp_path, bad, says):
    with pytest.raises(SuiteError) as exc:
        slo.load(write(tmp_path, bad))
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_report_exits_4_with_the_table_when_exceeded(tmp_path, capsys):
    ok = write(tmp_path, [{"metric": "first_packet", "scale": 100, "percentile": 99, "bound": 1e9}])
    assert compare.main(["compare-modes", str(IPT), str(NFT), "-o", str(tmp_path / "ok"), "--slo", str(ok)]) == 0
    assert "2 met, 0 not met" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {metric: first_packet, scale: 100, percentile: 99, bound: 1}\n")
    assert compare.main(["compare-modes", str(IPT), str(NFT), "-o", str(tmp_path / "bad"), "--slo", str(bad)]) == slo.EXIT_SLO
    out = capsys.readouterr().out
    assert "0 met, 2 not met" in out and "| iptables | first_packet.p99 | 100 |" in out
    assert "## SLOs" in (tmp_path / "bad" / "summary.md").read_text()


def test_perf_run_enforces_on_the_saved_frame_and_rejects_a_bad_file_before_any_cluster(tmp_path, df):
    assert perf_run.build_parser().parse_args(["--slo", "x.yaml"]).slo == "x.yaml"
    with pytest.raises(SuiteError, match="no such file"):
        perf_run.main(["--slo", str(tmp_path / "missing.yaml"), "--provider", "existing"])
    # perf run hands the frame it just saved to slo.enforce: the same call, on a real frame
    bad = write(tmp_path, [{"metric": "npl", "scale": 300, "percentile": 50, "bound": 0.5}])
    said = []
    assert slo.enforce(df, bad, say=said.append) == slo.EXIT_SLO and "EXCEEDED" in said[0]


def test_objective_on_the_min_sync_sweep_of_real_runs(tmp_path):
    d, _ = frames.load([Path(__file__).parent / "data" / "perf-tuning"])
    objs = slo.load(write(tmp_path, [
        {"metric": "min_sync", "stat": "cpu_per_change", "target": "0s", "scale": "1k", "bound": 10, "unit": "ms"},
        {"metric": "min_sync", "stat": "cpu_per_change", "target": "10s", "scale": "1k", "bound": 10, "unit": "ms"},
    ]))
    res = slo.check(d, objs)
    # minSyncPeriod 0 syncs for every change (~38 CPU-ms each at 1k Services here); 10 s batches them (~2 ms)
    assert list(res.groupby("objective")["ok"].all().items()) == [
        ("min_sync.cpu_per_change target=0s", False), ("min_sync.cpu_per_change target=10s", True)]

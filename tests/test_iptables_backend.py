"""The iptables backend as a dimension: chosen with --iptables-backend (local), detected from what the proxy runs
and what it wrote, a column of every iptables frame, its own series in the report.

The live part brings up a 1-node local cluster per backend (root; run it under the shared lock) and checks
that kube-proxy's chains land in the chosen backend only, and that the host's alternatives are untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxysuite.config import SuiteConfig
from proxysuite.errors import SuiteError
from proxysuite.perf import frames
from proxysuite.report import tables
from support import wait_for

RUNS = Path(__file__).parent / "data" / "perf-runs"
NAT_WITH = ":KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\n"
NAT_WITHOUT = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"


def test_backend_from_rules_and_tool():
    assert frames.backend_from_rules({"legacy": NAT_WITH, "nf_tables": NAT_WITHOUT}) == "legacy"
    assert frames.backend_from_rules({"legacy": None, "nf_tables": NAT_WITH}) == "nf_tables"
    assert frames.backend_from_rules({"legacy": NAT_WITH, "nf_tables": NAT_WITH}) == "both"
    assert frames.backend_from_rules({"legacy": None, "nf_tables": NAT_WITHOUT}) is None
    assert frames.backend_from_tool("/usr/sbin/xtables-legacy-multi") == "legacy"
    assert frames.backend_from_tool("/usr/sbin/xtables-nft-multi") == "nf_tables"
    assert frames.iptables_backend("iptables v1.8.9 (nf_tables)") == "nf_tables"


@pytest.mark.parametrize("kw, says", [
    (dict(mode="nftables", iptables_backend="legacy"), "not --provider local --mode nftables"),
    (dict(provider="kind", iptables_backend="nft"), "not --provider kind"),
    (dict(iptables_backend="xtables"), "is not nft or legacy"),
])
def test_bad_backend_options(kw, says):
    with pytest.raises(SuiteError, match=says.replace("(", r"\(")):
        SuiteConfig(**kw)


def test_frame_column_and_old_frames(tmp_path):
    rec = frames.RunRecorder("abc123", mode="iptables", provider="local", meta={"iptables_backend": "legacy"})
    rec.add("restart.ready_seconds", 1.0, "s", scale=100)
    assert list(rec.frame()["iptables_backend"]) == ["legacy"]
    nft = frames.RunRecorder("def456", mode="nftables", provider="local", meta={"iptables_backend": "nf_tables"})
    nft.add("restart.ready_seconds", 1.0, "s", scale=100)
    assert nft.frame()["iptables_backend"].isna().all()  # a dimension of iptables runs only
    old, _ = frames.load(sorted(RUNS.glob("*-iptables-7f31f4")) + sorted(RUNS.glob("*-nftables-cf73d7")))
    assert set(old[old["mode"] == "iptables"]["iptables_backend"]) == {"nf_tables"}  # from their meta.json
    assert old[old["mode"] == "nftables"]["iptables_backend"].isna().all()


def test_report_series_split_by_backend():
    a = frames.RunRecorder("aaa111", mode="iptables", provider="local", meta={"iptables_backend": "legacy"})
    b = frames.RunRecorder("bbb222", mode="iptables", provider="local", meta={"iptables_backend": "nf_tables"})
    for r in (a, b):
        r.add("restart.ready_seconds", 1.0, "s", scale=100)
    import pandas as pd

    df = tables.split_iptables_backend(pd.concat([a.frame(), b.frame()]))
    assert set(df["mode"]) == {"iptables", tables.LEGACY_SERIES}
    assert len(tables.latest_runs(df)["run_id"].unique()) == 2  # both backends survive "newest run per mode"
    assert tables.series_header(df, "iptables") == "iptables (nf_tables)"


# --- live ---------------------------------------------------------------------------------------------------------



@pytest.mark.parametrize("backend, want, other", [("legacy", "legacy", "nf_tables"), ("nft", "nf_tables", "legacy")])
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")
def test_kube_proxy_uses_the_chosen_backend_and_the_host_is_untouched(backend, want, other):
    from proxysuite.cluster.local import provider

    alternatives = {t: os.path.realpath(f"/usr/sbin/{t}") for t in ("iptables", "iptables-save", "iptables-restore")}
    cfg = SuiteConfig(provider="local", mode="iptables", nodes=1, iptables_backend=backend,
                      cluster_name=f"pstest-backend-{backend}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    cl = provider.up(cfg, progress=print, owner_pid=os.getpid())
    try:
        node = cl.nodes()[0].name
        # /healthz can answer before the first sync has written the chains
        got = wait_for("kube-proxy's chains in some backend",
                       lambda: (d := frames.detect_iptables_backend(cl, node))["iptables_backend_rules"] and d, timeout=60)
        assert got["iptables_backend_rules"] == want and got["iptables_backend_exec"] == want, got
        assert got["iptables_backend"] == want and got["iptables_backend_source"] == "rules"
        dump = cl.node_exec(node, frames.BACKEND_PROBES[other])
        assert ":KUBE-SERVICES" not in dump  # nothing of kube-proxy's in the other backend
    finally:
        cl.close()
        provider.down(cfg, progress=print)
    assert {t: os.path.realpath(f"/usr/sbin/{t}") for t in alternatives} == alternatives


TUNING = Path(__file__).parent / "data" / "perf-tuning"
SWEEPS = sorted(TUNING.glob("*-iptables-1aa99b")) + sorted(TUNING.glob("*-iptables-2f37ae"))
"""The two 100/1k runs with the minSyncPeriod sweep (the third is a legacy run at 10k)."""


def test_real_runs_of_both_backends_are_two_series_in_the_report(tmp_path):
    from proxysuite.report import compare

    df, metas = frames.load(SWEEPS)
    assert {m["iptables_backend"] for m in metas.values()} == {"legacy", "nf_tables"}
    assert all(m["iptables_backend_source"] == "rules" for m in metas.values())
    by_run = df.groupby("run_id")["iptables_backend"].unique()
    assert all(len(v) == 1 for v in by_run)  # every row of a run carries its backend
    assert compare.main(["compare-modes", *map(str, SWEEPS), "-o", str(tmp_path)]) == 0
    md = (tmp_path / "summary.md").read_text()
    table = md.split("## Per-mode comparison (measured)")[1].split("\n## ")[0]
    assert "| iptables (nf_tables) | iptables-legacy |" in table
    size = next(line for line in table.splitlines() if line.startswith("| Datapath size"))
    assert "0 lines" not in size  # the legacy ruleset is read with iptables-legacy-save, not the host's iptables-save
    tune = md.split("## Tuning: minSyncPeriod under endpoint churn")[1].split("\n## ")[0]
    for series in ("iptables", "iptables-legacy"):
        for period in ("0 s", "1 s", "5 s", "10 s"):
            assert f"| {series} | 1,000 | {period} |" in tune, (series, period)
    assert "conntrack: net.netfilter.nf_conntrack_max is global" in md


def test_min_sync_rows_show_batching():
    df, _ = frames.load([TUNING])
    ms = df[(df["metric"] == "min_sync") & (df["kind"] == "summary")]
    for rid, g in ms.groupby("run_id"):
        per = g.pivot_table(index="min_sync_period_s", columns="stat", values="value")
        # a longer period batches more changes into each sync and costs less CPU per change
        assert per.loc[10.0, "changes_per_sync"] > per.loc[1.0, "changes_per_sync"] > per.loc[0.0, "changes_per_sync"]
        assert per.loc[0.0, "cpu_per_change"] > 3 * per.loc[1.0, "cpu_per_change"]
        assert set(g["configz_min_sync"]) == {"0s", "1s", "5s", "10s"}


MINSYNC = Path(__file__).parent / "data" / "perf-minsync"


def test_sweep_flips_follow_the_period_and_the_report_shows_stalls(tmp_path):
    """24 flips per period, removals seen only by refusals: each flip waits for the next sync window, so the
    median follows the period (flips start 1.2 s after a sync). The 1 s-of-timeouts rule had given 2 ms
    "removals" at 10 s in this mode; the stalls that caused them are a column of their own."""
    from proxysuite.report import compare

    run = next(p for p in MINSYNC.iterdir() if p.is_dir())
    df, _ = frames.load([run])
    samples = df[(df["metric"] == "min_sync") & (df["kind"] == "sample")]
    assert set(samples[samples["evidence"] != "ok"]["evidence"].str.split(",").str[0]) == {"refused"}
    p50 = samples.groupby("min_sync_period_s")["value"].median()
    for period in (1.0, 5.0, 10.0):
        assert 0.6 * (period - 1.2) * 1000 < p50[period] < period * 1000, (period, p50[period])
    assert compare.main(["compare-modes", str(run), "-o", str(tmp_path)]) == 0
    tune = (tmp_path / "summary.md").read_text().split("## Tuning: minSyncPeriod under endpoint churn")[1].split("\n## ")[0]
    assert "| longest stall |" in tune
    ten = next(line for line in tune.splitlines() if line.startswith("| iptables | 1,000 | 10 s |"))
    assert ten.rstrip(" |").endswith(" ms") and float(ten.split("|")[-2].split()[0]) > 1000

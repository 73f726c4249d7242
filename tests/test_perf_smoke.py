"""Smoke run of the whole perf pipeline on the local provider: measure → frame → report → browser.

100 Services per mode (iptables single-stack IPv4, nftables dual-stack; one 1-node cluster each), a few
samples of everything, one compare-modes report opened in headless Chromium.
Checks that the pipeline works end to end on real kube-proxy, not how fast it is.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from kubernetes import config as kconfig

from proxysuite.cluster.local import provider
from proxysuite.config import SuiteConfig
from proxysuite.perf import frames
from proxysuite.perf.pipeline import PerfOptions, run_sweep
from proxysuite.perf.run import delete_namespace, perf_namespace
from proxysuite.report import compare
from proxysuite.report.browser import CHROMIUM, check_report

pytestmark = [pytest.mark.live, pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root"),
              pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
SMOKE = PerfOptions(scales=(100,), first_packet_rounds=50, npl_changes=4, npl_creates=1, load_seconds=2, load_rps=100,
                    load_users=4, load_max_seconds=2, load_max_users=20, min_sync_periods=(0.0, 2.0), min_sync_flips=2,
                    churn_rate=3)


FAMILY = {"iptables": "ipv4", "nftables": "dual"}
"""One run per family choice that changes the frame: the dual-stack one measures each family."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    saved = {}
    for mode, family in FAMILY.items():
        cfg = SuiteConfig(provider="local", mode=mode, nodes=1, cluster_name=f"pssmoke-{mode}", ip_family=family)
        cl = provider.up(cfg, progress=lambda m: print(f"[up] {m}"), owner_pid=os.getpid())
        k8s = kconfig.new_client_from_config(config_file=cl.kubeconfig)
        ns = perf_namespace(k8s, cfg.run_id, mode)
        try:
            t0 = time.monotonic()
            rec = run_sweep(cl, k8s, ns, cfg.run_id, SMOKE, reports_dir=out, progress=print)
            saved[mode] = rec.save(out)
            print(f"smoke sweep {mode}: {time.monotonic() - t0:.0f}s")
        finally:
            delete_namespace(k8s, ns)
            k8s.close()
            cl.close()
            provider.down(cfg, progress=print)
    return out, saved


def test_frames_hold_every_measurement(runs):
    _, saved = runs
    for mode, paths in saved.items():
        df, metas = frames.load([paths["parquet"]])
        s = df[df["kind"] == "summary"]
        have = set(zip(s["metric"], s["stat"]))
        for need in [("create", "seconds"), ("sync_full", "mean"), ("sync_partial", "mean"), ("npl", "p50"),
                     ("npl_metric", "mean"), ("first_packet", "p50"), ("proxy", "rss"), ("locust", "p99_us"),
                     ("locust", "throughput_rps"), ("datapath", "ruleset_lines")]:
            assert need in have, (mode, need)
        assert df["phase"].notna().all(), df[df["phase"].isna()][["metric", "stat"]].drop_duplicates()
        # the local provider sees kube-proxy's process, so the iptables-restore / nft it execs are counted
        kids = s[(s["metric"] == "proxy") & (s["stat"] == "children_cpu_seconds")]
        assert set(kids["phase"]) >= {"restart", "npl"} and kids["value"].sum() > 0, (mode, kids)
        meta = next(iter(metas.values()))
        assert meta["proxy_mode_reported"] == mode and meta["kubernetes_version"].startswith("v1.")
        assert meta["iptables_backend"] in ("nf_tables", "legacy") and meta["proxy_minSyncPeriod"]
        # the local provider offers every phase, load and the minSyncPeriod sweep included; conntrack sizing needs a
        # kernel whose nf_conntrack_max is per namespace (this one's is global: read-only outside the host's)
        ct = meta["phases"].pop("conntrack")
        assert ct["ran"] == [] and "nf_conntrack_max" in ct["reason"], ct
        assert {ph: p["ran"] for ph, p in meta["phases"].items()} == {ph: [100] for ph in meta["phases"]}, meta["phases"]
        families = ["ipv4", "ipv6"] if FAMILY[mode] == "dual" else ["ipv4"]
        assert meta["ip_families"] == families
        for metric, stat, phase in (("npl", "p50", "npl"), ("first_packet", "p50", "first_packet"),
                                    ("sync_full", "mean", "restart"), ("npl_metric", "mean", "npl")):
            rows = s[(s["metric"] == metric) & (s["stat"] == stat) & (s["phase"] == phase)]
            assert sorted(rows["ip_family"].dropna().unique()) == families, (mode, metric, rows)
        ms = s[s["metric"] == "min_sync"]
        assert set(ms["min_sync_period_s"]) == {0.0, 2.0} and set(ms["configz_min_sync"]) == {"0s", "2s"}, ms
        assert (ms[ms["stat"] == "syncs"]["value"] > 0).all()


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_report_renders(runs):
    out, saved = runs
    report = ROOT / "reports" / "perf-smoke"
    assert compare.main(["compare-modes", *(str(p["parquet"]) for p in saved.values()), "-o", str(report)]) == 0
    res = check_report(report / "compare-modes.html", report / "screenshot.png")
    assert res["console_errors"] == [] and res["remote_requests"] == []
    assert {c["key"] for c in res["charts"]} >= {"sync", "npl", "first_packet", "locust"}
    # the dual-stack run's families side by side, beside the single-stack run
    header = next(line for line in (report / "summary.md").read_text().splitlines() if line.startswith("|  |"))
    assert "iptables" in header and "nftables ipv4" not in header and "nftables/ipv4" in header and "nftables/ipv6" in header, header
    assert all(c["width"] > 300 and c["marks"] > 10 for c in res["charts"])

"""frames.py: a run's frame survives Parquet and CSV round trips with its metadata."""

import json

import pandas as pd

from proxysuite.perf import frames


def _recorder():
    rec = frames.RunRecorder("abc123", mode="nftables", provider="local", meta={"kernel": "6.18", "proxy_minSyncPeriod": "1s"})
    rec.add("sync_full.mean", 0.31, "s", scale=1000, source="kube-proxy metrics")
    rec.add_rows([{"metric": "sync.p99", "value": 0.5, "unit": "s", "estimate": True}], scale=1000)
    rec.add_samples("first_packet", [41.0, 52.5, 60.25], "us", scale=1000, target="svc-first")
    return rec


def test_frame_is_tidy():
    df = _recorder().frame()
    assert list(df.columns[: len(frames.COLUMNS)]) == frames.COLUMNS
    assert set(df["kind"]) == {"summary", "sample"}
    s = df[df["kind"] == "sample"]
    assert s["value"].tolist() == [41.0, 52.5, 60.25] and s["sample"].tolist() == [0, 1, 2]
    assert bool(df.loc[df["stat"] == "p99", "estimate"].item())
    assert (df["scale"] == 1000).all()


def test_save_and_load_round_trip(tmp_path):
    rec = _recorder()
    paths = rec.save(tmp_path)
    assert paths["parquet"].exists() and paths["csv"].exists()
    assert json.loads(paths["meta"].read_text())["proxy_minSyncPeriod"] == "1s"
    for source in (paths["parquet"], paths["csv"], tmp_path):
        df, metas = frames.load([source])
        assert len(df) == 5
        assert metas["abc123"]["kernel"] == "6.18"
        assert isinstance(df["started"].iloc[0], pd.Timestamp)


def test_iptables_backend():
    assert frames.iptables_backend("iptables v1.8.9 (nf_tables)") == "nf_tables"
    assert frames.iptables_backend("iptables v1.8.7 (legacy)") == "legacy"
    assert frames.iptables_backend(None) is None


def test_metadata_without_cluster_describes_generator():
    meta = frames.collect_metadata()
    assert meta["generator_cpus"] >= 1 and meta["generator_kernel"]

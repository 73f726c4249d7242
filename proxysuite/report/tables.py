"""Numbers the report shows, pulled out of run frames.

Everything is computed from the tidy frame (``perf.frames``): summary rows for
figures measured once per scale, sample rows to recompute percentiles over
pooled targets. With several runs per mode, the charts and tables use the
latest run of each mode and the trend uses all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..perf import catalogue as C

SERVICE_TARGETS = ("first", "first+1", "middle", "last-1", "last")
"""Labels of first-packet targets that are Services (the rest, ``pod-direct``, is the baseline)."""


def latest_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the newest run of every mode."""
    newest = df.sort_values("started").groupby("mode")["run_id"].last()
    return df[df["run_id"].isin(newest.values)]


def _col(df, name):
    return df[name] if name in df.columns else pd.Series([pd.NA] * len(df), index=df.index)


def pick(df: pd.DataFrame, metric: C.Metric, stat: str, phase: str | None = None, target: str | None = None,
         source: str | None = None) -> pd.DataFrame:
    """Summary values of a catalogue figure as a (scale × mode) table."""
    metric.key(stat)  # a stat the catalogue does not know is a typo here, not an empty table
    m = (df["kind"] == "summary") & (df["metric"] == metric.name) & (df["stat"] == stat)
    if phase is not None:
        m &= _col(df, "phase") == phase
    if target is not None:
        m &= df["target"] == target
    if source is not None:
        m &= df["source"] == source
    sub = df[m.fillna(False)]
    if sub.empty:
        return pd.DataFrame()
    return sub.pivot_table(index="scale", columns="mode", values="value", aggfunc="last").sort_index()


def locust(df: pd.DataFrame, stat: str, kind: str = "paced") -> pd.DataFrame:
    """A Locust figure (``p50_us``, ``throughput_rps``, ``generator_bound``...) for the ``paced`` or ``closed-loop`` run."""
    is_kind = df["target"] == kind
    if kind == "paced":  # runs recorded before the two load kinds existed had one, paced, run
        is_kind = is_kind | df["target"].isna()
    return pick(df[is_kind.fillna(False)], C.LOCUST, stat, phase=C.LOAD)


def pooled_first_packet(df: pd.DataFrame) -> pd.DataFrame:
    """p50/p90/p99 of all Service-target connect times per (mode, scale), and the pod-direct p50."""
    s = df[(df["kind"] == "sample") & (df["metric"] == C.FIRST_PACKET.name)]
    rows = []
    for (mode, scale), g in s.groupby(["mode", "scale"]):
        svc = g[g["target"].isin(SERVICE_TARGETS)]["value"].to_numpy()
        pod = g[g["target"] == "pod-direct"]["value"].to_numpy()
        row = {"mode": mode, "scale": int(scale), "n": len(svc)}
        if len(svc):
            row.update({f"p{q}": float(np.percentile(svc, q)) for q in (1, 50, 90, 99)})
        if len(pod):
            row.update(pod_p50=float(np.median(pod)), pod_p99=float(np.percentile(pod, 99)))
        rows.append(row)
    return pd.DataFrame(rows)


def position_medians(df: pd.DataFrame, mode: str = "iptables") -> pd.DataFrame:
    """Median connect time per KUBE-SERVICES position (iptables), per scale."""
    s = df[(df["kind"] == "sample") & (df["metric"] == C.FIRST_PACKET.name) & (df["mode"] == mode)]
    if "position" not in s.columns:
        return pd.DataFrame()
    s = s[s["position"].notna()]
    if s.empty:
        return pd.DataFrame()
    return s.groupby(["scale", "position"], as_index=False)["value"].median().rename(columns={"value": "median_us"})


def skipped_phases(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    """{mode: {phase: why}} for phases a run did not run (``phase.skipped`` rows; runs before them have none)."""
    s = df[(df["metric"] == C.PHASE_SKIPPED.name) & (df["stat"] == "skipped")]
    if s.empty or "phase" not in s.columns:
        return {}
    out: dict[str, dict[str, str]] = {}
    for _, r in s.sort_values("scale").iterrows():
        why = r["note"] if "note" in s.columns and pd.notna(r["note"]) else "no reason recorded"
        out.setdefault(r["mode"], {}).setdefault(r["phase"], why)
    return out


FLIPS = ("endpoint_ready", "endpoint_not_ready")


def npl_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Datapath programming latency per (mode, scale), from the samples.

    Endpoint flips and Service creates are kept apart: a create is two writes (Service,
    then its slice) and the second lands inside kube-proxy's ``minSyncPeriod`` window,
    so creates take ~1 s longer by design and would swamp the flips' tail.
    ``all_mean`` pools every change for the like-for-like check against kube-proxy's
    metric, which observed the same changes (we stamp the trigger time on every write).
    """
    s = df[(df["kind"] == "sample") & (df["metric"] == C.NPL_DP.name)]
    rows = []
    for (mode, scale), g in s.groupby(["mode", "scale"]):
        flips = g[g["target"].isin(FLIPS)]["value"].to_numpy()
        creates = g[g["target"] == "service_create"]["value"].to_numpy()
        res = g["resolution_ms"].to_numpy(dtype=float) if "resolution_ms" in g else np.array([np.nan])
        row = {"mode": mode, "scale": int(scale), "changes": len(g), "all_mean": float(g["value"].mean()),
               "resolution_p50": float(np.nanmedian(res)), "resolution_max": float(np.nanmax(res))}
        if len(flips):
            row.update({f"p{q}": float(np.percentile(flips, q)) for q in (50, 90, 99)}, flips=len(flips))
        if len(creates):
            row.update(create_p50=float(np.median(creates)), create_max=float(creates.max()), creates=len(creates))
        rows.append(row)
    return pd.DataFrame(rows)


def npl_table(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """One npl_stats column as (scale × mode)."""
    st = npl_stats(df)
    if st.empty or column not in st.columns:
        return pd.DataFrame()
    return st.pivot_table(index="scale", columns="mode", values=column).sort_index()


def cross_mode_slope(pooled: pd.DataFrame, q: str = "p99", slow: str = "iptables", fast: str = "nftables") -> pd.DataFrame:
    """KEP-3866's arithmetic on our data: (RTT_slow − RTT_fast) / services, in ns per Service rule."""
    if pooled.empty or q not in pooled.columns:
        return pd.DataFrame()
    p = pooled.pivot_table(index="scale", columns="mode", values=q)
    if slow not in p.columns or fast not in p.columns:
        return pd.DataFrame()
    p = p[p.index > 0]
    out = pd.DataFrame({"scale": p.index, "diff_us": p[slow] - p[fast]})
    out["ns_per_rule"] = out["diff_us"] * 1000 / out["scale"]
    return out.dropna()


# --- baseline comparison -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    metric: C.Metric
    stat: str
    phase: str | None
    target: str | None
    better: str
    """``lower`` or ``higher``."""
    floor: float
    """Absolute change below this is noise whatever the ratio (same unit as the value)."""
    label: str


KEYS = (
    Key(C.SYNC_FULL, "mean", C.RESTART, None, "lower", 0.005, "full sync mean (s)"),
    Key(C.SYNC_PARTIAL, "mean", C.NPL, None, "lower", 0.005, "partial sync mean (s)"),
    Key(C.NPL_DP, "p50", None, None, "lower", 20.0, "programming latency p50, endpoint flips (ms, datapath)"),
    Key(C.NPL_DP, "p99", None, None, "lower", 20.0, "programming latency p99, endpoint flips (ms, datapath)"),
    Key(C.FIRST_PACKET, "p50", None, "last", "lower", 5.0, "first packet p50, last rule (µs)"),
    Key(C.FIRST_PACKET, "p99", None, "last", "lower", 10.0, "first packet p99, last rule (µs)"),
    Key(C.PROXY, "rss", C.RESTART, None, "lower", 4 * 2**20, "proxy RSS after full sync (bytes)"),
    Key(C.LOCUST, "p99_us", C.LOAD, "paced", "lower", 100.0, "Locust p99 at a paced rate (µs)"),
    Key(C.LOCUST, "throughput_rps", C.LOAD, "closed-loop", "higher", 5.0, "Locust closed-loop throughput (rps)"),
)


def key_values(df: pd.DataFrame) -> pd.DataFrame:
    """Long table (mode, scale, key, value) of the KEYS, from the latest run per mode."""
    rows = []
    for k in KEYS:
        if k.metric is C.NPL_DP:
            t = npl_table(df, k.stat)
        elif k.metric is C.LOCUST:
            t = locust(df, k.stat, k.target or "paced")
        else:
            t = pick(df, k.metric, k.stat, phase=k.phase, target=k.target)
        for scale, r in t.iterrows():
            for mode, v in r.items():
                if pd.notna(v):
                    rows.append({"mode": mode, "scale": int(scale), "key": k.label, "value": float(v)})
    return pd.DataFrame(rows, columns=["mode", "scale", "key", "value"])


def compare_to_baseline(current: pd.DataFrame, baseline: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Every KEY at every (mode, scale) both runs have, with the relative change and a regression flag.

    A regression is a change in the bad direction by more than ``tolerance`` (relative)
    **and** more than the key's noise floor (absolute).
    """
    cur, base = key_values(latest_runs(current)), key_values(latest_runs(baseline))
    m = cur.merge(base, on=["mode", "scale", "key"], suffixes=("", "_baseline"))
    better = {k.label: k.better for k in KEYS}
    floor = {k.label: k.floor for k in KEYS}
    m["change"] = (m["value"] - m["value_baseline"]) / m["value_baseline"].where(m["value_baseline"] != 0)
    worse = np.where(m["key"].map(better) == "lower", m["change"], -m["change"])
    m["regression"] = (worse > tolerance) & ((m["value"] - m["value_baseline"]).abs() > m["key"].map(floor))
    return m.sort_values(["regression", "mode", "key", "scale"], ascending=[False, True, True, True]).reset_index(drop=True)


def trend(df: pd.DataFrame) -> pd.DataFrame:
    """Each KEY at each run's largest scale, over run start time (for the trend chart)."""
    rows = []
    for run_id, g in df.groupby("run_id"):
        kv = key_values(g)
        if kv.empty:
            continue
        top = kv[kv["scale"] == kv["scale"].max()]
        for _, r in top.iterrows():
            rows.append({"run_id": run_id, "mode": r["mode"], "started": g["started"].iloc[0], "scale": r["scale"],
                         "key": r["key"], "value": r["value"]})
    return pd.DataFrame(rows)


# --- the iptables backend and the tuning sweep ------------------------------------------------------------------

LEGACY_SERIES = "iptables-legacy"
"""The report's series for iptables runs whose kube-proxy used the legacy backend; nf_tables runs stay ``iptables``
(the default on current distributions, and the name every older run and chart already uses)."""


def split_iptables_backend(df: pd.DataFrame) -> pd.DataFrame:
    """Give legacy-backend iptables runs their own series, so the report never pools the two backends."""
    if "iptables_backend" not in df.columns:
        return df
    df = df.copy()
    legacy = (df["mode"] == "iptables") & (df["iptables_backend"] == "legacy").fillna(False)
    df["mode"] = df["mode"].astype("object").where(~legacy, LEGACY_SERIES)
    return df


def split_ip_families(df: pd.DataFrame) -> pd.DataFrame:
    """Give each IP family of an IPv6 or dual-stack run its own series (``iptables/ipv4``, ``iptables/ipv6``), so
    the report shows the families side by side and never pools them; single-stack IPv4 runs keep the plain mode
    name every older run and chart uses. A dual-stack run's rows without a family (the proxy process, rule counts)
    go to its primary family's series."""
    if "ip_families" not in df.columns:
        return df
    fams = df["ip_families"].astype("object").fillna("ipv4")
    split = fams != "ipv4"
    if not split.any():
        return df
    df = df.copy()
    primary = fams.str.split(",").str[0]
    family = _col(df, "ip_family").astype("object")
    family = family.where(family.notna(), primary)
    df["mode"] = df["mode"].astype("object").where(~split, df["mode"].astype("object") + "/" + family.astype(str))
    return df


def series_header(df: pd.DataFrame, mode: str) -> str:
    """A column header that names the backend: ``iptables (nf_tables)``, ``iptables-legacy``."""
    if mode.split("/")[0] != "iptables" or "iptables_backend" not in df.columns:
        return mode
    b = df[df["mode"] == mode]["iptables_backend"].dropna().unique()
    family = mode.partition("/")[2]
    return f"iptables ({b[0]}){' ' + family if family else ''}" if len(b) == 1 else mode


def min_sync_table(df: pd.DataFrame) -> pd.DataFrame:
    """The minSyncPeriod sweep: one row per series and period (``min_sync`` rows)."""
    s = df[(df["metric"] == C.MIN_SYNC.name) & (df["kind"] == "summary")]
    if s.empty or "min_sync_period_s" not in s.columns:
        return pd.DataFrame()
    samples = df[(df["metric"] == C.MIN_SYNC.name) & (df["kind"] == "sample")]
    rows = []
    for (mode, scale, period), g in s.groupby(["mode", "scale", "min_sync_period_s"]):
        v = dict(zip(g["stat"], g["value"]))
        # The longest run of unanswered connects during any wait (runs before the column existed show "–").
        mine = samples[(samples["mode"] == mode) & (samples["scale"] == scale) & (samples["min_sync_period_s"] == period)]
        stall = mine["stall_ms"].max() if "stall_ms" in mine and mine["stall_ms"].notna().any() else None
        cfg = g["configz_min_sync"].dropna().iloc[0] if "configz_min_sync" in g and g["configz_min_sync"].notna().any() else "–"
        rows.append({"series": mode, "Services": f"{int(scale):,}", "minSyncPeriod": f"{period:g} s", "configz": cfg,
                     "flip p50": f"{v.get('p50', float('nan')):.0f} ms", "flip p90": f"{v.get('p90', float('nan')):.0f} ms",
                     "flip max": f"{v.get('max', float('nan')):.0f} ms", "changes": f"{v.get('changes', 0):.0f}",
                     "syncs": f"{v.get('syncs', 0):.0f}", "changes/sync": f"{v.get('changes_per_sync', float('nan')):.1f}",
                     "sync mean": f"{v.get('sync_mean', float('nan')) * 1000:.0f} ms",
                     "CPU per change": f"{v.get('cpu_per_change', float('nan')):.1f} ms",
                     "proxy CPU": f"{v.get('cpu_cores', float('nan')) * 100:.0f} %",
                     "longest stall": "–" if stall is None else f"{stall:.0f} ms"})
    return pd.DataFrame(rows)

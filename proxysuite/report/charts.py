"""The report's charts, drawn once with matplotlib and written twice: inline SVG for the HTML, PNG files.

One library for both outputs: the HTML stays self-contained with no
JavaScript at all (nothing to inline, nothing that can fail in a browser), and
the PNGs need no browser (plotly's static export, kaleido, drives Chromium).
Every chart function returns a Figure, or None when the runs have no data for it.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # never pick an interactive backend on a CI box
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..perf import catalogue as C  # noqa: E402
from . import anchors, tables  # noqa: E402

MODE_COLORS = {"iptables": "#d62728", "iptables-legacy": "#ff7f0e", "nftables": "#1f77b4", "ipvs": "#2ca02c", "cilium": "#9467bd", "custom": "#8c564b"}
plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                     "figure.dpi": 100, "savefig.bbox": "tight"})


def _color(mode: str) -> str:
    return MODE_COLORS.get(mode, "#7f7f7f")


def _services_axis(ax, log=True):
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("Services")


def sync_chart(df: pd.DataFrame):
    full = tables.pick(df, C.SYNC_FULL, "mean", phase=C.RESTART)
    part = tables.pick(df, C.SYNC_PARTIAL, "mean", phase=C.NPL)
    allsync = tables.pick(df, C.SYNC, "mean", phase=C.CREATE)
    # Cilium has no sync: its reconciler writes one Service's BPF map entries at a time (catalogue DP_WRITE).
    writes = tables.pick(df, C.DP_WRITE, "update_mean", phase=C.CREATE)
    if full.empty and part.empty and allsync.empty and writes.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for t, style, what in ((full, "-o", "full sync (fresh proxy)"), (part, "--s", "partial sync (endpoint flips)"),
                           (allsync, ":^", "any sync while creating"), (writes, "-.d", "one Service's BPF map write")):
        for mode in t.columns:
            s = t[mode].dropna()
            ax.plot(s.index, s.values, style, color=_color(mode), label=f"{mode}: {what}")
    _services_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (mean per sync or write)")
    ax.set_title("Rule sync duration vs Services (the proxy's own metrics)")
    ax.legend(fontsize=7)
    return fig


def npl_chart(df: pd.DataFrame):
    st = tables.npl_stats(df)
    if st.empty or "p50" not in st.columns:
        return None
    metric = tables.pick(df, C.NPL_METRIC, "mean", phase=C.NPL)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for mode, g in st.groupby("mode"):
        g = g.sort_values("scale")
        for q, style in (("p50", "-o"), ("p90", "--s"), ("p99", ":^")):
            ax.plot(g["scale"], g[q], style, color=_color(mode), label=f"{mode} {q}")
        if "create_p50" in g:
            ax2.plot(g["scale"], g["create_p50"], "-o", color=_color(mode), label=f"{mode} Service create p50")
        ax2.plot(g["scale"], g["all_mean"], "--", color=_color(mode), alpha=0.7, label=f"{mode} mean, all changes (datapath)")
        if mode in metric.columns:
            s = metric[mode].dropna() * 1000
            ax2.plot(s.index, s.values, "x", color=_color(mode), markersize=9, mew=2, label=f"{mode} mean (kube-proxy metric)")
    for a in (ax, ax2):
        _services_axis(a)
        a.legend(fontsize=7)
    ax.set_ylabel("ms from API write to datapath")
    ax.set_title("Endpoint readiness flips (probes ≤10 ms apart)")
    ax2.set_ylabel("ms")
    ax2.set_title("Service creates; cross-check with kube-proxy")
    fig.tight_layout()
    return fig


def first_packet_chart(df: pd.DataFrame):
    pooled = tables.pooled_first_packet(df)
    if pooled.empty or "p50" not in pooled.columns:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for mode, g in pooled.groupby("mode"):
        g = g[g["scale"] > 0].sort_values("scale")
        if "p50" in g:
            ax.plot(g["scale"], g["p50"], "-o", color=_color(mode), label=f"{mode} p50")
            ax.plot(g["scale"], g["p99"], "--s", color=_color(mode), label=f"{mode} p99")
        if "pod_p50" in g:
            ax.plot(g["scale"], g["pod_p50"], ":", color=_color(mode), alpha=0.6, label=f"{mode} direct-to-pod p50")
    for mode in ("iptables", "nftables"):
        xs = list(anchors.KEP3866_FIRST_PACKET_US)
        ys = [anchors.KEP3866_FIRST_PACKET_US[x][mode][3] for x in xs]
        ax.plot(xs, ys, "D", mfc="none", color=_color(mode), label=f"KEP-3866 {mode} p99 (chart-read)")
    _services_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel("µs (TCP handshake, new connection)")
    ax.set_title("First-packet latency vs Services")
    ax.legend(fontsize=7, ncol=2)
    return fig


def position_chart(df: pd.DataFrame):
    pm = tables.position_medians(df)
    if pm.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    cmap = plt.get_cmap("viridis")
    scales = sorted(pm["scale"].unique())
    for i, scale in enumerate(scales):
        g = pm[pm["scale"] == scale]
        c = cmap(i / max(1, len(scales) - 1))
        ax.plot(g["position"], g["median_us"], "o", color=c, label=f"{scale} Services")
        if g["position"].nunique() >= 2:
            k, b = np.polyfit(g["position"].astype(float), g["median_us"], 1)
            xs = np.array([0, g["position"].max()])
            ax.plot(xs, k * xs + b, "-", color=c, alpha=0.6, label=f"fit: {k * 1000:.1f} ns/rule")
    ax.set_xlabel("position of the Service's rule in KUBE-SERVICES")
    ax.set_ylabel("median first-packet µs")
    ax.set_title("iptables: cost of walking KUBE-SERVICES")
    ax.legend(fontsize=7)
    return fig


def locust_chart(df: pd.DataFrame):
    p50 = tables.locust(df, "p50_us")
    if p50.empty:
        return None
    p99 = tables.locust(df, "p99_us")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for mode in p50.columns:
        a1.plot(p50.index, p50[mode], "-o", color=_color(mode), label=f"{mode} p50 (paced)")
        a1.plot(p99.index, p99[mode], "--s", color=_color(mode), label=f"{mode} p99 (paced)")
    flagged = False
    for kind, style in (("paced", "--"), ("closed-loop", "-o")):
        rps, bound = tables.locust(df, "throughput_rps", kind), tables.locust(df, "generator_bound", kind)
        for mode in rps.columns:
            s = rps[mode].dropna()
            a2.plot(s.index, s.values, style, color=_color(mode), label=f"{mode} {kind}")
            if mode in bound.columns:
                b = (bound[mode].reindex(s.index).fillna(0) > 0).to_numpy()
                if b.any():
                    a2.plot(s.index[b], s.values[b], "X", color="black", markersize=10,
                            label=None if flagged else "generator-bound (Locust CPU)")
                    flagged = True
    for a in (a1, a2):
        _services_axis(a)
        a.legend(fontsize=7)
    a1.set_ylabel("µs per request (raw request-event timings)")
    a1.set_yscale("log")
    a1.set_title("Locust latency through a Service")
    a2.set_ylabel("requests/s")
    a2.set_title("Locust throughput")
    fig.tight_layout()
    return fig


def trend_chart(trend: pd.DataFrame):
    if trend.empty or trend.groupby("mode")["run_id"].nunique().max() < 2:
        return None
    keys = [k for k in trend["key"].unique()]
    n = len(keys)
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(9, 2.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        g = trend[trend["key"] == key]
        for mode, gm in g.groupby("mode"):
            gm = gm.sort_values("started")
            ax.plot(gm["started"], gm["value"], "-o", color=_color(mode), label=mode)
        ax.set_title(key, fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=6)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle("Trend across runs (each run's largest scale)")
    fig.tight_layout()
    return fig


def render(fig, png_path) -> str:
    """Write the PNG and return the SVG markup (XML prolog stripped, so it can sit inside HTML)."""
    fig.savefig(png_path, format="png")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]

"""Every figure a perf run records, in one place: name, unit, meaning, how it is reduced, where it is shown.

A run frame (``perf.frames``) stores a figure as ``metric`` + ``stat`` columns
(``first_packet`` / ``p99``, ``sync_full`` / ``mean``, raw samples as ``stat="sample"``).
The pipeline writes those names, the report reads them; both take them from here,
so a typo is an error at the first write, not a blank cell in a report::

    from proxysuite.perf import catalogue as C

    ctx.add(C.FIRST_PACKET, "p99", 412.0, target="last")    # in a phase (unit from the catalogue)
    tables.pick(df, C.SYNC_FULL, "mean", phase=C.RESTART)    # in the report

The names are the frame's vocabulary and are never renamed: runs saved long ago
(``tests/data/perf-runs``) must stay readable by today's report.

Adding a measurement: add a :class:`Metric` here (the frame refuses unknown names),
record it in the phase that measures it (``perf.phases``), read it in
``report/tables.py`` / ``charts.py`` / ``compare.py`` as ``shown_in`` says, and run
``python -m proxysuite.perf.catalogue`` to refresh the table in ``docs/perf.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# --- phases: the ``phase`` column of a row, and the names phases report under --------------------------------------

CREATE = "create"
"""Grow the Service fleet to the scale and wait until the datapath has it; kube-proxy deltas over that window."""
RESOURCES = "resources"
"""Size of what the proxy programmed (ruleset lines), read after ``create``."""
RESTART = "restart"
"""Restart the proxy and time its first *full* sync at this scale; kube-proxy deltas from the new process."""
FIRST_PACKET_PHASE = "first_packet"
"""New TCP connections to Services near the start, middle and end of the chain, and straight to a pod."""
NPL = "npl"
"""Network programming latency: readiness flips and Service creates timed in the datapath; kube-proxy deltas
over the same window (its syncs there are *partial* syncs)."""
LOAD = "load"
"""Locust through one Service from inside the client pod's network namespace."""
TEARDOWN = "teardown"
"""Deleting the fleet at the end of the run."""
MIN_SYNC_PHASE = "min_sync"
"""Tuning sweep: kube-proxy restarted with each ``--min-sync-periods`` value, endpoint churn in the background,
timed flips in the datapath, the proxy's CPU per change (largest scale only)."""
CONNTRACK_PHASE = "conntrack"
"""Conntrack table size against connection churn, where the node's namespace can set its own table size."""

# --- where figures are shown -------------------------------------------------------------------------------------

CHARTS = ("sync", "npl", "first_packet", "position", "locust", "trend")
"""Chart keys of the compare-modes report (``figure.chart[data-chart=KEY]``, ``charts/KEY.png``)."""
TABLE = "table"
"""The per-mode comparison table of the report."""
BASELINE = "baseline"
"""The figures compared against a baseline run (``report.tables.KEYS``)."""


@dataclass(frozen=True)
class Metric:
    """One family of figures: the frame's ``metric`` column, with the ``stat`` values it takes."""

    name: str
    """The ``metric`` column (never renamed: old runs must stay readable)."""
    unit: str
    """Unit of its values (``units`` overrides it per stat)."""
    description: str
    stats: tuple[str, ...]
    """The ``stat`` values recorded; ``sample`` means raw sample rows. Empty: open-ended (see ``stat_pattern``)."""
    aggregate: str
    """How a figure is obtained or reduced (so a reader knows an estimate from an exact value)."""
    phases: tuple[str, ...] = ()
    """The phases that record it."""
    shown_in: tuple[str, ...] = ()
    """Report charts (:data:`CHARTS` keys), :data:`TABLE` and/or :data:`BASELINE`."""
    units: dict[str, str] = field(default_factory=dict)
    stat_pattern: str | None = None
    """For open-ended families (one stat per kube-proxy gauge and label set): the stats it accepts."""

    def __str__(self) -> str:
        return self.name

    def has(self, stat: str) -> bool:
        if stat in self.stats:
            return True
        return bool(self.stat_pattern and re.fullmatch(self.stat_pattern, stat))

    def unit_of(self, stat: str) -> str:
        return self.units.get(stat, self.unit)

    def key(self, stat: str) -> str:
        """``family.stat``, checked: the name ``RunRecorder.add`` takes."""
        if not self.has(stat):
            raise KeyError(f"perf metric {self.name!r} has no stat {stat!r} (known: {', '.join(self.stats)}); "
                           f"add it in proxysuite/perf/catalogue.py")
        return f"{self.name}.{stat}"


_HIST_STATS = ("count", "mean", "p50", "p90", "p99")
_HIST_AGG = ("delta of kube-proxy's cumulative histogram over the phase window (IPv4 proxier): mean = sum/count "
             "(exact); p50/p90/p99 interpolated inside buckets like histogram_quantile (estimate=True)")
_PCT = ("p50", "p90", "p99")

# --- the catalogue ------------------------------------------------------------------------------------------------

CREATE_FIG = Metric(
    "create", "s", "Growing the fleet to the scale: API time for the creates, their rate, and last write → the newest "
    "Service answers in the datapath.", ("seconds", "rate", "settle_seconds"),
    "one value per scale", (CREATE,), (), {"rate": "services/s"})
RULESET = Metric(
    "datapath", "lines", "Lines of the proxy's own dump (iptables-save, nft list table ip kube-proxy) after create.",
    ("ruleset_lines",), "one value per scale; absent where the provider has no node exec or the mode no dump",
    (RESOURCES,), (TABLE,))
RESTART_FIG = Metric(
    "restart", "s", "Proxy restart → its first full sync finished (read from its metrics).", ("ready_seconds",),
    "one value per scale", (RESTART,))
SYNC = Metric(
    "sync", "s", "Every rule sync, full or partial (kubeproxy_sync_proxy_rules_duration_seconds).", _HIST_STATS,
    _HIST_AGG, (CREATE, RESTART, NPL), ("sync",), {"count": "count"})
SYNC_FULL = Metric(
    "sync_full", "s", "Full syncs only (kubeproxy_sync_full_proxy_rules_duration_seconds); the report reads the "
    "restart phase: a fresh process at this scale.", _HIST_STATS, _HIST_AGG, (CREATE, RESTART, NPL),
    ("sync", TABLE, BASELINE), {"count": "count"})
SYNC_PARTIAL = Metric(
    "sync_partial", "s", "Partial syncs only (kubeproxy_sync_partial_proxy_rules_duration_seconds); the report reads "
    "the npl phase.", _HIST_STATS, _HIST_AGG, (CREATE, RESTART, NPL), ("sync", TABLE, BASELINE), {"count": "count"})
DP_WRITE = Metric(
    "dp_write", "s", "Cilium's counterpart of a sync: one Service's (frontend's) BPF map write by the agent's load-"
    "balancer reconciler (cilium_reconciler_duration_seconds{module_id=\"agent.controlplane.loadbalancer-reconciler\"}); stat prefix "
    "update_ or delete_ by op. Per object, not per round: not comparable one to one with kube-proxy's sync.",
    tuple(f"{op}_{s}" for op in ("update", "delete") for s in _HIST_STATS),
    "delta of the agent's cumulative histogram over the phase window; quantiles interpolated in buckets (estimate=True)",
    (CREATE, NPL), ("sync", TABLE), {f"{op}_count": "count" for op in ("update", "delete")})
NPL_METRIC = Metric(
    "npl_metric", "s", "kube-proxy's own network programming latency (kubeproxy_network_programming_duration_seconds): "
    "trigger time → programmed, 250 ms buckets at best.", _HIST_STATS, _HIST_AGG, (CREATE, RESTART, NPL),
    ("npl", TABLE), {"count": "count"})
PROXY = Metric(
    "proxy", "s", "The proxy process: RSS at the end of the phase; CPU seconds (and average cores) in it; the CPU of "
    "its exited children (iptables-restore, nft) where the provider sees the process.",
    ("rss", "cpu_seconds", "cpu_cores", "children_cpu_seconds", "children_cpu_cores"),
    "RSS: the gauge at the phase's end; CPU: counter delta over the phase window", (CREATE, RESTART, NPL),
    (TABLE, BASELINE), {"rss": "bytes", "cpu_cores": "cores", "children_cpu_cores": "cores"})
RULES = Metric(
    "rules", "count", "kube-proxy's rule gauges (kubeproxy_sync_proxy_rules_*: iptables_total[table=nat], "
    "endpoint_changes_pending, ...), one stat per gauge and label set.", (),
    "the gauge at the phase's end", (CREATE, RESTART, NPL), stat_pattern=r"[a-z0-9_]+(\[.*\])?")
FIRST_PACKET = Metric(
    "first_packet", "us", "TCP handshake of a new connection (SYN → SYN-ACK at the client), per target: Services at "
    "first, first+1, middle, last-1, last of KUBE-SERVICES (iptables) or creation order, and pod-direct; at scale 0, "
    "pod-direct only (the client's own cost).", ("sample", *_PCT, "slope_per_rule"),
    "samples kept; per-target percentiles; the report pools Service targets per scale; slope_per_rule = least-squares "
    "median vs KUBE-SERVICES position", (FIRST_PACKET_PHASE,), ("first_packet", "position", TABLE, BASELINE),
    {"slope_per_rule": "ns/rule"})
NPL_DP = Metric(
    "npl", "ms", "Network programming latency in the datapath: API write → first probe that sees the change (probes "
    "≤ 10 ms apart). Samples carry target (endpoint_ready, endpoint_not_ready, service_create), resolution_ms, api_ms, "
    "evidence (ok, refused, timeout: what showed the change), stall_ms (longest run of connect timeouts while waiting); "
    "p50/p90/p99 are over endpoint flips only.", ("sample", *_PCT, "max_resolution"),
    "samples kept; percentiles of the flips (creates are two writes, the second inside minSyncPeriod)", (NPL,),
    ("npl", TABLE, BASELINE))
NPL_ALL = Metric(
    "npl_all", "ms", "Mean over every change of the npl window (flips and creates): the like-for-like figure for "
    "npl_metric.mean.", ("mean",), "mean of the samples", (NPL,), ("npl", TABLE))
NPL_READY = Metric("npl_endpoint_ready", "ms", "Endpoint turned ready → datapath, median.", ("p50",), "median of the samples",
                   (NPL,))
NPL_NOT_READY = Metric("npl_endpoint_not_ready", "ms", "Endpoint turned not ready → datapath, median.", ("p50",),
                       "median of the samples", (NPL,))
NPL_CREATE = Metric("npl_service_create", "ms", "Service create → its ClusterIP answers, median.", ("p50",),
                    "median of the samples", (NPL,))
_LOCUST_US = ("p50_us", "p90_us", "p99_us", "p99.9_us", "mean_us", "max_us", "generator_loop_lag_p50_us")
LOCUST = Metric(
    "locust", "us", "Locust through one Service (target: paced or closed-loop run): request-time percentiles from raw "
    "request events (HDR histogram), throughput, errors, and the generator's own CPU with the generator-bound flag.",
    (*_LOCUST_US, "count", "errors", "error_rate", "throughput_rps", "duration_s", "generator_cpu_p50_pct",
     "generator_cpu_max_pct", "generator_demand_p50_pct", "generator_bound", "generator_bound_note"),
    "one value per run and scale (HDR percentiles, 3 significant digits)", (LOAD,), ("locust", TABLE, BASELINE),
    {"count": "count", "errors": "count", "error_rate": "ratio", "throughput_rps": "rps", "duration_s": "s",
     "generator_cpu_p50_pct": "%", "generator_cpu_max_pct": "%", "generator_demand_p50_pct": "%",
     "generator_bound": "bool", "generator_bound_note": "bool"})
LOCUST_RESPONSE = Metric(
    "locust.response", "us", "Raw Locust request times of successful requests (≤ 5,000 per run, evenly thinned).",
    ("sample",), "samples kept", (LOAD,))
TEARDOWN_FIG = Metric("teardown", "s", "Deleting the whole fleet at the end of the run.", ("seconds",), "one value per run",
                      (TEARDOWN,))
PHASE_SKIPPED = Metric(
    "phase", "bool", "A phase that did not apply at this scale; the row's phase column names it and note says why "
    "(also in meta.json under phases).", ("skipped",), "one row per skipped phase and scale", (), (TABLE,))

MIN_SYNC = Metric(
    "min_sync", "ms", "minSyncPeriod sweep under endpoint churn, one set of figures per period (the row's "
    "min_sync_period_s; configz_min_sync is what kube-proxy's /configz said it ran with): timed endpoint flips of one "
    "Service while a background thread flips other Services at --churn-rate (samples carry evidence, as npl's); the proxy's CPU (process + "
    "iptables-restore/nft children) per API change, how many changes each sync carried.",
    ("sample", "p50", "p90", "max", "changes", "syncs", "changes_per_sync", "sync_mean", "cpu_per_change", "cpu_cores"),
    "samples kept; percentiles of the timed flips; counts and CPU as deltas of kube-proxy's metrics over the window",
    (MIN_SYNC_PHASE,), (TABLE,),
    {"changes": "count", "syncs": "count", "changes_per_sync": "ratio", "sync_mean": "s", "cpu_per_change": "ms",
     "cpu_cores": "cores"})

METRICS: dict[str, Metric] = {m.name: m for m in (
    CREATE_FIG, RULESET, RESTART_FIG, SYNC, SYNC_FULL, SYNC_PARTIAL, DP_WRITE, NPL_METRIC, PROXY, RULES, FIRST_PACKET, NPL_DP,
    NPL_ALL, NPL_READY, NPL_NOT_READY, NPL_CREATE, LOCUST, LOCUST_RESPONSE, TEARDOWN_FIG, PHASE_SKIPPED, MIN_SYNC)}
"""Every family by its frame name."""

PHASES = {
    CREATE: "grow the fleet to the scale and wait until the datapath has it",
    RESOURCES: "size of the programmed ruleset",
    RESTART: "restart the proxy; its first full sync at this scale",
    FIRST_PACKET_PHASE: "new-connection handshakes through Services and straight to a pod",
    NPL: "programming latency of endpoint flips and Service creates (partial syncs)",
    LOAD: "Locust through one Service, paced then closed loop",
    MIN_SYNC_PHASE: "minSyncPeriod sweep under endpoint churn (largest scale, --min-sync-periods)",
    CONNTRACK_PHASE: "conntrack table size under connection churn (where the node's namespace can size its table)",
    TEARDOWN: "delete the fleet",
}
"""Phase name → what it does, in sweep order."""


def split(name: str) -> tuple[str, str]:
    """``first_packet.p99`` → (``first_packet``, ``p99``); ``locust.response`` (a family with a dot) stays whole."""
    if name in METRICS:
        return name, ""
    family, _, stat = name.partition(".")
    return family, stat


def lookup(family: str, stat: str, unit: str | None = None) -> Metric:
    """The family of a row, checked: unknown names, stats and units are errors that say where to add them."""
    m = METRICS.get(family)
    if m is None:
        raise KeyError(f"perf metric {family!r} is not in the catalogue; add it in proxysuite/perf/catalogue.py")
    if not m.has(stat):
        m.key(stat)  # raises with the known stats
    if unit is not None and unit != m.unit_of(stat):
        raise ValueError(f"perf metric {family}.{stat} is recorded in {unit!r} but the catalogue says "
                         f"{m.unit_of(stat)!r} (proxysuite/perf/catalogue.py)")
    return m


def markdown() -> str:
    """The catalogue as a Markdown table (docs/perf.md holds a copy; a test keeps them equal)."""
    out = ["| metric | stats | unit | what | how | phases | shown in |", "|---|---|---|---|---|---|---|"]
    for m in METRICS.values():
        stats = ", ".join(m.stats) if m.stats else f"one per gauge (`{m.stat_pattern}`)"
        units = m.unit + "".join(f"; {s}: {u}" for s, u in m.units.items())
        out.append(f"| `{m.name}` | {stats} | {units} | {m.description} | {m.aggregate} | {', '.join(m.phases) or '–'} "
                   f"| {', '.join(m.shown_in) or '–'} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())

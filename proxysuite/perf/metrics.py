"""Read a proxy's Prometheus metrics and turn two scrapes into what happened between them.

kube-proxy exports cumulative histograms: every sync since the process
started is in ``kubeproxy_sync_proxy_rules_duration_seconds``. A run at 5,000
services must not be polluted by the start-up sync at 0 services, so every
figure here is a **delta between two scrapes** taken around the measured phase::

    before = scrape(cluster, node)
    ... create services, flip endpoints ...
    after = scrape(cluster, node)
    d = delta(before, after)
    d.histogram(SYNC).mean, d.histogram(SYNC).quantile(0.99)
    d.counter("process_cpu_seconds_total")

Quantiles from buckets are estimates, interpolated inside the bucket like
Prometheus' ``histogram_quantile``; they are never better than the bucket
edges (1 ms·2^k for sync durations, 250 ms and then 1 s for network
programming latency), which is why the suite measures programming latency in
the datapath as well (``perf.latency``). ``Histogram.mean`` (sum/count) is
exact and is the figure the report leads with.

Parsing uses ``prometheus_client``'s own text parser so the format corner
cases (escaping, ``+Inf``, ``_total`` suffixes) are the reference ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..modes import KUBE_PROXY_METRICS_PORT
from . import catalogue as C

SYNC = "kubeproxy_sync_proxy_rules_duration_seconds"
"""Every sync, full or partial (all modes)."""
SYNC_FULL = "kubeproxy_sync_full_proxy_rules_duration_seconds"
"""Full syncs only (iptables and nftables proxiers, 1.28+)."""
SYNC_PARTIAL = "kubeproxy_sync_partial_proxy_rules_duration_seconds"
"""Partial syncs only (iptables and nftables proxiers, 1.28+)."""
NPL = "kubeproxy_network_programming_duration_seconds"
"""Trigger time (API change) to programmed, as kube-proxy sees it; 250 ms buckets at best."""
HISTOGRAMS = (SYNC, SYNC_FULL, SYNC_PARTIAL, NPL)

CILIUM_SYNC = "cilium_reconciler_duration_seconds"
"""Cilium's counterpart of a sync: each round of the StateDB reconciler that writes Services and backends into the
BPF maps (``module_id="agent.controlplane.loadbalancer-reconciler"``, pkg/loadbalancer/reconciler; the histogram in
pkg/hive/reconciler_metrics.go, off by default, which the suite's Helm values turn on). Its ``op="update"``
observations are the map writes of a round."""
CILIUM_ROUNDS = "cilium_reconciler_count_total"
"""(prometheus_client names a counter's sample with ``_total`` even where Cilium exposes it without.)"""
CILIUM_LB = {"module_id": "agent.controlplane.loadbalancer-reconciler", "name": ""}
"""The reconciler of pkg/loadbalancer/reconciler (hive module "loadbalancer-reconciler" under agent.controlplane)."""

RSS = "process_resident_memory_bytes"
CPU = "process_cpu_seconds_total"
CILIUM_PREFIX = "cilium_"
CHILD_CPU = "proxysuite_proxy_children_cpu_seconds"
"""Added by the suite where the provider sees the proxy's process: CPU of its exited children."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class Scrape:
    """One parsed scrape of a metrics endpoint."""

    at: float
    """Wall-clock time of the scrape (time.time())."""
    text: str = field(default="", repr=False)
    """The exposition text as scraped (kept so a run can be re-analysed later)."""
    families: dict[str, str] = field(default_factory=dict)
    """Family name → type (counter, gauge, histogram, ...)."""
    samples: dict[tuple[str, tuple], float] = field(default_factory=dict)
    """(sample name, sorted labels) → value."""

    def value(self, name: str, /, **labels: str) -> float | None:
        """A single sample's value; with no labels given, the sum over all label sets (None if absent)."""
        if labels:
            return self.samples.get((name, tuple(sorted(labels.items()))))
        found = [v for (n, _), v in self.samples.items() if n == name]
        return sum(found) if found else None

    def histogram(self, family: str, /, **labels: str) -> "Histogram | None":
        return _histogram_from(self.samples, family, labels)

    def labelled(self, name: str, label: str = "ip_family") -> bool:
        """Whether any sample of ``name`` (or of its ``_bucket``/``_count``/``_sum`` series) carries ``label``."""
        return any(n.startswith(name) and label in dict(lab) for n, lab in self.samples)

    def of_family(self, family_metric: str, ip_family: str) -> "Histogram | None":
        """The histogram of one proxier (``ip_family`` IPv4/IPv6) when kube-proxy labels them; the unlabelled one
        otherwise. Never another family's: a proxier that has not synced yet has no histogram (None)."""
        if self.labelled(family_metric):
            return self.histogram(family_metric, ip_family=ip_family)
        return self.histogram(family_metric)


def parse(text: str, at: float | None = None) -> Scrape:
    """Parse Prometheus text exposition into a :class:`Scrape`."""
    out = Scrape(at=time.time() if at is None else at, text=text)
    for fam in text_string_to_metric_families(text):
        out.families[fam.name] = fam.type
        for s in fam.samples:
            out.samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def scrape(cluster, node: str, port: int = KUBE_PROXY_METRICS_PORT, path: str = "/metrics") -> Scrape:
    """GET and parse the proxy's metrics on ``node`` through the cluster's ``proxy_http``."""
    at = time.time()
    status, body = cluster.proxy_http(node, port, path)
    if status != 200:
        raise RuntimeError(f"metrics endpoint on node {node} port {port}{path} answered HTTP {status}: {body[:200]!r}")
    if cluster.features().proxy_children_cpu:
        children = cluster.proxy_children_cpu_seconds(node)
        # Appended in exposition format, so a kept scrape re-analyses to the same figures.
        body = body.rstrip("\n") + f"\n# TYPE {CHILD_CPU} counter\n{CHILD_CPU}_total {children}\n"
    return parse(body, at=at)


@dataclass(frozen=True)
class Histogram:
    """A cumulative Prometheus histogram (or the difference of two)."""

    buckets: tuple[tuple[float, float], ...]
    """(upper bound ``le``, cumulative count), sorted by bound, ending with +Inf."""
    count: float
    sum: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimate the q-quantile like PromQL ``histogram_quantile``.

        Linear interpolation inside the bucket that holds the rank; a rank in
        the +Inf bucket returns the last finite bound (the estimate can only say
        "at least this"). NaN when the histogram is empty.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"quantile {q} is outside [0, 1]")
        total = self.buckets[-1][1] if self.buckets else 0
        if total <= 0:
            return math.nan
        rank = q * total
        prev_bound, prev_count = 0.0, 0.0
        for bound, cum in self.buckets:
            if cum >= rank:
                if math.isinf(bound):
                    return prev_bound
                if cum == prev_count:
                    return bound
                return prev_bound + (bound - prev_bound) * (rank - prev_count) / (cum - prev_count)
            prev_bound, prev_count = bound, cum
        return prev_bound

    def __sub__(self, earlier: "Histogram") -> "Histogram":
        prev = dict(earlier.buckets)
        return Histogram(
            buckets=tuple((le, c - prev.get(le, 0.0)) for le, c in self.buckets),
            count=self.count - earlier.count,
            sum=self.sum - earlier.sum,
        )

    def resolution_at(self, value: float) -> float:
        """Width of the bucket that holds ``value``: how coarse a quantile near it can be."""
        prev = 0.0
        for bound, _ in self.buckets:
            if value <= bound:
                return bound - prev if not math.isinf(bound) else math.inf
            prev = bound
        return math.inf


def _histogram_from(samples: dict, family: str, labels: dict) -> Histogram | None:
    """Collect one histogram; with no labels, add up every label set (e.g. both IP families)."""
    want = set(labels.items())
    buckets: dict[float, float] = {}
    count = total = 0.0
    seen = False
    for (name, lab), value in samples.items():
        labd = dict(lab)
        if not want <= set(labd.items()):
            continue
        if name == family + "_bucket":
            le = float(labd["le"])
            buckets[le] = buckets.get(le, 0.0) + value
            seen = True
        elif name == family + "_count":
            count += value
            seen = True
        elif name == family + "_sum":
            total += value
    if not seen:
        return None
    return Histogram(tuple(sorted(buckets.items())), count, total)


@dataclass(frozen=True)
class Delta:
    """What changed between two scrapes of the same process."""

    before: Scrape
    after: Scrape

    @property
    def seconds(self) -> float:
        return self.after.at - self.before.at

    @property
    def restarted(self) -> bool:
        """True if the process restarted in between (a counter went backwards): deltas are then meaningless."""
        a, b = self.after.value("process_start_time_seconds"), self.before.value("process_start_time_seconds")
        return a is not None and b is not None and a != b

    def histogram(self, family: str, /, **labels: str) -> Histogram | None:
        a = self.after.histogram(family, **labels)
        if a is None:
            return None
        b = self.before.histogram(family, **labels)
        return a - b if b is not None else a

    def counter(self, name: str, /, **labels: str) -> float | None:
        a, b = self.after.value(name, **labels), self.before.value(name, **labels)
        if a is None:
            return None
        return a - (b or 0.0)


def summarize(d: Delta, ip_family: str | None = "IPv4") -> list[dict]:
    """Tidy rows (metric, value, unit) for every figure the report uses.

    Histograms give ``<short>.count``, ``.mean``, ``.p50``, ``.p90``, ``.p99``
    (bucket estimates, flagged ``estimate=True``); the process gives RSS at
    the end and CPU seconds (and average cores) spent in between.

    kube-proxy runs one proxier per IP family and labels its histograms
    ``ip_family``; on a dual-stack node the IPv6 proxier syncs an empty ruleset
    in a few ms, and pooling it would halve every mean. So only ``ip_family``
    (IPv4 by default) is read, when the label exists at all.
    """
    short = {SYNC: C.SYNC, SYNC_FULL: C.SYNC_FULL, SYNC_PARTIAL: C.SYNC_PARTIAL, NPL: C.NPL_METRIC}
    rows: list[dict] = []

    def row(metric: C.Metric, stat: str, value: float, source: str, **extra) -> None:
        rows.append(dict(metric=metric.key(stat), value=value, unit=metric.unit_of(stat), source=source, **extra))

    for fam in HISTOGRAMS:
        labelled = ip_family and any(n.startswith(fam) and "ip_family" in dict(lab) for n, lab in d.after.samples)
        h = d.histogram(fam, ip_family=ip_family) if labelled else d.histogram(fam)
        if h is None:
            continue
        row(short[fam], "count", h.count, fam)
        if h.count:
            row(short[fam], "mean", h.mean, fam)
            for q in (0.5, 0.9, 0.99):
                row(short[fam], f"p{round(q * 100)}", h.quantile(q), fam, estimate=True)
    for op in ("update", "delete"):
        h = d.histogram(CILIUM_SYNC, **CILIUM_LB, op=op)
        if h is None:
            continue
        src = f"{CILIUM_SYNC}{{op={op}}}"
        row(C.DP_WRITE, f"{op}_count", h.count, src)
        if h.count:
            row(C.DP_WRITE, f"{op}_mean", h.mean, src)
            for q in (0.5, 0.9, 0.99):
                row(C.DP_WRITE, f"{op}_p{round(q * 100)}", h.quantile(q), src, estimate=True)
    # The Cilium agent prefixes Go's process collector with its namespace (cilium_process_...): the whole agent.
    rss_name = RSS if d.after.value(RSS) is not None else CILIUM_PREFIX + RSS
    rss = d.after.value(rss_name)
    if rss is not None:
        row(C.PROXY, "rss", rss, rss_name)
    cpu_name = CPU if d.after.value(CPU) is not None else CILIUM_PREFIX + CPU
    cpu = d.counter(cpu_name)
    if cpu is not None:
        row(C.PROXY, "cpu_seconds", cpu, cpu_name)
        if d.seconds > 0:
            row(C.PROXY, "cpu_cores", cpu / d.seconds, cpu_name)
    children = d.counter(CHILD_CPU + "_total")
    if children is not None:
        row(C.PROXY, "children_cpu_seconds", children, CHILD_CPU)
        if d.seconds > 0:
            row(C.PROXY, "children_cpu_cores", children / d.seconds, CHILD_CPU)
    for (name, lab), value in d.after.samples.items():
        # Rule counts (iptables_total{table=...}, nftables objects, ...) say how big the datapath got.
        if name.startswith("kubeproxy_sync_proxy_rules_") and d.after.families.get(name) == "gauge" and "timestamp" not in name:
            tag = ",".join(f"{k}={v}" for k, v in lab)
            row(C.RULES, name.removeprefix("kubeproxy_sync_proxy_rules_") + (f"[{tag}]" if tag else ""), value, name)
    if d.restarted:
        for r in rows:
            r["restarted"] = True
    return rows

"""The sweep's measurements at one scale, as phases over one context.

A phase is a name, a test of whether it can run here, and the measurement::

    class Phase(Protocol):
        name: str                                        # the rows' ``phase`` column (perf.catalogue)
        def applies(self, ctx) -> tuple[bool, str]: ...  # (False, why) → a ``phase.skipped`` row and meta["phases"]
        def run(self, ctx) -> None: ...                  # records through ctx.add / ctx.samples / ctx.add_rows

:data:`PHASES` run in order at every scale (``perf.pipeline.Sweep.measure``):

1. ``create`` — grow the fleet, wait until the newest Service answers and the proxy has nothing pending;
   kube-proxy deltas over the window;
2. ``resources`` — ruleset size (lines of the proxy's own dump);
3. ``restart`` — restart the proxy and time its first *full* sync at this scale, from a fresh process;
4. ``first_packet`` — new TCP connections to Services near the start, middle and end of ``KUBE-SERVICES``
   (iptables; creation order otherwise) and straight to a pod; per-rule slope from the positions;
5. ``npl`` — endpoint readiness flips and Service creates timed in the datapath, beside kube-proxy's
   programming-latency histogram over the same window (its syncs there are partial syncs);
6. ``load`` — Locust through one Service from inside the client pod's network namespace.

The order matters: ``restart`` leaves a fresh proxy whose first syncs must not land in the
``npl`` window, and ``load`` comes last so its connections do not disturb the timed phases.
A phase that does not apply (no proxy restart on an existing cluster, no pod network namespace
reachable from this machine for Locust, ``--load-seconds 0``) says why, so the report can print "load: skipped: …".
"""

from __future__ import annotations

import gzip
import time
from ipaddress import ip_network
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from .. import ipfamily
from ..modes import get_mode
from . import catalogue as C
from . import latency, metrics
from .frames import RunRecorder
from .load import LoadSpec, run_load
from .options import PerfOptions
from .scale import BACKEND_PORT, ServiceFleet

if TYPE_CHECKING:
    from ..cluster.base import Cluster

"""How to read each mode's programmed ruleset on a node (its size is the ``resources`` phase)."""


@dataclass
class SweepContext:
    """Everything a phase reads or writes: the cluster, the fleet, the options and the run's recorder."""

    cluster: Cluster
    k8s: object
    namespace: str
    node: str
    """The node whose proxy is measured (metrics, restart, ruleset)."""
    client: object
    """Vantage of the client pod every datapath probe starts from."""
    backend_ips: list[str]
    fleet: ServiceFleet
    opts: PerfOptions
    rec: RunRecorder
    reports_dir: Path
    progress: Callable[[str], None] | None = None
    scale: int = 0
    """The scale being measured (rows are stamped with it)."""
    phase: str = ""
    """The phase running (rows are stamped with it)."""
    state: dict = field(default_factory=dict)
    """Scratch space for phases that hand something on (none of the built-in ones do)."""

    @property
    def mode(self) -> str:
        return self.cluster.mode

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    def scrape(self) -> metrics.Scrape:
        return metrics.scrape(self.cluster, self.node, port=get_mode(self.mode).datapath.metrics_port)

    def add(self, metric: C.Metric, stat: str, value: float, **extra) -> None:
        self.rec.record(metric, stat, value, scale=self.scale, phase=self.phase, **extra)

    def samples(self, metric: C.Metric, values, **extra) -> None:
        self.rec.record_samples(metric, values, scale=self.scale, phase=self.phase, **extra)

    def add_rows(self, rows: list[dict], **extra) -> None:
        self.rec.add_rows(rows, scale=self.scale, phase=self.phase, **extra)

    def keep_scrapes(self, before: metrics.Scrape, after: metrics.Scrape) -> None:
        """Raw exposition text of the scrapes a phase's figures came from, so a run can be re-analysed."""
        d = self.rec.run_dir(self.reports_dir) / "scrapes"
        d.mkdir(parents=True, exist_ok=True)
        for tag, s in (("before", before), ("after", after)):
            with gzip.open(d / f"{self.scale:06d}-{self.phase}-{tag}.txt.gz", "wt") as fh:
                fh.write(f"# scraped at {s.at:.6f}\n{s.text}")


class Phase(Protocol):
    name: str

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        """(True, "") or (False, why not), checked before every scale."""

    def run(self, ctx: SweepContext) -> None:
        """Measure at ``ctx.scale`` and record through ``ctx``."""


class PhaseSkipped(Exception):
    """Raised by ``run`` when a phase finds out only while running that it cannot measure; recorded like a
    ``False`` from ``applies`` (message = reason), and the sweep goes on."""


ALWAYS = (True, "")


class Create:
    name = C.CREATE

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        return ALWAYS

    def run(self, ctx: SweepContext) -> None:
        m0 = ctx.scrape()
        stats = ctx.fleet.scale_to(ctx.scale)
        t_written = time.time()
        if stats["created"]:
            ctx.add(C.CREATE_FIG, "seconds", stats["seconds"], created=stats["created"])
            ctx.add(C.CREATE_FIG, "rate", stats["rate"])
        newest = ctx.fleet.services[-1]  # once it answers, the datapath has the whole fleet
        seen, _, _ = latency.wait_for_state(ctx.client, newest.cluster_ip, 80, True, t_written, deadline_s=900)
        latency.wait_settled(ctx.scrape, since=t_written, progress=ctx.progress, families=ctx.fleet.families)
        ctx.add(C.CREATE_FIG, "settle_seconds", seen - t_written, source="last write → newest Service answers in the datapath")
        m1 = ctx.scrape()
        ctx.add_rows(proxy_rows(metrics.Delta(m0, m1), ctx.fleet.families))
        ctx.keep_scrapes(m0, m1)


class Resources:
    name = C.RESOURCES

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        if not get_mode(ctx.mode).datapath.size:
            return False, f"no ruleset-size command is known for mode {ctx.mode} (modes.Datapath.size)"
        return ctx.cluster.features().require("node_exec")

    def run(self, ctx: SweepContext) -> None:
        argv = backend_tool(ctx, list(get_mode(ctx.mode).datapath.size))
        try:
            lines = len(ctx.cluster.node_exec(ctx.node, argv, timeout=300).splitlines())
        except Exception as exc:  # noqa: BLE001 - size is context; the run goes on and the frame says why it is missing
            raise PhaseSkipped(f"{' '.join(argv)} on {ctx.node} failed: {exc}") from exc
        ctx.add(C.RULESET, "ruleset_lines", lines, source=" ".join(argv))


class Restart:
    name = C.RESTART

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        if not ctx.opts.restart_proxy:
            return False, "turned off (--no-restart)"
        if metrics.SYNC not in get_mode(ctx.mode).datapath.sync_metrics:
            return False, (f"{ctx.mode} has no full-sync metric to time a restart by (the phase reads kube-proxy's "
                           f"{metrics.SYNC_FULL})")
        return ctx.cluster.features().require("proxy_restart")

    def run(self, ctx: SweepContext) -> None:
        t_restart = time.time()
        ctx.cluster.restart_proxy(ctx.node)
        fresh = wait_full_sync(ctx.cluster, ctx.node, t_restart, ctx.progress, families=ctx.fleet.families)
        ctx.add(C.RESTART_FIG, "ready_seconds", fresh.at - t_restart, source="proxy restart → first full sync finished (metrics)")
        empty = metrics.Scrape(at=t_restart)
        ctx.add_rows(proxy_rows(metrics.Delta(empty, fresh), ctx.fleet.families))
        ctx.keep_scrapes(empty, fresh)
        latency.wait_for_state(ctx.client, ctx.fleet.services[-1].cluster_ip, 80, True, time.time(), deadline_s=300)


class FirstPacket:
    name = C.FIRST_PACKET_PHASE

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        return ALWAYS if ctx.opts.first_packet_rounds > 0 else (False, "turned off (--first-packet-rounds 0)")

    def run(self, ctx: SweepContext) -> None:
        families = ctx.fleet.families
        plan = {}
        for family in families:  # each family has its own chain (iptables / ip6tables) and its own targets
            order, chain_len = chain_order(ctx, family)
            targets, positions = pick_targets(ctx.fleet, order, family)
            targets["pod-direct"] = (ctx.fleet.backends(family)[0], BACKEND_PORT)
            plan[family] = (order, chain_len, targets, positions)
        # Every family's targets in one interleaved sequence, so drift (and warm-up) hits the families alike.
        fp_all = latency.first_packet(ctx.client, {f"{label}|{family}": t for family, (_, _, targets, _) in plan.items()
                                                   for label, t in targets.items()}, rounds=ctx.opts.first_packet_rounds)
        for family, (order, chain_len, targets, positions) in plan.items():
            fp = {label: fp_all[f"{label}|{family}"] for label in targets}
            stable = chain_order(ctx, family)[0] == order
            record_first_packet(ctx, fp, positions, chain_len, stable=stable, ip_family=family)
            ctx.say("first-packet" + (f" {family}" if len(families) > 1 else "") + ": "
                    + ", ".join(f"{k} p50 {np.median(v):.0f} µs" for k, v in fp.items())
                    + ("" if stable else " (chain order changed while measuring)"))


class ProgrammingLatency:
    name = C.NPL

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        return ALWAYS if ctx.opts.npl_changes > 0 else (False, "turned off (--npl-changes 0)")

    def run(self, ctx: SweepContext) -> None:
        fleet, opts = ctx.fleet, ctx.opts
        m2 = ctx.scrape()
        flips = latency.programming_latency(fleet, fleet.services[0], ctx.client, changes=opts.npl_changes, progress=ctx.progress)
        creates: list[dict] = []
        for _ in range(opts.npl_creates):
            time.sleep(1.2)
            svc, seen = latency.create_latency(fleet, len(fleet.services), ctx.client)
            fleet.services.append(svc)
            creates += [dict(change="service_create", latency_s=s.latency_s, resolution_s=s.resolution_s,
                             api_s=s.api_s, probes=s.probes, ip_family=family, evidence=s.evidence,
                             stall_ms=s.stall_s * 1000) for family, s in seen.items()]
        time.sleep(1.5)  # let kube-proxy observe the last change into its histogram
        m3 = ctx.scrape()
        families = fleet.families
        for i, r in enumerate(flips + creates):
            ctx.rec.record_sample(C.NPL_DP, r["latency_s"] * 1000, i, scale=ctx.scale, phase=ctx.phase, target=r["change"],
                                  resolution_ms=r["resolution_s"] * 1000, api_ms=r["api_s"] * 1000, ip_family=r["ip_family"],
                                  evidence=r["evidence"], stall_ms=r.get("stall_ms", 0.0))
        said = []
        for family in families:
            # Each family's figures from its own probes (a dual-stack change is one slice write per family).
            fam_flips = [r for r in flips if r["ip_family"] == family]
            fam_all = fam_flips + [r for r in creates if r["ip_family"] == family]
            # Flips and creates apart: a create is two writes and its second lands in the minSyncPeriod window.
            lat = np.array([r["latency_s"] for r in fam_flips]) * 1000
            for q in (50, 90, 99):
                ctx.add(C.NPL_DP, f"p{q}", float(np.percentile(lat, q)), source="datapath", target="endpoint_flip",
                        ip_family=family)
            everything = np.array([r["latency_s"] for r in fam_all]) * 1000
            ctx.add(C.NPL_ALL, "mean", float(everything.mean()), source="datapath", ip_family=family,
                    note="every change of the window; compare with npl_metric.mean (same changes, kube-proxy's view)")
            ctx.add(C.NPL_DP, "max_resolution", max(r["resolution_s"] for r in fam_all) * 1000, ip_family=family)
            for change, metric in (("endpoint_ready", C.NPL_READY), ("endpoint_not_ready", C.NPL_NOT_READY),
                                   ("service_create", C.NPL_CREATE)):
                sub = [r["latency_s"] * 1000 for r in fam_all if r["change"] == change]
                if sub:
                    ctx.add(metric, "p50", float(np.median(sub)), source="datapath", ip_family=family)
            fam_creates = [float(c["latency_s"]) for c in creates if c["ip_family"] == family]
            said.append((f"{family}: " if len(families) > 1 else "")
                        + f"endpoint flips p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms over "
                        f"{len(lat)} flips" + (f"; Service creates p50 {np.median(fam_creates) * 1000:.0f} ms" if fam_creates else ""))
        ctx.add_rows(proxy_rows(metrics.Delta(m2, m3), families))
        ctx.keep_scrapes(m2, m3)
        ctx.say("npl: " + " | ".join(said) + f" at {ctx.scale} services")


def load_generation(cluster) -> tuple[bool, str]:
    """Can a load generator on this machine send as the client pod? (ok, why not): ``Features.load_generation``."""
    return cluster.features().require("load_generation")


def client_netns(ctx: SweepContext) -> str:
    """The client pod's network namespace on this host (where :func:`load_generation` said yes)."""
    return ctx.cluster.load_netns(ctx.namespace, "client")


class Load:
    name = C.LOAD

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        if ctx.opts.load_seconds <= 0:
            return False, "turned off (--load-seconds 0)"
        return load_generation(ctx.cluster)

    def run(self, ctx: SweepContext) -> None:
        # Paced at a fixed rate (latency under a known load), then closed loop (the most this generator gets through).
        opts, scale = ctx.opts, ctx.scale
        netns = client_netns(ctx)
        target = ctx.fleet.services[len(ctx.fleet.services) // 2]
        # Through the primary family's cluster IP (an IPv6 literal in brackets); the probe phases cover each family.
        url = f"http://{ipfamily.host_port(target.cluster_ip, 80)}/hostname"
        allowed = [str(ip_network(ip)) for ip in (target.cluster_ip, *ctx.backend_ips)]
        runs = [("paced", LoadSpec(url=url, users=opts.load_users, duration_s=opts.load_seconds, rps=opts.load_rps,
                                   new_connection=opts.load_new_connection, label=f"svc@{scale}"))]
        if opts.load_max_seconds > 0:
            runs.append(("closed-loop", LoadSpec(url=url, users=opts.load_max_users, duration_s=opts.load_max_seconds, rps=None,
                                                 new_connection=opts.load_new_connection, label=f"svc@{scale}-max")))
        for kind, spec in runs:
            out = Path(ctx.reports_dir) / "perf" / "locust" / f"{ctx.rec.run_id}-{ctx.mode}-{scale}-{kind}"
            res = run_load(spec, out, netns=netns, allowed=allowed, progress=ctx.progress)
            ctx.add_rows(res.rows(), target=kind)
            ok = res.samples[res.samples["ok"]]["response_us"].to_numpy()
            ctx.samples(C.LOCUST_RESPONSE, ok[:: max(1, len(ok) // 5000)], target=kind)  # ≤ 5k per run
            if res.generator_bound:
                ctx.add(C.LOCUST, "generator_bound_note", 1, target=kind, note=res.summary["generator_bound_reason"])


class Churn:
    """Flip the readiness of Services other than the probed one at ``rate`` per second, in a thread."""

    def __init__(self, fleet: ServiceFleet, services: list, rate: float):
        import threading

        self.fleet, self.services, self.rate = fleet, services, rate
        self.changes, self.errors, self.restored = 0, 0, 0
        self.ready = {s.name: True for s in services}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def _run(self) -> None:
        ready = self.ready
        i, t_next = 0, time.monotonic()
        while not self._stop.is_set():
            svc = self.services[i % len(self.services)]
            i += 1
            ready[svc.name] = not ready[svc.name]
            try:
                self.fleet.set_ready(svc, ready[svc.name], trigger=time.time())
                self.changes += 1
            except Exception:  # noqa: BLE001 - an API hiccup is one change fewer, counted, not a failed sweep
                self.errors += 1
            t_next += 1 / self.rate
            self._stop.wait(max(0.0, t_next - time.monotonic()))

    def __enter__(self) -> "Churn":
        if self.rate > 0 and self.services:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for svc in self.services:  # leave the fleet as it was: every endpoint ready (these writes count as changes)
            if not self.ready[svc.name]:
                self.fleet.set_ready(svc, True)
                self.ready[svc.name] = True
                self.restored += 1


MIN_SYNC_FLAG = {"iptables": "iptables-min-sync-period", "nftables": "iptables-min-sync-period"}
"""kube-proxy 1.37 reads minSyncPeriod for both proxiers from the iptables flag (its /configz shows the effect)."""


class MinSyncSweep:
    """kube-proxy restarted with each minSyncPeriod; endpoint churn in the background; flips timed; CPU per change.

    Sequential timed flips alone would never share a sync; the churn (other Services flipping at
    ``--churn-rate``) is what minSyncPeriod batches, so CPU per change and changes per sync show what
    a longer period buys, and the timed flips what it costs in programming latency.
    """

    name = C.MIN_SYNC_PHASE

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        if not ctx.opts.min_sync_periods:
            return False, "turned off (pass --min-sync-periods 0,1s,5s,10s to sweep)"
        if ctx.scale != max(ctx.opts.scales):
            return False, f"runs at the sweep's largest scale only ({max(ctx.opts.scales):,})"
        if ctx.mode not in MIN_SYNC_FLAG:
            return False, f"minSyncPeriod is a kube-proxy iptables/nftables setting, not one of mode {ctx.mode}"
        if not hasattr(ctx.cluster, "restart_proxy_with"):
            return False, f"the {ctx.cluster.provider} provider cannot restart kube-proxy with other flags"
        return ALWAYS

    def run(self, ctx: SweepContext) -> None:
        from .frames import proxy_config

        flag = MIN_SYNC_FLAG[ctx.mode]
        probe, others = ctx.fleet.services[0], ctx.fleet.services[1:]
        try:
            for period in ctx.opts.min_sync_periods:
                t_restart = time.time()
                cast(Any, ctx.cluster).restart_proxy_with(ctx.node, {flag: f"{period:g}s"})  # checked in applies
                wait_full_sync(ctx.cluster, ctx.node, t_restart, ctx.progress, families=ctx.fleet.families)
                latency.wait_for_state(ctx.client, ctx.fleet.services[-1].cluster_ip, 80, True, time.time(), deadline_s=300)
                cfg = proxy_config(ctx.cluster, ctx.node)
                effective = (cfg.get("minSyncPeriod") or (cfg.get(ctx.mode) or {}).get("minSyncPeriod")
                             or (cfg.get("iptables") or {}).get("minSyncPeriod"))
                time.sleep(max(2.0, period + 1))  # the start-up syncs must not land in the window
                m0 = ctx.scrape()
                with Churn(ctx.fleet, others, ctx.opts.churn_rate) as churn:
                    # kube-proxy REJECTs a Service without endpoints: only a refusal shows a removal here (IPv4;
                    # see flip_latency), and the timeouts seen under churn at long periods are recorded as stalls.
                    flips = latency.programming_latency(ctx.fleet, probe, ctx.client, changes=ctx.opts.min_sync_flips,
                                                        gap_s=1.2, rejects=True)
                # programming_latency writes once to start from ready, once per flip, once more to end ready
                changes = churn.changes + churn.restored + 1 + len(flips) + len(flips) % 2
                time.sleep(period + 1.5)  # the last batch's sync, into the histogram
                m1 = ctx.scrape()
                self._record(ctx, period, str(effective), flips, changes, metrics.Delta(m0, m1))
        finally:
            t_restart = time.time()
            cast(Any, ctx.cluster).restart_proxy_with(ctx.node, {flag: None})
            wait_full_sync(ctx.cluster, ctx.node, t_restart, ctx.progress, families=ctx.fleet.families)
            latency.wait_for_state(ctx.client, ctx.fleet.services[-1].cluster_ip, 80, True, time.time(), deadline_s=300)

    def _record(self, ctx: SweepContext, period: float, effective: str, flips: list[dict], changes: int,
                d: metrics.Delta) -> None:
        tag = dict(min_sync_period_s=period, configz_min_sync=effective, target=f"{period:g}s")
        lat = np.array([r["latency_s"] for r in flips]) * 1000
        for i, v in enumerate(lat):
            ctx.rec.record_sample(C.MIN_SYNC, v, i, scale=ctx.scale, phase=ctx.phase,
                                  resolution_ms=flips[i]["resolution_s"] * 1000, evidence=flips[i]["evidence"],
                                  stall_ms=flips[i]["stall_ms"], **tag)
        for q in (50, 90):
            ctx.add(C.MIN_SYNC, f"p{q}", float(np.percentile(lat, q)), source="datapath", **tag)
        ctx.add(C.MIN_SYNC, "max", float(lat.max()), source="datapath", **tag)
        h = d.histogram(metrics.SYNC, ip_family="IPv4") or d.histogram(metrics.SYNC)
        syncs = h.count if h else 0
        cpu = (d.counter(metrics.CPU) or 0) + (d.counter(metrics.CHILD_CPU + "_total") or 0)
        ctx.add(C.MIN_SYNC, "changes", changes, source="API writes in the window (churn + timed flips + their restores)", **tag)
        ctx.add(C.MIN_SYNC, "syncs", syncs, source=metrics.SYNC, **tag)
        if h is not None and syncs:
            ctx.add(C.MIN_SYNC, "changes_per_sync", changes / syncs, **tag)
            ctx.add(C.MIN_SYNC, "sync_mean", h.mean, source=metrics.SYNC, **tag)
        ctx.add(C.MIN_SYNC, "cpu_per_change", cpu / changes * 1000, source="process + children CPU / changes", **tag)
        if d.seconds > 0:
            ctx.add(C.MIN_SYNC, "cpu_cores", cpu / d.seconds, **tag)
        ctx.say(f"min_sync {period:g}s (configz {effective}): flips p50 {np.median(lat):.0f} ms, max {lat.max():.0f} ms; "
                f"{changes} changes in {syncs:.0f} syncs; {cpu / changes * 1000:.1f} CPU-ms per change")


CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"


def conntrack_max_settable(cluster, node: str) -> tuple[bool, str]:
    """Can the node's network namespace size its own conntrack table? (ok, why not), read without writing anything.

    On kernels where ``nf_conntrack_max`` is global, the file is read-only (mode 0444) in every namespace but the
    host's: the only way to change the table size is a host sysctl, which the suite never touches.
    """
    try:
        mode = cluster.node_exec(node, ["stat", "-c", "%a", CONNTRACK_MAX], timeout=15).strip()
        value = cluster.node_exec(node, ["cat", CONNTRACK_MAX], timeout=15).strip()
        kernel = cluster.node_exec(node, ["uname", "-r"], timeout=15).strip()
    except Exception as exc:  # noqa: BLE001
        return False, f"cannot read {CONNTRACK_MAX} in node {node}'s namespace: {exc}"
    if not int(mode, 8) & 0o222:
        return False, (f"net.netfilter.nf_conntrack_max is global on kernel {kernel}: read-only (mode {mode}) in the "
                       f"node's network namespace, shared with the host ({value}); sizing the table would change the "
                       "host's sysctl, which the suite never does")
    return False, (f"net.netfilter.nf_conntrack_max is writable in the node's namespace on kernel {kernel}, but the "
                   "table-fill sweep is not built yet (issue 14); nothing was measured")


class Conntrack:
    name = C.CONNTRACK_PHASE

    def applies(self, ctx: SweepContext) -> tuple[bool, str]:
        ok, why = ctx.cluster.features().require("node_exec")
        return conntrack_max_settable(ctx.cluster, ctx.node) if ok else (ok, why)

    def run(self, ctx: SweepContext) -> None:
        raise PhaseSkipped("no conntrack sweep runs where the table size cannot be set per namespace")


PHASES: tuple[Phase, ...] = (Create(), Resources(), Restart(), FirstPacket(), ProgrammingLatency(), Load(), MinSyncSweep(),
                             Conntrack())
"""The phases of every scale, in order (see the module docstring for why this order)."""


# --- helpers shared by phases and the sweep's baseline -----------------------------------------------------------


def record_first_packet(ctx: SweepContext, fp: dict, positions: dict, chain_len, stable: bool = True,
                        ip_family: str = "ipv4") -> None:
    for label, values in fp.items():
        extra = {"position": positions.get(label), "chain_len": chain_len, "order_stable": stable, "ip_family": ip_family}
        ctx.samples(C.FIRST_PACKET, values, target=label, **extra)
        for stat, v in latency.percentiles(values, (50, 90, 99)).items():
            ctx.add(C.FIRST_PACKET, stat, v, target=label, **extra)
    pos = [(positions[k], float(np.median(fp[k]))) for k in positions if k in fp]
    if len(pos) >= 2:
        slope, r2 = latency.per_rule_slope([p for p, _ in pos], [m for _, m in pos])
        ctx.add(C.FIRST_PACKET, "slope_per_rule", slope, r2=r2, source="median vs KUBE-SERVICES position", ip_family=ip_family)


def proxy_rows(delta: metrics.Delta, families: tuple[str, ...]) -> list[dict]:
    """kube-proxy's figures over a window: its histograms once per proxier (IP family, tagged ``ip_family``), the
    process and rule-count rows once."""
    rows = []
    for i, family in enumerate(families):
        for r in metrics.summarize(delta, ip_family=ipfamily.k8s_name(family)):
            if r["source"] in metrics.HISTOGRAMS:
                rows.append({**r, "ip_family": family})
            elif i == 0:
                rows.append(r)
    return rows


def backend_tool(ctx: SweepContext, argv: list[str]) -> list[str]:
    """``iptables-save …`` as the proxy's backend spells it: the node's own ``iptables-save`` may be the other backend
    (``--iptables-backend``), whose tables hold none of kube-proxy's rules."""
    backend = ctx.rec.meta.get("iptables_backend")
    if argv and argv[0].startswith(("iptables", "ip6tables")) and backend in ("legacy", "nf_tables"):
        base, _, verb = argv[0].partition("-")
        return [f"{base}-{'legacy' if backend == 'legacy' else 'nft'}" + (f"-{verb}" if verb else ""), *argv[1:]]
    return argv


def chain_order(ctx: SweepContext, family: str = "ipv4") -> tuple[list[str], int | None]:
    """Our Services in ``KUBE-SERVICES`` order and the chain's length (iptables with node exec; else ([], None));
    the IPv6 proxier's chain (``ip6tables-save``) for ``family`` ipv6."""
    if ctx.mode != "iptables" or not ctx.cluster.features().node_exec:
        return [], None
    save = "ip6tables-save" if family == "ipv6" else "iptables-save"
    try:
        text = ctx.cluster.node_exec(ctx.node, backend_tool(ctx, [save, "-t", "nat"]), timeout=120)
    except Exception:  # noqa: BLE001 - the targets fall back to creation order, and positions stay empty
        return [], None
    order, total = latency.kube_services_order(text)
    # Positions count every rule of the chain (other namespaces' Services sit in it too).
    return [s if ns == ctx.namespace else f"{ns}/{s}" for ns, s in order], total


def pick_targets(fleet: ServiceFleet, order: list[str], family: str | None = None):
    """Services near the start, middle and end of KUBE-SERVICES (iptables) or of creation order.

    Labels are ``first``, ``first+1``, ``middle``, ``last-1``, ``last``; positions (0-based index among
    all KUBE-SERVICES rules) are returned for iptables only.
    """
    names = {s.name: s for s in fleet.services}
    labels = ("first", "first+1", "middle", "last-1", "last")
    if order:
        idx = [(i, n) for i, n in enumerate(order) if n in names]
        picks = [idx[0], idx[1], idx[len(idx) // 2], idx[-2], idx[-1]]
        return ({lab: (names[n].ip(family), 80) for lab, (i, n) in zip(labels, picks)},
                {lab: i for lab, (i, n) in zip(labels, picks)})
    svcs = fleet.services
    chosen = [svcs[0], svcs[1], svcs[len(svcs) // 2], svcs[-2], svcs[-1]]
    return {lab: (s.ip(family), 80) for lab, s in zip(labels, chosen)}, {}


def wait_full_sync(cluster, node, since, progress, timeout=900, families: tuple[str, ...] = ("ipv4",)) -> metrics.Scrape:
    """The first scrape after ``since`` in which a freshly started proxy has finished a full sync in every family of
    ``families`` (kube-proxy runs one proxier per family; one that serves no family of the cluster finishes first
    and must not count)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            s = metrics.scrape(cluster, node)
        except Exception:  # noqa: BLE001 - the proxy is still starting
            time.sleep(0.2)
            continue
        fulls = [s.of_family(metrics.SYNC_FULL, ipfamily.k8s_name(f)) or s.of_family(metrics.SYNC, ipfamily.k8s_name(f))
                 for f in families]
        start = s.value("process_start_time_seconds") or 0
        if all(full and full.count >= 1 for full in fulls) and start >= since - 1:
            return s
        time.sleep(0.2)
    raise TimeoutError(f"proxy on {node} did not finish a full sync within {timeout}s of its restart")

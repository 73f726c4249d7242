"""Latencies measured in the datapath: network programming latency and first-packet latency.

**Network programming latency (NPL)** is timed from the API write (an
EndpointSlice readiness flip, or a Service create) until a probe from a client
vantage sees the change: a new TCP connection every ≤ 10 ms (8 ms connect
timeout + 2 ms pause), so each sample's resolution is the gap between the
last probe that saw the old state and the first that saw the new one — it is
recorded with the sample. kube-proxy's own
``kubeproxy_network_programming_duration_seconds`` is read beside it: we stamp
``endpoints.kubernetes.io/last-change-trigger-time`` on our slice writes with
the write time, so kube-proxy measures from the same instant (its buckets are
250 ms wide, ours ≤ 10 ms).

**First-packet latency** is the TCP handshake (``connect_us`` of the probe
engine: SYN → SYN-ACK seen by the client). Only the first packet of a
connection goes through the proxy's NAT rules — after that conntrack answers —
so every sample is a new connection. In iptables mode ``KUBE-SERVICES`` is a
list walked in order, so the suite reads the chain, picks Services whose rule
sits near the start and near the end, and fits the connect time against the
rule's position: the slope is the per-rule cost (KEP-3866's chart implies
≈ 22–24 ns/rule). A direct-to-pod connection is the baseline; note that in
iptables mode it still walks the whole ``KUBE-SERVICES`` chain (no rule
matches a pod IP), so the pod baseline *at 0 Services* is the client's own cost.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..ipfamily import k8s_name
from . import metrics
from ..probes.engine import OK, REFUSED, RESET, TIMEOUT, UNREACHABLE, ProbeRequest

if TYPE_CHECKING:
    from .scale import FleetService

POLL_INTERVAL_S = 0.0005
POLL_TIMEOUT_S = 0.005
"""Connect timeout of one poll probe; with the pause and socket set-up, probes start ≤ 10 ms apart
(a refused connection returns in µs; only an unprogrammed ClusterIP runs into the timeout)."""
POLL_BATCH = 50
"""Probes per vantage call while polling (≈ 0.5 s), so remote vantages are not exec'd every 10 ms."""
NPL_DEADLINE_S = 120.0
"""Give up on one change after this long; a missed change is recorded as a failure, never as a number."""


@dataclass
class Seen:
    latency_s: float
    """API write (just before the call) → first probe that saw the new state started."""
    resolution_s: float
    """Start of the last probe that still saw the old state → start of the first that saw the new one."""
    api_s: float
    """How long the API call itself took."""
    probes: int
    evidence: str = ""
    """What showed the new state: ``ok``, or for a removal the outcomes of the confirming run (``refused``,
    ``reset``, ``unreachable``, ``timeout``)."""
    stall_s: float = 0.0
    """The longest run of consecutive connect timeouts the poller saw after the write (0: none)."""


GONE = (REFUSED, UNREACHABLE, RESET)
"""Positive evidence that a Service lost its endpoints: kube-proxy REJECTs (RST / ICMP) a Service with none."""
TIMEOUT_RUN = 20
"""Consecutive 5 ms timeouts, at least, that count as "gone" for a proxy that DROPs (see TIMEOUT_HOLD_S)."""
TIMEOUT_HOLD_S = 1.0
"""...and how long such a run must last. Under endpoint churn at 1,000 Services with minSyncPeriod 5-10 s, the
iptables mode showed runs of 20+ timeouts (100+ ms without a SYN-ACK inside 5 ms) while the endpoint was still
programmed: the next "ready" flip was then "seen" 2 ms after its write, impossible under that period. Timeouts
that end in an answer are a stall, not a removal."""
GONE_CONFIRM = 5
"""Probes without an answer, from the first refusal (kube-proxy REJECTs a Service without endpoints), that
count as "gone": a removal is a state the datapath stays in, so a probe that answers resets the run."""


class _Judge:
    """Whether a probe shows ``want_ok``. For "gone": a run of unanswered probes that holds either
    ``GONE_CONFIRM`` probes from its first refusal (stamped at that refusal) or, timeouts only,
    ``TIMEOUT_RUN`` probes over ``TIMEOUT_HOLD_S`` (stamped at the run's first probe). An answer resets it.

    ``rejects``: the proxy is known to REJECT a Service without endpoints (kube-proxy), so only a refusal shows a
    removal and timeouts never do; they are a stall, measured as :attr:`stall_s`."""

    def __init__(self, want_ok: bool, rejects: bool = False):
        self.want_ok, self.rejects, self.run_start, self.run = want_ok, rejects, None, 0
        self.outcomes: list[str] = []
        self.refused_at: float | None = None
        self.since_refused = 0
        self.stall_s, self._timeouts_since = 0.0, None

    @property
    def evidence(self) -> str:
        return "ok" if self.want_ok else ",".join(sorted(set(self.outcomes)))

    def __call__(self, o) -> float | None:
        if o.outcome == TIMEOUT:
            self._timeouts_since = o.started if self._timeouts_since is None else self._timeouts_since
            self.stall_s = max(self.stall_s, o.started + POLL_TIMEOUT_S - self._timeouts_since)
        else:
            self._timeouts_since = None
        if self.want_ok:
            return o.started if o.outcome == OK else None
        if o.outcome not in GONE and o.outcome != TIMEOUT:
            self.run, self.outcomes, self.refused_at, self.since_refused = 0, [], None, 0
            return None
        if not self.run:
            self.run_start = o.started
        self.run += 1
        self.outcomes.append(o.outcome)
        if self.refused_at is None and o.outcome in GONE:
            self.refused_at = o.started
        if self.refused_at is not None:
            self.since_refused += 1
            return self.refused_at if self.since_refused >= GONE_CONFIRM else None
        held = o.started - self.run_start
        return self.run_start if not self.rejects and self.run >= TIMEOUT_RUN and held >= TIMEOUT_HOLD_S else None


def wait_for_state(vantage, host: str, port: int, want_ok: bool, t_write: float, deadline_s: float = NPL_DEADLINE_S,
                   label: str = "npl") -> tuple[float, float, int]:
    """Probe until the datapath shows ``want_ok``; return (time seen, resolution, probes sent)."""
    probes = 0
    last_old = t_write
    judge = _Judge(want_ok)
    end = time.time() + deadline_s
    while time.time() < end:
        obs = vantage.run([ProbeRequest(host, port, ask="connect", count=POLL_BATCH, interval=POLL_INTERVAL_S,
                                        timeout=POLL_TIMEOUT_S, label=label)])
        for o in obs:
            probes += 1
            seen = judge(o)
            if seen is not None:
                return seen, seen - max(last_old, t_write), probes
            if judge.run == 0:  # a probe inside a timeout run is not yet known to be the old state
                last_old = o.started
    raise TimeoutError(f"{host}:{port} did not become {'reachable' if want_ok else 'unreachable'} over TCP "
                       f"within {deadline_s:.0f}s of the API write ({probes} probes)")


def _next_batch(batch: int, t_call: float, obs) -> int:
    """Grow the batch when each vantage call costs more than the probes themselves.

    In-process vantages (local provider) return as soon as the probes are done; remote
    ones (``kubectl exec`` on kind) add 100+ ms per call, a blind spot between batches.
    Bigger batches make those gaps rare; each sample still records its own resolution.
    """
    if not obs:
        return batch
    overhead = (time.time() - t_call) - (obs[-1].started - obs[0].started)
    return min(1000, batch * 4) if overhead > 0.02 else batch


class Poller:
    """Probe ``host:port`` continuously from a vantage, starting *before* the API write.

    Polling only after the write returns would leave a blind spot as long as the API
    call (20–60 ms on the local apiserver under load); probing across it keeps every
    sample's resolution at the probe spacing.
    """

    def __init__(self, vantage, host: str, port: int, want_ok: bool, deadline_s: float = NPL_DEADLINE_S,
                 rejects: bool = False):
        self.vantage, self.host, self.port, self.want_ok, self.rejects = vantage, host, port, want_ok, rejects
        self.t_write: float | None = None
        self.found: tuple[float, float, int] | None = None
        self.evidence, self.stall_s = "", 0.0
        self.error: BaseException | None = None
        self.deadline_s = deadline_s
        self._thread = threading.Thread(target=self._run, name=f"poll-{host}", daemon=True)
        self._thread.start()

    def _run(self):
        prev_start, probes, end = None, 0, time.time() + self.deadline_s
        judge = _Judge(self.want_ok, self.rejects)
        batch = POLL_BATCH // 5
        try:
            while time.time() < end:
                t_call = time.time()
                obs = self.vantage.run([ProbeRequest(self.host, self.port, ask="connect", count=batch,
                                                     interval=POLL_INTERVAL_S, timeout=POLL_TIMEOUT_S, label="npl")])
                batch = _next_batch(batch, t_call, obs)
                for o in obs:
                    probes += 1
                    t_write = self.t_write
                    seen = judge(o) if t_write is not None and o.started >= t_write else None
                    if seen is not None:
                        self.found = (seen, seen - max(prev_start or t_write, t_write), probes)
                        self.evidence, self.stall_s = judge.evidence, judge.stall_s
                        return
                    if judge.run == 0:
                        prev_start = o.started
            self.error = TimeoutError(f"{self.host}:{self.port} did not become {'reachable' if self.want_ok else 'unreachable'}"
                                      f" over TCP within {self.deadline_s:.0f}s of the API write ({probes} probes)")
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self.error = exc

    def wait(self) -> tuple[float, float, int]:
        self._thread.join()
        if self.error:
            raise self.error
        return self.found


def flip_latency(fleet, svc, vantage, ready: bool, rejects: bool = False) -> dict[str, Seen]:
    """Flip ``svc``'s endpoints to ``ready`` and time, per IP family of the fleet, until the datapath follows.

    One poller per family probes that family's cluster IP from before the write; each family's latency runs
    from the start of its own slice write (a dual-stack Service has one EndpointSlice per family)."""
    families = fleet.families
    # An IPv6 Service without endpoints never refuses a 5 ms probe where nodes share the client's kernel: the ICMPv6
    # error for the first SYN arrives while connect() holds the socket lock and is dropped (TcpExtLockDroppedIcmps;
    # the refusal comes with the retransmit at 1 s, see suites/conformance/test_no_endpoints.py ODD_TIMEOUT). CI's
    # dual-stack smoke: 20,200 probes over 120 s, all timeouts. So the refusal-only rule is for IPv4.
    pollers = {f: Poller(vantage, svc.ip(f), 80, ready, rejects=rejects and f == "ipv4") for f in families}
    time.sleep(0.03)  # let the pollers get going before the write
    t0 = time.time()
    for p in pollers.values():
        p.t_write = t0
    written = fleet.set_ready(svc, ready, trigger=t0)
    api = time.time() - t0
    out = {}
    for f, p in pollers.items():
        seen, res, n = p.wait()
        out[f] = Seen(seen - written.get(f, t0), res, api, n, p.evidence, p.stall_s)
    return out


def create_latency(fleet, index: int, vantage) -> tuple[FleetService, dict[str, Seen]]:
    """Create one more Service (+ a ready slice per family) and time, per family, until it answers.

    The ClusterIP is only known once the create returns, so probing starts then; the blind
    spot is the API call, recorded as ``api_s`` (the datapath cannot be ready before the
    Service exists, so the latency itself is still exact to the probe spacing).
    """
    t0 = time.time()
    svc = fleet.create_one(index, trigger=t0)
    api = time.time() - t0
    pollers = {f: Poller(vantage, svc.ip(f), 80, True) for f in fleet.families}
    out = {}
    for p in pollers.values():
        p.t_write = t0
    for f, p in pollers.items():
        seen, res, n = p.wait()
        out[f] = Seen(seen - t0, res, api, n, p.evidence, p.stall_s)
    return svc, out


def programming_latency(fleet, svc, vantage, changes: int = 20, gap_s: float = 1.2, progress=None,
                        rejects: bool = False) -> list[dict]:
    """``changes`` readiness flips of ``svc`` (alternating not-ready / ready), spaced ``gap_s`` apart
    (``rejects``: see :class:`_Judge`).

    The gap keeps kube-proxy's ``minSyncPeriod`` (1 s by default) from batching
    two of our changes into one sync, so each sample is one change's latency.
    """
    rows: list[dict] = []
    families = fleet.families
    # Start from a known state: ready and reachable in every family.
    fleet.set_ready(svc, True)
    for f in families:
        wait_for_state(vantage, svc.ip(f), 80, True, time.time())
    ready = True
    for i in range(changes):
        time.sleep(gap_s)
        ready = not ready
        for family, s in flip_latency(fleet, svc, vantage, ready, rejects).items():
            rows.append(dict(change="endpoint_ready" if ready else "endpoint_not_ready", latency_s=s.latency_s,
                             resolution_s=s.resolution_s, api_s=s.api_s, probes=s.probes, ip_family=family,
                             evidence=s.evidence, stall_ms=s.stall_s * 1000))
        if progress and (i + 1) % 5 == 0:
            per = {f: [r["latency_s"] for r in rows if r["ip_family"] == f] for f in families}
            progress(f"npl: {i + 1}/{changes} changes, " + "; ".join(
                f"{f + ' ' if len(families) > 1 else ''}p50 {np.median(v) * 1000:.0f} ms, max {max(v) * 1000:.0f} ms"
                for f, v in per.items()))
    if not ready:
        fleet.set_ready(svc, True)
        for f in families:
            wait_for_state(vantage, svc.ip(f), 80, True, time.time())
    return rows


# --- first packet -----------------------------------------------------------------------------------------------

_KUBE_SERVICES = re.compile(r'^-A KUBE-SERVICES .*?--comment "?(?P<ns>[^/" ]+)/(?P<svc>[^:" ]+)(?::(?P<port>[^" ]*))? cluster IP')


def kube_services_order(iptables_save: str) -> tuple[list[tuple[str, str]], int]:
    """(namespace, service) in KUBE-SERVICES rule order, and the chain's total rule count."""
    order, total = [], 0
    for line in iptables_save.splitlines():
        if line.startswith("-A KUBE-SERVICES "):
            total += 1
            m = _KUBE_SERVICES.match(line)
            if m:
                order.append((m["ns"], m["svc"]))
    return order, total


def first_packet(vantage, targets: dict[str, tuple[str, int]], rounds: int = 200, batch: int = 400,
                 timeout: float = 2.0) -> dict[str, list[float]]:
    """Connect times (µs) per target label; targets are interleaved so drift hits them all alike."""
    reqs = [ProbeRequest(host, port, ask="connect", timeout=timeout, label=label)
            for _ in range(rounds) for label, (host, port) in targets.items()]
    out: dict[str, list[float]] = {label: [] for label in targets}
    failures: dict[str, int] = {label: 0 for label in targets}
    for i in range(0, len(reqs), batch):
        for o in vantage.run(reqs[i:i + batch]):
            if o.outcome == OK and o.connect_us is not None:
                out[o.label].append(o.connect_us)
            else:
                failures[o.label] += 1
    bad = {k: v for k, v in failures.items() if v}
    if bad:
        raise RuntimeError("first-packet probes failed: " + ", ".join(f"{k} {v}/{rounds}" for k, v in bad.items()))
    return out


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {f"p{q:g}": float(np.percentile(a, q)) for q in qs} if len(a) else {}


def per_rule_slope(positions: list[int], medians_us: list[float]) -> tuple[float, float]:
    """Least-squares slope of median connect time over rule position: (ns per rule, r²)."""
    from scipy import stats

    if len(set(positions)) < 2:
        return float("nan"), float("nan")
    fit = stats.linregress(positions, medians_us)
    return fit.slope * 1000.0, fit.rvalue ** 2


def wait_settled(scrape_fn, since: float, timeout: float = 900, progress=None, poll_s: float = 0.5,
                 families: tuple[str, ...] = ("ipv4",)) -> float:
    """Wait until the proxy has no pending changes and synced after ``since``; returns when it happened.

    Uses kube-proxy's ``..._changes_pending`` gauges and ``..._last_timestamp_seconds`` (of every family in
    ``families``: each proxier syncs on its own).
    """
    end = time.time() + timeout
    last_say = time.time()
    rounds: list[tuple[float, float]] = []
    while time.time() < end:
        s = scrape_fn()
        if s.value(metrics.CILIUM_ROUNDS, **metrics.CILIUM_LB) is not None:
            # Cilium has no pending-changes gauge: settled once its load-balancer reconciler has run no round
            # for a second and nothing is left failing (cilium_reconciler_errors_current).
            rounds.append((s.at, s.value(metrics.CILIUM_ROUNDS, **metrics.CILIUM_LB) or 0))
            failing = s.value("cilium_reconciler_errors_current", **metrics.CILIUM_LB) or 0
            quiet = [at for at, n in rounds if n == rounds[-1][1]]
            if not failing and quiet[-1] - quiet[0] >= 1.0 and quiet[0] >= since:
                return quiet[0]
            time.sleep(poll_s)
            continue
        pending = (s.value("kubeproxy_sync_proxy_rules_endpoint_changes_pending") or 0) + \
                  (s.value("kubeproxy_sync_proxy_rules_service_changes_pending") or 0)
        # Labelled per IP family: each proxier of the run's families, not the sum of both (which is always "after");
        # the earliest of them is when the last one caught up.
        name = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
        last = min(((s.value(name, ip_family=k8s_name(f)) if s.labelled(name) else s.value(name)) or 0) for f in families)
        if pending == 0 and last >= since:
            return last
        if progress and time.time() - last_say > 10:
            last_say = time.time()
            progress(f"sync: waiting for the proxy ({pending:.0f} changes pending, last sync {time.time() - last:.0f}s ago)")
        time.sleep(poll_s)
    raise TimeoutError(f"proxy still had pending changes {timeout:.0f}s after the writes finished")

"""The perf pipeline for one cluster: sweep scales, measure everything, hand back one run frame.

Per scale (100 → 1,000 → 5,000 → 10,000 Services by default), in this order:

1. **grow** the Service fleet to the scale (parallel creates; rate and time recorded), then wait
   until the proxy has no pending changes; the syncs that did that are the ``create`` phase;
2. **restart** the proxy (where the provider can) and time its first *full* sync at this scale,
   from a fresh process, so full-sync figures never mix scales;
3. **first packet**: new TCP connections from the client pod to Services whose rules sit near
   the start and the end of ``KUBE-SERVICES`` (iptables; for other modes the first and last
   created), plus direct to a backend pod; per-rule slope from the positions;
4. **programming latency**: endpoint readiness flips and Service creates timed in the
   datapath, next to kube-proxy's NPL histogram over the same window (the ``npl`` phase,
   whose syncs are partial syncs at this scale);
5. **load**: Locust through one Service from inside the client pod's netns (local provider).

All objects live in one namespace (the ``namespace`` fixture) and are labelled with the run id.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import latency, metrics
from .frames import RunRecorder, collect_metadata
from .load import LoadSpec, run_load
from .scale import BACKEND_PORT, ServiceFleet, pod_body, start_pods

DEFAULT_SCALES = (100, 1000, 5000, 10000)


@dataclass
class PerfOptions:
    scales: tuple[int, ...] = DEFAULT_SCALES
    endpoints_per_service: int = 2
    first_packet_rounds: int = 300
    """Connections per target per scale."""
    npl_changes: int = 20
    """Readiness flips per scale (half to not-ready, half to ready)."""
    npl_creates: int = 5
    """Service creates per scale (each adds one Service to the fleet)."""
    restart_proxy: bool = True
    load_seconds: float = 10.0
    load_rps: float | None = 500.0
    load_users: int = 10
    load_new_connection: bool = True
    """Every Locust request on a new connection, so the load pays the proxy's per-connection cost."""
    load_max_seconds: float = 5.0
    """Closed-loop run after the paced one (0 = skip): the throughput ceiling, usually the generator's."""
    load_max_users: int = 50
    teardown: bool = True
    """Delete the fleet at the end (timed). Off when the cluster is thrown away anyway: deleting 10,000
    Services one by one under iptables churn takes ~5 min on a 2-vCPU VM."""
    extra: dict = field(default_factory=dict)


def _say(progress, msg):
    if progress:
        progress(msg)


class Sweep:
    """The sweep in steps, so pytest can run one test per scale::

        sw = Sweep(cluster, k8s, namespace, run_id, opts, progress=print)
        sw.start()                # backend + client pods, direct-to-pod baseline at 0 Services
        for n in (100, 1000):
            sw.measure(n)         # grow to n, then every measurement at n
        rec = sw.finish()         # tear the fleet down; rec.save() writes the frame
    """

    def __init__(self, cluster, k8s, namespace: str, run_id: str, opts: PerfOptions, reports_dir: str | Path = "reports",
                 progress=None):
        self.cluster, self.k8s, self.namespace, self.run_id = cluster, k8s, namespace, run_id
        self.opts, self.reports_dir, self.progress = opts, reports_dir, progress
        self.node = cluster.nodes()[0].name
        self.rec: RunRecorder | None = None
        self.fleet: ServiceFleet | None = None

    def start(self) -> None:
        cluster, opts = self.cluster, self.opts
        meta = collect_metadata(cluster, self.node, self.k8s)
        meta.update(scales=list(opts.scales), endpoints_per_service=opts.endpoints_per_service, namespace=self.namespace)
        self.rec = RunRecorder(self.run_id, mode=cluster.mode, provider=cluster.provider, meta=meta)
        _say(self.progress, f"perf: {cluster.mode} on {cluster.provider}, node {self.node}, scales {list(opts.scales)}")
        n_backends = max(2, opts.endpoints_per_service)
        backend_args = ["netexec", f"--http-port={BACKEND_PORT}", "--udp-port=8081"]
        pods = start_pods(self.k8s, self.namespace,
                          [pod_body(f"backend-{i}", cluster.backend_image, backend_args, self.run_id, self.node, "backend")
                           for i in range(n_backends)]
                          + [pod_body("client", cluster.backend_image, ["pause"], self.run_id, self.node, "client")],
                          progress=self.progress)
        self.backend_ips = [p["status"]["podIP"] for p in pods[:-1]]
        self.client = cluster.pod_vantage(self.namespace, "client")
        self.fleet = ServiceFleet(self.k8s, self.namespace, self.run_id, self.backend_ips, opts.endpoints_per_service,
                                  progress=self.progress)
        # The client's own cost: connect straight to a pod before any of our Services exist.
        base = latency.first_packet(self.client, {"pod-direct": (self.backend_ips[0], BACKEND_PORT)},
                                    rounds=opts.first_packet_rounds)
        _record_fp(self.rec, 0, base, positions={}, chain_len=None)

    def measure(self, scale: int) -> None:
        if self.fleet is None:
            raise RuntimeError("Sweep.measure() before start()")
        if self.fleet.services and scale < len(self.fleet.services):
            raise ValueError(f"scale {scale} is below the {len(self.fleet.services)} Services already created; sweep upwards")
        _one_scale(self.cluster, self.k8s, self.namespace, self.node, self.client, self.fleet,
                   lambda: metrics.scrape(self.cluster, self.node), self.backend_ips, scale, self.opts, self.rec,
                   self.reports_dir, self.progress)

    def finish(self) -> RunRecorder:
        if self.fleet is not None and self.fleet.services and self.opts.teardown:
            top = len(self.fleet.services)
            t = self.fleet.teardown()
            self.rec.add("teardown.seconds", t["seconds"], "s", scale=top)
        return self.rec


def run_sweep(cluster, k8s, namespace: str, run_id: str, opts: PerfOptions, reports_dir: str | Path = "reports",
              progress=None) -> RunRecorder:
    """Run the whole sweep on ``cluster``; returns the recorder (``.save()`` writes the frame)."""
    sw = Sweep(cluster, k8s, namespace, run_id, opts, reports_dir, progress)
    try:
        sw.start()
        for scale in opts.scales:
            sw.measure(scale)
    finally:
        rec = sw.finish()
    return rec


def _one_scale(cluster, k8s, namespace, node, client, fleet, scrape, backend_ips, scale, opts, rec, reports_dir, progress):
    _say(progress, f"perf: scale {scale} ({cluster.mode})")
    # 1. grow
    m0 = scrape()
    stats = fleet.scale_to(scale)
    t_written = time.time()
    if stats["created"]:
        rec.add("create.seconds", stats["seconds"], "s", scale=scale, created=stats["created"])
        rec.add("create.rate", stats["rate"], "services/s", scale=scale)
    last = fleet.services[-1]
    seen, _, _ = latency.wait_for_state(client, last.cluster_ip, 80, True, t_written, deadline_s=900)
    latency.wait_settled(scrape, since=t_written, progress=progress)
    rec.add("create.settle_seconds", seen - t_written, "s", scale=scale,
            source="last write → newest Service answers in the datapath")
    m1 = scrape()
    lines = _ruleset_lines(cluster, node)
    if lines is not None:
        rec.add("datapath.ruleset_lines", lines, "lines", scale=scale,
                source="iptables-save" if cluster.mode == "iptables" else "nft list table ip kube-proxy")
    rec.add_rows(metrics.summarize(metrics.Delta(m0, m1)), scale=scale, phase="create")
    _keep_scrapes(rec, reports_dir, scale, "create", m0, m1)

    # 2. full sync from a fresh proxy process at this scale
    if opts.restart_proxy and cluster.features().proxy_restart:
        t_restart = time.time()
        cluster.restart_proxy(node)
        fresh = _wait_full_sync(cluster, node, t_restart, progress)
        rec.add("restart.ready_seconds", fresh.at - t_restart, "s", scale=scale,
                source="proxy restart → first full sync finished (metrics)")
        empty = metrics.Scrape(at=t_restart)
        rec.add_rows(metrics.summarize(metrics.Delta(empty, fresh)), scale=scale, phase="restart")
        _keep_scrapes(rec, reports_dir, scale, "restart", empty, fresh)
        latency.wait_for_state(client, last.cluster_ip, 80, True, time.time(), deadline_s=300)

    # 3. first packet
    order, chain_len = _chain_order(cluster, node, namespace)
    targets, positions = _pick_targets(fleet, order)
    targets["pod-direct"] = (backend_ips[0], BACKEND_PORT)
    t_fp = time.time()
    fp = latency.first_packet(client, targets, rounds=opts.first_packet_rounds)
    order_after, _ = _chain_order(cluster, node, namespace)
    stable = order_after == order
    _record_fp(rec, scale, fp, positions, chain_len, stable=stable)
    _say(progress, "first-packet: " + ", ".join(f"{k} p50 {np.median(v):.0f} µs" for k, v in fp.items())
         + ("" if stable else " (chain order changed while measuring)"))

    # 4. programming latency (+ kube-proxy's NPL metric over the same window)
    m2 = scrape()
    flips = latency.programming_latency(fleet, fleet.services[0], client, changes=opts.npl_changes, progress=progress)
    creates = []
    for k in range(opts.npl_creates):
        time.sleep(1.2)
        svc, s = latency.create_latency(fleet, len(fleet.services), client)
        fleet.services.append(svc)
        creates.append(dict(change="service_create", latency_s=s.latency_s, resolution_s=s.resolution_s,
                            api_s=s.api_s, probes=s.probes))
    time.sleep(1.5)  # let kube-proxy observe the last change into its histogram
    m3 = scrape()
    for r in flips + creates:
        rec.rows.append(dict(metric="npl", stat="sample", value=r["latency_s"] * 1000, unit="ms", scale=scale, kind="sample",
                             target=r["change"], resolution_ms=r["resolution_s"] * 1000, api_ms=r["api_s"] * 1000))
    # Flips and creates apart: a create is two writes and its second lands in the minSyncPeriod window.
    lat = np.array([r["latency_s"] for r in flips]) * 1000
    for q in (50, 90, 99):
        rec.add(f"npl.p{q}", float(np.percentile(lat, q)), "ms", scale=scale, source="datapath", target="endpoint_flip")
    everything = np.array([r["latency_s"] for r in flips + creates]) * 1000
    rec.add("npl_all.mean", float(everything.mean()), "ms", scale=scale, source="datapath",
            note="every change of the window; compare with npl_metric.mean (same changes, kube-proxy's view)")
    rec.add("npl.max_resolution", max(r["resolution_s"] for r in flips + creates) * 1000, "ms", scale=scale)
    for change in ("endpoint_ready", "endpoint_not_ready", "service_create"):
        sub = [r["latency_s"] * 1000 for r in flips + creates if r["change"] == change]
        if sub:
            rec.add(f"npl_{change}.p50", float(np.median(sub)), "ms", scale=scale, source="datapath")
    rec.add_rows(metrics.summarize(metrics.Delta(m2, m3)), scale=scale, phase="npl")
    _keep_scrapes(rec, reports_dir, scale, "npl", m2, m3)
    _say(progress, f"npl: endpoint flips p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms over {len(lat)} "
                   f"flips; Service creates p50 {np.median([c['latency_s'] for c in creates]) * 1000:.0f} ms at {scale} services"
                   if creates else f"npl: p50 {np.percentile(lat, 50):.0f} ms over {len(lat)} flips at {scale} services")

    # 5. load through one Service, generated inside the client pod's network namespace: paced at a
    #    fixed rate (latency under a known load), then closed loop (the most this generator gets through).
    ns_name = _client_netns(cluster, k8s, namespace)
    if ns_name and opts.load_seconds > 0:
        target = fleet.services[len(fleet.services) // 2]
        allowed = [f"{target.cluster_ip}/32"] + [f"{ip}/32" for ip in backend_ips]
        runs = [("paced", LoadSpec(url=f"http://{target.cluster_ip}:80/hostname", users=opts.load_users,
                                   duration_s=opts.load_seconds, rps=opts.load_rps, new_connection=opts.load_new_connection,
                                   label=f"svc@{scale}"))]
        if opts.load_max_seconds > 0:
            runs.append(("closed-loop", LoadSpec(url=f"http://{target.cluster_ip}:80/hostname", users=opts.load_max_users,
                                                 duration_s=opts.load_max_seconds, rps=None,
                                                 new_connection=opts.load_new_connection, label=f"svc@{scale}-max")))
        for kind, spec in runs:
            out = Path(reports_dir) / "perf" / "locust" / f"{rec.run_id}-{cluster.mode}-{scale}-{kind}"
            res = run_load(spec, out, netns=ns_name, allowed=allowed, progress=progress)
            rec.add_rows(res.rows(), scale=scale, phase="load", target=kind)
            ok = res.samples[res.samples["ok"]]["response_us"].to_numpy()
            rec.add_samples("locust.response", ok[:: max(1, len(ok) // 5000)], "us", scale=scale, target=kind)  # ≤ 5k per run
            if res.generator_bound:
                rec.add("locust.generator_bound_note", 1, "bool", scale=scale, target=kind,
                        note=res.summary["generator_bound_reason"])


def _keep_scrapes(rec, reports_dir, scale, phase, *scrapes):
    """Raw exposition text of the scrapes a phase's figures came from, so a run can be re-analysed."""
    d = rec.run_dir(reports_dir) / "scrapes"
    d.mkdir(parents=True, exist_ok=True)
    for tag, s in zip(("before", "after"), scrapes):
        with gzip.open(d / f"{scale:06d}-{phase}-{tag}.txt.gz", "wt") as fh:
            fh.write(f"# scraped at {s.at:.6f}\n{s.text}")


def _record_fp(rec, scale, fp, positions, chain_len, stable=True):
    for label, values in fp.items():
        extra = {"position": positions.get(label), "chain_len": chain_len, "order_stable": stable}
        rec.add_samples("first_packet", values, "us", scale=scale, target=label, **extra)
        for stat, v in latency.percentiles(values, (50, 90, 99)).items():
            rec.add(f"first_packet.{stat}", v, "us", scale=scale, target=label, **extra)
    pos = [(positions[k], float(np.median(fp[k]))) for k in positions if k in fp]
    if len(pos) >= 2:
        slope, r2 = latency.per_rule_slope([p for p, _ in pos], [m for _, m in pos])
        rec.add("first_packet.slope_per_rule", slope, "ns/rule", scale=scale, r2=r2, source="median vs KUBE-SERVICES position")


def _ruleset_lines(cluster, node):
    """Size of what the proxy programmed, in lines of its own dump (None where there is no node exec)."""
    argv = {"iptables": ["iptables-save"], "nftables": ["nft", "list", "table", "ip", "kube-proxy"]}.get(cluster.mode)
    if argv is None:
        return None
    try:
        return len(cluster.node_exec(node, argv, timeout=300).splitlines())
    except Exception:  # noqa: BLE001 - size is context, not a measurement the run depends on
        return None


def _chain_order(cluster, node, namespace):
    if cluster.mode != "iptables":
        return [], None
    try:
        text = cluster.node_exec(node, ["iptables-save", "-t", "nat"], timeout=120)
    except Exception:  # noqa: BLE001 - no node exec: fall back to creation order
        return [], None
    order, total = latency.kube_services_order(text)
    # Positions count every rule of the chain (other namespaces' Services sit in it too).
    return [s if ns == namespace else f"{ns}/{s}" for ns, s in order], total


def _pick_targets(fleet, order):
    """Services near the start, middle and end of KUBE-SERVICES (iptables) or of creation order.

    Labels are ``first``, ``first+1``, ``middle``, ``last-1``, ``last``; positions (0-based index among
    all KUBE-SERVICES rules) are returned for iptables only.
    """
    names = {s.name: s for s in fleet.services}
    labels = ("first", "first+1", "middle", "last-1", "last")
    if order:
        idx = [(i, n) for i, n in enumerate(order) if n in names]
        picks = [idx[0], idx[1], idx[len(idx) // 2], idx[-2], idx[-1]]
        return ({lab: (names[n].cluster_ip, 80) for lab, (i, n) in zip(labels, picks)},
                {lab: i for lab, (i, n) in zip(labels, picks)})
    svcs = fleet.services
    picks = [svcs[0], svcs[1], svcs[len(svcs) // 2], svcs[-2], svcs[-1]]
    return {lab: (s.cluster_ip, 80) for lab, s in zip(labels, picks)}, {}


def _wait_full_sync(cluster, node, since, progress, timeout=900):
    end = time.time() + timeout
    while time.time() < end:
        try:
            s = metrics.scrape(cluster, node)
        except Exception:  # noqa: BLE001 - the proxy is still starting
            time.sleep(0.2)
            continue
        # The IPv4 proxier's full sync; the IPv6 one (empty on these nodes) finishes first and must not count.
        full = (s.histogram(metrics.SYNC_FULL, ip_family="IPv4") or s.histogram(metrics.SYNC_FULL)
                or s.histogram(metrics.SYNC))
        start = s.value("process_start_time_seconds") or 0
        if full and full.count >= 1 and start >= since - 1:
            return s
        time.sleep(0.2)
    raise TimeoutError(f"proxy on {node} did not finish a full sync within {timeout}s of its restart")


def _client_netns(cluster, k8s, namespace):
    finder = getattr(cluster, "pod_netns", None)
    if finder is None:
        return None
    from kubernetes import client

    return finder(client.CoreV1Api(k8s).read_namespaced_pod("client", namespace))

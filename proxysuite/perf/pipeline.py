"""The perf pipeline for one cluster: sweep scales, measure everything, hand back one run frame.

At every scale (100 → 1,000 → 5,000 → 10,000 Services by default) the sweep runs the phases of
``perf.phases`` in order — create, resources, restart (full sync), first packet, npl (programming
latency; partial syncs), load — over one :class:`~proxysuite.perf.phases.SweepContext`. A phase that
does not apply here records why (a ``phase.skipped`` row and ``meta.json`` ``phases``). Figures are
named in ``perf.catalogue``; options are ``perf.options.PerfOptions``.

All objects live in one namespace (the ``namespace`` fixture) and are labelled with the run id.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

from .. import ipfamily
from . import catalogue as C
from . import latency
from .frames import RunRecorder, collect_metadata
from .options import DEFAULT_SCALES, PerfOptions  # noqa: F401 - re-exported: callers import them from here
from .phases import PHASES, Phase, PhaseSkipped, SweepContext, record_first_packet
from .scale import BACKEND_PORT, ServiceFleet, pod_body, start_pods


def _say(progress, msg):
    if progress:
        progress(msg)


class Sweep:
    """The sweep in steps, so pytest can run one test per scale::

        sw = Sweep(cluster, k8s, namespace, run_id, opts, progress=print)
        sw.start()                # backend + client pods, direct-to-pod baseline at 0 Services
        for n in (100, 1000):
            sw.measure(n)         # grow to n, then every phase at n
        rec = sw.finish()         # tear the fleet down; rec.save() writes the frame
    """

    def __init__(self, cluster, k8s, namespace: str, run_id: str, opts: PerfOptions, reports_dir: str | Path = "reports",
                 progress=None, phases: Sequence[Phase] = PHASES):
        self.cluster, self.k8s, self.namespace, self.run_id = cluster, k8s, namespace, run_id
        self.opts, self.reports_dir, self.progress, self.phases = opts, reports_dir, progress, tuple(phases)
        self.node = cluster.nodes()[0].name
        self.rec: RunRecorder | None = None
        self.fleet: ServiceFleet | None = None
        self.ctx: SweepContext | None = None
        self._told: set[tuple[str, str]] = set()

    def start(self) -> None:
        cluster, opts = self.cluster, self.opts
        meta = collect_metadata(cluster, self.node, self.k8s)
        meta.update(scales=list(opts.scales), endpoints_per_service=opts.endpoints_per_service, namespace=self.namespace,
                    phases={p.name: {"ran": [], "skipped": [], "reason": None} for p in self.phases})
        self.rec = RunRecorder(self.run_id, mode=cluster.mode, provider=cluster.provider, meta=meta)
        _say(self.progress, f"perf: {cluster.mode} on {cluster.provider}, node {self.node}, scales {list(opts.scales)}")
        n_backends = max(2, opts.endpoints_per_service)
        backend_args = ["netexec", f"--http-port={BACKEND_PORT}", "--udp-port=8081"]
        pods = start_pods(self.k8s, self.namespace,
                          [pod_body(f"backend-{i}", cluster.backend_image, backend_args, self.run_id, self.node, "backend")
                           for i in range(n_backends)]
                          + [pod_body("client", cluster.backend_image, ["pause"], self.run_id, self.node, "client")],
                          progress=self.progress)
        families = tuple(getattr(cluster, "ip_families", ("ipv4",)))
        by_family = {f: [ipfamily.pick([a["ip"] for a in p["status"].get("podIPs") or []] or [p["status"]["podIP"]], f)
                         for p in pods[:-1]] for f in families}
        backend_ips = [p["status"]["podIP"] for p in pods[:-1]]
        if any(None in ips for ips in by_family.values()):
            raise RuntimeError(f"backend pods lack an address of every family {families}: "
                               + ", ".join(f"{p['metadata']['name']} {p['status'].get('podIPs')}" for p in pods[:-1]))
        self.fleet = ServiceFleet(self.k8s, self.namespace, self.run_id, backend_ips, opts.endpoints_per_service,
                                  progress=self.progress, families=families,
                                  family_backend_ips={f: [ip for ip in ips if ip] for f, ips in by_family.items()})
        meta["ip_families"] = list(families)
        self.ctx = SweepContext(cluster=cluster, k8s=self.k8s, namespace=self.namespace, node=self.node,
                                client=cluster.pod_vantage(self.namespace, "client"), backend_ips=backend_ips,
                                fleet=self.fleet, opts=opts, rec=self.rec, reports_dir=Path(self.reports_dir),
                                progress=self.progress, scale=0, phase=C.FIRST_PACKET_PHASE)
        # The client's own cost: connect straight to a pod before any of our Services exist (per family, interleaved).
        base = latency.first_packet(self.ctx.client, {f: (self.fleet.backends(f)[0], BACKEND_PORT) for f in families},
                                    rounds=opts.first_packet_rounds)
        for f in families:
            record_first_packet(self.ctx, {"pod-direct": base[f]}, positions={}, chain_len=None, ip_family=f)

    @property
    def backend_ips(self) -> list[str]:
        return self.ctx.backend_ips if self.ctx else []

    def measure(self, scale: int) -> None:
        """Grow to ``scale`` and run every phase that applies here; record why the others do not."""
        if self.fleet is None or self.ctx is None or self.rec is None:
            raise RuntimeError("Sweep.measure() before start()")
        if self.fleet.services and scale < len(self.fleet.services):
            raise ValueError(f"scale {scale} is below the {len(self.fleet.services)} Services already created; sweep upwards")
        ctx = self.ctx
        ctx.scale = scale
        _say(self.progress, f"perf: scale {scale} ({self.cluster.mode})")
        for phase in self.phases:
            ok, why = phase.applies(ctx)
            if ok:
                ctx.phase = phase.name
                try:
                    phase.run(ctx)
                except PhaseSkipped as exc:
                    ok, why = False, str(exc)
                else:
                    self.rec.ran(phase.name, scale)
            if not ok:
                self.rec.skipped(phase.name, scale, why)
                if (phase.name, why) not in self._told:  # once per reason, not at every scale
                    self._told.add((phase.name, why))
                    _say(self.progress, f"{phase.name}: skipped: {why}")

    def finish(self) -> RunRecorder | None:
        """Tear the fleet down (timed); the recorder, or None if ``start`` never got as far as making one."""
        if self.rec is not None and self.fleet is not None and self.fleet.services and self.opts.teardown:
            top = len(self.fleet.services)
            t = self.fleet.teardown()
            self.rec.record(C.TEARDOWN_FIG, "seconds", t["seconds"], scale=top, phase=C.TEARDOWN)
        return self.rec


def run_sweep(cluster, k8s, namespace: str, run_id: str, opts: PerfOptions, reports_dir: str | Path = "reports",
              progress=None, phases: Sequence[Phase] = PHASES) -> RunRecorder:
    """Run the whole sweep on ``cluster``; returns the recorder (``.save()`` writes the frame)."""
    sw = Sweep(cluster, k8s, namespace, run_id, opts, reports_dir, progress, phases)
    try:
        sw.start()
        for scale in opts.scales:
            sw.measure(scale)
    finally:
        rec = sw.finish()
    assert rec is not None  # start() succeeded, or its exception is on its way up
    return rec

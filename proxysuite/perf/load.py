"""HTTP load through a Service with Locust, keeping every request's exact timing.

Locust's own statistics round response times to whole milliseconds (and to
10 ms above 100 ms), so its percentiles cannot show a proxy's µs-scale cost.
The ``request`` event still carries the unrounded float from
``perf_counter``; this module subscribes to it and keeps every request, then
builds HDR histograms (µs, 3 significant digits) and percentiles from the raw
values.

Locust runs **in a child process** (``python -m proxysuite.perf.load worker``)
for two reasons: importing locust monkey-patches the whole interpreter for
gevent, which must never happen inside pytest; and on the local provider the
load has to start inside a vantage's network namespace, which the parent
enters by prefixing the child with ``ip netns exec <ns>``::

    spec = LoadSpec(url="http://10.96.0.10:80/hostname", users=20, duration_s=10, rps=2000)
    res = run_load(spec, netns="ps-abc-client", allowed=["10.96.0.0/16"], out_dir=tmp)
    res.summary["p99_us"], res.summary["throughput_rps"], res.generator_bound

The child samples its own CPU (psutil, shipped with locust) twice a second.
Locust is one process on one core; when that core is ≥ 90 % busy for most of
the run (Locust's own warning threshold), the latencies include the
generator's queueing and the run is flagged ``generator_bound`` instead of
blaming the proxy (locust #663: 300 ms under a saturated Locust vs 4 ms with wrk).

Safety: targets are loopback, or — only from inside a namespace — addresses in
networks the caller names (the cluster's Service/pod/node CIDRs, all inside
namespaces the suite made). Anything else is refused before a packet is sent.
Every run is bounded in time and in request count.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from . import catalogue as C

if TYPE_CHECKING:
    import pandas as pd  # imported where used: the Locust child never needs it

CPU_BOUND_PCT = 90.0
"""Locust warns at 90 % CPU; above it the generator's own queueing shows up as latency."""
CPU_BOUND_FRACTION = 0.5
"""Flag the run when at least this fraction of the CPU samples taken under load are over the threshold."""
HARD_CAP_S = 600
"""No load run, whatever its spec, lasts longer than this."""


@dataclass
class LoadSpec:
    url: str
    """Full URL; host must be loopback or inside the allowed networks."""
    users: int = 10
    spawn_rate: float = 1000.0
    duration_s: float = 10.0
    rps: float | None = None
    """Target total throughput (constant_throughput per user); None = as fast as possible (closed loop)."""
    steps: list[tuple[int, float]] | None = None
    """Optional (users, seconds) steps instead of a single level; ``rps`` is then per user."""
    max_requests: int = 200_000
    """Stop after this many requests even if time is left."""
    new_connection: bool = False
    """Send ``Connection: close`` so every request opens a new TCP connection (the proxy's per-connection cost)."""
    timeout_s: float = 5.0
    label: str = "load"


@dataclass
class LoadResult:
    spec: LoadSpec
    samples: pd.DataFrame
    """pandas DataFrame: start (epoch s), response_us, ok, step, error."""
    cpu: pd.DataFrame
    """pandas DataFrame: t (s since start), cpu_pct of the Locust process, users."""
    summary: dict = field(default_factory=dict)

    @property
    def generator_bound(self) -> bool:
        return bool(self.summary.get("generator_bound"))

    def rows(self) -> list[dict]:
        """Summary rows for a run frame (metric, value, unit)."""
        out = []
        for k, v in self.summary.items():
            if isinstance(v, (int, float, bool)) and v is not None:
                out.append(dict(metric=C.LOCUST.key(k), value=float(v), unit=C.LOCUST.unit_of(k)))
        return out


def check_target(url: str, netns: str | None, allowed: list[str] | None) -> None:
    """Refuse targets outside loopback / the suite's own namespaces (see module docstring)."""
    host = urlsplit(url).hostname or ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"load target {url!r}: use an IP address (names could resolve anywhere)") from None
    if addr.is_loopback:
        return
    if netns is None:
        raise ValueError(f"load target {addr} is not loopback; non-loopback load must run inside a suite network namespace")
    nets = [ipaddress.ip_network(n) for n in (allowed or [])]
    if not addr.is_private or not any(addr in n for n in nets):
        raise ValueError(f"load target {addr} is outside the suite's networks {', '.join(map(str, nets)) or '(none given)'}")


def run_load(spec: LoadSpec, out_dir: str | os.PathLike, netns: str | None = None, allowed: list[str] | None = None,
             python: str = sys.executable, progress=None) -> LoadResult:
    """Run Locust headless in a child (inside ``netns`` if given) and return raw-timing results."""
    import pandas as pd

    check_target(spec.url, netns, allowed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(asdict(spec)))
    argv = [python, "-m", "proxysuite.perf.load", "worker", str(out / "spec.json"), str(out)]
    if netns:
        from ..cluster.local.netns import exec_argv  # a name, or a kind pod's /proc/<pid>/ns/net

        argv = exec_argv(netns, argv)
    budget = min(HARD_CAP_S, spec_duration(spec) + 60)
    if progress:
        progress(f"load: {spec.users} users → {spec.url} for {spec_duration(spec):.0f}s"
                 + (f" at {spec.rps:.0f} rps" if spec.rps else " (closed loop)") + (f" in netns {netns}" if netns else ""))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=budget, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"locust worker exited {proc.returncode} after running {spec.url}: {proc.stderr[-2000:]}")
    raw = np.load(out / "samples.npz", allow_pickle=False)
    info = json.loads((out / "worker.json").read_text())
    samples = pd.DataFrame({"start": raw["start"], "response_us": raw["response_us"], "ok": raw["ok"].astype(bool)})
    # Step of each request from its start time (the shape's own tick runs once a second, too coarse to label with).
    bounds = np.cumsum([sec for _, sec in spec.steps]) if spec.steps else np.array([np.inf])
    samples["step"] = np.searchsorted(bounds, samples["start"].to_numpy() - info["t0"], side="right").clip(max=len(bounds) - 1)
    cpu = pd.DataFrame({"t": raw["cpu_t"], "cpu_pct": raw["cpu_pct"], "users": raw["cpu_users"], "demand_pct": raw["demand_pct"], "loop_lag_ms": raw["lag_ms"]})
    res = LoadResult(spec, samples, cpu, summarize(samples, cpu, info))
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2))
    if progress:
        s = res.summary
        progress(f"load: {s['count']} requests, {s['throughput_rps']:.0f} rps, p50 {s.get('p50_us', float('nan')):.0f} µs, "
                 f"p99 {s.get('p99_us', float('nan')):.0f} µs, errors {s['errors']}, generator CPU p50 {s['generator_cpu_p50_pct']:.0f}%"
                 + (" — GENERATOR-BOUND" if s["generator_bound"] else ""))
    return res


def spec_duration(spec: LoadSpec) -> float:
    return sum(s for _, s in spec.steps) if spec.steps else spec.duration_s


def hdr_histogram(values_us):
    """An HdrHistogram of µs values (1 µs to 10 min, 3 significant digits)."""
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 600_000_000, 3)
    for v in np.asarray(values_us, dtype=float):
        h.record_value(max(1, int(round(v))))
    return h


def summarize(samples, cpu, info: dict) -> dict:
    ok = samples[samples["ok"]]
    span = info.get("load_seconds") or (samples["start"].max() - samples["start"].min() if len(samples) else 0)
    s: dict = {"count": int(len(samples)), "errors": int((~samples["ok"]).sum()),
               "duration_s": float(span), "throughput_rps": float(len(ok) / span) if span else 0.0}
    s["error_rate"] = s["errors"] / s["count"] if s["count"] else 0.0
    if len(ok):
        h = hdr_histogram(ok["response_us"])
        for q in (50, 90, 99, 99.9):
            s[f"p{q:g}_us"] = float(h.get_value_at_percentile(q))
        s["mean_us"] = float(ok["response_us"].mean())
        s["max_us"] = float(ok["response_us"].max())
        s["hdr"] = h.encode().decode() if isinstance(h.encode(), bytes) else h.encode()
    under_load = cpu[cpu["users"] > 0] if len(cpu) else cpu
    busy = np.asarray(under_load["cpu_pct"], dtype=float)
    demand = np.asarray(under_load["demand_pct"], dtype=float)
    lag = np.asarray(under_load["loop_lag_ms"], dtype=float)
    s["generator_cpu_p50_pct"] = float(np.median(busy)) if len(busy) else 0.0
    s["generator_cpu_max_pct"] = float(busy.max()) if len(busy) else 0.0
    s["generator_loop_lag_p50_us"] = float(np.median(lag) * 1000) if len(lag) else 0.0
    s["generator_demand_p50_pct"] = float(np.median(demand)) if len(demand) else 0.0
    # Demand = on-CPU + waiting-for-CPU time: ≥ 90 % means Locust was (almost) never idle waiting for
    # the network. Plain CPU % misses the case where other processes steal the core (a Go build on a
    # 2-vCPU VM held Locust at ~80 % CPU while it was runnable all the time).
    cpu_bound = bool(len(demand) and (demand >= CPU_BOUND_PCT).mean() >= CPU_BOUND_FRACTION)
    s["generator_bound"] = cpu_bound
    s["generator_bound_reason"] = (
        f"Locust on or waiting for CPU ≥ {CPU_BOUND_PCT:.0f}% of the time in {100 * (demand >= CPU_BOUND_PCT).mean():.0f}% "
        f"of samples (CPU p50 {s['generator_cpu_p50_pct']:.0f}%)" if cpu_bound else "")
    s["stopped_by"] = info.get("stopped_by")
    return s


def _schedstat() -> tuple[int, int]:
    """(ns on CPU, ns runnable but waiting for a CPU) of this process's main thread (/proc/self/task/<pid>/schedstat).

    Locust's gevent hub — every user, every request — runs on the main thread; summing helper
    threads (psutil, resolver pool) would push "demand" past 100 % without the hub being busy.
    """
    try:
        a, b, _ = Path(f"/proc/self/task/{os.getpid()}/schedstat").read_text().split()
        return int(a), int(b)
    except (OSError, ValueError):
        return 0, 0


# --- the child ----------------------------------------------------------------------------------------------------


def _worker(spec_path: str, out_dir: str) -> int:  # pragma: no cover - runs in the child process
    # Importing locust patches sockets/threads for gevent; that is why this runs in its own process.
    import gevent
    import psutil
    from locust import FastHttpUser, LoadTestShape, constant, constant_throughput, events, task
    from locust.env import Environment

    spec = LoadSpec(**json.loads(Path(spec_path).read_text()))
    parts = urlsplit(spec.url)
    base, path = f"{parts.scheme}://{parts.netloc}", (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    per_user = (spec.rps / spec.users if not spec.steps else spec.rps) if spec.rps else None
    headers = {"Connection": "close"} if spec.new_connection else {}

    class Target(FastHttpUser):
        host = base
        wait_time = constant_throughput(per_user) if per_user else constant(0)
        connection_timeout = spec.timeout_s
        network_timeout = spec.timeout_s

        @task
        def get(self):
            self.client.get(path, name=spec.label, headers=headers)

    shape_cls = None
    if spec.steps:
        steps = [(int(u), float(sec)) for u, sec in spec.steps]

        class Steps(LoadTestShape):
            def tick(self):
                t, acc = self.get_run_time(), 0.0
                for users, sec in steps:
                    acc += sec
                    if t < acc:
                        return users, spec.spawn_rate
                # A shape returning None only stops the users; quit so runner.greenlet.join() returns.
                gevent.spawn(self.runner.quit)
                return None

        shape_cls = Steps

    starts, times, oks = [], [], []
    state = {"stopped_by": "time"}
    env = Environment(user_classes=[Target], shape_class=shape_cls() if shape_cls else None, events=events)

    def on_request(request_type, name, response_time, response_length, exception=None, start_time=None, **kw):
        starts.append(start_time)
        times.append(response_time * 1000.0)  # ms float from perf_counter → µs, unrounded
        oks.append(exception is None)
        if len(times) >= spec.max_requests and env.runner is not None and state["stopped_by"] == "time":
            state["stopped_by"] = "max_requests"
            gevent.spawn(env.runner.quit)

    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    proc = psutil.Process()
    proc.cpu_percent(None)
    cpu_t, cpu_pct, demand_pct, cpu_users, lag_ms = [], [], [], [], []
    last = [_schedstat(), time.perf_counter()]
    t0 = time.time()

    def sample_cpu():
        # How late this greenlet wakes up is the event loop's queueing delay (a finished request waits as
        # long before Locust stops its clock). Recorded, not used for the flag: gevent's timers oversleep
        # by ~1 ms even on an idle loop, which drowns the signal at loopback latencies.
        while True:
            before = time.perf_counter()
            gevent.sleep(0.5)
            lag_ms.append((time.perf_counter() - before - 0.5) * 1000)
            cpu_t.append(time.time() - t0)
            cpu_pct.append(proc.cpu_percent(None))
            now = _schedstat(), time.perf_counter()
            run_wait = (now[0][0] - last[0][0]) + (now[0][1] - last[0][1])
            demand_pct.append(100.0 * run_wait / 1e9 / (now[1] - last[1]))
            last[:] = now
            cpu_users.append(runner.user_count)

    sampler = gevent.spawn(sample_cpu)
    if shape_cls:
        runner.start_shape()
    else:
        runner.start(spec.users, spawn_rate=spec.spawn_rate)
        gevent.spawn_later(spec.duration_s, lambda: state["stopped_by"] == "time" and runner.quit())
    gevent.spawn_later(min(HARD_CAP_S, spec_duration(spec) + 30), runner.quit)
    runner.greenlet.join()
    sampler.kill()
    load_seconds = time.time() - t0
    np.savez(Path(out_dir) / "samples.npz", start=np.asarray(starts, float), response_us=np.asarray(times, float),
             ok=np.asarray(oks, bool), cpu_t=np.asarray(cpu_t, float),
             cpu_pct=np.asarray(cpu_pct, float), cpu_users=np.asarray(cpu_users, np.int32), demand_pct=np.asarray(demand_pct, float), lag_ms=np.asarray(lag_ms, float))
    (Path(out_dir) / "worker.json").write_text(json.dumps({"t0": t0, "load_seconds": load_seconds, "stopped_by": state["stopped_by"],
                                                           "pid": os.getpid()}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        sys.exit(_worker(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m proxysuite.perf.load worker SPEC.json OUT_DIR")

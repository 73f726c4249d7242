"""Record real kube-proxy series, healthy and faulty, as promtool ``input_series`` for the alert tests.

One local cluster (``--mode custom``: real kube-proxy started through ``proxysuite/data/alerts/fault-proxy.sh``,
which puts a switchable wrapper in front of iptables-restore / ip6tables-restore / nft) with one node per
scenario. This module is the Prometheus: every ``--interval`` it scrapes each node's proxy ``/metrics``
(``up`` is 1 when the scrape answers, 0 when it fails, and a failed scrape marks the node's series stale,
as Prometheus does). The run has two phases:

* **idle** (``--idle`` seconds): nothing changes in the cluster; every proxy is healthy;
* **faulty** (``--faulty`` seconds): an EndpointSlice of a selector-less Service changes every
  ``--churn`` seconds (with the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation the
  EndpointSlice controller sets, so kube-proxy records programming latency), and each node gets its fault:

  ========  ============================================================================
  healthy   none
  stopped   iptables-restore hangs: the sync stops, the metrics server keeps answering
  killed    kube-proxy gets SIGKILL: the scrape fails
  failing   iptables-restore exits 1: kube-proxy counts restore failures
  slow      iptables-restore sleeps 12 s first: every sync takes over 10 s
  slower    iptables-restore sleeps 40 s first: syncs over 10 s and programming latency over 30 s
  ========  ============================================================================

Each scenario is written to ``OUT/<scenario>.yaml``: the promtool series of that node's proxy (``up`` and
the families the rules read), plus when and how it was captured. Gauges holding Unix times
(``*_timestamp_seconds``) are shifted by the time of the first scrape, because promtool's clock starts at 0
at the first sample. Recapture (as root; about 15 minutes)::

    python -m proxysuite.alerts.capture --out tests/data/alerts
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..config import SuiteConfig
from ..data import ALERTS
from ..errors import ProbeError, SuiteError
from ..modes import KUBE_PROXY_METRICS_PORT
from ..runscope import namespace_labels, namespace_name
from ..runscope import progress as _progress
from ..signals import sigterm_as_interrupt

SCENARIOS: dict[str, str] = {
    "healthy": "",
    "stopped": "hang",
    "killed": "kill",
    "failing": "fail",
    "slow": "slow:12",
    "slower": "slow:40",
}
"""Scenario → fault (a fault-proxy.sh fault, or ``kill``); node-N runs the N-th scenario."""

FAMILIES = (
    "kubeproxy_sync_proxy_rules_duration_seconds",
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_iptables_restore_failures",
    "kubeproxy_sync_proxy_rules_nftables_sync_failures",
    "kubeproxy_network_programming_duration_seconds",
)
"""The metric families the rules read (counters without ``_total``, as the exposition parser names them)."""

JOB = "kube-proxy"
KUBE_PROXY_ARGS = ("--kubeconfig {kubeconfig} --hostname-override {node} --cluster-cidr {cluster_cidr} "
                   "--conntrack-max-per-core 0 --metrics-bind-address {metrics_addr} --healthz-bind-address {healthz_addr}")


@dataclass
class Recording:
    interval: float
    t0: float = 0.0
    rounds: list[dict[str, dict[tuple, float] | None]] = field(default_factory=list)
    """Per scrape round: node → {(sample name, labels): value}, or None when the scrape failed."""
    fault_at: float | None = None
    """Seconds after the first scrape when the faults went in."""


def _series_name(name: str, labels: tuple) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
    return f"{name}{{{inner}}}"


def _fmt(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(value, 6)).removesuffix(".0")


def parse_samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in FAMILIES:
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def input_series(rec: Recording, node: str) -> list[dict[str, str]]:
    """promtool ``input_series`` of one node: ``up`` plus every kept sample, one value per round."""
    instance = (("instance", node), ("job", JOB))
    keys: list[tuple] = []
    for rnd in rec.rounds:
        for key in rnd.get(node) or {}:
            if key not in keys:
                keys.append(key)
    out = [{"series": _series_name("up", instance),
            "values": " ".join("0" if rnd.get(node) is None else "1" for rnd in rec.rounds)}]
    for name, labels in sorted(keys):
        values, present = [], False
        for rnd in rec.rounds:
            got = rnd.get(node)
            v = None if got is None else got.get((name, labels))
            if v is None:
                # A failed scrape makes Prometheus write staleness markers for the target's series.
                values.append("stale" if present else "_")
                present = False
                continue
            if name.endswith("_timestamp_seconds"):
                v -= rec.t0
            values.append(_fmt(v))
            present = True
        out.append({"series": _series_name(name, labels + instance), "values": " ".join(values)})
    return out


def write(rec: Recording, nodes: dict[str, str], out: Path, meta: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario, node in nodes.items():
        doc = {**meta, "scenario": scenario, "fault": SCENARIOS[scenario] or "none", "node": node,
               "interval": f"{rec.interval:g}s", "samples": len(rec.rounds),
               "fault_at_seconds": None if rec.fault_at is None else round(rec.fault_at, 1),
               "input_series": input_series(rec, node)}
        path = out / f"{scenario}.yaml"
        path.write_text("# Captured from real kube-proxies by proxysuite.alerts.capture; tests/data/alerts/README.md says how\n"
                        "# to recapture. Do not edit by hand.\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 20))
        written.append(path)
    return written


class Churn:
    """A selector-less Service whose EndpointSlice changes on demand, stamped like the EndpointSlice controller does."""

    def __init__(self, k8s, run_id: str):
        from kubernetes import client

        self.core, self.disc = client.CoreV1Api(k8s), client.DiscoveryV1Api(k8s)
        self.ns = namespace_name(run_id, "alerts")
        self.core.create_namespace({"metadata": {"name": self.ns, "labels": namespace_labels(run_id)}})
        self.core.create_namespaced_service(self.ns, {"metadata": {"name": "churn"},
                                                      "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})
        self.n = 0

    def change(self) -> None:
        from kubernetes import client

        self.n += 1
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Addresses in the pod CIDR that no pod holds: nothing is sent to them, kube-proxy only programs them.
        addrs = [f"10.244.250.{1 + (self.n + i) % 200}" for i in range(2)]
        body: dict[str, Any] = {"metadata": {"name": "churn", "labels": {"kubernetes.io/service-name": "churn",
                                                         "endpointslice.kubernetes.io/managed-by": "proxysuite.io"},
                             "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now}},
                "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addrs]}
        try:
            self.disc.replace_namespaced_endpoint_slice("churn", self.ns, {**body, "metadata": {
                **body["metadata"], "resourceVersion": self.disc.read_namespaced_endpoint_slice("churn", self.ns).metadata.resource_version}})
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.disc.create_namespaced_endpoint_slice(self.ns, body)


def scrape(cluster, node: str) -> dict[tuple, float] | None:
    try:
        status, body = cluster.proxy_http(node, KUBE_PROXY_METRICS_PORT, "/metrics")
    except (ProbeError, OSError, ValueError, IndexError):  # refused, timed out, or not an HTTP answer: up 0
        return None
    return parse_samples(body) if status == 200 else None


def inject(cluster, faults: Path, nodes: dict[str, str]) -> None:
    for scenario, node in nodes.items():
        fault = SCENARIOS[scenario]
        if fault == "kill":
            pid = cluster.state.procs.get(f"proxy-{node}")
            comm = Path(f"/proc/{pid}/comm").read_text().strip() if pid else ""
            if comm != "kube-proxy":
                raise SuiteError(f"the proxy process of {node} is {comm or 'gone'} (pid {pid}), not kube-proxy",
                                 "recapture on a fresh cluster")
            os.kill(pid, signal.SIGKILL)
        elif fault:
            (faults / node).write_text(fault)


def capture(cluster, faults: Path, nodes: dict[str, str], interval: float, idle: float, faulty: float, churn_every: float,
            k8s, run_id: str, progress=_progress) -> Recording:
    rec = Recording(interval=interval)
    rec.t0 = time.time()
    churn: Churn | None = None
    last_churn = 0.0
    total = int((idle + faulty) // interval) + 1
    for i in range(total):
        due = rec.t0 + i * interval
        while time.time() < due:
            if churn and time.time() - last_churn >= churn_every:
                churn.change()
                last_churn = time.time()
            time.sleep(min(0.5, max(0.0, due - time.time())))
        if rec.fault_at is None and i * interval >= idle:
            inject(cluster, faults, nodes)
            rec.fault_at = time.time() - rec.t0
            churn = Churn(k8s, run_id)
            churn.change()
            last_churn = time.time()
            progress(f"capture: faults in at {rec.fault_at:.0f}s: " + ", ".join(f"{n}={s}" for s, n in nodes.items()))
        rec.rounds.append({node: scrape(cluster, node) for node in nodes.values()})
        if i % 4 == 0 or i == total - 1:
            up = [n for n, got in rec.rounds[-1].items() if got is not None]
            progress(f"capture: round {i + 1}/{total} at {time.time() - rec.t0:.0f}s, scrapes answered: {', '.join(up) or 'none'}")
    return rec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxysuite.alerts.capture", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="tests/data/alerts", help="directory for <scenario>.yaml (default: tests/data/alerts)")
    p.add_argument("--proxy-mode", default="iptables", choices=("iptables", "nftables"), help="kube-proxy's mode (default: iptables)")
    p.add_argument("--interval", type=float, default=15, help="scrape interval in seconds (default: 15)")
    p.add_argument("--idle", type=float, default=360, help="seconds of the idle phase before the faults (default: 360)")
    p.add_argument("--faulty", type=float, default=480, help="seconds of the faulty phase (default: 480)")
    p.add_argument("--churn", type=float, default=20, help="seconds between EndpointSlice changes in the faulty phase (default: 20)")
    p.add_argument("--cluster-name", default="proxysuite-alerts", help="name of the local cluster (default: proxysuite-alerts)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from kubernetes import config as kconfig

    from ..cluster import get_provider
    from ..cluster.local import components

    if os.geteuid() != 0:
        raise SuiteError("capturing needs a local cluster, which needs root", "run it with sudo")
    sigterm_as_interrupt()
    kube_proxy = components.ensure(progress=_progress)["kube-proxy"]
    faults = Path(tempfile.mkdtemp(prefix="ps-alerts-faults-"))
    script = ALERTS / "fault-proxy.sh"
    cfg = SuiteConfig.from_mapping({
        "provider": "local", "mode": "custom", "nodes": len(SCENARIOS), "cluster-name": a.cluster_name, "proxy-health": "kube-proxy",
        "proxy-cmd": f"sh {script} {faults}/{{node}} {kube_proxy} {KUBE_PROXY_ARGS} --proxy-mode={a.proxy_mode}",
    })
    provider = get_provider("local")
    cluster = provider.up(cfg, progress=_progress, owner_pid=os.getpid())
    try:
        if not cluster.created:
            raise SuiteError(f"local cluster {cfg.name} already exists; the capture needs fresh proxies",
                             f"proxysuite cluster down --provider local --cluster-name {cfg.name}")
        nodes = {scenario: f"node-{i}" for i, scenario in enumerate(SCENARIOS, 1)}
        k8s = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
        rec = capture(cluster, faults, nodes, a.interval, a.idle, a.faulty, a.churn, k8s, cfg.run_id)
        meta = {"kubernetes": components.read_pins().kubernetes, "proxy_mode": a.proxy_mode,
                "captured_at": dt.datetime.fromtimestamp(rec.t0, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "command": "python -m proxysuite.alerts.capture " + " ".join(argv if argv is not None else sys.argv[1:])}
        for path in write(rec, nodes, Path(a.out), meta):
            print(path)
        return 0
    finally:
        cluster.close()
        if cluster.created:
            provider.down(cfg, progress=_progress)
        shutil.rmtree(faults, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SuiteError as exc:
        print(f"proxysuite: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("proxysuite: interrupted", file=sys.stderr)
        sys.exit(130)

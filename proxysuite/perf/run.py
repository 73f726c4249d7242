"""``proxysuite perf run``: the perf sweep outside pytest, against a cluster that is up (or brought up).

A cluster the run brings up is brought down at its end (``--keep-cluster`` keeps it); one that was
already up, as below, is reused and left running.

    proxysuite cluster up --mode nftables --nodes 1 --cluster-name perf-nft
    proxysuite perf run --mode nftables --nodes 1 --cluster-name perf-nft --scales 100,1000,5000,10000
    proxysuite report compare-modes reports/perf -o reports/compare-modes

The pytest suite (``suites/perf``) runs the same :func:`proxysuite.perf.pipeline.run_sweep`
through the ``cluster`` fixture; this entry point exists for long sweeps and the nightly job.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import OPTIONS, SuiteConfig
from ..runscope import namespace_labels, namespace_name
from ..runscope import progress as _progress
from ..signals import sigterm_as_interrupt
from .pipeline import DEFAULT_SCALES, PerfOptions, run_sweep


def perf_namespace(k8s, run_id: str, mode: str) -> str:
    from kubernetes import client

    name = namespace_name(run_id, f"perf-{mode}")
    client.CoreV1Api(k8s).create_namespace({"metadata": {"name": name, "labels": namespace_labels(run_id)}})
    return name


def delete_namespace(k8s, name: str) -> None:
    from kubernetes import client

    try:
        client.CoreV1Api(k8s).delete_namespace(name, propagation_policy="Background")
    except client.ApiException as exc:
        if exc.status != 404:
            _progress(f"could not delete namespace {name}: {exc.reason}")


def parse_scales(text: str) -> tuple[int, ...]:
    """``100,1000,5k,10k`` → (100, 1000, 5000, 10000)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        out.append(int(float(part[:-1]) * 1000) if part.endswith("k") else int(part))
    if not out or any(s < 5 for s in out) or out != sorted(out):
        raise argparse.ArgumentTypeError(f"scales {text!r}: give increasing Service counts ≥ 5, e.g. 100,1000,5k,10k")
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="proxysuite perf run", description="run the perf sweep on one cluster and save its frame")
    for opt in OPTIONS:
        if opt.flag:
            p.add_argument(f"--{opt.name}", action="store_true", default=opt.default, help=opt.help)
        else:
            p.add_argument(f"--{opt.name}", type=opt.type, default=opt.default, help=opt.help)
    p.add_argument("--scales", type=parse_scales, default=DEFAULT_SCALES, help="Service counts (default 100,1000,5000,10000)")
    p.add_argument("--endpoints", type=int, default=2, help="endpoints per Service (default 2)")
    p.add_argument("--first-packet-rounds", type=int, default=300,
                   help="new connections timed per first-packet target (default 300)")
    p.add_argument("--npl-changes", type=int, default=20,
                   help="endpoint flips timed for network programming latency per scale (default 20)")
    p.add_argument("--npl-creates", type=int, default=5,
                   help="Service creations timed from the API write until the new ClusterIP answers, per scale (default 5)")
    p.add_argument("--load-seconds", type=float, default=10.0,
                   help="paced Locust run per scale, seconds (default 10; 0 = no load)")
    p.add_argument("--load-rps", type=float, default=500.0, help="target rps; 0 = closed loop, as fast as Locust can")
    p.add_argument("--load-users", type=int, default=10, help="Locust users of the paced run (default 10)")
    p.add_argument("--load-max-seconds", type=float, default=5.0, help="closed-loop Locust run after the paced one (0 = skip)")
    p.add_argument("--load-max-users", type=int, default=50, help="Locust users of the closed-loop run (default 50)")
    p.add_argument("--no-restart", action="store_true", help="do not restart the proxy to time full syncs")
    p.add_argument("--no-teardown", action="store_true",
                   help="leave the Services for the namespace deletion (use when the cluster is deleted right after)")
    a = p.parse_args(argv)
    from ..cluster import get_provider

    cfg = SuiteConfig.from_mapping({o.name: getattr(a, o.name.replace("-", "_")) for o in OPTIONS})
    sigterm_as_interrupt()
    provider = get_provider(cfg.provider)
    # Like a pytest session: a cluster this run creates is owned by it (the janitor removes it if this
    # process dies) and brought down at the end unless --keep-cluster; a running one is reused and left.
    cluster = provider.up(cfg, progress=_progress, owner_pid=None if cfg.keep_cluster else os.getpid())
    created = cluster.created
    try:
        return _sweep(a, cfg, cluster)
    finally:
        cluster.close()
        if created and not cfg.keep_cluster:
            provider.down(cfg, progress=_progress)
        elif created:
            _progress(f"keeping cluster {cfg.name} (--keep-cluster); remove it with: proxysuite cluster down "
                      f"--provider {cfg.provider} --cluster-name {cfg.name}")


def _sweep(a: argparse.Namespace, cfg: SuiteConfig, cluster) -> int:
    from kubernetes import config as kconfig

    k8s = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
    ns = perf_namespace(k8s, cfg.run_id, cluster.mode)
    opts = PerfOptions(scales=a.scales, endpoints_per_service=a.endpoints, first_packet_rounds=a.first_packet_rounds,
                       npl_changes=a.npl_changes, npl_creates=a.npl_creates, restart_proxy=not a.no_restart,
                       load_seconds=a.load_seconds, load_rps=a.load_rps or None, load_users=a.load_users,
                       load_max_seconds=a.load_max_seconds, load_max_users=a.load_max_users,
                       teardown=not a.no_teardown)
    try:
        rec = run_sweep(cluster, k8s, ns, cfg.run_id, opts, reports_dir=cfg.reports_dir, progress=_progress)
        paths = rec.save(cfg.reports_dir)
        _progress(f"perf: results in {paths['parquet'].parent}")
        print(paths["parquet"].parent)
    finally:
        delete_namespace(k8s, ns)
        k8s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

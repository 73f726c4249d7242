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
from . import options as perf_options
from . import slo
from .slo import EXIT_SLO
from .options import parse_scales  # noqa: F401 - re-exported for callers of perf.run.parse_scales


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


def build_parser() -> argparse.ArgumentParser:
    """``proxysuite perf run``'s flags: the cluster options, then every :class:`~.options.PerfOptions` field."""
    p = argparse.ArgumentParser(prog="proxysuite perf run", description="run the perf sweep on one cluster and save its frame")
    for opt in OPTIONS:
        if opt.flag:
            p.add_argument(f"--{opt.name}", action="store_true", default=opt.default, help=opt.help)
        else:
            p.add_argument(f"--{opt.name}", type=opt.type, default=opt.default, help=opt.help)
    perf_options.add_arguments(p.add_argument_group("sweep"))
    p.add_argument("--slo", metavar="FILE", help="YAML objectives (metric, scale, percentile or stat, bound) checked on the "
                   f"run's frame after it is saved; exit {EXIT_SLO} with a table when one is not met (docs/perf.md#slos)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    from ..cluster import get_provider

    if a.slo:
        slo.load(a.slo)  # a bad SLO file fails before a cluster comes up, not after an hour of sweep

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

    from .pipeline import run_sweep

    k8s = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
    ns = perf_namespace(k8s, cfg.run_id, cluster.mode)
    opts = perf_options.from_values(vars(a))
    try:
        rec = run_sweep(cluster, k8s, ns, cfg.run_id, opts, reports_dir=cfg.reports_dir, progress=_progress)
        paths = rec.save(cfg.reports_dir)
        _progress(f"perf: results in {paths['parquet'].parent}")
        print(paths["parquet"].parent)
        if a.slo:
            return slo.enforce(rec.frame(), a.slo, say=_progress)
    finally:
        delete_namespace(k8s, ns)
        k8s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

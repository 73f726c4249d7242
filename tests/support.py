"""Helpers shared by the project's own tests (not by the suites users run)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager


def wait_for(what: str, fn, timeout: float = 60.0, interval: float = 0.25):
    """Call ``fn`` until it returns something truthy and return that; a bounded ceiling, not a measurement."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout:g}s (last value: {last!r})")


@contextmanager
def local_cluster(label: str, **settings):
    """A local cluster for one test module, named per xdist worker, its bring-up time printed, removed afterwards."""
    from proxysuite.cluster.local import provider
    from proxysuite.config import SuiteConfig

    cfg = SuiteConfig(provider="local", cluster_name=f"pstest-{label}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
                      **settings)
    started = time.monotonic()
    cl = provider.up(cfg, progress=lambda m: print(f"[up] {m}"), owner_pid=os.getpid())
    print(f"bring-up of {cfg.name}: {time.monotonic() - started:.1f}s (created={cl.created})")
    try:
        yield cl
    finally:
        cl.close()
        provider.down(cfg, progress=print)

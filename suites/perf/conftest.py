"""Perf suite options and the module-scoped sweep every perf check reads from.

    pytest suites/perf -m perf -n 0 --provider local --mode nftables --perf-scales 100,1000,5k,10k

Scales run in ascending order in one namespace (the fleet grows between them), so the
suite must not be split across xdist workers (``-n 0`` or ``-p no:xdist``).
"""

import os

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("proxysuite-perf", "proxysuite perf suite")
    g.addoption("--perf-scales", default=os.environ.get("PROXYSUITE_PERF_SCALES", "100,1000,5000,10000"),
                help="Service counts to sweep, ascending (default 100,1000,5000,10000; env PROXYSUITE_PERF_SCALES)")
    g.addoption("--perf-endpoints", type=int, default=2, help="endpoints per Service (default 2)")
    g.addoption("--perf-load-seconds", type=float, default=10.0, help="paced Locust run per scale, seconds (0 = skip)")


def pytest_generate_tests(metafunc):
    if "scale" in metafunc.fixturenames:
        from proxysuite.perf.run import parse_scales

        scales = parse_scales(metafunc.config.getoption("--perf-scales"))
        metafunc.parametrize("scale", scales, ids=[f"{s}-services" for s in scales])

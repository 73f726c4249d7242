"""Perf suite options and the module-scoped sweep every perf check reads from.

    pytest suites/perf -m perf -n 0 --provider local --mode nftables --perf-scales 100,1000,5k,10k

Every ``proxysuite perf run`` sweep flag is here with a ``perf-`` prefix (``--perf-npl-changes``,
``--perf-no-restart``, ...): both are generated from ``proxysuite.perf.options.PerfOptions``.
Scales run in ascending order in one namespace (the fleet grows between them), so the
suite must not be split across xdist workers (``-n 0`` or ``-p no:xdist``).
"""

import argparse

import pytest

from proxysuite.perf import options


def pytest_addoption(parser):
    options.add_pytest_options(parser.getgroup("proxysuite-perf", "proxysuite perf suite"))


def _options(config) -> options.PerfOptions:
    try:
        return options.from_values(config.getoption)
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"--perf-{exc}") from None


@pytest.fixture(scope="session")
def perf_options(pytestconfig) -> options.PerfOptions:
    return _options(pytestconfig)


def pytest_generate_tests(metafunc):
    if "scale" in metafunc.fixturenames:
        scales = _options(metafunc.config).scales
        metafunc.parametrize("scale", scales, ids=[f"{s}-services" for s in scales])

"""Migration suite options and the order of its steps.

    pytest suites/migration -m migration -p no:xdist --provider local --mode iptables --migrate-to nftables,iptables

The cluster comes up in ``--mode`` and is switched to each mode of ``--migrate-to`` in turn, one test per switch.
The steps depend on each other (each starts from the mode the last one left), so the suite runs in one process:
``-p no:xdist`` (or ``-n 0``).
"""

from __future__ import annotations

import pytest

from proxysuite.plugin import suite_config_of

DEFAULT_BOUND_MS = 15000.0
"""The declared ceiling for a disruption window: generous on purpose (a two-core machine shared by other runs);
the windows measured are recorded whatever they are, and judged only against this bound."""


def pytest_addoption(parser):
    g = parser.getgroup("proxysuite-migration", "proxysuite migration suite")
    g.addoption("--migrate-to", default=None,
                help="comma-separated modes to switch to in turn, starting from --mode (default: the other of iptables/nftables, "
                     "then back: --mode iptables gives nftables,iptables)")
    g.addoption("--migration-interval", type=float, default=0.1,
                help="seconds between probes of one stream and between requests on a held connection (default 0.1)")
    g.addoption("--migration-bound-ms", type=float, default=DEFAULT_BOUND_MS,
                help=f"a disruption window longer than this fails the step (default {DEFAULT_BOUND_MS:g} ms); windows are recorded either way")
    g.addoption("--migration-settle", type=float, default=3.0,
                help="seconds of traffic measured before the first node switches and after the last one serves (default 3)")


def steps(config) -> list[tuple[str, str]]:
    start = suite_config_of(config).mode
    raw = config.getoption("--migrate-to")
    if raw:
        targets = [m.strip() for m in raw.split(",") if m.strip()]
    else:
        other = {"iptables": "nftables", "nftables": "iptables"}.get(start)
        targets = [other, start] if other else []
    if not targets:
        raise pytest.UsageError(f"--mode {start}: no default migration; pass --migrate-to MODE[,MODE...]")
    out, cur = [], start
    for t in targets:
        if t == cur:
            raise pytest.UsageError(f"--migrate-to {raw}: step {len(out) + 1} switches {cur} to itself; list each mode change")
        out.append((cur, t))
        cur = t
    return out


def pytest_generate_tests(metafunc):
    if "step" in metafunc.fixturenames:
        s = steps(metafunc.config)
        metafunc.parametrize("step", [(i + 1, a, b) for i, (a, b) in enumerate(s)], ids=[f"{i + 1}-{a}-to-{b}" for i, (a, b) in enumerate(s)])


@pytest.fixture(scope="session")
def migration_options(pytestconfig) -> dict:
    interval = pytestconfig.getoption("--migration-interval")
    if not 0.01 <= interval <= 5:
        raise pytest.UsageError(f"--migration-interval {interval}: use 0.01 to 5 seconds")
    return {"interval": interval, "bound_ms": pytestconfig.getoption("--migration-bound-ms"),
            "settle": pytestconfig.getoption("--migration-settle")}

"""The catalogue's scenario modules really stay on one pytest-xdist worker.

Each conformance module builds its scenario once in a module-scoped fixture and marks its rows with
``xdist_group``; the proxysuite plugin turns plain ``-n 2`` into ``--dist loadgroup``. If the grouping
silently stops working (seen with pytest 9.2 and pytest-xdist 3.8, and with workers that never learnt
about the switch), every worker builds every scenario: the catalogue gets slower and module-scoped
changes run twice. This runs a child pytest exactly as `make conformance` does (``-n 2``, no --dist)
and records which worker ran each test.
"""

from __future__ import annotations

import collections

GROUPED = '''
import os, pytest
pytestmark = pytest.mark.xdist_group("{name}")

@pytest.mark.parametrize("i", range(8))
def test_row(i):
    with open(os.environ["WHO_RAN"], "a") as f:
        f.write("{name} " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_plain_n2_keeps_each_group_on_one_worker(pytester, tmp_path, monkeypatch):
    who = tmp_path / "who"
    monkeypatch.setenv("WHO_RAN", str(who))
    pytester.makepyfile(test_alpha=GROUPED.format(name="alpha"), test_beta=GROUPED.format(name="beta"))
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=16)
    workers = collections.defaultdict(set)
    for line in who.read_text().splitlines():
        group, worker = line.split()
        workers[group].add(worker)
    assert {g: len(w) for g, w in workers.items()} == {"alpha": 1, "beta": 1}, dict(workers)


def test_an_explicit_dist_is_left_alone(pytester, tmp_path, monkeypatch):
    """A user who asks for --dist load gets plain load balancing (the switch only fills a default)."""
    who = tmp_path / "who"
    monkeypatch.setenv("WHO_RAN", str(who))
    pytester.makepyfile(test_alpha=GROUPED.format(name="alpha"))
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "load", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    assert {line.split()[1] for line in who.read_text().splitlines()} == {"gw0", "gw1"}


USES_CLUSTER = '''
import pytest

@pytest.mark.parametrize("i", range(4))
def test_needs_cluster(cluster, i):
    pass
'''


def test_a_bring_up_error_in_a_worker_ends_the_run_with_its_one_line_reason(pytester, tmp_path, monkeypatch):
    """A cluster that cannot come up (here: no docker for --provider kind) in an xdist worker must end the run with
    the reason, not with an INTERNALERROR about a crashed item (what pytest.exit in a worker gives)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))  # no docker, no kind: check_prereqs raises SuiteError naming the fix
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROXYSUITE_CACHE_DIR", str(tmp_path / "cache"))
    pytester.makepyfile(test_up=USES_CLUSTER)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--provider", "kind", "--mode", "iptables",
                                           "--cluster-name", "ps-nodocker")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out, out[-2000:]
    result.stdout.fnmatch_lines(["*Interrupted: proxysuite: docker is not installed*"])
    assert result.ret != 0
    # Without xdist the same error stops the session at once with exit code 4.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--provider", "kind", "--mode", "iptables",
                                           "--cluster-name", "ps-nodocker")
    result.stdout.fnmatch_lines(["*proxysuite: docker is not installed*"])
    assert result.ret == 4

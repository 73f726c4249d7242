"""The run's cross-process locks (proxysuite.runlocks) and the wait ceilings a run may change (waits.set_ceiling)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from proxysuite import runlocks, waits


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(runlocks, "LOCK_DIR", tmp_path / "locks")
    return tmp_path / "locks"


def _try(path, mode) -> bool:
    """Whether another open file description gets the lock right now (flock is per description)."""
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_shared_holders_coexist_and_exclude_a_writer(lock_dir):
    with runlocks.held("r1", "clusterip"):
        main = lock_dir / "clusterip-r1.main"
        assert _try(main, fcntl.LOCK_SH)
        assert not _try(main, fcntl.LOCK_EX)
    assert _try(main, fcntl.LOCK_EX)


def test_a_writer_excludes_readers_and_releases_on_error(lock_dir):
    with pytest.raises(RuntimeError):
        with runlocks.held("r1", "clusterip", exclusive=True):
            assert not _try(lock_dir / "clusterip-r1.main", fcntl.LOCK_SH)
            assert not _try(lock_dir / "clusterip-r1.intent", fcntl.LOCK_SH)
            raise RuntimeError("boom")
    assert _try(lock_dir / "clusterip-r1.main", fcntl.LOCK_SH)


def test_a_reader_in_another_process_waits_for_the_writer(lock_dir):
    code = ("import sys, time; from proxysuite import runlocks; from pathlib import Path; "
            f"runlocks.LOCK_DIR = Path({str(lock_dir)!r}); t = time.monotonic(); "
            "cm = runlocks.held('r2', 'clusterip'); cm.__enter__(); print(time.monotonic() - t)")
    with runlocks.held("r2", "clusterip", exclusive=True):
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert child.poll() is None, "the reader got in while the writer held the lock"
    out, _ = child.communicate(timeout=30)
    assert float(out) >= 0.9


def test_remove_takes_only_this_runs_files(lock_dir):
    for run in ("aaa111", "bbb222"):
        with runlocks.held(run, "disrupt"):
            pass
    assert runlocks.remove("aaa111") == 2
    assert sorted(p.name for p in lock_dir.iterdir()) == ["disrupt-bbb222.intent", "disrupt-bbb222.main"]


def test_sweep_removes_old_unheld_files_and_keeps_held_or_recent_ones(lock_dir):
    for run in ("old111", "held22", "new333"):
        with runlocks.held(run, "disrupt"):
            pass
    day_ago = time.time() - runlocks.STALE_AFTER - 60
    for path in lock_dir.iterdir():
        if not path.name.startswith("disrupt-new333"):
            os.utime(path, (day_ago, day_ago))
    with open(lock_dir / "disrupt-held22.main", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        assert runlocks.sweep() == 3  # old111's two files and held22's intent file
    left = sorted(p.name for p in lock_dir.iterdir())
    assert left == ["disrupt-held22.main", "disrupt-new333.intent", "disrupt-new333.main"]


def test_set_ceiling_changes_one_wait_and_refuses_nonsense(monkeypatch):
    monkeypatch.setattr(waits, "PROXY_PROGRAMMED", waits.PROXY_PROGRAMMED)
    waits.set_ceiling("PROXY_PROGRAMMED", 7)
    assert waits.PROXY_PROGRAMMED.seconds == 7 and waits.PROXY_PROGRAMMED.poll == 0.3
    with pytest.raises(ValueError, match="positive"):
        waits.set_ceiling("PROXY_PROGRAMMED", 0)
    with pytest.raises(ValueError, match="no wait named"):
        waits.set_ceiling("NO_SUCH_WAIT", 3)
    start = time.monotonic()
    waits.set_ceiling("PROXY_PROGRAMMED", 0.5)
    with pytest.raises(waits.WaitTimeout, match="within 0.5s"):
        waits.wait_until(waits.PROXY_PROGRAMMED, lambda: False, what="never")
    assert time.monotonic() - start < 5


def test_programming_wait_option_reaches_the_waits_and_is_validated(pytester):
    # In a child process: the option changes a module global, which must not leak into this session.
    pytester.makepyfile("from proxysuite import waits\n"
                        "def test_x():\n    assert waits.PROXY_PROGRAMMED.seconds == 4\n")
    assert pytester.runpytest_subprocess("--programming-wait", "4", "-p", "no:cacheprovider").ret == 0
    bad = pytester.runpytest_subprocess("--programming-wait", "0", "-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--programming-wait" in bad.stderr.str() and "positive" in bad.stderr.str()

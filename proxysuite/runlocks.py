"""Locks the processes of one run share (the pytest-xdist workers), and their removal.

Two things in a cluster are shared by every module a run executes in parallel, and each has a
readers/writer lock here, named by the run id:

* ``disrupt``: a check marked ``disruptive`` (it restarts the proxy, flushes its rules) runs alone;
  every other check holds the lock shared.
* ``clusterip``: the apiserver hands out ClusterIPs from any Ready ServiceCIDR, picking one at random
  (``MetaAllocator.AllocateNextService`` ranges over a Go map). A module that adds a ServiceCIDR
  holds the lock exclusively until the new range is full of its own Services; every Service write
  that lets the apiserver choose an address holds it shared. Without it another module's Service
  can land in the extra range, and a proxy that misses that range fails checks that are not about it.

The files live in ``$TMPDIR/proxysuite-locks``; the session that owns the run removes its own at the
end (:func:`remove`), and the janitor removes those nobody holds and nobody touched for a day (:func:`sweep`).
"""

from __future__ import annotations

import fcntl
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_DIR = Path(tempfile.gettempdir()) / "proxysuite-locks"
STALE_AFTER = 24 * 3600
"""Seconds since its last change after which the janitor may remove a lock file nobody holds."""


class RWLock:
    """Readers/writer lock across processes: flock on two files, a writer's intent blocks new readers."""

    def __init__(self, run_id: str, name: str):
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        base = LOCK_DIR / f"{name}-{run_id}"
        self.intent = open(f"{base}.intent", "a+")
        self.main = open(f"{base}.main", "a+")

    def acquire(self, exclusive: bool) -> None:
        if exclusive:
            fcntl.flock(self.intent, fcntl.LOCK_EX)
            fcntl.flock(self.main, fcntl.LOCK_EX)
            return
        fcntl.flock(self.intent, fcntl.LOCK_SH)
        fcntl.flock(self.main, fcntl.LOCK_SH)
        fcntl.flock(self.intent, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self.main, fcntl.LOCK_UN)
        fcntl.flock(self.intent, fcntl.LOCK_UN)
        self.main.close()
        self.intent.close()


@contextmanager
def held(run_id: str, name: str, exclusive: bool = False) -> Iterator[None]:
    lock = RWLock(run_id, name)
    lock.acquire(exclusive)
    try:
        yield
    finally:
        lock.release()


def remove(run_id: str) -> int:
    """Remove the run's lock files (its owner's session end: no worker holds them any more)."""
    gone = 0
    for path in LOCK_DIR.glob(f"*-{run_id}.*"):
        path.unlink(missing_ok=True)
        gone += 1
    return gone


def sweep(now: float | None = None) -> int:
    """Remove lock files that are old and that nobody holds (runs that crashed before their session end)."""
    now = time.time() if now is None else now
    gone = 0
    for path in LOCK_DIR.glob("*-*.*"):
        try:
            if now - path.stat().st_mtime < STALE_AFTER:
                continue
            with open(path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink(missing_ok=True)
                gone += 1
        except OSError:
            continue  # held by a live run, or already gone
    return gone

"""Daemons of a local cluster: start them tagged with the run id, stop them by process group.

Every process carries ``PROXYSUITE_RUN_ID`` in its environment, so the janitor
can find what a crashed run left even when the state file is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

RUN_ID_ENV = "PROXYSUITE_RUN_ID"


def spawn(argv: list[str], *, run_id: str, log: Path, netns: str | None = None, env: dict | None = None) -> int:
    """Start ``argv`` (inside ``netns`` if given) in its own session; return its PID."""
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {}), RUN_ID_ENV: run_id},
            close_fds=True,
        )
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def stop(pid: int | None, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds; idempotent."""
    if not pid or not alive(pid):
        _reap(pid)
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return
            time.sleep(0.05)


def _reap(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        _reap(pid)


def pids_with_run_id(run_id: str | None = None) -> dict[int, str]:
    """{pid: run id} of processes tagged by the suite (all runs, or one)."""
    found = {}
    needle = f"{RUN_ID_ENV}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(needle):
                rid = item[len(needle):].decode(errors="replace")
                if run_id is None or rid == run_id:
                    found[int(entry)] = rid
                break
    return found

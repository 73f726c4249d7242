"""Network-namespace primitives, named like ``ip netns``.

Side effects inside a namespace happen in a child: either a subprocess under
``ip netns exec`` (setup steps, long-running daemons) or a short-lived thread
that has ``setns()``-ed into the namespace (sockets, hot paths). A socket keeps
the namespace it was created in, so :func:`socket_factory` hands the calling
code ordinary sockets that live in another namespace — the probe engine uses it
to send real packets from a pod without spawning a process per probe.

Every namespace the suite creates is named ``ps-<run id>-<role>``; the janitor
relies on that prefix.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from typing import Callable, TypeVar

from pyroute2 import NetNS, netns as _netns

from ...errors import SuiteError

PREFIX = "ps-"
T = TypeVar("T")


def name_for(run_id: str, role: str) -> str:
    return f"{PREFIX}{run_id}-{role}"


def run_id_of(name: str) -> str | None:
    """The run id encoded in a suite namespace name, or None for foreign namespaces."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX):].split("-", 1)
    return parts[0] if len(parts) == 2 and len(parts[0]) == 6 else None


def listing() -> list[str]:
    return sorted(_netns.listnetns())


def exists(name: str) -> bool:
    return os.path.exists(f"/var/run/netns/{name}")


def add(name: str) -> None:
    if not exists(name):
        _netns.create(name)


def delete(name: str) -> None:
    """Remove the namespace; processes still inside keep it alive until they exit, so kill them first."""
    if exists(name):
        _netns.remove(name)


def pids_in(name: str) -> list[int]:
    """PIDs whose network namespace is ``name`` (like ``ip netns pids``)."""
    try:
        target = os.stat(f"/var/run/netns/{name}")
    except FileNotFoundError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            out.append(int(entry))
    return out


def ipr(name: str) -> NetNS:
    """A pyroute2 netlink handle bound to the namespace (use as a context manager)."""
    return NetNS(name)


def call_in(name: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` in a fresh thread that has entered namespace ``name``; return its result or raise its error."""
    box: dict = {}

    def target() -> None:
        try:
            _netns.setns(name, flags=0)  # never create: a vanished namespace is an error, not a new empty one
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, name=f"netns:{name}", daemon=True)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def socket_factory(name: str) -> Callable[..., socket.socket]:
    """``make_socket(family, type[, proto])`` returning sockets that live in namespace ``name``."""

    def make(family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
        return call_in(name, socket.socket, family, type, proto)

    return make


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """``argv`` run inside namespace ``name``: a name under /var/run/netns, or a path such as a container's
    ``/proc/PID/ns/net`` (which ``ip netns exec`` refuses as an invalid name).

    Given a process's ``/proc/PID/ns/net``, the command also joins that process's cgroup v2 cgroup first: BPF
    programs attached to cgroups see its sockets as that process's (Cilium's socket-LB translates Service
    addresses at connect() only for processes under the node's cgroup), so it sends exactly as a pod's own
    process would. Without a cgroup v2 hierarchy there is nothing to join."""
    if name.startswith("/"):
        enter = ["nsenter", f"--net={name}", "--", *argv]
        m = re.fullmatch(r"/proc/(\d+)/ns/net", name)
        procs = cgroup2_procs_file(int(m.group(1))) if m else None
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *enter] if procs else enter
    return ["ip", "netns", "exec", name, *argv]


def cgroup2_procs_file(pid: int, proc: str = "/proc") -> str | None:
    """The ``cgroup.procs`` file of ``pid``'s cgroup in the cgroup v2 hierarchy (``/sys/fs/cgroup`` on a pure v2
    machine, ``/sys/fs/cgroup/unified`` on a hybrid one), or None when there is none or the process is gone."""
    try:
        with open(f"{proc}/self/mountinfo") as fh:
            mounts = [ln.split(" - ")[0].split()[4] for ln in fh if " - cgroup2 " in ln]
        with open(f"{proc}/{pid}/cgroup") as fh:
            path = next((ln.strip()[3:] for ln in fh if ln.startswith("0::")), None)
    except OSError:
        return None
    if not mounts or not path:
        return None
    procs = os.path.join(mounts[0], path.lstrip("/"), "cgroup.procs")
    return procs if os.path.exists(procs) else None


def run(name: str, argv: list[str], timeout: float = 60, check: bool = True) -> str:
    """Run a command inside the namespace and return its stdout; errors name the namespace and command."""
    try:
        proc = subprocess.run(exec_argv(name, argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"`{' '.join(argv)}` in netns {name} did not finish in {timeout:.0f}s", "check the node's logs under the cluster state dir") from None
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` in netns {name} failed (rc={proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc.stdout


def sysctl(name: str, key: str, value: str) -> None:
    run(name, ["sysctl", "-q", "-w", f"{key}={value}"])

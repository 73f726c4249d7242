"""A kind pod's network namespace, seen from this machine (``Cluster.load_netns`` on kind).

kind's nodes are containers on this machine's kernel, so a pod's processes are processes here as well. Each
one sits in a cgroup named after its pod's UID: kubelet's systemd cgroup driver (kind's) writes
``pod<uid with '_' for '-'>``, the cgroupfs driver ``pod<uid>``. Any such process gives
``/proc/<pid>/ns/net``; ``nsenter --net=<that>`` runs a program from this machine's file system (the suite's
Python and Locust) in the pod's network, so its packets leave as the pod's, exactly as the local provider's
``ip netns exec <pod netns>`` does. Where the engine runs elsewhere (Docker Desktop's VM, a remote
``DOCKER_HOST``) no process here carries the UID, and :func:`pod_netns_path` says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import SuiteError

PROC = Path("/proc")


def _uid_marks(uid: str) -> tuple[str, str]:
    return f"pod{uid.replace('-', '_')}", f"pod{uid}"


def pod_pids(uid: str, proc: Path = PROC) -> list[int]:
    """Pids on this machine whose cgroup belongs to the pod with ``uid``."""
    marks = _uid_marks(uid)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "cgroup").read_text()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if any(m in text for m in marks):
            found.append(int(entry.name))
    return sorted(found)


def pod_netns_path(uid: str, proc: Path = PROC) -> str:
    """``/proc/<pid>/ns/net`` of a process of the pod (its sandbox's network), or SuiteError naming why not."""
    own = os.stat(proc / "self" / "ns" / "net").st_ino
    for pid in pod_pids(uid, proc):
        path = proc / str(pid) / "ns" / "net"
        try:
            if os.stat(path).st_ino != own:
                return str(path)
        except OSError:
            continue
    raise SuiteError(f"no process on this machine belongs to pod {uid} in a network namespace of its own",
                     "run perf load where the Docker engine shares this machine's kernel (not a VM or a remote DOCKER_HOST), "
                     "or pass --load-seconds 0")


def children_cpu_seconds(uid: str, proc: Path = PROC) -> float:
    """CPU seconds of the exited children waited for by the pod's processes (``cutime`` + ``cstime``, proc(5)):
    the ``iptables-restore`` / ``nft`` runs of a kube-proxy pod, which its own ``process_cpu_seconds_total``
    leaves out. The pause process has none, so summing over the pod is the proxy's figure."""
    total, seen = 0, 0
    for pid in pod_pids(uid, proc):
        try:
            fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[13]) + int(fields[14])
        seen += 1
    if not seen:
        raise SuiteError(f"no process on this machine belongs to pod {uid}", "is the proxy pod running on this machine's kernel?")
    return total / os.sysconf("SC_CLK_TCK")


def engine_shares_kernel(container_pid: int, container_id: str, proc: Path = PROC) -> bool:
    """Whether a container's pid (``docker inspect .State.Pid``) is that container here (not in a VM)."""
    try:
        return container_pid > 0 and container_id in (proc / str(container_pid) / "cgroup").read_text()
    except OSError:
        return False


def tx_checksum_offload_off(netns_path: str, ifname: str) -> None:
    """``ethtool -K <ifname> tx off`` inside a container's network namespace (see
    ``KindCluster._wire_like_checksums`` for why), with pyroute2's ethtool."""
    from pyroute2.ethtool import Ethtool

    from ..local.netns import call_in

    def turn_off() -> None:
        tool = Ethtool()
        try:
            features = tool.get_features(ifname)
            for name, feature in features.features.items():
                if name.startswith("tx-checksum"):
                    feature.enable = False
            tool.set_features(ifname, features)
        finally:
            tool.close()

    call_in(netns_path, turn_off)

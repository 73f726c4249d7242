"""The pod runtime of the local node agent: sandboxes, processes and probes, without an apiserver.

The node agent (``nodeagent.py``) is the API half: it registers the Node, watches the
pods bound to it and patches their status. This module is the runtime half and works on
plain pod dicts (the apiserver's JSON, camelCase), so tests drive it with a hand-written
manifest and a list as the status sink.

How a pod is run, step by step:

1. **Sandbox** — :func:`setup_pod_network` creates the netns ``ps-<run>-pod-<uid12>`` and a
   routed /32 veth pair (Calico style, as measured in local-cluster-facts.md): the pod gets
   ``X/32`` on ``eth0``, a link route to the gateway (the pod CIDR's ``.1``) and a default
   route via it; the node side gets ``.1/32`` and a ``/32`` route to the pod. Every pod
   packet is L3-routed by the node, so kube-proxy's DNAT and conntrack see it without a
   bridge or ``br_netfilter``. :class:`IPAM` hands out ``.2`` upward and persists the
   allocations, so a restarted agent never reuses a live address.
2. **Containers** — :func:`resolve_argv` maps an image to a host program (agnhost, or
   sleep/sh/python3/pause); :class:`ContainerProcess` starts it with
   ``ip netns exec NS unshare --uts -- sh -c 'hostname "$0" && exec "$@"' POD ARGV…`` in its
   own session/process group, so ``os.Hostname()`` in agnhost is the pod name. Init containers
   run first, sidecars (restartable init containers) alongside the app.
3. **Probes** — :func:`run_handler` performs httpGet/tcpSocket from the *node* netns (the
   socket is created in a short-lived thread that ``setns``-ed there; sockets keep their
   netns), exec via ``nsenter`` into the container's net+uts namespaces.
4. **Lifecycle** — :class:`PodWorker` owns one pod: restart policy with CrashLoopBackOff,
   startup/liveness/readiness probers, kubelet-style status and graceful termination
   (preStop, SIGTERM, grace, SIGKILL, sandbox teardown). A worker started by a restarted agent
   adopts the running processes recorded in ``<state-dir>/pods/<uid>.json``.
5. **Reconcile** — :func:`reconcile_node` removes what pods deleted while the agent was down
   left behind (netns, veth, IP, processes, state).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from filelock import FileLock
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from . import netns as _netns_mod

log = logging.getLogger("proxysuite.nodeagent")

NETNS_DIR = "/run/netns"
KUBELET_VERSION = "v1.37.2"

# Kubelet's container restart back-off (pkg/kubelet/kubelet.go: backOffPeriod, MaxContainerBackOff).
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0
"""A container that ran this long without exiting starts its back-off from scratch again."""

MIN_GRACE_AFTER_PRESTOP = 2.0
"""Kubelet gives at least 2 s between SIGTERM and SIGKILL when preStop ate the whole grace period."""

TICK = 0.2
"""How often a pod worker looks at its processes when nothing woke it up."""

# Host programs the local provider runs for "well-known" commands (anything else needs agnhost).
HOST_PROGRAMS = ("sleep", "sh", "bash", "python3", "python", "pause")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CANNOT_RUN_REASON = "LocalProviderCannotRunImage"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age_seconds(rfc3339: str | None) -> float:
    """Seconds since an RFC 3339 timestamp (0 if unknown)."""
    if not rfc3339:
        return 0.0
    try:
        then = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return 0.0
    return max(0.0, (datetime.now(timezone.utc) - then).total_seconds())


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------
def uid_hex(uid: str) -> str:
    return uid.replace("-", "").lower()


def pod_netns_name(run_id: str, uid: str) -> str:
    """``ps-<run>-pod-<first 12 hex of the UID>``: the janitor and the agent's reconcile find pods by this prefix."""
    return f"ps-{run_id}-pod-{uid_hex(uid)[:12]}"


def host_veth_name(uid: str) -> str:
    """``v`` + 10 hex of the UID: 11 chars, under IFNAMSIZ-1 (15), and traceable to the pod."""
    return "v" + uid_hex(uid)[:10]


def _peer_tmp_name(uid: str) -> str:
    # The pod side is created under this name, moved into the pod netns and renamed eth0 there
    # (creating it as "eth0" in the node netns would clash with the node's own eth0).
    return "p" + uid_hex(uid)[:10]


def pod_hostname(pod: dict) -> str:
    """The pod's hostname like kubelet: ``spec.hostname`` or the pod name, cut to 63 chars (no trailing - or .)."""
    name = pod["spec"].get("hostname") or pod["metadata"]["name"]
    return name[:63].rstrip("-.") if len(name) > 63 else name


# ---------------------------------------------------------------------------------------------
# Network namespaces
# ---------------------------------------------------------------------------------------------
# One implementation of the namespace primitives for the whole provider (see netns.py).
netns_exists = _netns_mod.exists
in_netns = _netns_mod.call_in
netns_pids = _netns_mod.pids_in


def netns_socket(name: str, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in netns ``name`` (a socket keeps the netns it was created in)."""
    return _netns_mod.call_in(name, socket.socket, family, type_)


# ---------------------------------------------------------------------------------------------
# IPAM
# ---------------------------------------------------------------------------------------------
class IPAM:
    """Host-local IPAM for one node's pod CIDR: ``.1`` is the gateway, pods get ``.2`` upward.

    Allocations (pod UID → IP) are persisted in ``<state-dir>/ipam.json`` under a file lock, so
    a restarted agent (or a second process) never hands out an address a live pod still has.
    Like host-local, freed addresses are reused only after the rest of the range, which keeps a
    deleted pod's IP from being recycled to the next pod while conntrack still knows it.
    """

    HOSTS_WINDOW = 4094
    """Addresses handed out from a large (IPv6 /64) range: its first ones, enough for any node here."""

    def __init__(self, state_dir: str | Path, pod_cidr: str, file: str = "ipam.json"):
        self.net = ipaddress.ip_network(pod_cidr, strict=False)
        self.gateway = str(self.net.network_address + 1)
        self.path = Path(state_dir) / file
        self.lock = FileLock(str(self.path) + ".lock")
        Path(state_dir).mkdir(parents=True, exist_ok=True)

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"cidr": str(self.net), "last": None, "allocations": {}}
        if data.get("cidr") != str(self.net):
            raise RuntimeError(f"IPAM state {self.path} is for {data.get('cidr')}, not {self.net}; remove it or use another --state-dir")
        return data

    def _save(self, data: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def allocate(self, uid: str, prefer: str | None = None) -> str:
        """The pod's IP; the same one again if it already has one.

        ``prefer`` (the podIP the API already shows, e.g. after the agent lost its state) is taken
        if it is free: a pod's IP must not change under the endpoints that already point at it.
        """
        with self.lock:
            data = self._load()
            if uid in data["allocations"]:
                return data["allocations"][uid]
            used = set(data["allocations"].values())
            hosts = [h for h in self._hosts() if h != self.gateway]
            if prefer in hosts and prefer not in used:
                data["allocations"][uid] = prefer
                self._save(data)
                return prefer
            start = hosts.index(data["last"]) + 1 if data.get("last") in hosts else 0
            for ip in hosts[start:] + hosts[:start]:
                if ip not in used:
                    data["allocations"][uid] = ip
                    data["last"] = ip
                    self._save(data)
                    return ip
            raise RuntimeError(f"pod CIDR {self.net} is exhausted ({len(used)} addresses in use)")

    def reserve(self, uid: str, ip: str) -> bool:
        """Record that ``uid`` holds ``ip`` (an address the API already shows), if nobody else does."""
        with self.lock:
            data = self._load()
            if data["allocations"].get(uid) == ip:
                return True
            hosts = set(self._hosts()) - {self.gateway}
            if uid in data["allocations"] or ip not in hosts or ip in data["allocations"].values():
                return False
            data["allocations"][uid] = ip
            self._save(data)
            return True

    def _hosts(self) -> list[str]:
        # A /64 has 2**64 hosts: listing them all would never end.
        return [str(h) for h in itertools.islice(self.net.hosts(), self.HOSTS_WINDOW + 1)]

    def release(self, uid: str) -> None:
        with self.lock:
            data = self._load()
            if data["allocations"].pop(uid, None) is not None:
                self._save(data)

    def allocations(self) -> dict[str, str]:
        with self.lock:
            return dict(self._load()["allocations"])


# ---------------------------------------------------------------------------------------------
# Sandbox network
# ---------------------------------------------------------------------------------------------
def setup_pod_network(node_netns: str, pod_netns: str, veth: str, peer_tmp: str, pod_ip: str, gateway: str,
                      more: Sequence[tuple[str, str]] = ()) -> None:
    """Create ``pod_netns`` and wire it to ``node_netns`` with a routed /32 veth pair.

    ``more``: further (pod IP, gateway) pairs on the same veth, one per extra family (dual-stack); an IPv6
    pair is a routed /128 the same way, added without duplicate address detection (a tentative address
    could not be used for about a second).

    Idempotent for a retry after a half-done setup: a leftover netns or veth of the same pod is
    removed first (both names derive from the pod UID, so they cannot belong to anyone else).
    """
    if not netns_exists(node_netns):
        raise RuntimeError(f"node netns {node_netns} does not exist")
    if netns_exists(pod_netns):
        teardown_pod_network(node_netns, pod_netns, veth)
    pairs = [(pod_ip, gateway), *more]
    pr_netns.create(pod_netns)
    try:
        with IPRoute(netns=node_netns, flags=0) as ipr:
            for stale in ipr.link_lookup(ifname=veth) + ipr.link_lookup(ifname=peer_tmp):
                ipr.link("del", index=stale)
            # Create the pair with its peer already inside the pod netns (one netlink request).
            ipr.link("add", ifname=veth, kind="veth", peer={"ifname": peer_tmp, "net_ns_fd": pod_netns})
            idx = ipr.link_lookup(ifname=veth)[0]
            for _ip, gw in pairs:
                _add_host_addr(ipr, idx, gw)
            ipr.link("set", index=idx, state="up")
            for ip, _gw in pairs:
                _add_host_route(ipr, idx, ip)
        with IPRoute(netns=pod_netns, flags=0) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            idx = ipr.link_lookup(ifname=peer_tmp)[0]
            ipr.link("set", index=idx, ifname="eth0")
            for ip, _gw in pairs:
                _add_host_addr(ipr, idx, ip)
            ipr.link("set", index=idx, state="up")
            for _ip, gw in pairs:
                _add_host_route(ipr, idx, gw)
                if ":" in gw:
                    ipr.route("add", dst="::/0", gateway=gw, oif=idx, family=socket.AF_INET6)
                else:
                    ipr.route("add", dst="0.0.0.0/0", gateway=gw, oif=idx)
    except Exception:
        teardown_pod_network(node_netns, pod_netns, veth)
        raise


def _add_host_addr(ipr, idx: int, address: str) -> None:
    if ":" in address:
        ipr.addr("add", index=idx, address=address, prefixlen=128, flags=IFA_F_NODAD)
    else:
        ipr.addr("add", index=idx, address=address, prefixlen=32)


def _add_host_route(ipr, idx: int, address: str) -> None:
    if ":" in address:
        ipr.route("add", dst=f"{address}/128", oif=idx, family=socket.AF_INET6)
    else:
        ipr.route("add", dst=f"{address}/32", oif=idx, scope="link")


def teardown_pod_network(node_netns: str, pod_netns: str | None, veth: str | None) -> list[str]:
    """Kill what still runs in the pod netns, delete the netns and the node-side veth.

    Every step runs even if an earlier one failed; the failures are returned (and logged).
    Deleting the netns destroys the pod's eth0 and with it the veth pair and the node's /32 route;
    the explicit veth delete covers a netns still pinned by a process we could not kill.
    """
    problems: list[str] = []
    if pod_netns and netns_exists(pod_netns):
        for pid in netns_pids(pod_netns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except OSError as exc:
                problems.append(f"kill {pid} in netns {pod_netns}: {exc}")
        try:
            pr_netns.remove(pod_netns)
        except OSError as exc:
            problems.append(f"remove netns {pod_netns}: {exc}")
    if veth and node_netns and netns_exists(node_netns):
        try:
            with IPRoute(netns=node_netns, flags=0) as ipr:
                for idx in ipr.link_lookup(ifname=veth):
                    ipr.link("del", index=idx)
        except Exception as exc:  # noqa: BLE001 - reported, the other steps still ran
            if getattr(exc, "code", None) != errno.ENODEV:
                problems.append(f"delete veth {veth} in {node_netns}: {exc}")
    for p in problems:
        log.warning("teardown: %s", p)
    return problems


# ---------------------------------------------------------------------------------------------
# Images, commands, environment
# ---------------------------------------------------------------------------------------------
class CannotRunImage(Exception):
    """The local provider has no program for this image/command; the container waits with this message."""


def _host_program(name: str) -> str | None:
    base = os.path.basename(name)
    if base in ("python3", "python"):
        # The system interpreter, not a pyenv shim or the suite's venv.
        for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.path.exists(cand):
                return cand
    if os.path.isabs(name) and os.access(name, os.X_OK):
        return name
    return shutil.which(base, path=DEFAULT_PATH)


def resolve_argv(container: dict, agnhost: str, expand_env: dict | None = None) -> list[str]:
    """The host argv that stands in for ``container`` (image + command + args), or raise CannotRunImage.

    * any image whose name contains ``agnhost`` → the local agnhost binary with the container's
      args (a ``command`` whose first element ends in ``agnhost`` contributes the rest);
    * a command whose program is sleep/sh/bash/python3/pause → that host program;
    * a ``pause`` image without command, or a ``pause`` command → ``sleep infinity``.
    """
    image = container.get("image", "")
    command = [_expand(c, expand_env) for c in container.get("command") or []]
    args = [_expand(a, expand_env) for a in container.get("args") or []]
    image_base = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    if command and command[0].endswith("agnhost"):
        return [agnhost, *command[1:], *args]
    if "agnhost" in image and not command:
        return [agnhost, *args]
    if command and os.path.basename(command[0]) in HOST_PROGRAMS:
        if os.path.basename(command[0]) == "pause":
            return ["sleep", "infinity"]
        prog = _host_program(command[0])
        if prog:
            return [prog, *command[1:], *args]
    if not command and image_base == "pause":
        return ["sleep", "infinity"]
    raise CannotRunImage(
        f"the local provider cannot run image {image!r}"
        + (f" with command {command!r}" if command else "")
        + "; it runs agnhost images (any image name containing 'agnhost') and commands whose program is one of "
        + ", ".join(HOST_PROGRAMS)
        + " from the host"
    )


def resolve_exec(cmd: list[str], agnhost: str) -> list[str]:
    """Host argv for an exec probe or hook command; agnhost maps to the local binary, the rest must exist on the host."""
    if not cmd:
        raise CannotRunImage("exec handler has an empty command")
    if cmd[0].endswith("agnhost"):
        return [agnhost, *cmd[1:]]
    prog = _host_program(cmd[0])
    if not prog:
        raise CannotRunImage(f"exec command {cmd[0]!r} does not exist on the host")
    return [prog, *cmd[1:]]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(s: str, env: dict | None) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes, unknown references stay as they are)."""
    if not env:
        return s

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, s)


def _field_ref(pod: dict, path: str, pod_ip: str, host_ip: str) -> str | None:
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        # A list field's fieldRef is its addresses joined by commas (kubelet's downward API does the same).
        "status.podIP": pod_ip.split(",")[0],
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip.split(",")[0],
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2))
    return None


def container_env(pod: dict, container: dict, pod_ip: str, host_ip: str, run_id: str, hostname: str) -> dict[str, str]:
    """The container's environment: a clean base, the spec's ``env`` (values and simple fieldRefs), markers."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": "/root"}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _expand(item.get("value") or "", env)
        elif (item.get("valueFrom") or {}).get("fieldRef"):
            value = _field_ref(pod, item["valueFrom"]["fieldRef"]["fieldPath"], pod_ip, host_ip)
            if value is not None:
                env[item["name"]] = value
        # secretKeyRef/configMapKeyRef/resourceFieldRef are not supported (see nodeagent's doc).
    # Markers the janitor and the agent's restart reconcile use to find our processes.
    env["PROXYSUITE_RUN_ID"] = run_id
    env["PROXYSUITE_POD_UID"] = pod["metadata"]["uid"]
    return env


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
def _proc_starttime(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/pid/stat): tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _argv_for_log(argv: list[str], limit: int = 80) -> str:
    """One log line per command: ``python3 -c <a whole program>`` would otherwise fill the log."""
    out = []
    for a in argv:
        a = a.replace("\n", "\\n")
        out.append(a if len(a) <= limit else a[:limit] + f"…(+{len(a) - limit} chars)")
    return " ".join(out)


def _exit_code(returncode: int) -> int:
    # Popen reports "killed by signal N" as -N; the container runtime reports 128+N.
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """One container's main process: its own session/process group, UTS namespace and log file.

    Signals go to the whole process group, so ``sh -c`` children die with their shell.
    An *adopted* process (started by a previous agent) is not our child; we watch it through
    /proc and cannot learn its exit code.
    """

    def __init__(self, pid: int, starttime: int | None, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.starttime = starttime
        self.popen = popen
        self.returncode: int | None = None

    @classmethod
    def start(cls, argv: list[str], env: dict, netns: str, hostname: str, log_path: Path, cwd: str = "/") -> "ContainerProcess":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        wrapper = ["ip", "netns", "exec", netns, "unshare", "--uts", "--",
                   "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
        with open(log_path, "ab", buffering=0) as logf:
            logf.write(f"--- {now_rfc3339()} start: {_argv_for_log(argv)}\n".encode())
            popen = subprocess.Popen(wrapper, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=cwd, close_fds=True)
        # ip/unshare/sh all exec, so the pid stays the container's main process.
        return cls(popen.pid, _proc_starttime(popen.pid), popen)

    @classmethod
    def adopt(cls, pid: int, starttime: int) -> "ContainerProcess | None":
        if _proc_starttime(pid) != starttime:
            return None
        return cls(pid, starttime)

    def poll(self) -> int | None:
        """Exit code once the process has exited (137 'unknown' for an adopted one), else None."""
        if self.returncode is not None:
            return self.returncode
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is not None:
                self.returncode = _exit_code(rc)
        elif _proc_starttime(self.pid) != self.starttime or _is_zombie(self.pid):
            self.returncode = 137  # like kubelet's ContainerStatusUnknown
        return self.returncode

    def signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll() is not None:
                return self.returncode
            time.sleep(0.05)
        return self.poll()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------
# Handlers: probes and lifecycle hooks
# ---------------------------------------------------------------------------------------------
@dataclass
class HandlerContext:
    """Where a handler runs: probes come from the node netns to the pod IP, exec goes into the container."""

    node_netns: str
    pod_ip: str
    container: dict
    pid: int | None
    """The container's main process (exec handlers join its namespaces); None if it is not running."""
    env: dict
    agnhost: str


def _resolve_port(port, container: dict) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"named port {port!r} is not among container {container.get('name')!r}'s ports")


def _http_probe(spec: dict, ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    host = spec.get("host") or ctx.pod_ip
    port = _resolve_port(spec.get("port"), ctx.container)
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    scheme = (spec.get("scheme") or "HTTP").upper()
    headers = {"Host": f"[{host}]:{port}" if ":" in host else f"{host}:{port}", "User-Agent": f"kube-probe/{KUBELET_VERSION.lstrip('v').rsplit('.', 1)[0]}",
               "Accept": "*/*", "Connection": "close"}
    for h in spec.get("httpHeaders") or []:
        headers[h["name"]] = h["value"]
    sock = netns_socket(ctx.node_netns, socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        if scheme == "HTTPS":
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # kubelet skips verification too
            sock = tls.wrap_socket(sock, server_hostname=host)
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(req.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        parts = data.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"HTTP probe failed: bad status line {data[:60]!r}"
        code = int(parts[1])
        # Kubelet: 200 <= code < 400 is success (redirects count, it does not follow cross-host ones).
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"
    finally:
        sock.close()


def _tcp_probe(spec: dict, ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    host = spec.get("host") or ctx.pod_ip
    port = _resolve_port(spec.get("port"), ctx.container)
    sock = netns_socket(ctx.node_netns, socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        return True, ""
    finally:
        sock.close()


def _exec(cmd: list[str], ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    if ctx.pid is None:
        return False, "container is not running"
    argv = resolve_exec(cmd, ctx.agnhost)
    # nsenter joins the container's netns and UTS namespace; the filesystem is the host's.
    full = ["nsenter", "--target", str(ctx.pid), "--net", "--uts", "--", *argv]
    try:
        res = subprocess.run(full, env=ctx.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"command {cmd!r} timed out after {timeout:g}s"
    if res.returncode == 0:
        return True, ""
    out = (res.stdout + res.stderr).decode(errors="replace").strip()[-200:]
    return False, f"command {cmd!r} exited with {res.returncode}: {out}"


def run_handler(handler: dict, ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    """Run a probe or lifecycle handler; ``(success, message)``. Never raises."""
    try:
        if "httpGet" in handler:
            return _http_probe(handler["httpGet"], ctx, timeout)
        if "tcpSocket" in handler:
            return _tcp_probe(handler["tcpSocket"], ctx, timeout)
        if "exec" in handler:
            return _exec(handler["exec"].get("command") or [], ctx, timeout)
        if "sleep" in handler:
            time.sleep(min(float(handler["sleep"].get("seconds", 0)), timeout))
            return True, ""
        if "grpc" in handler:
            return False, "grpc probes are not supported by the local provider"
        return False, f"unknown handler {sorted(handler)}"
    except (OSError, ValueError, CannotRunImage) as exc:
        return False, f"{type(exc).__name__}: {exc}"


@dataclass
class ProbeSpec:
    handler: dict
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None

    @classmethod
    def parse(cls, probe: dict) -> "ProbeSpec":
        return cls(
            handler={k: v for k, v in probe.items() if k in ("httpGet", "tcpSocket", "exec", "grpc")},
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
            termination_grace=probe.get("terminationGracePeriodSeconds"),
        )


class Prober(threading.Thread):
    """One probe of one container instance, like kubelet's prober worker.

    ``result`` starts as kubelet's initial value (readiness: failure, liveness: success,
    startup: failure) and flips only after ``success_threshold``/``failure_threshold``
    consecutive results. ``on_change`` is called on every flip.
    """

    def __init__(self, kind: str, spec: ProbeSpec, ctx_fn: Callable[[], HandlerContext], started_at: float,
                 on_change: Callable[["Prober"], None], label: str = ""):
        super().__init__(name=f"probe-{kind}-{label}", daemon=True)
        self.label = label
        self.kind, self.spec, self.ctx_fn, self.started_at, self.on_change = kind, spec, ctx_fn, started_at, on_change
        self.result = kind == "liveness"
        self.failed = False
        """Startup only: failureThreshold was reached before any success (kubelet then restarts the container)."""
        self.last_message = ""
        self._successes = self._failures = 0
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        delay = self.started_at + self.spec.initial_delay - time.monotonic()
        if delay > 0 and self._stop_evt.wait(delay):
            return
        while not self._stop_evt.is_set():
            t0 = time.monotonic()
            ok, msg = run_handler(self.spec.handler, self.ctx_fn(), self.spec.timeout)
            if self._stop_evt.is_set():
                return
            self.last_message = msg
            if ok:
                self._successes, self._failures = self._successes + 1, 0
                flip = not self.result and self._successes >= self.spec.success_threshold
            else:
                self._failures, self._successes = self._failures + 1, 0
                flip = self.result and self._failures >= self.spec.failure_threshold
                # Readiness/startup start as failure; a failed first probe is not a change but is worth logging.
                if self._failures == 1:
                    log.info("%s: %s probe failed: %s", self.label, self.kind, msg)
            if flip:
                self.result = ok
                self.on_change(self)
            elif self.kind == "startup" and not ok and self._failures >= self.spec.failure_threshold:
                self.failed = True
                self.on_change(self)
                return
            if self.kind == "startup" and self.result:
                return  # kubelet stops the startup probe once it succeeded
            self._stop_evt.wait(max(0.0, self.spec.period - (time.monotonic() - t0)))


# ---------------------------------------------------------------------------------------------
# Pod worker
# ---------------------------------------------------------------------------------------------
@dataclass
class NodeEnv:
    """What every pod on this node shares; filled from the agent's command line."""

    node: str
    node_netns: str
    node_ip: str
    pod_cidr: str
    run_id: str
    state_dir: Path
    agnhost: str
    node_ips: list[str] = field(default_factory=list)
    """Every InternalIP, primary first (dual-stack); empty: just ``node_ip``."""
    pod_cidrs: list[str] = field(default_factory=list)
    """Every pod CIDR, primary first; empty: just ``pod_cidr``. A pod gets one address from each."""

    def __post_init__(self):
        self.state_dir = Path(self.state_dir)
        self.node_ips = list(self.node_ips or [self.node_ip])
        self.pod_cidrs = list(self.pod_cidrs or [self.pod_cidr])
        self.ipam = IPAM(self.state_dir, self.pod_cidrs[0])
        # The primary range keeps ipam.json (clusters made before dual-stack); the others get their own file.
        self.more_ipams = [IPAM(self.state_dir, c, f"ipam-{i}.json") for i, c in enumerate(self.pod_cidrs[1:], 2)]
        # pyroute2 forks a child for every netns creation; warm its libc handle here so those
        # children (forked from a threaded process) do not each run ctypes' find_library, which
        # spawns ldconfig.
        getattr(pr_netns, "_get_libc", lambda: None)()

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"


@dataclass
class ContainerState:
    spec: dict
    init: bool = False
    proc: ContainerProcess | None = None
    restart_count: int = 0
    started_at: str | None = None
    started_mono: float = 0.0
    finished_at: str | None = None
    exit_code: int | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: dict | None = None
    backoff: float = 0.0
    backoff_until: float = 0.0
    probers: dict = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    killing: bool = False
    ever_ran: bool = False
    container_id: str = ""

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def sidecar(self) -> bool:
        """A restartable init container: started in init order, kept running, stopped after the app."""
        return self.init and self.spec.get("restartPolicy") == "Always"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def terminated_dict(self) -> dict:
        return {"exitCode": self.exit_code, "reason": "Completed" if self.exit_code == 0 else "Error",
                "startedAt": self.started_at, "finishedAt": self.finished_at, "containerID": self.container_id}


class PodWorker:
    """Runs one pod through its life on this node.

    ``sink(pod, status)`` receives the kubelet-style ``status`` dict whenever it may have
    changed (the agent patches only real changes). ``on_finished(pod, deleted)`` is called
    once the pod has stopped for good: after a graceful deletion (``deleted`` True: the agent
    now deletes the API object with grace 0), or when a Never/OnFailure pod completed.
    """

    def __init__(self, pod: dict, env: NodeEnv, sink: Callable[[dict, dict], None],
                 on_finished: Callable[[dict, bool], None] | None = None,
                 recorder: Callable[[dict, str, str, str], None] | None = None):
        self.pod = pod
        self.env = env
        self.sink = sink
        self.on_finished = on_finished or (lambda pod, deleted: None)
        self.recorder = recorder or (lambda pod, etype, reason, message: None)
        """``recorder(pod, type, reason, message)`` turns lifecycle steps into Events (kubelet's wording)."""
        meta = pod["metadata"]
        self.uid = meta["uid"]
        self.key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.netns = env.node_netns if self.host_network else pod_netns_name(env.run_id, self.uid)
        self.veth = None if self.host_network else host_veth_name(self.uid)
        self.pod_ip = env.node_ip if self.host_network else None
        self.more_ips: list[str] = list(env.node_ips[1:]) if self.host_network else []
        """The pod's addresses of the other families (dual-stack), after ``pod_ip``."""
        self.hostname = env.node if self.host_network else pod_hostname(pod)
        status = pod.get("status") or {}
        self.start_time = status.get("startTime")
        self._transitions = {c["type"]: c for c in status.get("conditions") or []}
        self.init = [ContainerState(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [ContainerState(c) for c in pod["spec"].get("containers") or []]
        self.sandbox_ready = False
        self.init_done = not self.init
        self.init_failed = False
        self.terminating = False
        self.grace_deadline: float | None = None
        self.finished = False
        self.sandbox_error = ""
        self.reported_ip: str | None = None
        self.reported_more: list[str] = []
        self._sandbox_backoff = 0.0
        self._sandbox_retry_at = 0.0
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._detached = False
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)

    # ---- public -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def update(self, pod: dict) -> None:
        """A newer version of the pod from the API; a deletionTimestamp starts graceful termination."""
        with self._lock:
            self.pod = pod
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and not self.terminating:
                grace = meta.get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                self.begin_termination(float(grace))
        self._wake.set()

    def begin_termination(self, grace: float) -> None:
        with self._lock:
            if self.terminating:
                # A shorter grace (e.g. a second delete with --grace-period) shortens the deadline.
                self.grace_deadline = min(self.grace_deadline or 1e18, time.monotonic() + grace)
                return
            self.terminating = True
            self.grace_deadline = time.monotonic() + grace
            log.info("pod %s: terminating with grace %gs", self.key, grace)
        self._wake.set()  # the worker's next step stops the containers (app first, sidecars last)

    def kill_now(self) -> None:
        """The API object is gone (force delete): stop everything without grace."""
        self.begin_termination(0)

    def detach(self) -> None:
        """Agent shutdown: stop watching this pod but leave its processes and sandbox alone."""
        self._detached = True
        self._stop.set()
        self._wake.set()
        for c in self.init + self.containers:
            for p in c.probers.values():
                p.stop()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.finished

    @property
    def alive(self) -> bool:
        """False once the worker thread has ended (finished, detached, or crashed)."""
        return self._thread.is_alive() or not self._thread.ident

    # ---- main loop ----------------------------------------------------------------------
    def _run(self) -> None:
        last, last_at = None, 0.0
        try:
            self._prepare()
            while not self._stop.is_set():
                with self._lock:
                    self._step()
                    status = self.status()
                # The sink (the agent's status manager) dedups too; skipping unchanged statuses here
                # keeps an idle pod at a few dict compares per second.
                if status != last or self.finished or time.monotonic() - last_at > 10:
                    self.sink(self.pod, status)
                    last, last_at = status, time.monotonic()
                if self.finished:
                    break
                self._wake.wait(TICK)
                self._wake.clear()
        except Exception:  # noqa: BLE001 - a crashed worker must say why, then the agent resyncs it
            log.exception("pod %s: worker crashed", self.key)
            raise
        if self.finished and not self._detached:
            self.on_finished(self.pod, self.terminating)

    def _state_path(self) -> Path:
        return self.env.pods_dir / f"{self.uid}.json"

    def _save_state(self) -> None:
        data = {"uid": self.uid, "key": self.key, "netns": None if self.host_network else self.netns,
                "veth": self.veth, "podIP": self.pod_ip, "morePodIPs": self.more_ips, "hostNetwork": self.host_network,
                "containers": {c.name: {"pid": c.proc.pid if c.proc else None, "starttime": c.proc.starttime if c.proc else None,
                                        "running": c.running, "restartCount": c.restart_count, "startedAt": c.started_at,
                                        "exitCode": c.exit_code, "finishedAt": c.finished_at, "init": c.init}
                               for c in self.init + self.containers if c.ever_ran}}
        path = self._state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)

    def _prepare(self) -> None:
        """Set up (or adopt) the sandbox; adopt still-running containers of a previous agent."""
        if self.start_time is None:
            self.start_time = now_rfc3339()
        saved = None
        try:
            saved = json.loads(self._state_path().read_text())
        except (FileNotFoundError, ValueError):
            pass
        meta = self.pod["metadata"]
        if meta.get("deletionTimestamp") and saved is None:
            # Deleted before we ever ran it: nothing to stop, no sandbox to build.
            self.terminating, self.grace_deadline = True, time.monotonic()
        if self.host_network:
            self.sandbox_ready = True
        elif saved and saved.get("podIP") and netns_exists(self.netns):
            self.pod_ip = saved["podIP"]
            self.more_ips = list(saved.get("morePodIPs") or [])
            self.sandbox_ready = True
        elif not self.terminating:
            try:
                shown = [i.get("ip") for i in (self.pod.get("status") or {}).get("podIPs") or []]
                self.pod_ip = self.env.ipam.allocate(self.uid, prefer=(self.pod.get("status") or {}).get("podIP"))
                self.more_ips = [ipam.allocate(self.uid, prefer=shown[i] if i < len(shown) else None)
                                 for i, ipam in enumerate(self.env.more_ipams, 1)]
                setup_pod_network(self.env.node_netns, self.netns, self.veth, _peer_tmp_name(self.uid),
                                  self.pod_ip, self.env.ipam.gateway,
                                  [(ip, ipam.gateway) for ip, ipam in zip(self.more_ips, self.env.more_ipams)])
                self.sandbox_ready = True
            except Exception as exc:  # noqa: BLE001 - becomes the pod's waiting message; retried with back-off
                error = f"failed to create pod sandbox: {exc}"
                if error != self.sandbox_error:
                    log.warning("pod %s: %s", self.key, error)
                    self.recorder(self.pod, "Warning", "FailedCreatePodSandBox", error)
                self.sandbox_error = error
                self._sandbox_backoff = min(max(self._sandbox_backoff * 2, 1.0), 30.0)
                self._sandbox_retry_at = time.monotonic() + self._sandbox_backoff
            else:
                self.sandbox_error = ""
        if saved and self.sandbox_ready:
            api = {st.get("name"): st for st in (self.pod.get("status") or {}).get("containerStatuses") or []}
            for c in self.init + self.containers:
                info = (saved.get("containers") or {}).get(c.name)
                if not info:
                    continue
                c.restart_count, c.started_at, c.ever_ran = info.get("restartCount", 0), info.get("startedAt"), True
                c.started_mono = time.monotonic() - _age_seconds(c.started_at)
                c.container_id = self._container_id(c)
                proc = ContainerProcess.adopt(info["pid"], info["starttime"]) if info.get("running") and info.get("pid") else None
                if proc is not None:
                    c.proc = proc
                    self._start_probers(c, adopted=api.get(c.name) or {})
                    log.info("pod %s: adopted container %s (pid %d)", self.key, c.name, proc.pid)
                else:
                    # It exited before the agent stopped, or while it was down (exit code unknown: 137,
                    # like kubelet's ContainerStatusUnknown); the restart policy decides what follows.
                    c.exit_code = 137 if info.get("running") else info.get("exitCode")
                    c.finished_at = info.get("finishedAt") or now_rfc3339()
            # Init containers of a pod whose main containers already ran are done.
            if any(c.ever_ran for c in self.containers):
                self.init_done = True
                for c in self.init:
                    if not c.sidecar:
                        c.exit_code, c.ever_ran = 0, True
        self._save_state()
        if meta.get("deletionTimestamp") and not self.terminating:
            self.update(self.pod)  # an adopted pod that was deleted while the agent was down

    def _step(self) -> None:
        # Reap exits first: everything below depends on who is still running.
        for c in self.init + self.containers:
            if c.proc is not None and c.exit_code is None and c.proc.poll() is not None:
                self._on_exit(c)
        if self.terminating:
            self._step_terminating()
            return
        if not self.sandbox_ready:
            if self.sandbox_error and time.monotonic() >= self._sandbox_retry_at:
                self._prepare()
            return
        if not self.init_done:
            self._step_init()
            if not self.init_done:
                return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        sidecars = [c for c in self.init if c.sidecar]
        app_done = policy != "Always" and all(
            c.exit_code is not None and not self._should_restart(c, policy) for c in self.containers)
        for c in self.containers:
            if c.running or c.killing:
                continue
            if c.proc is None and not c.ever_ran:
                self._start_container(c)
            elif c.exit_code is not None and self._should_restart(c, policy):
                self._restart_with_backoff(c)
        for c in sidecars:
            # Sidecars restart whatever the pod's policy, until the app containers are done.
            if not app_done and not c.running and not c.killing and c.exit_code is not None:
                self._restart_with_backoff(c)
        # Never/OnFailure pods whose containers are all done: stop the sidecars, then the pod is
        # terminal and its sandbox goes.
        if app_done:
            live = [c for c in sidecars if c.running]
            for c in live:
                if not c.killing:
                    self._kill_async(c, self._grace(), reason="pod completed")
            if not live:
                self._teardown()
                self.finished = True

    def _step_init(self) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for c in self.init:
            if c.sidecar:
                # The next init container starts once this sidecar has started (startup probe passed).
                if c.running and c.started:
                    continue
                if c.running or c.killing:
                    return
                if c.proc is None and not c.ever_ran:
                    self._start_container(c)
                elif c.exit_code is not None:
                    self._restart_with_backoff(c)
                return
            if c.exit_code == 0 and not c.running:
                continue
            if c.running or c.killing:
                return
            if c.proc is None and not c.ever_ran:
                self._start_container(c)
                return
            if c.exit_code not in (None, 0):
                if policy == "Never":
                    self.init_failed = True
                    self._teardown()
                    self.finished = True
                else:
                    self._restart_with_backoff(c)
                return
        self.init_done = True

    def _step_terminating(self) -> None:
        now = time.monotonic()
        # App containers first; sidecars only once nothing else runs (kubelet stops them last).
        others = [c for c in self.init + self.containers if not c.sidecar]
        for c in others + ([c for c in self.init if c.sidecar] if not any(c.running for c in others) else []):
            if c.running and not c.killing:
                self._kill_async(c, max(0.0, (self.grace_deadline or now) - now), reason="pod deletion")
        if not any(c.running for c in self.init + self.containers):
            for c in self.init + self.containers:
                c.ready = False
                for p in c.probers.values():
                    p.stop()
            self._teardown()
            self.finished = True

    # ---- containers ---------------------------------------------------------------------
    def _container_id(self, c: ContainerState) -> str:
        return f"proxysuite://{uid_hex(self.uid)[:12]}-{c.name}-{c.restart_count}"

    def _ctx(self, c: ContainerState) -> HandlerContext:
        return HandlerContext(self.env.node_netns, self.pod_ip or "", c.spec,
                              c.proc.pid if c.running else None, self._env_for(c), self.env.agnhost)

    def _env_for(self, c: ContainerState) -> dict:
        ips = ",".join([self.pod_ip, *self.more_ips]) if self.pod_ip else ""
        return container_env(self.pod, c.spec, ips, ",".join(self.env.node_ips), self.env.run_id, self.hostname)

    def _start_container(self, c: ContainerState) -> None:
        env = self._env_for(c)
        try:
            argv = resolve_argv(c.spec, self.env.agnhost, env)
        except CannotRunImage as exc:
            if c.waiting_reason != CANNOT_RUN_REASON:
                self.recorder(self.pod, "Warning", "Failed", str(exc))
            c.waiting_reason, c.waiting_message = CANNOT_RUN_REASON, str(exc)
            c.ever_ran = False
            c.proc = None
            if c.exit_code is None:
                c.exit_code = None
            return
        meta = self.pod["metadata"]
        log_path = container_log_path(self.env, meta.get("namespace", "default"), meta["name"], c.name)
        cwd = c.spec.get("workingDir") if c.spec.get("workingDir") and os.path.isdir(c.spec["workingDir"]) else "/"
        try:
            c.proc = ContainerProcess.start(argv, env, self.netns, self.hostname, log_path, cwd=cwd)
        except OSError as exc:
            c.waiting_reason, c.waiting_message = "CreateContainerError", str(exc)
            return
        c.exit_code = None
        c.started_at, c.started_mono, c.finished_at = now_rfc3339(), time.monotonic(), None
        c.ever_ran, c.ready, c.started, c.killing = True, False, False, False
        c.waiting_reason = c.waiting_message = ""
        c.container_id = self._container_id(c)
        log.info("pod %s: started container %s (pid %d): %s", self.key, c.name, c.proc.pid, _argv_for_log(argv))
        self.recorder(self.pod, "Normal", "Started", f"Started container {c.name}")
        self._save_state()
        self._start_probers(c)
        post_start = ((c.spec.get("lifecycle") or {}).get("postStart"))
        if post_start:
            # In a thread: a slow hook must not hold the pod lock (the watch thread needs it).
            ctx, proc = self._ctx(c), c.proc

            def hook():
                ok, msg = run_handler(post_start, ctx, 30)
                if not ok:
                    # Kubelet kills a container whose postStart hook failed.
                    log.warning("pod %s: postStart of %s failed: %s", self.key, c.name, msg)
                    with self._lock:
                        if c.proc is proc and c.running and not c.killing:
                            self._kill_async(c, self._grace(), reason="postStart failed", run_prestop=False)

            threading.Thread(target=hook, name=f"poststart-{self.key}-{c.name}", daemon=True).start()

    def _start_probers(self, c: ContainerState, adopted: dict | None = None) -> None:
        """Start the container's probers; ``adopted`` is its API status when a restarted agent adopts it.

        Like kubelet after a restart, an adopted container keeps its reported readiness and
        startedness until a probe says otherwise, so an agent restart does not flap endpoints.
        """
        for p in c.probers.values():
            p.stop()
        c.probers = {}
        if c.init and not c.sidecar:
            c.started = True
            return
        for kind in ("startup", "liveness", "readiness"):
            spec = c.spec.get(f"{kind}Probe")
            if spec and not (kind == "startup" and adopted and adopted.get("started")):
                c.probers[kind] = Prober(kind, ProbeSpec.parse(spec), lambda c=c: self._ctx(c), c.started_mono,
                                         lambda p, c=c: self._on_probe(c, p), label=f"{self.key}/{c.name}")
        if adopted and "readiness" in c.probers:
            c.probers["readiness"].result = bool(adopted.get("ready"))
        if "startup" in c.probers:
            c.started, c.ready = False, False
            c.probers["startup"].start()
        else:
            self._on_started(c)

    def _on_started(self, c: ContainerState) -> None:
        c.started = True
        for kind in ("liveness", "readiness"):
            if kind in c.probers and not c.probers[kind].is_alive():
                # initialDelaySeconds counts from the container's start, as in kubelet's prober worker.
                c.probers[kind].start()
        c.ready = c.probers["readiness"].result if "readiness" in c.probers else True

    def _on_probe(self, c: ContainerState, p: Prober) -> None:
        with self._lock:
            if p is not c.probers.get(p.kind):
                return  # a prober of an older instance of the container
            if p.kind == "startup" and p.result:
                self._on_started(c)
            elif p.kind == "startup" and p.failed and c.running and not c.killing and not self.terminating:
                log.info("pod %s: container %s failed startup probe, will be restarted: %s", self.key, c.name, p.last_message)
                self.recorder(self.pod, "Warning", "Unhealthy", f"Startup probe failed: {p.last_message}")
                grace = p.spec.termination_grace if p.spec.termination_grace is not None else self._grace()
                self._kill_async(c, float(grace), reason="startup probe failed")
            elif p.kind == "readiness":
                c.ready = p.result
                log.info("pod %s: container %s readiness → %s %s", self.key, c.name, p.result, p.last_message)
                if not p.result:
                    self.recorder(self.pod, "Warning", "Unhealthy", f"Readiness probe failed: {p.last_message}")
            elif p.kind == "liveness" and not p.result and c.running and not c.killing and not self.terminating:
                log.info("pod %s: container %s failed liveness probe, will be restarted: %s", self.key, c.name, p.last_message)
                self.recorder(self.pod, "Warning", "Unhealthy", f"Liveness probe failed: {p.last_message}")
                grace = p.spec.termination_grace if p.spec.termination_grace is not None else self._grace()
                self._kill_async(c, float(grace), reason="liveness probe failed")
        self._wake.set()

    def _grace(self) -> float:
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    def _kill_async(self, c: ContainerState, grace: float, reason: str, run_prestop: bool = True) -> None:
        """preStop (if any and asked), SIGTERM, wait out ``grace``, SIGKILL — in a thread, like kubelet's killContainer."""
        c.killing = True
        self.recorder(self.pod, "Normal", "Killing", f"Stopping container {c.name} ({reason})")
        proc = c.proc
        ctx = self._ctx(c)

        def deadline_now(own: float) -> float:
            # A later, shorter deletion (or a force delete) cuts an ongoing grace period short.
            return min(own, self.grace_deadline) if self.terminating and self.grace_deadline is not None else own

        def kill():
            deadline = time.monotonic() + grace
            pre_stop = (c.spec.get("lifecycle") or {}).get("preStop")
            if run_prestop and pre_stop and grace > 0:
                ok, msg = run_handler(pre_stop, ctx, grace)
                if not ok:
                    log.warning("pod %s: preStop of %s failed: %s", self.key, c.name, msg)
                # If preStop used the whole grace period, SIGTERM still gets a short grace.
                deadline = max(deadline, time.monotonic() + MIN_GRACE_AFTER_PRESTOP)
            if deadline_now(deadline) > time.monotonic():
                proc.signal(signal.SIGTERM)
                while proc.poll() is None and time.monotonic() < deadline_now(deadline):
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.signal(signal.SIGKILL)
                proc.wait(10)
            log.info("pod %s: container %s stopped (%s), exit code %s", self.key, c.name, reason, proc.returncode)
            self._wake.set()

        if proc is None:
            return
        threading.Thread(target=kill, name=f"kill-{self.key}-{c.name}", daemon=True).start()

    def _on_exit(self, c: ContainerState) -> None:
        c.exit_code = c.proc.returncode
        c.finished_at = now_rfc3339()
        c.killing = False
        c.ready = False
        if not self.terminating:
            for p in c.probers.values():
                p.stop()
        # During termination the readiness prober keeps running until the pod is gone (it fails now).
        log.info("pod %s: container %s exited with %s", self.key, c.name, c.exit_code)
        self._save_state()

    def _should_restart(self, c: ContainerState, policy: str) -> bool:
        if c.waiting_reason == CANNOT_RUN_REASON:
            return False
        return policy == "Always" or (policy == "OnFailure" and c.exit_code not in (0, None))

    def _restart_with_backoff(self, c: ContainerState) -> None:
        now = time.monotonic()
        if c.backoff_until == 0.0 and c.waiting_reason != "CrashLoopBackOff":
            # Kubelet: the first restart is immediate; each later one waits 10s, 20s, … 300s.
            ran_for = now - c.started_mono
            if c.backoff and ran_for > BACKOFF_RESET_AFTER:
                c.backoff = 0.0
            if c.backoff:
                c.backoff_until = now + c.backoff
                c.waiting_reason = "CrashLoopBackOff"
                self.recorder(self.pod, "Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod {self.pod['metadata']['name']}")
                c.waiting_message = f"back-off {c.backoff:g}s restarting failed container={c.name} pod={self.pod['metadata']['name']}"
                c.last_terminated = c.terminated_dict()
                return
        if now < c.backoff_until:
            return
        c.last_terminated = c.terminated_dict()
        c.backoff = BACKOFF_INITIAL if not c.backoff else min(c.backoff * 2, BACKOFF_MAX)
        c.backoff_until = 0.0
        c.restart_count += 1
        c.proc = None
        self._start_container(c)

    def _teardown(self) -> None:
        if not self.host_network:
            teardown_pod_network(self.env.node_netns, self.netns, self.veth)
            self.env.ipam.release(self.uid)
            for ipam in self.env.more_ipams:
                ipam.release(self.uid)
        else:
            for c in self.init + self.containers:
                if c.running:
                    c.proc.signal(signal.SIGKILL)
        self.sandbox_ready = False
        try:
            self._state_path().unlink()
        except FileNotFoundError:
            pass

    # ---- status -------------------------------------------------------------------------
    def _container_status(self, c: ContainerState) -> dict:
        ready = bool(c.ready and c.running)
        if c.init and not c.sidecar:
            ready = not c.running and c.exit_code == 0  # kubelet: a completed init container is ready
        st: dict = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "",
                    "ready": ready, "restartCount": c.restart_count,
                    "started": bool(c.started and c.running)}
        if c.container_id:
            st["containerID"] = c.container_id
        # Explicit nulls: the agent sends a strategic merge patch, and state is a one-of.
        if c.running:
            st["state"] = {"running": {"startedAt": c.started_at}, "waiting": None, "terminated": None}
        elif c.exit_code is not None and c.waiting_reason != "CrashLoopBackOff":
            st["state"] = {"terminated": c.terminated_dict(), "waiting": None, "running": None}
        else:
            reason = c.waiting_reason or "ContainerCreating"
            if self.sandbox_error:
                reason = "ContainerCreating"
            if not c.init and not self.init_done and reason == "ContainerCreating":
                reason = "PodInitializing"
            waiting = {"reason": reason}
            msg = c.waiting_message or self.sandbox_error
            if msg:
                waiting["message"] = msg
            st["state"] = {"waiting": waiting, "running": None, "terminated": None}
        st["lastState"] = {"terminated": c.last_terminated} if c.last_terminated else {"terminated": None}
        return st

    def _phase(self, statuses: list[dict]) -> str:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if self.init_failed:
            return "Failed"
        pod_terminal = self.finished and self.terminating
        if not self.init_done and not pod_terminal:
            return "Pending"
        running = stopped = succeeded = waiting = 0
        for st in statuses:
            state = st["state"]
            if state.get("running"):
                running += 1
            elif state.get("terminated"):
                stopped += 1
                succeeded += state["terminated"]["exitCode"] == 0
            elif (st.get("lastState") or {}).get("terminated"):
                stopped += 1
            else:
                waiting += 1
        if self.finished and self.terminating:
            # Kubelet moves a deleted pod to a terminal phase before it deletes the object.
            return "Succeeded" if stopped and stopped == succeeded and not waiting else "Failed"
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if stopped:
            if policy == "Always":
                return "Running"
            if stopped == succeeded:
                return "Succeeded"
            return "Failed" if policy == "Never" else "Running"
        return "Pending"

    def _condition(self, ctype: str, ok: bool, reason: str = "", message: str = "") -> dict:
        value = "True" if ok else "False"
        prev = self._transitions.get(ctype)
        ltt = prev["lastTransitionTime"] if prev and prev.get("status") == value and prev.get("lastTransitionTime") else now_rfc3339()
        cond = {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": ltt,
                "reason": reason or None, "message": message or None}
        self._transitions[ctype] = cond
        return cond

    def status(self) -> dict:
        """The pod's status as kubelet would report it (a dict for a strategic merge patch)."""
        with self._lock:
            init_statuses = [self._container_status(c) for c in self.init]
            statuses = [self._container_status(c) for c in self.containers]
            phase = self._phase(statuses)
            terminal = phase in ("Succeeded", "Failed")
            # Sidecars count for readiness like app containers.
            not_ready = [c.name for c, st in zip(self.init + self.containers, init_statuses + statuses)
                         if (c.sidecar or not c.init) and not st["ready"]]
            containers_ready = not not_ready
            gates = [g["conditionType"] for g in self.pod["spec"].get("readinessGates") or []]
            api_conds = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
            gates_ok = all((api_conds.get(g) or {}).get("status") == "True" for g in gates)
            if terminal:
                cr_reason = ready_reason = "PodCompleted"
                cr_msg = ready_msg = ""
            else:
                cr_reason = ready_reason = "" if containers_ready else "ContainersNotReady"
                cr_msg = ready_msg = "" if containers_ready else f"containers with unready status: [{' '.join(not_ready)}]"
                if containers_ready and not gates_ok:
                    ready_reason, ready_msg = "ReadinessGatesNotReady", "the status of pod readiness gate is not \"True\""
            init_pending = [c.name for c in self.init if (not c.started if c.sidecar else c.exit_code != 0)]
            conditions = [
                self._condition("PodReadyToStartContainers", self.sandbox_ready),
                self._condition("Initialized", self.init_done and not self.init_failed,
                                "" if self.init_done else "ContainersNotInitialized",
                                "" if self.init_done else f"containers with incomplete status: [{' '.join(init_pending)}]"),
                self._condition("ContainersReady", containers_ready and not terminal, cr_reason, cr_msg),
                self._condition("Ready", containers_ready and gates_ok and not terminal, ready_reason, ready_msg),
            ]
            if "PodScheduled" in api_conds:
                conditions.insert(0, api_conds["PodScheduled"])
            status = {"phase": phase, "hostIP": self.env.node_ip,
                      "hostIPs": [{"$patch": "replace"}, *({"ip": ip} for ip in self.env.node_ips)],
                      "startTime": self.start_time, "conditions": conditions, "containerStatuses": statuses}
            if init_statuses:
                status["initContainerStatuses"] = init_statuses
            if self.sandbox_ready and self.pod_ip:
                # kept after teardown, like kubelet keeps a finished pod's IP
                self.reported_ip, self.reported_more = self.pod_ip, list(self.more_ips)
            if self.reported_ip:
                status["podIP"] = self.reported_ip
                # "$patch: replace": a strategic merge would otherwise add to the API's list (merge key ip).
                status["podIPs"] = [{"$patch": "replace"}, {"ip": self.reported_ip}, *({"ip": ip} for ip in self.reported_more)]
            return status


LOG_MARKER = b"--- "
"""Each container start appends ``--- <time> start: <argv>`` to the log; the sections are the instances."""


def container_log_path(env: NodeEnv, namespace: str, pod: str, container: str) -> Path:
    return env.pods_dir / f"{namespace}_{pod}_{container}.log"


def read_container_log(path: Path, previous: bool = False, tail_lines: int | None = None,
                       limit_bytes: int | None = None) -> bytes:
    """What ``kubectl logs`` shows: the current (or ``previous``) instance's output, without our markers."""
    data = path.read_bytes()
    sections: list[list[bytes]] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(LOG_MARKER) and b" start: " in line:
            sections.append([])
        elif sections:
            sections[-1].append(line)
    if previous:
        if len(sections) < 2:
            raise FileNotFoundError(f"no previous instance in {path}")
        lines = sections[-2]
    else:
        lines = sections[-1] if sections else []
    if tail_lines is not None:
        lines = lines[-tail_lines:] if tail_lines > 0 else []
    out = b"".join(lines)
    return out[:limit_bytes] if limit_bytes is not None else out


def reconcile_node(env: NodeEnv, live_uids: set[str]) -> list[str]:
    """Remove what pods that are no longer live left on this node; return what was done.

    Run by the agent at start and on every re-list: a pod deleted while the agent was down still
    has its netns, veth, IP allocation, state file and maybe processes. Only this node's leftovers
    are touched: a pod netns counts as ours if our IPAM knows its UID or its veth is in our node netns.
    """
    done: list[str] = []
    live_hex = {uid_hex(u) for u in live_uids}
    prefix = f"ps-{env.run_id}-pod-"
    allocations = env.ipam.allocations()
    for ns in sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []:
        if not ns.startswith(prefix):
            continue
        short = ns[len(prefix):]
        if any(h.startswith(short) for h in live_hex):
            continue
        veth = "v" + short[:10]
        if not any(uid_hex(u).startswith(short) for u in allocations) and not _has_link(env.node_netns, veth):
            continue  # another node's pod (all nodes of a run share the netns prefix)
        log.info("removing orphaned pod sandbox %s", ns)
        teardown_pod_network(env.node_netns, ns, veth)
        done.append(f"netns {ns}")
    for uid in allocations:
        if uid not in live_uids:
            env.ipam.release(uid)
            done.append(f"ip {allocations[uid]}")
    for ipam in env.more_ipams:
        for uid, ip in ipam.allocations().items():
            if uid not in live_uids:
                ipam.release(uid)
                done.append(f"ip {ip}")
    for path in sorted(env.pods_dir.glob("*.json")) if env.pods_dir.is_dir() else []:
        if path.stem in live_uids:
            continue
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        # hostNetwork pods have no netns to delete: their processes are found through the state file.
        for info in (saved.get("containers") or {}).values():
            if not (info.get("running") and info.get("pid")):
                continue
            proc = ContainerProcess.adopt(info["pid"], info["starttime"])
            if proc is not None:
                log.info("killing orphaned container process %d of deleted pod %s", proc.pid, saved.get("key"))
                proc.signal(signal.SIGKILL)
                done.append(f"pid {proc.pid}")
        path.unlink(missing_ok=True)
        done.append(f"state {path.name}")
    return done


def _has_link(netns: str, ifname: str) -> bool:
    try:
        with IPRoute(netns=netns, flags=0) as ipr:
            return bool(ipr.link_lookup(ifname=ifname))
    except Exception:  # noqa: BLE001 - no netns, no link
        return False


def strip_nulls(obj):
    """A status as the API will show it: without explicit nulls and patch directives (for comparing and tests)."""
    if isinstance(obj, dict):
        return {k: strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [strip_nulls(v) for v in obj if not (isinstance(v, dict) and "$patch" in v)]
    return obj

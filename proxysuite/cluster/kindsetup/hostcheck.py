"""Snapshots of what nothing the suite starts may change on the machine: kernel settings, root-namespace
addresses, routes and firewall. Taken before and after an engine's or a cluster's life and compared.

A privileged kind node can write machine-wide sysctls (``kernel.*``, ``vm.*``, ``fs.*`` are not per network
namespace): kubelet sets ``vm.overcommit_memory``, ``kernel.panic``, ``kernel.panic_on_oops``, and a node's
``systemd-sysctl`` would apply its distribution's ``fs.protected_*`` values.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

VOLATILE = re.compile(
    r"^(fs\.(dentry-state|file-nr|inode-nr|inode-state|aio-nr|quota\.)|kernel\.(random\.|ns_last_pid|pty\.nr)"
    r"|net\.netfilter\.nf_conntrack_count|vm\.nr_|net\.ipv4\.tcp_mem|net\.ipv4\.udp_mem)")
"""Counters and random values that change by themselves."""

WATCHED = ("kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "fs.protected_regular",
           "fs.protected_fifos", "fs.protected_hardlinks", "fs.protected_symlinks", "fs.file-max", "fs.nr_open",
           "kernel.unprivileged_bpf_disabled", "kernel.timer_migration")
"""The settings kubelet, a node's systemd (fs.file-max, fs.nr_open), its systemd-sysctl or the Cilium agent
(kernel.unprivileged_bpf_disabled, kernel.timer_migration) are known to write."""


def sysctls() -> dict[str, str]:
    """Every readable kernel setting of the calling namespace, minus counters (``sysctl -a``)."""
    out = subprocess.run(["sysctl", "-a"], capture_output=True, text=True).stdout
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and not VOLATILE.match(key):
            values[key] = " ".join(value.split())
    return values


def _cmd(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else f"<{' '.join(argv)} failed: {proc.stderr.strip()}>"


@dataclass(frozen=True)
class HostSnapshot:
    sysctls: dict[str, str]
    addresses: str
    routes: str
    links: str
    firewall: str
    bpf: str = ""
    """BPF programs and links loaded in the kernel, tc/XDP attachments of the root namespace, and bpf/cgroup2
    mounts of the machine's mount namespace: what a Cilium agent on a node could leave behind."""

    @classmethod
    def take(cls) -> "HostSnapshot":
        fw = "\n".join(ln for ln in (_cmd("iptables-save") + _cmd("ip6tables-save")).splitlines()
                       if not ln.startswith("#") and not ln.startswith(":"))
        return cls(sysctls=sysctls(), addresses=_cmd("ip", "-br", "addr"), routes=_cmd("ip", "route", "show", "table", "all"),
                   links=_cmd("ip", "-br", "link"), firewall=fw + _cmd("nft", "list", "ruleset"), bpf=bpf_state())

    def changes(self, after: "HostSnapshot", *, inside: tuple[str, ...] = ()) -> list[str]:
        """What differs, one line each (empty when the machine is as it was).

        ``inside`` names running containers (ids) whose own BPF programs are not a change of the machine: a kind
        node's systemd attaches ``sd_fw_*`` programs to its journald cgroup (``IPAddressDeny=``), and they go
        with the container. A program counts as the container's only when every cgroup it is attached to lies
        under that container's cgroup; anything else it loads (tc, XDP, a cgroup outside) is still reported."""
        out = [f"sysctl {k}: {self.sysctls.get(k)!r} -> {after.sysctls.get(k)!r}"
               for k in sorted(set(self.sysctls) | set(after.sysctls)) if self.sysctls.get(k) != after.sysctls.get(k)]
        for name in ("addresses", "routes", "links", "firewall"):
            if getattr(self, name) != getattr(after, name):
                out.append(f"root namespace {name} changed")
        if self.bpf != after.bpf:
            gone, new = set(self.bpf.splitlines()), set(after.bpf.splitlines())
            out += [f"bpf: + {line}" for line in sorted(new - gone) if not _in_containers(line, inside)] + [f"bpf: - {line}" for line in sorted(gone - new)]
        return out


def put_back_sysctls(before: HostSnapshot, changes: list[str]) -> None:
    """Write back every kernel setting :meth:`HostSnapshot.changes` reports changed, so a failing test leaves the
    machine as it found it."""
    for line in changes:
        if line.startswith("sysctl "):
            key = line.split()[1].rstrip(":")
            if key in before.sysctls:
                subprocess.run(["sysctl", "-q", "-w", f"{key}={before.sysctls[key]}"], capture_output=True)


def _in_containers(line: str, ids: tuple[str, ...]) -> bool:
    paths = line.split(" @")[1:]
    return bool(ids and paths) and all(any(f"/{cid}/" in f"{p}/" for cid in ids) for p in paths)


def bpf_state() -> str:
    """One line per BPF program and link in the kernel (ids are never reused, so a leftover shows as a new line),
    per tc/XDP/flow-dissector attachment in the root network namespace, and per bpf or cgroup2 mount of the
    machine's mount namespace. Needs ``bpftool`` (Debian: bpftool); says so in the snapshot without it."""
    import json
    import shutil

    def listing(*argv: str) -> list:
        try:
            items = json.loads(_cmd("bpftool", "-j", *argv) or "[]")
        except ValueError:
            items = []
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    lines = []
    if shutil.which("bpftool"):
        attached: dict[int, list[str]] = {}
        for group in listing("cgroup", "tree"):
            for prog in group.get("programs", []):
                attached.setdefault(prog.get("id"), []).append(str(group.get("cgroup", "")).replace(" ", "_"))
        for kind in ("prog", "link"):
            for i in listing(kind, "show"):
                where = "".join(f" @{p}" for p in sorted(attached.get(i.get("id"), []))) if kind == "prog" else ""
                lines.append(f"{kind} {i.get('id')} {i.get('type')} {i.get('name', '')}".rstrip() + where)
        lines += [f"net {ln.strip()}" for ln in _cmd("bpftool", "net", "show").splitlines() if ln.strip()]
    else:
        lines.append("<bpftool missing: BPF programs not checked>")
    with open("/proc/1/mountinfo") as fh:
        for ln in fh:
            fields = ln.split(" - ")
            if len(fields) == 2 and fields[1].split()[0] in ("bpf", "cgroup2"):
                lines.append(f"mount {fields[0].split()[4]} {fields[1].split()[0]}")
    return "\n".join(lines)

"""Debian root filesystems made with ``debootstrap``, cached by content (suite, mirror, package list).

Maintainer scripts run in a chroot share the machine's kernel: an init script started during the install
(procps' applies ``/usr/lib/sysctl.d``, e.g. ``fs.protected_regular=2``) would change the machine's own
settings. So the first stage only unpacks (``--foreign``), a ``policy-rc.d`` that refuses every service start
goes into the target, and only then does the second stage configure the packages. The machine's watched
sysctls are compared before and after; a change is undone at once and reported as an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from ...config import default_cache_root
from ...errors import SuiteError
from . import hostcheck

Progress = Callable[[str], None]
SUITE = "bookworm"

NODE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "containerd", "runc", "containernetworking-plugins", "iptables", "nftables",
    "iproute2", "kmod", "conntrack", "ethtool", "socat", "util-linux", "mount", "ca-certificates", "procps",
    "libseccomp2", "pigz", "ebtables", "fuse-overlayfs", "bash", "curl", "rsync", "libsystemd0", "jq", "ipset",
)
"""What kind's base image installs, with Debian's containerd/runc/CNI plugins in place of kind's own builds."""

PROXY_PACKAGES = ("iptables", "nftables", "conntrack", "ipset", "kmod", "iproute2")
"""kube-proxy's image: the rule tools each proxy mode runs."""

CILIUM_PACKAGES = ("bash", "util-linux", "iproute2", "iptables", "ipset", "kmod", "ca-certificates", "jq",
                   "containernetworking-plugins", "clang-19", "llvm-19")
"""The Cilium agent image (Cilium's images/runtime: iproute2, iptables, ipset, kmod, ca-certificates; clang and
llc 19.1.7, which bookworm's clang-19/llvm-19 are; nsenter for the init containers; the loopback CNI plugin)."""
CLIENT_PACKAGES = ("python3", "iproute2", "procps")
"""The suite's client pods and external client: the probe engine needs python3 (stdlib only)."""


def debian_mirror() -> str:
    """The first Debian mirror apt uses on this machine (deb822 ``.sources`` or ``sources.list``)."""
    env = os.environ.get("PROXYSUITE_DEBIAN_MIRROR")
    if env:
        return env
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
    raise SuiteError("no Debian mirror found in /etc/apt/sources.list(.d)", "set PROXYSUITE_DEBIAN_MIRROR to your Debian mirror's URL")


def cache_key(packages: tuple[str, ...], mirror: str) -> str:
    return hashlib.sha256(f"{SUITE}\n{mirror}\n{' '.join(sorted(packages))}".encode()).hexdigest()[:12]


def _watched() -> dict[str, str]:
    values = hostcheck.sysctls()
    return {k: values.get(k, "") for k in hostcheck.WATCHED}


def _undo(before: dict[str, str], progress: Progress) -> list[str]:
    after = _watched()
    changed = [k for k in before if before[k] != after[k]]
    for k in changed:
        subprocess.run(["sysctl", "-q", "-w", f"{k}={before[k]}"], capture_output=True)
        progress(f"restored the machine's {k}={before[k]} (was changed to {after[k]})")
    return changed


def ensure_debootstrap(progress: Progress) -> None:
    """Root and debootstrap (installed from Debian when missing), checked before any long build starts."""
    if os.geteuid() != 0:
        raise SuiteError("debootstrap needs root", "run proxysuite kind build-node-image as root")
    if not shutil.which("debootstrap"):
        from .engine import apt_install

        apt_install(["debootstrap"], "Debian's debootstrap (the node image's rootfs)", progress,
                    missing=("debootstrap is not installed", "apt-get install debootstrap"))


def build(name: str, packages: tuple[str, ...], progress: Progress) -> Path:
    """A tarball of a bookworm rootfs with ``packages``, built once per content key; returns its path."""
    ensure_debootstrap(progress)
    mirror = debian_mirror()
    key = cache_key(packages, mirror)
    out = default_cache_root() / "kind-node" / f"rootfs-{name}-{key}.tar"
    if out.exists():
        return out
    work = out.with_suffix(".d")
    done = work / ".proxysuite-configured"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not done.exists():
        if work.exists():
            _unmount_below(work)
            shutil.rmtree(work)
        before = _watched()
        progress(f"debootstrap {SUITE} ({name}: {len(packages)} packages) from {mirror}, stage 1 of 2 (download, unpack) ...")
        try:
            _run(["nice", "-n", "10", "debootstrap", "--foreign", "--variant=minbase", f"--include={','.join(packages)}",
                  SUITE, str(work), mirror], "debootstrap (stage 1)")
            policy = work / "usr/sbin/policy-rc.d"
            policy.write_text("#!/bin/sh\n# proxysuite: no service may start while the image is made\nexit 101\n")
            policy.chmod(0o755)
            progress(f"debootstrap stage 2 of 2 (configure) after {time.monotonic() - started:.0f}s ...")
            _run(["nice", "-n", "10", "chroot", str(work), "/debootstrap/debootstrap", "--second-stage"], "debootstrap (stage 2)")
        finally:
            _unmount_below(work)
            changed = _undo(before, progress)
        if changed:
            shutil.rmtree(work, ignore_errors=True)
            raise SuiteError(f"building the {name} rootfs changed the machine's {', '.join(changed)} (restored)",
                             "report this: a package script ran a service despite policy-rc.d")
        done.touch()
    # The second stage may have replaced it; either way the image must not keep refusing service starts.
    (work / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    done.unlink()
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (work / junk).glob("*"):
            if f.is_file():
                f.unlink()
    progress(f"packing the {name} rootfs ...")
    tmp = out.with_suffix(".tmp")
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(work), "-cf", str(tmp), "."], "tar")
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    progress(f"{name} rootfs ready in {time.monotonic() - started:.0f}s: {out} ({out.stat().st_size >> 20} MiB)")
    return out


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise SuiteError(f"{what} failed:\n{tail}", "check that apt can reach the Debian mirror and there is free disk space")


def _unmount_below(path: Path) -> None:
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh if line.split()[1].startswith(str(path) + "/")]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)

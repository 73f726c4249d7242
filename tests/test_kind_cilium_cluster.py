"""Cilium's kube-proxy replacement on a real kind cluster, from the offline build: it comes up with
KubeProxyReplacement True, its BPF programs are seen in the kernel while it runs, and after ``cluster down``
nothing it attached is left (BPF programs and links, tc/XDP on the machine's interfaces, bpffs and cgroup2
mounts), nor any change to the machine's kernel settings, addresses, routes or firewall.

Heavy (the Cilium build, ~11 min cold, then a 3-node cluster): opt in with ``PROXYSUITE_TEST_KIND_CILIUM=1``
and run under the shared lock, e.g.
``PROXYSUITE_TEST_KIND_CILIUM=1 flock /tmp/ps-live.lock pytest tests/test_kind_cilium_cluster.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from proxysuite.cluster import kind
from proxysuite.cluster.kindsetup import engine, hostcheck
from proxysuite.config import SuiteConfig

pytestmark = pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_CILIUM") != "1",
                                reason="builds Cilium and runs it on a kind cluster: opt in with PROXYSUITE_TEST_KIND_CILIUM=1")


def test_cilium_runs_as_kube_proxy_replacement_and_leaves_nothing_attached(monkeypatch):
    if not shutil.which("bpftool"):
        engine.apt_install(["bpftool"], "bpftool (to list BPF programs)", print,
                           ("bpftool is missing", "install it (Debian: apt-get install bpftool)"))
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", os.environ.get("PROXYSUITE_STATE_DIR", "/var/lib/proxysuite"))
    monkeypatch.delenv(kind.CILIUM_SOURCE_ENV, raising=False)
    eng = engine.setup(print)
    monkeypatch.setenv("DOCKER_HOST", eng.docker_host)
    engine.adopt()
    before = hostcheck.HostSnapshot.take()
    cfg = SuiteConfig.from_mapping({"provider": "kind", "mode": "cilium", "cluster-name": f"ps-ciliumtest-{os.getpid() % 100000}"})
    try:
        kind.check_prereqs(cfg)
        kubeconfig = kind.create(cfg, print)
        record = kind._read_record(cfg)
        assert record and record["cilium"].get("kpr") is True, record
        nodes = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "--no-headers"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(nodes) == 1 + cfg.nodes and all(" Ready " in n for n in nodes), nodes
        during = before.changes(hostcheck.HostSnapshot.take())
        # The check below can fail: while the agents run, their programs are in the kernel and the snapshot sees them.
        assert any(line.startswith("bpf: + prog ") for line in during), during
        assert [c for c in during if not c.startswith("bpf: ")] == [], during
    finally:
        kind.down(cfg, print)
    changes = before.changes(hostcheck.HostSnapshot.take())
    hostcheck.put_back_sysctls(before, changes)  # before failing
    assert changes == []

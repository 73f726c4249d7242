"""A real kind cluster from the offline node image, on the suite's engine: Ready nodes, working pod network,
and the machine's kernel settings, addresses, routes and firewall as they were after the cluster's life.

Heavy (builds or reuses the node image, then a 3-node cluster): opt in with ``PROXYSUITE_TEST_KIND_CLUSTER=1``
and run under the shared lock, e.g.
``PROXYSUITE_TEST_KIND_CLUSTER=1 flock /tmp/ps-live.lock pytest tests/test_kind_local_cluster.py``.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from proxysuite.cluster import kind
from proxysuite.cluster.kindsetup import engine, hostcheck, nodeimage
from proxysuite.config import SuiteConfig

pytestmark = pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_CLUSTER") != "1",
                                reason="creates a kind cluster from the offline node image: opt in with PROXYSUITE_TEST_KIND_CLUSTER=1")


def test_cluster_from_the_offline_image_is_ready_and_leaves_the_machine_as_it_was(monkeypatch, tmp_path):
    monkeypatch.setenv("PROXYSUITE_STATE_DIR", os.environ.get("PROXYSUITE_STATE_DIR", "/var/lib/proxysuite"))
    eng = engine.setup(print)
    monkeypatch.setenv("DOCKER_HOST", eng.docker_host)
    engine.adopt()
    ref = nodeimage.build(print, docker_host=eng.docker_host)
    before = hostcheck.HostSnapshot.take()
    cfg = SuiteConfig.from_mapping({"provider": "kind", "mode": "iptables", "cluster-name": f"ps-kindtest-{os.getpid() % 100000}",
                                    "kind-node-image": ref})
    kubeconfig = None
    try:
        kind.check_prereqs(cfg)
        kubeconfig = kind.create(cfg, print)
        nodes = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "--no-headers"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(nodes) == 1 + cfg.nodes and all(" Ready " in n for n in nodes), nodes
        nodes_ids = tuple(subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=io.x-k8s.kind.cluster={cfg.name}"],
                                         capture_output=True, text=True, check=True).stdout.split())
        assert len(nodes_ids) == 1 + cfg.nodes, nodes_ids
        changes = before.changes(hostcheck.HostSnapshot.take(), inside=nodes_ids)
        assert changes == [], changes
    finally:
        kind.down(cfg, print)
    changes = before.changes(hostcheck.HostSnapshot.take())
    hostcheck.put_back_sysctls(before, changes)  # before failing
    assert changes == []
    assert not engine.engine_containers(eng.docker_host) or all(not n.startswith(cfg.name) for n in engine.engine_containers(eng.docker_host))

"""On kind, LoadBalancer rows observe the proxy under test: a proxy that loses its LoadBalancer-IP rules fails them.

A child pytest runs a slice of the real catalogue on a kind cluster from the offline node image, in
``--mode custom`` with ``tests/broken_proxies/kind_no_lb.yaml`` (kube-proxy as a DaemonSet whose
iptables-restore drops every "loadbalancer IP" rule). The suite's LoadBalancer controller routes each VIP
from the external client to the nodes, so rows that send to the VIP must fail, while ClusterIP rows of the
same run pass (the failures are about the breakage, not the set-up). Before the suite had its own
LoadBalancer on kind, cloud-provider-kind's Envoy forwarded to NodePorts and these rows passed.

Heavy (a 3-node cluster; each LB row waits out its 45 s "not programmed yet" bound before failing: 828 s
serially, so the slice's two modules run side by side on 2 xdist workers, each module's rows staying on one): opt in with ``PROXYSUITE_TEST_KIND_CLUSTER=1`` and run under the shared lock:
``PROXYSUITE_TEST_KIND_CLUSTER=1 flock /tmp/ps-live.lock pytest tests/test_kind_broken_lb.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxysuite.cluster.kindsetup import engine

pytestmark = [pytest.mark.live, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_CLUSTER") != "1",
                                 reason="creates a kind cluster from the offline node image: opt in with PROXYSUITE_TEST_KIND_CLUSTER=1")]

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "broken_proxies" / "kind_no_lb.yaml"
SELECT = "(test_routing and (lb or clusterip) and not localhost) or (test_source_ip_and_policies and lb)"


def test_a_proxy_without_loadbalancer_rules_fails_the_lb_rows_on_kind(tmp_path, monkeypatch):
    eng = engine.setup(print)
    reports = tmp_path / "reports"
    env = {**os.environ, "DOCKER_HOST": eng.docker_host, "PYTHONPATH": str(ROOT)}
    env.pop("PROXYSUITE_KIND_LB", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites" / "conformance"), "-m", "conformance", "-k", SELECT,
         "-p", "no:cacheprovider", "-q", "-n", "2", "--provider", "kind", "--kind-node-image", "local", "--mode", "custom",
         "--proxy-manifest", str(MANIFEST), "--cluster-name", f"pstest-kind-nolb-{os.getpid() % 100000}",
         "--reports-dir", str(reports)],
        capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    matrices = sorted((reports / "matrix").glob("matrix-custom*.json"))  # matrix-custom@kind.json
    assert matrices, tail
    cells = {cid: next(iter(c["modes"].values())) for cid, c in json.loads(matrices[0].read_text())["checks"].items()}
    lb = {cid: c["result"] for cid, c in cells.items() if "->lb" in cid}
    clusterip = {cid: c["result"] for cid, c in cells.items() if "->clusterip" in cid}
    print(json.dumps({"lb": lb, "clusterip": clusterip}, indent=1))
    # every routing row through the VIP meets no rule now: none may pass
    routed = {cid: r for cid, r in lb.items() if cid.startswith("to-service[")}
    assert routed and set(routed.values()) == {"fail"}, routed
    # the client-IP rows through the LB fail too, except a "block" row, which expects no answer and gets none
    source = {cid: r for cid, r in lb.items() if not cid.startswith("to-service[") and "block" not in cid}
    assert source and set(source.values()) == {"fail"}, source
    assert clusterip and set(clusterip.values()) == {"pass"}, clusterip

"""A check pointed at a deliberately wrong expectation fails, and its forensics are in the report and on disk.

A real local cluster (iptables) runs a tiny conformance module in a child pytest:
``wrong`` expects REFUSED from a Service that has a ready backend (the truth is
REACH), ``right`` expects REACH. The child's terminal output must carry the
forensics sections of ``wrong`` only, the folder ``reports/forensics/<test>/`` must
hold the Service, EndpointSlices, pods, transcript, full proxy rules and conntrack
entries that mention the Service's VIP, and the matrix must record the failure with
what was expected and what was observed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxysuite.cluster.local import provider
from proxysuite.config import SuiteConfig

pytestmark = [pytest.mark.live, pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")]

CLUSTER = "pstest-conformance"

CHECKS = '''
import pytest

from proxysuite.conformance import REACH, REFUSED, REQUIRED, Row, check
from proxysuite.conformance.scenario import ServiceSpec, build_scenario


def scenario(cluster, k8s, suite_config, namespace):
    return build_scenario(cluster, k8s, suite_config.run_id, namespace, backends={0: 1},
                          services={"web": ServiceSpec("NodePort")}, host_clients=False)


@check("forensics-demo", "wrong")
def test_wrong(cluster, k8s, suite_config, namespace, conformance):
    sc = scenario(cluster, k8s, suite_config, namespace)
    # The Service has a ready backend, so the truth is REACH; REFUSED is deliberately wrong.
    conformance.run_row(sc.jig, Row("pod-other-node", "clusterip", expect=REFUSED, klass=REQUIRED, count=3), sc.svc())


@check("forensics-demo", "right")
def test_right(cluster, k8s, suite_config, namespace, conformance):
    sc = scenario(cluster, k8s, suite_config, namespace)
    conformance.run_row(sc.jig, Row("pod-other-node", "clusterip", expect=REACH, klass=REQUIRED, count=3), sc.svc())


def _bad_port(body):
    body["spec"]["ports"][0]["port"] = 70000  # the apiserver rejects it (422): the build fails after the backends exist


@pytest.fixture(scope="module")
def broken(cluster, k8s, suite_config, scenario_namespace):
    return build_scenario(cluster, k8s, suite_config.run_id, scenario_namespace("broken"), backends={0: 1},
                          services={"bad": ServiceSpec("ClusterIP", tweak=_bad_port)}, host_clients=False)


@check("forensics-demo", "broken-first")
def test_broken_first(broken):
    pass


@check("forensics-demo", "broken-second")
def test_broken_second(broken):
    pass
'''

CONFTEST = '''
def pytest_configure(config):
    config.pluginmanager.import_plugin("proxysuite.conformance.plugin")
'''


@pytest.fixture(scope="module")
def cluster():
    cfg = SuiteConfig(provider="local", mode="iptables", nodes=2, cluster_name=CLUSTER)
    cl = provider.up(cfg, progress=lambda m: print(f"[up] {m}"), owner_pid=os.getpid())
    yield cl
    cl.close()
    provider.down(cfg, progress=print)


@pytest.fixture(scope="module")
def child(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("forensics")
    (root / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (root / "test_demo.py").write_text(textwrap.dedent(CHECKS))
    reports = root / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(root), "--rootdir", str(root), "-p", "no:cacheprovider", "-v",
         "--provider", "local", "--mode", "iptables", "--cluster-name", CLUSTER, "--keep-cluster", "--reports-dir", str(reports)],
        capture_output=True, text=True, timeout=600, cwd=root,
    )
    return proc, reports


def test_wrong_expectation_fails_with_the_verdict(child):
    proc, _ = child
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "test_demo.py::test_wrong FAILED" in out
    assert "test_demo.py::test_right PASSED" in out
    assert "test_demo.py::test_broken_first ERROR" in out and "test_demo.py::test_broken_second ERROR" in out
    assert "expected REFUSED (required for iptables), observed REACH" in out


def test_forensics_sections_in_the_report(child):
    proc, _ = child
    out = proc.stdout
    for section in ("forensics: service", "forensics: endpointslices", "forensics: topology", "forensics: pods", "forensics: transcript",
                    "forensics: rules node-1", "forensics: conntrack node-2", "forensics: proxy-logs node-1"):
        assert section in out, f"missing report section {section!r}"
    # Forensics belong to the failing check, and once to the failed scenario build, not to the passing check.
    assert out.count("forensics: transcript") == 2
    assert "the scenario build failed; its forensics were collected once, in" in out


def test_forensics_on_disk(child):
    proc, reports = child
    folders = sorted(f.name for f in (reports / "forensics").iterdir())
    assert folders == ["test_broken_first", "test_wrong"], folders
    folder = reports / "forensics" / "test_wrong"
    service = (folder / "service.txt").read_text()
    vip = next(line.split(":", 1)[1].strip() for line in service.splitlines() if line.strip().startswith("clusterIP:"))
    # The rules the proxy programmed for the VIP: in full on disk, filtered to the VIP in the report section.
    full = (folder / "ruleset-full-node-2.txt").read_text()
    assert f"-d {vip}/32" in full and "KUBE-SVC-" in full
    excerpt = (folder / "rules-node-2.txt").read_text()
    assert vip in excerpt and len(excerpt) < len(full)
    # The topology forensics name each node's zone (the local provider alternates them) and each endpoint's.
    topology = (folder / "topology.txt").read_text()
    assert "node node-1: zone=proxysuite-a" in topology and "node node-2: zone=proxysuite-b" in topology, topology
    assert "trafficDistribution=(unset)" in topology and "zone=proxysuite-a ready=True forZones=[]" in topology, topology
    # conntrack saw the probes to the VIP from the client on node-2.
    conntrack = (folder / "conntrack-node-2.txt").read_text()
    assert f"dst={vip}" in conntrack, conntrack[:2000]
    # The transcript has every probe, with the backend that answered.
    transcript = (folder / "transcript.txt").read_text()
    assert f"-> {vip}:80/tcp" in transcript and "backend=be-n1-" in transcript
    endpoints = (folder / "endpointslices.txt").read_text()
    assert "ready: true" in endpoints
    assert "Running" in (folder / "pods.txt").read_text()
    assert (folder / "proxy-logs-node-1.txt").read_text().strip()


def test_failed_scenario_build_has_forensics(child):
    _, reports = child
    folder = reports / "forensics" / "test_broken_first"
    # The backend the build created before the Service was rejected; the Service itself never existed.
    assert "be-n1-" in (folder / "pods.txt").read_text()
    assert (folder / "service.txt").read_text().strip() == "(no Service)"
    assert (folder / "proxy-logs-node-1.txt").read_text().strip()


def test_matrix_records_the_failure(child):
    _, reports = child
    doc = json.loads((reports / "matrix" / "matrix.json").read_text())
    wrong = doc["checks"]["wrong"]["modes"]["iptables"]
    right = doc["checks"]["right"]["modes"]["iptables"]
    assert (wrong["result"], wrong["klass"], wrong["expected"], wrong["observed"]) == ("fail", "required", "REFUSED", "REACH")
    assert right["result"] == "pass"
    assert "**FAIL** REACH (R)" in (reports / "matrix" / "matrix.md").read_text()

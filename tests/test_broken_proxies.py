"""The catalogue fails proxies that are broken on purpose (tests/broken_proxies/README.md).

Each case runs a slice of the real catalogue (``pytest suites/conformance -m conformance -k ...``) in a
child pytest against the local provider in ``--mode custom``, with a broken proxy standing in for
kube-proxy, and reads the matrix it wrote. The rows the breakage is about must be ``fail`` — not
``impl``, not ``pass`` — and rows the breakage does not touch must still pass, so each failure is
about the breakage and not about the set-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxysuite.cluster.local import components

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "broken_proxies"
KUBE_PROXY_ARGS = ("--kubeconfig {kubeconfig} --hostname-override {node} --cluster-cidr {cluster_cidr} "
                   "--conntrack-max-per-core 0 --metrics-bind-address {metrics_addr} --healthz-bind-address {healthz_addr}")


def _kube_proxy() -> str:
    return str(components.ensure(progress=lambda m: None)["kube-proxy"])


def _catalogue(tmp_path: Path, name: str, proxy_cmd: str, select: str) -> dict:
    """Run the selected checks against the broken proxy; the matrix cells of the custom column, by check id."""
    reports = tmp_path / "reports"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites" / "conformance"), "-m", "conformance", "-k", select,
         "-p", "no:cacheprovider", "-q", "-n", "2", "--provider", "local", "--mode", "custom", "--proxy-cmd", proxy_cmd,
         "--cluster-name", f"pstest-broken-{name}-{worker}", "--reports-dir", str(reports)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    matrix = reports / "matrix" / "matrix-custom.json"
    assert matrix.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = {cid: c["modes"]["custom"] for cid, c in json.loads(matrix.read_text())["checks"].items()}
    assert cells, proc.stdout[-3000:]
    return cells


def _results(cells: dict, *, contains: str = "", startswith: str = "") -> dict[str, str]:
    return {cid: c["result"] for cid, c in cells.items() if contains in cid and cid.startswith(startswith)}


def test_a_proxy_that_forwards_nothing(tmp_path):
    cells = _catalogue(tmp_path, "nothing", f"python3 {BROKEN / 'forward_nothing.py'} {{healthz_addr}} {{metrics_addr}}",
                       "test_routing and (clusterip or nodeport) and not localhost or test_healthz")
    routing = _results(cells, startswith="to-service[")
    # The routing scenario cannot even be built (its barrier Service never answers), so every row is red:
    # "error" with the scenario's forensics, or "fail" for a row judged after the build.
    assert routing and set(routing.values()) <= {"fail", "error"}, routing
    assert all("barrier" in cells[cid]["reason"] or cells[cid]["result"] == "fail" for cid in routing), \
        {cid: cells[cid]["reason"] for cid in routing}
    # What it does serve is judged as served: the failures above are about forwarding.
    assert set(_results(cells, startswith="healthz").values()) == {"pass"}


def test_a_proxy_that_drops_where_it_should_reject(tmp_path):
    cells = _catalogue(tmp_path, "drop", f"sh {BROKEN / 'drop_not_reject.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_no_endpoints_rejects and (clusterip or nodeport)")
    rejects = _results(cells, startswith="reject[")
    assert rejects and set(rejects.values()) == {"fail"}, rejects
    assert {c["observed"] for cid, c in cells.items() if cid in rejects} == {"TIMEOUT"}


def test_a_proxy_that_serves_no_metrics(tmp_path):
    cells = _catalogue(tmp_path, "nometrics", f"sh {BROKEN / 'no_metrics.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_metrics or test_proxy_mode or test_healthz")
    assert set(_results(cells, startswith="metrics").values()) == {"fail"}
    assert set(_results(cells, startswith="proxy-mode").values()) == {"fail"}
    assert set(_results(cells, startswith="healthz").values()) == {"pass"}


def test_a_proxy_whose_rules_are_right_only_intermittently(tmp_path):
    cells = _catalogue(tmp_path, "flap", f"sh {BROKEN / 'intermittent.sh'} {_kube_proxy()} {KUBE_PROXY_ARGS}",
                       "test_routing and (nodeport or clusterip) and tcp and not localhost")
    nodeports = _results(cells, contains="->nodeport-")
    clusterips = _results(cells, contains="->clusterip/")
    assert nodeports and set(nodeports.values()) == {"fail"}, nodeports
    assert clusterips and set(clusterips.values()) == {"pass"}, clusterips

"""pytest plugin of the conformance catalogue: harness fixture, forensics, matrix, disruption guard.

Loaded by ``suites/conformance/conftest.py`` (``import_plugin``), so it is active
wherever conformance checks are collected, with or without pytest-xdist.

Fixtures
--------
``conformance``       per test: the :class:`~proxysuite.conformance.check.Conformance` harness
                      (runs rows, judges, records the verdict, arms forensics).
``scenario_namespace`` module scope: a factory ``scenario_namespace(label)`` for a namespace
                      shared by one module's rows (labelled with the run id, deleted at
                      module end). Used where building the scenario once per module is
                      safe because the rows only read it.

Hooks
-----
* ``pytest_runtest_makereport``: on a failed check, collect forensics into report
  sections and ``<reports-dir>/forensics/<test>/``; for every check, append its matrix
  record (result, class, expected, observed, path, reason).
* ``pytest_sessionfinish``: rebuild ``<reports-dir>/matrix/``.
* Disruptive checks (``@pytest.mark.disruptive``) take an exclusive cross-process lock
  and every other check a shared one, so under ``-n 2`` a proxy restart or rule flush
  never runs while another worker is probing.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from .. import runlocks
from ..errors import ProbeError
from . import verdict as vd
from .check import Conformance, Record
from .forensics import Forensics
from . import matrix as mx

_record_key = pytest.StashKey[Record]()
_forensics_key = pytest.StashKey[Forensics]()
_start_key = pytest.StashKey[float]()
SECTION_LIMIT = 6000
"""Characters per forensics section in the terminal report; files on disk are complete."""


def _settings(config: pytest.Config) -> dict:
    """provider, mode, variant, run_id, reports_dir of this session (the core plugin's one SuiteConfig)."""
    from ..plugin import suite_config_of

    cfg = suite_config_of(config)
    variant = None
    if cfg.mode == "cilium":  # its variants (maglev, dsr, ...) are separate matrix columns
        from ..cluster.kind import cilium_variant

        variant = cilium_variant(cfg)
    if cfg.ip_family != "ipv4":  # an IPv6 or dual-stack run is its own column (iptables-dual), never merged into IPv4's
        variant = f"{variant}-{cfg.ip_family}" if variant else cfg.ip_family
    return {"provider": cfg.provider, "mode": cfg.mode, "variant": variant, "run_id": cfg.run_id, "reports_dir": Path(cfg.reports_dir)}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "proxysuite_check(capability, name): a conformance check, recorded in the matrix")
    config.addinivalue_line("markers", "proxysuite_rows(rows): rows parametrized per IP family at collection (--ip-family)")
    # Scenario modules share one module-scoped setup; keep each module's rows on one xdist worker
    # (xdist_group marks) instead of building the scenario once per worker. Only effective when this
    # plugin is loaded in the controller (initial conftest or core plugin) and --dist was not chosen.
    if getattr(config.option, "dist", None) == "load" and not any(a.startswith(("--dist", "-d")) for a in config.invocation_params.args):
        config.option.dist = "loadgroup"
    # Workers decide from their own command line whether to suffix node ids with the group (xdist's
    # remote.setup_config), and that line never saw the switch above: tell them through workerinput.
    winput = getattr(config, "workerinput", None)
    if winput is not None and winput.get("proxysuite_loadgroup"):
        config.option.loadgroup = True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a check whose rows include ``per_family`` ones, once per family of this run's ``--ip-family``."""
    marker = metafunc.definition.get_closest_marker("proxysuite_rows")
    if marker is None:
        return
    from ..ipfamily import families_of
    from ..plugin import suite_config_of
    from .rows import expand_families

    rows = expand_families(marker.args[0], families_of(suite_config_of(metafunc.config).ip_family))
    metafunc.parametrize("row", rows, ids=[r.id for r in rows])


@pytest.hookimpl(optionalhook=True)  # xdist's hook: without xdist (-p no:xdist) pluggy must not reject it
def pytest_configure_node(node) -> None:  # xdist controller hook, runs once per worker
    node.workerinput["proxysuite_loadgroup"] = getattr(node.config.option, "dist", None) == "loadgroup"


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def conformance(request: pytest.FixtureRequest, cluster, k8s, suite_config):
    """The per-test harness; forensics are collected from it only if the test fails."""
    record = request.node.stash.setdefault(_record_key, Record())
    forensics = Forensics(cluster, k8s, request.node.nodeid, suite_config.reports_dir)
    request.node.stash[_forensics_key] = forensics
    return Conformance(suite_config.mode, forensics, record)


@pytest.fixture(scope="module")
def scenario_namespace(request: pytest.FixtureRequest, k8s, suite_config):
    """Factory for module-shared namespaces: ``ns = scenario_namespace("routing")``."""
    from kubernetes import client

    core = client.CoreV1Api(k8s)
    created: list[str] = []

    def make(label: str) -> str:
        digest = hashlib.sha1(f"{request.node.nodeid}:{label}:{os.getpid()}".encode()).hexdigest()[:6]
        name = f"ps-{suite_config.run_id}-{re.sub(r'[^a-z0-9-]+', '-', label.lower())[:30]}-{digest}".strip("-")
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={
            "proxysuite.io/run-id": suite_config.run_id,
            "pod-security.kubernetes.io/enforce": "privileged",
        })))
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as exc:
            if exc.status != 404:
                print(f"[proxysuite] could not delete namespace {name}: {exc.reason}")


@pytest.fixture(autouse=True)
def _disruption_guard(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("proxysuite_check") is None:
        yield
        return
    exclusive = request.node.get_closest_marker("disruptive") is not None
    with runlocks.held(_settings(request.config)["run_id"], "disrupt", exclusive=exclusive):
        yield


# --- hooks ---------------------------------------------------------------------------------------
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_start_key] = time.monotonic()


def _skip_reason(report) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("proxysuite_check")
    if marker is None:
        return
    if report.failed and report.when in ("setup", "call"):
        built = getattr(call.excinfo.value, "proxysuite_jig", None) if call.excinfo is not None else None
        if built is not None:
            _attach_build_forensics(item, report, built)
        elif report.when == "call":
            _attach_forensics(item, report)
    final = (report.when == "call") or (report.when == "setup" and not report.passed)
    if not final:
        return
    rec = item.stash.get(_record_key, None) or Record()
    if report.when == "call" and report.passed and not rec.result:
        # A check that returns without judging anything has proved nothing: it must not read as a pass.
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: the check finished without a verdict (no row or value was judged "
                           "through the conformance harness)")
    result = _result(report, rec, call)
    reason = _skip_reason(report) if report.skipped else ""
    if result in (vd.FAIL, vd.ERROR):
        # The exception's own line says what went wrong; the report's last line is often just its location.
        text = call.excinfo.exconly() if call.excinfo is not None else (report.longreprtext or "")
        reason = text.strip().splitlines()[0][:300] if text.strip() else ""
    s = _settings(item.config)
    params = getattr(item, "callspec", None)
    check_id = marker.kwargs.get("name", item.originalname) + (f"[{params.id}]" if params else "")
    record = {
        "check": check_id,
        "capability": marker.kwargs.get("capability", ""),
        "name": marker.kwargs.get("name", ""),
        "nodeid": item.nodeid,
        "result": result,
        "klass": rec.klass,
        "expected": rec.expected,
        "observed": rec.observed,
        "path": rec.path,
        "detail": rec.detail,
        "reason": reason,
        "notes": rec.notes,
        "duration": round(time.monotonic() - item.stash.get(_start_key, time.monotonic()), 2),
    }
    report.user_properties.append(("proxysuite.matrix", record))
    mx.append_part(s["reports_dir"] / "matrix", s["run_id"], record)


def _result(report, rec: Record, call) -> str:
    """The matrix result of a finished check (see :mod:`proxysuite.conformance.verdict`)."""
    if report.skipped:
        return vd.SKIPPED
    if report.when == "setup":
        return vd.ERROR
    if report.failed:
        exc = call.excinfo.value if call.excinfo is not None else None
        # Could not probe at all (a vantage that cannot run the probe): an error, not a verdict on the proxy.
        return vd.ERROR if isinstance(exc, ProbeError) else vd.FAIL
    return rec.result


def _attach_build_forensics(item: pytest.Item, report, jig) -> None:
    """Forensics for a scenario whose build failed (see :func:`~proxysuite.conformance.scenario.build_scenario`)."""
    done = getattr(jig, "forensics_folder", None)
    if done is not None:
        # A module-scoped scenario re-raises its one failure for every test of the module.
        report.sections.append(("forensics", f"the scenario build failed; its forensics were collected once, in {done}"))
        return
    forensics = item.stash.get(_forensics_key, None) or Forensics(
        jig.cluster, jig.core.api_client, item.nodeid, _settings(item.config)["reports_dir"])
    forensics.watch(jig, whole=True)
    jig.forensics_folder = _attach(forensics, report)


def _attach_forensics(item: pytest.Item, report) -> None:
    forensics = item.stash.get(_forensics_key, None)
    if forensics is None or not forensics.jigs:
        return
    _attach(forensics, report)


def _attach(forensics: Forensics, report) -> Path | None:
    """Collect, write and add the report sections; the folder written, or None if collection failed."""
    try:
        sections = forensics.collect()
        folder = forensics.write(sections)
    except Exception as exc:  # noqa: BLE001 - forensics must never hide the real failure
        report.sections.append(("forensics", f"forensics collection failed: {type(exc).__name__}: {exc}"))
        return None
    for name, text in sections.items():
        if len(text) > SECTION_LIMIT:
            text = text[:SECTION_LIMIT] + f"\n... truncated; full text in {folder}"
        report.sections.append((f"forensics: {name}", text))
    report.sections.append(("forensics", f"written to {folder}"))
    return folder


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = _settings(session.config)
    try:
        out = mx.finish_run(s["reports_dir"] / "matrix", s["run_id"], s["provider"], s["mode"], s["variant"])
    except Exception as exc:  # noqa: BLE001
        print(f"[proxysuite] could not write the conformance matrix: {exc}")
        return
    if out and getattr(session.config, "workerinput", None) is None:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr:
            tr.write_line(f"conformance matrix: {out[1]} ({out[0]})")

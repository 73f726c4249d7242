"""pytest plugin: options, markers and the fixtures every suite uses.

Installed as the ``pytest11`` entry point ``proxysuite``, so ``pytest
--provider local --mode nftables -m conformance`` works from any directory.

Fixtures
--------
``suite_config``  the frozen :class:`~proxysuite.config.SuiteConfig` of this run.
``cluster``       the cluster under test, brought up once per session and shared by
                  pytest-xdist workers (a file lock serialises bring-up; the
                  controller tears it down at the end unless ``--keep-cluster``).
``namespace``     a fresh Kubernetes namespace per test, labelled with the run id,
                  deleted after the test.
``k8s``           a ``kubernetes.client.ApiClient`` for the cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

from .config import OPTIONS, SuiteConfig, default_state_root
from .errors import SuiteError, Unsupported
from .signals import sigterm_as_interrupt

MARKERS = {
    "conformance": "Service-proxy conformance checks (the CI job: pytest -m conformance)",
    "perf": "performance measurements; not part of the default test command",
    "slow": "takes more than a minute",
    "disruptive": "restarts the proxy or flushes its rules; runs serially",
    "needs(feature, ...)": "skip unless the cluster offers these features (load_balancer, external_client, node_exec, ...)",
}

RUN_LABEL = "proxysuite.io/run-id"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("proxysuite", "Kubernetes Service proxy suite")
    for opt in OPTIONS:
        dest = "proxysuite_" + opt.name.replace("-", "_")
        if opt.flag:
            group.addoption(f"--{opt.name}", action="store_true", dest=dest, default=None, help=opt.help)
        else:
            group.addoption(f"--{opt.name}", dest=dest, default=None, type=opt.type, help=f"{opt.help} (default: {opt.default})")
        parser.addini(dest, opt.help, default=None)


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    # The catalogue's hooks (matrix, forensics, xdist grouping) must be active in the xdist controller too,
    # whichever directory pytest was pointed at.
    config.pluginmanager.import_plugin("proxysuite.conformance.plugin")
    # pytest then unwinds fixtures and sessionfinish runs, as on Ctrl-C.
    sigterm_as_interrupt()
    _venv_bin_on_path()


def _venv_bin_on_path() -> None:
    """Put the venv's bin directory first on PATH, as activating the venv would, when it holds kubectl.

    scripts/bootstrap links the kubectl built with the local components there: the tests and the
    existing provider then use a kubectl of the local cluster's own version, also on a machine that
    has none of its own.
    """
    venv_bin = Path(sys.executable).parent
    path = os.environ.get("PATH", "").split(os.pathsep)
    if (venv_bin / "kubectl").exists() and str(venv_bin) not in path:
        os.environ["PATH"] = os.pathsep.join([str(venv_bin), *path])


def _option_values(config: pytest.Config) -> dict:
    values = {}
    for opt in OPTIONS:
        dest = "proxysuite_" + opt.name.replace("-", "_")
        value = config.getoption(dest)
        if value is None:
            value = config.getini(dest)
            if value in (None, "", []):
                value = opt.default
            elif opt.type is int:
                value = int(value)
            elif opt.type is bool:
                value = str(value).lower() in ("1", "true", "yes")
        values[opt.name] = value
    return values


def _controller_uid(config: pytest.Config) -> str:
    uid = config.stash.get(_uid_key, None)
    if uid is None:
        uid = os.urandom(3).hex()
        config.stash[_uid_key] = uid
    return uid


_uid_key = pytest.StashKey[str]()
_cluster_key = pytest.StashKey[object]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # xdist hook: hand the controller's uid to each worker
    node.workerinput["proxysuite_uid"] = _controller_uid(node.config)


def _run_id(config: pytest.Config) -> str:
    winput = getattr(config, "workerinput", None)
    if winput is not None and "proxysuite_uid" in winput:
        return winput["proxysuite_uid"]
    return _controller_uid(config)


@pytest.fixture(scope="session")
def suite_config(pytestconfig: pytest.Config) -> SuiteConfig:
    try:
        return SuiteConfig.from_mapping({**_option_values(pytestconfig), "run_id": _run_id(pytestconfig)})
    except SuiteError as exc:
        raise pytest.UsageError(str(exc)) from None


def _progress(msg: str) -> None:
    # Bring-up takes seconds to minutes (a cold build takes ~8 min); say what is happening.
    sys.stderr.write(f"[proxysuite] {msg}\n")
    sys.stderr.flush()


@pytest.fixture(scope="session")
def cluster(suite_config: SuiteConfig, pytestconfig: pytest.Config):
    """The cluster under test. Unsupported modes/providers skip every test that uses it, with the reason."""
    from filelock import FileLock

    from .cluster import get_provider

    provider = get_provider(suite_config)
    state_root = default_state_root()
    state_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_root / f".{suite_config.provider}-{suite_config.name}.lock"))
    # The session that owns the cluster: the xdist controller (a worker's parent) or this process.
    # The janitor removes clusters whose owner died; --keep-cluster leaves it ownerless on purpose.
    worker = getattr(pytestconfig, "workerinput", None) is not None
    owner = None if suite_config.keep_cluster else (os.getppid() if worker else os.getpid())
    try:
        with lock:
            cl = provider.up(suite_config, progress=_progress, owner_pid=owner)
    except Unsupported as exc:
        pytest.skip(str(exc))
    except SuiteError as exc:
        pytest.exit(f"proxysuite: {exc}", returncode=4)
    if cl.created:
        # Only a cluster this session created is torn down at its end; a reused one belongs to someone else.
        created_marker = state_root / f".session-{_run_id(pytestconfig)}-{suite_config.provider}-{suite_config.name}"
        created_marker.write_text(json.dumps({"provider": suite_config.provider, "name": suite_config.name}))
    pytestconfig.stash[_cluster_key] = suite_config
    yield cl
    cl.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Controller (or non-xdist) process: tear the cluster down once every worker is done."""
    config = session.config
    if getattr(config, "workerinput", None) is not None:
        return
    state_root = default_state_root()
    for marker in state_root.glob(f".session-{_run_id(config)}-*"):
        info = json.loads(marker.read_text())
        marker.unlink(missing_ok=True)
        try:
            cfg = SuiteConfig.from_mapping({**_option_values(config), **info, "run_id": _run_id(config)})
        except SuiteError:
            continue
        if cfg.keep_cluster:
            _progress(f"keeping cluster {cfg.name} (--keep-cluster); remove it with: proxysuite cluster down --provider {cfg.provider} --cluster-name {cfg.name}")
            continue
        from .cluster import get_provider

        _progress(f"tearing down {cfg.provider} cluster {cfg.name}")
        get_provider(cfg).down(cfg, progress=_progress)


@pytest.fixture(scope="session")
def k8s(cluster):
    from kubernetes import client, config as kconfig

    api = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
    yield api
    api.close()


def namespace_name(run_id: str, nodeid: str) -> str:
    """DNS-1123 namespace name: the run id, a readable bit of the test name, and a hash of the full id."""
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.split("::")[-1].lower()).strip("-")[:30].strip("-")
    digest = hashlib.sha1(nodeid.encode()).hexdigest()[:6]
    return f"ps-{run_id}-{base}-{digest}".strip("-")


@pytest.fixture
def namespace(k8s, suite_config: SuiteConfig, request: pytest.FixtureRequest):
    """A fresh namespace for one test; deleted afterwards (pods get their grace period in the background)."""
    from kubernetes import client

    core = client.CoreV1Api(k8s)
    name = namespace_name(suite_config.run_id, request.node.nodeid)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={RUN_LABEL: suite_config.run_id})))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as exc:
            if exc.status != 404:
                _progress(f"could not delete namespace {name}: {exc.reason}")


@pytest.fixture(autouse=True)
def _needs_features(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.needs("load_balancer", ...)``: skip with the cluster's own reason when a feature is missing.

    A fixture rather than a setup hook: it asks for ``cluster`` only when the marker is there, inside
    fixture setup where that is safe (also under xdist).
    """
    marks = list(request.node.iter_markers("needs"))
    if not marks:
        return
    feats = request.getfixturevalue("cluster").features()
    for mark in marks:
        for feature in mark.args:
            ok, reason = feats.require(feature)
            if not ok:
                pytest.skip(reason)

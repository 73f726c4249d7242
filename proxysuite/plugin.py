"""pytest plugin: options, markers and the fixtures every suite uses.

Installed as the ``pytest11`` entry point ``proxysuite``, so ``pytest
--provider local --mode nftables -m conformance`` works from any directory.

Fixtures
--------
``suite_config``  the frozen :class:`~proxysuite.config.SuiteConfig` of this run: built once per
                  process from the options (CLI, then ini, then defaults) and kept in
                  ``config.stash``; other plugins read it with :func:`suite_config_of`.
``cluster``       the cluster under test, brought up once per session and shared by
                  pytest-xdist workers (a file lock serialises bring-up; the
                  controller tears it down at the end unless ``--keep-cluster``).
``namespace``     a fresh Kubernetes namespace per test, labelled with the run id,
                  deleted after the test.
``k8s``           a ``kubernetes.client.ApiClient`` for the cluster.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from . import runlocks, waits
from .config import OPTIONS, SuiteConfig, default_state_root
from .errors import SuiteError, Unsupported
from .runscope import RUN_LABEL, namespace_labels, namespace_name, new_run_id, progress
from .signals import sigterm_as_interrupt

MARKERS = {
    "conformance": "Service-proxy conformance checks (the CI job: pytest -m conformance)",
    "perf": "performance measurements; not part of the default test command",
    "slow": "takes more than a minute",
    "disruptive": "restarts the proxy or flushes its rules; runs serially",
    "migration": "switches a running cluster's proxy mode under traffic (suites/migration; one process: -p no:xdist)",
}

__all__ = ["RUN_LABEL", "namespace_name", "suite_config_of"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("proxysuite", "Kubernetes Service proxy suite")
    for opt in OPTIONS:
        dest = "proxysuite_" + opt.name.replace("-", "_")
        if opt.flag:
            group.addoption(f"--{opt.name}", action="store_true", dest=dest, default=None, help=opt.help_text())
        else:
            group.addoption(f"--{opt.name}", dest=dest, default=None, type=opt.type, help=opt.help_text())
        parser.addini(dest, opt.help, default=None)
    group.addoption("--programming-wait", dest="proxysuite_programming_wait", type=float, default=None, metavar="SECONDS",
                    help=f"ceiling of every wait for the proxy to program a change (PROXY_PROGRAMMED: a row's wait until its "
                         f"target answers once, a scenario's barrier, a change settling; default {waits.PROXY_PROGRAMMED.seconds:g}); "
                         "lower it to fail fast against a proxy you know is broken: one that programs within it gets the same verdicts")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("proxysuite_programming_wait", None) is not None:
        try:
            waits.set_ceiling("PROXY_PROGRAMMED", config.getoption("proxysuite_programming_wait"))
        except ValueError as exc:
            raise pytest.UsageError(f"--programming-wait: {exc}") from None
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


_uid_key = pytest.StashKey[str]()
_suite_config_key = pytest.StashKey[SuiteConfig]()


def _controller_uid(config: pytest.Config) -> str:
    uid = config.stash.get(_uid_key, None)
    if uid is None:
        uid = new_run_id()
        config.stash[_uid_key] = uid
    return uid


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # xdist hook: hand the controller's uid to each worker
    node.workerinput["proxysuite_uid"] = _controller_uid(node.config)


def _run_id(config: pytest.Config) -> str:
    winput = getattr(config, "workerinput", None)
    if winput is not None and "proxysuite_uid" in winput:
        return winput["proxysuite_uid"]
    return _controller_uid(config)


def suite_config_of(config: pytest.Config) -> SuiteConfig:
    """This session's :class:`SuiteConfig`, built on first use and kept in ``config.stash``.

    The run id is the xdist controller's, so every worker of a session shares it. Bad options are a
    :class:`pytest.UsageError` naming the fix.
    """
    cfg = config.stash.get(_suite_config_key, None)
    if cfg is None:
        try:
            cfg = SuiteConfig.from_mapping({**_option_values(config), "run_id": _run_id(config)})
        except SuiteError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[_suite_config_key] = cfg
    return cfg


def pytest_sessionstart(session: pytest.Session) -> None:
    # Bad options stop the session here with one line (pytest's usage error) instead of erroring every test.
    suite_config_of(session.config)


# The one convention for "not available" (a Features reason, a mode a provider cannot run) is a skip with the
# reason, wherever Unsupported is raised: a fixture, the test body or a helper they call.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    try:
        return (yield)
    except Unsupported as exc:
        pytest.skip(exc.what)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        return (yield)
    except Unsupported as exc:
        pytest.skip(exc.what)


@pytest.fixture(scope="session")
def suite_config(pytestconfig: pytest.Config) -> SuiteConfig:
    return suite_config_of(pytestconfig)


@pytest.fixture(scope="session")
def cluster(suite_config: SuiteConfig, pytestconfig: pytest.Config, request: pytest.FixtureRequest):
    """The cluster under test. Unsupported modes/providers skip every test that uses it, with the reason."""
    from filelock import FileLock

    from .cluster import get_provider

    provider = get_provider(suite_config.provider)
    state_root = default_state_root()
    state_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_root / f".{suite_config.provider}-{suite_config.name}.lock"))
    # The session that owns the cluster: the xdist controller (a worker's parent) or this process.
    # The janitor removes clusters whose owner died; --keep-cluster leaves it ownerless on purpose.
    worker = getattr(pytestconfig, "workerinput", None) is not None
    owner = None if suite_config.keep_cluster else (os.getppid() if worker else os.getpid())
    try:
        with lock:
            cl = provider.up(suite_config, progress=progress, owner_pid=owner)
    except Unsupported as exc:
        pytest.skip(str(exc))
    except SuiteError as exc:
        if not worker:
            pytest.exit(f"proxysuite: {exc}", returncode=4)
        # pytest.exit inside an xdist worker kills it mid-item, and the controller reports only an INTERNALERROR
        # about a crashed item: the reason is lost. Stopping the worker's session after this item instead makes
        # the controller end the run with "Interrupted: proxysuite: <reason>".
        request.session.shouldstop = f"proxysuite: {exc}"
        pytest.fail(f"proxysuite: {exc}", pytrace=False)
    if cl.created:
        # Only a cluster this session created is torn down at its end; a reused one belongs to someone else.
        created_marker = state_root / f".session-{suite_config.run_id}-{suite_config.provider}-{suite_config.name}"
        created_marker.write_text(json.dumps({"provider": suite_config.provider, "name": suite_config.name}))
    yield cl
    cl.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Controller (or non-xdist) process: tear the cluster down once every worker is done."""
    config = session.config
    if getattr(config, "workerinput", None) is not None:
        return
    runlocks.remove(_run_id(config))
    markers = list(default_state_root().glob(f".session-{_run_id(config)}-*"))
    if not markers:
        return
    from .cluster import get_provider

    base = suite_config_of(config)
    for marker in markers:
        info = json.loads(marker.read_text())
        marker.unlink(missing_ok=True)
        cfg = base.with_(provider=info["provider"], cluster_name=info["name"])
        if cfg.keep_cluster:
            progress(f"keeping cluster {cfg.name} (--keep-cluster); remove it with: proxysuite cluster down --provider {cfg.provider} --cluster-name {cfg.name}")
            continue
        progress(f"tearing down {cfg.provider} cluster {cfg.name}")
        get_provider(cfg.provider).down(cfg, progress=progress)


@pytest.fixture(scope="session")
def k8s(cluster):
    from kubernetes import config as kconfig

    api = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(k8s, suite_config: SuiteConfig, request: pytest.FixtureRequest):
    """A fresh namespace for one test; deleted afterwards (pods get their grace period in the background)."""
    from kubernetes import client

    core = client.CoreV1Api(k8s)
    nodeid = request.node.nodeid
    name = namespace_name(suite_config.run_id, nodeid.split("::")[-1], unique=nodeid)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=namespace_labels(suite_config.run_id))))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as exc:
            if exc.status != 404:
                progress(f"could not delete namespace {name}: {exc.reason}")

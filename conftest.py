"""Conventions of this checkout's test runs; the suite's machinery is not here.

The options, fixtures and markers (``--provider``, ``--mode``, ``cluster``, ``namespace``, ...) come from
the ``proxysuite`` pytest plugin, registered as a ``pytest11`` entry point in pyproject.toml rather than
loaded from this file: an installed proxysuite then works from any directory (``pytest --pyargs``, a
user's own suite) without this checkout. Loading it here as well would register it twice.

What this file adds, only for runs from this checkout (``tests/``, ``suites/``):

* every run writes JUnit XML under ``<reports-dir>/junit/`` unless ``--junitxml`` is given
  (reports/README.md names the files); under pytest-xdist the workers send their reports to the
  controller, which writes the one file;
* ``pytester``, for the project's tests that run a child pytest in-process (declared once here, for
  every test module, rather than in the modules that use it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _opt(config: pytest.Config, name: str, default: str) -> str:
    """A proxysuite option as its plugin reads it: the command line, then the ini file, then the default."""
    dest = "proxysuite_" + name.replace("-", "_")
    return config.getoption(dest, None) or config.getini(dest) or default


def _run_part(arg: str) -> tuple[str, bool]:
    """(name, is a suite) of one path argument: ``tests``, ``tests-test_detect``, ``conformance``, ``conformance-test_routing``."""
    path = Path(arg.split("::")[0])
    parts = path.parts
    if "suites" in parts and parts.index("suites") + 1 < len(parts):
        i = parts.index("suites")
        inner = parts[i + 2:]
        return parts[i + 1] + (f"-{Path(inner[-1]).stem}" if inner else ""), True
    return ("tests" if path.stem in ("", "tests") else f"tests-{path.stem}"), False


def _junit_name(config: pytest.Config) -> str:
    """One file per suite (or the part of it that was run), provider and mode, so a later run of the same
    selection overwrites it: ``tests``, ``tests-test_detect``, ``conformance-local-iptables``,
    ``conformance-kind-cilium-maglev``, ``conformance-test_routing-local-nftables``."""
    parts = [_run_part(str(a)) for a in (config.args or ["tests"])]
    name = "-".join(sorted({n for n, _ in parts}))
    if any(is_suite for _, is_suite in parts):
        provider, mode = _opt(config, "provider", "local"), _opt(config, "mode", "iptables")
        name += f"-{provider}-{mode}"
        if mode == "cilium":
            variant = _opt(config, "cilium-variant", os.environ.get("PROXYSUITE_CILIUM_VARIANT") or "default")
            name += "-" + Path(variant).stem
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name)[:120]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: pytest's junitxml plugin reads --junitxml in its own pytest_configure, after this one.
    if getattr(config.option, "xmlpath", None) or hasattr(config, "workerinput"):
        return
    reports = Path(_opt(config, "reports-dir", "reports"))
    path = reports / "junit" / f"{_junit_name(config)}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    config.option.xmlpath = str(path)

"""The perf sweep's options, defined once: ``proxysuite perf run`` flags and ``suites/perf`` pytest options come from here.

Each field of :class:`PerfOptions` carries its help text and command-line spelling in
its metadata; :func:`add_arguments` turns them into argparse flags (``--npl-changes``)
and :func:`add_pytest_options` into pytest options with a ``perf-`` prefix
(``--perf-npl-changes``), and :func:`from_values` reads either back::

    p = argparse.ArgumentParser(); add_arguments(p)
    opts = from_values(vars(p.parse_args(["--scales", "100,1k", "--no-restart"])))
    opts.scales, opts.restart_proxy          # (100, 1000), False

Adding an option: a field here with ``opt(...)`` metadata; both front ends and the
docs' flag list (``python -m proxysuite.perf.options``) follow. Nothing here imports
the perf stack, so the CLI's help works without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

DEFAULT_SCALES = (100, 1000, 5000, 10000)
SCALES_ENV = "PROXYSUITE_PERF_SCALES"
"""Environment default for the pytest option (CI sets it per job)."""


def parse_scales(text: str) -> tuple[int, ...]:
    """``100,1000,5k,10k`` → (100, 1000, 5000, 10000)."""
    out = []
    try:
        for part in text.split(","):
            part = part.strip().lower()
            out.append(int(float(part[:-1]) * 1000) if part.endswith("k") else int(part))
    except ValueError:
        out = []
    if not out or any(s < 5 for s in out) or out != sorted(out):
        raise argparse.ArgumentTypeError(f"scales {text!r}: give increasing Service counts ≥ 5, e.g. 100,1000,5k,10k")
    return tuple(out)


def parse_periods(text: str) -> tuple[float, ...]:
    """``0,1s,5s,10s`` → (0.0, 1.0, 5.0, 10.0); ``500ms`` → 0.5; empty → () (the sweep is off)."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        try:
            out.append(float(part[:-2]) / 1000 if part.endswith("ms") else float(part.removesuffix("s")))
        except ValueError:
            raise argparse.ArgumentTypeError(f"min-sync-periods {text!r}: give durations like 0,1s,5s,10s") from None
    if any(v < 0 for v in out):
        raise argparse.ArgumentTypeError(f"min-sync-periods {text!r}: durations are ≥ 0")
    return tuple(out)


def _rps(text: str) -> float | None:
    v = float(text)
    return v or None


def opt(help: str, flag: str | None = None, type: Callable[[str], Any] | None = None, negate: bool = False,
        shown_default: str | None = None) -> dict:
    """Field metadata for an option.

    :param help: the help text, without the default (added from the field's default).
    :param flag: the flag's name without dashes; default: the field name with ``-`` for ``_``.
    :param type: parses the command-line string into the field's value (default: the default's type).
    :param negate: a boolean that defaults to True and is switched off by ``--<flag>`` (``--no-restart``).
    :param shown_default: how the default is shown in help, where ``str(default)`` reads badly.
    """
    return {"perf_option": dict(help=help, flag=flag, type=type, negate=negate, shown_default=shown_default)}


@dataclass
class PerfOptions:
    """What one sweep measures and how hard; every field is a ``perf run`` flag and a ``--perf-…`` pytest option."""

    scales: tuple[int, ...] = field(default=DEFAULT_SCALES, metadata=opt(
        "Service counts to sweep, ascending (1k = 1000)", type=parse_scales, shown_default="100,1000,5000,10000"))
    endpoints_per_service: int = field(default=2, metadata=opt("endpoints per Service", flag="endpoints"))
    first_packet_rounds: int = field(default=300, metadata=opt("new connections timed per first-packet target"))
    """Connections per target per scale."""
    npl_changes: int = field(default=20, metadata=opt("endpoint flips timed for network programming latency per scale"))
    """Readiness flips per scale (half to not-ready, half to ready)."""
    npl_creates: int = field(default=5, metadata=opt(
        "Service creations timed from the API write until the new ClusterIP answers, per scale"))
    """Service creates per scale (each adds one Service to the fleet)."""
    restart_proxy: bool = field(default=True, metadata=opt(
        "do not restart the proxy to time full syncs", flag="no-restart", negate=True))
    load_seconds: float = field(default=10.0, metadata=opt("paced Locust run per scale, seconds; 0 = no load"))
    load_rps: float | None = field(default=500.0, metadata=opt(
        "target rps of the paced run; 0 = closed loop, as fast as Locust can", type=_rps))
    load_users: int = field(default=10, metadata=opt("Locust users of the paced run"))
    load_new_connection: bool = field(default=True, metadata=opt(
        "reuse connections in Locust runs (default: a new connection per request)", flag="load-keep-alive", negate=True))
    """Every Locust request on a new connection, so the load pays the proxy's per-connection cost."""
    load_max_seconds: float = field(default=5.0, metadata=opt("closed-loop Locust run after the paced one, seconds; 0 = skip"))
    """Closed-loop run after the paced one (0 = skip): the throughput ceiling, usually the generator's."""
    load_max_users: int = field(default=50, metadata=opt("Locust users of the closed-loop run"))
    min_sync_periods: tuple[float, ...] = field(default=(), metadata=opt(
        "minSyncPeriod values to sweep under endpoint churn at the largest scale, e.g. 0,1s,5s,10s (kube-proxy is "
        "restarted with each, then with its default); empty = no sweep", type=parse_periods, shown_default="none"))
    churn_rate: float = field(default=5.0, metadata=opt("background endpoint changes per second during the minSyncPeriod sweep"))
    min_sync_flips: int = field(default=8, metadata=opt("endpoint flips timed in the datapath per minSyncPeriod value"))
    teardown: bool = field(default=True, metadata=opt(
        "leave the Services for the namespace deletion (use when the cluster is deleted right after)",
        flag="no-teardown", negate=True))
    """Delete the fleet at the end (timed). Off when the cluster is thrown away anyway: deleting 10,000
    Services one by one under iptables churn takes ~5 min on a 2-vCPU VM."""


@dataclass(frozen=True)
class Option:
    """One option as both front ends see it."""

    field: str
    flag: str
    help: str
    default: Any
    type: Callable[[str], Any] | None
    negate: bool
    metavar: str


def options() -> list[Option]:
    out = []
    for f in dataclasses.fields(PerfOptions):
        m = f.metadata.get("perf_option")
        if m is None:
            continue
        shown = m["shown_default"] or (None if m["negate"] else str(f.default))
        help_ = m["help"] + (f" (default {shown})" if shown is not None else "")
        typ = m["type"] or (None if m["negate"] else type(f.default))
        metavar = "LIST" if isinstance(f.default, tuple) else {int: "N", float: "X"}.get(type(f.default), "X")
        out.append(Option(f.name, m["flag"] or f.name.replace("_", "-"), help_, f.default, typ, m["negate"], metavar))
    return out


def add_arguments(parser: Any, prefix: str = "", env_defaults: bool = False) -> None:
    """Add every option to an argparse parser (or a pytest option group: same ``add_argument``/``addoption`` shape).

    :param prefix: put before each flag's name (``perf-`` for pytest, whose options share one namespace).
    :param env_defaults: take the scales' default from ``$PROXYSUITE_PERF_SCALES`` (pytest, for CI).
    """
    add = getattr(parser, "add_argument", None) or parser.addoption
    for o in options():
        flag = f"--{prefix}{o.flag}"
        if o.negate:
            add(flag, action="store_true", default=False, dest=f"perf_{o.field}_off", help=o.help)
            continue
        default = o.default
        if o.field == "scales" and env_defaults and os.environ.get(SCALES_ENV):
            default = os.environ[SCALES_ENV]  # parsed by from_values, where a bad value is a usage error
        add(flag, type=o.type, default=default, dest=f"perf_{o.field}", metavar=o.metavar,
            help=o.help + (f"; env {SCALES_ENV}" if o.field == "scales" and env_defaults else ""))


def add_pytest_options(group) -> None:
    """The same options for pytest (``--perf-scales``, ``--perf-npl-changes``, ...)."""
    add_arguments(group, prefix="perf-", env_defaults=True)


def from_values(values: dict[str, Any] | Callable[[str], Any]) -> PerfOptions:
    """Options from parsed values: ``vars(argparse_namespace)`` or pytest's ``config.getoption``."""
    get = values.get if isinstance(values, dict) else values
    kw: dict[str, Any] = {}
    for o in options():
        if o.negate:
            kw[o.field] = not get(f"perf_{o.field}_off")
        else:
            v = get(f"perf_{o.field}")
            # pytest does not run ``type`` on a default; argparse runs it only on string defaults
            kw[o.field] = o.type(v) if isinstance(v, str) and o.type is not None else v
    return PerfOptions(**kw)


def markdown() -> str:
    """The flags as a Markdown table (``perf run`` flag, pytest option, meaning)."""
    rows = ["| `perf run` | pytest | meaning |", "|---|---|---|"]
    for o in options():
        rows.append(f"| `--{o.flag}` | `--perf-{o.flag}` | {o.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())

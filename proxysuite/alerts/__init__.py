"""Prometheus alerting rules for kube-proxy-style proxies, rendered with the thresholds as parameters.

The rules are a template shipped as package data (``proxysuite/data/alerts/kube-proxy.rules.yaml``); each
``@name@`` in it is one field of :class:`Params`. ``proxysuite alerts render`` writes a ready rule file::

    proxysuite alerts render --selector 'job="kube-proxy"' --stale-seconds 300 -o kube-proxy-alerts.yaml

``tests/test_alerts.py`` runs ``promtool test rules`` on the rendered rules against series captured from
real kube-proxies (``proxysuite.alerts.capture``); docs/alerts.md says what each alert means and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..data import ALERTS
from ..errors import SuiteError

TEMPLATE = ALERTS / "kube-proxy.rules.yaml"
ALERT_NAMES = ("KubeProxyDown", "KubeProxySyncSlow", "KubeProxySyncStale", "KubeProxySyncFailures",
               "KubeProxyProgrammingLatencyHigh")

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class Params:
    """The thresholds and windows the rules take; each field is a ``--flag`` of ``proxysuite alerts render``."""

    selector: str = 'job="kube-proxy"'
    """label matchers that select the proxies' series (inside the braces)"""
    group_by: str = "job, instance"
    """labels that tell one proxy from another (one alert per distinct value set)"""
    window: str = "5m"
    """range of the rate()/increase() windows"""
    quantile: float = 0.99
    """quantile of the sync duration and programming latency histograms"""
    down_for: str = "5m"
    """how long up == 0 must last before KubeProxyDown fires"""
    sync_slow_seconds: float = 10.0
    """KubeProxySyncSlow: the quantile of rule sync duration above this many seconds"""
    sync_slow_for: str = "5m"
    """how long the sync must stay slow before KubeProxySyncSlow fires"""
    stale_seconds: int = 300
    """KubeProxySyncStale: changes waiting for this many seconds and no successful sync in that time"""
    stale_for: str = "0s"
    """how long that must hold before KubeProxySyncStale fires"""
    failures_for: str = "0s"
    """how long failures must keep showing before KubeProxySyncFailures fires"""
    programming_latency_seconds: float = 30.0
    """KubeProxyProgrammingLatencyHigh: the quantile of network programming latency above this many seconds"""
    programming_latency_for: str = "5m"
    """how long the latency must stay high before KubeProxyProgrammingLatencyHigh fires"""

    def values(self) -> dict[str, str]:
        out = {f.name: _fmt(getattr(self, f.name)) for f in fields(self)}
        out["quantile_pct"] = _fmt(round(self.quantile * 100, 6))
        return out

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.name == "window" or f.name.endswith("_for"):
                if not _DURATION.match(value):
                    raise SuiteError(f"{flag} {value!r} is not a Prometheus duration", f"write it like 30s, 5m or 1h30m ({flag})")
            elif isinstance(value, int | float) and f.name != "quantile" and not value > 0:
                raise SuiteError(f"{flag} {value} is not a positive number of seconds", f"give {flag} a number of seconds > 0")
        if not 0 < self.quantile < 1:
            raise SuiteError(f"--quantile {self.quantile} is outside (0, 1)", "write it like 0.99")
        if not self.group_by.strip() or not re.fullmatch(r"\s*[A-Za-z_]\w*(\s*,\s*[A-Za-z_]\w*)*\s*", self.group_by):
            raise SuiteError(f"--group-by {self.group_by!r} is not a list of label names", "write it like 'job, instance'")


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(params: Params | None = None, template: Path | None = None) -> str:
    """The rule file for ``params`` (defaults when None), checked to be YAML with every alert in it."""
    params = params or Params()
    params.validate()
    values = params.values()
    text = (template or TEMPLATE).read_text()

    def fill(m: re.Match) -> str:
        if m.group(1) not in values:
            raise SuiteError(f"{template or TEMPLATE} uses unknown parameter @{m.group(1)}@", "restore the template from git")
        return values[m.group(1)]

    out = re.sub(r"@(\w+)@", fill, text)
    doc = yaml.safe_load(out)
    names = [r.get("alert") for g in doc["groups"] for r in g["rules"]]
    if sorted(names) != sorted(ALERT_NAMES):
        raise SuiteError(f"the rendered rules define {names}, not {list(ALERT_NAMES)}", "restore the template from git")
    return out


def rules(text: str) -> dict[str, dict]:
    """Alert name → its rule (expr, for, labels, annotations) in a rendered rule file."""
    doc = yaml.safe_load(text)
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub) -> None:
    al = sub.add_parser("alerts", help="Prometheus alerting rules for the proxy: `proxysuite alerts render [--flags] [-o FILE]`")
    asub = al.add_subparsers(dest="alerts_action", required=True)
    r = asub.add_parser("render", help="write the alerting rules with these thresholds (docs/alerts.md)")
    for f in fields(Params):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        r.add_argument(flag, type=kind, default=f.default, help=f"{_doc(f.name)} (default: {f.default})")
    r.add_argument("-o", "--output", default="-", help="file to write (default: - for stdout)")


def _doc(name: str) -> str:
    # The field's attribute docstring, read from this file so --help and the docs say one thing.
    src = Path(__file__).read_text()
    m = re.search(rf"^    {name}: [^\n]*\n    \"\"\"(.*?)\"\"\"", src, re.M | re.S)
    return m.group(1).strip() if m else name


def run(args) -> int:
    params = Params(**{f.name: getattr(args, f.name) for f in fields(Params)})
    text = render(params)
    if args.output == "-":
        print(text, end="")
    else:
        Path(args.output).write_text(text)
    return 0

"""The alerting rules (proxysuite/data/alerts/, docs/alerts.md) fire on the faults they are for, and only there.

``promtool test rules`` runs the rendered rules against series captured from real kube-proxies
(``tests/data/alerts/*.yaml``, recorded by ``proxysuite.alerts.capture``; the README there says how): a
healthy proxy fires nothing, at any time; each faulty one fires exactly its alerts by the end of the capture
and none before the alert's own delay could have passed. Every alert also has a test showing that
the check fails when that alert's threshold is wrong, so none of these can pass whatever the rules say.

promtool is built from its Go module and cached (``proxysuite.alerts.promtool``; scripts/bootstrap does it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxysuite import alerts, cli
from proxysuite.alerts import Params, capture, promtool
from proxysuite.cluster.local import components
from proxysuite.errors import SuiteError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "alerts"
CAPTURES = {"iptables": DATA}
"""kube-proxy mode → the directory of its captured series."""

FIRES_AT_END: dict[str, dict[str, list[dict[str, str]]]] = {
    "healthy": {},
    "stopped": {"KubeProxySyncStale": [{"ip_family": "IPv4"}]},
    "killed": {"KubeProxyDown": [{}]},
    # A failing iptables-restore also leaves the waiting changes unprogrammed: the staleness alert is right too.
    "failing": {"KubeProxySyncFailures": [{"ip_family": "IPv4"}], "KubeProxySyncStale": [{"ip_family": "IPv4"}]},
    "slow": {"KubeProxySyncSlow": [{}]},
    "slower": {"KubeProxySyncSlow": [{}], "KubeProxyProgrammingLatencyHigh": [{}]},
}
"""Scenario → alerts firing at the end of the capture, with the labels each adds to job and instance."""

EARLY = {"KubeProxySyncFailures"}
"""Alerts with no built-in delay (for: 0s on a counter rising): every other one has at least 5 minutes."""
QUIET_AFTER_FAULT = 240
"""Seconds after the fault when only EARLY alerts may fire (each other alert needs 300 s or more)."""


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    return promtool.ensure(progress=lambda m: print(f"[promtool] {m}", file=sys.stderr, flush=True))


def scenario(name: str, data: Path = DATA) -> dict:
    return yaml.safe_load((data / f"{name}.yaml").read_text())


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def expected(rules: dict, alert: str, node: str, extra: dict[str, str]) -> dict:
    rule = rules[alert]
    annotations = {k: v.replace("{{ $labels.instance }}", node) for k, v in rule["annotations"].items()}
    assert "{{" not in "".join(annotations.values()), f"{alert}: the test only expands $labels.instance in annotations"
    return {"exp_labels": {**rule["labels"], "job": capture.JOB, "instance": node, **extra}, "exp_annotations": annotations}


def promtool_group(name: str, rules_text: str, data: Path = DATA, fires: dict | None = None) -> dict:
    """One promtool test group: the scenario's series, and what each alert shows at three moments."""
    doc = scenario(name, data)
    rules = alerts.rules(rules_text)
    fires = FIRES_AT_END[name] if fires is None else fires
    step = seconds(doc["interval"])
    end = (doc["samples"] - 1) * step
    fault = round(doc["fault_at_seconds"] / step) * step  # on promtool's evaluation grid
    checks = []
    for alert in alerts.ALERT_NAMES:
        at_end = [expected(rules, alert, doc["node"], extra) for extra in fires.get(alert, [])]
        moments = [(fault - step, []), (fault + QUIET_AFTER_FAULT, at_end if alert in EARLY else []), (end, at_end)]
        if name == "healthy":  # nothing, at any time
            moments = [(t * step, []) for t in range(doc["samples"])]
        checks += [{"eval_time": f"{t:g}s", "alertname": alert, "exp_alerts": exp} for t, exp in moments]
    return {"name": f"{doc['proxy_mode']}/{name}", "interval": doc["interval"], "input_series": doc["input_series"], "alert_rule_test": checks}


def run_promtool(promtool_bin: Path, tmp_path: Path, rules_text: str, groups: list[dict], interval: str) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yaml").write_text(rules_text)
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": interval,
                                                         "tests": groups}, sort_keys=False, width=1 << 20))
    return subprocess.run([str(promtool_bin), "test", "rules", str(tmp_path / "test.yaml")],
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------- the captured series


@pytest.mark.parametrize("mode", list(CAPTURES))
@pytest.mark.parametrize("name", list(capture.SCENARIOS))
def test_captured_series_show_their_fault(mode: str, name: str):
    # The data must be what it says: a recapture that went wrong is caught here, not as a puzzling promtool diff.
    doc = scenario(name, CAPTURES[mode])
    assert (doc["scenario"], doc["proxy_mode"], doc["kubernetes"]) == (name, mode, components.read_pins().kubernetes)
    series = {s["series"]: s["values"].split() for s in doc["input_series"]}
    fault = int(doc["fault_at_seconds"] // seconds(doc["interval"]))
    up = series[f'up{{instance="{doc["node"]}",job="kube-proxy"}}']
    assert len(up) == doc["samples"] and set(up[:fault]) == {"1"}, "every proxy answers its scrapes before the fault"
    v4 = 'instance="{}",ip_family="IPv4",job="kube-proxy"'.format(doc["node"])
    last = series[f"kubeproxy_sync_proxy_rules_last_timestamp_seconds{{{v4}}}"]
    if name == "killed":
        assert set(up[fault:]) == {"0"} and last[fault] == "stale"
        return
    assert set(up) == {"1"}
    # Idle before the fault: no sync at all (kube-proxy's periodic resync is an hour), so the age of the last
    # sync passed 300 s on every healthy proxy, which is why KubeProxySyncStale also asks for waiting changes.
    assert len(set(last[:fault])) == 1 and fault * seconds(doc["interval"]) > 300
    after = set(last[fault + 1:])
    if name in ("stopped", "failing"):
        assert after == {last[fault - 1]}, "a hung or failing iptables-restore stops the successful syncs"
    else:
        assert len(after) > 3, "this proxy keeps syncing after the fault"


def test_healthy_idle_proxy_would_fire_a_bare_age_rule(promtool_bin, tmp_path):
    # The reason KubeProxySyncStale is not just `time() - last sync > 300`: this proxy is healthy and idle.
    doc = scenario("healthy")
    step = seconds(doc["interval"])
    index = int(doc["fault_at_seconds"] // step) - 1
    labels = 'instance="{}",ip_family="IPv4",job="kube-proxy"'.format(doc["node"])
    last = next(s for s in doc["input_series"] if s["series"] == f"kubeproxy_sync_proxy_rules_last_timestamp_seconds{{{labels}}}")
    age = index * step - float(last["values"].split()[index])
    assert age > 300
    group = {"name": "bare-age", "interval": doc["interval"], "input_series": doc["input_series"], "promql_expr_test": [{
        "expr": 'time() - kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} > 300', "eval_time": f"{index * step:g}s",
        "exp_samples": [{"labels": f"{{{labels}}}", "value": age}]}]}
    proc = run_promtool(promtool_bin, tmp_path, alerts.render(), [group], doc["interval"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("mode", list(CAPTURES))
def test_rules_fire_on_their_faults_and_only_there(promtool_bin, tmp_path, mode):
    rules_text = alerts.render()
    groups = [promtool_group(name, rules_text, CAPTURES[mode]) for name in capture.SCENARIOS]
    proc = run_promtool(promtool_bin, tmp_path, rules_text, groups, groups[0]["interval"])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "SUCCESS" in proc.stdout + proc.stderr


WRONG = [
    # (the wrong threshold, the scenario where it shows, the alert that then misbehaves)
    (dict(down_for="10m"), "killed", "KubeProxyDown"),            # never fires in the 8 minutes captured
    (dict(down_for="1m"), "killed", "KubeProxyDown"),             # fires before its 5 minutes
    (dict(stale_seconds=600), "stopped", "KubeProxySyncStale"),   # never fires
    (dict(stale_seconds=120), "stopped", "KubeProxySyncStale"),   # fires 4 minutes after the hang
    (dict(failures_for="10m"), "failing", "KubeProxySyncFailures"),
    (dict(sync_slow_seconds=20.0), "slow", "KubeProxySyncSlow"),  # 12 s syncs are not slower than 20 s
    (dict(sync_slow_seconds=0.001), "healthy", "KubeProxySyncSlow"),
    (dict(programming_latency_seconds=120.0), "slower", "KubeProxyProgrammingLatencyHigh"),
    (dict(programming_latency_seconds=0.5), "healthy", "KubeProxyProgrammingLatencyHigh"),
]


@pytest.mark.parametrize("mode", list(CAPTURES))
@pytest.mark.parametrize("wrong, name, alert", WRONG, ids=[f"{a}-{n}-{next(iter(w))}" for w, n, a in WRONG])
def test_a_wrong_threshold_fails_the_check(promtool_bin, tmp_path, wrong, name, alert, mode):
    # The expectations stay those of the real thresholds; only the rules change. promtool must then report
    # exactly this alert as wrong, so the passing test above depends on each threshold.
    right = alerts.render()
    rules_text = alerts.render(Params(**wrong))
    assert rules_text != right
    group = promtool_group(name, right, CAPTURES[mode])
    proc = run_promtool(promtool_bin, tmp_path, rules_text, [group], group["interval"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"promtool passed with {wrong}:\n{out[-3000:]}"
    wrong_alerts = set(re.findall(r"alertname: (\w+)", out))
    assert wrong_alerts == {alert}, out[-3000:]


# ---------------------------------------------------------------------------------------------- rendering


def test_render_defaults_and_parameters():
    default = alerts.rules(alerts.render())
    assert list(default) == list(alerts.ALERT_NAMES)
    assert default["KubeProxyDown"]["for"] == "5m" and 'up{job="kube-proxy"} == 0' in default["KubeProxyDown"]["expr"]
    assert "> 10\n" in default["KubeProxySyncSlow"]["expr"] + "\n" and "histogram_quantile(0.99," in default["KubeProxySyncSlow"]["expr"]
    assert "> 300)" in default["KubeProxySyncStale"]["expr"] and "[300s:]" in default["KubeProxySyncStale"]["expr"]
    assert "> 30\n" in default["KubeProxyProgrammingLatencyHigh"]["expr"] + "\n"
    custom = alerts.rules(alerts.render(Params(selector='job="proxy",cluster="a"', group_by="cluster, instance", quantile=0.9,
                                               sync_slow_seconds=2.5, window="10m")))
    slow = custom["KubeProxySyncSlow"]
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{job="proxy",cluster="a"}[10m]' in slow["expr"]
    assert "sum by (cluster, instance, le)" in slow["expr"] and "> 2.5" in slow["expr"]
    assert "p90 " in slow["annotations"]["summary"]


@pytest.mark.parametrize("bad, fix", [
    (dict(window="5 minutes"), "30s, 5m"), (dict(down_for="-1m"), "30s, 5m"), (dict(quantile=1.5), "0.99"),
    (dict(stale_seconds=0), "> 0"), (dict(group_by="job; instance"), "'job, instance'"),
])
def test_bad_parameters_are_refused_with_the_fix(bad, fix):
    with pytest.raises(SuiteError) as exc:
        alerts.render(Params(**bad))
    assert fix in str(exc.value)


def test_cli_render_writes_checked_rules(promtool_bin, tmp_path, capsys):
    out = tmp_path / "rules.yaml"
    assert cli.main(["alerts", "render", "--stale-seconds", "600", "--down-for", "2m", "-o", str(out)]) == 0
    rules = alerts.rules(out.read_text())
    assert rules["KubeProxyDown"]["for"] == "2m" and "> 600)" in rules["KubeProxySyncStale"]["expr"]
    check = subprocess.run([str(promtool_bin), "check", "rules", str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert cli.main(["alerts", "render", "--quantile", "2"]) == 2
    assert "--quantile" in capsys.readouterr().err


def test_promtool_is_pinned_and_built_like_the_components(promtool_bin):
    # One Go toolchain for both builds (fetched and cached once), a pinned Prometheus, and bootstrap builds it.
    gomod = (promtool.module_dir() / "go.mod").read_text()
    assert f"toolchain {components.read_pins().toolchain}\n" in gomod
    version, digest = promtool.pinned_version()
    assert re.fullmatch(r"v0\.\d+\.\d+", version) and promtool_bin == promtool.path() and digest in str(promtool_bin)
    assert "proxysuite.alerts.promtool" in (ROOT / "scripts" / "bootstrap").read_text()
    out = subprocess.run([str(promtool_bin), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert f"version {version.lstrip('v')}" in out


# ---------------------------------------------------------------------------------------------- live recapture


SHORT = ["--interval", "5", "--idle", "20", "--faulty", "150", "--churn", "10"]
"""A short capture (about 3 minutes instead of 15): tests/data/alerts/nftables/ and the live recapture."""
FAST = Params(window="1m", down_for="40s", stale_seconds=40, sync_slow_for="30s", programming_latency_for="15s")
"""The rules with every delay scaled down to fit a short capture; the thresholds are the real ones."""


def check_short_capture(promtool_bin: Path, tmp_path: Path, data: Path) -> None:
    rules_text = alerts.render(FAST)
    groups = []
    for name in capture.SCENARIOS:
        group = promtool_group(name, rules_text, data=data)
        # Healthy: nothing at any time; the others: at the end (QUIET_AFTER_FAULT belongs to the full-length delays).
        if name != "healthy":
            end = group["alert_rule_test"][-1]["eval_time"]
            group["alert_rule_test"] = [c for c in group["alert_rule_test"] if c["eval_time"] == end]
        groups.append(group)
    proc = run_promtool(promtool_bin, tmp_path, rules_text, groups, groups[0]["interval"])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_short_nftables_capture_fires_the_same_alerts(promtool_bin, tmp_path):
    # nftables mode: the failures come from kubeproxy_sync_proxy_rules_nftables_sync_failures_total, the
    # hang, failure and slowness from a wrapped nft.
    data = DATA / "nftables"
    failing = {s["series"].split("{")[0] for s in scenario("failing", data)["input_series"]}
    assert "kubeproxy_sync_proxy_rules_nftables_sync_failures_total" in failing
    assert scenario("failing", data)["proxy_mode"] == "nftables"
    check_short_capture(promtool_bin, tmp_path, data)


@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")
def test_recapture_fires_the_same_alerts(promtool_bin, tmp_path):
    # A short recapture from real kube-proxies (iptables), checked by the same rules with every delay
    # scaled down: the series above are not a one-off.
    out = tmp_path / "series"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    proc = subprocess.run([sys.executable, "-m", "proxysuite.alerts.capture", "--out", str(out), *SHORT,
                           "--cluster-name", f"pstest-alerts-{worker}"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_short_capture(promtool_bin, tmp_path, out)

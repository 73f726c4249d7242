"""Lifecycle of local clusters: nothing is left after `cluster down`, after a crash + janitor, and bad input fails in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from proxysuite.cluster.local import netns, procs
from proxysuite.cluster.local.state import state_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")

CLI = [sys.executable, "-m", "proxysuite.cli"]


def leftovers(run_id: str, name: str) -> dict:
    return {
        "netns": [n for n in netns.listing() if n.startswith(f"ps-{run_id}-")],
        "processes": sorted(procs.pids_with_run_id(run_id)),
        "state_dir": state_dir(name).exists(),
    }


def root_ns_rules() -> tuple[int, int]:
    ipt = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout.count("KUBE-")
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.count("kube-proxy")
    return ipt, nft


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300, **kw)


@pytest.mark.live
def test_cluster_down_leaves_nothing():
    name = "pstest-down"
    before = root_ns_rules()
    up = cli("cluster", "up", "--cluster-name", name, "--nodes", "1")
    assert up.returncode == 0, up.stderr
    status = cli("cluster", "status", "--cluster-name", name, "-o", "json")
    import json

    st = json.loads(status.stdout)
    assert st["healthy"], st
    run_id = st["run_id"]
    assert leftovers(run_id, name)["netns"], "the cluster made namespaces"
    down = cli("cluster", "down", "--cluster-name", name)
    assert down.returncode == 0, down.stderr
    assert leftovers(run_id, name) == {"netns": [], "processes": [], "state_dir": False}
    assert root_ns_rules() == before, "the root namespace's rules changed"


@pytest.mark.live
def test_sigkilled_session_is_cleaned_by_the_janitor(tmp_path: Path):
    # A "session" that owns its cluster, then dies without any chance to clean up.
    name = "pstest-crash"
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        from proxysuite.cluster.local import provider
        from proxysuite.config import SuiteConfig
        cl = provider.up(SuiteConfig(cluster_name={name!r}, nodes=1), progress=lambda m: None, owner_pid=os.getpid())
        print(cl.state.run_id, flush=True)
        time.sleep(600)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        run_id = owner.stdout.readline().strip()
        assert run_id, "the owner brought its cluster up"
        assert leftovers(run_id, name)["processes"]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert leftovers(run_id, name)["netns"], "SIGKILL leaves the cluster behind (that is the janitor's job)"
    jan = cli("janitor")
    assert jan.returncode == 0, jan.stderr
    assert leftovers(run_id, name) == {"netns": [], "processes": [], "state_dir": False}, jan.stderr


def one_line_error(proc: subprocess.CompletedProcess, rc: int, *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "(fix: " in lines[0], proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_mode():
    one_line_error(cli("cluster", "up", "--mode", "bogus"), 2, "unknown proxy mode 'bogus'", "--mode")


def test_ipvs_on_this_kernel_is_unsupported_with_the_reason():
    proc = cli("cluster", "up", "--mode", "ipvs", "--cluster-name", "pstest-ipvs")
    one_line_error(proc, 3, "IPVS")


def test_cilium_on_local_is_unsupported_with_the_reason():
    one_line_error(cli("cluster", "up", "--mode", "cilium"), 3, "kind")


def test_not_root():
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CLI, "cluster", "up", "--cluster-name", "pstest-nonroot"],
                          capture_output=True, text=True, cwd="/tmp", env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    one_line_error(proc, 2, "root")


def test_missing_iptables_binary(tmp_path: Path):
    # A PATH with the basic tools but without iptables.
    for tool in ("ip", "unshare", "sysctl", "nft", "go"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (tmp_path / tool).symlink_to(found)
    proc = cli("cluster", "up", "--mode", "iptables", "--cluster-name", "pstest-noipt", env={"PATH": str(tmp_path)})
    one_line_error(proc, 2, "apt-get install -y iptables")


def test_api_port_clash():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = cli("cluster", "up", "--cluster-name", "pstest-port", "--api-port", str(port))
    one_line_error(proc, 2, f"127.0.0.1:{port}", "--api-port")
    assert not state_dir("pstest-port").exists()


def test_cidr_clash():
    proc = cli("cluster", "up", "--cluster-name", "pstest-cidr", env={"PROXYSUITE_POD_CIDR": "10.96.0.0/12"})
    one_line_error(proc, 2, "overlaps", "PROXYSUITE_POD_CIDR")
    assert not state_dir("pstest-cidr").exists()


@pytest.mark.live
def test_custom_proxy_command_runs_on_every_node():
    """--mode custom runs the user's proxy in each node namespace; kube-proxy itself stands in as that proxy."""
    from proxysuite.cluster.local import components, provider
    from proxysuite.config import SuiteConfig
    from proxysuite.probes.engine import OK, ProbeRequest

    kp = components.ensure()["kube-proxy"]
    template = (f"{kp} --kubeconfig {{kubeconfig}} --proxy-mode nftables --hostname-override {{node}} "
                "--cluster-cidr {cluster_cidr} --conntrack-max-per-core 0 "
                "--metrics-bind-address {metrics_addr} --healthz-bind-address {healthz_addr}")
    cfg = SuiteConfig(mode="custom", proxy_cmd=template, nodes=2, cluster_name="pstest-custom")
    cl = provider.up(cfg, progress=lambda m: None, owner_pid=os.getpid())
    try:
        for node in cl.nodes():
            argv = cl.state.argv[f"proxy-{node.name}"]
            assert argv[0] == str(kp) and node.name in argv, argv
            assert cl.proxy_http(node.name, 10249, "/proxyMode") == (200, "nftables")
        # The custom proxy programs real rules: the kubernetes Service answers from a node.
        vantage = cl.node_vantage("node-2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            obs = vantage.run([ProbeRequest(cl.state.addressing.service_vip, 443, ask="connect", timeout=1)])[0]
            if obs.outcome == OK:
                break
            time.sleep(0.5)
        assert obs.outcome == OK, obs
    finally:
        provider.down(cfg, progress=lambda m: None)


def test_unknown_placeholder_in_proxy_cmd():
    proc = cli("cluster", "up", "--mode", "custom", "--proxy-cmd", "myproxy --x {nope}", "--cluster-name", "pstest-badtmpl")
    one_line_error(proc, 2, "{nope}")
    assert not state_dir("pstest-badtmpl").exists()


def test_ipvs_skips_in_pytest_with_the_reason(tmp_path: Path):
    (tmp_path / "test_uses_cluster.py").write_text("def test_x(cluster):\n    raise AssertionError('must not run')\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--provider", "local", "--mode", "ipvs",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout and "IPVS" in proc.stdout, proc.stdout


PERF_SMALL = ["--nodes", "1", "--first-packet-rounds", "10", "--npl-changes", "2", "--npl-creates", "1",
              "--load-seconds", "0", "--load-max-seconds", "0", "--no-restart"]


def _removed_run_id(stderr: str, name: str) -> str:
    line = next((ln for ln in stderr.splitlines() if f"removed local cluster {name} (run " in ln), "")
    assert line, f"perf run did not bring its cluster down:\n{stderr[-2000:]}"
    return line.split("(run ", 1)[1].split(")", 1)[0]


@pytest.mark.live
def test_perf_run_brings_down_the_cluster_it_created(tmp_path: Path):
    name = "pstest-perf"
    proc = cli("perf", "run", "--cluster-name", name, "--scales", "20", "--reports-dir", str(tmp_path), *PERF_SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = list((tmp_path / "perf").glob("*/results.parquet"))
    assert saved, "the sweep saved its frame"
    phases = json.loads((saved[0].parent / "meta.json").read_text())["phases"]  # phases turned off say so
    assert phases["restart"]["reason"] == "turned off (--no-restart)" and phases["load"]["skipped"] == [20], phases
    assert phases["create"]["ran"] == phases["npl"]["ran"] == [20], phases
    assert leftovers(_removed_run_id(proc.stderr, name), name) == {"netns": [], "processes": [], "state_dir": False}


@pytest.mark.live
def test_sigterm_during_perf_run_cleans_up(tmp_path: Path):
    name = "pstest-perf-term"
    proc = subprocess.Popen([*CLI, "perf", "run", "--cluster-name", name, "--scales", "3000", "--reports-dir", str(tmp_path),
                             *PERF_SMALL], stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # the sweep has started once it names its first scale
            seen.append(line)
            if "perf: scale 3000" in line:
                break
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            cli("janitor")
    stderr = "".join(seen) + rest
    assert proc.returncode != 0, stderr[-2000:]
    assert leftovers(_removed_run_id(stderr, name), name) == {"netns": [], "processes": [], "state_dir": False}


def _kube_proxies(kubeconfig_dir: str) -> list[int]:
    """Live kube-proxy processes of one cluster (their command line names a file of its state directory)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"kube-proxy") and any(kubeconfig_dir.encode() in a for a in argv):
            out.append(int(d.name))
    return out


def test_proxy_restarts_from_two_handles_leave_one_kube_proxy():
    """Two processes hold one cluster (xdist workers): a restart by one, then by the other, must stop the live
    kube-proxy, not the pid the second one remembered from before (which left two kube-proxies on a node)."""
    from proxysuite.cluster.local import provider
    from proxysuite.config import SuiteConfig

    cfg = SuiteConfig(nodes=1, cluster_name="pstest-handles")
    first = provider.up(cfg, progress=lambda m: None, owner_pid=os.getpid())
    try:
        second = provider.up(cfg, progress=lambda m: None, owner_pid=os.getpid())
        where = str(first.state.dir)
        assert len(_kube_proxies(where)) == 1
        first.restart_proxy("node-1")
        second.restart_proxy("node-1")
        first.restart_proxy_with("node-1", {"v": "2"})
        deadline = time.monotonic() + 15
        while not _kube_proxies(where) and time.monotonic() < deadline:  # the last one may still be exec'ing
            time.sleep(0.1)
        time.sleep(1)
        alive = _kube_proxies(where)
        assert len(alive) == 1, f"kube-proxies of node-1 running: {alive}"
        saved = json.loads((first.state.dir / "state.json").read_text())["procs"]["proxy-node-1"]
        assert alive == [saved], (alive, saved)
    finally:
        provider.down(cfg, progress=lambda m: None)

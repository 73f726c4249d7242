"""The local node agent's pod runtime, for real: netns, veth, processes, probes, termination.

These tests need root, ``ip``/``unshare``/``nsenter`` and the pinned agnhost binary (built and
cached by ``proxysuite.cluster.local.components``; ``PROXYSUITE_AGNHOST`` overrides it).
Each runtime test builds its own node netns ``ps-t<random>-node-t`` (no fabric, no apiserver) and
removes everything it made in a finalizer, so the root netns is never touched.

The three tests at the end run the whole agent (as the local provider starts it) against a real
control plane: the session's ``cluster`` fixture (``--provider local``) brings one up or reuses it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from proxysuite.cluster.local import podruntime as rt
from support import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def _agnhost() -> str:
    """The pinned agnhost the local provider runs (built once and cached; PROXYSUITE_AGNHOST overrides)."""
    override = os.environ.get("PROXYSUITE_AGNHOST")
    if override:
        return override
    from proxysuite.cluster.local import components

    return str(components.ensure(progress=lambda m: None)["agnhost"])


NODE_IP = "10.250.0.11"
POD_CIDR = "10.251.7.0/24"


def _leftover_pids(run_id: str) -> list[int]:
    """Processes carrying this test's run id (the same marker the janitor uses)."""
    pids = []
    needle = f"PROXYSUITE_RUN_ID={run_id}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.fixture
def node(tmp_path):
    """A bare node netns with lo up and the node IP on lo; a NodeEnv around it; full cleanup afterwards."""
    # 7 chars on purpose: `proxysuite janitor` reaps every 6-char run id that has no live cluster, and
    # a janitor run from another session would kill this test's pods mid-test. The finalizer cleans up.
    run_id = "t" + secrets.token_hex(3)
    name = f"ps-{run_id}-node-t"
    pr_netns.create(name)

    def cleanup():
        for pid in _leftover_pids(run_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in pr_netns.listnetns():
            if ns.startswith(f"ps-{run_id}-"):
                try:
                    pr_netns.remove(ns)
                except OSError as exc:
                    print(f"cleanup: could not remove netns {ns}: {exc}")

    try:
        with IPRoute(netns=name, flags=0) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            ipr.addr("add", index=lo, address=NODE_IP, prefixlen=32)
            # The node forwards nothing in these tests, but the agent expects a router.
        env = rt.NodeEnv(node="node-t", node_netns=name, node_ip=NODE_IP, pod_cidr=POD_CIDR, run_id=run_id,
                         state_dir=tmp_path / "state", agnhost=_agnhost())
        yield env
    finally:
        cleanup()


class Sink:
    """Collects every status the worker reports; ``wait`` polls the latest one."""

    def __init__(self):
        self.statuses: list[dict] = []
        self.finished: list[bool] = []

    def __call__(self, pod, status):
        self.statuses.append(json.loads(json.dumps(status)))

    def on_finished(self, pod, deleted):
        self.finished.append(deleted)

    @property
    def last(self) -> dict:
        return rt.strip_nulls(self.statuses[-1]) if self.statuses else {}

    def wait(self, what: str, pred, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.statuses and pred(self.last):
                return self.last
            time.sleep(0.1)
        raise AssertionError(f"pod status did not reach '{what}' within {timeout:g}s; last status: {json.dumps(self.last, indent=1)}")


@contextmanager
def running(pod: dict, node: rt.NodeEnv):
    """A started PodWorker and its status sink; the pod is killed at the end, whatever happened."""
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    try:
        yield w, sink
    finally:
        w.kill_now()
        w.join(10)


def cond(status: dict, ctype: str) -> str | None:
    for c in status.get("conditions", []):
        if c["type"] == ctype:
            return c["status"]
    return None


def make_pod(name: str, containers: list[dict], **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "ns1", "uid": str(uuid.uuid4())},
            "spec": {"nodeName": "node-t", "containers": containers, **spec},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": rt.now_rfc3339()}]}}


def netexec(name: str = "app", *extra: str, **fields) -> dict:
    return {"name": name, "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
            "args": ["netexec", "--http-port=8080", "--udp-port=8081", *extra],
            "ports": [{"name": "http", "containerPort": 8080}], **fields}


def http_from_node(env: rt.NodeEnv, host: str, port: int, path: str) -> str:
    sock = rt.netns_socket(env.node_netns)
    try:
        sock.settimeout(3)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    return data.partition(b"\r\n\r\n")[2].decode().strip()


def links(netns: str) -> list[str]:
    with IPRoute(netns=netns, flags=0) as ipr:
        return [link.get("ifname") for link in ipr.get_links()]


# ------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------
def test_names_fit_kernel_limits():
    uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    assert rt.pod_netns_name("abc123", uid) == "ps-abc123-pod-0f1e2d3c4b5a"
    assert rt.host_veth_name(uid) == "v0f1e2d3c4b" and len(rt.host_veth_name(uid)) <= 15


def test_pod_hostname_like_kubelet():
    assert rt.pod_hostname({"metadata": {"name": "web-0"}, "spec": {}}) == "web-0"
    assert rt.pod_hostname({"metadata": {"name": "web-0"}, "spec": {"hostname": "db"}}) == "db"
    long = "a" * 62 + "-b" + "c" * 10
    assert rt.pod_hostname({"metadata": {"name": long}, "spec": {}}) == "a" * 62


def test_ipam_persists_and_never_reuses_live_ips(tmp_path):
    a = rt.IPAM(tmp_path, "10.244.1.0/24")
    ip1, ip2 = a.allocate("u1"), a.allocate("u2")
    assert (ip1, ip2) == ("10.244.1.2", "10.244.1.3") and a.gateway == "10.244.1.1"
    assert a.allocate("u1") == ip1, "allocation must be idempotent"
    b = rt.IPAM(tmp_path, "10.244.1.0/24")  # a restarted agent
    assert b.allocations() == {"u1": ip1, "u2": ip2}
    b.release("u1")
    assert b.allocate("u3") == "10.244.1.4", "a freed address is reused only after the rest of the range"
    assert b.reserve("u9", "10.244.1.9") and not b.reserve("u10", "10.244.1.9"), "reserve never takes a held address"
    assert not b.reserve("u11", "10.244.9.9") and not b.reserve("u12", "10.244.1.1"), "only pod addresses of this CIDR"
    with pytest.raises(RuntimeError, match="is for 10.244.1.0/24"):
        rt.IPAM(tmp_path, "10.244.2.0/24").allocate("x")


def test_image_mapping():
    ag = "/x/agnhost"
    assert rt.resolve_argv({"image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "args": ["netexec"]}, ag) == [ag, "netexec"]
    assert rt.resolve_argv({"image": "foo/agnhost", "command": ["/agnhost", "pause"]}, ag) == [ag, "pause"]
    assert rt.resolve_argv({"image": "registry.k8s.io/pause:3.10"}, ag) == ["sleep", "infinity"]
    assert rt.resolve_argv({"image": "busybox", "command": ["sleep"], "args": ["3600"]}, ag)[1:] == ["3600"]
    assert rt.resolve_argv({"image": "python:3", "command": ["python3", "-c", "pass"]}, ag)[0] == "/usr/bin/python3"
    env = {"MSG": "hi"}
    assert rt.resolve_argv({"image": "busybox", "command": ["sh", "-c"], "args": ["echo $(MSG) $$(X)"]}, ag, env)[-1] == "echo hi $(X)"
    with pytest.raises(rt.CannotRunImage, match="nginx:1.27.*agnhost"):
        rt.resolve_argv({"image": "nginx:1.27"}, ag)


# ------------------------------------------------------------------------------------------
# The runtime, for real
# ------------------------------------------------------------------------------------------
def test_pod_runs_probes_and_terminates_gracefully(node):
    pod = make_pod("backend-a", [netexec(
        "app", "--delay-shutdown=2",
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        lifecycle={"preStop": {"sleep": {"seconds": 1}}},
    )], terminationGracePeriodSeconds=10)
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    st = sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
    assert st["phase"] == "Running"
    assert st["podIP"] == "10.251.7.2" and st["podIPs"] == [{"ip": "10.251.7.2"}] and st["hostIP"] == NODE_IP
    cs = st["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
    assert [cond(st, t) for t in ("PodScheduled", "PodReadyToStartContainers", "Initialized", "ContainersReady")] == ["True"] * 4

    # The sandbox: pod netns with eth0 /32 and routes; node side veth with .1/32 and a /32 route.
    pod_ns, veth = rt.pod_netns_name(node.run_id, pod["metadata"]["uid"]), rt.host_veth_name(pod["metadata"]["uid"])
    assert set(links(pod_ns)) == {"lo", "eth0"} and veth in links(node.node_netns)
    with IPRoute(netns=node.node_netns, flags=0) as ipr:
        routes = {(r.get("RTA_DST"), r["dst_len"]) for r in ipr.get_routes(family=socket.AF_INET)}
        assert ("10.251.7.2", 32) in routes
    # What the suite relies on: /hostname from the node is the pod name (own UTS namespace per container).
    assert http_from_node(node, "10.251.7.2", 8080, "/hostname") == "backend-a"
    assert socket.gethostname() != "backend-a"
    log = node.pods_dir / "ns1_backend-a_app.log"
    assert log.exists()

    # Graceful termination: preStop (1s), SIGTERM, netexec keeps serving 2s more, and readiness
    # is probed throughout, so the pod is still reported ready while it is terminating.
    t0 = time.monotonic()
    terminating = {"metadata": {**pod["metadata"], "deletionTimestamp": rt.now_rfc3339(), "deletionGracePeriodSeconds": 10},
                   "spec": pod["spec"], "status": pod["status"]}
    w.update(terminating)
    w.join(20)
    elapsed = time.monotonic() - t0
    assert sink.finished == [True], "on_finished(deleted=True) tells the agent to delete the API object"
    assert cond(rt.strip_nulls(sink.statuses[-2]), "Ready") == "True", "a terminating pod that still passes readiness stays Ready"
    assert 2.5 <= elapsed < 10, f"preStop 1s + delay-shutdown 2s should take ~3s, took {elapsed:.1f}s"
    final = sink.last
    assert final["phase"] in ("Succeeded", "Failed") and cond(final, "Ready") == "False"
    assert "terminated" in final["containerStatuses"][0]["state"]

    # Everything is gone: netns, veth, processes, IP allocation, saved state.
    assert not rt.netns_exists(pod_ns)
    assert veth not in links(node.node_netns)
    assert _leftover_pids(node.run_id) == []
    assert node.ipam.allocations() == {}
    assert not (node.pods_dir / f"{pod['metadata']['uid']}.json").exists()


def test_readiness_is_probed_while_terminating(node, tmp_path):
    # The exec readiness probe passes while a file exists; it is removed once termination began
    # (the preStop sleep keeps the container running), so Ready must turn False before the end.
    flag = tmp_path / "ready"
    flag.touch()
    pod = make_pod("draining", [{"name": "c", "image": "pause",
                                 "readinessProbe": {"exec": {"command": ["sh", "-c", f"test -e {flag}"]}, "periodSeconds": 1},
                                 "lifecycle": {"preStop": {"sleep": {"seconds": 4}}}}], terminationGracePeriodSeconds=10)
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
    w.begin_termination(10)
    time.sleep(0.5)
    flag.unlink()
    st = sink.wait("unready while still running", lambda s: cond(s, "Ready") == "False", timeout=4)
    assert "running" in st["containerStatuses"][0]["state"], "the container is still in preStop: readiness alone turned it unready"
    w.join(15)
    assert sink.finished == [True]


def test_sigkill_after_grace(node):
    # sh ignores SIGTERM here, so only the SIGKILL at the end of the grace period stops it.
    pod = make_pod("stubborn", [{"name": "c", "image": "busybox", "command": ["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.2; done"]}])
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    sink.wait("Running", lambda s: s.get("phase") == "Running")
    log = node.pods_dir / "ns1_stubborn_c.log"
    # The log's first line repeats the command, so look for "armed" on a line of its own.
    wait_for("the TERM trap to be set", lambda: log.exists() and "armed" in log.read_text().splitlines()[1:], timeout=10)
    t0 = time.monotonic()
    w.begin_termination(1.5)
    w.join(15)
    assert 1.4 <= time.monotonic() - t0 < 6
    term = sink.last["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 137 and sink.last["phase"] == "Failed"
    assert _leftover_pids(node.run_id) == []


def test_liveness_failure_restarts_container(node):
    pod = make_pod("flaky", [netexec(livenessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 1},
                                     terminationGracePeriodSeconds=1)])
    with running(pod, node) as (_, sink):
        st = sink.wait("restarted once", lambda s: s["containerStatuses"][0]["restartCount"] >= 1, timeout=15)
        cs = st["containerStatuses"][0]
        assert cs["lastState"]["terminated"]["exitCode"] in (137, 143, 2)
        assert st["phase"] == "Running"
        # The second failure waits out kubelet's 10s back-off.
        st = sink.wait("CrashLoopBackOff", lambda s: s["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff")
        assert "back-off 10s" in st["containerStatuses"][0]["state"]["waiting"]["message"]
        assert st["phase"] == "Running", "an Always pod in back-off is still Running (kubelet getPhase)"


def test_startup_probe_gates_started_and_readiness(node):
    pod = make_pod("slow-start", [netexec(
        startupProbe={"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 2, "periodSeconds": 1},
        readinessProbe={"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1})])
    with running(pod, node) as (_, sink):
        st = sink.wait("running", lambda s: "running" in s["containerStatuses"][0]["state"])
        assert not st["containerStatuses"][0]["started"] and not st["containerStatuses"][0]["ready"]
        t0 = time.monotonic()
        sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
        assert time.monotonic() - t0 >= 1.0, "readiness must wait for the startup probe (initialDelaySeconds 2)"
        assert sink.last["containerStatuses"][0]["started"]


def test_failing_startup_probe_restarts_container(node):
    pod = make_pod("never-starts", [netexec(startupProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 2},
                                            terminationGracePeriodSeconds=1)])
    with running(pod, node) as (_, sink):
        st = sink.wait("restarted by the startup probe", lambda s: s["containerStatuses"][0]["restartCount"] >= 1, timeout=15)
        assert not any(s["containerStatuses"][0]["ready"] for s in map(rt.strip_nulls, sink.statuses))


def test_https_probe_skips_verification(node, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a self-signed certificate")
    import subprocess

    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    pod = make_pod("tls", [netexec("app", f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
                                   readinessProbe={"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTPS"}, "periodSeconds": 1})])
    with running(pod, node) as (_, sink):
        sink.wait("Ready over HTTPS", lambda s: cond(s, "Ready") == "True")


def test_exec_probe_runs_in_the_container(node):
    # The exec probe sees the container's hostname (UTS ns) and network (pod netns).
    probe = {"exec": {"command": ["sh", "-c", "test \"$(hostname)\" = exec-pod && ip -4 -o addr show eth0 | grep -q 10.251.7."]},
             "periodSeconds": 1}
    pod = make_pod("exec-pod", [{"name": "c", "image": "pause", "readinessProbe": probe}])
    with running(pod, node) as (_, sink):
        sink.wait("Ready via exec probe", lambda s: cond(s, "Ready") == "True")


def test_never_pod_completes_and_releases_sandbox(node):
    pod = make_pod("job", [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo out; exit 3"]}], restartPolicy="Never")
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    w.join(15)
    st = sink.last
    assert st["phase"] == "Failed" and sink.finished == [False]
    assert st["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert cond(st, "Ready") == "False" and st["podIP"] == "10.251.7.2"
    assert not rt.netns_exists(rt.pod_netns_name(node.run_id, pod["metadata"]["uid"]))
    assert "out" in (node.pods_dir / "ns1_job_c.log").read_text()


def test_on_failure_restarts_until_success(node):
    # Fails on the first run (no marker file yet), succeeds on the second: one restart, then Succeeded.
    marker = node.state_dir / "marker"
    script = f"if [ -e {marker} ]; then exit 0; else touch {marker}; exit 1; fi"
    pod = make_pod("retry", [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}], restartPolicy="OnFailure")
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    w.join(15)
    st = sink.last
    assert st["phase"] == "Succeeded" and st["containerStatuses"][0]["restartCount"] == 1
    assert st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1


def test_readiness_gate_holds_ready(node):
    pod = make_pod("gated", [{"name": "c", "image": "pause"}], readinessGates=[{"conditionType": "example.com/lb-ready"}])
    with running(pod, node) as (w, sink):
        st = sink.wait("ContainersReady", lambda s: cond(s, "ContainersReady") == "True")
        assert cond(st, "Ready") == "False" and next(c for c in st["conditions"] if c["type"] == "Ready")["reason"] == "ReadinessGatesNotReady"
        gate = {"type": "example.com/lb-ready", "status": "True", "lastTransitionTime": rt.now_rfc3339()}
        w.update({**pod, "status": {"conditions": pod["status"]["conditions"] + [gate]}})
        sink.wait("Ready once the gate is True", lambda s: cond(s, "Ready") == "True")


def test_unknown_image_waits_with_reason(node):
    pod = make_pod("web", [{"name": "nginx", "image": "nginx:1.27"}])
    with running(pod, node) as (_, sink):
        st = sink.wait("waiting", lambda s: s["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == rt.CANNOT_RUN_REASON)
        assert st["phase"] == "Pending" and "nginx:1.27" in st["containerStatuses"][0]["state"]["waiting"]["message"]
    assert sink.finished == [True]


def test_init_containers_and_env(node):
    pod = make_pod("with-init", [netexec(env=[{"name": "A", "value": "1"},
                                              {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])],
                   initContainers=[{"name": "init", "image": "busybox", "command": ["sh", "-c", "sleep 0.5"]}])
    with running(pod, node) as (w, sink):
        st = sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
        assert st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        assert cond(st, "Initialized") == "True"
        pid = w.containers[0].proc.pid
        env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
        assert env["A"] == "1" and env["MY_IP"] == st["podIP"] and env["PROXYSUITE_RUN_ID"] == node.run_id


def test_sidecar_starts_before_app_counts_for_ready_and_stops_last(node, tmp_path):
    flag = tmp_path / "side-ready"
    pod = make_pod("with-sidecar", [{"name": "app", "image": "busybox", "command": ["sh", "-c", "sleep 4"]}], restartPolicy="Never",
                   initContainers=[
                       {"name": "setup", "image": "busybox", "command": ["sh", "-c", "true"]},
                       {"name": "side", "image": "pause", "restartPolicy": "Always",
                        "readinessProbe": {"exec": {"command": ["sh", "-c", f"test -e {flag}"]}, "periodSeconds": 1}}])
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    st = sink.wait("app running", lambda s: "running" in s["containerStatuses"][0]["state"])
    assert cond(st, "Initialized") == "True"
    assert [c["name"] for c in st["initContainerStatuses"]] == ["setup", "side"]
    assert st["initContainerStatuses"][0]["ready"], "a completed init container reports ready"
    assert "running" in st["initContainerStatuses"][1]["state"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "side" in ready["message"], "an unready sidecar holds the pod unready"
    flag.touch()
    sink.wait("Ready with the sidecar ready", lambda s: cond(s, "Ready") == "True")
    w.join(20)
    st = sink.last
    assert st["phase"] == "Succeeded", "the sidecar's exit code (SIGTERM) does not decide the phase"
    app_end = st["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
    side_end = st["initContainerStatuses"][1]["state"]["terminated"]["finishedAt"]
    assert side_end >= app_end and sink.finished == [False]


def test_deleted_pod_stops_app_before_sidecar(node):
    pod = make_pod("svc-with-sidecar", [{"name": "app", "image": "busybox", "command": ["sh", "-c", "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done"]}],
                   initContainers=[{"name": "side", "image": "pause", "restartPolicy": "Always"}])
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
    w.begin_termination(10)
    w.join(15)
    st = sink.last
    app_end = st["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
    side_end = st["initContainerStatuses"][0]["state"]["terminated"]["finishedAt"]
    assert side_end >= app_end and sink.finished == [True]


def test_host_network_pod(node):
    pod = make_pod("hostnet", [netexec("app", readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1})], hostNetwork=True)
    with running(pod, node) as (_, sink):
        st = sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
        assert st["podIP"] == NODE_IP
        assert http_from_node(node, NODE_IP, 8080, "/hostname") == "node-t", "a hostNetwork pod has the node's hostname"
    assert rt.netns_exists(node.node_netns), "tearing down a hostNetwork pod must leave the node netns alone"


def test_restarted_agent_adopts_running_pod(node):
    pod = make_pod("survivor", [netexec(readinessProbe={"httpGet": {"path": "/healthz", "port": 8080},
                                                        "initialDelaySeconds": 2, "periodSeconds": 1})])
    sink = Sink()
    w1 = rt.PodWorker(pod, node, sink, sink.on_finished)
    w1.start()
    sink.wait("Ready", lambda s: cond(s, "Ready") == "True")
    pid = w1.containers[0].proc.pid
    w1.detach()  # the agent stops (SIGTERM): pods keep running
    w1.join(5)
    assert Path(f"/proc/{pid}").exists()

    sink2 = Sink()
    # The restarted agent sees the pod as the API shows it: ready (this is what it must not flap).
    pod = {**pod, "status": {**pod["status"], **sink.statuses[-1]}}
    w2 = rt.PodWorker(pod, node, sink2, sink2.on_finished)
    w2.start()
    try:
        st = sink2.wait("Ready", lambda s: cond(s, "Ready") == "True")
        assert w2.containers[0].proc.pid == pid and st["containerStatuses"][0]["restartCount"] == 0
        assert st["podIP"] == "10.251.7.2", "an adopted pod keeps its IP"
        time.sleep(2.5)  # past initialDelaySeconds, counted from the container's original start
        flaps = [s for s in map(rt.strip_nulls, sink2.statuses) if cond(s, "Ready") != "True"]
        assert not flaps, f"adoption must not flap readiness: {flaps[0]}"
        assert http_from_node(node, "10.251.7.2", 8080, "/hostname") == "survivor"
    finally:
        w2.kill_now()
        w2.join(10)
    assert not Path(f"/proc/{pid}").exists() or rt._is_zombie(pid)


def test_container_that_died_while_agent_was_down_is_restarted(node):
    pod = make_pod("phoenix", [{"name": "c", "image": "registry.k8s.io/pause:3.10"}])
    sink = Sink()
    w1 = rt.PodWorker(pod, node, sink, sink.on_finished)
    w1.start()
    sink.wait("Running", lambda s: s.get("phase") == "Running")
    pid = w1.containers[0].proc.pid
    w1.detach()
    w1.join(5)
    os.kill(pid, signal.SIGKILL)
    w1.containers[0].proc.wait(5)  # reap it: the test process is its parent here

    sink2 = Sink()
    w2 = rt.PodWorker(pod, node, sink2, sink2.on_finished)
    w2.start()
    try:
        st = sink2.wait("restarted", lambda s: s["containerStatuses"][0]["restartCount"] == 1 and "running" in s["containerStatuses"][0]["state"])
        assert st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
        assert w2.containers[0].proc.pid != pid
    finally:
        w2.kill_now()
        w2.join(10)


def test_reconcile_removes_pods_deleted_while_agent_was_down(node):
    keep = make_pod("keep", [{"name": "c", "image": "pause"}])
    gone = make_pod("gone", [{"name": "c", "image": "pause"}])
    hostnet = make_pod("gone-hostnet", [{"name": "c", "image": "pause"}], hostNetwork=True)
    workers = {}
    for pod in (keep, gone, hostnet):
        sink = Sink()
        workers[pod["metadata"]["name"]] = w = rt.PodWorker(pod, node, sink, sink.on_finished)
        w.start()
        sink.wait("Running", lambda s: s.get("phase") == "Running")
    pids = {name: w.containers[0].proc.pid for name, w in workers.items()}
    for w in workers.values():
        w.detach()  # the agent stops
        w.join(5)
    try:
        done = rt.reconcile_node(node, {keep["metadata"]["uid"]})  # the restarted agent: only "keep" is still in the API
        gone_ns = rt.pod_netns_name(node.run_id, gone["metadata"]["uid"])
        assert f"netns {gone_ns}" in done and not rt.netns_exists(gone_ns)
        assert rt.host_veth_name(gone["metadata"]["uid"]) not in links(node.node_netns)
        for name in ("gone", "gone-hostnet"):
            workers[name].containers[0].proc.wait(5)
            assert workers[name].containers[0].proc.returncode is not None, f"{name}'s process must be killed"
        assert Path(f"/proc/{pids['keep']}").exists() and not rt._is_zombie(pids["keep"])
        assert set(node.ipam.allocations()) == {keep["metadata"]["uid"]}
        assert [p.stem for p in node.pods_dir.glob("*.json")] == [keep["metadata"]["uid"]]
        assert rt.netns_exists(node.node_netns)
    finally:
        rt.teardown_pod_network(node.node_netns, rt.pod_netns_name(node.run_id, keep["metadata"]["uid"]), None)


def test_container_logs_like_kubectl_logs(node):
    import ssl

    from proxysuite.cluster.local.nodeagent import KubeletLogServer

    pod = make_pod("talker", [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo one; echo two; echo three; exit 1"]}],
                   restartPolicy="OnFailure")
    sink = Sink()
    w = rt.PodWorker(pod, node, sink, sink.on_finished)
    w.start()
    sink.wait("restarted once", lambda s: s["containerStatuses"][0]["restartCount"] >= 1)
    w.kill_now()
    w.join(10)
    path = rt.container_log_path(node, "ns1", "talker", "c")
    assert rt.read_container_log(path, tail_lines=2) == b"two\nthree\n"
    assert rt.read_container_log(path, previous=True) == b"one\ntwo\nthree\n"

    server = KubeletLogServer(node, NODE_IP)
    server.start()
    try:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        sock = tls.wrap_socket(rt.netns_socket(node.node_netns))
        sock.settimeout(5)
        sock.connect((NODE_IP, 10250))
        sock.sendall(b"GET /containerLogs/ns1/talker/c?tailLines=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nthree\n")
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------
# The whole agent against a real control plane (kube-apiserver with Node,RBAC + NodeRestriction,
# kube-controller-manager, kube-scheduler), through the plugin's ``cluster`` fixture:
#
#   pytest tests/test_nodeagent.py [--provider local --cluster-name NAME --keep-cluster]
#
# The session's cluster is brought up (or reused) by the plugin and torn down at the end unless kept.
# ------------------------------------------------------------------------------------------

@pytest.fixture
def rest(cluster):
    from kubernetes import config as kconfig

    from proxysuite.cluster.local.nodeagent import Rest

    if cluster.provider != "local":
        pytest.skip("the node agent runs only on the local provider")
    api = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
    yield Rest(api)
    api.close()


@pytest.mark.live
def test_nodes_registered_ready_and_leased(cluster, rest):
    for info in cluster.nodes():
        node = wait_for(f"node {info.name} Ready and untainted", lambda: (
            (n := rest("GET", f"/api/v1/nodes/{info.name}"))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
            and not n["spec"].get("taints") and n))
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == info.name
        assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
        assert node["spec"]["podCIDR"] == info.pod_cidr and node["spec"]["podCIDRs"] == [info.pod_cidr]
        assert {"type": "InternalIP", "address": info.internal_ip} in node["status"]["addresses"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == rt.KUBELET_VERSION
        assert node["status"]["allocatable"]["pods"] == "110"
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "KubeletReady"
    name = cluster.nodes()[0].name
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    first = rest("GET", path)["spec"]
    assert first["holderIdentity"] == name and first["leaseDurationSeconds"] == 40
    wait_for("lease renewal", lambda: rest("GET", path)["spec"]["renewTime"] != first["renewTime"], timeout=15)


def _deployment(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 15, "containers": [netexec(
                                      "netexec", "--delay-shutdown=3",
                                      readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1})]}}}}


@pytest.mark.live
def test_pods_run_serve_and_terminate_through_the_api(cluster, rest, namespace):
    from proxysuite.probes.engine import ProbeRequest

    ns = namespace
    rest("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment("be", 2))
    rest("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "be"},
        "spec": {"selector": {"app": "be"}, "ports": [{"port": 80, "targetPort": "http"}]}})

    def ready_pods():
        pods = rest("GET", f"/api/v1/namespaces/{ns}/pods", query={"labelSelector": "app=be"})["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"
              and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
        return ok if len(ok) == 2 else None

    pods = wait_for("2 Ready backend pods", ready_pods)
    nodes = {n.name: n for n in cluster.nodes()}
    import ipaddress

    for p in pods:
        node = nodes[p["spec"]["nodeName"]]
        st = p["status"]
        assert ipaddress.ip_address(st["podIP"]) in ipaddress.ip_network(node.pod_cidr)
        assert st["hostIP"] == node.internal_ip and st["podIPs"] == [{"ip": st["podIP"]}]
        assert {c["type"] for c in st["conditions"]} >= {"PodScheduled", "Initialized", "ContainersReady", "Ready", "PodReadyToStartContainers"}
        cs = st["containerStatuses"][0]
        assert cs["ready"] and cs["started"] and "running" in cs["state"]
        obs = cluster.node_vantage(node.name).run([ProbeRequest(st["podIP"], 8080, ask="hostname")])[0]
        assert obs.outcome == "ok" and obs.backend == p["metadata"]["name"], obs

    def endpoints():
        slices = rest("GET", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                      query={"labelSelector": "kubernetes.io/service-name=be"})["items"]
        return {ep["targetRef"]["name"]: ep["conditions"] for s in slices for ep in s.get("endpoints") or []}

    wait_for("both endpoints ready", lambda: [c for c in endpoints().values() if c.get("ready")].__len__() == 2 or None)

    victim = pods[0]
    vname, vuid = victim["metadata"]["name"], victim["metadata"]["uid"]
    rest("DELETE", f"/api/v1/namespaces/{ns}/pods/{vname}")
    # netexec keeps serving 3s after SIGTERM and readiness is still probed: serving, terminating, not ready.
    cond_ = wait_for("terminating endpoint that still serves",
                     lambda: (c := endpoints().get(vname)) and c.get("terminating") and c.get("serving") and c, timeout=5, interval=0.1)
    assert cond_.get("ready") is False

    def gone():
        try:
            rest("GET", f"/api/v1/namespaces/{ns}/pods/{vname}")
            return None
        except Exception as exc:  # noqa: BLE001
            return getattr(exc, "status", None) == 404
    wait_for("pod object deleted by the agent", gone, timeout=20)
    assert not rt.netns_exists(rt.pod_netns_name(cluster.state.run_id, vuid)), "the pod netns must be gone"


@pytest.mark.live
def test_unrunnable_image_waits_with_reason(rest, namespace):
    rest("POST", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}})
    st = wait_for("waiting with LocalProviderCannotRunImage", lambda: (
        (p := rest("GET", f"/api/v1/namespaces/{namespace}/pods/web")["status"]).get("containerStatuses")
        and p["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == rt.CANNOT_RUN_REASON and p))
    assert st["phase"] == "Pending" and "nginx:1.27" in st["containerStatuses"][0]["state"]["waiting"]["message"]
    # The agent (as system:node:<node>) may post Events; `kubectl describe` then says why.
    wait_for("a Failed event from the node", lambda: [
        e for e in rest("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
        if e["involvedObject"]["name"] == "web" and e["reason"] == "Failed" and e["source"]["component"] == "kubelet"], timeout=10)

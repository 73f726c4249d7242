"""kind set-up: the runc wrapper on real runc bundles, and the suite's Docker engine on this machine.

The wrapper tests run real runc (root, runc and jq needed; about a second). The engine test installs nothing
new when docker.io is present but starts dockerd, so it is opt-in: ``PROXYSUITE_TEST_KIND_ENGINE=1``
(about 15 s warm; it reuses an engine the suite already runs and then leaves it running).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from proxysuite.cluster.kindsetup import engine, hostcheck

WRAPPER = Path(engine.__file__).with_name("runc-wrapper.sh")
needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("jq"),
                                reason="needs root, runc and jq")
MISSING = engine.missing_capabilities()


def _all_caps() -> list[str]:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return [f"CAP_{n}" for n in engine.CAPABILITY_NAMES[: last + 1]]


@pytest.fixture
def wrapper(tmp_path) -> Path:
    path = tmp_path / "runc-wrapper"
    path.write_text(WRAPPER.read_text().replace("@REAL_RUNC@", shutil.which("runc") or "/usr/sbin/runc"))
    path.chmod(0o755)
    return path


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A real OCI bundle from ``runc spec`` whose process asks for every capability, as docker --privileged does."""
    b = tmp_path / "bundle"
    (b / "rootfs").mkdir(parents=True)
    shutil.copy(engine.pause_binary(lambda m: None), b / "rootfs" / "pause")
    subprocess.run(["runc", "spec"], cwd=b, check=True)
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["args"] = ["/pause"]
    spec["process"]["terminal"] = False
    spec["process"]["capabilities"] = {k: _all_caps() for k in ("bounding", "effective", "permitted", "inheritable")}
    (b / "config.json").write_text(json.dumps(spec))
    return b


def _runc(argv0: Path | str, *args: str, root: Path) -> subprocess.CompletedProcess:
    # Files, not pipes: a created container keeps runc's stdio open, and a pipe would never reach EOF.
    root.mkdir(parents=True, exist_ok=True)
    out, err = root / "out", root / "err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.run([str(argv0), "--root", str(root), *args], stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())


@needs_runc
def test_privileged_bundle_fails_with_real_runc_and_starts_through_the_wrapper(tmp_path, wrapper, bundle):
    root = tmp_path / "state"
    cid = f"ps-wrap-{os.getpid()}"
    try:
        if MISSING:
            direct = _runc("runc", "create", "--bundle", str(bundle), cid + "-direct", root=root)
            assert direct.returncode != 0 and "unable to apply caps" in direct.stderr, direct.stderr
            _runc("runc", "delete", "-f", cid + "-direct", root=root)
        created = _runc(wrapper, "create", "--bundle", str(bundle), cid, root=root)
        assert created.returncode == 0, created.stderr
        caps = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
        for name, values in caps.items():
            assert not set(values) & set(MISSING), f"{name} still has {set(values) & set(MISSING)}"
            assert set(values) == set(_all_caps()) - set(MISSING), f"{name} lost more than the missing capabilities"
        assert _runc(wrapper, "start", cid, root=root).returncode == 0
        process = tmp_path / "process.json"
        process.write_text(json.dumps({"args": ["/pause", "-v"], "cwd": "/", "env": ["PATH=/"],
                                       "user": {"uid": 0, "gid": 0},
                                       "capabilities": {k: _all_caps() for k in ("bounding", "effective", "permitted")}}))
        ran = _runc(wrapper, "exec", "--process", str(process), cid, root=root)
        assert ran.returncode == 0 and "pause" in ran.stdout, ran.stderr
        assert not set(json.loads(process.read_text())["capabilities"]["effective"]) & set(MISSING)
    finally:
        _runc("runc", "delete", "-f", cid, root=root)


@needs_runc
def test_wrapper_finds_the_bundle_in_every_spelling(tmp_path, bundle):
    """``--bundle=DIR``, ``-b DIR`` and the working directory (runc's default) all get the edit."""
    if not MISSING:
        pytest.skip("this machine's bounding set lacks no capability, so the wrapper edits nothing")
    fake = tmp_path / "wrapper-echo"
    fake.write_text(WRAPPER.read_text().replace("@REAL_RUNC@", "/bin/true"))
    fake.chmod(0o755)
    original = (bundle / "config.json").read_text()
    for args, cwd in ((["--log-format", "json", "create", f"--bundle={bundle}", "x"], None),
                      (["--root", "/nonexistent", "run", "-b", str(bundle), "x"], None),
                      (["create", "x"], bundle)):
        (bundle / "config.json").write_text(original)
        subprocess.run([str(fake), *args], cwd=cwd, check=True)
        caps = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
        assert all(not set(v) & set(MISSING) for v in caps.values()), args
    # Other subcommands never touch the spec.
    (bundle / "config.json").write_text(original)
    subprocess.run([str(fake), "state", "x"], cwd=bundle, check=True)
    assert (bundle / "config.json").read_text() == original


def test_error_line_picks_the_failure_not_the_usage_hint():
    err = ("docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create "
           "failed: unable to start container process: unable to apply caps: operation not permitted: unknown.\n\n"
           "Run 'docker run --help' for more information\n")
    assert "unable to apply caps" in engine.error_line(err)


@pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_ENGINE") != "1",
                    reason="starts the suite's dockerd: opt in with PROXYSUITE_TEST_KIND_ENGINE=1")
def test_setup_engine_runs_privileged_containers_without_touching_the_machine(monkeypatch):
    user = os.environ.get("DOCKER_HOST") or (os.path.exists(engine.DEFAULT_SOCKET) and engine.server_version(f"unix://{engine.DEFAULT_SOCKET}"))
    if user:
        pytest.skip("a Docker engine is configured here; the suite leaves it alone and would not start its own")
    was_running = engine.running_suite_engine() is not None
    before = hostcheck.HostSnapshot.take()
    lines: list[str] = []
    try:
        eng = engine.setup(lines.append)
        assert eng.owned and eng.netns and eng.docker_host == engine.suite_docker_host()
        assert eng.wrapper == bool(engine.missing_capabilities()), lines
        # The engine's networks live in its namespace: a bridge network adds nothing to the root namespace.
        net = f"ps-enginetest-{os.getpid()}"
        subprocess.run(["docker", "-H", eng.docker_host, "network", "create", "--label", engine.BUILT_LABEL, net],
                       check=True, capture_output=True)
        try:
            bridges = subprocess.run(["ip", "-n", eng.netns, "-br", "link"], capture_output=True, text=True).stdout
            assert "br-" in bridges
            ok, err = engine.privileged_works(eng.docker_host, engine.probe_image(eng.docker_host, lines.append))
            assert ok, err
            assert before.changes(hostcheck.HostSnapshot.take()) == []
        finally:
            subprocess.run(["docker", "-H", eng.docker_host, "network", "rm", net], capture_output=True)
        # A second set-up reuses the running engine instead of starting another.
        again = engine.setup(lines.append)
        assert again.netns == eng.netns and any("reusing it" in ln for ln in lines)
        # setenv first so the undo also removes what adopt() writes (a bare delenv of an unset variable records
        # nothing, and the relay test after this one then skipped, seeing a DOCKER_HOST configured).
        monkeypatch.setenv("DOCKER_HOST", "")
        monkeypatch.delenv("DOCKER_HOST")
        assert engine.adopt() == eng.docker_host
    finally:
        if not was_running:
            engine.stop_engine(lines.append, force=True)
    if not was_running:
        assert not [n for n in os.listdir("/var/run/netns") if n.startswith(engine.NETNS_PREFIX)]
        assert before.changes(hostcheck.HostSnapshot.take()) == []


@pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_ENGINE") != "1",
                    reason="starts the suite's dockerd: opt in with PROXYSUITE_TEST_KIND_ENGINE=1")
def test_apiserver_relay_reaches_a_port_published_in_the_engine_namespace(monkeypatch, tmp_path):
    """kind publishes the apiserver on 127.0.0.1:<port> of the engine's namespace; kubectl on the machine
    reaches it through the relay, which a second command (cluster up, then pytest) keeps instead of restarting."""
    import socket
    import urllib.request

    from proxysuite.cluster.kindsetup import hooks

    if os.environ.get("DOCKER_HOST") or (os.path.exists(engine.DEFAULT_SOCKET) and engine.server_version(f"unix://{engine.DEFAULT_SOCKET}")):
        pytest.skip("a Docker engine is configured here; relays are only for the suite's own engine")
    eng = engine.setup(lambda m: None)
    monkeypatch.setenv("DOCKER_HOST", eng.docker_host)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"psrelaytest{os.getpid()}"
    # What docker-proxy does for kind's published port: listen on loopback inside the engine's namespace.
    server = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{eng.netns}", sys.executable, "-m", "http.server", str(port),
                               "--bind", "127.0.0.1", "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({"clusters": [{"name": f"kind-{name}", "cluster": {"server": f"https://127.0.0.1:{port}"}}]}))
    try:
        time.sleep(1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing answers in the root namespace yet
        assert hooks.after_kubeconfig(name, str(kubeconfig), lambda m: None) == port
        first = json.loads((engine.engine_dir() / "relays" / f"{name}.json").read_text())["pid"]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        assert hooks.after_kubeconfig(name, str(kubeconfig), lambda m: None) == port
        assert json.loads((engine.engine_dir() / "relays" / f"{name}.json").read_text())["pid"] == first
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
    finally:
        hooks.stop_relay(name)
        server.terminate()
        server.wait(5)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0

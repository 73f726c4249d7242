"""A Docker engine kind can run on, and kind itself, on a machine that may have neither.

::

    proxysuite kind setup-engine            # prints: export DOCKER_HOST=... and export PATH=...
    proxysuite kind stop-engine [--purge]   # --force also removes containers that still run

What :func:`setup` does, in order (each step is printed):

1. **A working Docker is left alone.** When ``DOCKER_HOST`` (or ``/var/run/docker.sock``) answers
   ``docker info``, that engine is used as it is: nothing is installed, restarted or reconfigured. If its
   privileged containers fail, the fix is printed instead (the runtime wrapper below, registered by you).
2. **Packages**: Debian's ``docker.io`` (dockerd 20.10, containerd, runc) with ``apt-get`` when ``dockerd``
   is missing (root only; services are kept from starting during the install). A newer docker CLI already
   on ``PATH`` (28.x) talks to the 20.10 engine by negotiating API 1.41.
3. **kind** ``v0.33.0``: the ``kind`` on ``PATH`` if it is that version, else ``go install
   sigs.k8s.io/kind@v0.33.0`` into ``<cache>/kind/v0.33.0/``.
4. **The suite's engine** (only when no engine answers): ``dockerd`` runs inside a network namespace of
   its own (``psdocker-<run id>``), with its own data root (``<state>/docker/data``), exec root, pidfile
   and socket (``/run/proxysuite-docker/``), ``--iptables=false --ip6tables=false --ip-forward=false
   --ip-masq=false --bridge=none``. kind's bridge network, its addresses and any rule the engine writes live
   in that namespace, so the machine's root namespace (addresses, routes, firewall, ``net.*`` sysctls) never
   changes. The engine is reused by later runs and never restarted while it runs.
5. **Privileged containers**: a probe runs ``docker run --privileged`` with a tiny image the suite builds
   (``clusters/kind-node/pause``). Where that fails with ``unable to apply caps`` (this machine's capability
   bounding set lacks ``CAP_SYS_RESOURCE``, and ``--privileged`` asks for every capability), the runc
   wrapper (``runc-wrapper.sh``: removes exactly the capabilities the bounding set lacks from the bundle's
   ``config.json`` on create/run and from the ``--process`` JSON on exec, then execs the real runc) is
   registered as the engine's default runtime and the engine re-reads its config on SIGHUP; the probe runs
   again and the outcome is printed.

Everything carries the engine's run id: the namespace name, the ``dockerd`` process (environment
``PROXYSUITE_ENGINE_ID``), the engine label ``proxysuite.io/run-id`` and the record
``<state>/docker/engine.json``. ``proxysuite janitor`` removes what a dead engine left (namespace, run
directory); ``janitor --all`` stops the engine, removes its containers, networks and images with its data.

kubectl reaches a kind cluster on this engine through a loopback relay (the apiserver's published port
lives in the engine's namespace); see :mod:`.hooks`.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ...config import default_cache_root, default_state_root
from ...errors import SuiteError
from ..local import netns

Progress = Callable[[str], None]

KIND_VERSION = "v0.33.0"
KIND_MODULE = "sigs.k8s.io/kind"
RUN_DIR = Path("/run/proxysuite-docker")
"""Exec root, socket and pidfile; short on purpose (containerd's socket path under it must fit 108 bytes)."""
NETNS_PREFIX = "psdocker-"
ENGINE_ID_ENV = "PROXYSUITE_ENGINE_ID"
RUN_LABEL = "proxysuite.io/run-id"
BUILT_LABEL = "proxysuite.io/built-by=proxysuite"
WRAPPER_RUNTIME = "proxysuite-runc"
DEFAULT_SOCKET = "/var/run/docker.sock"

ENGINE_START_TIMEOUT = 60
"""Seconds for a fresh dockerd to answer on its socket (it first starts its own containerd)."""
ENGINE_STOP_TIMEOUT = 30
"""Seconds for dockerd to shut down after SIGTERM before it is killed."""
DOCKER_CALL_TIMEOUT = 120
"""Seconds for one docker CLI call of the set-up (an import of a small image, a probe run)."""


def engine_dir() -> Path:
    return default_state_root() / "docker"


def socket_path() -> Path:
    return RUN_DIR / "docker.sock"


def suite_docker_host() -> str:
    return f"unix://{socket_path()}"


def kind_bin_dir() -> Path:
    return default_cache_root() / "kind" / KIND_VERSION


def node_source_dir() -> Path:
    """``clusters/kind-node`` (Go sources of the pause binary), or ``PROXYSUITE_KIND_NODE_DIR``."""
    env = os.environ.get("PROXYSUITE_KIND_NODE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "clusters" / "kind-node"


@dataclass
class EngineRecord:
    """What the suite started; written to ``<state>/docker/engine.json``."""

    run_id: str
    pid: int
    netns: str
    docker_host: str
    data_root: str
    started: float
    wrapper: bool = False
    """True when the runc wrapper is the engine's default runtime."""
    lib_modules_existed: bool = True
    """kind bind-mounts the machine's /lib/modules into nodes; where there is none, dockerd creates it (empty)
    on the machine, and stopping the engine removes it again."""

    @classmethod
    def load(cls) -> "EngineRecord | None":
        try:
            return cls(**json.loads((engine_dir() / "engine.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self) -> None:
        engine_dir().mkdir(parents=True, exist_ok=True)
        tmp = engine_dir() / "engine.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.rename(engine_dir() / "engine.json")


@dataclass(frozen=True)
class Engine:
    """The engine kind will use."""

    docker_host: str
    version: str
    owned: bool
    """True for the suite's own engine, False for one the suite found running and leaves alone."""
    wrapper: bool
    netns: str | None = None


# --- small helpers ------------------------------------------------------------------------------

def _docker(host: str, *args: str, timeout: float = DOCKER_CALL_TIMEOUT, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    docker = shutil.which("docker")
    if not docker:
        raise SuiteError("the docker CLI is not on PATH", "install Debian's docker.io (proxysuite kind setup-engine does) or put docker on PATH")
    proc = subprocess.run([docker, "-H", host, *args], capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise SuiteError(f"`docker {' '.join(args[:3])}` on {host} failed: {error_line(err) if err else 'exit ' + str(proc.returncode)}",
                         f"see {engine_dir() / 'dockerd.log'} for the engine's side")
    return proc


def server_version(host: str, timeout: float = 15) -> str | None:
    """The engine's version when ``host`` answers, else None."""
    if not shutil.which("docker"):
        return None
    try:
        proc = subprocess.run(["docker", "-H", host, "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def error_line(err: str) -> str:
    """The line of docker's stderr that says what failed (it ends with a usage hint)."""
    lines = [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith("Run 'docker")]
    for ln in lines:
        if "Error" in ln or "error" in ln:
            return ln
    return lines[0] if lines else err.strip()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _netns_exists(name: str) -> bool:
    return os.path.exists(f"/var/run/netns/{name}")


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SuiteError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}", "run as root on a kernel with network namespaces")


CAPABILITY_NAMES = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
                    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
                    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
                    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
                    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
                    "CHECKPOINT_RESTORE"]
"""Capability names by number (linux/capability.h), without the CAP_ prefix."""


def missing_capabilities() -> list[str]:
    """Capabilities the kernel knows but this process's bounding set lacks (what --privileged cannot get)."""
    names = CAPABILITY_NAMES
    with open("/proc/self/status") as fh:
        found = re.search(r"^CapBnd:\s*([0-9a-f]+)", fh.read(), re.M)
    if found is None:
        raise RuntimeError("/proc/self/status has no CapBnd line")
    bnd = int(found.group(1), 16)
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except OSError:
        last = len(names) - 1
    return [f"CAP_{names[i]}" for i in range(min(last + 1, len(names))) if not bnd >> i & 1]


# --- packages and kind ----------------------------------------------------------------------------

def ensure_packages(progress: Progress) -> None:
    """Install Debian's docker.io when dockerd is missing (root and apt-get needed)."""
    if shutil.which("dockerd") and shutil.which("docker"):
        return
    apt_install(["docker.io"], "Debian's docker.io (dockerd, containerd, runc)", progress,
                missing=("there is no Docker engine (dockerd is not installed) and no root/apt-get to install one",
                         "install Docker (Debian: apt-get install docker.io) or set DOCKER_HOST to a running engine"))


def apt_install(packages: list[str], what: str, progress: Progress, missing: tuple[str, str]) -> None:
    """``apt-get install`` with no service started by a package script; ``missing`` is the (error, fix) without root/apt."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SuiteError(*missing)
    progress(f"installing {what} with apt-get; its services are not started")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        # A postinst would start the distribution's daemons (docker.io's with its default firewall set-up).
        policy.write_text("#!/bin/sh\n# proxysuite: keep services from starting during apt-get install\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
            proc = subprocess.run(["nice", "-n", "10", *argv], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
                raise SuiteError(f"`{' '.join(argv)}` failed:\n{tail}", "check that apt can reach the Debian mirror, then retry")
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


def _kind_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"kind (v[0-9.]+)", out)
    return m.group(1) if m else None


def ensure_kind(progress: Progress) -> Path:
    """The kind binary: ``kind`` on PATH at the pinned version, else one built from its Go module into the cache."""
    on_path = shutil.which("kind")
    if on_path and _kind_version(on_path) == KIND_VERSION:
        return Path(on_path)
    target = kind_bin_dir() / "kind"
    if target.exists() and _kind_version(str(target)) == KIND_VERSION:
        return target
    if not shutil.which("go"):
        raise SuiteError(f"kind {KIND_VERSION} is not installed and Go is not on PATH to build it",
                         f"install Go, or install kind {KIND_VERSION} on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"building kind {KIND_VERSION} from its Go module into {target.parent} (about 1 min)")
    started = time.monotonic()
    env = {**os.environ, "GOBIN": str(target.parent), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    proc = subprocess.run(["nice", "-n", "10", "go", "install", f"{KIND_MODULE}@{KIND_VERSION}"], env=env,
                          capture_output=True, text=True, cwd=str(target.parent))
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise SuiteError(f"building kind {KIND_VERSION} failed:\n{tail}", "check access to the Go module proxy (GOPROXY) and retry")
    progress(f"kind {KIND_VERSION} built in {time.monotonic() - started:.0f}s")
    return target


# --- the probe image ------------------------------------------------------------------------------

def pause_binary(progress: Progress) -> Path:
    """``clusters/kind-node/pause`` built statically, cached by the hash of its sources."""
    import hashlib

    src = node_source_dir()
    h = hashlib.sha256()
    for f in sorted((src / "pause").glob("*.go")) + [src / "go.mod"]:
        h.update(f.name.encode() + f.read_bytes())
    out = default_cache_root() / "kind-node" / f"pause-{h.hexdigest()[:12]}"
    if out.exists():
        return out
    if not shutil.which("go"):
        raise SuiteError("building the pause binary needs Go, and `go` is not on PATH", "install Go and retry")
    out.parent.mkdir(parents=True, exist_ok=True)
    progress("building the pause binary (clusters/kind-node/pause)")
    tmp = out.with_suffix(".tmp")
    proc = subprocess.run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "./pause"], cwd=src,
                          env={**os.environ, "CGO_ENABLED": "0"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SuiteError(f"building pause failed: {proc.stderr.strip()}", "check the Go toolchain")
    tmp.rename(out)
    return out


def single_binary_tar(files: dict[str, Path], dirs: tuple[str, ...] = ("tmp",)) -> bytes:
    """A rootfs tarball holding ``files`` ({path in image: file}) and empty ``dirs``, for ``docker import``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for name, path in files.items():
            info = tar.gettarinfo(str(path), arcname=name.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def probe_image(host: str, progress: Progress) -> str:
    """A one-binary image (the pause binary) to test privileged containers with; imported once."""
    binary = pause_binary(progress)
    tag = f"proxysuite/probe:{binary.name.split('-', 1)[1]}"
    if _docker(host, "image", "inspect", tag, check=False).returncode != 0:
        _docker(host, "import", "--change", f"LABEL {BUILT_LABEL}", "-", tag,
                input=single_binary_tar({"pause": binary}))
    return tag


def privileged_works(host: str, image: str) -> tuple[bool, str]:
    """Run ``docker run --privileged`` and ``docker exec --privileged`` as kind does; (ok, error text)."""
    name = f"proxysuite-probe-{secrets.token_hex(3)}"
    run = _docker(host, "run", "-d", "--name", name, "--privileged", "--network", "none", "--label", BUILT_LABEL,
                  image, "/pause", check=False)
    try:
        if run.returncode != 0:
            return False, run.stderr.decode(errors="replace").strip()
        ex = _docker(host, "exec", "--privileged", name, "/pause", "-v", check=False)
        if ex.returncode != 0:
            return False, ex.stderr.decode(errors="replace").strip()
        return True, ""
    finally:
        _docker(host, "rm", "-f", name, check=False)


# --- the suite's engine ---------------------------------------------------------------------------

def wrapper_path() -> Path:
    return engine_dir() / "runc-wrapper"


def install_wrapper(real_runc: str | None = None) -> Path:
    """Write the runc wrapper (with the real runc's path substituted) to ``<state>/docker/runc-wrapper``."""
    real = real_runc or shutil.which("runc") or "/usr/sbin/runc"
    if not shutil.which("jq"):
        raise SuiteError("the runc wrapper needs jq, which is not installed", "apt-get install jq")
    text = (Path(__file__).with_name("runc-wrapper.sh")).read_text().replace("@REAL_RUNC@", real)
    path = wrapper_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.rename(path)
    return path


def _write_daemon_config(wrapper: bool) -> Path:
    cfg: dict = {}
    if wrapper:
        cfg = {"runtimes": {WRAPPER_RUNTIME: {"path": str(wrapper_path())}}, "default-runtime": WRAPPER_RUNTIME}
    path = engine_dir() / "daemon.json"
    path.write_text(json.dumps(cfg, indent=1) + "\n")
    return path


def running_suite_engine() -> EngineRecord | None:
    """The suite's engine when its process lives and its socket answers."""
    rec = EngineRecord.load()
    if rec and _pid_alive(rec.pid) and server_version(rec.docker_host):
        return rec
    return None


def start_engine(progress: Progress) -> EngineRecord:
    """Start dockerd in a namespace of its own (see the module docstring); returns its record."""
    if os.geteuid() != 0:
        raise SuiteError("starting the suite's Docker engine needs root (network namespace, dockerd)", "run as root, or start Docker yourself and set DOCKER_HOST")
    clean_dead_engine(progress)
    run_id = secrets.token_hex(3)
    ns = f"{NETNS_PREFIX}{run_id}"
    data = engine_dir() / "data"
    data.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    config = _write_daemon_config(wrapper=False)
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")
    argv = ["nsenter", f"--net=/var/run/netns/{ns}", "--", shutil.which("dockerd") or "dockerd",
            "--config-file", str(config), "--data-root", str(data), "--exec-root", str(RUN_DIR / "exec"),
            "--pidfile", str(RUN_DIR / "docker.pid"), "--host", suite_docker_host(),
            # Inside its own namespace these could not reach the machine anyway; off all the same, so that
            # nothing the engine does depends on that namespace being there.
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
            "--label", f"{RUN_LABEL}={run_id}"]
    log = engine_dir() / "dockerd.log"
    progress(f"starting the suite's Docker engine in network namespace {ns}: {' '.join(argv[3:])}")
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, ENGINE_ID_ENV: run_id}, close_fds=True)
    rec = EngineRecord(run_id=run_id, pid=proc.pid, netns=ns, docker_host=suite_docker_host(), data_root=str(data),
                       started=time.time(), lib_modules_existed=os.path.exists("/lib/modules"))
    rec.save()
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-5:])
            clean_dead_engine(progress)
            raise SuiteError(f"dockerd exited at start (code {proc.returncode}):\n{tail}", f"see {log}")
        if server_version(rec.docker_host, timeout=5):
            return rec
        time.sleep(0.5)
    stop_engine(progress, force=True)
    raise SuiteError(f"the suite's dockerd did not answer on {socket_path()} within {ENGINE_START_TIMEOUT}s", f"see {log}")


def reload_engine(rec: EngineRecord) -> None:
    """SIGHUP: dockerd 20.10 re-reads ``runtimes`` and ``default-runtime``; running containers stay up."""
    os.kill(rec.pid, signal.SIGHUP)
    want = WRAPPER_RUNTIME if rec.wrapper else "runc"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        out = _docker(rec.docker_host, "info", "--format", "{{.DefaultRuntime}}", check=False).stdout.decode().strip()
        if out == want:
            return
        time.sleep(0.3)
    raise SuiteError(f"the suite's dockerd did not switch its default runtime to {want} after SIGHUP",
                     f"see {engine_dir() / 'dockerd.log'}")


def setup(progress: Progress = print, install: bool = True) -> Engine:
    """Make sure kind has an engine that runs privileged containers; see the module docstring."""
    user_host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    rec = EngineRecord.load()
    if not (rec and user_host == rec.docker_host):
        version = server_version(user_host)
        if version:
            progress(f"a Docker engine answers on {user_host} (version {version}); using it as it is")
            ok, err = privileged_works(user_host, probe_image(user_host, progress))
            if not ok:
                raise SuiteError(f"privileged containers fail on the Docker engine at {user_host}: {error_line(err)}",
                                 _wrapper_fix(err))
            return Engine(user_host, version, owned=False, wrapper=False)
        if os.environ.get("DOCKER_HOST"):
            raise SuiteError(f"DOCKER_HOST={user_host} does not answer", "start that engine, or unset DOCKER_HOST to let the suite run its own")
    if install:
        ensure_packages(progress)
    rec = running_suite_engine()
    if rec:
        progress(f"the suite's Docker engine runs (pid {rec.pid}, namespace {rec.netns}); reusing it")
    else:
        rec = start_engine(progress)
    version = server_version(rec.docker_host) or "?"
    image = probe_image(rec.docker_host, progress)
    ok, err = privileged_works(rec.docker_host, image)
    if not ok and "unable to apply caps" in err and not rec.wrapper:
        missing = missing_capabilities()
        progress(f"privileged containers fail here ({error_line(err)}); this machine's capability bounding set "
                 f"lacks {', '.join(missing) or 'a capability'}: installing the runc wrapper {wrapper_path()} "
                 f"as the engine's default runtime (it removes exactly {', '.join(missing)} from each container)")
        install_wrapper()
        _write_daemon_config(wrapper=True)
        rec.wrapper = True
        rec.save()
        reload_engine(rec)
        ok, err = privileged_works(rec.docker_host, image)
    if not ok:
        raise SuiteError(f"privileged containers fail on the suite's Docker engine: {error_line(err) or '?'}",
                         f"see {engine_dir() / 'dockerd.log'}; kind needs --privileged nodes")
    progress(f"privileged containers work on the suite's engine {rec.docker_host} (dockerd {version}"
             f"{', with the runc wrapper' if rec.wrapper else ''})")
    return Engine(rec.docker_host, version, owned=True, wrapper=rec.wrapper, netns=rec.netns)


def _wrapper_fix(err: str) -> str:
    if "unable to apply caps" in err:
        return (f"this machine lacks {', '.join(missing_capabilities())} in its bounding set; register "
                f"proxysuite/cluster/kindsetup/runc-wrapper.sh (set REAL_RUNC) as that engine's default runtime in "
                f"daemon.json and send dockerd SIGHUP, or unset DOCKER_HOST and stop that engine to let the suite run its own")
    return "check that engine's log; kind needs privileged containers"


def engine_containers(host: str) -> list[str]:
    out = _docker(host, "ps", "-a", "--format", "{{.Names}}", check=False).stdout.decode()
    return [n for n in out.split() if n]


def stop_engine(progress: Progress = print, force: bool = False, purge: bool = False) -> bool:
    """Stop the suite's engine; refuses while containers exist unless ``force``. ``purge`` removes its data."""
    rec = EngineRecord.load()
    if rec is None:
        if purge:
            _purge_data(progress)
        return False
    if _pid_alive(rec.pid):
        names = engine_containers(rec.docker_host) if server_version(rec.docker_host) else []
        if names and not force:
            raise SuiteError(f"the suite's Docker engine still has {len(names)} container(s) ({', '.join(names[:5])})",
                             "delete those kind clusters first (proxysuite cluster down / kind delete cluster), or pass --force")
        if names:
            progress(f"removing {len(names)} container(s) of the suite's engine: {', '.join(names)}")
            _docker(rec.docker_host, "rm", "-f", "-v", *names, check=False, timeout=300)
        if force and server_version(rec.docker_host):
            nets = _docker(rec.docker_host, "network", "ls", "--filter", "type=custom", "--format", "{{.Name}}", check=False).stdout.decode().split()
            if nets:
                progress(f"removing network(s) {', '.join(nets)} of the suite's engine")
                _docker(rec.docker_host, "network", "rm", *nets, check=False)
        _stop_relays(lambda cluster: True)
        progress(f"stopping the suite's Docker engine (pid {rec.pid})")
        os.kill(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + ENGINE_STOP_TIMEOUT
        while _pid_alive(rec.pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        if _pid_alive(rec.pid):
            os.kill(rec.pid, signal.SIGKILL)
    clean_dead_engine(progress)
    if not rec.lib_modules_existed and os.path.isdir("/lib/modules") and not os.listdir("/lib/modules"):
        os.rmdir("/lib/modules")
        progress("removed the empty /lib/modules dockerd created for kind's nodes")
    if purge:
        _purge_data(progress)
    return True


def clean_dead_engine(progress: Progress = print) -> None:
    """Remove what a dead suite engine left: its namespace (and processes in it), run directory, record."""
    rec = EngineRecord.load()
    if rec and _pid_alive(rec.pid):
        names = set(engine_containers(rec.docker_host)) if server_version(rec.docker_host) else None
        if names is not None:
            _stop_relays(lambda cluster: f"{cluster}-control-plane" not in names)
        return
    _stop_relays(lambda cluster: True)
    for ns in _our_namespaces():
        for pid in netns.pids_in(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        progress(f"removed network namespace {ns} of a stopped suite engine")
    if RUN_DIR.exists():
        subprocess.run(["umount", "-R", "-l", str(RUN_DIR / "exec")], capture_output=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    (engine_dir() / "engine.json").unlink(missing_ok=True)


def _stop_relays(which: Callable[[str], bool]) -> None:
    from . import hooks

    for cluster in hooks.relays():
        if which(cluster):
            hooks.stop_relay(cluster)


def _our_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(NETNS_PREFIX))
    except FileNotFoundError:
        return []


def _purge_data(progress: Progress) -> None:
    data = engine_dir() / "data"
    if not data.exists():
        return
    # A killed dockerd can leave overlay and shm mounts under its data root.
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh if line.split()[1].startswith(str(data) + "/")]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(data, ignore_errors=True)
    progress(f"removed the suite engine's data root {data} (its images and containers)")


def janitor(progress: Progress = print, everything: bool = False) -> dict:
    """Leftovers of a dead engine always; with ``everything`` also the running engine and its data."""
    before = EngineRecord.load()
    if everything:
        stopped = stop_engine(progress, force=True, purge=True)
    else:
        clean_dead_engine(progress)
        stopped = bool(before) and EngineRecord.load() is None
    return {"engine": [before.run_id] if before and stopped else []}


def adopt() -> str | None:
    """Hook for the kind provider: use the suite's engine and kind when nothing else is configured.

    Sets ``DOCKER_HOST`` to the suite's engine when ``DOCKER_HOST`` is unset, the default socket does not
    answer and the suite's engine runs; puts the cached kind on ``PATH`` when ``kind`` is not there.
    Returns the DOCKER_HOST it set, or None.
    """
    kind_dir = kind_bin_dir()
    if not shutil.which("kind") and (kind_dir / "kind").exists():
        os.environ["PATH"] = f"{kind_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    if os.environ.get("DOCKER_HOST") or (os.path.exists(DEFAULT_SOCKET) and server_version(f"unix://{DEFAULT_SOCKET}")):
        return None
    rec = running_suite_engine()
    if rec is None:
        return None
    os.environ["DOCKER_HOST"] = rec.docker_host
    return rec.docker_host

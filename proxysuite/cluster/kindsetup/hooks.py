"""The kind provider's seams into the suite's own engine and node image (called from :mod:`..kind`).

* :func:`before_prereqs`: use the suite's engine and kind when nothing else is configured.
* :func:`resolve_node_image`: ``--kind-node-image local`` is the image :mod:`.nodeimage` builds.
* :func:`adjust_config`: what a cluster needs to run a node image built here (cgroup v1: ``failCgroupV1: false``).
* :func:`after_kubeconfig`: kubectl on the machine reaches the apiserver, whose published port lives in the
  suite engine's network namespace, through a loopback relay (``proxysuite.cluster.local.relay``: it listens
  on ``127.0.0.1:<port>`` in the root namespace and connects from inside the engine's namespace). The relay
  carries the engine's run id and is stopped with the engine, by :func:`stop_relay`, or by the janitor once
  its cluster is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import yaml

from . import engine

Progress = Callable[[str], None]
RELAY_START_TIMEOUT = 10
"""Seconds for a new relay to accept connections on its loopback port."""


def before_prereqs() -> None:
    engine.adopt()


PULL_TIMEOUT = 180
"""Seconds for ``docker pull`` of the pinned node image before the offline image is used instead."""


def image_present(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def pull(ref: str, timeout: float = PULL_TIMEOUT) -> str | None:
    """Pull ``ref``; None when it worked, else why not (one line)."""
    try:
        proc = subprocess.run(["docker", "pull", ref], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"docker pull did not finish within {timeout:.0f}s"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"docker pull exited {proc.returncode}"


def resolve_node_image(node_image: str, progress: Progress, explicit: bool = False) -> str:
    """The node image a cluster boots from.

    ``--kind-node-image local`` is the offline image built here (``proxysuite kind build-node-image``), built
    when missing. The pinned ``kindest/node`` image (``explicit`` False) falls back to it when it is neither in the
    engine nor pullable, as on a machine with no registry; an image you named yourself never does.
    """
    from . import nodeimage

    if node_image == "local":
        progress("--kind-node-image local: building (or finding) the offline node image")
        return nodeimage.build(progress)
    if explicit or image_present(node_image):
        return node_image
    progress(f"pulling the pinned node image {node_image}")
    why = pull(node_image)
    if why is None:
        return node_image
    progress(f"cannot pull {node_image} ({why}); using the offline node image instead "
             "(proxysuite kind build-node-image: Debian packages and Go modules only; --kind-node-image IMAGE to use another)")
    return nodeimage.build(progress)


def is_local_image(node_image: str) -> bool:
    return node_image.startswith("proxysuite/kind-node:")


def adjust_config(doc: dict, node_image: str) -> dict:
    if is_local_image(node_image):
        from .nodeimage import kind_config_patches

        for key, values in kind_config_patches().items():
            doc[key] = list(doc.get(key) or []) + values
    return doc


def use_node_image_workloads(cluster: str, progress: Progress) -> None:
    """On a node image built here, client and backend pods use the images preloaded in it (no registry).

    Sets ``PROXYSUITE_CLIENT_IMAGE`` / ``PROXYSUITE_BACKEND_IMAGE`` unless you set them, and disables
    testcontainers' reaper, whose image cannot be pulled either (``down`` removes the external client by label).
    """
    from .nodeimage import BACKEND_LABEL, CLIENT_LABEL

    proc = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Labels}}", f"{cluster}-control-plane"],
                          capture_output=True, text=True)
    try:
        labels = json.loads(proc.stdout) or {}
    except ValueError:
        return
    if CLIENT_LABEL not in labels:
        return
    for env, label in (("PROXYSUITE_CLIENT_IMAGE", CLIENT_LABEL), ("PROXYSUITE_BACKEND_IMAGE", BACKEND_LABEL)):
        if not os.environ.get(env):
            os.environ[env] = labels[label]
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    progress(f"node image built here: client pods use {os.environ['PROXYSUITE_CLIENT_IMAGE']}, backends "
             f"{os.environ['PROXYSUITE_BACKEND_IMAGE']} (preloaded; no registry)")


def _relay_dir() -> Path:
    return engine.engine_dir() / "relays"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def after_kubeconfig(cluster: str, kubeconfig: str, progress: Progress, node_image: str | None = None) -> int | None:
    """Relay the cluster's apiserver port to the root namespace when the cluster runs on the suite's engine;
    on a node image built here (``node_image``), use the workload images preloaded in it."""
    if node_image and is_local_image(node_image):
        use_node_image_workloads(cluster, progress)
    rec = engine.running_suite_engine()
    if rec is None or os.environ.get("DOCKER_HOST") != rec.docker_host:
        return None
    with open(kubeconfig, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    servers = [c["cluster"]["server"] for c in cfg.get("clusters", []) if c.get("name") == f"kind-{cluster}"]
    url = urlparse(servers[0] if servers else cfg["clusters"][0]["cluster"]["server"])
    port = url.port
    if url.hostname not in ("127.0.0.1", "localhost") or not port:
        return None
    current = _relay_info(cluster)
    if current and current.get("port") == port and current.get("netns") == rec.netns and _ours(current.get("pid")) and _port_open(port):
        return port  # the relay an earlier command started for this cluster (cluster up, then pytest)
    stop_relay(cluster)
    if _port_open(port):
        raise engine.SuiteError(f"127.0.0.1:{port}, the apiserver port of kind cluster {cluster}, is taken on this machine",
                                f"free that port, or recreate the cluster (kind delete cluster --name {cluster})")
    _relay_dir().mkdir(parents=True, exist_ok=True)
    log = _relay_dir() / f"{cluster}.log"
    argv = [sys.executable, "-m", "proxysuite.cluster.local.relay", "--listen", f"127.0.0.1:{port}", "--netns", rec.netns,
            "--target", f"127.0.0.1:{port}"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, engine.ENGINE_ID_ENV: rec.run_id}, close_fds=True)
    (_relay_dir() / f"{cluster}.json").write_text(json.dumps({"pid": proc.pid, "port": port, "netns": rec.netns}))
    deadline = time.monotonic() + RELAY_START_TIMEOUT
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise engine.SuiteError(f"the apiserver relay for kind cluster {cluster} did not start (see {log})",
                                    "check that 127.0.0.1:%d is free on this machine" % port)
        time.sleep(0.1)
    progress(f"apiserver of {cluster} relayed from 127.0.0.1:{port} into the engine's namespace {rec.netns}")
    return port


def _relay_info(cluster: str) -> dict | None:
    try:
        return json.loads((_relay_dir() / f"{cluster}.json").read_text())
    except (OSError, ValueError):
        return None


def _ours(pid: int | None) -> bool:
    try:
        return bool(pid) and engine._pid_alive(pid) and engine.ENGINE_ID_ENV.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def stop_relay(cluster: str) -> None:
    """Stop the cluster's relay and wait until it is gone (its port must be free when this returns)."""
    info = _relay_info(cluster)
    pid = (info or {}).get("pid")
    if pid is not None and _ours(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while engine._pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if engine._pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    (_relay_dir() / f"{cluster}.json").unlink(missing_ok=True)
    (_relay_dir() / f"{cluster}.log").unlink(missing_ok=True)


def relays() -> list[str]:
    try:
        return sorted(p.stem for p in _relay_dir().glob("*.json"))
    except OSError:
        return []

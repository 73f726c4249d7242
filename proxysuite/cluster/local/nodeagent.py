"""The local provider's node agent: the one emulated component, a kubelet stand-in per node.

Run by the provider, one per node, in the ROOT network namespace (it reaches the apiserver
through the loopback relay named in its kubeconfig)::

    python -m proxysuite.cluster.local.nodeagent --kubeconfig KCFG --node node-1 \\
        --node-netns ps-<run>-node-1 --node-ip 10.200.0.11 --pod-cidr 10.244.1.0/24 \\
        --run-id <run> --state-dir DIR --agnhost /path/to/agnhost

What it does, like kubelet:

* registers the Node (labels, podCIDR, addresses, capacity, Ready and pressure conditions,
  nodeInfo) and renews its Lease in ``kube-node-lease`` every 10 s, refreshing the Ready
  heartbeat every minute, so kube-controller-manager keeps the node Ready and untainted;
* list+watches the pods bound to the node (``spec.nodeName=<node>``), resyncs every few
  minutes and reconnects after errors;
* runs each pod with :class:`~proxysuite.cluster.local.podruntime.PodWorker`: a netns with a
  routed /32 veth, containers as host processes in their own UTS namespace, probes from the
  node netns, restart policy with back-off, kubelet-style status (patched only on change);
* on a pod's deletionTimestamp: preStop, SIGTERM, readiness keeps being probed, SIGKILL at the
  end of the grace period, terminal phase, sandbox teardown, then delete with grace 0;
* at start, cleans up pods that were deleted while it was down and adopts the ones still running;
* on SIGTERM: stops watching, leaves pods running, exits 0 (the provider removes the netns).

Differences from kubelet (the complete list; each is a deliberate simplification):

* **No images, no CRI.** An image is mapped to a host program: any image whose name contains
  ``agnhost`` runs the local agnhost binary with the container's args (a command ending in
  ``agnhost`` contributes the rest); a command whose program is sleep/sh/bash/python3/python/pause
  runs that host program; a ``pause`` image without command runs ``sleep infinity``. Anything else
  waits forever with reason ``LocalProviderCannotRunImage``. imagePullPolicy/imagePullSecrets are
  ignored and ``imageID`` is empty; ``containerID`` is ``proxysuite://<uid12>-<name>-<restarts>``.
* **Isolation is network + hostname only.** A container shares the host's filesystem, PID
  namespace, users and mounts; it gets the pod netns and its own UTS namespace (hostname = pod
  name, or the node name for hostNetwork pods). securityContext, sysctls, capabilities, runAsUser
  and workingDir (unless that path exists on the host) are ignored.
* **No volumes** (emptyDir, configMap, secret, projected service-account tokens, downward API
  files, hostPath): none are mounted. No ``/etc/hosts``/``/etc/resolv.conf`` per pod and no
  cluster DNS; dnsPolicy/dnsConfig/hostAliases are ignored.
* **No cgroups or resources**: requests/limits are not enforced, no OOM kills, no QoS eviction,
  no ephemeral-storage accounting, no node pressure (capacity is fixed: cpu 2, memory 8Gi, pods 110).
* **Environment**: ``env`` values and fieldRefs (metadata.name/namespace/uid/labels/annotations,
  spec.nodeName/serviceAccountName, status.podIP(s)/hostIP(s)), ``$(VAR)`` expansion in
  command/args; not envFrom, secretKeyRef, configMapKeyRef, resourceFieldRef, nor the
  service-link variables (``KUBERNETES_SERVICE_HOST``…). Extra markers ``PROXYSUITE_RUN_ID`` and
  ``PROXYSUITE_POD_UID`` are set (the janitor and the restart reconcile use them).
* **Probes**: httpGet (HTTP and HTTPS without verification, headers, named ports), tcpSocket and
  exec are supported; grpc probes always fail with a message. Exec probes and exec hooks run the
  command from the host filesystem inside the container's netns+UTS (``nsenter``); agnhost is
  mapped to the local binary, other programs must exist on the host.
* **Lifecycle hooks**: postStart and preStop with exec, httpGet and sleep (tcpSocket too, which
  kubelet rejects). postStart runs beside the container instead of holding it in "waiting".
* **Init and sidecar containers** run in order; sidecars (``restartPolicy: Always``) start before
  the next init container once started, restart on exit, count for readiness and are stopped after
  the app containers — all at once, where kubelet stops them in reverse order.
* **Kubelet API**: only ``/containerLogs`` (``kubectl logs``, with tailLines/limitBytes/previous/
  follow) on ``<node-ip>:10250`` in the node netns, TLS with a self-signed certificate and no
  authentication; the apiserver needs ``--kubelet-preferred-address-types=InternalIP``. Logs are
  files under ``<state-dir>/pods/<ns>_<pod>_<container>.log``; timestamps/sinceSeconds are ignored.
* **Not supported**: ``kubectl exec/attach/port-forward``, ephemeral containers, static and
  mirror pods, user namespaces, pod overhead, metrics/stats endpoints.
* **Probes come from the node netns** as in kubelet, with the source address of the node side of
  the pod's veth (the pod CIDR's ``.1``), not the node's InternalIP.
* **Back-off is not persisted**: a restarted agent adopts running containers (keeping their
  readiness and restart counts), but restarts a crashed one at once instead of finishing its
  CrashLoopBackOff wait. A pod deleted while the agent was down gets its full grace period
  counted from when the agent saw it.
* **Networking**: IPv4, IPv6 or dual-stack; host-local-style IPAM from each ``--pod-cidr`` range (.2 upward,
  state in ``<state-dir>/ipam.json``, ``ipam-2.json`` for the second family); hostPort is not mapped (use hostNetwork or a NodePort).
* **Node**: no node status beyond addresses, capacity, nodeInfo and the Ready/pressure conditions, no eviction, no graceful node shutdown, no image GC, no CSR/TLS
  bootstrap (the provider gives the agent a ready kubeconfig for ``system:node:<node>``).
* **Pod status**: activeDeadlineSeconds, resize, resource claims, and ``PodReadyToStartContainers``
  going False on sandbox loss are not handled. Events are best effort: Started, Killing, BackOff,
  Failed, FailedCreatePodSandBox, and Unhealthy only when a probe result flips (kubelet posts one per
  failed probe); no Pulling/Pulled/Created. A restarted agent adopts running containers but cannot know the exit code
  of an adopted process that dies later (reported as 137, like kubelet's ContainerStatusUnknown).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from . import podruntime as rt

log = logging.getLogger("proxysuite.nodeagent")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
"""Seconds, kubelet's default nodeLeaseDurationSeconds."""
LEASE_RENEW = 10.0
"""Kubelet renews at a quarter of the lease duration."""
NODE_STATUS_REFRESH = 60.0
"""How often the Ready heartbeat is refreshed (kubelet: 5 min when leases are used; we are cheaper to be eager)."""
WATCH_TIMEOUT = 290
"""Server-side watch timeout; every reconnect also re-lists after RESYNC."""
RESYNC = 300.0
"""Full re-list of the node's pods (catches anything a watch gap lost)."""
STATUS_RETRY = 1.0

CAPACITY = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
SMP = "application/strategic-merge-patch+json"


def micro_now() -> str:
    """A MicroTime (Lease renewTime)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}.get(m, m)


class ApiError(Exception):
    """A non-2xx answer from the apiserver."""

    def __init__(self, method: str, path: str, status: int, reason: str, body: str):
        super().__init__(f"{method} {path}: {status} {reason}: {body[:300]}")
        self.status, self.reason, self.body = status, reason, body


class Rest:
    """Plain JSON requests through the kubernetes client's auth and TLS setup.

    The generated client validates request bodies against its models (a Node without
    ``nodeInfo.kubeProxyVersion`` is rejected client-side) and turns answers into models;
    the agent works on the apiserver's own JSON instead, as dicts, like the pod runtime.
    """

    def __init__(self, api_client):
        self.api = api_client

    def _send(self, method: str, path: str, body, query: dict | None, content_type: str, timeout):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(method, path, query_params=list((query or {}).items()) or None,
                                          header_params=headers, body=body, auth_settings=["BearerToken"])
        return self.api.call_api(*params, _request_timeout=timeout)

    def __call__(self, method: str, path: str, body=None, query: dict | None = None,
                 content_type: str = "application/json", timeout=30) -> dict:
        resp = self._send(method, path, body, query, content_type, timeout)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiError(method, path, resp.status, resp.reason, data.decode(errors="replace"))
        return json.loads(data) if data else {}

    def stream(self, path: str, query: dict, timeout) -> object:
        """A streaming GET (watch); returns the urllib3 response, or raises ApiError."""
        resp = self._send("GET", path, None, query, "application/json", timeout)
        if not 200 <= resp.status < 300:
            data = resp.read()
            raise ApiError("GET", path, resp.status, resp.reason, data.decode(errors="replace"))
        return resp.response


class StatusManager:
    """Patches pod status, only when it changed, from one thread (like kubelet's status manager).

    Workers call :meth:`sink` every tick with the full status; the latest one per pod wins.
    """

    def __init__(self, rest: Rest, stop: threading.Event):
        self.rest, self.stop = rest, stop
        self._lock = threading.Condition()
        self._pending: dict[str, tuple[str, str, dict]] = {}
        self._sent: dict[str, dict] = {}
        self._inflight: set[str] = set()
        threading.Thread(target=self._loop, name="status", daemon=True).start()

    def sink(self, pod: dict, status: dict) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if rt.strip_nulls(status) == self._sent.get(uid):
                self._pending.pop(uid, None)
                return
            self._pending[uid] = (pod["metadata"]["namespace"], pod["metadata"]["name"], status)
            self._lock.notify_all()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._pending.pop(uid, None)
            self._sent.pop(uid, None)

    def flush(self, uid: str, timeout: float = 10.0) -> None:
        """Wait until the latest status of ``uid`` is written (or could not be)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (uid in self._pending or uid in self._inflight) and time.monotonic() < deadline:
                self._lock.wait(0.1)

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                while not self._pending and not self.stop.is_set():
                    self._lock.wait(1.0)
                if self.stop.is_set():
                    return
                uid = next(iter(self._pending))  # oldest first: a busy pod cannot starve the others
                ns, name, status = self._pending.pop(uid)
                self._inflight.add(uid)
            ok = self._patch(ns, name, uid, status)
            with self._lock:
                self._inflight.discard(uid)
                if ok is True:
                    self._sent[uid] = rt.strip_nulls(status)
                elif ok is None:
                    self._pending.setdefault(uid, (ns, name, status))  # retry, unless a newer one arrived
                self._lock.notify_all()
            if ok is None:
                self.stop.wait(STATUS_RETRY)

    def _patch(self, ns: str, name: str, uid: str, status: dict) -> bool | str | None:
        """True: written; False: the pod is gone; "rejected": invalid (retried on the next change); None: transient failure."""
        try:
            self.rest("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status}, content_type=SMP)
            log.debug("status %s/%s: phase=%s", ns, name, status.get("phase"))
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            log.warning("patch status of pod %s/%s (uid %s) failed: %s", ns, name, uid, exc)
            if exc.status in (400, 403, 422):
                return "rejected"  # the same body would fail again; the next change is tried
            return None
        except Exception as exc:  # noqa: BLE001 - network trouble; retried
            log.warning("patch status of pod %s/%s failed: %s", ns, name, exc)
            return None


class EventRecorder:
    """Posts Events about pods from one thread, best effort (kubelet's Started/Killing/Unhealthy/BackOff).

    Identical events within a minute are sent once (kubelet's correlator would count them).
    A full queue drops events rather than slowing pods down.
    """

    def __init__(self, rest: Rest, node: str, stop: threading.Event):
        import queue

        self.rest, self.node, self.stop = rest, node, stop
        self.queue: queue.Queue = queue.Queue(maxsize=1000)
        self._recent: dict[tuple, float] = {}
        self._warned = False
        threading.Thread(target=self._loop, name="events", daemon=True).start()

    def __call__(self, pod: dict, etype: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        key = (meta["uid"], reason, message)
        now = time.monotonic()
        if now - self._recent.get(key, -1e9) < 60:
            return
        self._recent[key] = now
        if len(self._recent) > 5000:
            self._recent = {k: t for k, t in self._recent.items() if now - t < 60}
        try:
            self.queue.put_nowait((meta["namespace"], meta["name"], meta["uid"], etype, reason, message))
        except Exception:  # noqa: BLE001 - queue full: events are best effort
            pass

    def _loop(self) -> None:
        import queue

        while not self.stop.is_set():
            try:
                ns, name, uid, etype, reason, message = self.queue.get(timeout=1)
            except queue.Empty:
                continue
            ts = rt.now_rfc3339()
            body = {"apiVersion": "v1", "kind": "Event",
                    "metadata": {"generateName": f"{name}.", "namespace": ns},
                    "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name, "uid": uid},
                    "type": etype, "reason": reason, "message": message[:1024], "count": 1,
                    "firstTimestamp": ts, "lastTimestamp": ts,
                    "source": {"component": "kubelet", "host": self.node},
                    "reportingComponent": "kubelet", "reportingInstance": self.node}
            try:
                self.rest("POST", f"/api/v1/namespaces/{ns}/events", body)
            except ApiError as exc:
                if "being terminated" in exc.body:
                    continue  # the namespace is going away with its events
                if not self._warned:
                    log.warning("could not post events (further failures are not logged): %s", exc)
                    self._warned = True
            except Exception as exc:  # noqa: BLE001 - forensics only; say it once
                if not self._warned:
                    log.warning("could not post events (further failures are not logged): %s", exc)
                    self._warned = True


KUBELET_PORT = 10250


class KubeletLogServer:
    """The one kubelet API the agent serves: ``/containerLogs`` on ``<node-ip>:10250``, so ``kubectl logs`` works.

    The listening socket is created in the node netns (where the apiserver reaches the node), TLS
    with a self-signed certificate (the apiserver verifies kubelet certificates only when
    ``--kubelet-certificate-authority`` is set). kube-apiserver must pick the InternalIP to dial
    (``--kubelet-preferred-address-types=InternalIP``): the Node's Hostname address does not resolve.
    Requests are not authenticated: the port is reachable only inside the suite's namespaces.
    """

    def __init__(self, env: rt.NodeEnv, node_ip: str, port: int = KUBELET_PORT):
        self.env, self.node_ip, self.port = env, node_ip, port
        self.server = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _tls_context(self):
        import ipaddress
        import ssl

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        crt, key_path = self.env.state_dir / "kubelet.crt", self.env.state_dir / "kubelet.key"
        if not crt.exists() or not key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{self.env.node}")])
            now = datetime.now(timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now.replace(year=now.year + 5))
                    .add_extension(x509.SubjectAlternativeName([x509.DNSName(self.env.node),
                                                                x509.IPAddress(ipaddress.ip_address(self.node_ip))]), critical=False)
                    .sign(key, hashes.SHA256()))
            key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            key_path.chmod(0o600)
            crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(crt), str(key_path))
        return ctx

    def start(self) -> None:
        import socket
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        env = self.env

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # the agent's log is for the agent
                log.debug("kubelet api: " + fmt, *args)

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                parts = url.path.strip("/").split("/")
                if url.path in ("/healthz", "/readyz", "/livez"):
                    return self._reply(200, b"ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._reply(404, b"the local provider's node agent serves only /containerLogs (no exec, attach, port-forward)\n")
                _, ns, pod, container = parts
                path = rt.container_log_path(env, ns, pod, container)
                num = lambda k: int(q[k]) if q.get(k, "").lstrip("-").isdigit() else None  # noqa: E731
                try:
                    body = rt.read_container_log(path, previous=q.get("previous") == "true",
                                                 tail_lines=num("tailLines"), limit_bytes=num("limitBytes"))
                except FileNotFoundError as exc:
                    return self._reply(404, f"{exc}\n".encode())
                if q.get("follow") != "true":
                    return self._reply(200, body)
                # follow: stream what the container appends until the client goes away or it restarts.
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    offset = path.stat().st_size
                    self._chunk(body)
                    while True:
                        time.sleep(0.5)
                        size = path.stat().st_size
                        if size <= offset:
                            continue
                        with open(path, "rb") as f:
                            f.seek(offset)
                            new = f.read(size - offset)
                        offset = size
                        before, marker, _ = (b"\n" + new).partition(b"\n" + rt.LOG_MARKER)
                        if before[1:]:
                            self._chunk(before[1:])
                        if marker:
                            break  # the container restarted: kubelet ends the stream too
                    self._chunk(b"")
                except (OSError, ConnectionError):
                    return

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        sock = rt.netns_socket(env.node_netns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.node_ip, self.port))
        sock.listen(64)
        server = ThreadingHTTPServer((self.node_ip, self.port), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.socket.close()
        server.socket = self._tls_context().wrap_socket(sock, server_side=True)
        self.server = server
        threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
        log.info("serving /containerLogs on https://%s:%d in netns %s", self.node_ip, self.port, env.node_netns)


class Agent:
    def __init__(self, args: argparse.Namespace):
        from kubernetes import config as kconfig

        self.args = args
        self.node = args.node
        self.env = rt.NodeEnv(node=args.node, node_netns=args.node_netns, node_ip=args.node_ip, pod_cidr=args.pod_cidr,
                              run_id=args.run_id, state_dir=Path(args.state_dir), agnhost=args.agnhost,
                              node_ips=args.node_ips, pod_cidrs=args.pod_cidrs)
        from kubernetes.client import ApiClient, Configuration

        cfg = Configuration()
        kconfig.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
        # Status, events, deletes, watch and heartbeat share the pool; the default (5 per CPU)
        # overflowed with 50 pods stopping at once on a 2-CPU VM ("Connection pool is full").
        cfg.connection_pool_maxsize = 32
        self.rest = Rest(ApiClient(cfg))
        self.stop = threading.Event()
        self.status = StatusManager(self.rest, self.stop)
        self.events = EventRecorder(self.rest, args.node, self.stop)
        self.workers: dict[str, rt.PodWorker] = {}
        self.lock = threading.RLock()
        self.node_uid: str | None = None
        self.log_server_up = False
        self.boot_id = f"proxysuite-{args.run_id}-{args.node}-{int(time.time())}"
        """Fixed for the agent's lifetime: a changing bootID reads as a node reboot (kcm posts a Rebooted event)."""

    # ---- node registration and lease --------------------------------------------------------
    def _conditions(self, existing: list[dict]) -> list[dict]:
        now = rt.now_rfc3339()
        old = {c["type"]: c for c in existing}
        wanted = [("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                  ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                  ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                  ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available")]
        out = []
        for ctype, value, reason, message in wanted:
            prev = old.get(ctype) or {}
            ltt = prev.get("lastTransitionTime") if prev.get("status") == value and prev.get("lastTransitionTime") else now
            out.append({"type": ctype, "status": value, "reason": reason, "message": message,
                        "lastHeartbeatTime": now, "lastTransitionTime": ltt})
        return out

    def _node_status(self, existing_conditions: list[dict]) -> dict:
        uname = os.uname()
        ident = f"proxysuite-{self.args.run_id}-{self.node}"
        return {
            "addresses": [*({"type": "InternalIP", "address": ip} for ip in self.args.node_ips),
                          {"type": "Hostname", "address": self.node}],
            "capacity": CAPACITY, "allocatable": CAPACITY,
            "conditions": self._conditions(existing_conditions),
            "nodeInfo": {"kubeletVersion": rt.KUBELET_VERSION, "operatingSystem": "linux", "architecture": _arch(),
                         "kernelVersion": uname.release, "osImage": "proxysuite local node (network namespace)",
                         "containerRuntimeVersion": "proxysuite-local://0.1.0",
                         "machineID": ident, "systemUUID": ident, "bootID": self.boot_id},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT if self.log_server_up else 0}},
        }

    def register_node(self) -> None:
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": _arch(),
                  **dict(kv.split("=", 1) for kv in self.args.label)}
        try:
            node = self.rest("GET", f"/api/v1/nodes/{self.node}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": self.node, "labels": labels},
                    "spec": {"podCIDR": self.args.pod_cidr, "podCIDRs": list(self.args.pod_cidrs)},
                    "status": self._node_status([])}
            node = self.rest("POST", "/api/v1/nodes", body)
            log.info("registered node %s (podCIDR %s, InternalIP %s)", self.node, self.args.pod_cidr, self.args.node_ip)
        else:
            spec_patch: dict = {}
            cur = (node.get("spec") or {}).get("podCIDR")
            if not cur:
                spec_patch = {"podCIDR": self.args.pod_cidr, "podCIDRs": list(self.args.pod_cidrs)}
            elif cur != self.args.pod_cidr:
                log.error("node %s already has podCIDR %s, not %s; pods get addresses from %s anyway",
                          self.node, cur, self.args.pod_cidr, self.args.pod_cidr)
            patch = {"metadata": {"labels": labels}, **({"spec": spec_patch} if spec_patch else {})}
            node = self.rest("PATCH", f"/api/v1/nodes/{self.node}", patch, content_type=SMP)
            self._patch_node_status(node)
            log.info("updated existing node %s", self.node)
        self.node_uid = node["metadata"]["uid"]

    def _patch_node_status(self, node: dict | None = None) -> None:
        if node is None:
            node = self.rest("GET", f"/api/v1/nodes/{self.node}")
        status = self._node_status((node.get("status") or {}).get("conditions") or [])
        self.rest("PATCH", f"/api/v1/nodes/{self.node}/status", {"status": status}, content_type=SMP)

    def renew_lease(self) -> None:
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_DURATION, "renewTime": micro_now()}
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        try:
            lease = self.rest("GET", f"{path}/{self.node}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}] if self.node_uid else []
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": LEASE_NAMESPACE, "ownerReferences": owner}, "spec": spec}
            self.rest("POST", path, body)
            return
        lease["spec"] = {**(lease.get("spec") or {}), **spec}
        self.rest("PUT", f"{path}/{self.node}", lease)  # carries resourceVersion: optimistic concurrency

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stop.wait(LEASE_RENEW):
            try:
                self.renew_lease()
            except Exception as exc:  # noqa: BLE001 - logged and retried on the next beat
                log.warning("renewing lease %s/%s failed: %s", LEASE_NAMESPACE, self.node, exc)
            if time.monotonic() - last_status >= NODE_STATUS_REFRESH:
                try:
                    self._patch_node_status()
                    last_status = time.monotonic()
                except ApiError as exc:
                    if exc.status != 404:
                        log.warning("refreshing node %s status failed: %s", self.node, exc)
                        continue
                    # Someone deleted the Node (kubectl delete node): register it again, as kubelet does.
                    log.warning("node %s was deleted from the API; registering it again", self.node)
                    try:
                        self.register_node()
                        last_status = time.monotonic()
                    except Exception as exc2:  # noqa: BLE001 - retried on the next beat
                        log.warning("re-registering node %s failed: %s", self.node, exc2)
                except Exception as exc:  # noqa: BLE001
                    log.warning("refreshing node %s status failed: %s", self.node, exc)

    # ---- pods ----------------------------------------------------------------------------------
    def _list_pods(self) -> tuple[list[dict], str]:
        data = self.rest("GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={self.node}"})
        return data.get("items") or [], data["metadata"]["resourceVersion"]

    def sync_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if w is not None and not w.done and not w.alive:
                # The worker died on an unexpected error (logged); a fresh one adopts the pod's processes.
                log.warning("pod %s: worker had stopped unexpectedly, restarting it", w.key)
                w = None
            if w is not None and w.done and meta.get("deletionTimestamp"):
                # Its containers are gone: delete the object (again, if an earlier delete failed;
                # a completed pod that is deleted later goes the same way, as with kubelet).
                threading.Thread(target=self._on_finished, args=(pod, True), daemon=True).start()
                return
            if w is not None:
                w.update(pod)
                return
            if (pod.get("spec") or {}).get("nodeName") != self.node:
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                # Terminal pods are not run again; a deleted terminal pod is removed at once, like kubelet.
                if meta.get("deletionTimestamp"):
                    threading.Thread(target=self._delete_pod, args=(pod,), daemon=True).start()
                return
            w = rt.PodWorker(pod, self.env, self.status.sink, self._on_finished, self.events)
            self.workers[uid] = w
            log.info("pod %s/%s (uid %s): starting", meta.get("namespace"), meta["name"], uid)
            w.start()

    def pod_gone(self, uid: str) -> None:
        """The API object is gone: stop the worker (without grace if it was still running) and forget it."""
        with self.lock:
            w = self.workers.get(uid)
        if w is None:
            return
        if not w.done:
            log.info("pod %s was deleted from the API while running: killing it", w.key)
            w.kill_now()
            w.join(30)
        with self.lock:
            self.workers.pop(uid, None)
        self.status.forget(uid)

    def _on_finished(self, pod: dict, deleted: bool) -> None:
        self.status.flush(pod["metadata"]["uid"])
        if deleted:
            self._delete_pod(pod)

    def _delete_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            # Kubelet's final delete: grace 0, guarded by the UID so a same-named successor survives.
            self.rest("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                      {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
            log.info("pod %s/%s: deleted (grace 0) after termination", meta["namespace"], meta["name"])
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod %s/%s failed: %s", meta["namespace"], meta["name"], exc)

    def reconcile_orphans(self, api_pods: list[dict]) -> None:
        """Remove sandboxes, processes and IPs of pods that no longer exist (deleted while we were down).

        A pod counts as live if the API still has it in a non-terminal phase or a worker owns it.
        """
        live = {p["metadata"]["uid"] for p in api_pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")}
        with self.lock:
            live |= set(self.workers)
        rt.reconcile_node(self.env, live)

    def _relist(self) -> str:
        pods, rv = self._list_pods()
        # Addresses the API already shows stay with their pods, even if our IPAM state was lost:
        # reserve them before any new pod asks for one.
        for pod in pods:
            st, spec = pod.get("status") or {}, pod.get("spec") or {}
            if st.get("podIP") and not spec.get("hostNetwork") and st.get("phase") not in ("Succeeded", "Failed"):
                self.env.ipam.reserve(pod["metadata"]["uid"], st["podIP"])
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self.sync_pod(pod)
        with self.lock:
            missing = [uid for uid in self.workers if uid not in seen]
        for uid in missing:
            # In the background: killing a force-deleted pod must not hold up the watch.
            threading.Thread(target=self.pod_gone, args=(uid,), daemon=True).start()
        self.reconcile_orphans(pods)
        return rv

    def _watch_loop(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        backoff = 1.0
        rv = None
        last_list = 0.0
        while not self.stop.is_set():
            try:
                if rv is None or time.monotonic() - last_list > RESYNC:
                    rv = self._relist()
                    last_list = time.monotonic()
                resp = self.rest.stream("/api/v1/pods", {
                    "fieldSelector": f"spec.nodeName={self.node}", "watch": "true", "resourceVersion": rv,
                    "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_TIMEOUT)}, timeout=(10, WATCH_TIMEOUT + 30))
                try:
                    for line in iter_resp_lines(resp):
                        if self.stop.is_set():
                            return
                        if not line or not line.strip():
                            continue
                        ev = json.loads(line)
                        obj, etype = ev.get("object") or {}, ev.get("type")
                        if etype == "ERROR":
                            log.info("watch ended: %s %s", obj.get("code"), obj.get("message"))
                            rv = None  # 410 Gone and friends: list again
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if etype in ("ADDED", "MODIFIED"):
                            self.sync_pod(obj)
                        elif etype == "DELETED":
                            threading.Thread(target=self.pod_gone, args=(obj["metadata"]["uid"],), daemon=True).start()
                finally:
                    resp.release_conn()
                backoff = 1.0
            except ApiError as exc:
                log.warning("pod watch failed: %s; re-listing in %.0fs", exc, backoff)
                rv = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # noqa: BLE001 - connection resets, apiserver restarts
                log.warning("pod watch interrupted: %s; re-listing in %.0fs", exc, backoff)
                rv = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # ---- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.register_node()
                self.renew_lease()
                break
            except Exception as exc:  # noqa: BLE001 - the apiserver may still be starting
                log.warning("registering node %s failed: %s; retrying in %.1fs", self.node, exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
        if self.stop.is_set():
            return 0
        try:
            KubeletLogServer(self.env, self.args.node_ip).start()
            self.log_server_up = True
            self._patch_node_status()  # publish daemonEndpoints now that something listens
        except Exception as exc:  # noqa: BLE001 - logs are a convenience; pods run without them
            log.warning("not serving container logs on %s:%d: %s", self.args.node_ip, KUBELET_PORT, exc)
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._watch_loop, name="watch", daemon=True).start()
        self.stop.wait()
        return 0

    def shutdown(self) -> None:
        """SIGTERM: stop watching and heartbeating; leave every pod as it is."""
        log.info("stopping: leaving %d pod(s) running", len(self.workers))
        self.stop.set()
        with self.lock:
            for w in self.workers.values():
                w.detach()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m proxysuite.cluster.local.nodeagent",
                                description="kubelet stand-in for a netns-emulated node of the local provider")
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of user system:node:<node> (group system:nodes)")
    p.add_argument("--node", required=True, help="Node name (also the hostname of hostNetwork pods)")
    p.add_argument("--node-netns", required=True, help="existing netns of the node (eth0 on the fabric, ip_forward=1)")
    p.add_argument("--node-ip", required=True, help="the node's InternalIP (eth0 in the node netns); dual-stack: one per "
                   "family, comma-separated, primary first (like kubelet's --node-ip)")
    p.add_argument("--pod-cidr", required=True, help="this node's pod CIDR, e.g. 10.244.1.0/24 (.1 is the pods' gateway); "
                   "dual-stack: one per family, comma-separated, primary first (spec.podCIDRs); pods get one address from each")
    p.add_argument("--run-id", required=True, help="run id; pod netns are named ps-<run-id>-pod-<uid12>")
    p.add_argument("--state-dir", required=True, help="IPAM state, per-pod state and container logs")
    p.add_argument("--agnhost", required=True, help="path of the agnhost binary that stands in for agnhost images")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Node label, repeatable (the provider passes the topology zone and region)")
    p.add_argument("--log-level", default=os.environ.get("PROXYSUITE_NODEAGENT_LOG", "INFO"))
    args = p.parse_args(argv)
    args.node_ips = [x.strip() for x in args.node_ip.split(",") if x.strip()]
    args.pod_cidrs = [x.strip() for x in args.pod_cidr.split(",") if x.strip()]
    if len(args.node_ips) != len(args.pod_cidrs):
        p.error(f"--node-ip names {len(args.node_ips)} address(es) but --pod-cidr {len(args.pod_cidrs)} range(s): give one of each per family")
    args.node_ip, args.pod_cidr = args.node_ips[0], args.pod_cidrs[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {args.node} %(levelname)s %(message)s")
    problems = []
    if not rt.netns_exists(args.node_netns):
        problems.append(f"node netns {args.node_netns} does not exist (create it before starting the agent)")
    if not os.access(args.agnhost, os.X_OK):
        problems.append(f"agnhost binary {args.agnhost} is not executable (pass --agnhost with the built binary)")
    if not os.path.exists(args.kubeconfig):
        problems.append(f"kubeconfig {args.kubeconfig} does not exist")
    if problems:
        for msg in problems:
            log.error("%s", msg)
        return 2
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    # An insecure-skip-tls-verify kubeconfig would otherwise print a warning per request.
    warnings.filterwarnings("once", message="Unverified HTTPS request")
    agent = Agent(args)

    agent_pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != agent_pid:
            # pyroute2 forks short-lived helpers (netns creation, netlink sockets in a netns) and
            # stops them with SIGTERM; they inherit this handler and must simply die.
            os._exit(0)
        agent.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = agent.run()
    log.info("node agent %s exited", args.node)
    return rc


if __name__ == "__main__":
    code = main()
    # Leave at once: pods are left running on purpose, every state file is written atomically, and
    # a normal interpreter exit would wait on helper threads (blocked watch reads, probers).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

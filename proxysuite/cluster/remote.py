"""Vantage points on a real cluster, reached with ``kubectl exec`` (shared by ``kind`` and ``existing``).

How a probe runs remotely
-------------------------
The probe engine (``proxysuite/probes/engine.py``) is stdlib-only, so its source
is sent as ``python3 -c <source> '<json requests>'`` into a pod whose image has
python3 (:data:`proxysuite.images.CLIENT_IMAGE`). Each observation comes back
as one JSON line on stdout. Nothing is copied into the pod and nothing is
installed there.

Vantage pods
------------
* **client pods** are created by the suites in the test's namespace (see
  :func:`client_pod_manifest`); :meth:`KubectlCluster.pod_vantage` wraps any
  running pod that has python3.
* **node vantages** are hostNetwork pods, one per node, pinned with ``nodeName``
  and tolerating every taint, in this run's own namespace
  ``proxysuite-<run id>`` (label ``proxysuite.io/run-id``). They carry packets
  from the node's network namespace and read the proxy's own endpoints on
  ``127.0.0.1:10249`` (metrics, ``/proxyMode``) and ``:10256`` (healthz).

Two transports to the same engine
---------------------------------
* ``exec`` (default): ``kubectl exec POD -- python3 -c <engine> '<json>'``.
* ``proxy``: for clusters whose nodes serve no kubelet API (no ``kubectl exec``,
  e.g. the local provider's node agent) or where exec is forbidden. Client pods
  made by :func:`client_pod_manifest` run a tiny stdlib HTTP *probe server*
  around the same engine; the runner calls it through the apiserver's pod
  proxy (``GET /api/v1/namespaces/NS/pods/POD:PORT/proxy/probe?q=<json>``).
  The probes still start inside the pod; only the control channel differs.

A cluster picks ``exec`` when every node reports a kubelet endpoint
(``status.daemonEndpoints.kubeletEndpoint.Port``) *and* one real exec into the
first node vantage pod works, else ``proxy`` (:meth:`KubectlCluster.transport`
records why); ``PROXYSUITE_VANTAGE_TRANSPORT=exec|proxy`` forces one.

Only namespaces labelled with this run's id are ever deleted
(:func:`delete_run_namespaces`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ProbeError, SuiteError, Unsupported
from ..images import backend_image, client_image
from ..probes import engine
from ..probes.engine import Observation, ProbeRequest
from ..runscope import RUN_LABEL, helper_namespace, namespace_labels
from .base import Cluster, NodeInfo, Vantage

ROLE_LABEL = "proxysuite.io/role"
PROBE_PORT_ANNOTATION = "proxysuite.io/probe-port"
CLIENT_PROBE_PORT = 9109
"""Probe-server port in ordinary client pods (their own network namespace, so one fixed port)."""
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"

VANTAGE_POD_READY_TIMEOUT = 180
"""Seconds for a hostNetwork vantage pod to become Ready: the first pull of the client image on a node is what lags."""
EXEC_SLACK = 30
"""Seconds added to every exec on top of the probes' own timeouts: apiserver→kubelet exec setup and python3 start-up."""
KUBECTL_TIMEOUT = 60
"""Ceiling for one ordinary kubectl call (get/apply/delete); a slow apiserver is what lags."""

INSTALL_HINTS = {
    "kubectl": "install kubectl (https://kubernetes.io/docs/tasks/tools/) and put it on PATH",
    "kind": "install kind v0.33.0 (go install sigs.k8s.io/kind@v0.33.0, or a release binary) and put it on PATH",
    "helm": "install helm v3 (https://helm.sh/docs/intro/install/) and put it on PATH; --mode cilium needs it",
    "docker": "install the Docker CLI and start a Docker engine (kind runs its nodes as containers)",
}


def require_tool(name: str) -> str:
    """The absolute path of ``name`` on PATH, or a one-line SuiteError naming the install step."""
    path = shutil.which(name)
    if not path:
        raise SuiteError(f"{name} is not installed (not found on PATH)", INSTALL_HINTS.get(name, f"install {name}"))
    return path


class ToolError(ProbeError):
    """An external command (kubectl, kind, helm, docker) failed; ``str()`` names the command, exit code and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, stdout: str = ""):
        self.argv, self.returncode, self.stderr, self.stdout = list(argv), returncode, stderr, stdout
        super().__init__(f"`{_short(argv)}` exited {returncode}: {_tail(stderr or stdout)}")


def _tail(text: str, limit: int = 400) -> str:
    """The last line of a command's output, without the exec URL's query (which repeats the whole command), capped."""
    lines = text.strip().splitlines()
    line = lines[-1] if lines else "no output"
    line = re.sub(r"\?command=[^\s\"]*", "?command=…", line)
    return line if len(line) <= limit else line[:limit] + "…"


def _short(argv: Sequence[str]) -> str:
    parts = []
    for a in argv:
        parts.append(a if len(a) <= 60 else a[:40] + "…")
    return " ".join(parts)


def run_tool(argv: Sequence[str], *, input: str | None = None, timeout: float = KUBECTL_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    """Run one command without a shell; raise :class:`ToolError` on failure and SuiteError when it is missing."""
    try:
        proc = subprocess.run(list(argv), input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        name = Path(argv[0]).name
        raise SuiteError(f"{name} is not installed (not found on PATH)", INSTALL_HINTS.get(name, f"install {name}")) from None
    except subprocess.TimeoutExpired:
        raise ToolError(argv, -1, f"no answer within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise ToolError(argv, proc.returncode, proc.stderr, proc.stdout)
    return proc


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one kubeconfig (and optionally one context)."""

    kubeconfig: str
    context: str | None = None
    binary: str = "kubectl"

    def argv(self, *args: str) -> list[str]:
        out = [self.binary, "--kubeconfig", self.kubeconfig]
        if self.context:
            out += ["--context", self.context]
        return out + list(args)

    def run(self, *args: str, input: str | None = None, timeout: float = KUBECTL_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        return run_tool(self.argv(*args), input=input, timeout=timeout, check=check)

    def json(self, *args: str, timeout: float = KUBECTL_TIMEOUT) -> dict:
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, objects: dict | list[dict], timeout: float = KUBECTL_TIMEOUT) -> None:
        docs = objects if isinstance(objects, list) else [objects]
        self.run("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}), timeout=timeout)


def engine_source() -> str:
    """The probe engine's source, sent verbatim to ``python3 -c``."""
    return Path(engine.__file__).read_text(encoding="utf-8")


def exec_budget(requests: Sequence[ProbeRequest]) -> float:
    """Seconds one exec of ``requests`` may take: each probe's worst case (connect + two replies) plus pauses, plus slack."""
    total = 0.0
    for r in requests:
        # A stream's connections run at once for r.stream seconds; its last exchange may take a timeout more.
        total += r.stream + 3 * r.timeout if r.stream else r.count * (3 * r.timeout + r.interval)
    return total + EXEC_SLACK


def parse_observations(stdout: str) -> list[Observation]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(Observation(**json.loads(line)))
    return out


def _missing_python(stderr: str) -> bool:
    return bool(re.search(r"python3.*(not found|no such file)|executable file not found", stderr, re.I))


def exec_engine(exec_prefix: list[str], payload: object, budget: float, where: str) -> str:
    """Run the engine through ``exec_prefix`` (``kubectl exec … --`` or ``docker exec …``); return its stdout."""
    argv = exec_prefix + ["python3", "-c", engine_source(), json.dumps(payload)]
    try:
        return run_tool(argv, timeout=budget).stdout
    except ToolError as exc:
        if _missing_python(exc.stderr):
            raise ProbeError(
                f"{where} has no python3, so the probe engine cannot run there; vantage pods must use an image with python3 such as {client_image()}"
            ) from None
        raise ProbeError(f"probe from {where} failed: {exc}") from None


_PROBE_SERVER = r'''
import json, signal, sys, types, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
engine = types.ModuleType("proxysuite_engine")
sys.modules["proxysuite_engine"] = engine
exec(compile(ENGINE_SOURCE, "proxysuite/probes/engine.py", "exec"), engine.__dict__)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            return self._send(200, "ok")
        if url.path != "/probe":
            return self._send(404, "unknown path")
        try:
            payload = json.loads(urllib.parse.parse_qs(url.query)["q"][0])
            if isinstance(payload, dict) and payload.get("http_get"):
                status, body = engine.http_get(**payload["http_get"])
                return self._send(200, json.dumps({"status": status, "body": body}))
            obs = engine.run([engine.ProbeRequest(**r) for r in payload])
            return self._send(200, "\n".join(json.dumps(o.to_dict()) for o in obs))
        except Exception as exc:
            return self._send(500, json.dumps({"error": type(exc).__name__ + ": " + str(exc)}))

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
ThreadingHTTPServer(("", int(sys.argv[1])), Handler).serve_forever()
'''


def probe_server_source() -> str:
    """``python3 -c`` source of the probe server: the engine (loaded as a module) behind ``GET /probe?q=<json>``."""
    return f"ENGINE_SOURCE = {engine_source()!r}\n" + _PROBE_SERVER


def host_probe_port(run_id: str) -> int:
    """Probe-server port of a run's hostNetwork vantage pods: in the node's port space, so it differs per run
    (20000–29999: below the NodePort range and the usual ephemeral range)."""
    return 20000 + int(run_id, 16) % 10000 if re.fullmatch(r"[0-9a-f]+", run_id) else 20000 + sum(map(ord, run_id)) % 10000


def client_pod_manifest(name: str, namespace: str, node: str | None, run_id: str, *, host_network: bool = False,
                        image: str | None = None, labels: dict | None = None, port: int | None = None) -> dict:
    """A client pod: python3 for the probe engine, running the probe server until deleted; pinned to ``node`` when given.

    Works with both transports (``kubectl exec`` and the apiserver pod proxy). ``host_network=True`` makes it a
    node vantage (the node's network namespace). It tolerates every taint so it also lands on control-plane nodes.
    """
    port = port or (host_probe_port(run_id) if host_network else CLIENT_PROBE_PORT)
    spec: dict = {
        "terminationGracePeriodSeconds": 1,
        "tolerations": [{"operator": "Exists"}],
        "containers": [{
            "name": "client",
            "image": image or client_image(),
            "imagePullPolicy": "IfNotPresent",
            # The server handles SIGTERM (PID 1 would ignore it otherwise), so deletes are quick.
            "command": ["python3", "-c", probe_server_source(), str(port)],
            "ports": [{"name": "probe", "containerPort": port, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 2, "timeoutSeconds": 2},
            "resources": {"requests": {"cpu": "10m", "memory": "24Mi"}},
        }],
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {RUN_LABEL: run_id, ROLE_LABEL: "host-vantage" if host_network else "client", **(labels or {})},
                     "annotations": {PROBE_PORT_ANNOTATION: str(port)}},
        "spec": spec,
    }


def run_namespace(run_id: str) -> str:
    """The namespace a run keeps its own helper pods in (node vantages)."""
    return helper_namespace(run_id)


def namespace_manifest(name: str, run_id: str) -> dict:
    # hostNetwork vantage pods are rejected under the baseline/restricted Pod Security levels.
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": namespace_labels(run_id, privileged=True)}}


def dns_label(text: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out[:63].strip("-") or "x"


def delete_run_namespaces(kubectl: Kubectl, run_id: str, progress: Callable[[str], None] | None = None, wait: bool = False) -> list[str]:
    """Delete every namespace labelled with this run's id (and no other); return their names."""
    proc = kubectl.run("get", "namespaces", "-l", f"{RUN_LABEL}={run_id}", "-o", "name", check=False)
    names = [line.split("/", 1)[-1] for line in proc.stdout.split() if line.strip()]
    for name in names:
        try:
            kubectl.run("delete", "namespace", name, "--ignore-not-found", f"--wait={'true' if wait else 'false'}",
                        timeout=300 if wait else KUBECTL_TIMEOUT)
        except ProbeError as exc:
            if progress:
                progress(f"could not delete namespace {name}: {exc}")
    # The one cluster-scoped kind a run creates (suites/conformance/test_service_cidrs.py) carries the same label;
    # a cluster without the ServiceCIDR API just answers with an error, which changes nothing.
    try:
        kubectl.run("delete", "servicecidrs.networking.k8s.io", "-l", f"{RUN_LABEL}={run_id}", "--ignore-not-found",
                    "--wait=false", check=False)
    except ProbeError as exc:
        if progress:
            progress(f"could not delete this run's ServiceCIDRs: {exc}")
    return names


def parse_nodes(doc: dict) -> list[tuple[NodeInfo, bool, list[dict]]]:
    """(node, is_control_plane, taints) for each Node in a ``kubectl get nodes -o json`` answer, in name order."""
    out = []
    for item in sorted(doc.get("items", []), key=lambda n: n["metadata"]["name"]):
        meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status", {})
        ips = tuple(a["address"] for a in status.get("addresses", []) if a.get("type") == "InternalIP")
        is_cp = CONTROL_PLANE_LABEL in meta.get("labels", {})
        out.append((NodeInfo(meta["name"], ips[0] if ips else "", spec.get("podCIDR"), internal_ips=ips), is_cp,
                    spec.get("taints", []) or []))
    return out


NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def _ready(item: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (item.get("status") or {}).get("conditions") or [])


def schedulable_nodes(doc: dict) -> list[NodeInfo]:
    """Nodes ordinary pods land on: no NoSchedule/NoExecute taint and not a control plane; all nodes if that leaves none.

    A Ready node's ``not-ready`` taint is ignored: the node lifecycle controller lifts it a moment after the node
    turns Ready, and a list read in that moment would otherwise fall back to every node, control plane included
    (seen on kind: backends then landed on the control plane, which LoadBalancers exclude)."""
    ready = {item["metadata"]["name"] for item in doc.get("items", []) if _ready(item)}
    parsed = parse_nodes(doc)

    def blocking(node: NodeInfo, taint: dict) -> bool:
        if taint.get("key") == NOT_READY_TAINT and node.name in ready:
            return False
        return taint.get("effect") in ("NoSchedule", "NoExecute")

    good = [n for n, cp, taints in parsed if not cp and not any(blocking(n, t) for t in taints)]
    return good or [n for n, _, _ in parsed]


class KubectlCluster(Cluster):
    """The part of a cluster that only needs kubectl: nodes, pod/node vantages, the proxy's HTTP endpoints."""

    def __init__(self, *, provider: str, mode: str, name: str, kubeconfig: str, run_id: str, context: str | None = None):
        self.provider, self.mode, self.name, self.kubeconfig = provider, mode, name, kubeconfig
        self.run_id = run_id
        self.kubectl = Kubectl(kubeconfig, context)
        self.client_image = client_image()
        self.backend_image = backend_image()
        self._nodes: list[NodeInfo] | None = None
        self._host_pods: dict[str, str] = {}
        self._ns_ready = False
        self._transport: str | None = None
        self.transport_reason = ""

    # --- topology ------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        if self._nodes is None:
            self._nodes = schedulable_nodes(self.kubectl.json("get", "nodes"))
        return list(self._nodes)

    def all_nodes(self) -> list[NodeInfo]:
        return [n for n, _, _ in parse_nodes(self.kubectl.json("get", "nodes"))]

    # --- vantages ------------------------------------------------------------------------
    def transport(self) -> str:
        """``exec`` when ``kubectl exec`` works on this cluster, else ``proxy`` (see the module doc).

        Nodes that report no kubelet endpoint cannot exec; nodes that do are tried once for real
        (``python3 -c print`` in the first node's vantage pod), because an endpoint in the Node status
        does not prove that anything serves it, and RBAC or admission may forbid exec."""
        if self._transport is None:
            forced = os.environ.get("PROXYSUITE_VANTAGE_TRANSPORT")
            if forced in ("exec", "proxy"):
                self._transport, self.transport_reason = forced, "PROXYSUITE_VANTAGE_TRANSPORT"
            else:
                items = self.kubectl.json("get", "nodes").get("items", [])
                ports = [((i.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint", {}).get("Port", 0) for i in items]
                if not (ports and all(ports)):
                    self._transport, self.transport_reason = "proxy", "the nodes report no kubelet endpoint (no kubectl exec)"
                else:
                    ns, pod = self.host_pod(self.nodes()[0].name)
                    proc = self.kubectl.run("exec", "-n", ns, pod, "-c", "client", "--", "python3", "-c", "print('proxysuite-exec-ok')",
                                            check=False, timeout=KUBECTL_TIMEOUT)
                    if proc.returncode == 0 and "proxysuite-exec-ok" in proc.stdout:
                        self._transport, self.transport_reason = "exec", "kubectl exec works"
                    else:
                        self._transport = "proxy"
                        self.transport_reason = "kubectl exec failed: " + _tail(proc.stderr or proc.stdout)
        return self._transport

    def pod_runner(self, namespace: str, pod: str, container: str | None = None, doc: dict | None = None) -> Callable[[object, float, str], str]:
        """A function ``(payload, budget, where) -> engine stdout`` that runs the engine inside ``pod``."""
        doc = doc or self.kubectl.json("get", "pod", pod, "-n", namespace)
        if self.transport() == "exec":
            container = container or doc["spec"]["containers"][0]["name"]
            prefix = self.kubectl.argv("exec", "-n", namespace, pod, "-c", container, "--")
            return lambda payload, budget, where: exec_engine(prefix, payload, budget, where)
        port = ((doc.get("metadata") or {}).get("annotations") or {}).get(PROBE_PORT_ANNOTATION)
        if not port:
            raise ProbeError(
                f"pod {namespace}/{pod} runs no probe server (annotation {PROBE_PORT_ANNOTATION}) and this cluster offers no "
                "kubectl exec (its nodes serve no kubelet API); create client pods with proxysuite.cluster.remote.client_pod_manifest"
            )
        base = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/probe"

        def call(payload: object, budget: float, where: str) -> str:
            path = base + "?q=" + urllib.parse.quote(json.dumps(payload, separators=(",", ":")), safe="")
            try:
                return self.kubectl.run("get", "--raw", path, f"--request-timeout={int(budget)}s", timeout=budget + 10).stdout
            except ToolError as exc:
                raise ProbeError(f"probe from {where} through the apiserver pod proxy failed: {exc}") from None

        return call

    def pod_vantage(self, namespace: str, pod: str, container: str | None = None) -> Vantage:
        doc = self.kubectl.json("get", "pod", pod, "-n", namespace)
        spec, status = doc.get("spec", {}), doc.get("status", {})
        if status.get("phase") != "Running":
            raise ProbeError(f"pod {namespace}/{pod} is {status.get('phase', 'unknown')}, not Running; a vantage needs a running pod")
        images = [c.get("image", "") for c in spec.get("containers", [])]
        if container is None and images and all("agnhost" in i for i in images):
            raise Unsupported(
                f"pod {namespace}/{pod} runs agnhost ({images[0]}), which has no python3 for the probe engine, so it cannot be a "
                f"vantage on the {self.provider} provider (hairpin checks probe from a backend)",
                "run hairpin checks on --provider local",
            )
        node = spec.get("nodeName")
        host = bool(spec.get("hostNetwork"))
        source_ip = status.get("podIP", "")
        source_ips = tuple(i.get("ip") for i in status.get("podIPs") or [] if i.get("ip"))
        if self.transport() == "proxy" and PROBE_PORT_ANNOTATION not in ((doc.get("metadata") or {}).get("annotations") or {}):
            doc = self.companion(namespace, pod, doc)
            source_ip = (doc.get("status") or {}).get("podIP", source_ip)
            source_ips = tuple(i.get("ip") for i in (doc.get("status") or {}).get("podIPs") or [] if i.get("ip"))
        call = self.pod_runner(namespace, doc["metadata"]["name"], container, doc)
        where = f"pod {namespace}/{pod}"

        def runner(requests: list[ProbeRequest]) -> list[Observation]:
            return parse_observations(call([asdict(r) for r in requests], exec_budget(requests), where))

        return Vantage(name=f"{pod}@{node}", kind="node" if host else "pod", node=node, source_ip=source_ip, runner=runner,
                       source_ips=source_ips)

    def companion(self, namespace: str, pod: str, doc: dict) -> dict:
        """For the ``proxy`` transport: a probe-server pod standing in for client pod ``pod`` (same node, same
        hostNetwork setting, same namespace), because ``pod`` runs no probe server and cannot be exec'ed into.
        Only client pods get one (label ``proxysuite.io/role`` client/host-client); the source IP is the companion's."""
        role = ((doc.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL, "")
        if role not in ("client", "host-client", "host-vantage"):
            raise Unsupported(
                f"pod {namespace}/{pod} runs no probe server and this cluster offers no kubectl exec (its nodes serve no "
                "kubelet API), so it cannot be a vantage",
                "create client pods with proxysuite.cluster.remote.client_pod_manifest, or use a cluster with kubectl exec",
            )
        spec = doc.get("spec", {})
        name = dns_label(f"probe-{pod}")
        host = bool(spec.get("hostNetwork"))
        # hostNetwork companions share the node's port space: a port per (namespace, pod), away from the run's host vantages.
        port = 20000 + int(hashlib.sha1(f"{namespace}/{pod}".encode()).hexdigest()[:8], 16) % 10000 if host else None
        body = client_pod_manifest(name, namespace, spec.get("nodeName"), self.run_id, host_network=host, port=port,
                                   labels={ROLE_LABEL: "probe-companion"})
        proc = self.kubectl.run("get", "pod", name, "-n", namespace, "-o", "name", check=False)
        if proc.returncode != 0:
            self.kubectl.apply(body)
        try:
            self.kubectl.run("wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}", f"--timeout={VANTAGE_POD_READY_TIMEOUT}s",
                             timeout=VANTAGE_POD_READY_TIMEOUT + 15)
        except ProbeError as exc:
            raise ProbeError(f"probe companion {namespace}/{name} for {pod} was not Ready within {VANTAGE_POD_READY_TIMEOUT}s ({exc})") from None
        return self.kubectl.json("get", "pod", name, "-n", namespace)

    def _ensure_namespace(self) -> str:
        ns = run_namespace(self.run_id)
        if not self._ns_ready:
            try:
                self.kubectl.apply(namespace_manifest(ns, self.run_id))
            except ToolError as exc:
                if "AlreadyExists" not in exc.stderr and "already exists" not in exc.stderr:
                    raise
            self._ns_ready = True
        return ns

    def host_pod(self, node: str) -> tuple[str, str]:
        """(namespace, pod) of the hostNetwork vantage pod on ``node``, created and awaited on first use."""
        ns = self._ensure_namespace()
        if node in self._host_pods:
            return ns, self._host_pods[node]
        pod = dns_label(f"host-{node}")
        try:
            self.kubectl.apply(client_pod_manifest(pod, ns, node, self.run_id, host_network=True))
        except ToolError as exc:
            # pytest-xdist workers share the run's vantage pods; another worker may have created it first.
            if "AlreadyExists" not in exc.stderr and "already exists" not in exc.stderr:
                raise
        try:
            self.kubectl.run("wait", "-n", ns, "--for=condition=Ready", f"pod/{pod}", f"--timeout={VANTAGE_POD_READY_TIMEOUT}s",
                             timeout=VANTAGE_POD_READY_TIMEOUT + 15)
        except ProbeError as exc:
            raise ProbeError(
                f"node vantage pod {ns}/{pod} on {node} was not Ready within {VANTAGE_POD_READY_TIMEOUT}s ({exc}); "
                f"check that node {node} can pull {self.client_image}, or set PROXYSUITE_CLIENT_IMAGE to an image with "
                "python3 that it has (an offline kind node: proxysuite.local/client:<hash>, see `crictl images` on the node)"
            ) from None
        self._host_pods[node] = pod
        return ns, pod

    def node_vantage(self, node: str) -> Vantage:
        """Packets from the node's own network namespace (a hostNetwork pod pinned to ``node``)."""
        ns, pod = self.host_pod(node)
        vantage = self.pod_vantage(ns, pod, "client")
        return Vantage(name=node, kind="node", node=node, source_ip=vantage.source_ip, runner=vantage.runner,
                       source_ips=vantage.source_ips)

    # --- the proxy ------------------------------------------------------------------------
    def proxy_http(self, node: str, port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
        ns, pod = self.host_pod(node)
        call = self.pod_runner(ns, pod, "client")
        payload = {"http_get": {"host": host, "port": port, "path": path, "timeout": 5.0}}
        out = call(payload, 5 + EXEC_SLACK, f"node {node} ({host}:{port}{path})")
        answer = json.loads(out.strip().splitlines()[-1])
        if "error" in answer:
            raise ProbeError(f"GET {host}:{port}{path} on {node} failed: {answer['error']}")
        return int(answer["status"]), answer["body"]

    def kube_system_pod(self, node: str, selector: str) -> str | None:
        proc = self.kubectl.run("get", "pods", "-n", "kube-system", "-l", selector, "--field-selector", f"spec.nodeName={node}",
                                "-o", "name", check=False)
        names = [line.split("/", 1)[-1] for line in proc.stdout.split()]
        return names[0] if names else None

    def wait_deadline(self, what: str, seconds: float, check: Callable[[], bool], every: float = 2.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if check():
                return
            if time.monotonic() >= deadline:
                raise ProbeError(f"{what} did not happen within {seconds:.0f}s")
            time.sleep(every)

"""ServiceJig: one object owns a Service scenario — backends, clients, Services — and its waits.

A conformance check never writes Kubernetes objects itself; it asks a jig::

    jig = ServiceJig(cluster, k8s, namespace, run_id)
    jig.backends({nodes[0]: 2})                 # agnhost netexec, HTTP :8080, UDP :8081, pinned per node
    svc = jig.service("web", type="NodePort")   # template + tweak; allocation sanity-checked
    jig.wait_ready(svc, endpoints=2)            # pods Ready → EndpointSlices → datapath (a probe answers)
    obs = jig.probe(jig.vantage("pod-other-node"), jig.target(svc, "clusterip"), count=20)

Backends are Deployments, one per node they are pinned to (``spec.nodeName`` in the
template, so placement is exact on every provider without a scheduler); every
backend carries the jig's selector labels, so one Service selects all of them and
extra Services can select subsets by ``group``. Client pods idle (``sleep``) in the
client image, one per node on demand; node vantages are the provider's own
(``Cluster.node_vantage``). Everything the jig creates lives in its namespace,
which its owner deletes.

Every probe, wait and write is appended to :attr:`transcript`, which the failure
forensics attach to the report.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .. import runlocks, waits
from ..errors import ProbeError, Unsupported
from ..probes import analysis
from ..probes.engine import OK, Observation, ProbeRequest
from ..runscope import RUN_LABEL

HTTP_PORT = 8080
UDP_PORT = 8081
CLOSED_PORT = 9999
"""Nothing listens here: a readiness probe on it never succeeds (a permanently unready backend)."""
SERVING_GATE = "proxysuite.io/serving"
"""Readiness gate of backends made with ``backends(gated=True)``: such a pod is Ready only while a check holds this
condition True (:meth:`ServiceJig.set_gate`), so readiness flips without stopping, deleting or re-probing the pod."""
APP_LABEL = "proxysuite.io/app"
GROUP_LABEL = "proxysuite.io/group"


@dataclass(frozen=True)
class Target:
    """An address a probe is sent to, and how it was derived."""

    kind: str
    """``clusterip``, ``nodeport``, ``lb``, ``external-ip``, ``pod`` or a free-form kind."""
    host: str
    port: int
    proto: str
    node: str | None = None
    """For NodePorts: the node whose IP this is."""
    service: str = ""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}/{self.proto}" if ":" in self.host else f"{self.host}:{self.port}/{self.proto}"


@dataclass(frozen=True)
class Backend:
    name: str
    node: str
    ip: str
    ready: bool
    terminating: bool


@dataclass
class TranscriptEntry:
    at: float
    kind: str
    """``probe``, ``wait``, ``write``, ``skip`` or ``note``."""
    text: str
    observations: list[Observation] = field(default_factory=list)

    def render(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.at)) + f".{int(self.at * 1000) % 1000:03d}"
        lines = [f"{stamp} {self.kind:5} {self.text}"]
        for o in self.observations:
            who = f" backend={o.backend}" if o.backend else ""
            cip = f" client_ip={o.client_ip}" if o.client_ip else ""
            lat = f" connect={o.connect_us:.0f}us" if o.connect_us is not None else ""
            err = f" error={o.error}" if o.error else ""
            addr = f"[{o.host}]:{o.port}" if ":" in o.host else f"{o.host}:{o.port}"
            lines.append(f"      {o.protocol} {addr} {o.outcome}{who}{cip}{lat}{err}")
        return "\n".join(lines)


class ServiceJig:
    """Owns the objects of one scenario in one namespace. Not thread-safe; one per test or per module."""

    def __init__(self, cluster, api_client, namespace: str, run_id: str, app: str = "backend"):
        from kubernetes import client

        self.cluster = cluster
        self.namespace = namespace
        self.run_id = run_id
        self.app = app
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.created = time.time()
        self.transcript: list[TranscriptEntry] = []
        self.services: list[str] = []
        """Names of the Services this jig created (for forensics)."""
        self.groups: dict[str, dict] = {}
        """Backend group name → {"node", "replicas", "ready"}."""
        self._clients: dict[tuple[str, bool], str] = {}
        self._vantages: dict[str, object] = {}
        self._nodes = cluster.nodes()

    # --- bookkeeping -----------------------------------------------------------------------
    def log(self, kind: str, text: str, observations: Sequence[Observation] = ()) -> None:
        self.transcript.append(TranscriptEntry(time.time(), kind, text, list(observations)))

    def render_transcript(self, since: int = 0) -> str:
        return "\n".join(e.render() for e in self.transcript[since:])

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self._nodes]

    def node_ip(self, node: str, family: str | None = None) -> str:
        """The node's (primary) InternalIP, or its InternalIP of ``family``.

        :raises Unsupported: when the node has no address of ``family``."""
        info = next(n for n in self._nodes if n.name == node)
        if family is None:
            return info.internal_ip
        ip = info.ip_of(family)
        if ip is None:
            raise Unsupported(f"node {node} has no {family} InternalIP ({', '.join(info.internal_ips or (info.internal_ip,))})",
                              f"run on a cluster that serves {family} (--ip-family dual or {family})")
        return ip

    def labels(self, group: str | None = None) -> dict:
        out = {APP_LABEL: self.app, RUN_LABEL: self.run_id}
        if group:
            out[GROUP_LABEL] = group
        return out

    @property
    def selector(self) -> dict:
        return {APP_LABEL: self.app}

    # --- backends ----------------------------------------------------------------------------
    def backend_deployment(self, group: str, node: str, replicas: int, *, ready: bool = True, grace: int = 2,
                           delay_shutdown: int = 0, extra_labels: dict | None = None) -> dict:
        """The Deployment template for one backend group (agnhost netexec), before any tweak."""
        args = ["netexec", f"--http-port={HTTP_PORT}", f"--udp-port={UDP_PORT}"]
        if delay_shutdown:
            args.append(f"--delay-shutdown={delay_shutdown}")
        labels = {**self.labels(group), **(extra_labels or {})}
        probe_port = HTTP_PORT if ready else CLOSED_PORT
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": group, "namespace": self.namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {APP_LABEL: self.app, GROUP_LABEL: group}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeName": node,
                        "terminationGracePeriodSeconds": grace,
                        "enableServiceLinks": False,
                        "automountServiceAccountToken": False,
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{
                            "name": "netexec",
                            "image": self.cluster.backend_image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": args,
                            "ports": [
                                {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                                {"name": "udp", "containerPort": UDP_PORT, "protocol": "UDP"},
                            ],
                            "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 1,
                                               "failureThreshold": 1, "successThreshold": 1, "timeoutSeconds": 1},
                        }],
                    },
                },
            },
        }

    def backends(self, per_node: dict[str, int], *, prefix: str | None = None, ready: bool = True, grace: int = 2,
                 delay_shutdown: int = 0, extra_labels: dict | None = None,
                 tweak: Callable[[dict], None] | None = None, gated: bool = False) -> list[str]:
        """Create one Deployment per node (``{node: replicas}``); returns the group names. Does not wait.

        ``gated``: the pods carry the :data:`SERVING_GATE` readiness gate and stay unready until :meth:`set_gate`.
        """
        prefix = prefix or ("be" if ready else "unready")
        groups = []
        for node, replicas in per_node.items():
            idx = self.node_names.index(node)
            group = f"{prefix}-n{idx + 1}"
            body = self.backend_deployment(group, node, replicas, ready=ready, grace=grace,
                                           delay_shutdown=delay_shutdown, extra_labels=extra_labels)
            if gated:
                body["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": SERVING_GATE}]
            if tweak:
                tweak(body)
            self.apps.create_namespaced_deployment(self.namespace, body)
            self.groups[group] = {"node": node, "replicas": replicas, "ready": ready}
            self.log("write", f"deployment {group}: {replicas} netexec on {node}" + ("" if ready else " (never ready)"))
            groups.append(group)
        return groups

    def scale(self, group: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(group, self.namespace, {"spec": {"replicas": replicas}})
        self.groups[group]["replicas"] = replicas
        self.log("write", f"scale {group} to {replicas}")

    def pods(self, group: str | None = None) -> list[dict]:
        sel = ",".join(f"{k}={v}" for k, v in self.labels(group).items() if k != RUN_LABEL)
        items = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        return [self.core.api_client.sanitize_for_serialization(p) for p in items]

    def backend_pods(self, group: str | None = None) -> list[Backend]:
        out = []
        for p in self.pods(group):
            conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions") or []}
            out.append(Backend(p["metadata"]["name"], p["spec"].get("nodeName", ""), p.get("status", {}).get("podIP", ""),
                               conds.get("Ready") == "True", bool(p["metadata"].get("deletionTimestamp"))))
        return sorted(out, key=lambda b: b.name)

    def ready_backends(self, group: str | None = None, node: str | None = None) -> list[str]:
        return [b.name for b in self.backend_pods(group) if b.ready and not b.terminating and (node is None or b.node == node)]

    def set_gate(self, pods: Sequence[str], ready: bool) -> None:
        """Set the :data:`SERVING_GATE` condition of gated backend pods: their Ready follows it (kubelet ANDs readiness
        gates with the containers' readiness), the EndpointSlice controller then marks the endpoint ready/serving or not."""
        cond = {"type": SERVING_GATE, "status": "True" if ready else "False",
                "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for pod in pods:
            # A strategic merge keys conditions by type, so the kubelet's own conditions stay as they are.
            self.core.patch_namespaced_pod_status(pod, self.namespace, {"status": {"conditions": [cond]}},
                                                  _content_type="application/strategic-merge-patch+json")
        self.log("write", f"readiness gate {SERVING_GATE}={cond['status']} on {', '.join(pods)}")

    def wait_pods(self, group: str | None = None, ready: int | None = None) -> list[Backend]:
        """Wait until the group(s) have their replicas Running (Ready when they are meant to be)."""
        groups = [group] if group else list(self.groups)

        def done():
            out = []
            for g in groups:
                want = self.groups[g]["replicas"]
                pods = [b for b in self.backend_pods(g) if not b.terminating]
                if len(pods) != want:
                    return None
                if self.groups[g]["ready"] and sum(b.ready for b in pods) != want:
                    return None
                if not all(b.ip for b in pods):
                    return None
                out += pods
            return out or (not any(self.groups[g]["replicas"] for g in groups) and [None])

        pods = waits.wait_until(waits.PODS_READY, done, what=f"backend pods of {', '.join(groups)} in {self.namespace} running/ready",
                                on_attempt=self._log_wait)
        return [p for p in pods if p]

    def _log_wait(self, w: waits.Waited) -> None:
        self.log("wait", f"{w.what}: {w.elapsed:.1f}s ({w.attempts} polls, ceiling {w.wait})")

    # --- services ----------------------------------------------------------------------------
    def service_body(self, name: str, type: str = "ClusterIP", ports: Sequence[dict] | None = None,
                     selector: dict | None = None) -> dict:
        """The Service template: TCP 80→8080 (http) and UDP 81→8081 (udp), selecting all backends."""
        if ports is None:
            ports = [
                {"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "udp", "port": 81, "targetPort": UDP_PORT, "protocol": "UDP"},
            ]
        spec: dict = {"type": type, "ports": list(ports), "selector": dict(selector if selector is not None else self.selector)}
        if len(getattr(self.cluster, "ip_families", ())) > 1 and type != "ExternalName":  # a CNAME has no families
            # On a dual-stack cluster every scenario Service has both families, so each row can run once per family;
            # a check about ipFamilyPolicy itself sets its own in a tweak.
            spec["ipFamilyPolicy"] = "PreferDualStack"
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": self.namespace, "labels": {RUN_LABEL: self.run_id}},
                "spec": spec}

    def service(self, name: str, type: str = "ClusterIP", ports: Sequence[dict] | None = None, selector: dict | None = None,
                tweak: Callable[[dict], None] | None = None) -> dict:
        """Create a Service from the template plus ``tweak(body)``; check what the API allocated; return it as a dict."""
        body = self.service_body(name, type, ports, selector)
        if tweak:
            tweak(body)
        if body["spec"].get("clusterIP"):
            created = self.core.create_namespaced_service(self.namespace, body)
        else:
            with self._allocating():
                created = self.core.create_namespaced_service(self.namespace, body)
        self.services.append(name)
        svc = self.core.api_client.sanitize_for_serialization(created)
        self._check_allocation(svc)
        self.log("write", f"service {name}: type {svc['spec']['type']} clusterIP {svc['spec'].get('clusterIP')} "
                          f"ports {[(p.get('port'), p.get('protocol'), p.get('nodePort')) for p in svc['spec'].get('ports') or []]}")
        return svc

    def get_service(self, name: str) -> dict:
        return self.core.api_client.sanitize_for_serialization(self.core.read_namespaced_service(name, self.namespace))

    def _allocating(self):
        """Held while the apiserver may choose a ClusterIP for us (see :mod:`proxysuite.runlocks`)."""
        return runlocks.held(self.run_id, "clusterip")

    def patch_service(self, name: str, patch: dict) -> dict:
        with self._allocating():  # a type change (ExternalName to ClusterIP) allocates
            svc = self.core.api_client.sanitize_for_serialization(self.core.patch_namespaced_service(name, self.namespace, patch))
        self._check_allocation(svc)
        self.log("write", f"patch service {name}: {patch}")
        return svc

    def replace_service(self, name: str, tweak: Callable[[dict], None]) -> dict:
        """Read-modify-write (for changes a merge patch cannot express, e.g. type changes that drop fields)."""
        svc = self.get_service(name)
        tweak(svc)
        svc.pop("status", None)
        with self._allocating():
            out = self.core.api_client.sanitize_for_serialization(self.core.replace_namespaced_service(name, self.namespace, svc))
        self._check_allocation(out)
        self.log("write", f"replace service {name}: type {out['spec']['type']} clusterIP {out['spec'].get('clusterIP')}")
        return out

    def delete_service(self, name: str) -> None:
        self.core.delete_namespaced_service(name, self.namespace)
        self.log("write", f"delete service {name}")

    @staticmethod
    def _check_allocation(svc: dict) -> None:
        spec = svc["spec"]
        name = svc["metadata"]["name"]
        t = spec.get("type", "ClusterIP")
        if t == "ExternalName":
            return
        ip = spec.get("clusterIP")
        if ip != "None":
            ipaddress.ip_address(ip)  # raises on garbage
        if t in ("NodePort", "LoadBalancer") and spec.get("allocateLoadBalancerNodePorts", True) is not False:
            for p in spec.get("ports") or []:
                if not p.get("nodePort"):
                    raise AssertionError(f"service {name} of type {t} got no nodePort for port {p.get('port')}/{p.get('protocol')}")
        if spec.get("externalTrafficPolicy") == "Local" and t == "LoadBalancer" and not spec.get("healthCheckNodePort"):
            raise AssertionError(f"service {name} with externalTrafficPolicy=Local got no healthCheckNodePort")

    def endpoints(self, service: str, family: str | None = None) -> list[dict]:
        """Endpoints of the Service's EndpointSlices: {name (pod), addresses, node, ready, serving, terminating,
        zone, for_zones, for_nodes (the topology hints)}.

        A dual-stack Service has one set of slices per address type, each listing every pod: only those of
        ``family`` are read, or (None) those of the first of the cluster's families that has any."""
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={service}").items
        types = {s.address_type for s in slices}
        if len(types) > 1 or family is not None:
            from ..ipfamily import k8s_name

            order = [k8s_name(family)] if family else [k8s_name(f) for f in getattr(self.cluster, "ip_families", ("ipv4",))]
            wanted = next((t for t in order if t in types), None)
            slices = [s for s in slices if s.address_type == wanted]
        out = []
        for s in slices:
            for e in s.endpoints or []:
                c = e.conditions
                h = e.hints
                out.append({"name": e.target_ref.name if e.target_ref else None, "addresses": e.addresses, "node": e.node_name,
                            "ready": bool(c and c.ready), "serving": bool(c and c.serving), "terminating": bool(c and c.terminating),
                            "zone": e.zone, "for_zones": [z.name for z in (h and h.for_zones) or []],
                            "for_nodes": [n.name for n in (h and h.for_nodes) or []]})
        return out

    def wait_endpoints(self, service: str, ready: int, terminating: int | None = None) -> list[dict]:
        """Wait for the counts in the slices of every family of the Service (a dual-stack Service's two sets of
        slices are written one after the other); returns the endpoints of its first family."""
        families: tuple = (None,)
        if len(getattr(self.cluster, "ip_families", ())) > 1:
            spec = self.get_service(service).get("spec") or {}
            families = tuple(f.lower() for f in spec.get("ipFamilies") or []) or (None,)

        def done():
            first = None
            for fam in families:
                eps = self.endpoints(service, fam)
                n_ready = sum(e["ready"] for e in eps)
                n_term = sum(e["terminating"] for e in eps)
                if not (n_ready == ready and (terminating is None or n_term == terminating)):
                    return None
                first = first if first is not None else eps
            return first or [{}]

        what = f"service {self.namespace}/{service} has {ready} ready endpoints" + (
            f" and {terminating} terminating" if terminating is not None else "")
        return waits.wait_until(waits.ENDPOINTS, done, what=what, on_attempt=self._log_wait)

    def wait_lb(self, service: str) -> list[str]:
        def ips():
            svc = self.get_service(service)
            ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            return [i.get("ip") for i in ingress if i.get("ip")]

        return waits.wait_until(waits.LB_INGRESS, ips, what=f"service {self.namespace}/{service} has a load-balancer ingress IP",
                                on_attempt=self._log_wait)

    # --- targets -----------------------------------------------------------------------------
    def _port(self, svc: dict, proto: str, port_name: str | None = None) -> dict:
        for p in svc["spec"].get("ports") or []:
            if p.get("protocol", "TCP").lower() == proto and (port_name is None or p.get("name") == port_name):
                return p
        raise Unsupported(f"service {svc['metadata']['name']} has no {proto.upper()} port"
                          + (f" named {port_name}" if port_name else ""), "add the port to the scenario's Service")

    @staticmethod
    def _of_family(name: str, what: str, addresses: Sequence[str], family: str | None, spec: dict) -> str:
        """The first of ``addresses``, or the first of ``family``; Unsupported (a skip) when there is none."""
        from ..ipfamily import pick

        ip = addresses[0] if family is None and addresses else pick(addresses, family) if family else None
        if ip is None:
            fams = ", ".join(spec.get("ipFamilies") or []) or "unknown"
            raise Unsupported(f"service {name} has no {family or ''} {what} (ipFamilyPolicy "
                              f"{spec.get('ipFamilyPolicy', 'SingleStack')}, ipFamilies {fams}): {', '.join(addresses) or 'none'}",
                              "give the scenario's Service that family (ipFamilyPolicy PreferDualStack on a dual-stack cluster)")
        return ip

    def target(self, svc: dict | str, kind: str, proto: str = "tcp", node: str | None = None, port_name: str | None = None,
               family: str | None = None) -> Target:
        """Resolve an address kind of ``svc``: clusterip | nodeport (on ``node``) | nodeport-localhost | lb | external-ip.

        ``family`` (``ipv4``/``ipv6``): the address of that family (``spec.clusterIPs``, the node's InternalIPs, the
        LB ingress, ``spec.externalIPs``); None: the primary one, as before dual-stack. No address of ``family`` is
        :class:`Unsupported` (the row skips with the reason)."""
        if isinstance(svc, str):
            svc = self.get_service(svc)
        name = svc["metadata"]["name"]
        p = self._port(svc, proto, port_name)
        spec = svc["spec"]
        cluster_ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
        if family is not None and kind in ("clusterip", "clusterip-wrong-port", "clusterip-wrong-proto", "unallocated-ip"):
            cip = self._of_family(name, "cluster IP", cluster_ips, family, spec)
            if kind == "clusterip":
                return Target(kind, cip, p["port"], proto, service=name)
            svc = {**svc, "spec": {**spec, "clusterIP": cip}}
        if kind == "clusterip":
            return Target(kind, svc["spec"]["clusterIP"], p["port"], proto, service=name)
        if kind in ("nodeport", "nodeport-localhost"):
            if not p.get("nodePort"):
                raise Unsupported(f"service {name} has no nodePort", "use type NodePort or LoadBalancer")
            if kind == "nodeport-localhost":
                host = "::1" if family == "ipv6" else "127.0.0.1"
            elif node is None:
                raise ValueError(f"a nodeport target of {name} needs node=, the node whose IP to dial")
            else:
                host = self.node_ip(node, family)
            return Target(kind, host, p["nodePort"], proto, node=node, service=name)
        if kind == "lb":
            svc_now = self.get_service(name)
            ingress = ((svc_now.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if not ingress:
                raise Unsupported(f"service {name} has no load-balancer ingress", "the cluster needs a load-balancer controller")
            if family is not None:
                ip = self._of_family(name, "load-balancer ingress IP", [i["ip"] for i in ingress if i.get("ip")], family, svc_now["spec"])
                return Target(kind, ip, p["port"], proto, service=name)
            return Target(kind, ingress[0]["ip"], p["port"], proto, service=name)
        if kind == "external-ip":
            ips = svc["spec"].get("externalIPs") or []
            if not ips:
                raise Unsupported(f"service {name} has no externalIPs", "set spec.externalIPs in the scenario")
            if family is not None:
                return Target(kind, self._of_family(name, "externalIP", ips, family, spec), p["port"], proto, service=name)
            return Target(kind, ips[0], p["port"], proto, service=name)
        if kind == "clusterip-wrong-port":
            used = {q["port"] for q in svc["spec"].get("ports") or []}
            port = next(x for x in range(8999, 9100) if x not in used)
            return Target(kind, svc["spec"]["clusterIP"], port, proto, service=name)
        if kind == "clusterip-wrong-proto":
            same = {q["port"] for q in svc["spec"].get("ports") or [] if q.get("protocol", "TCP").lower() == proto}
            other = [q["port"] for q in svc["spec"].get("ports") or [] if q.get("protocol", "TCP").lower() != proto and q["port"] not in same]
            if not other:
                raise Unsupported(f"service {name} has no port served only over the other protocol", "give it a TCP-only or UDP-only port")
            return Target(kind, svc["spec"]["clusterIP"], other[0], proto, service=name)
        if kind == "unallocated-ip":
            return Target(kind, self.unallocated_cluster_ip(svc["spec"]["clusterIP"]), 80, proto, service="")
        raise ValueError(f"unknown target kind {kind!r}")

    def unallocated_cluster_ip(self, near: str) -> str:
        """An address near an allocated cluster IP, inside the same service range, that no Service holds.

        The range is the smallest ServiceCIDR holding ``near`` (its /24 where the API has none); in a range with
        no free address left that is its network or broadcast address, which the allocator never hands out.
        """
        taken: set[str] = set()
        for s in self.core.list_service_for_all_namespaces().items:
            spec = self.core.api_client.sanitize_for_serialization(s).get("spec") or {}
            taken.update(ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None")
        base = ipaddress.ip_address(near)
        net = self._service_range(base) or ipaddress.ip_network(f"{near}/{24 if base.version == 4 else 120}", strict=False)
        size, first = net.num_addresses, int(net.network_address)
        for delta in range(97, 97 + min(size, 200)):
            cand = ipaddress.ip_address(first + (int(base) - first + delta) % size)
            if str(cand) not in taken and (size <= 4 or int(cand) & 0xFF not in (0, 255)):
                return str(cand)
        raise Unsupported(f"no unallocated address near {near}", "the service range is too full for this check")

    def _service_range(self, ip) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        from kubernetes import client

        try:
            net = client.NetworkingV1Api(self.core.api_client)
            cidrs = [c for sc in net.api_client.sanitize_for_serialization(net.list_service_cidr().items)
                     for c in (sc.get("spec") or {}).get("cidrs") or []]
        except client.ApiException:
            return None  # before v1.33 the range is only in the apiserver's flags
        holding = [n for n in map(ipaddress.ip_network, cidrs) if n.version == ip.version and ip in n]
        return max(holding, key=lambda n: n.prefixlen, default=None)

    # --- vantages ----------------------------------------------------------------------------
    def client_pod_body(self, name: str, node: str) -> dict:
        spec: dict = {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "client", "image": self.cluster.client_image, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "infinity"]}],
        }
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.namespace, "labels": {RUN_LABEL: self.run_id, "proxysuite.io/role": "client"}},
                "spec": spec}

    def ensure_clients(self, specs: Iterable[tuple[str, bool]]) -> None:
        """Create client pods for ``(node, host_network)`` pairs not created yet, then wait for all of them."""
        created = []
        for node, host in specs:
            if (node, host) in self._clients:
                continue
            if host:
                # Node vantages are the provider's own (Cluster.node_vantage), so no hostNetwork client pod is made;
                # build_scenario(host_clients=...) therefore changes nothing and goes once the suites stop passing it.
                continue
            idx = self.node_names.index(node) + 1
            name = f"client-n{idx}"
            self.core.create_namespaced_pod(self.namespace, self.client_pod_body(name, node))
            self._clients[(node, host)] = name
            created.append(name)
            self.log("write", f"client pod {name} on {node}")
        if not created:
            return

        def running():
            for name in created:
                p = self.core.read_namespaced_pod(name, self.namespace)
                if p.status.phase != "Running" or not p.status.pod_ip:
                    return False
            return True

        waits.wait_until(waits.PODS_READY, running, what=f"client pods {created} in {self.namespace} running", on_attempt=self._log_wait)

    def pod_vantage(self, node: str):
        key = f"pod@{node}"
        if key not in self._vantages:
            self.ensure_clients([(node, False)])
            self._vantages[key] = self.cluster.pod_vantage(self.namespace, self._clients[(node, False)])
        return self._vantages[key]

    def node_vantage(self, node: str):
        key = f"node@{node}"
        if key not in self._vantages:
            self._vantages[key] = self.cluster.node_vantage(node)
        return self._vantages[key]

    def external_vantage(self):
        if "external" not in self._vantages:
            self._vantages["external"] = self.cluster.external_vantage()
        return self._vantages["external"]

    def backend_vantage(self, pod: str):
        return self.cluster.pod_vantage(self.namespace, pod)

    # --- probing -----------------------------------------------------------------------------
    def probe(self, vantage, target: Target, count: int = 10, ask: str = "both", timeout: float = 2.0,
              interval: float = 0.0, source_port: int | None = None, label: str = "") -> list[Observation]:
        req = ProbeRequest(target.host, target.port, target.proto, ask=ask, count=count, timeout=timeout,
                           interval=interval, source_port=source_port, label=label)
        try:
            obs = vantage.run([req])
        except ProbeError as exc:
            self.log("probe", f"{vantage.name} -> {target} ({target.kind}) x{count}: probe could not run: {exc}")
            raise
        self.log("probe", f"{vantage.name} -> {target} ({target.kind}{'@' + target.node if target.node else ''}) "
                          f"x{count} ask={ask}: {analysis.summary(obs)}", obs)
        return obs

    def flow(self, vantage, target: Target, *, source_port: int, seconds: float, interval: float = 0.1,
             until: int = 0, leaving: str = "", label: str = "") -> list[Observation]:
        """A UDP flow: ``hostname`` datagrams from ONE fixed source port every ``interval`` for up to ``seconds``
        (one conntrack entry for its whole life), one observation per datagram with its send time. With
        ``until``, it stops once that many in a row were answered by a backend other than ``leaving``.
        Thread-safe enough to run beside writes (the transcript is appended once, at the end)."""
        req = ProbeRequest(target.host, target.port, "udp", ask="hostname", count=max(1, round(seconds / interval)),
                           timeout=interval * 0.9, interval=interval, source_port=source_port, label=label,
                           flow=True, flow_until=until, flow_from=leaving)
        try:
            obs = vantage.run([req])
        except ProbeError as exc:
            self.log("probe", f"{vantage.name}:{source_port} -> {target} ({target.kind}) flow: could not run: {exc}")
            raise
        self.log("probe", f"{vantage.name}:{source_port} -> {target} ({target.kind}{'@' + target.node if target.node else ''}) "
                          f"flow every {interval * 1000:.0f} ms: {analysis.summary(obs)}", obs)
        return obs

    def wait_reachable(self, vantage, target: Target, what: str | None = None) -> None:
        """Wait until one probe from ``vantage`` to ``target`` is answered (the proxy has programmed it)."""
        def answered():
            obs = vantage.run([ProbeRequest(target.host, target.port, target.proto, ask="hostname", count=1, timeout=1.0)])
            return obs[0].outcome == OK

        waits.wait_until(waits.PROXY_PROGRAMMED, answered,
                         what=what or f"{target} ({target.kind}) answers from {vantage.name}", on_attempt=self._log_wait)

    def wait_unreachable(self, vantage, target: Target, what: str | None = None) -> None:
        """Wait until a probe from ``vantage`` to ``target`` is no longer answered."""
        def gone():
            obs = vantage.run([ProbeRequest(target.host, target.port, target.proto, ask="hostname", count=1, timeout=1.0)])
            return obs[0].outcome != OK

        waits.wait_until(waits.PROXY_PROGRAMMED, gone,
                         what=what or f"{target} ({target.kind}) stops answering from {vantage.name}", on_attempt=self._log_wait)

    def barrier(self, nodes: Sequence[str] | None = None) -> None:
        """Prove every node's proxy has synced all earlier writes.

        Creates a fresh ClusterIP Service over the ready backends *after* those
        writes and waits until it answers from a client pod on each node. Proxies
        apply changes in order, so when the barrier answers, every earlier
        change (a no-endpoints Service, a removed port) is in the datapath too —
        which is what lets a check trust a negative observation (REFUSED,
        TIMEOUT) instead of racing the proxy.
        """
        name = f"barrier-{int(time.time() * 1000) % 10**8}"
        svc = self.service(name, ports=[{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}])
        try:
            t = self.target(svc, "clusterip")
            for node in nodes or self.node_names:
                self.wait_reachable(self.pod_vantage(node), t, what=f"barrier {t} answers from {node} (proxy synced)")
        finally:
            try:
                self.delete_service(name)
                self.services.remove(name)
            except Exception:  # noqa: BLE001 - the namespace goes anyway
                pass

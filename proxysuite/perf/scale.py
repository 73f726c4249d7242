"""Scale fixtures: thousands of Services that cost few pods, created and removed fast.

A proxy's rule count grows with Services × endpoints, not with pods, so the
fleet is **selector-less Services with hand-written EndpointSlices** that all
point at the same few real backend pods (agnhost ``netexec``). 10,000
Services × 2 endpoints is 20,000 objects and still two backend pods; every
one of those Services is really reachable.

Everything carries the run label (``proxysuite.io/run-id``) and the slices
are ``managed-by: proxysuite.io/perf`` so the EndpointSlice controller leaves
them alone. Growing is incremental (100 → 1,000 → 5,000 → 10,000 creates
only the difference) and parallel::

    fleet = ServiceFleet(k8s, namespace, run_id, backend_ips=["10.244.1.2", "10.244.1.3"], progress=print)
    stats = fleet.scale_to(1000)      # {"created": 900, "seconds": 7.9, "rate": 114.0}
    fleet.services[-1].cluster_ip
    fleet.teardown()

The API client skips response deserialisation (``_preload_content=False``):
the Python client spends more time building model objects than the
apiserver spends creating the Service.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..runscope import RUN_LABEL

MANAGED_BY = "proxysuite-perf"
"""Label values cannot hold a slash; anything but ``endpointslice-controller.k8s.io`` keeps the controller away."""
FLEET_LABEL = "proxysuite.io/perf-fleet"
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
"""kube-proxy observes ``now - <this>`` into its network programming latency metric; we stamp our own writes."""

SERVICE_PORT = 80
BACKEND_PORT = 8080
"""agnhost netexec --http-port."""

DEFAULT_WORKERS = 24
"""Parallel API calls; past ~24 the 2-vCPU local apiserver is the limit, not the client."""


def rfc3339nano(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FleetService:
    name: str
    cluster_ip: str
    index: int
    cluster_ips: tuple[str, ...] = ()
    """Every cluster IP, primary first (a dual-stack fleet's Services have one per family)."""

    def ip(self, family: str | None = None) -> str:
        """The cluster IP of ``family`` (None: the primary one)."""
        from ..ipfamily import pick

        if family is None:
            return self.cluster_ip
        ip = pick(self.cluster_ips or (self.cluster_ip,), family)
        if ip is None:
            raise ValueError(f"service {self.name} has no {family} cluster IP ({', '.join(self.cluster_ips)})")
        return ip


@dataclass
class ServiceFleet:
    k8s: object
    """kubernetes.client.ApiClient."""
    namespace: str
    run_id: str
    backend_ips: list[str]
    endpoints_per_service: int = 2
    workers: int = DEFAULT_WORKERS
    prefix: str = "perf"
    progress: object = None
    services: list[FleetService] = field(default_factory=list)
    families: tuple[str, ...] = ("ipv4",)
    """The IP families of every Service, primary first: off single-stack IPv4 each Service asks for them
    (``ipFamilyPolicy``/``ipFamilies``) and gets one EndpointSlice per family."""
    family_backend_ips: dict[str, list[str]] = field(default_factory=dict)
    """Backend pod IPs per family (``status.podIPs``); the primary family's default to ``backend_ips``."""

    def __post_init__(self):
        from kubernetes import client

        self.core = client.CoreV1Api(self.k8s)
        self.discovery = client.DiscoveryV1Api(self.k8s)
        if self.endpoints_per_service > len(self.backend_ips):
            raise ValueError(f"{self.endpoints_per_service} endpoints per service need as many backend pods; "
                             f"only {len(self.backend_ips)} backend IPs given")

    def _say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    # --- objects ---------------------------------------------------------------------------------
    def _labels(self) -> dict:
        return {RUN_LABEL: self.run_id, FLEET_LABEL: self.prefix}

    def service_body(self, name: str) -> dict:
        from ..ipfamily import k8s_name

        spec: dict = {"type": "ClusterIP",
                      "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": BACKEND_PORT, "protocol": "TCP"}]}
        if self.families != ("ipv4",):
            spec.update(ipFamilyPolicy="RequireDualStack" if len(self.families) > 1 else "SingleStack",
                        ipFamilies=[k8s_name(f) for f in self.families])
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": self._labels()}, "spec": spec}

    def backends(self, family: str) -> list[str]:
        if family in self.family_backend_ips:
            return self.family_backend_ips[family]
        if family == self.families[0]:
            return self.backend_ips
        raise ValueError(f"no {family} backend IPs for the fleet (family_backend_ips has {sorted(self.family_backend_ips)})")

    @staticmethod
    def slice_name(service: str, family: str, primary: str = "ipv4") -> str:
        """``<service>-ps`` for the primary family (as before families), ``<service>-ps-ipv6`` for the other."""
        return f"{service}-ps" if family == primary else f"{service}-ps-{family}"

    def slice_body(self, service: str, index: int, ready: bool = True, trigger: float | None = None,
                   family: str | None = None) -> dict:
        from ..ipfamily import k8s_name

        family = family or self.families[0]
        ips = self.backends(family)
        n = len(ips)
        addrs = [ips[(index + k) % n] for k in range(self.endpoints_per_service)]
        meta = {"name": self.slice_name(service, family, self.families[0]),
                "labels": {**self._labels(), "kubernetes.io/service-name": service,
                           "endpointslice.kubernetes.io/managed-by": MANAGED_BY}}
        if trigger is not None:
            meta["annotations"] = {TRIGGER_ANNOTATION: rfc3339nano(trigger)}
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta, "addressType": k8s_name(family),
                "endpoints": [{"addresses": [a], "conditions": {"ready": ready, "serving": ready, "terminating": False}}
                              for a in addrs],
                "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}]}

    def create_one(self, index: int, trigger: float | None = None) -> FleetService:
        name = f"{self.prefix}-{index:05d}"
        resp = self.core.create_namespaced_service(self.namespace, self.service_body(name), _preload_content=False)
        spec = json.loads(resp.data)["spec"]
        for family in self.families:
            self.discovery.create_namespaced_endpoint_slice(self.namespace, self.slice_body(name, index, trigger=trigger, family=family),
                                                            _preload_content=False)
        return FleetService(name, spec["clusterIP"], index, tuple(spec.get("clusterIPs") or (spec["clusterIP"],)))

    def set_ready(self, svc: FleetService, ready: bool, trigger: float | None = None) -> dict[str, float]:
        """Flip every endpoint of ``svc`` (the change whose programming latency the suite measures): one slice per
        family, written back to back. Returns when each family's write began, so each family's latency is timed
        from its own write; every slice carries its own write time as the trigger (or ``trigger`` for the first)."""
        started: dict[str, float] = {}
        for family in self.families:
            started[family] = t = time.time()
            self.discovery.replace_namespaced_endpoint_slice(
                self.slice_name(svc.name, family, self.families[0]), self.namespace,
                self.slice_body(svc.name, svc.index, ready, None if trigger is None else trigger if family == self.families[0] else t,
                                family),
                _preload_content=False)
        return started

    # --- bulk ------------------------------------------------------------------------------------
    def scale_to(self, target: int) -> dict:
        """Create Services until the fleet has ``target``; returns creation stats (count, seconds, rate)."""
        start_index = len(self.services)
        todo = list(range(start_index, target))
        if not todo:
            return {"created": 0, "seconds": 0.0, "rate": 0.0}
        t0 = time.monotonic()
        made: list[FleetService] = []
        errors: list[str] = []
        last_report = t0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fleet") as pool:
            futures = [pool.submit(self.create_one, i) for i in todo]
            for f in as_completed(futures):
                try:
                    made.append(f.result())
                except Exception as exc:  # noqa: BLE001 - collected; a few failures are reported together
                    body = getattr(exc, "body", None)
                    try:
                        detail = json.loads(body)["message"] if body else str(exc)
                    except (ValueError, KeyError, TypeError):
                        detail = str(body or exc)
                    errors.append(f"{type(exc).__name__}: {detail[:300]}")
                now = time.monotonic()
                if now - last_report >= 5:
                    last_report = now
                    self._say(f"services: {start_index + len(made)}/{target} created ({len(made) / (now - t0):.0f}/s)")
        seconds = time.monotonic() - t0
        self.services.extend(sorted(made, key=lambda s: s.index))
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(todo)} services could not be created in namespace "
                               f"{self.namespace} within {seconds:.0f}s; first: {errors[0]}")
        self._say(f"services: {target} in namespace {self.namespace} ({len(todo)} created in {seconds:.1f}s, "
                  f"{len(todo) / seconds:.0f}/s)")
        return {"created": len(todo), "seconds": seconds, "rate": len(todo) / seconds}

    def teardown(self) -> dict:
        """Delete every Service and slice of the fleet (in parallel); idempotent. Returns timing."""
        from kubernetes.client import ApiException

        t0 = time.monotonic()
        problems: list[str] = []
        try:
            # EndpointSlices support deletecollection; Services do not, so those go one by one.
            self.discovery.delete_collection_namespaced_endpoint_slice(
                self.namespace, label_selector=f"{RUN_LABEL}={self.run_id},{FLEET_LABEL}={self.prefix}")
        except ApiException as exc:
            if exc.status != 404:
                problems.append(f"endpointslices: {exc.reason}")

        def delete(svc: FleetService):
            try:
                self.core.delete_namespaced_service(svc.name, self.namespace, _preload_content=False)
            except ApiException as exc:
                if exc.status != 404:
                    return f"{svc.name}: {exc.reason}"
            return None

        with ThreadPoolExecutor(self.workers, thread_name_prefix="fleet-rm") as pool:
            problems += [p for p in pool.map(delete, self.services) if p]
        n = len(self.services)
        self.services.clear()
        seconds = time.monotonic() - t0
        self._say(f"services: {n} deleted from namespace {self.namespace} in {seconds:.1f}s"
                  + (f"; {len(problems)} failed, first: {problems[0]}" if problems else ""))
        return {"deleted": n, "seconds": seconds, "problems": problems}


# --- pods ---------------------------------------------------------------------------------------------------


def pod_body(name: str, image: str, args: list[str], run_id: str, node: str | None, role: str) -> dict:
    spec: dict = {"containers": [{"name": "main", "image": image, "args": args,
                                  "ports": [{"containerPort": BACKEND_PORT, "name": "http"}] if role == "backend" else []}],
                  "terminationGracePeriodSeconds": 1,
                  # Local nodes have no kubelet taint handling; pods are pinned and must tolerate everything.
                  "tolerations": [{"operator": "Exists"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {RUN_LABEL: run_id, "proxysuite.io/perf-role": role}},
            "spec": spec}


def start_pods(k8s, namespace: str, bodies: list[dict], timeout: float = 120, progress=None) -> list[dict]:
    """Create pods and wait until each is Running with an IP (and Ready when it has no probes). Returns pod dicts."""
    from kubernetes import client

    core = client.CoreV1Api(k8s)
    for b in bodies:
        core.create_namespaced_pod(namespace, b, _preload_content=False)
    names = {b["metadata"]["name"] for b in bodies}
    deadline = time.monotonic() + timeout
    while True:
        pods = json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)["items"]
        ready = {p["metadata"]["name"]: p for p in pods if p["metadata"]["name"] in names
                 and p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")}
        if len(ready) == len(names):
            if progress:
                listing = ", ".join(f"{n}={p['status']['podIP']}" for n, p in sorted(ready.items()))
                progress(f"pods: {listing} running")
            return [ready[b["metadata"]["name"]] for b in bodies]
        if time.monotonic() > deadline:
            missing = sorted(names - set(ready))
            raise TimeoutError(f"pods {', '.join(missing)} in namespace {namespace} not Running with an IP within {timeout:.0f}s")
        time.sleep(0.5)

"""Failure forensics: what a network engineer's layer-by-layer checklist would collect.

Collected only when a check fails (the hook in :mod:`proxysuite.conformance.plugin`
calls :meth:`Forensics.collect`), in checklist order:

1. ``service``         the Service objects the check used (YAML)
2. ``endpointslices``  their EndpointSlices: which endpoints, ready/serving/terminating, node
   ``topology``        the nodes' zone labels, each Service's trafficDistribution, and per endpoint its
                       zone and topology hints (``hints.forZones`` / ``forNodes``): what a proxy that
                       prefers nearby endpoints decides from
3. ``pods``            every pod of the scenario: node, IP, phase, Ready, deleting
4. ``transcript``      the probe transcript: requests, answers, backends, client IPs, waits, writes
5. ``rules <node>``    the proxy's datapath rules on each node (``iptables-save``, plus ``ip6tables-save`` when the
                       cluster serves IPv6 / ``nft list ruleset``),
                       filtered to the lines that mention the Service's VIPs, ports or name;
                       the full dump goes to disk only
6. ``conntrack <node>`` conntrack entries for the VIPs and NodePorts; ``flow-conntrack <node>`` the entries
                       of the flows a check registered (:meth:`Forensics.watch_flow`: a fixed source port,
                       an old or new backend address)
7. ``proxy-logs <node>`` the tail of the proxy's log

Each section becomes a pytest report section (shown under the failure) and a
file under ``<reports-dir>/forensics/<test>/``. A step that cannot run (no node
exec on this provider) says why in its section instead of hiding the others.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import yaml

RULES_EXCERPT_LINES = 120
"""Report sections keep this many matching rule lines; the full ruleset is on disk."""


def safe_name(nodeid: str) -> str:
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    name = re.sub(r"[^A-Za-z0-9_.@>=+-]+", "_", name.replace("->", "-to-")).strip("_")
    return name[:150] or "test"


class Forensics:
    def __init__(self, cluster, api_client, nodeid: str, reports_dir: str | Path):
        self.cluster = cluster
        self.api_client = api_client
        self.nodeid = nodeid
        self.reports_dir = Path(reports_dir)
        self.jigs: list = []
        self._marks: dict[int, int] = {}
        self.started = time.time()
        self.flows: list[tuple[str, list[str]]] = []
        self.extra: dict[str, str] = {}
        """Sections a check collected itself while the evidence existed (e.g. a broken connection's conntrack entry)."""
        self.mentions: set[str] = set()
        """Extra strings the rules excerpt keeps lines for (a second service range, an ingress IP)."""
        self.producers: dict[str, Callable[[], str]] = {}
        """Extra sections a check adds (``name -> producer``), collected after the Services."""

    def add(self, name: str, producer: Callable[[], str], *mentions: str) -> None:
        """Collect ``producer()`` as section ``name`` on failure, and keep rule lines that mention ``mentions``."""
        self.producers[name] = producer
        self.mentions.update(m for m in mentions if m)

    def watch(self, jig, whole: bool = False) -> None:
        """Include ``jig``'s objects and its transcript: all of it for a jig this test built (or ``whole``),
        from now on for a shared one."""
        if id(jig) not in self._marks:
            self.jigs.append(jig)
            own = whole or getattr(jig, "created", 0) >= self.started
            self._marks[id(jig)] = 0 if own else len(jig.transcript)

    def watch_flow(self, label: str, filters: list[str]) -> None:
        """Also collect, on every node, the entries of one flow: ``conntrack -L <filters>`` (e.g. ``-p udp
        --orig-port-src 23451``, or ``--reply-src <old backend IP>``) under ``label``."""
        self.flows.append((label, list(filters)))

    # --- collection ------------------------------------------------------------------------------
    def _services(self) -> list[dict]:
        out = []
        for jig in self.jigs:
            for name in dict.fromkeys(jig.services):
                try:
                    out.append(jig.get_service(name))
                except Exception as exc:  # noqa: BLE001
                    out.append({"metadata": {"name": name, "namespace": jig.namespace}, "error": f"{type(exc).__name__}: {exc}"})
        return out

    def _slices(self, services: list[dict]) -> str:
        from kubernetes import client

        disc = client.DiscoveryV1Api(self.api_client)
        parts = []
        for svc in services:
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            try:
                items = disc.list_namespaced_endpoint_slice(ns, label_selector=f"kubernetes.io/service-name={name}").items
            except Exception as exc:  # noqa: BLE001
                parts.append(f"# {ns}/{name}: {exc}")
                continue
            parts.append(f"# {ns}/{name}: {len(items)} slice(s)")
            for s in items:
                d = self.api_client.sanitize_for_serialization(s)
                d.get("metadata", {}).pop("managedFields", None)
                parts.append(yaml.safe_dump(d, sort_keys=False))
        return "\n".join(parts)

    def _topology(self, services: list[dict]) -> str:
        from kubernetes import client

        from ..cluster.zones import REGION_LABEL, ZONE_LABEL

        lines = []
        try:
            for n in client.CoreV1Api(self.api_client).list_node().items:
                labels = n.metadata.labels or {}
                lines.append(f"node {n.metadata.name}: zone={labels.get(ZONE_LABEL, '(none)')} "
                             f"region={labels.get(REGION_LABEL, '(none)')}")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"nodes: {type(exc).__name__}: {exc}")
        disc = client.DiscoveryV1Api(self.api_client)
        for svc in services:
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            lines.append(f"# {ns}/{name}: trafficDistribution={(svc.get('spec') or {}).get('trafficDistribution') or '(unset)'}")
            try:
                items = disc.list_namespaced_endpoint_slice(ns, label_selector=f"kubernetes.io/service-name={name}").items
            except Exception as exc:  # noqa: BLE001
                lines.append(f"  {type(exc).__name__}: {exc}")
                continue
            for sl in items:
                for e in sl.endpoints or []:
                    h = e.hints
                    ready = bool(e.conditions and e.conditions.ready)
                    lines.append(f"  {sl.metadata.name} {(e.target_ref.name if e.target_ref else None) or e.addresses} "
                                 f"node={e.node_name} zone={e.zone or '(none)'} ready={ready} "
                                 f"forZones={[z.name for z in (h and h.for_zones) or []]} "
                                 f"forNodes={[x.name for x in (h and h.for_nodes) or []]}")
        return "\n".join(lines) or "(nothing)"

    def _pods(self) -> str:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        lines = [f"{'NAMESPACE/POD':50} {'NODE':14} {'IP':15} {'PHASE':9} READY DELETING HOSTNET"]
        for ns in dict.fromkeys(j.namespace for j in self.jigs):
            try:
                pods = core.list_namespaced_pod(ns).items
            except Exception as exc:  # noqa: BLE001
                lines.append(f"{ns}: {exc}")
                continue
            for p in pods:
                ready = next((c.status for c in p.status.conditions or [] if c.type == "Ready"), "-")
                lines.append(f"{ns + '/' + p.metadata.name:50} {p.spec.node_name or '-':14} {p.status.pod_ip or '-':15} "
                             f"{p.status.phase or '-':9} {ready:5} {'yes' if p.metadata.deletion_timestamp else 'no':8} "
                             f"{'yes' if p.spec.host_network else 'no'}")
        return "\n".join(lines)

    def _needles(self, services: list[dict]) -> tuple[set[str], set[int], set[str]]:
        vips, nodeports, names = set(), set(), set()
        for svc in services:
            spec = svc.get("spec") or {}
            if spec.get("clusterIP") not in (None, "None", ""):
                vips.add(spec["clusterIP"])
            vips.update(spec.get("externalIPs") or [])
            for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                if ing.get("ip"):
                    vips.add(ing["ip"])
            for p in spec.get("ports") or []:
                if p.get("nodePort"):
                    nodeports.add(p["nodePort"])
            if spec.get("healthCheckNodePort"):
                nodeports.add(spec["healthCheckNodePort"])
            names.add(f"{svc['metadata']['namespace']}/{svc['metadata']['name']}")
        return vips, nodeports, names

    def collect(self) -> dict[str, str]:
        sections: dict[str, str] = {}
        services = self._services()
        sections["service"] = "\n---\n".join(yaml.safe_dump({k: v for k, v in s.items() if k != "metadata"} | {
            "metadata": {k: v for k, v in (s.get("metadata") or {}).items() if k != "managedFields"}}, sort_keys=False)
            for s in services) or "(no Service)"
        sections["endpointslices"] = self._slices(services) or "(none)"
        sections["topology"] = self._topology(services)
        for name, producer in self.producers.items():
            try:
                sections[name] = producer()
            except Exception as exc:  # noqa: BLE001
                sections[name] = f"could not collect: {type(exc).__name__}: {exc}"
        sections["pods"] = self._pods()
        sections["transcript"] = "\n".join(j.render_transcript(self._marks.get(id(j), 0)) for j in self.jigs) or "(no probes)"
        vips, nodeports, names = self._needles(services)
        names |= self.mentions
        feats = self.cluster.features()
        nodes = [n.name for n in self.cluster.nodes()]
        self._full: dict[str, str] = {}
        node_exec, why = feats.require("node_exec")
        if not node_exec:
            sections["node"] = f"rules and conntrack not collected: {why}"
        for node in nodes:
            if node_exec:
                try:
                    rules = self.cluster.proxy_rules(node)
                    if self.cluster.mode == "iptables" and "ipv6" in getattr(self.cluster, "ip_families", ()):
                        # iptables-save shows the IPv4 tables only; kube-proxy's IPv6 proxier writes ip6tables.
                        rules += "\n# ip6tables-save\n" + self.cluster.node_exec(node, ["ip6tables-save"])
                    self._full[f"ruleset-full-{node}.txt"] = rules
                    sections[f"rules {node}"] = self._excerpt(rules, vips, nodeports, names)
                except Exception as exc:  # noqa: BLE001
                    sections[f"rules {node}"] = f"could not read rules: {type(exc).__name__}: {exc}"
                sections[f"conntrack {node}"] = self._conntrack(node, vips, nodeports)
                if self.flows:
                    sections[f"flow-conntrack {node}"] = "\n".join(
                        self._ct(node, ["conntrack", "-L", *f], f"{label}: {' '.join(f)}") for label, f in self.flows)
            try:
                sections[f"proxy-logs {node}"] = self.cluster.proxy_logs(node, tail=80)
            except Exception as exc:  # noqa: BLE001
                sections[f"proxy-logs {node}"] = f"could not read proxy logs: {type(exc).__name__}: {exc}"
        sections.update(self.extra)
        return sections

    @staticmethod
    def _excerpt(rules: str, vips: set[str], nodeports: set[int], names: set[str]) -> str:
        needles = [re.escape(v) for v in vips] + [rf"\b{p}\b" for p in nodeports] + [re.escape(n) for n in names]
        if not needles:
            return "(nothing to filter on; full rules on disk)"
        rx = re.compile("|".join(needles))
        hits = [line for line in rules.splitlines() if rx.search(line)]
        head = f"{len(hits)} of {len(rules.splitlines())} lines mention {sorted(vips)} / nodePorts {sorted(nodeports)} / {sorted(names)}"
        if len(hits) > RULES_EXCERPT_LINES:
            hits = hits[:RULES_EXCERPT_LINES] + [f"... {len(hits) - RULES_EXCERPT_LINES} more on disk"]
        return "\n".join([head, *hits])

    def _conntrack(self, node: str, vips: set[str], nodeports: set[int]) -> str:
        out = []
        for vip in sorted(vips):
            out.append(self._ct(node, ["conntrack", "-L", "-d", vip], f"-d {vip}"))
        # conntrack -L lists IPv4 only unless told another family.
        families: list[list[str]] = [[]] + ([["-f", "ipv6"]] if "ipv6" in getattr(self.cluster, "ip_families", ()) else [])
        for port in sorted(nodeports):
            for proto in ("tcp", "udp"):
                for fam in families:
                    out.append(self._ct(node, ["conntrack", "-L", *fam, "-p", proto, "--orig-port-dst", str(port)],
                                        " ".join([*fam, "-p", proto, "--orig-port-dst", str(port)])))
        return "\n".join(out) or "(no VIPs)"

    def _ct(self, node: str, argv: list[str], label: str) -> str:
        try:
            text = self.cluster.node_exec(node, argv, timeout=10)
        except Exception as exc:  # noqa: BLE001
            text = f"{type(exc).__name__}: {exc}"
        lines = [line for line in text.splitlines() if line.strip() and "flow entries have been shown" not in line]
        return f"# conntrack {label}: {len(lines)} entries\n" + "\n".join(lines[:40])

    # --- output ----------------------------------------------------------------------------------
    def write(self, sections: dict[str, str]) -> Path:
        folder = self.reports_dir / "forensics" / safe_name(self.nodeid)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in sections.items():
            (folder / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".txt")).write_text(text + "\n")
        for name, text in getattr(self, "_full", {}).items():
            (folder / name).write_text(text)
        (folder / "README.txt").write_text(
            f"forensics for {self.nodeid}\ncollected {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            f"sections: {', '.join(sections)}\n")
        return folder

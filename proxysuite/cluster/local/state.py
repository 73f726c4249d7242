"""What a local cluster is made of, persisted as ``<state root>/<cluster name>/state.json``.

The state file is how ``cluster down``, ``cluster status``, a second pytest
session and the janitor find a cluster's namespaces and processes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...config import SuiteConfig, default_state_root
from ...errors import SuiteError


@dataclass
class NodeState:
    name: str
    ip: str
    """The node's IPv4 address on the fabric (every local cluster has one: the control plane is reached over IPv4)."""
    pod_cidr: str
    gateway: str
    netns: str
    ip6: str = ""
    """The node's IPv6 address on the fabric ("" on a single-stack IPv4 cluster)."""
    pod_cidr6: str = ""
    gateway6: str = ""
    internal_ips: list[str] = field(default_factory=list)
    """The Node's InternalIPs, primary family first (empty: just ``ip``, as clusters made before --ip-family)."""
    pod_cidrs: list[str] = field(default_factory=list)
    """The Node's spec.podCIDRs, primary family first (empty: just ``pod_cidr``)."""

    @property
    def addresses(self) -> list[str]:
        return self.internal_ips or [self.ip]

    @property
    def cidrs(self) -> list[str]:
        return self.pod_cidrs or [self.pod_cidr]


@dataclass
class Addressing:
    """The private address plan, all of it inside namespaces the suite made."""

    fabric_cidr: str = "10.200.0.0/24"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    lb_pool: str = "10.201.0.0/24"
    external_ips: str = "10.202.0.0/24"
    """Where tests pick Service externalIPs from (routed from the external client to the nodes)."""
    # IPv6 (--ip-family ipv6 | dual): unique local addresses (fd00::/8), and the documentation prefix
    # (2001:db8::/32, never routed anywhere) for externalIPs, which are meant to look like outside addresses.
    fabric_cidr6: str = "fd00:10:200::/64"
    pod_cidr6: str = "fd00:10:244::/56"
    """Split into one /64 per node (kube-controller-manager's --node-cidr-mask-size-ipv6 default)."""
    service_cidr6: str = "fd00:10:96::/112"
    """kube-apiserver takes at most 20 host bits for a service range (/108 for IPv6)."""
    lb_pool6: str = "fd00:10:201::/120"
    external_ips6: str = "2001:db8:202::/120"

    V6_KEYS = ("fabric_cidr6", "pod_cidr6", "service_cidr6", "lb_pool6", "external_ips6")

    def check(self, nodes: int, families: tuple[str, ...] = ("ipv4",)) -> None:
        """Refuse a plan whose ranges overlap, have the wrong family or are too small (IPv6 ones only when used)."""
        nets = {}
        for k, v in asdict(self).items():
            if k in self.V6_KEYS and "ipv6" not in families:
                continue
            net = ipaddress.ip_network(v)
            want = 6 if k in self.V6_KEYS else 4
            if net.version != want:
                raise SuiteError(f"PROXYSUITE_{k.upper()}={v} is not an IPv{want} range", f"set PROXYSUITE_{k.upper()} to an IPv{want} CIDR")
            nets[k] = net
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if nets[a].version == nets[b].version and nets[a].overlaps(nets[b]):
                    raise SuiteError(f"local address plan clash: {a} {nets[a]} overlaps {b} {nets[b]}",
                                     f"set PROXYSUITE_{a.upper()} / PROXYSUITE_{b.upper()} to disjoint ranges")
        if nets["pod_cidr"].prefixlen > 24 - max(1, nodes).bit_length():
            raise SuiteError(f"pod CIDR {nets['pod_cidr']} cannot hold a /24 for each of {nodes} nodes", "use a larger PROXYSUITE_POD_CIDR, e.g. 10.244.0.0/16")
        if nets["fabric_cidr"].num_addresses < 64:
            raise SuiteError(f"fabric CIDR {nets['fabric_cidr']} is too small", "use a /24 or larger PROXYSUITE_FABRIC_CIDR")
        if "ipv6" in families:
            if nets["pod_cidr6"].prefixlen > 64 - max(1, nodes).bit_length():
                raise SuiteError(f"pod CIDR {nets['pod_cidr6']} cannot hold a /64 for each of {nodes} nodes",
                                 "use a larger PROXYSUITE_POD_CIDR6, e.g. fd00:10:244::/56")
            if nets["service_cidr6"].prefixlen < 108:
                raise SuiteError(f"service CIDR {nets['service_cidr6']} is larger than kube-apiserver accepts (at most /108)",
                                 "use a /108 to /120 PROXYSUITE_SERVICE_CIDR6, e.g. fd00:10:96::/112")
            if nets["fabric_cidr6"].prefixlen > 120 or nets["lb_pool6"].prefixlen > 124 or nets["external_ips6"].prefixlen > 124:
                raise SuiteError("an IPv6 fabric, LB pool or externalIP range is too small", "use at least a /120 fabric and /124 ranges")

    @classmethod
    def from_env(cls) -> "Addressing":
        kw = {}
        for key in asdict(cls()):
            value = os.environ.get(f"PROXYSUITE_{key.upper()}")
            if value:
                try:
                    ipaddress.ip_network(value)
                except ValueError:
                    raise SuiteError(f"PROXYSUITE_{key.upper()}={value!r} is not a CIDR", "use a value like 10.244.0.0/16") from None
                kw[key] = value
        return cls(**kw)

    def host(self, cidr_key: str, index: int) -> str:
        return str(ipaddress.ip_network(getattr(self, cidr_key))[index])

    @property
    def cp_ip(self) -> str:
        return self.host("fabric_cidr", 1)

    @property
    def ext_ip(self) -> str:
        return self.host("fabric_cidr", 200)

    def node_ip(self, i: int) -> str:
        return self.host("fabric_cidr", 10 + i)

    def node_pod_cidr(self, i: int) -> str:
        return str(list(ipaddress.ip_network(self.pod_cidr).subnets(new_prefix=24))[i])

    @property
    def service_vip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP: the first address of the range."""
        return self.host("service_cidr", 1)

    # ---- IPv6 and per-family views (families are primary first, see proxysuite.ipfamily) ------------
    @property
    def cp_ip6(self) -> str:
        return self.host("fabric_cidr6", 1)

    @property
    def ext_ip6(self) -> str:
        return self.host("fabric_cidr6", 200)

    def node_ip6(self, i: int) -> str:
        return self.host("fabric_cidr6", 10 + i)

    def node_pod_cidr6(self, i: int) -> str:
        net = ipaddress.ip_network(self.pod_cidr6)
        return str(ipaddress.ip_network((int(net.network_address) + (i << 64), 64)))

    def _by_family(self, families: tuple[str, ...], v4: str, v6: str) -> list[str]:
        return [v4 if f == "ipv4" else v6 for f in families]

    def node_ips(self, i: int, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.node_ip(i), self.node_ip6(i))

    def node_pod_cidrs(self, i: int, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.node_pod_cidr(i), self.node_pod_cidr6(i))

    def service_cidrs(self, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.service_cidr, self.service_cidr6)

    def pod_cidrs(self, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.pod_cidr, self.pod_cidr6)

    def lb_pools(self, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.lb_pool, self.lb_pool6)

    def external_ip_ranges(self, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.external_ips, self.external_ips6)

    def api_ips(self, families: tuple[str, ...]) -> list[str]:
        """The control plane's fabric addresses: IPv4 always (the suite's own clients use it), IPv6 when served."""
        return [self.cp_ip] + ([self.cp_ip6] if "ipv6" in families else [])

    def service_vips(self, families: tuple[str, ...]) -> list[str]:
        return self._by_family(families, self.service_vip, self.host("service_cidr6", 1))


@dataclass
class ClusterState:
    name: str
    run_id: str
    mode: str
    proxy_cmd: str | None
    addressing: Addressing
    proxy_health: str = "kube-proxy"
    """How the proxy shows readiness (``--proxy-health``)."""
    api_port: int = 0
    owner_pid: int | None = None
    """PID of the pytest session that owns the cluster; None for a cluster kept on purpose (CLI, --keep-cluster)."""
    nodes: list[NodeState] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    procs: dict[str, int] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    """Command line of each daemon, so one can be restarted (disruptive checks)."""
    proc_netns: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    code_digest: str = ""
    iptables_backend: str | None = None
    """``--iptables-backend``: nft | legacy tools first on kube-proxy's PATH; None = the host's ``iptables``."""
    ip_family: str = "ipv4"
    """``--ip-family``: ipv4 | ipv6 | dual."""

    @property
    def families(self) -> tuple[str, ...]:
        from ...ipfamily import families_of

        return families_of(self.ip_family)

    # ---- paths -----------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return state_dir(self.name)

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def kubeconfig(self, who: str = "admin") -> Path:
        return self.dir / f"{who}.kubeconfig"

    @property
    def netns_prefix(self) -> str:
        return f"ps-{self.run_id}-"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.rename(self.dir / "state.json")

    @classmethod
    def load(cls, name: str) -> "ClusterState | None":
        path = state_dir(name) / "state.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["addressing"] = Addressing(**raw["addressing"])
        raw["nodes"] = [NodeState(**n) for n in raw["nodes"]]
        return cls(**raw)

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def state_dir(name: str) -> Path:
    return default_state_root() / "local" / name


def all_states() -> list[ClusterState]:
    root = default_state_root() / "local"
    out = []
    if root.exists():
        for d in sorted(root.iterdir()):
            try:
                st = ClusterState.load(d.name)
            except (ValueError, TypeError, KeyError):
                st = None
            if st:
                out.append(st)
    return out


def code_digest() -> str:
    import hashlib

    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def new_state(config: SuiteConfig) -> ClusterState:
    from ...ipfamily import families_of

    addressing = Addressing.from_env()
    addressing.check(config.nodes, families_of(config.ip_family))
    return ClusterState(name=config.name, run_id=config.run_id, mode=config.mode, proxy_cmd=config.proxy_cmd,
                        proxy_health=config.proxy_health, addressing=addressing, api_port=config.api_port, code_digest=code_digest(),
                        iptables_backend=config.iptables_backend, ip_family=config.ip_family)

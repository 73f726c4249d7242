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
    pod_cidr: str
    gateway: str
    netns: str


@dataclass
class Addressing:
    """The private address plan, all of it inside namespaces the suite made."""

    fabric_cidr: str = "10.200.0.0/24"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    lb_pool: str = "10.201.0.0/24"
    external_ips: str = "10.202.0.0/24"
    """Where tests pick Service externalIPs from (routed from the external client to the nodes)."""

    def check(self, nodes: int) -> None:
        nets = {k: ipaddress.ip_network(v) for k, v in asdict(self).items()}
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if nets[a].overlaps(nets[b]):
                    raise SuiteError(f"local address plan clash: {a} {nets[a]} overlaps {b} {nets[b]}",
                                     f"set PROXYSUITE_{a.upper()} / PROXYSUITE_{b.upper()} to disjoint ranges")
        if nets["pod_cidr"].prefixlen > 24 - max(1, nodes).bit_length():
            raise SuiteError(f"pod CIDR {nets['pod_cidr']} cannot hold a /24 for each of {nodes} nodes", "use a larger PROXYSUITE_POD_CIDR, e.g. 10.244.0.0/16")
        if nets["fabric_cidr"].num_addresses < 64:
            raise SuiteError(f"fabric CIDR {nets['fabric_cidr']} is too small", "use a /24 or larger PROXYSUITE_FABRIC_CIDR")

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
    """Hash of the provider's own code when the cluster started (its daemons keep running that code)."""

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
    addressing = Addressing.from_env()
    addressing.check(config.nodes)
    return ClusterState(name=config.name, run_id=config.run_id, mode=config.mode, proxy_cmd=config.proxy_cmd,
                        proxy_health=config.proxy_health, addressing=addressing, api_port=config.api_port, code_digest=code_digest())

"""What kube-proxy left in each datapath of a node: the evidence that a migration cleaned up.

kube-proxy removes the *other* modes' rules itself when it starts (``platformCleanup`` in
cmd/kube-proxy/app/server_linux.go, v1.37.2): in nftables mode it runs the iptables and IPVS
cleanups, in iptables (or ipvs) mode it deletes the ``ip``/``ip6 kube-proxy`` nftables tables.
This module reads every place those rules could be — both iptables backends (nf_tables and
legacy) for IPv4 and IPv6, and the nftables table list — so a leftover in a backend kube-proxy
did not use is found too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IPTABLES_DUMPS = (
    ("iptables-nft", "iptables-nft-save"),
    ("iptables-legacy", "iptables-legacy-save"),
    ("ip6tables-nft", "ip6tables-nft-save"),
    ("ip6tables-legacy", "ip6tables-legacy-save"),
)
"""(backend label, dump command). Every one is read: kube-proxy picks one backend per family, a stale rule may sit in any."""

KUBELET_CHAINS = frozenset({("mangle", "KUBE-IPTABLES-HINT"), ("mangle", "KUBE-KUBELET-CANARY"),
                            ("nat", "KUBE-KUBELET-CANARY"), ("filter", "KUBE-KUBELET-CANARY")})
"""KUBE-* chains that are kubelet's, not kube-proxy's: where kubelet shares the node's network namespace with
kube-proxy (kind, kubeadm nodes), pkg/kubelet/kubelet_network_linux.go v1.37.2 creates ``KUBE-IPTABLES-HINT`` in
mangle (the hint for which iptables backend the node uses) and monitors ``KUBE-KUBELET-CANARY`` in mangle, nat
and filter, in both families, whatever the proxy mode. Measured on kind: the only KUBE-* chains left after
iptables -> nftables besides ``KUBE-FIREWALL``; they are empty. (The local provider's kubelet does not touch
the node namespace's iptables, so they never appear there.)"""

KNOWN_LEFTOVERS = frozenset({("filter", "KUBE-FIREWALL")}) | KUBELET_CHAINS
"""KUBE-* chains that remain when kube-proxy leaves iptables mode, on purpose: kubelet's own (above), and
kube-proxy v1.37.2's copy of kubelet's
anti-martian chain. pkg/proxy/iptables/proxier.go creates ``KUBE-FIREWALL`` (``iptablesKubeletJumpChains``, jumped
to from INPUT and OUTPUT, one DROP rule "block incoming localnet connections") and says "we create these on startup
but do not delete them in CleanupLeftovers": on a real node kubelet owns the same chain. Measured here: after
iptables -> nftables every other KUBE-* chain and rule is gone from both families and both backends (the mangle
canary too, cleanup.go's last step), and exactly this chain, its two jumps and its DROP rule remain."""
KNOWN_LEFTOVER_RULES = (
    re.compile(r"^filter: -A (INPUT|OUTPUT) -j KUBE-FIREWALL$"),
    re.compile(r'^filter: -A KUBE-FIREWALL .*"block incoming localnet connections".* -j DROP$'),
)
"""The rules of :data:`KNOWN_LEFTOVERS`: the two jumps and the anti-martian DROP (IPv4 only)."""

NFT_TABLE = "kube-proxy"
"""The table kube-proxy's nftables mode owns, in family ``ip`` and ``ip6``."""

_TABLE_LINE = re.compile(r"^table (\S+) (\S+)")


@dataclass
class BackendDump:
    backend: str
    chains: set[tuple[str, str]] = field(default_factory=set)
    """(table, chain) of every KUBE-* chain."""
    rules: list[str] = field(default_factory=list)
    """Every rule that is in a KUBE-* chain or jumps to one."""
    text: str = ""


@dataclass
class RuleAudit:
    """The kube-proxy state found on one node."""

    node: str
    iptables: dict[str, BackendDump] = field(default_factory=dict)
    nft_tables: list[tuple[str, str]] = field(default_factory=list)
    """(family, name) of every nftables table, including iptables-nft's own (``ip nat``, ...)."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Dumps that could not be taken, with why (a binary missing on the node)."""

    def kube_proxy_tables(self) -> list[str]:
        return sorted(f"{fam} {name}" for fam, name in self.nft_tables if name == NFT_TABLE)

    def iptables_chains(self) -> dict[str, list[str]]:
        return {b: sorted(f"{t}/{c}" for t, c in d.chains) for b, d in self.iptables.items() if d.chains}

    def iptables_rules(self) -> dict[str, list[str]]:
        return {b: d.rules for b, d in self.iptables.items() if d.rules}

    def stale_iptables(self) -> dict[str, list[str]]:
        """KUBE-* chains and rules in or to them, other than :data:`KNOWN_LEFTOVERS` and their rules."""
        out: dict[str, list[str]] = {}
        for b, d in self.iptables.items():
            bad = [f"{t}/{c}" for t, c in sorted(d.chains) if (t, c) not in KNOWN_LEFTOVERS]
            bad += [r for r in d.rules if not any(p.match(r) for p in KNOWN_LEFTOVER_RULES)]
            if bad:
                out[b] = bad
        return out

    def known_leftovers(self) -> dict[str, list[str]]:
        """The declared leftovers found, per backend (recorded in the report, not judged)."""
        out = {}
        for b, d in self.iptables.items():
            found = [f"{t}/{c}" for t, c in sorted(d.chains & KNOWN_LEFTOVERS)]
            found += [r for r in d.rules if any(p.match(r) for p in KNOWN_LEFTOVER_RULES)]
            if found:
                out[b] = found
        return out

    def summary(self) -> dict:
        return {"node": self.node, "nft_kube_proxy_tables": self.kube_proxy_tables(), "iptables_kube_chains": self.iptables_chains(),
                "iptables_kube_rules": {b: len(r) for b, r in self.iptables_rules().items()},
                "known_leftovers": self.known_leftovers(), "unreadable": self.unreadable}


def parse_iptables_save(backend: str, text: str) -> BackendDump:
    dump = BackendDump(backend, text=text)
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":KUBE-"):
            dump.chains.add((table, line[1:].split()[0]))
        elif line.startswith("-A ") and "KUBE-" in line:
            dump.rules.append(f"{table}: {line}")
    return dump


def parse_nft_tables(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(_TABLE_LINE.match, text.splitlines()) if m]


def audit(cluster, node: str) -> RuleAudit:
    """Read every iptables backend and the nftables table list on ``node`` (feature ``node_exec``)."""
    out = RuleAudit(node)
    for backend, cmd in IPTABLES_DUMPS:
        # `command -v` first: a node image may lack the legacy binaries; that is recorded, not an error.
        text = cluster.node_exec(node, ["sh", "-c", f"command -v {cmd} >/dev/null || {{ echo MISSING; exit 0; }}; {cmd}"], timeout=60)
        if text.strip() == "MISSING":
            out.unreadable[backend] = f"{cmd} is not installed on {node}"
            continue
        out.iptables[backend] = parse_iptables_save(backend, text)
    out.nft_tables = parse_nft_tables(cluster.node_exec(node, ["nft", "list", "tables"], timeout=60))
    return out


def new_mode_present(cluster, node: str, mode: str, cluster_ip: str) -> tuple[bool, str]:
    """Whether ``mode``'s own rules on ``node`` carry ``cluster_ip`` (the datapath dump of :mod:`proxysuite.modes`)."""
    from ..modes import get_mode

    argv = get_mode(mode).datapath.size or get_mode(mode).datapath.dump
    text = cluster.node_exec(node, list(argv), timeout=60)
    found = cluster_ip in text
    return found, f"`{' '.join(argv)}` on {node}: {len(text.splitlines())} lines, ClusterIP {cluster_ip} {'present' if found else 'ABSENT'}"


def stale_after(audit_: RuleAudit, mode: str) -> list[str]:
    """What of the other modes is still on the node once it runs ``mode`` (empty: clean)."""
    problems: list[str] = []
    if mode == "nftables":
        for backend, items in audit_.stale_iptables().items():
            problems.append(f"{backend}: {len(items)} stale: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}")
    elif mode == "iptables":
        tables = audit_.kube_proxy_tables()
        if tables:
            problems.append(f"nftables tables still present: {', '.join(tables)}")
    return problems

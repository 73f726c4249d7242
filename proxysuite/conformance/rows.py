"""Rows: the declarative unit of a conformance check (vantage × target × protocol → expectation).

::

    Row("pod-other-node", "clusterip", "udp", expect=REACH, klass=REQUIRED)
    Row("node", "nodeport-localhost", expect=per_mode(iptables=REACH, nftables=REFUSED),
        klass=IMPLEMENTATION_DEFINED, note="nftables never serves NodePorts on 127.0.0.1 (kk PR #124383)")

``expect`` and ``klass`` are either one value for every mode or a per-mode table
(``"*"`` is the default). Every mode must resolve to an expectation: a table
without a default that leaves a mode out raises when the row is defined. Where no
source settles a mode's behaviour, declare :data:`RECORD_ONLY` for it (the matrix
shows ``record-only``, never a pass). Vantage, target and protocol names are
checked when the row is defined too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .expectations import IMPLEMENTATION_DEFINED, REACH, REQUIRED, Expectation, Klass
from ..modes import MODES
from ..probes.vantages import TARGETS, VANTAGES


@dataclass(frozen=True)
class Row:
    vantage: str
    """See :data:`proxysuite.probes.vantages.VANTAGES`."""
    target: str
    """See :data:`proxysuite.probes.vantages.TARGETS`."""
    proto: str = "tcp"
    expect: Expectation | Mapping[str, Expectation] = REACH
    klass: Klass | Mapping[str, Klass] = REQUIRED
    service: str = ""
    """Which of the scenario's Services; empty = the scenario's default."""
    count: int = 10
    """Probes sent for the verdict (after the path is known to be programmed)."""
    timeout: float = 2.0
    """Seconds each probe waits for connect and reply; what TIMEOUT means for this row."""
    interval: float = 0.0
    """Seconds between probes. Rows expecting REFUSED use ~1 s: the rejecting node sends ICMP errors
    under the kernel's per-peer rate limit (icmp_ratelimit 1000 ms, burst 6), and back-to-back
    rejections to one client turn into silent drops (seen here: UDP refused 3 / timeout 2)."""
    note: str = ""
    """Provenance of the expectation (upstream test, KEP, PR)."""
    per_family: bool = False
    """The row means the same in every IP family: on a cluster that is not single-stack IPv4 (``--ip-family``) it
    runs once per family the run serves (see :func:`expand_families`)."""
    family: str = ""
    """``ipv4`` / ``ipv6``: probe the target's address of that family, from the vantage's address of that family;
    empty: the primary address (single-stack IPv4 runs, and rows not tied to a family)."""

    def __post_init__(self) -> None:
        where = f"Row({self.vantage!r}, {self.target!r}, {self.proto!r})"
        if self.family not in ("", "ipv4", "ipv6"):
            raise ValueError(f"{where}: family must be ipv4, ipv6 or empty")
        if self.vantage not in VANTAGES:
            raise ValueError(f"{where}: unknown vantage; known: {', '.join(VANTAGES)}")
        if self.target not in TARGETS:
            raise ValueError(f"{where}: unknown target; known: {', '.join(TARGETS)}")
        if self.proto not in ("tcp", "udp", "sctp"):
            raise ValueError(f"{where}: protocol must be tcp, udp or sctp")
        for what, table, kind in (("expect", self.expect, Expectation), ("klass", self.klass, Klass)):
            if isinstance(table, kind):
                continue
            unknown = sorted(set(table) - set(MODES) - {"*"})
            if unknown:
                raise ValueError(f"{where}: {what} names unknown mode(s) {unknown}; known: {', '.join(MODES)}")
            if any(not isinstance(v, kind) for v in table.values()):
                raise ValueError(f"{where}: every {what} entry must be a {kind.__name__}")
        if not isinstance(self.expect, Expectation) and "*" not in self.expect:
            missing = [m for m in MODES if m not in self.expect]
            if missing:
                raise ValueError(f"{where}: no expectation declared for mode(s) {', '.join(missing)}; "
                                 "declare one (or RECORD_ONLY with a note saying why) or give a default")
        for mode in MODES:
            if self.expectation_for(mode).any_declared and self.klass_for(mode) is not IMPLEMENTATION_DEFINED:
                raise ValueError(f"{where}: ANY_DECLARED for {mode} needs the row to be implementation-defined there")

    @property
    def id(self) -> str:
        svc = f"@{self.service}" if self.service else ""
        fam = f"/{self.family}" if self.family else ""
        return f"{self.vantage}->{self.target}{svc}/{self.proto}{fam}"

    def __str__(self) -> str:
        return self.id

    def expectation_for(self, mode: str) -> Expectation:
        if isinstance(self.expect, Expectation):
            return self.expect
        return self.expect[mode] if mode in self.expect else self.expect["*"]

    def klass_for(self, mode: str) -> Klass:
        if isinstance(self.klass, Klass):
            return self.klass
        return self.klass.get(mode, self.klass.get("*", REQUIRED))

    def alternatives(self) -> list[Expectation]:
        """Every expectation this row declares for any mode (classifies an observation; a custom proxy may
        match any of them on an implementation-defined row, see :mod:`proxysuite.conformance.verdict`)."""
        if isinstance(self.expect, Expectation):
            return [self.expect]
        seen, out = set(), []
        for e in self.expect.values():
            if e.name not in seen:
                seen.add(e.name)
                out.append(e)
        return out


def expand_families(rows: "list[Row]", families: tuple[str, ...]) -> "list[Row]":
    """``rows`` with each ``per_family`` row repeated once per family (ids end in ``/ipv4``, ``/ipv6``).

    A single-stack IPv4 run (``families == ("ipv4",)``) gets the rows unchanged, so its ids are the same as before
    the suite knew of families."""
    from dataclasses import replace

    if tuple(families) == ("ipv4",):
        return list(rows)
    out = []
    for r in rows:
        if r.per_family and not r.family:
            out += [replace(r, family=f) for f in families]
        else:
            out.append(r)
    return out

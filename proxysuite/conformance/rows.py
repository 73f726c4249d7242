"""Rows: the declarative unit of a conformance check (vantage × target × protocol → expectation).

::

    Row("pod-other-node", "clusterip", "udp", expect=REACH, klass=REQUIRED)
    Row("node", "nodeport-localhost", expect=per_mode(iptables=REACH, nftables=REFUSED),
        klass=IMPLEMENTATION_DEFINED, note="nftables never serves NodePorts on 127.0.0.1 (kk PR #124383)")

``expect`` and ``klass`` are either one value for every mode or a per-mode table
(``"*"`` is the default). A mode with no entry and no default has no declared
expectation: the row is observed and recorded, never judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .expectations import REACH, REQUIRED, Expectation, Klass


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

    @property
    def id(self) -> str:
        svc = f"@{self.service}" if self.service else ""
        return f"{self.vantage}->{self.target}{svc}/{self.proto}"

    def __str__(self) -> str:
        return self.id

    def expectation_for(self, mode: str) -> Expectation | None:
        if isinstance(self.expect, Expectation):
            return self.expect
        return self.expect.get(mode, self.expect.get("*"))

    def klass_for(self, mode: str) -> Klass:
        if isinstance(self.klass, Klass):
            return self.klass
        return self.klass.get(mode, self.klass.get("*", REQUIRED))

    def alternatives(self) -> list[Expectation]:
        """Every expectation this row declares for any mode (used to classify an observation)."""
        if isinstance(self.expect, Expectation):
            return [self.expect]
        seen, out = set(), []
        for e in self.expect.values():
            if e.name not in seen:
                seen.add(e.name)
                out.append(e)
        return out

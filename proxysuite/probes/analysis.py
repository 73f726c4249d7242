"""What a list of observations says: outcomes, who answered, how evenly, from which client IP.

Everything here is a pure function of observations, so it is unit-tested without
a cluster (``tests/test_conformance_analysis.py``).

Uniformity is a chi-square goodness-of-fit test against "every expected backend
equally likely". The significance ``alpha`` is the false-alarm rate for a proxy
that *is* uniform; :func:`samples_for_uniformity` picks the sample count so the
test also has a stated power against a concrete skew (by default one backend
getting twice the share of each other one), so a pass means something.

A rejection is confirmed before it fails a check: the harness draws a fresh sample
:data:`CONFIRMATION_FACTOR` times as large and judges that one. A uniform proxy then
fails once in ``1/alpha**2`` checks (one in a million at the default alpha) instead of
once in ``1/alpha``: with ten uniformity rows per mode a CI run would otherwise go red
by chance about once in fifty runs. A skewed proxy still fails with the stated power
(:func:`two_stage_power`), because the larger confirming sample rejects it almost surely.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .engine import OK, Observation

DEFAULT_ALPHA = 0.001
"""Significance of each stage of the uniformity test: a uniform proxy's sample is rejected once
in 1000 samples; a check fails only if a fresh confirming sample is rejected too."""
CONFIRMATION_FACTOR = 2
"""The confirming sample is this many times the first one, so confirmation costs no power."""
DEFAULT_POWER = 0.9
"""Probability of detecting the reference skew (:func:`skewed`) with the chosen sample size."""


def outcomes(obs: Iterable[Observation]) -> Counter:
    return Counter(o.outcome for o in obs)


def backends(obs: Iterable[Observation]) -> Counter:
    """Answers per backend hostname (only successful observations)."""
    return Counter(o.backend for o in obs if o.outcome == OK and o.backend)


def client_ips(obs: Iterable[Observation]) -> Counter:
    return Counter(o.client_ip for o in obs if o.outcome == OK and o.client_ip)


def summary(obs: Sequence[Observation]) -> str:
    """One line: ``40 probes: ok 40; backends web-a 21, web-b 19; client IPs 10.244.1.4 40``."""
    parts = [f"{len(obs)} probes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes(obs).items()))]
    b = backends(obs)
    if b:
        parts.append("backends " + ", ".join(f"{k} {v}" for k, v in sorted(b.items())))
    c = client_ips(obs)
    if c:
        parts.append("client IPs " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    errors = Counter(o.error.split(":")[0] for o in obs if o.error)
    if errors:
        parts.append("errors " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    return "; ".join(parts)


def skewed(k: int, ratio: float = 2.0) -> list[float]:
    """The reference alternative: one of ``k`` backends gets ``ratio`` times the share of each other."""
    total = ratio + (k - 1)
    return [ratio / total] + [1 / total] * (k - 1)


def chi_square_power(n: int, k: int, alpha: float = DEFAULT_ALPHA, alternative: Sequence[float] | None = None) -> float:
    """Power of the uniformity test with ``n`` samples over ``k`` backends against ``alternative``."""
    from scipy import stats

    alt = list(alternative) if alternative is not None else skewed(k)
    p0 = 1 / k
    w2 = sum((p - p0) ** 2 / p0 for p in alt)
    crit = stats.chi2.ppf(1 - alpha, k - 1)
    return float(stats.ncx2.sf(crit, k - 1, n * w2))


def samples_for_uniformity(k: int, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER, ratio: float = 2.0) -> int:
    """Smallest sample count (rounded up to a multiple of ``k``, at least 10 per backend) reaching ``power``."""
    n = max(10 * k, k)
    while chi_square_power(n, k, alpha, skewed(k, ratio)) < power:
        n += k
    return n


def two_stage_power(n: int, k: int, alpha: float = DEFAULT_ALPHA, alternative: Sequence[float] | None = None) -> float:
    """Power of reject-then-confirm: the first sample of ``n`` and the confirming one both reject."""
    return chi_square_power(n, k, alpha, alternative) * chi_square_power(CONFIRMATION_FACTOR * n, k, alpha, alternative)


@dataclass
class Uniformity:
    counts: dict[str, int]
    expected_backends: list[str]
    n: int
    statistic: float
    p_value: float
    alpha: float
    power: float
    """Power against :func:`skewed` (2:1) at this n, stated so a pass can be judged."""
    missing: list[str] = field(default_factory=list)
    """Expected backends that got no traffic at all."""
    unexpected: list[str] = field(default_factory=list)
    """Backends that answered but were not expected (not ready, wrong Service)."""

    @property
    def uniform(self) -> bool:
        return self.p_value >= self.alpha and not self.missing and not self.unexpected

    def __str__(self) -> str:
        counts = ", ".join(f"{b} {self.counts.get(b, 0)}" for b in self.expected_backends)
        extra = f"; unexpected {self.unexpected}" if self.unexpected else ""
        return (
            f"chi-square {self.statistic:.2f} on {len(self.expected_backends) - 1} df, p={self.p_value:.4g} "
            f"(alpha {self.alpha:g}, n={self.n}, power {self.power:.2f} vs 2:1 skew): {counts}{extra}"
        )


def uniformity(obs: Sequence[Observation], expected_backends: Iterable[str], alpha: float = DEFAULT_ALPHA) -> Uniformity:
    """Chi-square goodness of fit of the answering backends to a uniform distribution over ``expected_backends``."""
    from scipy import stats

    expected = sorted(set(expected_backends))
    counts = backends(obs)
    observed = [counts.get(b, 0) for b in expected]
    n = sum(observed)
    k = len(expected)
    if k < 2 or n == 0:
        stat, p = 0.0, 1.0 if k == 1 and n else 0.0
    else:
        res = stats.chisquare(observed)
        stat, p = float(res.statistic), float(res.pvalue)
    return Uniformity(
        counts=dict(counts),
        expected_backends=expected,
        n=n,
        statistic=stat,
        p_value=p,
        alpha=alpha,
        power=chi_square_power(n, k, alpha) if k >= 2 and n else 0.0,
        missing=[b for b, c in zip(expected, observed) if c == 0],
        unexpected=sorted(b for b in counts if b not in expected),
    )


def sticky(obs: Sequence[Observation]) -> tuple[bool, str]:
    """All successful answers came from one backend, and there was at least one."""
    b = backends(obs)
    if not b:
        return False, "no backend answered"
    if len(b) == 1:
        (only, n), = b.items()
        return True, f"all {n} answers from {only}"
    return False, "answers spread over " + ", ".join(f"{k} {v}" for k, v in b.most_common())


@dataclass(frozen=True)
class FlowMove:
    """How a flow (one source port, one observation per datagram) moved to the backends it may reach now."""

    moved: bool
    """A backend it may reach answered, and no other answered after that."""
    gap_s: float | None
    """Seconds from the last answer of a backend it may no longer reach (or from ``since``, when none
    answered) to the first answer of one it may; None when it never moved or there is no reference."""
    detail: str


def flow_move(obs: Sequence[Observation], allowed: Iterable[str], since: float | None = None) -> FlowMove:
    """Judge a flow across a backend change: ``allowed`` are the backends that may answer after it.

    The black-hole is measured on send times (``Observation.started``), so its resolution is the flow's
    interval. ``since`` (wall clock) is the reference when no earlier backend answered: the moment the
    change took effect (e.g. the first endpoint was seen ready).
    """
    allowed = set(allowed)
    answered = [o for o in obs if o.outcome == OK and o.backend]
    first_new = next((i for i, o in enumerate(obs) if o.outcome == OK and o.backend in allowed), None)
    if first_new is None:
        return FlowMove(False, None, f"no datagram was answered by {sorted(allowed)}; {summary(obs)}")
    before = [o for o in obs[:first_new] if o.outcome == OK and o.backend]
    after = obs[first_new:]
    strays = [o for o in after if o.outcome == OK and o.backend not in allowed]
    lost = sum(1 for o in after if o.outcome != OK)
    start = before[-1].started if before else since
    gap = obs[first_new].started - start if start is not None else None
    frm = (f"last answer from {before[-1].backend}" if before else "the change") if start is not None else "?"
    text = (f"{len(obs)} datagrams, {len(answered)} answered; {frm} -> first answer from {obs[first_new].backend}"
            + (f": {gap * 1000:.0f} ms" if gap is not None else ": no reference time")
            + (f"; {lost} unanswered after the move" if lost else ""))
    if strays:
        return FlowMove(False, gap, f"{text}; then answered again by {sorted({o.backend or '' for o in strays})}")
    return FlowMove(True, gap, text)
# --- long-lived streams (engine.run_stream) -------------------------------------------------------------
@dataclass
class Stream:
    """One connection (or UDP flow) of a long-lived stream, summarized from its exchanges."""

    index: int
    protocol: str
    exchanges: int
    answered: int
    backends: list[str]
    """Who answered, in order of first answer (one entry when the connection stayed with its backend)."""
    errors: Counter
    """Failed exchanges by outcome (``reset``, ``timeout``, ...)."""
    longest_gap_ms: float
    """Longest time without an answer: between consecutive answers, and from the last answer to the end of
    the stream (a TCP connection that broke stays unanswered until the stream ends)."""
    broken: str = ""
    """Why the connection ended early (TCP: its first failure), empty when it lasted the whole stream."""

    @property
    def survived(self) -> bool:
        """Answered throughout by one backend, never reset or refused (a lost UDP datagram alone is not a break)."""
        hard = {k: v for k, v in self.errors.items() if not (self.protocol == "udp" and k == "timeout")}
        return self.answered > 0 and len(self.backends) == 1 and not hard and not self.broken

    def __str__(self) -> str:
        who = " -> ".join(self.backends) or "nobody"
        errs = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        return (f"#{self.index} {self.protocol}: {self.answered}/{self.exchanges} answered by {who}, longest gap "
                f"{self.longest_gap_ms:.0f} ms" + (f", {errs}" if errs else "") + (f", broke: {self.broken}" if self.broken else ""))


def streams(obs: Sequence[Observation]) -> list[Stream]:
    """Per-connection summaries of a stream's exchanges (``Observation.stream`` says which connection)."""
    end = max((o.started for o in obs), default=0.0)
    out = []
    for index in sorted({o.stream for o in obs if o.stream is not None}):
        mine = [o for o in obs if o.stream == index]
        ok_times = [o.started for o in mine if o.outcome == OK]
        marks = [mine[0].started] + ok_times + [end]
        gap = max((b - a for a, b in zip(marks, marks[1:])), default=0.0)
        order: list[str] = []
        for o in mine:
            if o.outcome == OK and o.backend and o.backend not in order:
                order.append(o.backend)
        errors = Counter(o.outcome for o in mine if o.outcome != OK)
        tcp_break = next((o for o in mine if o.outcome != OK and o.protocol == "tcp"), None)
        broken = f"{tcp_break.outcome}: {tcp_break.error}" if tcp_break is not None else ""
        out.append(Stream(index, mine[0].protocol if mine else "", len(mine), len(ok_times), order, errors,
                          round(gap * 1000, 1), broken))
    return out

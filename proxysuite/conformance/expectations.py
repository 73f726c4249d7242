"""Named expectations and expectation classes.

An :class:`Expectation` is a named predicate over the observations of one row
(one vantage × target × protocol). Its ``str()`` is its name, so reports read
``expected REFUSED, observed TIMEOUT``. Combine with ``&``::

    REACH & SRC_IP_PRESERVED          # named "REACH+SRC_IP_PRESERVED"

A per-mode table picks one per proxy mode (:func:`per_mode`); ``"*"`` is the
default for modes not named.

Expectation classes say how much a row's verdict weighs:

``REQUIRED``  Kubernetes conformance ([Conformance] upstream). A mismatch fails.
``EXPECTED``  upstream e2e or documented proxy behaviour. A mismatch fails.
``IMPLEMENTATION_DEFINED``  behaviour Kubernetes leaves to the implementation
              (REJECT vs DROP, NodePort on 127.0.0.1). Each mode declares what it
              does; the matrix records it beside the other modes. It still fails
              when the observation departs from what may be observed (see
              :mod:`proxysuite.conformance.verdict`, the one verdict rule).

:data:`RECORD_ONLY` is declared for a mode whose behaviour no source settles: the
observation is recorded and shown as ``record-only``, never as a pass.
:data:`ANY_DECLARED` (for ``custom`` on implementation-defined rows) accepts what the
row declares for any other mode, and fails when the observation matches none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Sequence

from ..probes import analysis
from ..probes.engine import OK, REFUSED as _REFUSED, TIMEOUT as _TIMEOUT, UNREACHABLE as _UNREACHABLE, Observation


class Klass(str, Enum):
    REQUIRED = "required"
    EXPECTED = "expected"
    IMPLEMENTATION_DEFINED = "implementation-defined"

    def __str__(self) -> str:
        return self.value


REQUIRED = Klass.REQUIRED
EXPECTED = Klass.EXPECTED
IMPLEMENTATION_DEFINED = Klass.IMPLEMENTATION_DEFINED


@dataclass
class Context:
    """What an expectation may need to know besides the observations."""

    source_ip: str | None = None
    """Address the vantage's packets leave with (before any SNAT)."""
    backends: Sequence[str] = ()
    """Backends (pod names) that may answer; empty = do not check who answered."""
    local_backends: Sequence[str] = ()
    """Backends on the node that receives the traffic (iTP/eTP=Local checks)."""
    alpha: float = analysis.DEFAULT_ALPHA
    since: float | None = None
    """For flow expectations (:func:`flow_moves`): when the change under test took effect (wall clock); a flow
    that no earlier backend answered is timed from here."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Expectation:
    name: str
    doc: str
    predicate: Callable[[Sequence[Observation], Context], Verdict] = field(repr=False, compare=False)
    parts: tuple["Expectation", ...] = ()
    positive: bool = False
    """True when the expectation needs answers (the harness then waits for the path to be programmed
    and samples over time); False for REFUSED / TIMEOUT / NO_REACH."""
    record_only: bool = False
    any_declared: bool = False

    def evaluate(self, obs: Sequence[Observation], ctx: Context) -> Verdict:
        if not obs:
            return Verdict(False, "no observations")
        return self.predicate(obs, ctx)

    def __and__(self, other: "Expectation") -> "Expectation":
        parts = (self.parts or (self,)) + (other.parts or (other,))

        def all_of(obs, ctx):
            details = []
            for p in parts:
                v = p.evaluate(obs, ctx)
                if not v.ok:
                    return Verdict(False, f"{p.name}: {v.detail}")
                details.append(v.detail)
            return Verdict(True, "; ".join(d for d in details if d))

        if any(p.record_only or p.any_declared for p in parts):
            raise ValueError("RECORD_ONLY and ANY_DECLARED cannot be combined with other expectations")
        return Expectation("+".join(p.name for p in parts), " and ".join(p.doc for p in parts), all_of, parts,
                           positive=any(p.positive for p in parts))

    def __str__(self) -> str:
        return self.name

    def rejected_by_chance_alone(self, obs: Sequence[Observation], ctx: Context) -> bool:
        """True when the only failing part is the uniformity test's p-value.

        Every probe was answered, every expected backend answered, nobody else did,
        and the other parts hold: the sample may be one of the ``alpha`` share that a
        uniform proxy produces by chance, so the harness confirms it on a fresh sample
        (see :data:`proxysuite.probes.analysis.CONFIRMATION_FACTOR`).
        """
        parts = self.parts or (self,)
        if UNIFORM not in parts or set(analysis.outcomes(obs)) != {OK}:
            return False
        if any(not p.evaluate(obs, ctx).ok for p in parts if p is not UNIFORM):
            return False
        u = analysis.uniformity(obs, ctx.backends, ctx.alpha)
        return not u.uniform and not u.missing and not u.unexpected


def _all_outcome(outcome: str):
    def pred(obs, ctx):
        counts = analysis.outcomes(obs)
        if set(counts) == {outcome}:
            return Verdict(True, f"all {len(obs)} {outcome}")
        return Verdict(False, analysis.summary(obs))

    return pred


def _refused(obs, ctx):
    # A REJECT answers with TCP RST or ICMP port-unreachable, and the kernel rate-limits ICMP errors per
    # peer (icmp_ratelimit 1 s, burst 6): when two workers probe through the same node at once, some
    # rejections go silent. So REFUSED means: nothing answered, at least one probe was actively refused,
    # and the rest timed out. A DROP never produces a refusal (the engine reports a DROP on the sender's
    # own output path as a timeout too), so REJECT and DROP stay distinguishable.
    refused = [o for o in obs if o.outcome == _REFUSED]
    silent = [o for o in obs if o.outcome == _TIMEOUT]
    if refused and len(refused) + len(silent) == len(obs):
        local = sum(1 for o in refused if (o.error or "").startswith("rejected on the sending host"))
        return Verdict(True, f"{len(refused)} of {len(obs)} refused"
                       + (f", {len(silent)} silent (ICMP rate limit)" if silent else "")
                       + (f" ({local} rejected on the sending host)" if local else ""))
    return Verdict(False, analysis.summary(obs))


def _reach(obs, ctx):
    counts = analysis.outcomes(obs)
    if set(counts) != {OK}:
        return Verdict(False, analysis.summary(obs))
    seen = analysis.backends(obs)
    if ctx.backends:
        stray = sorted(set(seen) - set(ctx.backends))
        if stray:
            return Verdict(False, f"answered by {stray}, which must not get traffic (allowed: {sorted(ctx.backends)}); {analysis.summary(obs)}")
    return Verdict(True, analysis.summary(obs))


def _reach_all(obs, ctx):
    v = _reach(obs, ctx)
    if not v.ok:
        return v
    missing = sorted(set(ctx.backends) - set(analysis.backends(obs)))
    if missing:
        return Verdict(False, f"no traffic reached {missing}; {analysis.summary(obs)}")
    return v


def _reach_local(obs, ctx):
    v = _reach(obs, ctx)
    if not v.ok:
        return v
    remote = sorted(set(analysis.backends(obs)) - set(ctx.local_backends))
    if remote:
        return Verdict(False, f"answered by non-local backends {remote} (local: {sorted(ctx.local_backends)})")
    return v


def _no_reach(obs, ctx):
    ok = sum(1 for o in obs if o.outcome == OK)
    if ok:
        return Verdict(False, f"{ok} of {len(obs)} probes were answered; {analysis.summary(obs)}")
    return Verdict(True, analysis.summary(obs))


def _source_unknown(ctx) -> Verdict | None:
    # Without the vantage's own address neither claim can be checked; an empty address must not
    # make "the backend saw something else" true by default.
    if not ctx.source_ip:
        return Verdict(False, "the vantage's own source address is unknown, so the client IP cannot be judged")
    return None


def _src_preserved(obs, ctx):
    if (v := _source_unknown(ctx)) is not None:
        return v
    ips = analysis.client_ips(obs)
    if not ips:
        return Verdict(False, "no answer carried a client IP; " + analysis.summary(obs))
    if set(ips) != {ctx.source_ip}:
        return Verdict(False, f"backend saw {dict(ips)}, the client is {ctx.source_ip}")
    return Verdict(True, f"backend saw the client's own address {ctx.source_ip}")


def _src_masqueraded(obs, ctx):
    if (v := _source_unknown(ctx)) is not None:
        return v
    ips = analysis.client_ips(obs)
    if not ips:
        return Verdict(False, "no answer carried a client IP; " + analysis.summary(obs))
    if ctx.source_ip in ips:
        return Verdict(False, f"backend saw the client's own address {ctx.source_ip} in {ips[ctx.source_ip]} of {sum(ips.values())} answers")
    return Verdict(True, f"backend saw {sorted(ips)} instead of {ctx.source_ip}")


def _uniform(obs, ctx):
    u = analysis.uniformity(obs, ctx.backends, ctx.alpha)
    if set(analysis.outcomes(obs)) != {OK}:
        return Verdict(False, analysis.summary(obs))
    return Verdict(u.uniform, str(u))


def _sticky(obs, ctx):
    if set(analysis.outcomes(obs)) != {OK}:
        return Verdict(False, analysis.summary(obs))
    ok, detail = analysis.sticky(obs)
    return Verdict(ok, detail)


REACH = Expectation("REACH", "every probe is answered, only by backends that may get traffic", _reach, positive=True)
REACH_ALL = Expectation("REACH_ALL", "every probe is answered and every ready backend answers at least once", _reach_all,
                        positive=True)
REACH_LOCAL = Expectation("REACH_LOCAL", "every probe is answered by a backend on the receiving node", _reach_local,
                          positive=True)
REFUSED = Expectation("REFUSED", "connections are actively refused (TCP RST / ICMP port unreachable: REJECT); "
                      "none is answered", _refused)
TIMEOUT = Expectation("TIMEOUT", "no probe gets any answer (DROP or blackhole)", _all_outcome(_TIMEOUT))
UNREACHABLE = Expectation("UNREACHABLE", "every probe fails at once with host/net unreachable (ICMP host or net "
                          "unreachable, or EHOSTUNREACH at connect); nothing answers", _all_outcome(_UNREACHABLE))
"""Cilium's socket-LB refuses a connect()/sendmsg() to a Service frontend without backends inside the syscall
(``bpf_sock.c`` ``__sock4_xlate_fwd`` returns -EHOSTUNREACH): no packet leaves, so unlike :data:`REFUSED` no
ICMP rate limit can turn some probes silent, and every probe must show it."""
def _dropped_on_sender(obs, ctx):
    # The engine turns EPERM without an ICMP error into TIMEOUT with this error text (engine._locally_filtered).
    local = [o for o in obs if o.outcome == _TIMEOUT and (o.error or "").startswith("dropped on the sending host")]
    if len(local) == len(obs):
        return Verdict(True, f"all {len(obs)} dropped by netfilter on the sending host (EPERM, no ICMP error)")
    return Verdict(False, f"{len(local)} of {len(obs)} dropped on the sending host; {analysis.summary(obs)}")


DROPPED_ON_SENDER = Expectation("DROPPED_ON_SENDER", "every probe is dropped by a rule on the sending host itself (send "
                                "fails with EPERM, no ICMP error): from a node vantage, the proxy's own DROP",
                                _dropped_on_sender)
"""Tells a proxy's DROP in the node's output path from a packet that left the node and died elsewhere (both
are :data:`TIMEOUT`): kube-proxy's nftables mode drops unallocated cluster IPs in ``filter-output``."""

NO_REACH = Expectation("NO_REACH", "no probe is answered by anything (refused, timeout or unreachable)", _no_reach)
SRC_IP_PRESERVED = Expectation("SRC_IP_PRESERVED", "the backend sees the client's own address", _src_preserved,
                               positive=True)
SRC_IP_MASQUERADED = Expectation("SRC_IP_MASQUERADED", "the backend sees an address other than the client's (SNAT)",
                                 _src_masqueraded, positive=True)
UNIFORM = Expectation("UNIFORM", "answers spread uniformly over the ready backends (chi-square)", _uniform, positive=True)
STICKY = Expectation("STICKY", "every answer comes from the same backend", _sticky, positive=True)
ANY_DECLARED = Expectation("ANY_DECLARED", "behaves as the row declares for some mode (a custom proxy on an "
                           "implementation-defined row)", lambda obs, ctx: Verdict(False, "matches no declared behaviour"),
                           any_declared=True)
RECORD_ONLY = Expectation("RECORD_ONLY", "no source settles this mode's behaviour: observed and recorded, never judged",
                          lambda obs, ctx: Verdict(True, "recorded, not judged"), record_only=True)



def flow_moves(bound: float, why: str) -> Expectation:
    """FLOW_MOVES(<=``bound`` s): a UDP flow that keeps its source port is answered by a backend it may reach
    now (``Context.backends``) at most ``bound`` seconds after its last answer from a backend it may no longer
    reach (or after ``Context.since``), and by nothing else afterwards. ``why`` says where the bound comes from."""

    def pred(obs, ctx):
        move = analysis.flow_move(obs, ctx.backends, ctx.since)
        if not move.moved:
            return Verdict(False, move.detail)
        if move.gap_s is None:
            return Verdict(False, f"{move.detail}; the black-hole cannot be timed")
        if move.gap_s > bound:
            return Verdict(False, f"{move.detail}, over the {bound:g} s bound ({why})")
        return Verdict(True, f"{move.detail} (bound {bound:g} s)")

    return Expectation(f"FLOW_MOVES(<={bound:g}s)", f"a UDP flow keeping its source port reaches a current backend "
                       f"within {bound:g} s of losing its old one ({why})", pred, positive=True)


OUTCOMES = (REACH, REFUSED, TIMEOUT, UNREACHABLE, NO_REACH)
"""Fallback classification of what was observed, most specific first."""


def classify(obs: Sequence[Observation], ctx: Context, candidates: Sequence[Expectation] = ()) -> str:
    """Name of the first candidate (then of :data:`OUTCOMES`) that the observations satisfy; else ``MIXED``."""
    # NO_REACH is the vaguest name; report REFUSED or TIMEOUT when either describes every probe.
    ordered = [e for e in (*candidates, *OUTCOMES) if e.name != "NO_REACH"] + [NO_REACH]
    for exp in ordered:
        if exp.evaluate(obs, ctx).ok:
            return exp.name
    return "MIXED(" + ",".join(f"{k}:{v}" for k, v in sorted(analysis.outcomes(obs).items())) + ")"


def per_mode(default=None, **modes):
    """A per-mode table of expectations or classes: ``per_mode(REACH, nftables=REFUSED)``.

    Keys must be mode names (:data:`proxysuite.modes.MODES`); a typo such as ``nftable=`` raises
    here, when the catalogue is defined, instead of silently never being judged. ``default``
    applies to every mode not named.
    """
    from ..modes import MODES

    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"per_mode: unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    table = dict(modes)
    if default is not None:
        table["*"] = default
    return table


def for_mode(table, mode: str):
    """What a value-or-:func:`per_mode` table declares for ``mode`` (for judged steps that are not rows).

    A table that neither names the mode nor has a default raises: a step must declare every mode it runs in.
    """
    if not isinstance(table, dict):
        return table
    if mode in table:
        return table[mode]
    if "*" in table:
        return table["*"]
    raise ValueError(f"no declaration for mode {mode!r} (declared: {', '.join(table)})")


# --- long-lived connections (engine.run_stream; suites/conformance/test_long_lived.py) ---------------------
def _streams(obs: Sequence[Observation]) -> tuple[list[analysis.Stream], str]:
    ss = analysis.streams(obs)
    worst = max((s.longest_gap_ms for s in ss), default=0.0)
    return ss, f"{len(ss)} connections, {len(obs)} exchanges, longest gap {worst:.0f} ms"


def survives(bound_s: float) -> Expectation:
    """Every connection of a stream stayed with its backend, was never reset or refused, and no gap exceeded ``bound_s``."""
    def pred(obs, ctx):
        ss, head = _streams(obs)
        if not ss:
            return Verdict(False, "no stream exchanges (" + analysis.summary(obs) + ")")
        bad = [str(s) for s in ss if not s.survived]
        slow = [str(s) for s in ss if s.survived and s.longest_gap_ms > bound_s * 1000]
        if bad or slow:
            return Verdict(False, f"{head}; " + "; ".join(
                [f"did not survive: {b}" for b in bad] + [f"gap over {bound_s:g} s: {s}" for s in slow]))
        return Verdict(True, f"{head}; every connection stayed with its backend")

    return Expectation("SURVIVES", f"every established connection keeps its backend, is never reset, and no gap "
                       f"exceeds {bound_s:g} s", pred, positive=True)


def moves_to_ready(bound_s: float) -> Expectation:
    """Every flow kept being answered (no gap over ``bound_s``) and ends on a backend that may get traffic (ctx.backends)."""
    def pred(obs, ctx):
        ss, head = _streams(obs)
        if not ss:
            return Verdict(False, "no stream exchanges (" + analysis.summary(obs) + ")")
        bad = []
        for s in ss:
            hard = {k: v for k, v in s.errors.items() if not (s.protocol == "udp" and k == "timeout")}
            if not s.answered or s.broken or hard:
                bad.append(f"broke: {s}")
            elif s.backends[-1] not in ctx.backends:
                bad.append(f"still on {s.backends[-1]}, which may no longer get traffic (allowed: {sorted(ctx.backends)}): {s}")
            elif s.longest_gap_ms > bound_s * 1000:
                bad.append(f"gap over {bound_s:g} s: {s}")
        if bad:
            return Verdict(False, f"{head}; " + "; ".join(bad))
        return Verdict(True, f"{head}; every flow continued on {sorted({s.backends[-1] for s in ss})}")

    return Expectation("MOVES", f"every flow keeps being answered (no gap over {bound_s:g} s) and ends on a backend "
                       "that may get traffic", pred, positive=True)

"""The verdict rule, written down once and implemented once.

For a row (or any judged step) and the mode under test the harness knows the
*declared* behaviour (:meth:`~proxysuite.conformance.rows.Row.expectation_for`)
and every behaviour the row declares for any mode (its *alternatives*). Then:

1. The declaration is :data:`~proxysuite.conformance.expectations.RECORD_ONLY`:
   the observation is recorded, the result is ``record-only`` — never a pass.
2. The observation matches the declaration: ``pass`` for required and expected
   rows, ``impl-as-declared`` for implementation-defined ones.
3. The declaration is :data:`~proxysuite.conformance.expectations.ANY_DECLARED`
   (a custom proxy on an implementation-defined row): ``impl-other-alternative``
   when the observation matches what the row declares for some other mode.
4. It does not match, the row is implementation-defined, the mode under test is a proxy
   the suite has no declarations of its own for (``custom``), and the observation
   matches another mode's declared behaviour: ``impl-other-alternative`` (a custom
   proxy may behave like any implementation the row knows).
5. Otherwise ``fail``, in every class. A kube-proxy or Cilium mode that departs
   from its own declaration is a regression, even on an implementation-defined row.

"Implementation-defined" therefore means "the behaviour is recorded and may
differ between modes", never "cannot fail". A row that declares nothing for a
mode cannot be built (:class:`~proxysuite.conformance.rows.Row` raises).

:func:`decide` is a pure function of the declarations and the observations; the
table in ``tests/test_verdict.py`` walks every class × declared × observed case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..modes import get_mode
from ..probes.engine import Observation
from .expectations import IMPLEMENTATION_DEFINED, Context, Expectation, Klass, classify

PASS = "pass"
FAIL = "fail"
IMPL_AS_DECLARED = "impl-as-declared"
IMPL_OTHER = "impl-other-alternative"
RECORD = "record-only"
SKIPPED = "skipped"
ERROR = "error"
RESULTS = (PASS, FAIL, IMPL_AS_DECLARED, IMPL_OTHER, RECORD, SKIPPED, ERROR)
"""Every result a matrix cell can show."""


def takes_alternatives(mode: str) -> bool:
    """Whether the mode may match another mode's declaration on implementation-defined rows.

    Only proxies the catalogue has no declarations of its own for: a user's ``custom`` proxy.
    kube-proxy's modes and Cilium are held to what the catalogue declares for them.
    """
    return get_mode(mode).family == "custom"


@dataclass(frozen=True)
class Decision:
    result: str
    expected: str
    observed: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.result == FAIL


def decide(mode: str, declared: Expectation, klass: Klass, obs: Sequence[Observation], ctx: Context,
           alternatives: Sequence[Expectation] = ()) -> Decision:
    """Judge observations of one row (or step) for ``mode`` against what it declares."""
    others = [a for a in alternatives if a.name != declared.name and not (a.record_only or a.any_declared)]
    observed = classify(obs, ctx, [declared, *others] if not declared.record_only else others)
    if declared.record_only:
        return Decision(RECORD, declared.name, observed, "no declared behaviour for this mode; recorded only")
    if declared.any_declared:
        if klass is not IMPLEMENTATION_DEFINED:
            raise ValueError(f"{declared.name} is only meaningful on implementation-defined rows, not {klass.value}")
        for alt in others:
            v = alt.evaluate(obs, ctx)
            if v.ok:
                return Decision(IMPL_OTHER, declared.name, observed, f"matches {alt.name}, declared for another mode: {v.detail}")
        return Decision(FAIL, declared.name, observed,
                        f"matches none of the behaviours the row declares ({', '.join(a.name for a in others)})")
    verdict = declared.evaluate(obs, ctx)
    if verdict.ok:
        return Decision(IMPL_AS_DECLARED if klass is IMPLEMENTATION_DEFINED else PASS, declared.name, observed,
                        verdict.detail)
    if klass is IMPLEMENTATION_DEFINED and takes_alternatives(mode):
        for alt in others:
            v = alt.evaluate(obs, ctx)
            if v.ok:
                return Decision(IMPL_OTHER, declared.name, observed,
                                f"matches {alt.name}, which the row declares for another mode: {v.detail}")
    return Decision(FAIL, declared.name, observed, verdict.detail)


def decide_value(klass: Klass, expected: str, observed: str, ok: bool, detail: str = "") -> Decision:
    """The same rule for a value that is not a probe outcome (an HTTP status, a metric's presence)."""
    if ok:
        return Decision(IMPL_AS_DECLARED if klass is IMPLEMENTATION_DEFINED else PASS, expected, observed, detail)
    return Decision(FAIL, expected, observed, detail)

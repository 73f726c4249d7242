"""When a programming-latency probe counts as "the change is in the datapath" (perf.latency._Judge).

Under endpoint churn a single connect can miss its 5 ms timeout on a busy 2-vCPU machine; that used to be
read as "the endpoints are gone" (the minSyncPeriod sweep showed 1 ms "latencies" at minSyncPeriod 10 s).
A removal now needs a run of unanswered probes: starting with a refusal (kube-proxy REJECTs a Service without
endpoints) and GONE_CONFIRM long, or made of timeouts and TIMEOUT_RUN long. A lone refusal between answers is
not a removal either: iptables mode under churn showed them while the endpoint was still programmed.
"""

from types import SimpleNamespace

from proxysuite.perf.latency import GONE_CONFIRM, TIMEOUT_RUN, _Judge
from proxysuite.probes.engine import OK, REFUSED, TIMEOUT


def probes(*outcomes):
    return [SimpleNamespace(outcome=o, started=float(i)) for i, o in enumerate(outcomes)]


def first(judge, obs):
    return next((s for s in map(judge, obs) if s is not None), None)


def test_a_lone_timeout_is_not_a_removal_but_a_run_of_refusals_is():
    judge = _Judge(False)
    assert first(judge, probes(OK, TIMEOUT, OK, OK, *[REFUSED] * GONE_CONFIRM)) == 4.0
    assert judge.evidence == "refused"


def test_a_lone_refusal_between_answers_is_not_a_removal():
    assert first(_Judge(False), probes(OK, REFUSED, OK, *[REFUSED] * (GONE_CONFIRM - 1), OK)) is None
    # a refusal, then the packets of a busy machine timing out, still confirms it
    judge = _Judge(False)
    assert first(judge, probes(OK, REFUSED, *[TIMEOUT] * (GONE_CONFIRM - 1))) == 1.0
    assert judge.evidence == "refused,timeout"


def test_a_run_of_timeouts_counts_from_its_first_probe():
    obs = probes(OK, TIMEOUT, OK, *[TIMEOUT] * TIMEOUT_RUN)
    assert first(_Judge(False), obs) == 3.0
    assert first(_Judge(False), probes(OK, *[TIMEOUT] * (TIMEOUT_RUN - 1), OK)) is None


def test_ready_needs_an_answer():
    assert first(_Judge(True), probes(REFUSED, TIMEOUT, OK)) == 2.0

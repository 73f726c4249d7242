"""When a programming-latency probe counts as "the change is in the datapath" (perf.latency._Judge).

Under endpoint churn a single connect can miss its 5 ms timeout on a busy 2-vCPU machine; that used to be
read as "the endpoints are gone" (the minSyncPeriod sweep showed 1 ms "latencies" at minSyncPeriod 10 s).
A removal now needs a run of unanswered probes that holds: GONE_CONFIRM probes from a refusal (kube-proxy
REJECTs a Service without endpoints), or timeouts only for TIMEOUT_HOLD_S. Under churn with minSyncPeriod 5-10 s
iptables mode showed 100+ ms runs of timeouts that ended in answers while the endpoint was still programmed.
"""

from types import SimpleNamespace

from proxysuite.perf.latency import GONE_CONFIRM, TIMEOUT_HOLD_S, TIMEOUT_RUN, _Judge
from proxysuite.probes.engine import OK, REFUSED, TIMEOUT


def probes(*outcomes, every: float = 1.0):
    return [SimpleNamespace(outcome=o, started=i * every) for i, o in enumerate(outcomes)]


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


def test_a_run_of_timeouts_that_holds_counts_from_its_first_probe():
    obs = probes(OK, TIMEOUT, OK, *[TIMEOUT] * TIMEOUT_RUN)
    assert first(_Judge(False), obs) == 3.0
    assert first(_Judge(False), probes(OK, *[TIMEOUT] * (TIMEOUT_RUN - 1), OK)) is None


def test_a_stall_of_timeouts_that_ends_in_an_answer_is_not_a_removal():
    # 5 ms apart: 40 timeouts are 0.2 s, a stall, not yet TIMEOUT_HOLD_S of silence
    stall = probes(OK, *[TIMEOUT] * (2 * TIMEOUT_RUN), OK, every=0.005)
    assert first(_Judge(False), stall) is None
    n = int(TIMEOUT_HOLD_S / 0.005) + 1
    judge = _Judge(False)
    assert first(judge, probes(OK, *[TIMEOUT] * n, every=0.005)) == 0.005
    assert judge.evidence == "timeout"


def test_timeouts_then_a_refusal_count_from_the_refusal():
    judge = _Judge(False)
    assert first(judge, probes(OK, TIMEOUT, TIMEOUT, *[REFUSED] * GONE_CONFIRM)) == 3.0


def test_ready_needs_an_answer():
    assert first(_Judge(True), probes(REFUSED, TIMEOUT, OK)) == 2.0


def test_where_the_proxy_rejects_only_a_refusal_is_a_removal_and_timeouts_are_a_stall():
    judge = _Judge(False, rejects=True)
    n = int(2 * TIMEOUT_HOLD_S / 0.005)
    assert first(judge, probes(OK, *[TIMEOUT] * n, OK, every=0.005)) is None
    assert abs(judge.stall_s - n * 0.005) < 1e-9  # first timeout's start to the last one's end
    assert first(judge, probes(OK, *[REFUSED] * GONE_CONFIRM, every=0.005)) == 0.005

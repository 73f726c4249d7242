"""When a programming-latency probe counts as "the change is in the datapath" (perf.latency._Judge).

Under endpoint churn a single connect can miss its 5 ms timeout on a busy 2-vCPU machine; that used to be
read as "the endpoints are gone" (the minSyncPeriod sweep showed 1 ms "latencies" at minSyncPeriod 10 s).
A removal now needs a refusal (kube-proxy REJECTs a Service without endpoints) or a run of timeouts.
"""

from types import SimpleNamespace

from proxysuite.perf.latency import TIMEOUT_RUN, _Judge
from proxysuite.probes.engine import OK, REFUSED, TIMEOUT


def probes(*outcomes):
    return [SimpleNamespace(outcome=o, started=float(i)) for i, o in enumerate(outcomes)]


def first(judge, obs):
    return next((s for s in map(judge, obs) if s is not None), None)


def test_a_lone_timeout_is_not_a_removal_but_a_refusal_is():
    assert first(_Judge(False), probes(OK, TIMEOUT, OK, OK, REFUSED)) == 4.0


def test_a_run_of_timeouts_counts_from_its_first_probe():
    obs = probes(OK, TIMEOUT, OK, *[TIMEOUT] * TIMEOUT_RUN)
    assert first(_Judge(False), obs) == 3.0
    assert first(_Judge(False), probes(OK, *[TIMEOUT] * (TIMEOUT_RUN - 1), OK)) is None


def test_ready_needs_an_answer():
    assert first(_Judge(True), probes(REFUSED, TIMEOUT, OK)) == 2.0

"""Every wait the suite does, named once, with what may lag behind it.

A wait is a *ceiling*, never a measurement: a check that passes after 29 s of a
30 s ceiling passes, and how long it took is reported as data (``Waited.elapsed``
goes into the probe transcript), not judged. Ceilings are generous because the
local provider runs a whole cluster on two cores; programming latency is measured
separately by the perf suite.

Use :func:`wait_until` with one of the constants::

    from proxysuite import waits
    waits.wait_until(waits.ENDPOINTS, lambda: len(ready_endpoints()) == 3,
                     what="3 ready endpoints in the EndpointSlices of svc/web")

The error on expiry says what was awaited, which wait, and for how long
(``"3 ready endpoints ... not true within 30s (ENDPOINTS)"``), plus the last
value the condition returned when it was not simply False.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Wait:
    name: str
    seconds: float
    """The ceiling."""
    poll: float
    """Pause between attempts."""
    lags: str
    """What may lag behind the write that this wait follows."""

    def __str__(self) -> str:
        return f"{self.name} ({self.seconds:g}s)"


PODS_READY = Wait(
    "PODS_READY", 120, 0.5,
    "scheduler binding, the node agent / kubelet creating the sandbox and starting the process, "
    "then the first successful readiness probe and the status write",
)
ENDPOINTS = Wait(
    "ENDPOINTS", 45, 0.3,
    "the EndpointSlice controller reacting to pod readiness, deletion or a selector change "
    "(upstream e2e: KubeProxyEndpointLagTimeout 30s)",
)
PROXY_PROGRAMMED = Wait(
    "PROXY_PROGRAMMED", 45, 0.3,
    "kube-proxy (or the proxy under test) syncing a Service/EndpointSlice change into the datapath "
    "(min-sync-period, sync batching, a busy two-core machine)",
)
LB_INGRESS = Wait(
    "LB_INGRESS", 60, 0.5,
    "the load-balancer controller allocating a VIP and writing status.loadBalancer.ingress "
    "(upstream e2e LoadBalancerLagTimeoutDefault is 2m on clouds)",
)
PROXY_RECOVERY = Wait(
    "PROXY_RECOVERY", 120, 1.0,
    "a restarted proxy becoming healthy and re-syncing, or a proxy noticing flushed rules "
    "(iptables canary chain monitor / periodic full resync, default sync period 30s)",
)
FLUSH_NOTICED = Wait(
    "FLUSH_NOTICED", 5, 1.0,
    "a proxy noticing on its own that its rules were flushed (iptables: canary chain monitor); "
    "after this ceiling the check triggers a sync with a change instead",
)
"""Short on purpose: kube-proxy's canary monitor polls once per syncPeriod (30 s by default), so a longer wait mostly
idles while the disruption lock holds every other check back; whether recovery needed a change is recorded, not judged."""

STREAM_GAP = Wait(
    "STREAM_GAP", 3.0, 0.1,
    "one established connection's exchanges (one every 0.1 s) across a disruption: a busy two-core machine "
    "stalling the client or the backend, a TCP retransmission (200 ms minimum RTO), a restarted proxy's first "
    "sync; not a wait but the longest gap a connection may show and still count as unbroken (the measured gap "
    "is recorded)",
)


class WaitTimeout(AssertionError):
    """A wait reached its ceiling. An AssertionError so pytest reports it as a failure, not an error."""


@dataclass
class Waited:
    wait: Wait
    what: str
    elapsed: float
    attempts: int


def wait_until(wait: Wait, condition: Callable[[], T], what: str, on_attempt: Callable[[Waited], None] | None = None) -> T:
    """Poll ``condition`` until it returns a truthy value; return that value.

    :param wait: one of this module's constants.
    :param condition: called repeatedly; exceptions count as "not yet" and the last one is reported.
    :param what: the awaited state in words, e.g. ``"Service web has a ClusterIP"``.
    :raises WaitTimeout: ``"<what> not true within <seconds>s (<NAME>: <lags>); last: <value>"``.
    """
    start = time.monotonic()
    attempts = 0
    last: object = None
    while True:
        attempts += 1
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - "not yet", reported on expiry
            value, last = None, f"{type(exc).__name__}: {exc}"
        else:
            if value:
                if on_attempt:
                    on_attempt(Waited(wait, what, time.monotonic() - start, attempts))
                return value
            last = value
        if time.monotonic() - start >= wait.seconds:
            raise WaitTimeout(
                f"{what}: not true within {wait.seconds:g}s ({wait.name}: may lag behind {wait.lags}); "
                f"{attempts} attempts, last result: {last!r}"
            )
        time.sleep(wait.poll)


def set_ceiling(name: str, seconds: float) -> None:
    """Give the wait called ``name`` another ceiling in this process (``pytest --programming-wait``)."""
    wait = globals().get(name)
    if not isinstance(wait, Wait):
        raise ValueError(f"no wait named {name!r}")
    if not seconds > 0:
        raise ValueError(f"a ceiling of {seconds:g}s never lets {name} succeed: give a positive number of seconds")
    globals()[name] = replace(wait, seconds=seconds)

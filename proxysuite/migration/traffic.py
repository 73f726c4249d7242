"""Traffic kept flowing through a migration: probes every ~100 ms from every vantage, and long-lived connections.

Two kinds of load, started before the switch and stopped after it:

* :class:`ProbeStream`: a new TCP connection (HTTP ``/hostname`` to netexec) from one vantage to one target every
  ``interval``; each attempt is an observation of the probe engine, with its start time. New connections are
  what a proxy restart can break: between the old rules going and the new ones arriving there is no DNAT.
* :class:`HeldConnection`: one TCP connection opened before the switch and kept, with a keep-alive HTTP request
  every ``interval`` (agnhost netexec is a Go HTTP/1.1 server, so the connection is reused). Established flows
  live on in conntrack with their NAT binding whatever the rules do, so they should not notice; whether they do
  is what this measures.

The disruption window of a stream is its longest run of failed attempts, from the first failure's start to the
next success's start (ms); its resolution is the interval plus the probe timeout. A held connection's window is
its longest stall: from a request's send to its reply; a connection that breaks has ``broken`` set and its window
runs to the end of the measurement.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..probes.engine import OK, ProbeRequest

if TYPE_CHECKING:
    from ..cluster.base import Vantage
    from ..workloads.jig import Target

PROBE_TIMEOUT = 0.5
"""Seconds a probe waits for connect and reply; a longer outage shows as consecutive failures."""
BATCH = 10
"""Probes per ``Vantage.run`` call: one call per second on a provider whose vantages exec into a pod."""


@dataclass
class Outage:
    start: float
    end: float
    recovered: bool
    failures: int
    outcomes: list[str]

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


def outages(points: list[tuple[float, bool, str]], until: float) -> list[Outage]:
    """Runs of failed attempts in ``(start time, ok, outcome)`` points (sorted by time); an open run ends at ``until``."""
    out: list[Outage] = []
    cur: Outage | None = None
    for t, ok, outcome in sorted(points):
        if ok:
            if cur is not None:
                cur.end, cur.recovered = t, True
                out.append(cur)
                cur = None
        elif cur is None:
            cur = Outage(t, t, False, 1, [outcome])
        else:
            cur.failures += 1
            if outcome not in cur.outcomes:
                cur.outcomes.append(outcome)
    if cur is not None:
        cur.end = until
        out.append(cur)
    return out


@dataclass
class ProbeStream:
    """New connections from one vantage to one target, every ``interval`` seconds, in a thread."""

    vantage: "Vantage"
    target: "Target"
    vantage_label: str
    target_label: str
    interval: float = 0.1
    points: list[tuple[float, bool, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"probe {self.vantage_label}->{self.target_label}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        req = ProbeRequest(self.target.host, self.target.port, self.target.proto, ask="hostname", count=BATCH,
                           timeout=PROBE_TIMEOUT, interval=self.interval, label="migration")
        while not self._stop.is_set():
            try:
                obs = self.vantage.run([req])
            except Exception as exc:  # noqa: BLE001 - a vantage that cannot run is recorded, and retried
                self.errors.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                self._stop.wait(self.interval)
                continue
            self.points += [(o.started, o.outcome == OK, o.outcome) for o in obs]

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=PROBE_TIMEOUT * BATCH + 30)

    def result(self, until: float) -> dict:
        outs = outages(self.points, until)
        worst = max(outs, key=lambda o: o.ms, default=None)
        return {"kind": "probe", "vantage": self.vantage_label, "target": self.target_label,
                "address": str(self.target), "attempts": len(self.points),
                "failed": sum(1 for _t, ok, _o in self.points if not ok), "outages": len(outs),
                "window_ms": round(worst.ms, 1) if worst else 0.0,
                "window_start": worst.start if worst else None, "recovered": worst.recovered if worst else True,
                "outcomes": worst.outcomes if worst else [], "vantage_errors": self.errors[:5]}


@dataclass
class HeldConnection:
    """One TCP connection kept open through the switch, a keep-alive HTTP request on it every ``interval``."""

    make_socket: Callable[[int, int], socket.socket]
    """``make_socket(family, type)``: a socket in the client's network namespace."""
    target: "Target"
    vantage_label: str
    target_label: str
    interval: float = 0.1
    stall_limit: float = 60.0
    """A reply later than this counts as a broken connection."""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(send time, seconds to the reply)."""
    backends: set[str] = field(default_factory=set)
    broken: str | None = None
    broken_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def open(self) -> None:
        sock = self.make_socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect((self.target.host, self.target.port))
        self._sock = sock
        self._exchange()  # a first reply proves the path before the switch

    def _exchange(self) -> None:
        assert self._sock is not None
        sent = time.time()
        self._sock.settimeout(self.stall_limit)
        self._sock.sendall(b"GET /hostname HTTP/1.1\r\nHost: proxysuite\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("the server closed the connection mid-reply")
            body += chunk
        self.samples.append((sent, time.time() - sent))
        self.backends.add(body[:length].decode(errors="replace").strip())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"held {self.vantage_label}->{self.target_label}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._exchange()
            except OSError as exc:
                self.broken, self.broken_at = f"{type(exc).__name__}: {exc}", time.time()
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.stall_limit + 5)
        if self._sock is not None:
            self._sock.close()

    def result(self, until: float) -> dict:
        worst = max(self.samples, key=lambda s: s[1], default=(None, 0.0))
        window = worst[1]
        if self.broken_at is not None:
            last = self.samples[-1][0] + self.samples[-1][1] if self.samples else self.broken_at
            window = max(window, until - last)
        return {"kind": "held", "vantage": self.vantage_label, "target": self.target_label, "address": str(self.target),
                "requests": len(self.samples), "window_ms": round(window * 1000, 1), "window_start": worst[0],
                "broken": self.broken, "backends": sorted(self.backends)}

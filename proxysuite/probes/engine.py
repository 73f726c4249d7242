"""The probe engine: send real packets to a target and record what came back.

This module is deliberately stdlib-only and self-contained: on the local
provider it runs in-process with sockets opened inside a network namespace; on
kind and existing clusters the same file is shipped into a client pod and run
there (``python3 -c <this file> '<json>'``). One implementation, every vantage
point, identical semantics.

The backends are agnhost ``netexec`` servers (upstream's e2e backend):
HTTP ``GET /hostname`` returns the pod name, ``GET /clientip`` returns the
``ip:port`` the server saw; the UDP server answers the datagrams ``hostname``
and ``clientip``. ``ask="both"`` sends both HTTP requests on one connection, so
both answers come from the same backend (one conntrack entry).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import select
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

# Outcomes, from the client's point of view.
OK = "ok"
REFUSED = "refused"  # TCP RST or ICMP port-unreachable: the proxy REJECTs (or nothing listens)
TIMEOUT = "timeout"  # no answer at all: DROP, blackhole or a dead backend
RESET = "reset"  # connection established, then reset
UNREACHABLE = "unreachable"  # ICMP host/net unreachable or no route
ERROR = "error"  # anything else (bad reply, local error)


@dataclass
class ProbeRequest:
    host: str
    port: int
    protocol: str = "tcp"
    """``tcp`` (HTTP to netexec), ``udp`` (netexec's UDP commands) or ``sctp`` (netexec's SCTP commands)."""
    ask: str = "hostname"
    """``hostname``, ``clientip``, ``both`` or ``connect`` (TCP handshake only)."""
    count: int = 1
    timeout: float = 2.0
    """Seconds for connect and for each reply."""
    interval: float = 0.0
    """Pause between requests, seconds."""
    source_port: int | None = None
    """Bind this local port (UDP affinity, conntrack checks); None lets the kernel pick."""
    label: str = ""
    """Free text carried into each observation (which scenario asked)."""
    hold: float = 0.0
    """With ``ask="both"``: seconds to keep the connection open between the two requests (drain checks)."""
    flow: bool = False
    """UDP only: a *flow*. All ``count`` datagrams (``hostname``) leave ONE socket, so they keep one source port
    and one conntrack entry, one every ``interval`` seconds; each waits up to ``timeout`` for its answer. One
    observation per datagram, ``started`` being its send time (stale-conntrack and long-lived-flow checks)."""
    flow_until: int = 0
    """With ``flow``: stop early once this many datagrams in a row were answered by a backend other than
    ``flow_from`` (0: send all ``count``)."""
    flow_from: str = ""
    """With ``flow_until``: the backend the flow is expected to leave (empty: any answer counts)."""
    stream: float = 0.0
    """Seconds of a long-lived stream (:func:`run_stream`): ``count`` connections (TCP, HTTP keep-alive) or flows
    (UDP, one source port each, from ``source_port`` up when it is set) held open, each asking ``/hostname``
    every ``interval``; one observation per exchange. 0: independent probes."""


@dataclass
class Observation:
    host: str
    port: int
    protocol: str
    outcome: str
    backend: str | None = None
    """Who answered (the backend pod's hostname)."""
    client_ip: str | None = None
    """The source address the backend saw (without port)."""
    connect_us: float | None = None
    """TCP handshake time: SYN to SYN-ACK, i.e. the first-packet round trip through the proxy."""
    total_us: float | None = None
    """Whole exchange, connect to last byte."""
    started: float = field(default_factory=time.time)
    error: str | None = None
    label: str = ""
    stream: int | None = None
    """In a long-lived stream: which of its connections this exchange went over (0 up); None for probes."""

    def to_dict(self) -> dict:
        return asdict(self)


LOCAL_ICMP_WAIT = 0.05
"""Seconds to wait for the ICMP error that a REJECT on the sender's own output path queues on the socket."""


def _locally_filtered(sock: socket.socket) -> tuple[str, str]:
    """Outcome of a send that failed with EPERM: netfilter on the sending host stopped the packet.

    Both REJECT and DROP on the output path make send() fail with EPERM. A REJECT also sends an ICMP
    port-unreachable back to the socket, over loopback, which leaves ECONNREFUSED in SO_ERROR; a DROP
    leaves nothing. Measured on veth pairs with iptables and nft rules (tests/test_probe_drop_reject.py).
    """
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err == 0:
        select.select([sock], [], [sock], LOCAL_ICMP_WAIT)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err == errno.ECONNREFUSED:
        return REFUSED, "rejected on the sending host: EPERM, then ICMP port unreachable"
    return TIMEOUT, "dropped on the sending host: EPERM and no ICMP error"


def _classify(exc: BaseException, sock: socket.socket | None = None) -> tuple[str, str]:
    """(outcome, error text) for an exception raised while probing."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TIMEOUT, text
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED, text
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return RESET, text
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EPERM):
        if sock is None:
            return ERROR, text
        return _locally_filtered(sock)
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return UNREACHABLE, text
    return ERROR, text


def _http_exchange(sock: socket.socket, host: str, path: str, reader: "_Reader") -> str:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {f'[{host}]' if ':' in host else host}\r\nUser-Agent: proxysuite\r\n\r\n".encode())
    head = reader.until(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != b"200":
        raise ValueError(f"unexpected HTTP status line {status_line[:80]!r}")
    length = None
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("reply has no Content-Length")
    return reader.exactly(length).decode(errors="replace").strip()


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("peer closed the connection")
        self.buf += chunk

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        out, _, self.buf = self.buf.partition(marker)
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _strip_port(addr: str) -> str:
    # netexec answers "ip:port" (or "[v6]:port").
    if addr.startswith("["):
        addr = addr[1:].split("]")[0]
        try:  # the canonical text (RFC 5952), so it compares equal to the vantage's own address
            return str(ipaddress.ip_address(addr))
        except ValueError:
            return addr
    return addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr


def _open(req: ProbeRequest, kind: int, make_socket) -> socket.socket:
    """A socket for ``req``: its family, timeout and (for affinity and conntrack checks) a fixed source port."""
    sock = make_socket(socket.AF_INET6 if ":" in req.host else socket.AF_INET, kind)
    try:
        sock.settimeout(req.timeout)
        if req.source_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", req.source_port))
    except BaseException:
        sock.close()
        raise
    return sock


def probe_tcp(req: ProbeRequest, make_socket=socket.socket) -> Observation:
    obs = Observation(req.host, req.port, "tcp", OK, label=req.label)
    sock = _open(req, socket.SOCK_STREAM, make_socket)
    try:
        t0 = time.perf_counter_ns()
        sock.connect((req.host, req.port))
        obs.connect_us = (time.perf_counter_ns() - t0) / 1000
        if req.ask != "connect":
            reader = _Reader(sock)
            if req.ask in ("hostname", "both"):
                obs.backend = _http_exchange(sock, req.host, "/hostname", reader)
            if req.ask == "both" and req.hold:
                time.sleep(req.hold)
            if req.ask in ("clientip", "both"):
                obs.client_ip = _strip_port(_http_exchange(sock, req.host, "/clientip", reader))
        obs.total_us = (time.perf_counter_ns() - t0) / 1000
    except Exception as exc:  # noqa: BLE001 - every failure is an observation
        obs.outcome, obs.error = _classify(exc, sock)
    finally:
        sock.close()
    return obs


def probe_udp(req: ProbeRequest, make_socket=socket.socket) -> Observation:
    obs = Observation(req.host, req.port, "udp", OK, label=req.label)
    sock = _open(req, socket.SOCK_DGRAM, make_socket)
    try:
        # A connected UDP socket turns an ICMP port-unreachable into ECONNREFUSED on recv.
        sock.connect((req.host, req.port))
        t0 = time.perf_counter_ns()
        asks = {"hostname": ["hostname"], "clientip": ["clientip"], "both": ["hostname", "clientip"]}.get(req.ask, ["hostname"])
        for what in asks:
            sock.send(what.encode())
            reply = sock.recv(65536).decode(errors="replace").strip()
            if what == "hostname":
                obs.backend = reply
            else:
                obs.client_ip = _strip_port(reply)
        obs.total_us = (time.perf_counter_ns() - t0) / 1000
    except Exception as exc:  # noqa: BLE001
        obs.outcome, obs.error = _classify(exc, sock)
    finally:
        sock.close()
    return obs


def flow_udp(req: ProbeRequest, make_socket=socket.socket) -> list[Observation]:
    """A UDP flow from one socket (see :attr:`ProbeRequest.flow`): one observation per datagram."""
    out: list[Observation] = []
    sock = _open(req, socket.SOCK_DGRAM, make_socket)
    try:
        # Connected: an ICMP port-unreachable (a REJECT) turns into ECONNREFUSED on this datagram's recv.
        sock.connect((req.host, req.port))
        begin, streak = time.monotonic(), 0
        for i in range(req.count):
            pause = begin + i * req.interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            _drain(sock)
            sock.settimeout(req.timeout)
            obs = Observation(req.host, req.port, "udp", OK, label=req.label)
            t0 = time.perf_counter_ns()
            try:
                sock.send(b"hostname")
                obs.backend = sock.recv(65536).decode(errors="replace").strip()
                obs.total_us = (time.perf_counter_ns() - t0) / 1000
            except Exception as exc:  # noqa: BLE001 - every failure is an observation
                obs.outcome, obs.error = _classify(exc, sock)
            out.append(obs)
            moved = obs.outcome == OK and obs.backend != req.flow_from
            streak = streak + 1 if moved else 0
            if req.flow_until and streak >= req.flow_until:
                break
    finally:
        sock.close()
    return out


NO_SCTP = "no SCTP sockets"
"""Prefix of the error of an SCTP probe whose vantage cannot open an SCTP socket (kernel without SCTP support,
or the sctp module not loaded); checks read it to skip with the kernel's reason."""


def probe_sctp(req: ProbeRequest, make_socket=socket.socket) -> Observation:
    """One SCTP association to netexec's SCTP server, which answers one command per association
    (``hostname`` or ``clientip``), so ``ask="both"`` costs two associations, possibly to two backends;
    the observation keeps the hostname and the client IP of the second."""
    obs = Observation(req.host, req.port, "sctp", OK, label=req.label)
    asks = {"hostname": ["hostname"], "clientip": ["clientip"], "both": ["hostname", "clientip"]}.get(req.ask, ["hostname"])
    t0 = time.perf_counter_ns()
    for what in asks:
        try:
            sock = make_socket(socket.AF_INET6 if ":" in req.host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
        except OSError as exc:
            obs.outcome, obs.error = ERROR, f"{NO_SCTP}: {exc}"
            return obs
        try:
            sock.settimeout(req.timeout)
            if req.source_port:
                sock.bind(("", req.source_port))
            c0 = time.perf_counter_ns()
            sock.connect((req.host, req.port))
            obs.connect_us = obs.connect_us or (time.perf_counter_ns() - c0) / 1000
            sock.send(what.encode())
            reply = sock.recv(1024).decode(errors="replace").strip()
            if not reply:
                raise ConnectionResetError(errno.ECONNRESET, "association closed without an answer")
            if what == "hostname":
                obs.backend = reply
            else:
                obs.client_ip = _strip_port(reply)
        except Exception as exc:  # noqa: BLE001
            obs.outcome, obs.error = _classify(exc, sock)
            return obs
        finally:
            sock.close()
    obs.total_us = (time.perf_counter_ns() - t0) / 1000
    return obs


def sctp_unsupported(make_socket=socket.socket) -> str | None:
    """Why this vantage cannot open an SCTP socket, or None when it can."""
    try:
        make_socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError as exc:
        return f"{NO_SCTP}: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails with {exc}"
    return None


def run(requests: list[ProbeRequest], make_socket=socket.socket) -> list[Observation]:
    """Run each request ``count`` times, in order, and return every observation (a stream request: its exchanges)."""
    out: list[Observation] = []
    for req in requests:
        if req.flow:
            if req.protocol != "udp":
                raise ValueError("a flow request is UDP only")
            out.extend(flow_udp(req, make_socket))
            continue
        if req.stream:
            out.extend(run_stream(req, make_socket))
            continue
        probe = {"udp": probe_udp, "sctp": probe_sctp}.get(req.protocol, probe_tcp)
        for i in range(req.count):
            if i and req.interval:
                time.sleep(req.interval)
            out.append(probe(req, make_socket))
    return out


# --- long-lived streams ----------------------------------------------------------------------------
# A stream holds connections open across a disruption and records every exchange, so the analysis can
# tell whether each connection survived (no error, one backend throughout) and how long traffic stopped
# (proxysuite.probes.analysis.streams).


def _stream_tcp(req: ProbeRequest, index: int, deadline: float, make_socket, out: list[Observation]) -> None:
    """One TCP connection, HTTP/1.1 keep-alive to netexec: ``GET /hostname`` every ``interval`` until ``deadline``.

    The first failure ends the connection (after a reset or a stalled reply the byte stream is no longer
    trustworthy); reconnecting would hide exactly what a stream is for.
    """
    port = req.source_port + index if req.source_port else None
    sock = None
    try:
        sock = _open(ProbeRequest(req.host, req.port, timeout=req.timeout, source_port=port), socket.SOCK_STREAM, make_socket)
        sock.connect((req.host, req.port))
        reader = _Reader(sock)
        while True:
            obs = Observation(req.host, req.port, "tcp", OK, label=req.label, stream=index)
            t0 = time.perf_counter_ns()
            try:
                obs.backend = _http_exchange(sock, req.host, "/hostname", reader)
                obs.total_us = (time.perf_counter_ns() - t0) / 1000
            except Exception as exc:  # noqa: BLE001 - every failure is an observation
                obs.outcome, obs.error = _classify(exc, sock)
                out.append(obs)
                return
            out.append(obs)
            if not _pace(req, t0, deadline):
                return
    except Exception as exc:  # noqa: BLE001 - the connection could not even be opened
        obs = Observation(req.host, req.port, "tcp", OK, label=req.label, stream=index)
        obs.outcome, obs.error = _classify(exc, sock)
        out.append(obs)
    finally:
        if sock is not None:
            sock.close()


def _stream_udp(req: ProbeRequest, index: int, deadline: float, make_socket, out: list[Observation]) -> None:
    """One UDP flow from a fixed source port: the datagram ``hostname`` every ``interval`` until ``deadline``.

    A lost answer is an observation (timeout) and the flow goes on from the same port, as a client with a
    long-lived UDP socket (DNS, statsd, a game) would; a late answer is discarded before the next send.
    """
    port = req.source_port + index if req.source_port else None
    try:
        sock = _open(ProbeRequest(req.host, req.port, protocol="udp", timeout=req.timeout, source_port=port),
                     socket.SOCK_DGRAM, make_socket)
    except Exception as exc:  # noqa: BLE001 - e.g. the source port is taken
        out.append(Observation(req.host, req.port, "udp", ERROR, error=f"{type(exc).__name__}: {exc}", label=req.label, stream=index))
        return
    try:
        sock.connect((req.host, req.port))
        while True:
            _drain(sock)
            obs = Observation(req.host, req.port, "udp", OK, label=req.label, stream=index)
            t0 = time.perf_counter_ns()
            try:
                sock.send(b"hostname")
                obs.backend = sock.recv(65536).decode(errors="replace").strip()
                obs.total_us = (time.perf_counter_ns() - t0) / 1000
            except Exception as exc:  # noqa: BLE001
                obs.outcome, obs.error = _classify(exc, sock)
            out.append(obs)
            if not _pace(req, t0, deadline):
                return
    finally:
        sock.close()


def _pace(req: ProbeRequest, t0: int, deadline: float) -> bool:
    """Wait out the rest of this exchange's ``interval`` (started at ``t0``, perf_counter_ns); False when the next
    exchange would start at or after the stream's ``deadline``."""
    pause = req.interval - (time.perf_counter_ns() - t0) / 1e9
    if time.time() + max(pause, 0) >= deadline:
        return False
    if pause > 0:
        time.sleep(pause)
    return True


def _drain(sock: socket.socket) -> None:
    """Discard answers that arrived after their exchange's wait ended, and queued ICMP errors (they belong to
    earlier datagrams), so the next exchange is judged on its own answer only."""
    while select.select([sock], [], [], 0)[0]:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue


def run_stream(req: ProbeRequest, make_socket=socket.socket) -> list[Observation]:
    """``req.count`` long-lived connections (or UDP flows) at once for ``req.stream`` seconds; every exchange, in time order.

    Each connection runs in its own thread, so one stalled connection does not delay the others' exchanges.
    """
    deadline = time.time() + req.stream
    outs: list[list[Observation]] = [[] for _ in range(max(req.count, 1))]
    body = _stream_udp if req.protocol == "udp" else _stream_tcp
    threads = [threading.Thread(target=body, args=(req, i, deadline, make_socket, outs[i]), daemon=True)
               for i in range(len(outs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(req.stream + 3 * req.timeout + 5)
    return sorted((o for out in outs for o in out), key=lambda o: o.started)


def http_get(host: str, port: int, path: str, timeout: float = 3.0, make_socket=socket.socket) -> tuple[int, str]:
    """Plain HTTP GET returning (status, body); for proxy health and metrics endpoints.

    Any status is returned (healthz answers 503 by design); connection failures raise.
    """
    sock = make_socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {f'[{host}]' if ':' in host else host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n", 1)[0].split()[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body.decode(errors="replace")


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def main(argv: list[str]) -> int:
    """Entry point inside a remote vantage: argv[1] is a JSON list of ProbeRequest dicts."""
    payload = json.loads(argv[1])
    if isinstance(payload, dict) and payload.get("http_get"):
        status, body = http_get(**payload["http_get"])
        print(json.dumps({"status": status, "body": body}))
        return 0
    for obs in run([ProbeRequest(**r) for r in payload]):
        print(json.dumps(obs.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The probe engine against a real agnhost netexec on loopback: what each outcome and field means."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from proxysuite.cluster.local import components
from proxysuite.probes.engine import ERROR, NO_SCTP, OK, REFUSED, ProbeRequest, http_get, run, sctp_unsupported


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def netexec():
    agnhost = components.ensure(progress=lambda m: None)["agnhost"]
    http, udp = _free_port(), _free_port()
    proc = subprocess.Popen([str(agnhost), "netexec", f"--http-port={http}", f"--udp-port={udp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and run([ProbeRequest("127.0.0.1", http, ask="connect", timeout=0.5)])[0].outcome != OK:
        time.sleep(0.1)
    yield {"http": http, "udp": udp}
    proc.kill()
    proc.wait()


def test_tcp_both_answers_come_from_one_connection(netexec):
    [obs] = run([ProbeRequest("127.0.0.1", netexec["http"], ask="both", hold=0.2)])
    assert obs.outcome == OK and obs.backend == socket.gethostname() and obs.client_ip == "127.0.0.1"
    assert 0 < obs.connect_us < obs.total_us and obs.total_us >= 200_000, "hold keeps the connection open between the requests"


def test_udp_and_fixed_source_port(netexec):
    port = _free_port()
    obs = run([ProbeRequest("127.0.0.1", netexec["udp"], protocol="udp", ask="both", count=2),
               ProbeRequest("127.0.0.1", netexec["http"], ask="clientip", source_port=port)])
    assert [o.outcome for o in obs] == [OK, OK, OK]
    assert obs[0].backend == socket.gethostname() and obs[0].client_ip == "127.0.0.1"


def test_refusals_are_refused_not_errors():
    closed = _free_port()
    tcp, udp = run([ProbeRequest("127.0.0.1", closed, ask="connect"), ProbeRequest("127.0.0.1", closed, protocol="udp")])
    assert (tcp.outcome, udp.outcome) == (REFUSED, REFUSED), (tcp.error, udp.error)


def test_http_get_returns_any_status(netexec):
    assert http_get("127.0.0.1", netexec["http"], "/healthz")[0] == 200
    assert http_get("127.0.0.1", netexec["http"], "/echo?msg=hi") == (200, "hi")
    assert http_get("127.0.0.1", netexec["http"], "/redirect?location=/x")[0] == 302


def test_a_udp_stream_keeps_one_source_port_and_times_each_datagram(netexec):
    obs = run([ProbeRequest("127.0.0.1", netexec["udp"], protocol="udp", count=5, interval=0.05, timeout=0.04,
                            flow=True, source_port=_free_port())])
    assert [o.outcome for o in obs] == [OK] * 5 and {o.backend for o in obs} == {socket.gethostname()}
    gaps = [b.started - a.started for a, b in zip(obs, obs[1:])]
    assert all(0.04 < g < 0.2 for g in gaps), gaps


class _Switching:
    """A UDP server that answers ``old`` to its first datagrams, then stays silent, then answers ``new``;
    it records every sender, so a test sees whether the stream kept its source port."""

    def __init__(self, old: int, silent: int):
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.senders: list = []
        self.old, self.silent = old, silent
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(100)
            except OSError:
                return
            self.senders.append(peer)
            n = len(self.senders)
            if n <= self.old:
                self.sock.sendto(b"old", peer)
            elif n > self.old + self.silent:
                self.sock.sendto(b"new", peer)


def test_a_udp_stream_stops_once_it_has_moved():
    server = _Switching(old=3, silent=2)
    try:
        obs = run([ProbeRequest("127.0.0.1", server.port, protocol="udp", count=50, interval=0.02, timeout=0.015,
                                flow=True, flow_until=4, flow_from="old")])
    finally:
        server.sock.close()
    assert [o.backend for o in obs] == ["old"] * 3 + [None] * 2 + ["new"] * 4
    assert [o.outcome for o in obs[3:5]] == ["timeout"] * 2
    assert len(set(server.senders)) == 1, "every datagram of a stream leaves the same socket"


def test_a_udp_stream_to_nothing_is_refused_datagram_by_datagram():
    obs = run([ProbeRequest("127.0.0.1", _free_port(), protocol="udp", count=3, interval=0.02, timeout=0.015, flow=True)])
    assert [o.outcome for o in obs] == [REFUSED] * 3


NO_SCTP_HERE = sctp_unsupported()


@pytest.mark.skipif(NO_SCTP_HERE is None, reason="this kernel has SCTP sockets (the test below runs instead)")
def test_sctp_without_kernel_support_is_an_error_that_says_why():
    [obs] = run([ProbeRequest("127.0.0.1", 9, protocol="sctp", timeout=0.5)])
    assert obs.outcome == ERROR and obs.error.startswith(NO_SCTP), obs.error
    assert NO_SCTP_HERE.startswith(NO_SCTP) and "IPPROTO_SCTP" in NO_SCTP_HERE


@pytest.mark.skipif(NO_SCTP_HERE is not None, reason=f"{NO_SCTP_HERE}")
def test_sctp_against_netexec():
    agnhost = components.ensure(progress=lambda m: None)["agnhost"]
    http, sctp = _free_port(), _free_port()
    proc = subprocess.Popen([str(agnhost), "netexec", f"--http-port={http}", f"--sctp-port={sctp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and run([ProbeRequest("127.0.0.1", sctp, "sctp", timeout=0.5)])[0].outcome != OK:
            time.sleep(0.1)
        # netexec's SCTP server answers one command per association: "both" costs two associations.
        [obs] = run([ProbeRequest("127.0.0.1", sctp, protocol="sctp", ask="both")])
        assert obs.outcome == OK and obs.backend == socket.gethostname() and obs.client_ip == "127.0.0.1", obs
        [closed] = run([ProbeRequest("127.0.0.1", _free_port(), protocol="sctp", timeout=1.0)])
        assert closed.outcome == REFUSED, closed.error
    finally:
        proc.kill()
        proc.wait()


def test_a_stream_holds_its_connections_and_records_every_exchange(netexec):
    from proxysuite.probes.analysis import streams

    tcp_port, udp_port = _free_port(), _free_port()
    t0 = time.time()
    obs = run([ProbeRequest("127.0.0.1", netexec["http"], count=2, interval=0.1, stream=1.0, source_port=tcp_port),
               ProbeRequest("127.0.0.1", netexec["udp"], "udp", count=1, interval=0.1, stream=0.5, source_port=udp_port)])
    assert time.time() - t0 < 3
    tcp, udp = [o for o in obs if o.protocol == "tcp"], [o for o in obs if o.protocol == "udp"]
    assert {o.stream for o in tcp} == {0, 1} and {o.stream for o in udp} == {0}
    assert all(o.outcome == OK and o.backend == socket.gethostname() for o in obs), obs
    assert 8 <= sum(o.stream == 0 for o in tcp) <= 11 and 4 <= len(udp) <= 6
    summary = streams(tcp)
    assert [s.survived for s in summary] == [True, True] and all(50 < s.longest_gap_ms < 500 for s in summary), summary


def test_a_stream_that_breaks_is_not_survived(netexec):
    """The backend goes away mid-stream: the TCP connection ends with the failure, the gap runs to the stream's end."""
    from proxysuite.probes.analysis import streams

    agnhost = components.ensure(progress=lambda m: None)["agnhost"]
    port = _free_port()
    proc = subprocess.Popen([str(agnhost), "netexec", f"--http-port={port}", f"--udp-port={_free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and run([ProbeRequest("127.0.0.1", port, ask="connect", timeout=0.5)])[0].outcome != OK:
            time.sleep(0.1)
        import threading
        threading.Timer(0.5, proc.kill).start()
        obs = run([ProbeRequest("127.0.0.1", port, count=1, interval=0.1, stream=1.5, timeout=1.0)])
    finally:
        proc.kill()
        proc.wait()
    [s] = streams(obs)
    assert not s.survived and s.broken and s.answered >= 3, s
    assert obs[-1].outcome != OK

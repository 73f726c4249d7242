"""The probe engine against a real agnhost netexec on loopback: what each outcome and field means."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from proxysuite.cluster.local import components
from proxysuite.probes.engine import OK, REFUSED, ProbeRequest, http_get, run


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

"""REJECT and DROP told apart by the probe engine, with real rules of each kind on every path.

Three namespaces made for this test: a client, a router and a server::

    client 10.99.1.1 ── 10.99.1.254 router 10.99.2.254 ── 10.99.2.1 server (listens on TCP and UDP)

A rule on the client's OUTPUT chain is what a node vantage meets (kube-proxy filters locally generated
packets there), one on the router's FORWARD chain is what a pod vantage meets on its node, one on the
server's INPUT chain is what an external client meets at a node's own address. Each path is tried with
iptables and with nft rules, REJECT and DROP, TCP and UDP; the engine must say REFUSED for every
REJECT and TIMEOUT for every DROP. (The local-output case is the subtle one: send() fails with EPERM for
both, and only a REJECT leaves an ICMP error on the socket.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid

import pytest

from proxysuite.cluster.local import netns
from proxysuite.probes.engine import OK, REFUSED, TIMEOUT, ProbeRequest, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")

SERVER = "10.99.2.1"
PORT = 8080
CHAIN = {"sender": ("client", "OUTPUT", "output"), "forward": ("router", "FORWARD", "forward"),
         "input": ("server", "INPUT", "input")}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def topo():
    run_id = "t" + uuid.uuid4().hex[:8]
    names = {role: netns.name_for(run_id, role) for role in ("client", "router", "server")}
    for n in names.values():
        netns.add(n)
    stop = threading.Event()
    try:
        c, r, s = names["client"], names["router"], names["server"]
        _ip("link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "r1", "netns", r)
        _ip("link", "add", "s0", "netns", s, "type", "veth", "peer", "name", "r2", "netns", r)
        for ns, dev, addr in ((c, "c0", "10.99.1.1/24"), (r, "r1", "10.99.1.254/24"), (r, "r2", "10.99.2.254/24"),
                              (s, "s0", "10.99.2.1/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        for ns in names.values():
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", c, "route", "add", "default", "via", "10.99.1.254")
        _ip("-n", s, "route", "add", "default", "via", "10.99.2.254")
        netns.sysctl(r, "net.ipv4.ip_forward", "1")
        for ns in names.values():  # these namespaces' own settings, as the local provider's nodes have
            netns.sysctl(ns, "net.ipv4.icmp_ratelimit", "0")
        _serve(s, stop)
        yield names
    finally:
        stop.set()
        for n in names.values():
            for pid in netns.pids_in(n):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            netns.delete(n)


def _serve(ns: str, stop: threading.Event) -> None:
    """A TCP listener (the handshake is enough) and a UDP server answering 'hostname', inside ``ns``."""
    make = netns.socket_factory(ns)
    tcp = make(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((SERVER, PORT))
    tcp.listen(64)
    udp = make(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((SERVER, PORT))
    udp.settimeout(0.2)

    def answer_udp():
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(100)
            except socket.timeout:
                continue
            udp.sendto(b"server" if data == b"hostname" else b"10.99.1.1:1", peer)
        udp.close()
        tcp.close()

    threading.Thread(target=answer_udp, daemon=True).start()


def _rule(names: dict, tool: str, path: str, proto: str, action: str) -> tuple[str, list[str], list[str]]:
    """(namespace, add argv, delete argv) for one filtering rule."""
    role, chain, hook = CHAIN[path]
    ns = names[role]
    if tool == "iptables":
        spec = [chain, "-d", SERVER, "-p", proto, "--dport", str(PORT), "-j", action.upper()]
        return ns, ["iptables", "-A", *spec], ["iptables", "-D", *spec]
    add = (f"add table ip pstest\nadd chain ip pstest c {{ type filter hook {hook} priority 0 ; }}\n"
           f"add rule ip pstest c ip daddr {SERVER} {proto} dport {PORT} {action.lower()}\n")
    return ns, ["nft", "-f", "-", add], ["nft", "delete", "table", "ip", "pstest"]


def _probe(names: dict, proto: str) -> list:
    ask = "connect" if proto == "tcp" else "hostname"
    return run([ProbeRequest(SERVER, PORT, proto, ask=ask, count=3, timeout=0.5)], make_socket=netns.socket_factory(names["client"]))


def _apply(ns: str, argv: list[str]) -> None:
    if argv[0] == "nft":
        subprocess.run(netns.exec_argv(ns, argv[:3]), input=argv[3], check=True, capture_output=True, text=True)
    else:
        netns.run(ns, argv)


def test_without_rules_every_probe_is_answered(topo):
    for proto in ("tcp", "udp"):
        assert {o.outcome for o in _probe(topo, proto)} == {OK}, proto


@pytest.mark.parametrize("tool", ["iptables", "nft"])
@pytest.mark.parametrize("path", list(CHAIN))
@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("action,expected", [("reject", REFUSED), ("drop", TIMEOUT)])
def test_reject_is_refused_and_drop_is_silence(topo, tool, path, proto, action, expected):
    ns, add, delete = _rule(topo, tool, path, proto, action)
    _apply(ns, add)
    try:
        obs = _probe(topo, proto)
    finally:
        netns.run(ns, delete)
    assert [o.outcome for o in obs] == [expected] * len(obs), [(o.outcome, o.error) for o in obs]

"""The kind provider's LoadBalancer pool and the guard routes of the suite engine's namespace.

The guard test builds three throwaway namespaces shaped like a kind node, the engine's namespace (the
``kind`` network's gateway) and whatever might lie beyond it, and sends real packets: without the guard the
gateway forwards a packet for an unallocated Service IP onwards; with it that packet is dropped at the
gateway, silently, so a TCP connect still times out (what the catalogue's TIMEOUT rows expect).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import subprocess

import pytest

from proxysuite.cluster.kindsetup import lb
from proxysuite.cluster.local import netns
from proxysuite.errors import SuiteError


def test_the_pool_is_the_top_of_the_kind_network():
    assert lb.pool_for("172.18.0.0/16") == "172.18.255.0/24"
    assert lb.pool_for("172.18.0.0/24") == "172.18.0.128/25"  # a small network: its upper half
    assert lb.pool_for("10.0.0.0/8") == "10.255.255.0/24"
    with pytest.raises(SuiteError, match="not IPv4"):
        lb.pool_for("fc00:f853:ccd:e793::/64")
    with pytest.raises(SuiteError, match="too small"):
        lb.pool_for("172.18.0.0/30")


def test_guard_ranges_cover_services_pods_the_pool_and_the_external_ip_ranges():
    assert lb.guard_cidrs(["10.96.0.0/16", " fd00:10:96::/112"], ["10.244.0.0/16"], "172.18.255.0/24") == [
        "10.96.0.0/16", "fd00:10:96::/112", "10.244.0.0/16", "172.18.255.0/24", lb.EXTERNAL_IP_CIDR, lb.EXTERNAL_IP_TEST_RANGE]
    assert lb.guard_cidrs(["10.96.0.1/16"], [], None) == ["10.96.0.0/16", lb.EXTERNAL_IP_CIDR, lb.EXTERNAL_IP_TEST_RANGE]


def test_the_external_ip_range_goes_to_the_first_worker_and_clashes_with_nothing():
    taken = ["10.96.0.0/16", "fd00:10:96::/112", "10.244.0.0/16", "172.18.255.0/24"]
    assert lb.external_ip_route(lb.EXTERNAL_IP_CIDR, ["172.18.0.3", "172.18.0.4"], "172.18.0.0/16", taken) == (
        "198.51.100.0/24", "172.18.0.3")
    assert lb.external_ip_route("198.51.100.7/24", ["172.18.0.4"], "172.18.0.0/16", []) == ("198.51.100.0/24", "172.18.0.4")
    # The suite's default ranges must never clash with kind's own (a clash would send probes on-link or into a pod).
    for fixed in (lb.EXTERNAL_IP_TEST_RANGE, "10.96.0.0/12", "10.244.0.0/16", "172.16.0.0/12"):
        assert not ipaddress.ip_network(lb.EXTERNAL_IP_CIDR).overlaps(ipaddress.ip_network(fixed))
    with pytest.raises(SuiteError, match=r"overlaps the kind network \(198\.51\.0\.0/16\)"):
        lb.external_ip_route(lb.EXTERNAL_IP_CIDR, ["198.51.0.3"], "198.51.0.0/16", [])
    with pytest.raises(SuiteError, match=r"overlaps a range of the cluster \(198\.51\.100\.0/25\)"):
        lb.external_ip_route(lb.EXTERNAL_IP_CIDR, ["172.18.0.3"], "172.18.0.0/16", ["fd00::/64", "198.51.100.0/25"])
    with pytest.raises(SuiteError, match="no node to route"):
        lb.external_ip_route(lb.EXTERNAL_IP_CIDR, [], "172.18.0.0/16", [])
    with pytest.raises(SuiteError, match="not IPv4"):
        lb.external_ip_route("fd00:198::/64", ["172.18.0.3"], "172.18.0.0/16", [])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


BEYOND_LOCAL = ("10.96.0.0/16", "10.97.0.0/16", "10.244.0.0/16", "172.18.255.0/24", "198.51.100.0/24", "203.0.113.0/24")


class Beyond:
    """A UDP socket in the namespace beyond the gateway, which holds every address probed here (``local``
    routes): what it receives is exactly what left the gateway."""

    def __init__(self, ns_name: str):
        self.sock = netns.socket_factory(ns_name)(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 9))
        self.sock.settimeout(0.5)

    def received(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(100).decode())
            except TimeoutError:
                return out


@pytest.fixture
def topology():
    """node (10.99.0.2) -- gw (10.99.0.1 | 10.98.0.1, forwarding, default route onwards) -- beyond (10.98.0.2)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    rid = secrets.token_hex(3)
    names = {role: netns.name_for(rid, f"guard-{role}") for role in ("node", "gw", "beyond")}
    try:
        for name in names.values():
            netns.add(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", names["gw"], "link", "add", "tonode", "type", "veth", "peer", "name", "eth0", "netns", names["node"])
        _ip("-n", names["gw"], "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", names["beyond"])
        for ns_name, ifname, addr in ((names["node"], "eth0", "10.99.0.2/24"), (names["gw"], "tonode", "10.99.0.1/24"),
                                      (names["gw"], "up0", "10.98.0.1/24"), (names["beyond"], "eth0", "10.98.0.2/24")):
            _ip("-n", ns_name, "addr", "add", addr, "dev", ifname)
            _ip("-n", ns_name, "link", "set", ifname, "up")
        _ip("-n", names["node"], "route", "add", "default", "via", "10.99.0.1")
        _ip("-n", names["gw"], "route", "add", "default", "via", "10.98.0.2")
        _ip("-n", names["beyond"], "route", "add", "10.99.0.0/24", "via", "10.98.0.1")
        for cidr in BEYOND_LOCAL:
            _ip("-n", names["beyond"], "route", "add", "local", cidr, "dev", "lo")
        netns.sysctl(names["gw"], "net.ipv4.ip_forward", "1")
        yield names
    finally:
        for name in names.values():
            netns.delete(name)


def _send(ns_name: str, dst: str) -> None:
    make = netns.socket_factory(ns_name)
    with make(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(dst.encode(), (dst, 9))


def test_guard_routes_drop_probes_for_cluster_ranges_at_the_gateway(topology):
    node, gw = topology["node"], topology["gw"]
    beyond = Beyond(topology["beyond"])
    service_ip = "10.96.7.7"
    _send(node, service_ip)
    assert beyond.received() == [service_ip], "without the guard the gateway forwards it onwards (the set-up works)"

    installed = lb.install_blackholes(gw, lb.guard_cidrs(["10.96.0.0/16"], ["10.244.0.0/16"], "172.18.255.0/24"))
    assert lb.install_blackholes(gw, installed) == installed  # idempotent: a reused engine gets them again
    assert sorted(lb.blackholes(gw)) == sorted(installed)
    for dst in (service_ip, "10.244.3.3", "172.18.255.9", "198.51.100.5", "203.0.113.5"):
        _send(node, dst)
    make = netns.socket_factory(node)
    with make(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        with pytest.raises(TimeoutError):  # dropped silently: still a TIMEOUT, not a refusal or an error
            s.connect((service_ip, 80))
    _send(node, "10.97.0.1")  # not a guarded range: still forwarded, so the guard is no blanket drop
    assert beyond.received() == ["10.97.0.1"], "a guarded range left the gateway"
    beyond.sock.close()


def test_cluster_ranges_come_from_kubeadms_cluster_configuration():
    from proxysuite.cluster import kind

    cc = "networking:\n  serviceSubnet: 10.96.0.0/16,fd00:10:96::/112\n  podSubnet: 10.244.0.0/16\n"
    assert kind.cluster_cidrs(lambda *a: {"data": {"ClusterConfiguration": cc}}) == (
        ["10.96.0.0/16", "fd00:10:96::/112"], ["10.244.0.0/16"])
    # not a kubeadm cluster: kind's default Service range, no pod range
    assert kind.cluster_cidrs(lambda *a: {}) == (["10.96.0.0/16"], [])


def test_ip_mode_proxy_dnat_works_in_a_namespace_named_by_path(topology):
    """On kind the controller gets the external client's namespace as ``/proc/PID/ns/net``, a path that
    ``ip netns exec`` refuses; the ipMode Proxy DNAT must still be written there and rewrite real packets."""
    from proxysuite.cluster.local.lb import Controller

    node, gw = topology["node"], topology["gw"]
    path = f"/var/run/netns/{node}"
    assert os.path.exists(path)
    listener = netns.socket_factory(gw)(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("10.99.0.1", 30080))
    listener.listen(1)
    listener.settimeout(3)
    ctl = Controller(None, "172.18.255.0/24", path, ["10.99.0.1"])
    ctl._program_proxied([("172.18.255.1", "tcp", 80, "10.99.0.1", 30080)])
    assert ctl.proxied is not None, "the DNAT table was not written"
    with netns.socket_factory(node)(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(("172.18.255.1", 80))  # the VIP:port, rewritten on the output path to the "NodePort"
        conn, peer = listener.accept()
        assert peer[0] == "10.99.0.2"
        conn.close()
    listener.close()

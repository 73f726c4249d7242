"""The wires of a local cluster: a fabric bridge and the namespaces plugged into it.

::

      cp (apiserver, etcd, kcm, scheduler)  .1        ext (client outside the cluster)  .200
               \\                                        /
                +------ br0 in netns "fabric" ---------+
               /                 |
      node-1 .11           node-2 .12 ...     each node: kube-proxy, pods on routed /32 veths

With ``--ip-family ipv6`` or ``dual`` every member also gets the same host index in the
IPv6 fabric range (``fd00:10:200::b`` for node-1), pods a routed /128 from their node's /64,
and the same routes exist per family. IPv4 stays on the fabric either way: the suite's own
clients (node agents, kube-proxy's kubeconfig) reach the control plane over it.

Nodes route to each other's pod CIDRs, the control plane routes to every pod
CIDR (pod → ``kubernetes`` Service is not masqueraded), and nodes have a
default route via the control plane: the route lookup for a locally generated
packet to a ClusterIP happens before OUTPUT DNAT, so without some route to the
service range a node could not reach its own ClusterIPs.
"""

from __future__ import annotations

import ipaddress
import socket

from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from . import netns
from .state import ClusterState, NodeState

FABRIC, CP, EXT = "fabric", "cp", "ext"


def _plug(st: ClusterState, member_ns: str, fabric_if: str, address: str, prefixlen: int, address6: str = "") -> None:
    fabric_ns = netns.name_for(st.run_id, FABRIC)
    with netns.ipr(fabric_ns) as ns:
        if not ns.link_lookup(ifname=fabric_if):
            ns.link("add", ifname=fabric_if, kind="veth", peer=f"{fabric_if}-p")
        br = ns.link_lookup(ifname="br0")[0]
        idx = ns.link_lookup(ifname=fabric_if)[0]
        ns.link("set", index=idx, master=br, state="up")
        peer = ns.link_lookup(ifname=f"{fabric_if}-p")
        if peer:
            ns.link("set", index=peer[0], net_ns_fd=member_ns)
    with netns.ipr(member_ns) as ns:
        tmp = ns.link_lookup(ifname=f"{fabric_if}-p")
        if tmp:
            ns.link("set", index=tmp[0], ifname="eth0")
        eth0 = ns.link_lookup(ifname="eth0")[0]
        lo = ns.link_lookup(ifname="lo")[0]
        ns.link("set", index=lo, state="up")
        if not any(a.get_attr("IFA_ADDRESS") == address for a in ns.get_addr(index=eth0)):
            ns.addr("add", index=eth0, address=address, prefixlen=prefixlen)
        if address6 and not any(a.get_attr("IFA_ADDRESS") == address6 for a in ns.get_addr(index=eth0)):
            # nodad: a tentative address (DAD takes about a second) cannot be a source or be answered yet.
            ns.addr("add", index=eth0, address=address6, prefixlen=ipaddress.ip_network(st.addressing.fabric_cidr6).prefixlen,
                    flags=IFA_F_NODAD)
        ns.link("set", index=eth0, state="up")


def _route(ns_name: str, dst: str, gateway: str) -> None:
    with netns.ipr(ns_name) as ns:
        if ":" in gateway:
            ns.route("replace", dst="::/0" if dst == "default" else dst, gateway=gateway, family=socket.AF_INET6)
        else:
            ns.route("replace", dst=dst, gateway=gateway)


def _ipv6_sysctls(ns_name: str, router: bool = False) -> None:
    """Per-namespace IPv6 settings (never the root namespace's): no DAD; on a node (router), forwarding and no
    ICMPv6 rate limit, as for IPv4 below."""
    netns.sysctl(ns_name, "net.ipv6.conf.all.disable_ipv6", "0")
    netns.sysctl(ns_name, "net.ipv6.conf.default.accept_dad", "0")
    netns.sysctl(ns_name, "net.ipv6.conf.all.accept_dad", "0")
    if router:
        netns.sysctl(ns_name, "net.ipv6.conf.all.forwarding", "1")
        # ICMPv6 errors are limited per peer too (net.ipv6.icmp.ratelimit, 1000 ms); same reasoning as the IPv4
        # limit in build(). (Why an IPv6 TCP rejection still takes 1 s here: test_no_endpoints.ODD_TIMEOUT.)
        netns.sysctl(ns_name, "net.ipv6.icmp.ratelimit", "0")


def build(st: ClusterState, node_count: int) -> None:
    """Create every namespace and wire; safe to call again on a half-built cluster."""
    a = st.addressing
    prefixlen = ipaddress.ip_network(a.fabric_cidr).prefixlen
    fabric_ns = netns.name_for(st.run_id, FABRIC)
    netns.add(fabric_ns)
    st.netns = [fabric_ns]
    with netns.ipr(fabric_ns) as ns:
        if not ns.link_lookup(ifname="br0"):
            ns.link("add", ifname="br0", kind="bridge")
        ns.link("set", index=ns.link_lookup(ifname="br0")[0], state="up")
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    v6 = "ipv6" in st.families
    fams = st.families
    cp_ns = netns.name_for(st.run_id, CP)
    netns.add(cp_ns)
    st.netns.append(cp_ns)
    if v6:
        _ipv6_sysctls(cp_ns)
    _plug(st, cp_ns, "cp", a.cp_ip, prefixlen, a.cp_ip6 if v6 else "")
    if v6:
        # The control plane is where the nodes' default routes end, and it must swallow what it cannot deliver
        # in both families alike. An IPv4 router with forwarding off drops such a packet silently; IPv6 answers
        # "no route" (ICMPv6 unreachable), so an untranslated packet to a cluster IP would be UNREACHABLE over IPv6
        # and TIMEOUT over IPv4 (seen on the iptables wrong-port rows). A blackhole default makes IPv6 silent too.
        with netns.ipr(cp_ns) as ns:
            ns.route("replace", dst="::/0", type="blackhole", family=socket.AF_INET6)

    st.nodes = []
    for i in range(1, node_count + 1):
        name = f"node-{i}"
        node_ns = netns.name_for(st.run_id, name)
        netns.add(node_ns)
        st.netns.append(node_ns)
        pod_cidr = a.node_pod_cidr(i)
        gw = str(ipaddress.ip_network(pod_cidr)[1])
        node = NodeState(name=name, ip=a.node_ip(i), pod_cidr=pod_cidr, gateway=gw, netns=node_ns)
        if fams != ("ipv4",):
            node.internal_ips, node.pod_cidrs = a.node_ips(i, fams), a.node_pod_cidrs(i, fams)
        if v6:
            node.ip6, node.pod_cidr6 = a.node_ip6(i), a.node_pod_cidr6(i)
            node.gateway6 = str(ipaddress.ip_network(node.pod_cidr6)[1])
            _ipv6_sysctls(node_ns, router=True)
        st.nodes.append(node)
        _plug(st, node_ns, f"n{i}", a.node_ip(i), prefixlen, node.ip6)
        netns.sysctl(node_ns, "net.ipv4.ip_forward", "1")
        netns.sysctl(node_ns, "net.ipv4.conf.all.rp_filter", "0")
        netns.sysctl(node_ns, "net.ipv4.conf.default.rp_filter", "0")
        # A REJECT answers with an ICMP error, which the kernel rate-limits per destination (1/s by default):
        # probes that fire several rejected connections a second would see silence and read it as DROP.
        netns.sysctl(node_ns, "net.ipv4.icmp_ratelimit", "0")
        netns.sysctl(node_ns, "net.ipv4.icmp_msgs_per_sec", "100000")

    ext_ns = netns.name_for(st.run_id, EXT)
    netns.add(ext_ns)
    st.netns.append(ext_ns)
    if v6:
        _ipv6_sysctls(ext_ns)
    _plug(st, ext_ns, "ext", a.ext_ip, prefixlen, a.ext_ip6 if v6 else "")

    for node in st.nodes:
        _route(cp_ns, node.pod_cidr, node.ip)
        _route(node.netns, "default", a.cp_ip)
        for other in st.nodes:
            if other.name != node.name:
                _route(node.netns, other.pod_cidr, other.ip)
        if v6:
            _route(cp_ns, node.pod_cidr6, node.ip6)
            _route(node.netns, "default", a.cp_ip6)
            for other in st.nodes:
                if other.name != node.name:
                    _route(node.netns, other.pod_cidr6, other.ip6)
    # Service externalIPs are routed by the "outside world" to the first node, as a router would.
    if st.nodes:
        _route(ext_ns, a.external_ips, st.nodes[0].ip)
        if v6:
            _route(ext_ns, a.external_ips6, st.nodes[0].ip6)


def teardown_namespaces(st: ClusterState) -> list[str]:
    """Kill whatever still runs in the run's namespaces and delete them; returns what was removed."""
    from . import procs

    removed = []
    names = [n for n in netns.listing() if n.startswith(st.netns_prefix)]
    # Pods first, then nodes, the external client, the control plane and the fabric last.
    order = sorted(names, key=lambda n: (0 if "-pod-" in n else 1 if "-node-" in n else 2 if n.endswith("-ext") else 3 if n.endswith("-cp") else 4))
    for name in order:
        procs.kill_all(netns.pids_in(name))
        netns.delete(name)
        removed.append(name)
    return removed

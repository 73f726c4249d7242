"""IP families: what ``--ip-family`` means, and the small address helpers every layer shares.

``--ip-family ipv4`` (the default) is a single-stack IPv4 cluster, ``ipv6`` a single-stack
IPv6 one, ``dual`` a dual-stack cluster whose primary family is IPv4 (the first entry of
every list: Service CIDRs, node InternalIPs, pod IPs, a PreferDualStack Service's
``clusterIPs``), as ``kind``'s ``networking.ipFamily: dual`` is.

Family names are the suite's lower-case ``ipv4`` / ``ipv6``; :func:`k8s_name` gives the
API's ``IPv4`` / ``IPv6`` (``spec.ipFamilies``).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from .errors import SuiteError

CHOICES = ("ipv4", "ipv6", "dual")
"""Values of ``--ip-family``."""
FAMILIES = ("ipv4", "ipv6")


def check_choice(value: str) -> str:
    if value not in CHOICES:
        raise SuiteError(f"--ip-family {value!r} is not one of {', '.join(CHOICES)}", "pass --ip-family ipv4|ipv6|dual")
    return value


def families_of(choice: str) -> tuple[str, ...]:
    """The families a cluster of ``--ip-family choice`` serves, primary first."""
    return {"ipv4": ("ipv4",), "ipv6": ("ipv6",), "dual": ("ipv4", "ipv6")}[check_choice(choice)]


def family_of(address: str) -> str:
    """``ipv4`` or ``ipv6`` for an address or CIDR; a ValueError for anything else."""
    text = address.strip("[]")
    net = ipaddress.ip_network(text, strict=False) if "/" in text else ipaddress.ip_address(text)
    return f"ipv{net.version}"


def k8s_name(family: str) -> str:
    """The API's spelling (``spec.ipFamilies``): ``IPv4`` / ``IPv6``."""
    return {"ipv4": "IPv4", "ipv6": "IPv6"}[family]


def pick(addresses: Iterable[str | None], family: str) -> str | None:
    """The first of ``addresses`` of ``family`` (None when there is none); garbage entries are passed over."""
    for a in addresses:
        if not a:
            continue
        try:
            if family_of(a) == family:
                return a
        except ValueError:
            continue
    return None


def families_in(addresses: Iterable[str | None]) -> tuple[str, ...]:
    """The families among ``addresses`` or CIDRs, in order of first appearance."""
    out: list[str] = []
    for a in addresses:
        try:
            f = family_of(a) if a else None
        except ValueError:
            continue
        if f and f not in out:
            out.append(f)
    return tuple(out)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL or log writes it: IPv6 literals in brackets (``[fd00::1]:80``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize(address: str) -> str:
    """The canonical text of an address (RFC 5952 for IPv6, as Go's net.IP prints it), or the input unchanged."""
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return address

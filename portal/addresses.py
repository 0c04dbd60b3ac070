"""Which network addresses a URL the portal is given may lead to.

Upstream URLs of MaaS targets and import URLs of the plaza make a server inside the platform's
network call out. Pointed at loopback or a private network they reach what only the platform should:
its own admin ports, databases, other tenants' engines. So a URL's host must resolve to public
addresses only, unless the operator allows private ones (`allow_private_urls`, on by default with
--demo, where everything runs on one machine). Link-local (cloud metadata at 169.254.169.254),
multicast, unspecified and reserved addresses are refused always.

The check resolves the name when the URL is given; a name that later resolves elsewhere (DNS
rebinding) is not covered here.
"""

from __future__ import annotations

import ipaddress
import socket

from portal.errors import Invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # the forms inet_aton also accepts: "10", "0x7f.1", "167772161"
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def refusal(address: Address, allow_private: bool) -> str | None:
    """Why `address` may not be called, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    private = "a loopback or private address (the operator may allow them: MODELFLEET_ALLOW_PRIVATE_URLS)"
    if address.is_loopback:  # before `is_reserved`: ::1 lies in IPv6's reserved ::/8
        return None if allow_private else private
    if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved:
        return "a link-local, multicast or reserved address"
    if not allow_private and (address.is_private or not address.is_global):
        return private
    return None


def check_host(field: str, host: str, port: int, allow_private: bool, *, unresolved_ok: bool = False) -> None:
    """422 on `field` unless every address `host` resolves to may be called. A name that does not
    resolve here is refused, or passes with `unresolved_ok` (an upstream the gateway, in another
    network, may resolve: its address literal, if it is one, was checked all the same)."""
    literal = ip_literal(host)
    if literal is not None:
        why = refusal(literal, allow_private)
        if why is not None:
            raise Invalid.field(field, f"{host} is {why}")
        return
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        if unresolved_ok:
            return
        raise Invalid.field(field, f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        why = refusal(address, allow_private)
        if why is not None:
            raise Invalid.field(field, f"{host} resolves to {address}, {why}")

"""Interface addresses and source address selection.

Linux: net/ipv4/devinet.c (struct in_ifaddr, inet_select_addr) and net/ipv6/addrconf.c
(ipv6_dev_get_saddr, addrconf_ifid_eui48), with the RFC 6724 policy table of net/ipv6/addrlabel.c.
Families are the IP version numbers 4 and 6; addresses are ints (host order of the wire bytes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# include/uapi/linux/rtnetlink.h › enum rt_scope_t
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_SITE = 200
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255
SCOPE_NAMES = {
    RT_SCOPE_UNIVERSE: "global",
    RT_SCOPE_SITE: "site",
    RT_SCOPE_LINK: "link",
    RT_SCOPE_HOST: "host",
}

ADDR_BITS = {4: 32, 6: 128}
ADDR_ALL = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


@dataclass(slots=True)
class IfAddr:
    """One address on a link (struct in_ifaddr / struct inet6_ifaddr).

    `broadcast` is the explicitly configured IPv4 broadcast (`brd`), else None. `secondary` is
    IFA_F_SECONDARY: a further IPv4 address inside a prefix the link already has.
    """

    family: int
    address: int
    prefixlen: int
    ifindex: int
    broadcast: int | None = None
    scope: int = RT_SCOPE_UNIVERSE
    secondary: bool = False
    noprefixroute: bool = False
    metric: int = 0


def inet_mask(family: int, prefixlen: int) -> int:
    bits = ADDR_BITS[family]
    return ADDR_ALL[family] ^ ((1 << (bits - prefixlen)) - 1)


def inet_ifa_match(addr: int, ifa: IfAddr) -> bool:
    """Linux: include/linux/inetdevice.h › inet_ifa_match (addr inside the address's prefix)."""
    return not (addr ^ ifa.address) & inet_mask(ifa.family, ifa.prefixlen)


def format_addr(family: int, addr: int) -> str:
    return str(ipaddress.IPv4Address(addr) if family == 4 else ipaddress.IPv6Address(addr))


def parse_addr(text: str, family: int | None = None) -> tuple[int, int]:
    """Parse an address as iproute2's get_addr_1 does: (family, int). ValueError if it is none.

    IPv4 may omit trailing octets (`10.1` is 10.1.0.0), as iproute2's get_addr_ipv4 allows.
    """
    if ":" in text:
        if family == 4:
            raise ValueError(text)
        return 6, int(ipaddress.IPv6Address(text))
    if family == 6:
        raise ValueError(text)
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise ValueError(text)
    value = 0
    for p in parts + ["0"] * (4 - len(parts)):
        value = value << 8 | int(p)
    return 4, value


def inet_select_addr(addrs: dict[int, list[IfAddr]], ifindex: int, dst: int, scope: int) -> int | None:
    """The IPv4 source Linux picks on a device for `dst` (0: any) within `scope`.

    Linux: net/ipv4/devinet.c › inet_select_addr. `addrs` maps ifindex to the link's IPv4 addresses in
    kernel order (primaries first), iterated in ifindex order for the fallback to other devices.
    """
    found = None
    for ifa in addrs.get(ifindex, ()):
        if ifa.secondary or min(ifa.scope, RT_SCOPE_LINK) > scope:
            continue
        if not dst or inet_ifa_match(dst, ifa):
            return ifa.address
        if found is None:
            found = ifa.address
    if found is not None:
        return found
    # Not on this device: any other device's primary address, but never a link-scope one.
    for other, ifas in addrs.items():
        if other == ifindex:
            continue
        for ifa in ifas:
            if not ifa.secondary and ifa.scope != RT_SCOPE_LINK and ifa.scope <= scope:
                return ifa.address
    return None


def inet_select_addr_any_dst(addrs: dict[int, list[IfAddr]], ifindex: int, scope: int) -> int | None:
    """inet_select_addr's answer when it is the same for every dst: the device has exactly one
    address it may pick. None otherwise (the choice depends on dst, or falls back to other devices)."""
    cands = [ifa.address for ifa in addrs.get(ifindex, ())
             if not ifa.secondary and min(ifa.scope, RT_SCOPE_LINK) <= scope]  # fmt: skip
    return cands[0] if len(cands) == 1 else None


# include/net/ipv6.h › IPV6_ADDR_SCOPE_*
IPV6_ADDR_SCOPE_LINKLOCAL = 0x02
IPV6_ADDR_SCOPE_SITELOCAL = 0x05
IPV6_ADDR_SCOPE_GLOBAL = 0x0E
_LOOPBACK6 = 1


def ipv6_addr_src_scope(addr: int) -> int:
    """Linux: net/ipv6/addrconf_core.c › __ipv6_addr_type, scope part (::1 counts as link-local)."""
    top16 = addr >> 112
    if top16 >> 8 == 0xFF:
        return top16 & 0xF  # multicast: the scope nibble
    if top16 & 0xFFC0 == 0xFE80 or addr == _LOOPBACK6:
        return IPV6_ADDR_SCOPE_LINKLOCAL
    if top16 & 0xFFC0 == 0xFEC0:
        return IPV6_ADDR_SCOPE_SITELOCAL
    return IPV6_ADDR_SCOPE_GLOBAL


def _v6(text: str) -> tuple[int, int]:
    net = ipaddress.IPv6Network(text)
    return int(net.network_address), int(net.netmask)


# net/ipv6/addrlabel.c › ip6addrlbl_init_table (RFC 6724 §2.1 default policy table)
_ADDRLABELS = tuple(
    (*_v6(p), label)
    for p, label in (
        ("::1/128", 0), ("::/96", 3), ("::ffff:0:0/96", 4), ("2001:10::/28", 7), ("2001::/32", 6),
        ("2002::/16", 2), ("3ffe::/16", 12), ("fec0::/10", 11), ("fc00::/7", 5), ("::/0", 1),
    )
)  # fmt: skip


def ipv6_addr_label(addr: int) -> int:
    """Linux: net/ipv6/addrlabel.c › ipv6_addr_label (longest match in the policy table)."""
    for prefix, mask, label in _ADDRLABELS:  # sorted longest first
        if (addr ^ prefix) & mask == 0:
            return label
    return 1


def _ipv6_addr_diff(a: int, b: int) -> int:
    """Length of the common prefix of two IPv6 addresses."""
    return 128 - (a ^ b).bit_length()


def ipv6_dev_get_saddr(addrs: dict[int, list[IfAddr]], oif: int, dst: int) -> int | None:
    """The IPv6 source Linux picks for `dst` leaving through `oif` (0: unknown).

    Linux: net/ipv6/addrconf.c › ipv6_dev_get_saddr and ipv6_get_saddr_eval, RFC 6724 §5 rules 1
    (same address), 2 (appropriate scope), 5 (outgoing interface), 6 (matching label) and 8
    (longest matching prefix, capped at the candidate's prefix length). No address is tentative here
    (Deviation: no DAD), none deprecated, none a home or temporary address, so rules 3, 4 and 7 tie.
    """
    dst_scope = ipv6_addr_src_scope(dst)
    dst_label = ipv6_addr_label(dst)
    # Link-local and multicast destinations only use addresses of the outgoing link (RFC 6724 §4).
    if oif and (dst >> 120 == 0xFF or dst_scope <= IPV6_ADDR_SCOPE_LINKLOCAL):
        candidates = list(addrs.get(oif, ()))
    else:
        candidates = [ifa for ifas in addrs.values() for ifa in ifas]
    best, best_score = None, None
    for ifa in candidates:
        if ifa.address == 0 or ifa.address >> 120 == 0xFF:
            continue
        scope = ipv6_addr_src_scope(ifa.address)
        score = (
            ifa.address == dst,
            -scope if scope >= dst_scope else scope - 128,
            not oif or ifa.ifindex == oif,
            ipv6_addr_label(ifa.address) == dst_label,
            min(_ipv6_addr_diff(ifa.address, dst), ifa.prefixlen),
        )
        if best_score is None or score > best_score:  # ties keep the first, as the kernel's hiscore
            best, best_score = ifa.address, score
    return best


def addrconf_ifid_eui48(hwaddr: bytes) -> int:
    """The modified EUI-64 interface id of a MAC (RFC 4291 §2.5.1). Linux: addrconf.c › addrconf_ifid_eui48."""
    eui = bytes([hwaddr[0] ^ 0x02, hwaddr[1], hwaddr[2], 0xFF, 0xFE, hwaddr[3], hwaddr[4], hwaddr[5]])
    return int.from_bytes(eui, "big")


LINK_LOCAL_PREFIX = 0xFE80 << 112

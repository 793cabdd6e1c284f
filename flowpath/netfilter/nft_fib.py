"""nft `fib` expression: the route or the address type of a packet's source or destination.

Linux: net/netfilter/nft_fib.c (nft_fib_store_result, NFTA_FIB_F_PRESENT), nft_fib_ipv4.c
(nft_fib4_eval, nft_fib4_eval_type) and nft_fib_ipv6.c (nft_fib6_eval, __nft_fib6_eval_type), asked
of flowpath's FIB (flowpath.net: the same lookups the classic path routes with).

The compiled VM has no FIB: a rule with `fib` is punted to these closures (nft_compile_expr.Punt).
The hooks each form may run at are checked when the ruleset loads (config/nft/validate.py ›
expr_hooks, nft_fib_validate).
"""

from __future__ import annotations

from flowpath.net.fib import (
    REJECT_TYPES,
    RTN_BROADCAST,
    RTN_LOCAL,
    RTN_MULTICAST,
    RTN_UNICAST,
    RTN_UNREACHABLE,
)
from flowpath.net.route import inet_addr_type
from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_types import NftBuildError
from flowpath.packet import layout as L

_FLAGS = ("saddr", "daddr", "mark", "iif", "oif")


def _fib_dev(pkt, flags) -> int:
    """The device a lookup is restricted to: the input device with `iif`, the output one with `oif`."""
    if "iif" in flags:
        return pkt.iif
    if "oif" in flags:
        return pkt.oif
    return 0


def _addrs(pkt, flags) -> tuple[int, int, int]:
    """(family, address looked up, the other address) from the packet's network header."""
    skb = pkt.skb
    family = 6 if skb.l3proto == L.ETH_P_IPV6 else 4
    if "daddr" in flags:
        return family, skb.daddr, skb.saddr
    return family, skb.saddr, skb.daddr


def nft_fib_oif(pkt, flags) -> int | None:
    """The ifindex of the route's device (0: none, or not through the device the flags name).

    Linux: nft_fib4_eval / nft_fib6_eval. A packet from loopback in PREROUTING gets its own input
    device; an IPv4 packet from 0.0.0.0 to a broadcast or local multicast address gets the input
    device (DHCP). A local route counts as no route (RTN_LOCAL: "should not see it here"), and so do
    reject routes (fib_lookup fails). Deviation: no policy rules are modelled, so `mark` changes nothing.
    """
    skb, net = pkt.skb, pkt.net
    if skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6) or net is None:
        return None  # skb_header_pointer on a non-IP packet (inet/netdev family): NFT_BREAK
    if pkt.hooknum == C.NF_INET_PRE_ROUTING and pkt.iif in net.links and net.links[pkt.iif].is_loopback:
        return pkt.iif  # nft_fib_is_loopback
    family, addr, other = _addrs(pkt, flags)
    if family == 4 and skb.saddr == 0 and (skb.daddr == 0xFFFFFFFF or skb.daddr >> 8 == 0xE00000):
        return pkt.iif  # ipv4_is_zeronet(saddr) and (ipv4_is_lbcast or ipv4_is_local_multicast)(daddr)
    dev = _fib_dev(pkt, flags)
    if family == 6 and addr >> 120 == 0xFF:
        # Deviation: flowpath has no ff00::/8 routes; Linux has one on each IPv6 device, and a lookup
        # finds the asked device's, else (we take) the input device's
        return dev or pkt.iif
    if family == 6 and addr >> 118 == 0x3FA:
        # fe80::/10: nft_fib6_flowi_init looks it up on the device (RT6_LOOKUP_F_IFACE), the named one
        # or the packet's own; every link has its fe80::/64
        link = dev or pkt.iif or pkt.oif
        fa = net.dev._fib_table_lookup(6, addr, oif=link)
        return fa.oif if fa is not None and fa.type not in REJECT_TYPES and fa.type != RTN_LOCAL else 0
    fib = net.fib_lookup(family, addr)
    if fib is None or fib.type in REJECT_TYPES or fib.type == RTN_LOCAL:
        return 0
    if dev and fib.oif != dev:  # fib_info_nh_uses_dev: one nexthop per route here
        return 0
    return fib.oif


def nft_fib_type(pkt, flags) -> int | None:
    """The address type (RTN_*) of the looked-up address, on the device the flags name if any.

    Linux: nft_fib4_eval_type › inet_dev_addr_type (a local or broadcast route counts only when its
    device is that device); __nft_fib6_eval_type (an address of that device is local; reject routes
    give their own type; then multicast, else unicast).
    Deviation: IPv6 anycast routes are not modelled (never RTN_ANYCAST).
    """
    skb, net = pkt.skb, pkt.net
    if skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6) or net is None:
        return None
    family, addr, _ = _addrs(pkt, flags)
    dev = _fib_dev(pkt, flags)
    if family == 4:
        t = inet_addr_type(net.dev, addr)
        if dev and t in (RTN_LOCAL, RTN_BROADCAST):
            fa = net.dev._fib_table_lookup(4, addr)  # the local table's route: its device owns addr
            if fa is None or fa.oif != dev:
                return int(RTN_UNICAST)
        return int(t)
    if dev and any(a.address == addr for a in net.addrs(dev, 6)):
        return int(RTN_LOCAL)  # nf_ipv6_chk_addr(net, daddr, dev, strict)
    if addr >> 120 == 0xFF:
        return int(RTN_MULTICAST)  # the ff00::/8 route (not modelled) is a multicast one
    fib = net.fib_lookup(6, addr)
    if fib is None:
        return int(RTN_UNREACHABLE)  # ip6_null_entry (seen on 6.18)
    if fib.type in REJECT_TYPES:
        return int(fib.type)  # RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT from the route's error
    if not dev and fib.type == RTN_LOCAL:
        return int(RTN_LOCAL)
    return int(RTN_UNICAST) if addr else 0  # ipv6_addr_type: :: is IPV6_ADDR_ANY, neither kind


def build_fib(arg: dict, present: bool = False, by_name: bool = False):
    """(fn, dtype, bits) of {"fib": {"result", "flags"}}.

    present  NFTA_FIB_F_PRESENT (`exists`/`missing`): 1 when a device was found, else 0
    by_name  an `oif` result read as the device's name (no ifindex map: names are compared, as
             nft_expr does for `meta oif`)
    """
    result = arg.get("result")
    flags = arg.get("flags", [])
    flags = [flags] if isinstance(flags, str) else list(flags)
    if not flags or any(f not in _FLAGS for f in flags) or result not in ("oif", "oifname", "type"):
        raise NftBuildError(f"unsupported fib expression {arg!r}")
    if result == "type":
        if present:
            raise NftBuildError("fib type cannot be tested for presence")

        def load_type(pkt):
            return nft_fib_type(pkt, flags)

        return load_type, "fib_addrtype", 32

    def load_oif(pkt):
        return nft_fib_oif(pkt, flags)

    if present:

        def load_present(pkt):
            idx = nft_fib_oif(pkt, flags)
            return None if idx is None else int(idx != 0)

        return load_present, "boolean", 8
    if result == "oifname" or by_name:

        def load_name(pkt):
            idx = nft_fib_oif(pkt, flags)
            return None if idx is None else pkt.net.ifname(idx)  # no device: "" (strscpy_pad)

        return load_name, "ifname", 128
    return load_oif, "integer", 32

"""nft `fib` expression: the route or the address type of a packet's source or destination.

Linux: net/netfilter/nft_fib.c (nft_fib_store_result, NFTA_FIB_F_PRESENT), nft_fib_ipv4.c
(nft_fib4_eval, nft_fib4_eval_type) and nft_fib_ipv6.c (nft_fib6_eval, __nft_fib6_eval_type), asked
of flowpath's FIB (flowpath.net: the same lookups the classic path routes with).

The compiled VM runs `fib ... oif`, `fib ... oif exists|missing` and `fib ... type` (nft_vm.py ›
OP_FIB) through fib_oif_eval and fib_type_eval, the lookups these closures run too, over the FIB's
compiled views (net.fib_views()); a rule with `oifname`, or an oif compared by name, is punted to
these closures (nft_compile_expr.Punt), and so is a packet whose IPv6 `type` is asked on a device
(nf_ipv6_chk_addr reads the device's addresses, which the VM does not have). The hooks each form may
run at are checked when the ruleset loads (config/nft/validate.py › expr_hooks, nft_fib_validate).
"""

from __future__ import annotations

from numba import njit

from flowpath.net.fib import (
    RTN_BLACKHOLE,
    RTN_BROADCAST,
    RTN_LOCAL,
    RTN_MULTICAST,
    RTN_PROHIBIT,
    RTN_UNICAST,
    RTN_UNREACHABLE,
)
from flowpath.net.fib_table import (
    RT_OIF,
    RT_TYPE,
    addr6_words,
    fib6_lookup_match,
    fib_lookup4,
    fib_lookup6,
    inet_addr_type_fv,
)
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


_LOCAL, _BLACKHOLE = int(RTN_LOCAL), int(RTN_BLACKHOLE)
_UNREACHABLE, _PROHIBIT = int(RTN_UNREACHABLE), int(RTN_PROHIBIT)
_UNICAST, _BROADCAST, _MULTICAST = int(RTN_UNICAST), int(RTN_BROADCAST), int(RTN_MULTICAST)


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib_oif_eval(fv, family, a0, a1, a2, a3, s0, d0, dev, iif, oif, lo_pre):
    """nft_fib4_eval / nft_fib6_eval's result over the FIB views fv (net.fib_views()): the ifindex of
    the route's device, 0 for none or not through `dev`. One lookup for both evaluators: nft_fib_oif
    (these closures) and the compiled VM (nft_vm.py › OP_FIB).

    family 4 or 6; a0..a3 the address looked up (the source's or, with `daddr`, the destination's), in
    words, most significant first (IPv4: the address in the first word); s0, d0 the first words of the
    source and destination; dev the device the flags restrict the route to (0: none); iif, oif the
    packet's devices; lo_pre 1 when the packet came in on loopback in PREROUTING.

    A packet from loopback in PREROUTING gets its own input device (nft_fib_is_loopback); an IPv4
    packet from 0.0.0.0 to a broadcast or local multicast address gets the input device (DHCP). A local
    route counts as no route (RTN_LOCAL: "should not see it here"), and so do reject routes (fib_lookup
    fails). Deviation: no policy rules are modelled, so `mark` changes nothing.
    """
    if lo_pre:
        return iif
    if family == 4 and s0 == 0 and (d0 == 0xFFFFFFFF or d0 >> 8 == 0xE00000):
        return iif  # ipv4_is_zeronet(saddr) and (ipv4_is_lbcast or ipv4_is_local_multicast)(daddr)
    if family == 4:
        r = fib_lookup4(fv, a0)
        rt = fv[0][3]
    elif a0 >> 24 == 0xFF:
        # Deviation: flowpath has no ff00::/8 routes; Linux has one on each IPv6 device, and a lookup
        # finds the asked device's, else (we take) the input device's
        return dev if dev else iif
    elif a0 >> 22 == 0x3FA:
        # fe80::/10: nft_fib6_flowi_init looks it up on the device (RT6_LOOKUP_F_IFACE), the named one
        # or the packet's own; every link has its fe80::/64
        link = dev if dev else (iif if iif else oif)
        r = fib6_lookup_match(fv[1], a0, a1, a2, a3, 0, 0, link)
        rt = fv[1][5]
        dev = 0  # the lookup kept to the device already
    else:
        r = fib_lookup6(fv, a0, a1, a2, a3)
        rt = fv[1][5]
    if r < 0:
        return 0
    t = rt[r, RT_TYPE]
    if t == _LOCAL or t == _BLACKHOLE or t == _UNREACHABLE or t == _PROHIBIT:
        return 0
    if dev and rt[r, RT_OIF] != dev:  # fib_info_nh_uses_dev: one nexthop per route here
        return 0
    return rt[r, RT_OIF]


def _words(family: int, a: int) -> tuple[int, int, int, int]:
    return (a, 0, 0, 0) if family == 4 else addr6_words(a)


def nft_fib_oif(pkt, flags) -> int | None:
    """The ifindex of the route's device (0: none, or not through the device the flags name); None
    (NFT_BREAK) for a packet that is not IP. Linux: nft_fib4_eval / nft_fib6_eval, see fib_oif_eval."""
    skb, net = pkt.skb, pkt.net
    if skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6) or net is None:
        return None  # skb_header_pointer on a non-IP packet (inet/netdev family): NFT_BREAK
    lo_pre = pkt.hooknum == C.NF_INET_PRE_ROUTING and pkt.iif in net.links and net.links[pkt.iif].is_loopback
    family = 6 if skb.l3proto == L.ETH_P_IPV6 else 4
    saddr, daddr = _words(family, skb.saddr), _words(family, skb.daddr)
    dev = _fib_dev(pkt, flags)
    addr = daddr if "daddr" in flags else saddr
    return int(fib_oif_eval(net.fib_views(), family, *addr, saddr[0], daddr[0], dev, pkt.iif, pkt.oif,
                            int(lo_pre)))  # fmt: skip


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib_type_eval(fv, family, a0, a1, a2, a3, dev):
    """The address type (RTN_*) of the address a0..a3 (words as fib_oif_eval's), on the device dev
    (0: none), over the FIB views fv. For IPv6 on a device, the caller has found the address is not
    one of the device's own (nf_ipv6_chk_addr: then RTN_LOCAL). nft_fib_type and OP_FIB ask it.

    Linux: nft_fib4_eval_type › inet_dev_addr_type (a local or broadcast route counts only when its
    device is that device); __nft_fib6_eval_type (reject routes give their own type; then multicast,
    else unicast). Deviation: IPv6 anycast routes are not modelled (never RTN_ANYCAST).
    """
    if family == 4:
        t = inet_addr_type_fv(fv, a0)
        if dev and (t == _LOCAL or t == _BROADCAST):
            r = fib_lookup4(fv, a0)  # the local table's route: its device owns addr
            if r < 0 or fv[0][3][r, RT_OIF] != dev:
                return _UNICAST
        return t
    if a0 >> 24 == 0xFF:
        return _MULTICAST  # the ff00::/8 route (not modelled) is a multicast one
    r = fib_lookup6(fv, a0, a1, a2, a3)
    if r < 0:
        return _UNREACHABLE  # ip6_null_entry (seen on 6.18)
    t = fv[1][5][r, RT_TYPE]
    if t == _BLACKHOLE or t == _UNREACHABLE or t == _PROHIBIT:
        return t  # from the route's error
    if not dev and t == _LOCAL:
        return _LOCAL
    return _UNICAST if a0 | a1 | a2 | a3 else 0  # ipv6_addr_type: :: is IPV6_ADDR_ANY, neither kind


def nft_fib_type(pkt, flags) -> int | None:
    """The address type (RTN_*) of the looked-up address, on the device the flags name if any (see
    fib_type_eval); None (NFT_BREAK) for a packet that is not IP."""
    skb, net = pkt.skb, pkt.net
    if skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6) or net is None:
        return None
    family, addr, _ = _addrs(pkt, flags)
    dev = _fib_dev(pkt, flags)
    if family == 6 and dev and any(a.address == addr for a in net.addrs(dev, 6)):
        return int(RTN_LOCAL)  # nf_ipv6_chk_addr(net, daddr, dev, strict)
    return int(fib_type_eval(net.fib_views(), family, *_words(family, addr), dev))


def fib_flags(arg: dict) -> list[str]:
    """The flags of {"fib": {"flags"}} as a list (libnftables JSON gives one flag as a string)."""
    flags = arg.get("flags", [])
    return [flags] if isinstance(flags, str) else list(flags)


def build_fib(arg: dict, present: bool = False, by_name: bool = False):
    """(fn, dtype, bits) of {"fib": {"result", "flags"}}.

    present  NFTA_FIB_F_PRESENT (`exists`/`missing`): 1 when a device was found, else 0
    by_name  an `oif` result read as the device's name (no ifindex map: names are compared, as
             nft_expr does for `meta oif`)
    """
    result = arg.get("result")
    flags = fib_flags(arg)
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

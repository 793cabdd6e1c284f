"""IPv4 kernel routes of addresses: added when an address comes up, removed when it goes.

Linux: net/ipv4/fib_frontend.c (fib_magic, fib_add_ifaddr, fib_del_ifaddr, fib_sync_down_addr's use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowpath.net.fib import (
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTN_BROADCAST,
    RTN_LOCAL,
    RTN_UNICAST,
    RTPROT_KERNEL,
    FibAlias,
    RouteType,
)
from flowpath.net.inetdev import ADDR_ALL, RT_SCOPE_HOST, RT_SCOPE_LINK, IfAddr, inet_ifa_match, inet_mask

if TYPE_CHECKING:
    from flowpath.net.model import Network


def inet_ifa_byprefix(net: Network, ifa: IfAddr) -> IfAddr:
    if not ifa.secondary:
        return ifa
    return next(
        a
        for a in net._addrs[4][ifa.ifindex]
        if not a.secondary and a.prefixlen == ifa.prefixlen and inet_ifa_match(a.address, ifa)
    )


def fib_magic(
    net: Network, rtype: RouteType, dst: int, plen: int, ifa: IfAddr, scope: int, metric: int = 0
) -> None:
    """Linux: fib_frontend.c › fib_magic: kernel routes of an address; unicast ones in main, others in local.

    Like any route, a kernel route needs a local prefsrc (fib_valid_prefsrc); if the address is
    shadowed, e.g. it is another link's broadcast, the kernel drops the route without a word.
    """
    table = RT_TABLE_MAIN if rtype == RTN_UNICAST else RT_TABLE_LOCAL
    prefsrc = inet_ifa_byprefix(net, ifa).address
    if (rtype != RTN_LOCAL or prefsrc != dst) and not net.is_local(4, prefsrc):
        return
    fa = FibAlias(4, dst, plen, rtype, table, metric, ifa.ifindex, None, prefsrc)
    fa.protocol, fa.scope = RTPROT_KERNEL, scope
    net.tables[4][table].insert(fa, excl=False)


def fib_magic_del(net: Network, rtype: RouteType, dst: int, plen: int, prim: IfAddr) -> None:
    """fib_magic(RTM_DELROUTE): the first kernel route of the prefix with this type, source and device."""
    table = net.tables[4][RT_TABLE_MAIN if rtype == RTN_UNICAST else RT_TABLE_LOCAL]
    scope = RT_SCOPE_HOST if rtype == RTN_LOCAL else RT_SCOPE_LINK
    victim = next(
        (
            fa
            for fa in table.find(dst, plen)
            if (fa.type, fa.scope, fa.prefsrc, fa.oif, fa.protocol)
            == (rtype, scope, prim.address, prim.ifindex, RTPROT_KERNEL)
        ),
        None,
    )
    if victim is not None:
        table.remove(lambda fa: fa is victim)


def fib_add_ifaddr(net: Network, ifa: IfAddr) -> None:
    """Linux: net/ipv4/fib_frontend.c › fib_add_ifaddr (6.x: no subnet-zero broadcast route)."""
    link = net.links[ifa.ifindex]
    mask = inet_mask(4, ifa.prefixlen)
    prefix = ifa.address & mask
    fib_magic(net, RTN_LOCAL, ifa.address, 32, ifa, RT_SCOPE_HOST)
    if not link.up:
        return
    if ifa.broadcast and ifa.broadcast != ADDR_ALL[4]:
        fib_magic(net, RTN_BROADCAST, ifa.broadcast, 32, ifa, RT_SCOPE_LINK)
    # ipv4_is_zeronet: only 0.0.0.0 since Linux 5.3 made 0/8 unicast
    if prefix and not ifa.secondary and (prefix != ifa.address or ifa.prefixlen < 32):
        if not ifa.noprefixroute:
            if link.is_loopback:
                fib_magic(net, RTN_LOCAL, prefix, ifa.prefixlen, ifa, RT_SCOPE_HOST, ifa.metric)
            else:
                fib_magic(net, RTN_UNICAST, prefix, ifa.prefixlen, ifa, RT_SCOPE_LINK, ifa.metric)
        if ifa.prefixlen < 31:
            fib_magic(net, RTN_BROADCAST, prefix | (ADDR_ALL[4] ^ mask), 32, ifa, RT_SCOPE_LINK)


def fib_del_ifaddr(net: Network, ifa: IfAddr) -> None:
    """Linux: fib_frontend.c › fib_del_ifaddr: remove the address's kernel routes unless another
    address of the link still needs them; then, if the address is gone from the host, the main
    table's routes that used it as source (fib_sync_down_addr)."""
    link = net.links[ifa.ifindex]
    mask = inet_mask(4, ifa.prefixlen)
    any_ = ifa.address & mask
    brd = any_ | (ADDR_ALL[4] ^ mask)
    ifas = net._addrs[4][ifa.ifindex]  # without ifa
    prim, subnet = ifa, False
    if ifa.secondary:
        prim = next(
            (
                a
                for a in ifas
                if not a.secondary and a.prefixlen == ifa.prefixlen and inet_ifa_match(a.address, ifa)
            ),
            None,
        )
        if prim is None:
            return
    elif any_ and (any_ != ifa.address or ifa.prefixlen < 32):
        if not ifa.noprefixroute:
            fib_magic_del(net, RTN_LOCAL if link.is_loopback else RTN_UNICAST, any_, ifa.prefixlen, prim)
        subnet = True
    local_ok = brd_ok = brd1_ok = brd0_ok = False
    prim1 = None
    for ifa1 in ifas:
        if ifa1.secondary:
            if ifa1.prefixlen == prim.prefixlen and inet_ifa_match(ifa1.address, prim):
                prim1 = prim
            elif prim1 is None:
                break  # the secondaries come last: no further primaries
            elif prim1.address != prim.address:
                continue
        else:
            if prim.address != ifa1.address:
                continue
            prim1 = ifa1
        local_ok |= ifa.address == ifa1.address
        brd_ok |= ifa.broadcast == ifa1.broadcast
        brd1_ok |= brd == ifa1.broadcast
        brd0_ok |= any_ == ifa1.broadcast
        if prim1 is ifa1 and ifa1.prefixlen < 31:
            mask1 = inet_mask(4, ifa1.prefixlen)
            any1 = ifa1.address & mask1
            brd1 = any1 | (ADDR_ALL[4] ^ mask1)
            if any1:
                brd_ok |= ifa.broadcast in (brd1, any1)
                brd1_ok |= brd in (brd1, any1)
                brd0_ok |= any_ in (brd1, any1)
    if not brd_ok and ifa.broadcast:
        fib_magic_del(net, RTN_BROADCAST, ifa.broadcast, 32, prim)
    if subnet and ifa.prefixlen < 31:
        if not brd1_ok:
            fib_magic_del(net, RTN_BROADCAST, brd, 32, prim)
        if not brd0_ok:
            fib_magic_del(net, RTN_BROADCAST, any_, 32, prim)
    if not local_ok:
        fib_magic_del(net, RTN_LOCAL, ifa.address, 32, prim)
        if not net.is_local(4, ifa.address):
            net.tables[4][RT_TABLE_MAIN].remove(lambda fa: fa.prefsrc == ifa.address)

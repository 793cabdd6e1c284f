"""Route requests and results: nexthop validation and the fields a lookup hands the datapath.

Linux: net/ipv4/fib_semantics.c (fib_create_info, fib_check_nh_v4_gw, fib_check_nh_nongw,
fib_valid_prefsrc, fib_result_prefsrc) and net/ipv6/route.c (ip6_route_info_create, ip6_validate_gw).
Error texts are the kernel's, so a failing batch line reads as `ip` would report it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowpath.net.fib import (
    IP6_RT_PRIO_USER,
    REJECT_TYPES,
    RT_TABLE_MAIN,
    RTN_LOCAL,
    RTN_UNICAST,
    FibAlias,
    FibResult,
    FibTable,
    RouteType,
)
from flowpath.net.fib_table import inet_addr_type_fv
from flowpath.net.inetdev import (
    IPV6_ADDR_SCOPE_LINKLOCAL,
    RT_SCOPE_LINK,
    inet_mask,
    inet_select_addr,
    ipv6_addr_src_scope,
    ipv6_dev_get_saddr,
)
from flowpath.net.rtnetlink import RtnlError

if TYPE_CHECKING:
    from flowpath.net.model import Network


def route_add(net: Network, fa: FibAlias, replace: bool = False) -> FibAlias:
    """Validate a route as fib_create_info / ip6_route_info_create do, then insert it."""
    mask = inet_mask(fa.family, fa.prefixlen)
    if fa.prefix & ~mask:
        if fa.family == 4:
            raise RtnlError("Invalid prefix for given prefix length", "dst")
        fa.prefix &= mask  # IPv6 masks silently (ipv6_addr_prefix)
    if fa.family == 6 and not fa.metric:
        fa.metric = IP6_RT_PRIO_USER
    if fa.type in REJECT_TYPES:
        if fa.gateway is not None or fa.oif:
            raise RtnlError(
                "Gateway, device and multipath can not be specified for this route type",
                "gateway" if fa.gateway is not None else "dev",
            )
    elif fa.family == 4:
        fib_check_nh_v4(net, fa)
    else:
        ip6_validate_nh(net, fa)
    if fa.prefsrc is not None and not net.is_local(fa.family, fa.prefsrc):
        # fib_semantics.c › fib_valid_prefsrc; route.c › ip6_route_info_create
        raise RtnlError("Invalid prefsrc address" if fa.family == 4 else "Invalid source address", "src")
    tables = net.tables[fa.family]
    if fa.table not in tables:
        tables[fa.table] = FibTable(fa.family, fa.table)
    tables[fa.table].insert(fa, replace=replace)
    return fa


def route_del(net: Network, fa: FibAlias, given: set[str]) -> FibAlias:
    """Remove the first route of `fa`'s prefix (metric order) that matches its gateway, device and
    source when set, and its type, scope, metric, protocol and mtu when in `given` (metric 0: any).

    Linux: fib_trie.c › fib_table_delete with fib_nh_match; IPv6 route.c › ip6_route_del (no type or
    scope there). ESRCH when none matches.
    """
    mask = inet_mask(fa.family, fa.prefixlen)
    if fa.prefix & ~mask:
        if fa.family == 4:
            raise RtnlError("Invalid prefix for given prefix length", "dst")
        fa.prefix &= mask
    v4 = fa.family == 4

    def match(old: FibAlias) -> bool:
        return (
            (not v4 or "type" not in given or old.type == fa.type)
            and (not v4 or "scope" not in given or old.scope == fa.scope)
            and (not v4 or fa.prefsrc is None or old.prefsrc == fa.prefsrc)
            and ("proto" not in given or old.protocol == fa.protocol)
            and (not fa.metric or old.metric == fa.metric)
            and (not fa.oif or old.oif == fa.oif)
            and (fa.gateway is None or old.gateway == fa.gateway)
            and (not v4 or "mtu" not in given or old.mtu == fa.mtu)
        )

    table = net.tables[fa.family].get(fa.table)
    victim = next((old for old in table.find(fa.prefix, fa.prefixlen) if match(old)), None) if table else None
    if victim is None:
        raise RtnlError("No such process", "dst")
    table.remove(lambda old: old is victim)
    return victim


def fib_check_nh_v4(net: Network, fa: FibAlias) -> None:
    """Linux: fib_semantics.c › fib_check_nh_nongw and fib_check_nh_v4_gw (fills in `oif`)."""
    if fa.gateway is None:
        if not fa.oif:
            raise RtnlError("No such device", "dst")
        if not net.links[fa.oif].up:
            raise RtnlError("Device for nexthop is not up", "dev")
        return
    gw = fa.gateway
    if fa.onlink:
        if not fa.oif:
            raise RtnlError("Nexthop device required for onlink", "gateway")
        if not net.links[fa.oif].up:
            raise RtnlError("Nexthop device is not up", "dev")
        if inet_addr_type(net, gw) != RTN_UNICAST:  # inet_addr_type_dev_table: the dev picks a table only
            raise RtnlError("Nexthop has invalid gateway", "gateway")
        return
    # The gateway must sit on a link- or host-scope route (connected or local), through `dev` if given.
    res = net._fib_table_lookup(4, gw, RT_SCOPE_LINK, fa.oif)
    if res is None or res.type not in (RTN_UNICAST, RTN_LOCAL):
        raise RtnlError("Nexthop has invalid gateway", "gateway")
    fa.oif, fa.nh_scope = res.oif, res.scope
    if not net.links[fa.oif].up:
        raise RtnlError("Nexthop device is not up", "dev")


def inet_addr_type(net: Network, addr: int) -> RouteType:
    """Linux: fib_frontend.c › __inet_dev_addr_type with no device (fib_table.inet_addr_type_fv)."""
    return RouteType(inet_addr_type_fv(net.fib_views(), addr))


def ip6_validate_nh(net: Network, fa: FibAlias) -> None:
    """Linux: net/ipv6/route.c › ip6_validate_gw and ip6_route_check_nh (fills in `oif`)."""
    gw, oif = fa.gateway, fa.oif
    if gw is not None:
        if any(
            ifa.address == gw
            for ifindex, ifas in net._addrs[6].items()
            if not net.links[ifindex].is_loopback
            for ifa in ifas
        ):
            raise RtnlError("Gateway can not be a local address", "gateway")
        linklocal = gw != 1 and gw >> 120 != 0xFF and ipv6_addr_src_scope(gw) == IPV6_ADDR_SCOPE_LINKLOCAL
        if not linklocal:
            if gw == 0 or gw >> 120 == 0xFF:
                raise RtnlError("Invalid gateway address", "gateway")
            if not fa.onlink:
                res = _ip6_route_check_nh(net, gw, oif)
                if res is None:
                    raise RtnlError("No route to host", "gateway")
                oif = oif or res.oif
    if not oif:
        if gw is not None:
            raise RtnlError("Egress device not specified", "gateway")
        raise RtnlError("No such device", "dst")
    link = net.links[oif]
    if gw is not None and link.is_loopback:
        raise RtnlError("Egress device can not be loopback device for this route", "gateway")
    if not link.up:
        raise RtnlError("Nexthop device is not up", "dev")
    fa.oif = oif


def _ip6_route_check_nh(net: Network, gw: int, oif: int) -> FibAlias | None:
    """The on-link route of an IPv6 gateway: main first, then local and main; never a reject route or
    one through another gateway; through `oif` if given (RT6_LOOKUP_F_IFACE)."""
    for table in (RT_TABLE_MAIN, 0):
        res = net._fib_table_lookup(6, gw, oif=oif, table=table)
        if res is not None and res.type not in REJECT_TYPES and res.gateway is None:
            return res
    return None


_SADDR6_CACHE_MAX = 4096


def _ipv6_saddr(net: Network, oif: int, daddr: int) -> int | None:
    """ipv6_dev_get_saddr, memoised per (oif, daddr) until an address changes (the dst cache's job)."""
    cache = net._saddr6_cache
    if net._saddr6_genid != net.dev_addr_genid or len(cache) >= _SADDR6_CACHE_MAX:
        cache.clear()
        net._saddr6_genid = net.dev_addr_genid
    key = (oif, daddr)
    if key not in cache:
        cache[key] = ipv6_dev_get_saddr(net._addrs[6], oif, daddr)
    return cache[key]


def fib_result(net: Network, fa: FibAlias, daddr: int) -> FibResult:
    """The FibResult of a matched route. Linux: fib_semantics.c › fib_result_prefsrc (the nexthop's
    source cached per address generation); IPv6 selects per destination (ipv6_dev_get_saddr)."""
    oif = fa.oif
    mtu = fa.mtu or (net.links[oif].mtu if oif else 0)
    if fa.type in REJECT_TYPES:
        prefsrc = None
    elif fa.prefsrc is not None:
        prefsrc = fa.prefsrc
    elif fa.family == 4:
        if fa.nh_saddr_genid != net.dev_addr_genid:
            fa.nh_saddr = inet_select_addr(net._addrs[4], oif, fa.gateway or 0, fa.scope)
            fa.nh_saddr_genid = net.dev_addr_genid
        prefsrc = fa.nh_saddr
    else:
        prefsrc = _ipv6_saddr(net, oif, daddr)
    gateway = fa.gateway if fa.nh_scope == RT_SCOPE_LINK else None
    return FibResult(fa.type, oif, gateway, mtu, prefsrc, fa.prefix, fa.prefixlen, fa.table, fa.metric)

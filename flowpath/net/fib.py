"""Forwarding information base: route entries, tables and longest-prefix-match lookup.

Linux: net/ipv4/fib_trie.c (fib_table_insert, fib_table_lookup) and net/ipv6/ip6_fib.c, with the
types of include/uapi/linux/rtnetlink.h. One `FibAlias` stands for the kernel's fib_alias + fib_info +
fib_nh (a single nexthop; no multipath). A table keeps its routes in one dict per prefix length for
insert, remove and listing; lookups run over the arrays flowpath.net.fib_table builds from the tables
(compiled, the same function the compiled classic path calls), rebuilt when a table's `genid` moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Iterator, NamedTuple

from flowpath.net import fib_table
from flowpath.net.inetdev import ADDR_BITS, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE
from flowpath.net.rtnetlink import RtnlError


class RouteType(IntEnum):
    """include/uapi/linux/rtnetlink.h › RTN_*; `str(t)` is iproute2's spelling."""

    UNICAST = 1
    LOCAL = 2
    BROADCAST = 3
    MULTICAST = 5  # only as an address type (inet_addr_type); no such routes are modelled
    BLACKHOLE = 6
    UNREACHABLE = 7
    PROHIBIT = 8

    def __str__(self) -> str:
        return self.name.lower()


RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST = RouteType.UNICAST, RouteType.LOCAL, RouteType.BROADCAST
RTN_MULTICAST = RouteType.MULTICAST
RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT = RouteType.BLACKHOLE, RouteType.UNREACHABLE, RouteType.PROHIBIT
REJECT_TYPES = (RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT)

# include/uapi/linux/rtnetlink.h › enum rt_class_t
RT_TABLE_DEFAULT = 253
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
TABLE_NAMES = {RT_TABLE_DEFAULT: "default", RT_TABLE_MAIN: "main", RT_TABLE_LOCAL: "local"}

# include/uapi/linux/rtnetlink.h › RTPROT_*
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4
# iproute2 etc/iproute2/rt_protos (the common entries)
PROTO_NAMES = {
    1: "redirect", RTPROT_KERNEL: "kernel", RTPROT_BOOT: "boot", RTPROT_STATIC: "static", 9: "ra", 11: "zebra",
    12: "bird", 16: "dhcp", 18: "keepalived", 42: "babel", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip",
}  # fmt: skip

IP6_RT_PRIO_USER = 1024  # include/net/ip6_route.h: metric of a user IPv6 route given none (or 0)
IP6_RT_PRIO_ADDRCONF = 256  # prefix routes of addresses


@dataclass(slots=True)
class FibAlias:
    """One route. `oif` 0 means no device (reject routes); `prefsrc` is the configured `src`, if any.

    `nh_saddr` caches the source inet_select_addr gave for this nexthop, valid while `nh_saddr_genid`
    equals the network's address generation (Linux: fib_semantics.c › fib_info_update_nhc_saddr).
    """

    family: int
    prefix: int
    prefixlen: int
    type: RouteType = RTN_UNICAST
    table: int = RT_TABLE_MAIN
    metric: int = 0
    oif: int = 0
    gateway: int | None = None
    prefsrc: int | None = None
    mtu: int = 0
    mtu_lock: bool = False
    protocol: int = RTPROT_BOOT
    scope: int = RT_SCOPE_UNIVERSE
    onlink: bool = False
    nh_scope: int = RT_SCOPE_LINK  # the gateway's own route scope: host when the gateway is local
    nh_saddr: int | None = None
    nh_saddr_genid: int = -1


class FibResult(NamedTuple):
    """What a lookup gives the datapath (struct fib_result, flattened).

    type      RouteType
    oif       the route's device (0 for reject routes); for a local route, the link that owns the
              address (Linux sends such packets through lo: `ip route get` prints "dev lo")
    gateway   next hop, None when the destination is on-link or the gateway is a local address
              (route.c › rt_set_nexthop uses a gateway only if its scope is link)
    mtu       the route's mtu, else the device's (0 for reject routes)
    prefsrc   source address for locally generated packets (FIB_RES_PREFSRC), None if the link has none
    prefix, prefixlen, table, metric   the matched route
    """

    type: RouteType
    oif: int
    gateway: int | None
    mtu: int
    prefsrc: int | None
    prefix: int
    prefixlen: int
    table: int
    metric: int


class FibTable:
    """One routing table of one family (struct fib_table / fib6_table).

    `listeners` are told of every change (flowpath.net.fib_table's FibViews, which keep the compiled
    lookup's arrays in step): route_added(table, fa, new_prefix) after an insert, invalidate() after
    a removal or a change in place (`touch`).
    """

    def __init__(self, family: int, tb_id: int):
        self.family, self.tb_id = family, tb_id
        self._by_len: dict[int, dict[int, list[FibAlias]]] = {}
        self.listeners: list = []
        self._own: fib_table.FibViews | None = None  # this table alone, for lookup()

    def __len__(self) -> int:
        return sum(len(fas) for d in self._by_len.values() for fas in d.values())

    def touch(self) -> None:
        """A route of the table changed in place (its source went): the listeners' views are stale."""
        for views in self.listeners:
            views.invalidate()

    def lookup(self, daddr: int, scope: int = RT_SCOPE_UNIVERSE, oif: int = 0) -> FibAlias | None:
        """Longest prefix match, lowest metric first, in this table alone; with check_leaf's filters
        (only routes of `scope` or wider, through `oif`). Linux: fib_trie.c › fib_table_lookup.
        The compiled lookup of flowpath.net.fib_table over this table's own views."""
        if self._own is None:
            self._own = fib_table.FibViews(self.family, [self])
        views, fas = self._own.current()
        if self.family == 4:
            row = fib_table.fib4_lookup_match(views, daddr, 0, scope, oif)
        else:
            row = fib_table.fib6_lookup_match(views, *fib_table.addr6_words(daddr), 0, scope, oif)
        return fas[row] if row >= 0 else None

    def prefixes(self) -> Iterator[tuple[int, int, list[FibAlias]]]:
        """(prefixlen, prefix, routes in metric order) of every prefix, in no particular order."""
        for plen, d in self._by_len.items():
            for prefix, fas in d.items():
                yield plen, prefix, fas

    def find(self, prefix: int, prefixlen: int) -> list[FibAlias]:
        """The routes for exactly this prefix, metric order (empty if none)."""
        return self._by_len.get(prefixlen, {}).get(prefix, [])

    def insert(self, fa: FibAlias, replace: bool = False, excl: bool = True) -> None:
        """Add a route. Same prefix and metric: EEXIST (`ip route add`), or replace it (`ip route replace`).

        Linux: fib_trie.c › fib_table_insert (NLM_F_EXCL / NLM_F_REPLACE); the IPv6 tree refuses the same
        way (ip6_fib.c › fib6_add_rt2node). `excl=False` is the kernel's own fib_magic (NLM_F_APPEND):
        an identical route is left as it is, a different one goes after the others.
        """
        d = self._by_len.setdefault(fa.prefixlen, {})
        fas = d.setdefault(fa.prefix, [])
        for i, old in enumerate(fas):
            if old.metric != fa.metric:
                continue
            if replace:
                fas[i] = fa
                self.touch()
                return
            if not excl and (old.type, old.oif, old.prefsrc) == (fa.type, fa.oif, fa.prefsrc):
                return  # the same fib_info: fib_table_insert's fa_match
            if excl:
                raise RtnlError("File exists", "dst")
        fas.append(fa)
        fas.sort(key=lambda a: a.metric)  # stable: equal metrics keep insertion order
        for views in self.listeners:
            views.route_added(self, fa, len(fas) == 1)

    def remove(self, match: Callable[[FibAlias], bool]) -> list[FibAlias]:
        """Remove every route for which `match(fa)` is true; return them."""
        gone = []
        for plen in list(self._by_len):
            d = self._by_len[plen]
            for prefix in list(d):
                keep = [fa for fa in d[prefix] if not match(fa)]
                gone += [fa for fa in d[prefix] if match(fa)]
                if keep:
                    d[prefix] = keep
                else:
                    del d[prefix]
            if not d:
                del self._by_len[plen]
        if gone:
            self.touch()
        return gone

    def __iter__(self) -> Iterator[FibAlias]:
        """Routes in `ip route show` order: IPv4 walks the trie by key, longer prefixes of a key first;
        IPv6 walks the fib6 tree, whose order puts a prefix after the more specific ones it contains.
        """
        bits = ADDR_BITS[self.family]
        if self.family == 4:

            def key(fa: FibAlias):
                return (fa.prefix, -fa.prefixlen)
        else:

            def key(fa: FibAlias):
                return (fa.prefix | ((1 << (bits - fa.prefixlen)) - 1), -fa.prefixlen)

        entries = [fas for d in self._by_len.values() for fas in d.values()]
        for fas in sorted(entries, key=lambda fas: key(fas[0])):
            yield from fas

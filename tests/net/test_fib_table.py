"""The compiled FIB lookup against a naive reference (Linux: fib_trie.c › fib_table_lookup, check_leaf;
ip6_fib.c › fib6_lookup under the default rules).

The reference scans every route of the tables. IPv4 collapses local and main (no policy rules): the
longest prefix containing the address wins, on an equal prefix the local table's routes come first,
then the lowest metric, then the route added first. IPv6 asks the local table alone, then main, with
the same order inside a table. The filters (check_leaf's scope and oif, a table) only skip routes: the
longest prefix with a route that passes wins.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.config.ipbatch import parse_network
from flowpath.net import fib_table as F
from flowpath.net.fib import RT_TABLE_LOCAL, RT_TABLE_MAIN, FibAlias, FibTable, RouteType
from flowpath.net.inetdev import inet_mask, parse_addr
from flowpath.net.rtnetlink import RtnlError

_seq = itertools.count()


def naive_lookup(local, main, family, daddr, table=0, scope=0, oif=0):
    """Every route, no index; `local` and `main` are lists of (seq, FibAlias), seq the insertion order."""

    def passes(fa):
        return (table == 0 or fa.table == table) and fa.scope >= scope and (oif == 0 or fa.oif == oif)

    def best(cands):
        cands = [(seq, fa) for seq, fa in cands if daddr & inet_mask(family, fa.prefixlen) == fa.prefix]
        cands = [c for c in cands if passes(c[1])]
        if not cands:
            return None
        # longest prefix, then local first (IPv4 collapse), then metric, then insertion order
        return min(cands, key=lambda c: (-c[1].prefixlen, c[1].table != RT_TABLE_LOCAL, c[1].metric, c[0]))[1]

    if family == 4:
        return best(local + main)
    return best(local) or best(main)


# Addresses near a few bases: prefixes of every length nest inside each other and collide.
_BASES = {
    4: (0x0A010203, 0xC0A80080, 0x0A01FF00),
    6: (0x20010DB8 << 96 | 0x1234, 0xFE80 << 112 | 0xABCDEF, 0x20010DB8 << 96 | 1 << 70),
}


@st.composite
def _near(draw, family):
    """A base address with up to two bits flipped."""
    bits = 32 if family == 4 else 128
    a = draw(st.sampled_from(_BASES[family]))
    for _ in range(draw(st.integers(0, 2))):
        a ^= 1 << draw(st.integers(0, bits - 1))
    return a


@st.composite
def _route(draw, family):
    bits = 32 if family == 4 else 128
    plen = draw(st.integers(0, bits))
    addr = draw(_near(family)) & inet_mask(family, plen)
    table = draw(st.sampled_from([RT_TABLE_LOCAL, RT_TABLE_MAIN]))
    rtype = draw(st.sampled_from(list(RouteType)))
    return FibAlias(family, addr, plen, rtype, table, draw(st.sampled_from([0, 1, 10])), draw(st.integers(0, 3)),
                    scope=draw(st.sampled_from([0, 200, 253, 254])))  # fmt: skip


def _ops(family):
    # an insert, or a removal of the i-th route still there (mod their number)
    return st.lists(st.one_of(_route(family), st.integers(0, 1000)), min_size=1, max_size=50)


def _probes(family, routes, extra):
    bits = 32 if family == 4 else 128
    out = list(extra)
    for _, fa in routes:
        out += [fa.prefix, fa.prefix | ((1 << (bits - fa.prefixlen)) - 1)]
    return out


def _lookup(views, family, daddr, table=0, scope=0, oif=0):
    if family == 4:
        if table or scope or oif:
            return F.fib4_lookup_match(views, daddr, table, scope, oif)
        return F.fib4_lookup(views, daddr)
    if table or scope or oif:
        return F.fib6_lookup_match(views, *F.addr6_words(daddr), table, scope, oif)
    return F.fib6_lookup(views, *F.addr6_words(daddr))


def _check(fib, local, main, family, addrs):
    views = fib.get()
    routes = local + main
    for daddr in _probes(family, routes, addrs):
        for filt in ((0, 0, 0), (0, 253, 0), (RT_TABLE_MAIN, 0, 0), (0, 0, 2), (RT_TABLE_LOCAL, 200, 1)):
            want = naive_lookup(local, main, family, daddr, *filt)
            row = _lookup(views, family, daddr, *filt)
            assert (fib.fas[row] if row >= 0 else None) is want, (hex(daddr), filt)
            if want is not None:
                _check_row(views[-1], row, want)


def _check_row(rt, row, fa):
    words = F.addr6_words(fa.prefsrc or 0) if fa.family == 6 else (fa.prefsrc or 0, 0, 0, 0)
    assert rt[row, F.RT_TYPE] == fa.type and rt[row, F.RT_OIF] == fa.oif
    assert (rt[row, F.RT_TABLE], rt[row, F.RT_METRIC], rt[row, F.RT_SCOPE]) == (fa.table, fa.metric, fa.scope)
    assert rt[row, F.RT_PREFIXLEN] == fa.prefixlen and rt[row, F.RT_MTU] == fa.mtu
    assert bool(rt[row, F.RT_FLAGS] & F.RTF_PREFSRC) == (fa.prefsrc is not None)
    assert tuple(rt[row, F.RT_PREFSRC : F.RT_PREFSRC + 4]) == tuple(words)


def _run(family, ops, addrs):
    """Apply ops to a local and a main table watched by one FibViews (built at the start, so that inserts
    take the in-place path), checking every lookup against the reference after each step."""
    tables = {
        RT_TABLE_LOCAL: FibTable(family, RT_TABLE_LOCAL),
        RT_TABLE_MAIN: FibTable(family, RT_TABLE_MAIN),
    }
    fib = F.FibViews(family, [tables[RT_TABLE_LOCAL], tables[RT_TABLE_MAIN]])
    fib.get()
    kept = {RT_TABLE_LOCAL: [], RT_TABLE_MAIN: []}
    for op in ops:
        if isinstance(op, FibAlias):
            try:
                tables[op.table].insert(op)
            except RtnlError:  # same prefix and metric: EEXIST
                continue
            kept[op.table].append((next(_seq), op))
        else:
            everything = kept[RT_TABLE_LOCAL] + kept[RT_TABLE_MAIN]
            if not everything:
                continue
            _, victim = everything[op % len(everything)]
            tables[victim.table].remove(lambda fa, v=victim: fa is v)
            kept[victim.table] = [c for c in kept[victim.table] if c[1] is not victim]
        _check(fib, kept[RT_TABLE_LOCAL], kept[RT_TABLE_MAIN], family, addrs)
    # the same tables built from scratch give the same rows
    fresh = F.FibViews(family, [tables[RT_TABLE_LOCAL], tables[RT_TABLE_MAIN]])
    for daddr in _probes(family, kept[RT_TABLE_LOCAL] + kept[RT_TABLE_MAIN], addrs):
        a, b = _lookup(fib.get(), family, daddr), _lookup(fresh.get(), family, daddr)
        assert (fib.fas[a] if a >= 0 else None) is (fresh.fas[b] if b >= 0 else None)


@settings(max_examples=150, deadline=None)
@given(_ops(4), st.lists(st.one_of(_near(4), st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=12))
def test_ipv4_lookup_matches_naive_reference(ops, addrs):
    """fib_table_lookup over local collapsed into main, with check_leaf's filters, after each
    insert (in place) and removal (rebuild)."""
    _run(4, ops, addrs)


@settings(max_examples=100, deadline=None)
@given(_ops(6), st.lists(st.one_of(_near(6), st.integers(0, (1 << 128) - 1)), min_size=1, max_size=12))
def test_ipv6_lookup_matches_naive_reference(ops, addrs):
    """fib6_lookup: the local table, then main; the filters as ip6_route_check_nh uses them."""
    _run(6, ops, addrs)


def test_ipv4_long_prefixes_split_groups():
    """DIR-16-8-8: a /32 inside a /24 inside a /16 inside a default route; each level answers."""
    main = FibTable(4, RT_TABLE_MAIN)
    fib = F.FibViews(4, [main])
    fib.get()
    routes = {}
    for text, oif in (("0.0.0.0/0", 1), ("10.1.0.0/16", 2), ("10.1.2.0/24", 3), ("10.1.2.3/32", 4),
                      ("10.1.2.128/25", 5), ("10.1.0.0/17", 6)):  # fmt: skip
        addr, plen = text.split("/")
        fa = FibAlias(4, parse_addr(addr)[1], int(plen), oif=oif)
        main.insert(fa)
        routes[oif] = fa
    views = fib.get()
    for addr, oif in (("10.1.2.3", 4), ("10.1.2.4", 3), ("10.1.2.200", 5), ("10.1.3.1", 6), ("10.1.200.1", 2),
                      ("10.2.0.0", 1), ("255.255.255.255", 1)):  # fmt: skip
        row = F.fib4_lookup(views, parse_addr(addr)[1])
        assert fib.fas[row] is routes[oif], addr
    # parents: a filter that refuses the /32 falls back to the /24, then the /16
    assert fib.fas[F.fib4_lookup_match(views, parse_addr("10.1.2.3")[1], 0, 0, 3)] is routes[3]
    assert fib.fas[F.fib4_lookup_match(views, parse_addr("10.1.2.3")[1], 0, 0, 2)] is routes[2]
    assert F.fib4_lookup_match(views, parse_addr("10.1.2.3")[1], 0, 0, 9) == -1


def test_network_views_follow_route_changes():
    """net.fib_views(): the compiled lookup the classic lane calls gives net.fib_lookup's route, and
    the generation moves with `ip route add` / `del` / a link going down."""
    net = parse_network(
        "link add p0 type dummy\nlink set p0 up\naddr add 10.0.0.1/24 dev p0\n"
        "addr add 2001:db8::1/64 dev p0\nroute add 192.168.0.0/16 via 10.0.0.254\n"
    )
    fv = net.fib_views()
    assert net.fib_views() is fv  # cached while nothing changes
    rt4 = fv[0][3]
    row = F.fib_lookup4(fv, parse_addr("192.168.7.7")[1])
    res = net.fib_lookup(4, parse_addr("192.168.7.7")[1])
    assert rt4[row, F.RT_OIF] == res.oif == net.link_by_name("p0").ifindex
    assert rt4[row, F.RT_FLAGS] & F.RTF_GATEWAY and rt4[row, F.RT_GW] == parse_addr("10.0.0.254")[1]
    lk, _ = net.link_views()
    assert F.fib_result_mtu(rt4, row, lk) == res.mtu == 1500
    local = F.fib_lookup4(fv, parse_addr("10.0.0.1")[1])
    assert rt4[local, F.RT_TYPE] == RouteType.LOCAL and rt4[local, F.RT_TABLE] == RT_TABLE_LOCAL
    row6 = F.fib_lookup6(fv, *F.addr6_words(parse_addr("2001:db8::99")[1]))
    assert fv[1][5][row6, F.RT_PREFIXLEN] == 64
    assert F.fib_lookup6(fv, *F.addr6_words(parse_addr("2001:db9::1")[1])) == -1

    net.route_add(FibAlias(4, parse_addr("172.16.0.0")[1], 12, gateway=parse_addr("10.0.0.253")[1]))
    fv2 = net.fib_views()
    assert fv2[2] != fv[2]
    assert net.fib_lookup(4, parse_addr("172.16.1.1")[1]).gateway == parse_addr("10.0.0.253")[1]
    net.route_del(FibAlias(4, parse_addr("192.168.0.0")[1], 16))
    assert F.fib_lookup4(net.fib_views(), parse_addr("192.168.7.7")[1]) == -1
    net.link_set(net.link_by_name("p0"), up=False)
    fv3 = net.fib_views()
    assert fv3[2] != fv2[2]
    assert F.fib_lookup4(fv3, parse_addr("10.0.0.9")[1]) == -1  # the prefix route went with the link
    assert net.fib_lookup(4, parse_addr("10.0.0.1")[1]).type == RouteType.LOCAL  # the local route stays


def test_small_table_views_stay_small():
    """A gateway's handful of routes: under 4 MiB of arrays for both families (DIR-24-8 needs 64)."""
    net = parse_network("link add p0 type dummy\nlink set p0 up\naddr add 10.0.0.1/24 dev p0\n"
                        "route add default via 10.0.0.254\naddr add 2001:db8::1/64 dev p0\n")  # fmt: skip
    assert net._fib[4].nbytes() + net._fib[6].nbytes() < 4 << 20


def test_many_prefixes_in_place_then_rebuilt():
    """Thousands of new prefixes go in place (no rebuild between them) until an array is full; the
    result equals a build from scratch."""
    rng = np.random.default_rng(7)
    main = FibTable(4, RT_TABLE_MAIN)
    fib = F.FibViews(4, [main])
    fib.get()
    seen = set()
    for a, plen in zip(rng.integers(0, 1 << 32, 3000), rng.integers(8, 33, 3000), strict=True):
        prefix = int(a) & inet_mask(4, int(plen))
        if (prefix, plen) in seen:
            continue
        seen.add((prefix, plen))
        main.insert(FibAlias(4, prefix, int(plen), oif=1))
    fresh = F.FibViews(4, [main])
    probes = rng.integers(0, 1 << 32, 5000)
    for d in probes:
        a, b = F.fib4_lookup(fib.get(), int(d)), F.fib4_lookup(fresh.get(), int(d))
        assert (fib.fas[a] if a >= 0 else None) is (fresh.fas[b] if b >= 0 else None)

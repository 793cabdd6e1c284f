"""Longest-prefix match against a brute-force reference (Linux: fib_trie.c › fib_table_lookup).

The reference scans every route: the longest prefix containing the address wins, then the lowest
metric, then the route added first (a later route of equal metric only backs the first one up).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.config.ipbatch import parse_network
from flowpath.net.fib import RT_TABLE_MAIN, FibAlias, FibTable
from flowpath.net.inetdev import inet_mask


def naive_lookup(routes: list[FibAlias], family: int, daddr: int) -> FibAlias | None:
    """Every route, no index: the reference the dict-per-length scan must agree with."""
    best = None
    for fa in routes:
        if daddr & inet_mask(family, fa.prefixlen) != fa.prefix:
            continue
        if best is None or (fa.prefixlen, -fa.metric) > (best.prefixlen, -best.metric):
            best = fa
    return best


def _routes(family: int):
    bits = 32 if family == 4 else 128

    @st.composite
    def route(draw):
        # Few distinct high bits so that prefixes nest and collide often.
        plen = draw(st.integers(0, bits))
        top = draw(st.integers(0, 7)) << (bits - 3)
        addr = top | draw(st.integers(0, (1 << (bits - 3)) - 1))
        return addr & inet_mask(family, plen), plen, draw(st.sampled_from([0, 1, 10, 100]))

    return st.lists(route(), max_size=60)


def _addresses(family: int):
    bits = 32 if family == 4 else 128
    return st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=40)


def _build(family: int, specs) -> tuple[FibTable, list[FibAlias]]:
    table, kept = FibTable(family, RT_TABLE_MAIN), []
    for i, (prefix, plen, metric) in enumerate(specs):
        fa = FibAlias(family, prefix, plen, metric=metric, oif=i + 1)
        try:
            table.insert(fa)
        except Exception:  # same prefix and metric: EEXIST, the table keeps the first
            continue
        kept.append(fa)
    return table, kept


@settings(max_examples=200, deadline=None)
@given(_routes(4), _addresses(4))
def test_ipv4_lpm_matches_brute_force(specs, addrs):
    """fib_table_lookup: longest prefix, then lowest metric, for 32-bit addresses."""
    table, kept = _build(4, specs)
    probes = (
        addrs
        + [fa.prefix for fa in kept]
        + [fa.prefix | ~inet_mask(4, fa.prefixlen) & 0xFFFFFFFF for fa in kept]
    )
    for daddr in probes:
        assert table.lookup(daddr) is naive_lookup(kept, 4, daddr)


@settings(max_examples=200, deadline=None)
@given(_routes(6), _addresses(6))
def test_ipv6_lpm_matches_brute_force(specs, addrs):
    """fib6_lookup: the same rule on 128-bit addresses."""
    table, kept = _build(6, specs)
    probes = addrs + [fa.prefix for fa in kept]
    for daddr in probes:
        assert table.lookup(daddr) is naive_lookup(kept, 6, daddr)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(8, 32), st.sampled_from([0, 5, 50])), max_size=30),
    st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=20),
)
def test_network_lookup_local_table_first(specs, addrs):
    """Through the batch parser: routes inside 10.0.0.0/8 and the address's kernel routes. With no
    policy rules Linux collapses local into main: one LPM over both, local first on equal prefixes."""
    lines = [
        "link add p0 type dummy",
        "link set p0 up",
        "addr add 10.0.0.1/8 dev p0",
        "route add 127.1.0.0/16 dev p0",
    ]
    for low, plen, metric in specs:
        prefix = (0x0A000000 | low << 8) & inet_mask(4, plen)
        lines.append(f"route replace {prefix >> 24}.{prefix >> 16 & 255}.{prefix >> 8 & 255}.{prefix & 255}"
                     f"/{plen} dev p0 metric {metric}")  # fmt: skip
    net = parse_network("\n".join(lines) + "\n")
    main = list(net.tables[4][RT_TABLE_MAIN])
    local = list(net.tables[4][255])
    for daddr in addrs + [0x0A000001, 0x0AFFFFFF, 0x0A000000 | addrs[0] & 0xFFFFFF, 0x7F010203, 0x7F020304]:
        want = naive_lookup(local + main, 4, daddr)
        got = net.fib_lookup(4, daddr)
        if want is None:
            assert got is None
        else:
            assert (got.prefix, got.prefixlen, got.metric, got.table) == (
                want.prefix,
                want.prefixlen,
                want.metric,
                want.table,
            )

"""The conntrack table in arrays (flowpath/netfilter/nf_conntrack_table.py): rows, key rows, the hash
index, the compiled lookup, growth, early drop, the NfConn views and unconfirmed rows.

Linux: nf_conntrack_core.c (____nf_conntrack_find, __nf_conntrack_confirm, early_drop,
nf_conntrack_free). The reference is a plain dict model (tuple -> entry), as the table was before.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from ct_helpers import skb_of
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, IPv6

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.flowtable.key import IDX_EMPTY, IDX_TOMBSTONE, flow_offload_hash, record_entry
from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.conntrack_proto import nf_ct_get_tuple
from flowpath.netfilter.conntrack_tuple import (
    NfConnTuple,
    nf_ct_invert_tuple,
    nf_ct_key_tuple,
    nf_ct_tuple_words,
)
from flowpath.netfilter.constants import IP_CT_NEW, IPS_ASSURED, NF_INET_PRE_ROUTING, NFPROTO_IPV4
from flowpath.netfilter.ct_layout import CT_STATUS, CT_TIMEOUT
from flowpath.netfilter.nf_conntrack_table import (
    CT_INITIAL_ROWS,
    CT_ROW_CONFIRMED,
    CT_ROW_UNCONFIRMED,
    CTR_NCONFIRMED,
    CTR_NTOMB,
    NF_CT_EVICTION_RANGE,
    NF_CT_NOT_FOUND,
    nf_ct_find,
    nf_ct_find_expired_ed,
    nf_ct_hash_remove,
    nf_ct_hash_remove_at,
    nf_ct_pkt_key,
)
from flowpath.packet import layout as L

SEC = 1_000_000_000
DAY = 86400 * SEC


def _tuple(k: int, l4: int = L.IPPROTO_UDP) -> NfConnTuple:
    return NfConnTuple(NFPROTO_IPV4, l4, 0x0A000000 + (k >> 16), 0x0A010009, 1024 + (k & 0xFFFF), 53)


def _add(c: Conntrack, t: NfConnTuple, now: int = 0, timeout_ns: int = DAY):
    """init_conntrack + nf_conntrack_confirm, as a packet's path does; returns the entry."""
    ct = c.init_conntrack(t, nf_ct_invert_tuple(t), now)
    ct.timeout_ns = now + timeout_ns
    skb = SimpleNamespace(ct=ct, ctinfo=IP_CT_NEW, ts_ns=now)
    assert c.nf_conntrack_confirm(skb)[0] == 1
    return skb.ct


def test_insert_find_remove_by_either_tuple():
    """____nf_conntrack_find finds an entry by its original and its reply tuple; nf_ct_delete removes both."""
    c = Conntrack(hash_seed=1)
    t = _tuple(1)
    ct = _add(c, t)
    assert c.nf_conntrack_find_get(t, 0) == (ct, 0)
    assert c.nf_conntrack_find_get(nf_ct_invert_tuple(t), 0) == (ct, 1)
    assert len(c) == 1 and c.rows_in_use() == 1
    assert c.nf_ct_kill(ct) and not c.nf_ct_kill(ct)
    assert c.nf_conntrack_find_get(t, 0) is None and len(c) == 0 and c.rows_in_use() == 0


def test_compiled_lookup_returns_the_entry_and_direction():
    c = Conntrack(hash_seed=2)
    ct = _add(c, _tuple(7))
    k = nf_ct_tuple_words(nf_ct_invert_tuple(_tuple(7)), np.zeros(16, np.uint32))
    assert nf_ct_find(c.views(), k, 0) == 2 * ct.row + 1
    k[10] ^= 1  # another port
    assert nf_ct_find(c.views(), k, 0) == NF_CT_NOT_FOUND


def test_expired_entry_is_not_found_and_is_removed():
    """nf_ct_is_expired: timeout - now <= 0; the lookup reports it (-2 - ed) and the owner kills it."""
    c = Conntrack(hash_seed=3)
    ct = _add(c, _tuple(1), timeout_ns=5 * SEC)
    k = nf_ct_tuple_words(_tuple(1), np.zeros(16, np.uint32))
    assert nf_ct_find(c.views(), k, 5 * SEC - 1) == 2 * ct.row
    r = nf_ct_find(c.views(), k, 5 * SEC)
    assert r < NF_CT_NOT_FOUND and nf_ct_find_expired_ed(r) == 2 * ct.row
    assert c.nf_conntrack_find_get(_tuple(1), 5 * SEC) is None and len(c) == 0


def test_growth_keeps_entries_views_and_identity():
    """Past the initial rows the table doubles: every entry stays findable, its NfConn is the same
    object with the same state, and views() is a new tuple."""
    c = Conntrack(hash_seed=4)
    views = c.views()
    cts = [_add(c, _tuple(k)) for k in range(CT_INITIAL_ROWS + 5)]
    for k, ct in enumerate(cts):
        ct.mark = k
    assert c.capacity == 2 * CT_INITIAL_ROWS and c.views() is not views
    for k, ct in enumerate(cts):
        found, d = c.nf_conntrack_find_get(_tuple(k), 0)
        assert found is ct and d == 0 and ct.mark == k and c.nf_ct_get(ct.row) is ct


def test_growth_within_the_reserved_rows_copies_nothing_and_past_them_keeps_every_entry():
    """Up to nf_conntrack_max's rows the row arrays grow in place (slices of buffers reserved at
    the start: their data stay where they were, only the new rows' pages are taken); a table made
    with fewer rows reserved copies its rows once it grows past them. Either way every entry stays
    findable with its key rows, and the free rows are handed out lowest first."""
    for max_entries, in_place in ((1 << 16, True), (CT_INITIAL_ROWS, False)):
        c = Conntrack(max_entries=max_entries, hash_seed=5)
        c.max_entries = 1 << 16  # the second table: nf_conntrack_max raised after it was made
        first = {n: getattr(c, n) for n in ("key", "state", "seq", "viewed", "free")}
        cts = [_add(c, _tuple(k)) for k in range(2 * CT_INITIAL_ROWS + 3)]
        assert c.capacity == 4 * CT_INITIAL_ROWS
        moved = {n for n, a in first.items() if not np.shares_memory(getattr(c, n), a)}
        assert moved == (set() if in_place else set(first)), moved
        for k, ct in enumerate(cts):
            found, d = c.nf_conntrack_find_get(_tuple(k), 0)
            assert found is ct and d == 0 and nf_ct_key_tuple(c.key[2 * ct.row]) == _tuple(k)
        assert sorted(ct.row for ct in cts) == list(range(len(cts)))  # lowest rows first
        assert c.rows_in_use() == len(cts)


def test_listing_and_iteration_keep_insertion_order():
    c = Conntrack(hash_seed=5)
    cts = [_add(c, _tuple(k)) for k in (5, 3, 9, 1)]
    c.nf_ct_kill(cts[1])
    assert list(c) == [cts[0], cts[2], cts[3]]
    assert [line.split("sport=")[1].split()[0] for line in c.listing(0).splitlines()] == ["1029", "1033", "1025"]


def test_a_killed_entry_keeps_its_state_when_its_row_is_reused():
    """A reference to a dead entry (the flowtable's, a test's) reads what it last held; the row's next
    entry is another object (Linux keeps a referenced nf_conn alive)."""
    c = Conntrack(hash_seed=6)
    old = _add(c, _tuple(1))
    old.mark, row = 77, old.row
    c.nf_ct_kill(old)
    new = _add(c, _tuple(2))
    assert new.row == row and new is not old and new.mark == 0
    new.mark = 5
    assert old.mark == 77 and old.row == -1 and old.tuplehash[0] == _tuple(1)


def _home_window(c: Conntrack, t: NfConnTuple) -> set[int]:
    k = nf_ct_tuple_words(t, np.zeros(16, np.uint32))
    icap = c.index.shape[0]
    per_bucket = max(1, icap // (1 << max(1, c.max_entries - 1).bit_length()))
    home = int(flow_offload_hash(k, 0, c.hash_seed, 1)) & (icap - 1)
    return {(home + i) % icap for i in range(NF_CT_EVICTION_RANGE * per_bucket)}


def test_early_drop_looks_only_near_the_new_tuples_home_slot():
    """early_drop scans NF_CT_EVICTION_RANGE buckets from the new tuple's: an unassured entry elsewhere
    is not evicted, and when it finds one, that one has a tuple in the window."""
    c = Conntrack(max_entries=4096, hash_seed=7)
    cts = [_add(c, _tuple(k)) for k in range(300)]  # unassured
    for k in range(1000, 1400):
        t = _tuple(k)
        window = _home_window(c, t)
        in_window = {record_entry(int(c.index[s])) >> 1 for s in window
                     if c.index[s] not in (IDX_EMPTY, IDX_TOMBSTONE)}  # fmt: skip
        r = c.early_drop_candidate(nf_ct_tuple_words(t, np.zeros(16, np.uint32)), c.max_entries, 0)
        assert (r == -1) == (not in_window)
        assert r == -1 or r in in_window
    assert len(cts) == len(c)


def test_early_drop_at_the_limit_spares_assured_entries():
    c = Conntrack(max_entries=2, hash_seed=8)
    a, b = _add(c, _tuple(1)), _add(c, _tuple(2))
    a.status |= IPS_ASSURED
    b.status |= IPS_ASSURED
    k = nf_ct_tuple_words(_tuple(3), np.zeros(16, np.uint32))
    assert not c.early_drop(k, 0)
    b.status &= ~IPS_ASSURED
    assert c.early_drop(k, 0) and list(c) == [a] and c.stat["early_drop"] == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 60), st.lists(st.integers(0, 10**6), min_size=1, max_size=12))
def test_removing_a_row_at_the_slot_the_scan_found_leaves_the_index_as_by_its_tuples(seed, n, picks):
    """nf_ct_hash_remove_at (early_drop's eviction in the lane, at the slot its scan found) leaves the
    index and the tombstone count exactly as nf_ct_hash_remove does, whichever of the row's records
    is at that slot; a small index so that runs touch and tombstones pile up."""
    c = Conntrack(max_entries=64, hash_seed=seed)  # an index of a few hundred slots
    rows = [_add(c, _tuple(k)).row for k in range(n)]
    views = c.views()
    for p in picks:
        live = [r for r in rows if c.state[r] == CT_ROW_CONFIRMED]
        if not live:
            break
        r = live[p % len(live)]
        slots = [s for s in range(c.index.shape[0]) if c.index[s] not in (IDX_EMPTY, IDX_TOMBSTONE)
                 and record_entry(int(c.index[s])) >> 1 == r]  # fmt: skip
        assert len(slots) == 2
        by_tuples = c.index.copy()
        n_tuples = nf_ct_hash_remove((by_tuples, *views[1:]), r)
        n_at = nf_ct_hash_remove_at(views, slots[p % 2])
        assert (c.index == by_tuples).all() and n_at == n_tuples
        c.ctr[CTR_NTOMB] += n_at
        c.ctr[CTR_NCONFIRMED] -= 1
        c.state[r] = CT_ROW_UNCONFIRMED
        assert c.ctr[CTR_NTOMB] == np.count_nonzero(c.index == IDX_TOMBSTONE)
    for r in rows:  # the others still found by both tuples
        if c.state[r] == CT_ROW_CONFIRMED:
            assert [nf_ct_find(views, c.key[2 * r + d], 0) for d in (0, 1)] == [2 * r, 2 * r + 1]


def test_unconfirmed_entry_of_a_rejected_packet_frees_its_row(ctt):
    """A first packet its tracker refuses (a bare SYN/ACK cannot open TCP) leaves no row behind."""
    skb = skb_of(IP(src="10.0.0.2", dst="10.1.0.9") / TCP(sport=1, dport=2, flags="SA"))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None and ctt.rows_in_use() == 0


def test_ten_thousand_dropped_new_connections_leave_no_rows():
    """Unconfirmed entries die with their packet (nf_conntrack_free): a forward chain that drops every
    new connection leaves the table with no row in use."""
    from flowpath.bench.peers import udp_frame
    from flowpath.bench.setup import CLIENT, CLIENT_MAC, GW_LAN, LAN_IF, NET, SERVER
    from flowpath.datapath import Worker
    from flowpath.packet.batch import PacketBatch
    from flowpath.packet.reason import Reason

    rules = "table inet fw {\n chain fwd {\n  type filter hook forward priority 0; policy drop;\n }\n}\n"
    w = Worker(parse_network(NET, "<t>"), parse_ruleset(rules, "<t>"))
    for base in range(0, 10000, 1000):
        b = PacketBatch(1000)
        for k in range(base, base + 1000):
            b.append(udp_frame(CLIENT_MAC, GW_LAN, CLIENT, SERVER, 1024 + k, 53, b"q"), LAN_IF, SEC)
        w.rx_batch(b)
    assert w.stats.reasons[Reason.NETFILTER_DROP] == 10000
    assert len(w.conntrack) == 0 and w.conntrack.rows_in_use() == 0


ops = st.lists(st.tuples(st.sampled_from(["add", "kill", "find", "expire"]), st.integers(0, 40)), max_size=120)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_random_insert_remove_sequences_match_a_dict(seq):
    """Against the dict the table used to be: same entries found, same count, rows freed."""
    c = Conntrack(max_entries=1 << 20, hash_seed=9)
    model: dict[NfConnTuple, object] = {}
    now = 0
    for op, k in seq:
        t = _tuple(k, L.IPPROTO_TCP if k % 3 == 0 else L.IPPROTO_UDP)
        if op == "add" and t not in model and nf_ct_invert_tuple(t) not in model:
            model[t] = _add(c, t, now)
        elif op == "kill" and t in model:
            assert c.nf_ct_kill(model.pop(t))
        elif op == "expire" and t in model:
            model[t].timeout_ns = now  # expired: the next lookup removes it
            assert c.nf_conntrack_find_get(t, now) is None
            del model[t]
        got = c.nf_conntrack_find_get(t, now)
        assert (got[0] if got else None) is model.get(t)
        now += 1
    assert len(c) == len(model) == c.rows_in_use()
    assert set(x.tuplehash[0] for x in c) == set(model)


def _pkt(l3: int, l4: str, sport: int, dport: int, icmp_type: int):
    ip = IP(src="10.0.0.2", dst="192.0.2.77") if l3 == 4 else IPv6(src="2001:db8::2", dst="2001:db8:1::77")
    if l4 == "tcp":
        return ip / TCP(sport=sport, dport=dport)
    if l4 == "udp":
        return ip / UDP(sport=sport, dport=dport)
    if l4 == "icmp":
        from scapy.all import ICMPv6EchoRequest

        return ip / (ICMP(type=icmp_type, id=sport) if l3 == 4 else ICMPv6EchoRequest(id=sport))
    if l3 == 4:
        return IP(src="10.0.0.2", dst="192.0.2.77", proto=132) / (b"\x00" * 8)  # SCTP: addresses only
    return IPv6(src="2001:db8::2", dst="2001:db8:1::77", nh=132) / (b"\x00" * 8)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([4, 6]), st.sampled_from(["tcp", "udp", "icmp", "other"]), st.integers(0, 65535),
       st.integers(0, 65535), st.sampled_from([0, 8, 13, 3]))  # fmt: skip
def test_packet_key_matches_the_python_tuple(l3, l4, sport, dport, icmp_type):
    """nf_ct_pkt_key (compiled, from the packet's bytes) builds the key of nf_ct_get_tuple's tuple."""
    skb = skb_of(_pkt(l3, l4, sport, dport, icmp_type))
    nfproto = 2 if l3 == 4 else 10
    t = nf_ct_get_tuple(skb.buf, skb.thoff, nfproto, skb.l4proto, skb.saddr, skb.daddr)
    k = np.zeros(16, np.uint32)
    assert nf_ct_pkt_key(k, skb.buf, skb.nhoff, skb.thoff, l3, skb.l4proto) == 1
    assert (k == nf_ct_tuple_words(t, np.zeros(16, np.uint32))).all()
    assert nf_ct_key_tuple(k) == t


def test_truncated_l4_header_has_no_key():
    """nf_ct_get_tuple: no ports, no tuple (a header cut short, as in an ICMP error's quote)."""
    for p, short in ((UDP(sport=1, dport=2), 3), (ICMP(id=5), 7)):
        skb = skb_of(IP(src="10.0.0.2", dst="10.1.0.9") / p)
        buf = skb.buf[: skb.thoff + short]
        assert nf_ct_get_tuple(buf, skb.thoff, NFPROTO_IPV4, skb.l4proto, skb.saddr, skb.daddr) is None
        assert nf_ct_pkt_key(np.zeros(16, np.uint32), buf, skb.nhoff, skb.thoff, 4, skb.l4proto) == 0


def test_hot_row_holds_what_the_view_writes():
    """NfConn is a view: its attributes are the row's ct_layout words, which the compiled path reads."""
    c = Conntrack(hash_seed=10)
    ct = _add(c, _tuple(3, L.IPPROTO_TCP))
    ct.status |= IPS_ASSURED
    ct.proto.state = 3
    ct.proto.seen[1].td_end = 12345
    ct.packets[1] += 2
    h = c.hot[ct.row]
    assert h[CT_STATUS] & IPS_ASSURED and h[CT_TIMEOUT] == ct.timeout_ns
    assert h[8] == 3 and h[8 + 10 + 6] == 12345 and h[4] == 2 and list(ct.packets) == [0, 2]

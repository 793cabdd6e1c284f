"""Flowtable owner (nf_flow_table_core.c): add, lookup, teardown, gc, growth, maximum, tombstones,
listing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.flowtable import FLOW_ADD_EXISTS, FLOW_ADD_FULL, FlowRoute, Flowtable, FlowTuple, core
from flowpath.flowtable.core import INDEX_SLOTS_PER_ENTRY
from flowpath.flowtable.key import F_TEARDOWN, IDX_TOMBSTONE, V_FLAGS, V_H_DEST, V_PACKETS

R = FlowRoute(2, 1500, b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x05")


def _add(ft, i, now_ns=0, l4=17, ct=None, ct_row=(-1, -1)):
    o = FlowTuple(1, 4, l4, 0x0A000000 + (i >> 16) + 1, 0xC6336407, i & 0xFFFF, 53)
    r = FlowTuple(2, 4, l4, 0xC6336407, 0x0A000000 + (i >> 16) + 1, 53, i & 0xFFFF)
    return ft.flow_offload_add(o, r, R, R, 0, ct if ct is not None else f"ct{i}", now_ns, ct_row), o, r


def test_both_directions_are_inserted_and_share_the_flow_id():
    """flow_offload_add inserts tuplehash[ORIGINAL] and [REPLY]; flow id = entry >> 1."""
    ft = Flowtable("f")
    fid, o, r = _add(ft, 7)
    eo, er = ft.lookup(o), ft.lookup(r)
    assert (eo >> 1, er >> 1, eo & 1, er & 1) == (fid, fid, 0, 1)
    assert ft.flow_ct(fid) == "ct7" and len(ft) == 1
    assert ft.lookup(FlowTuple(1, 4, 17, 1, 2, 3, 4)) == -1


def test_the_whole_key_is_compared():
    """The compare covers every key word up to __hash: iif, protocols, addresses, ports, encap."""
    ft = Flowtable("f")
    _, o, _ = _add(ft, 1)
    for field, value in (("iifidx", 9), ("l4proto", 6), ("saddr", 3), ("daddr", 3), ("sport", 9),
                         ("dport", 9), ("encap", 5), ("l3proto", 6)):  # fmt: skip
        t = FlowTuple(**{**{f: getattr(o, f) for f in o.__dataclass_fields__}, field: value})
        assert ft.lookup(t) == -1, field


def test_duplicate_tuple_is_refused():
    ft = Flowtable("f")
    _add(ft, 1)
    assert _add(ft, 1)[0] == FLOW_ADD_EXISTS and len(ft) == 1


def test_growth_keeps_entries_in_place_up_to_the_maximum():
    """Power-of-two growth up to max_entries; then flow_offload_add fails and FLOWTABLE_FULL counts."""
    ft = Flowtable("g", capacity=4, max_entries=256)
    added = [_add(ft, i) for i in range(128)]
    assert ft.capacity == 256 and len(ft) == 128
    for fid, o, r in added:
        assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1
    assert _add(ft, 999)[0] == FLOW_ADD_FULL and ft.stat_full == 1
    ft.flow_offload_del(added[0][0])
    assert _add(ft, 999)[0] == added[0][0]  # a freed id is reused


@pytest.mark.parametrize("reserve", [None, 8])
def test_growth_within_the_reservation_copies_nothing_and_past_it_copies_once(monkeypatch, reserve):
    """The row arrays are slices of buffers reserved for max_entries (RESERVE_MAX at most): growing
    within them leaves every entry where it was; past them the table copies its rows once. Either
    way entries, their conntrack rows, SA slots and the free ids (new ones under the free ones)
    come out as before."""
    if reserve is not None:
        monkeypatch.setattr(core, "RESERVE_MAX", reserve)
    ft = Flowtable("g", capacity=4, max_entries=256)
    names = ("key", "val", "nat6", "used", "xfrm_sa", "nexthop", "ct_row", "free")
    first = {n: getattr(ft, n) for n in names}
    added = [_add(ft, i, ct_row=(i, 7)) for i in range(40)]
    assert ft.capacity == 128
    moved = {n for n in names if not np.shares_memory(getattr(ft, n), first[n])}
    assert moved == (set() if reserve is None else set(names)), moved
    for i, (fid, o, r) in enumerate(added):
        assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1
        assert tuple(ft.ct_row[fid]) == (i, 7)
    assert (ft.xfrm_sa == -1).all() and (ft.ct_row[40:] == -1).all()
    assert sorted(fid for fid, _, _ in added) == list(range(40))  # lowest ids first
    ft.flow_offload_del(added[3][0])
    assert _add(ft, 999)[0] == added[3][0]  # a freed id is reused first


def test_a_host_that_refuses_the_reservation_gets_a_table_that_copies_as_it_grows(monkeypatch):
    """mmap refused (vm.overcommit_memory=2, a tight ulimit -v): the table reserves only the rows it
    uses and works as before, copying when it grows."""
    real = core.zeros_reserved

    def refuse_large(shape, dtype):
        n = np.prod(shape) * np.dtype(dtype).itemsize
        if n > 1 << 16:
            raise OSError(12, "Cannot allocate memory")
        return real(shape, dtype)

    monkeypatch.setattr(core, "zeros_reserved", refuse_large)
    ft = Flowtable("r", capacity=4)
    added = [_add(ft, i) for i in range(100)]
    assert ft.capacity == 256
    for fid, o, r in added:
        assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1


def test_tombstones_are_skipped_then_reclaimed():
    """A deleted entry leaves a tombstone that lookups walk past, or none at the end of its run;
    rebuilds drop them, so add/delete cycles do not fill the index. The count is the index's."""
    ft = Flowtable("t", capacity=64)
    keep = [_add(ft, i) for i in range(8)]
    icap = ft.index.shape[0]
    for rnd in range(50):
        tmp = [_add(ft, 1000 + 16 * rnd + j) for j in range(16)]
        for fid, _, _ in tmp:
            ft.flow_offload_del(fid)
            assert ft.ntomb == np.count_nonzero(ft.index == IDX_TOMBSTONE)
        for fid, o, r in keep:
            assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1
    assert ft.index.shape[0] == icap and ft.ntomb * 4 <= icap * 3
    assert len(ft) == 8


def test_a_removed_record_is_a_tombstone_only_inside_a_probe_run():
    """flow_index_remove on a run of records a, b, c from slot 2 (an empty slot 5 after them): b
    leaves a tombstone that c's lookup walks past; c, before the empty slot, leaves none and takes
    b's tombstone with it; a, alone at its run's end then, none either."""
    from flowpath.flowtable.key import IDX_EMPTY, flow_index_insert, flow_index_remove, flow_offload_probe_tag

    index = np.full(8, IDX_EMPTY, np.int64)
    a, b, c = (2 | (t << 16) for t in (1, 2, 3))  # one home slot, three tags
    for e, h in enumerate((a, b, c)):
        assert flow_index_insert(index, 7, 8, h, e) == 1
    assert flow_index_remove(index, 7, 8, b, 1) == 1
    assert index[3] == IDX_TOMBSTONE and flow_offload_probe_tag(index, 7, 8, c) == 2
    assert flow_index_remove(index, 7, 8, c, 2) == -1  # its own slot and the tombstone before it
    assert (index[3:5] == IDX_EMPTY).all()
    assert flow_index_remove(index, 7, 8, a, 0) == 0 and (index == IDX_EMPTY).all()
    assert flow_index_remove(index, 7, 8, a, 0) == 0  # not there


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), min_size=1, max_size=120))
def test_adds_and_deletes_keep_every_flow_findable_and_the_tombstones_counted(ops):
    """Any sequence of adds and deletes (a small index, so that runs meet): every flow in the table
    is found both ways, every deleted one is not, and ntomb is the index's tombstones."""
    ft = Flowtable("p", capacity=16, seed=7)
    live: dict[int, tuple] = {}
    gone = []
    for add, i in ops:
        if add and i not in live:
            live[i] = _add(ft, i)
        elif not add and i in live:
            fid, o, r = live.pop(i)
            ft.flow_offload_del(fid)
            gone.append((o, r))
        assert ft.ntomb == np.count_nonzero(ft.index == IDX_TOMBSTONE)
    for fid, o, r in live.values():
        assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1
    for o, r in gone:
        if all(o != x[1] for x in live.values()):
            assert ft.lookup(o) == -1 and ft.lookup(r) == -1


def test_gc_deletes_expired_and_torn_down_flows_with_packet_time():
    """nf_flow_offload_gc_step: expired (timeout - now <= 0) or TEARDOWN -> deleted; on_del sees the
    conntrack reference first (flow_offload_fixup_ct is the caller's)."""
    ft = Flowtable("gc", timeout_udp_ns=30e9, timeout_tcp_ns=60e9)
    a, ao, _ = _add(ft, 1, now_ns=0)
    b, _, _ = _add(ft, 2, now_ns=0, l4=6)
    c, _, _ = _add(ft, 3, now_ns=10e9)
    seen = []
    assert ft.gc(29_999_999_999, lambda fid, ct, fl: seen.append((fid, ct))) == []
    ft.flow_offload_teardown(c)
    assert ft.lookup(ao) >= 0
    assert ft.gc(30e9, lambda fid, ct, fl: seen.append((fid, ct, fl & F_TEARDOWN))) == [a, c]
    assert seen == [(a, "ct1", F_TEARDOWN), (c, "ct3", F_TEARDOWN)]
    assert ft.lookup(ao) == -1 and len(ft) == 1
    assert ft.gc(60e9) == [b] and len(ft) == 0


def test_teardown_hides_the_flow_from_lookup():
    """flow_offload_lookup skips entries with NF_FLOW_TEARDOWN."""
    ft = Flowtable("td")
    fid, o, r = _add(ft, 1)
    ft.flow_offload_teardown(fid)
    assert ft.lookup(o) == -1 and ft.lookup(r) == -1 and len(ft) == 1


def test_ipv6_tuples_and_listing():
    ft = Flowtable("ft6", counter=True)
    o = FlowTuple(1, 6, 6, 0x20010DB8 << 96 | 2, 0x20010DB8 << 96 | 7, 40000, 443)
    r = FlowTuple(2, 6, 6, 0x20010DB8 << 96 | 7, 0x20010DB8 << 96 | 2, 443, 40000)
    fid = ft.flow_offload_add(o, r, R, R, 0, None, 0)
    assert ft.lookup(o) == 2 * fid
    _, o4, _ = _add(ft, 5)
    ents = ft.entries()
    assert [e["saddr"] for e in ents] == ["2001:db8::2", "2001:db8::7", "10.0.0.1", "198.51.100.7"]
    text = ft.listing(now_ns=10e9, ifname={1: "lan0", 2: "wan0"}.get)
    assert "[2001:db8::2]:40000 > [2001:db8::7]:443" in text
    assert "10.0.0.1:5 > 198.51.100.7:53" in text and "wan0" in text and "20.0s" in text
    assert text.splitlines()[0] == "flowtable ft6: 2 flows, 4 entries, capacity 1024"


def test_views_follow_growth():
    """The compiled hook reads `views`; growth replaces the arrays and the views with them."""
    ft = Flowtable("v", capacity=2)
    v0 = ft.views
    for i in range(4):
        _add(ft, i)
    assert ft.views is not v0 and ft.views.key is ft.key and ft.views.mask == ft.index.shape[0] - 1


def test_a_full_probe_run_refuses_the_flow_and_leaves_the_table_consistent():
    """Inserts guarantee every entry within max_probes of its home slot (the kernels' probe bound);
    when no slot is free there, flow_offload_add fails like a full table and rolls back."""
    ft = Flowtable("p", capacity=64, max_entries=64, max_probes=1, seed=1)
    results = [_add(ft, i) for i in range(30)]
    ok = [(fid, o, r) for fid, o, r in results if fid >= 0]
    failed = len(results) - len(ok)
    assert failed > 0 and ft.stat_full == failed and len(ft) == len(ok)
    assert ft.nused == 2 * len(ok) and int(ft.used.sum()) == 2 * len(ok)
    for fid, o, r in ok:
        assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1
    for _, o, r in results:
        if _ < 0:
            assert ft.lookup(o) == -1 and ft.lookup(r) == -1


def test_the_hash_is_seeded_per_table():
    """Like Linux's random jhash seed: tuples that collide in one table do not in another."""
    from flowpath.flowtable.key import flow_offload_hash

    k = FlowTuple(1, 4, 17, 1, 2, 3, 4).words()
    assert len({flow_offload_hash(k, 0, Flowtable("s").seed, 0) for _ in range(8)}) > 1
    assert flow_offload_hash(k, 0, 7, 0) == flow_offload_hash(k, 0, 7, 0)


def test_a_full_probe_run_first_doubles_the_index():
    """Before refusing a flow for a full probe run, the owner retries once with an index twice as
    large (bounded at 8 slots per entry), so long runs in big tables do not refuse flows by bad luck."""
    ft = Flowtable("p", capacity=64, max_entries=64, max_probes=1, seed=1)
    results = [_add(ft, i) for i in range(30)]
    assert 128 < ft.index.shape[0] <= 8 * ft.capacity
    for fid, o, r in results:
        if fid >= 0:
            assert ft.lookup(o) == 2 * fid and ft.lookup(r) == 2 * fid + 1


def test_entries_keep_their_bytes_and_hits_across_growth(ftk):
    """key and val are the two halves of one row per entry (flowtable/key.py ENTRY_SIZE); growing the
    table copies both halves, so every entry lists the same and every hit (IPv4 NAT, IPv6, both
    directions) still emits the Scapy reference's bytes, with counters in their own entry."""
    ft = Flowtable("grow", capacity=2, counter=True)
    flows = [
        ftk.flow(ft, cport=41000 + i, snat=("192.0.2.1", 62000 + i) if i % 2 else None) for i in range(3)
    ]
    flows.append(ftk.flow(ft, l3=6, c="2001:db8::2", s="2001:db8::7", dnat=("2001:db8::9", 99)))
    before = ft.entries()
    for i in range(3, 40):
        ftk.flow(ft, cport=41000 + i)
    assert ft.capacity >= 64 and ft.key.shape == (ft.capacity, 16) and ft.val.shape == (ft.capacity, 8)
    assert ft.entries()[: len(before)] == before
    for _, o, r in flows:
        for t, iif in ((o, ftk.IIF_C), (r, ftk.IIF_S)):
            frame = ftk.pkt(t)
            b = ftk.batch_of(frame, iif=iif)
            ftk.hook(b, ft, 10**9)
            e = ft.lookup(t)
            assert b.flow[0] == e and b.frame_bytes(0) == ftk.ref_forward(bytes(frame), ft, e)
    assert [int(ft.val[ft.lookup(o), V_PACKETS]) for _, o, _ in flows] == [1, 1, 1, 1]


def test_entry_bytes_counts_every_table_array():
    """entry_bytes (the benchmarks' memory per entry) covers every numpy array the table holds, also
    after growth: a column added later cannot be left out of the stated memory."""
    ft = Flowtable("m", capacity=4)
    for cap in (4, 8):
        arrays = [a for a in vars(ft).values() if isinstance(a, np.ndarray)]
        assert ft.capacity == cap
        assert sum(ft.entry_bytes().values()) * cap == sum(a.nbytes for a in arrays)
        assert ft._grow()
    assert ft.entry_bytes()["key"] == 64 and ft.entry_bytes()["index"] == 8 * INDEX_SLOTS_PER_ENTRY


GW4 = (4, 2, 0xCB0071FE)  # the neighbour key (family, ifindex, address) of 203.0.113.254 on ifindex 2
GW6 = (6, 2, 0x20010DB8_00FF_0000_0000_0000_0000_00FE)
MAC_A, MAC_B = b"\x02\0\0\0\0\x0a", b"\x02\0\0\0\0\x0b"


def _add_via(ft, i, neigh_orig, neigh_reply=None, h_dest=R.h_dest):
    """Flow i whose ORIGINAL direction transmits to neigh_orig (REPLY to neigh_reply)."""
    ro = FlowRoute(2, 1500, R.h_source, h_dest, neigh=neigh_orig)
    rr = FlowRoute(1, 1500, R.h_source, MAC_A, neigh=neigh_reply)
    o = FlowTuple(1, 4, 17, 0x0A000001, 0xC6336407, 1000 + i, 53)
    r = FlowTuple(2, 4, 17, 0xC6336407, 0x0A000001, 53, 1000 + i)
    return ft.flow_offload_add(o, r, ro, rr, 0, f"ct{i}", 0)


def _h_dest(ft, e):
    return int(ft.val[e, V_H_DEST]).to_bytes(6, "big")


def test_neigh_update_rewrites_only_the_entries_through_that_neighbour():
    """flow_offload_neigh_update: the direction entries whose next hop is the neighbour (same family,
    ifindex and address) take the new address; the other direction, other neighbours and an IPv6
    neighbour with the same low bits keep theirs; an unchanged address rewrites nothing."""
    ft = Flowtable("n")
    a = _add_via(ft, 0, GW4, (4, 1, 0x0A000001))
    b = _add_via(ft, 1, GW6)
    c = _add_via(ft, 2, (4, 3, GW4[2]))  # same address, another device
    assert ft.flow_offload_neigh_update(GW4, R.h_dest) == 0  # what they cache already
    assert ft.flow_offload_neigh_update(GW4, MAC_B) == 1
    assert _h_dest(ft, 2 * a) == MAC_B and _h_dest(ft, 2 * a + 1) == MAC_A
    assert _h_dest(ft, 2 * b) == _h_dest(ft, 2 * c) == R.h_dest
    assert ft.flow_offload_neigh_update(GW4, MAC_B) == 0
    assert ft.flow_offload_neigh_update(GW6, MAC_A) == 1 and _h_dest(ft, 2 * b) == MAC_A
    assert ft.flow_offload_neigh_update((4, 9, 1), MAC_A) == 0  # a neighbour no entry uses
    assert [d["nexthop"] for d in ft.entries()] == ["203.0.113.254", "10.0.0.1", "2001:db8:ff::fe", None,
                                                    "203.0.113.254", None]  # fmt: skip


def test_neigh_teardown_tears_down_each_flow_once_and_gc_forgets_the_neighbour():
    """flow_offload_teardown_neigh: every flow with an entry through the neighbour is torn down (hidden
    from lookup), reported once; after the GC deleted them the neighbour is no longer followed."""
    ft = Flowtable("n")
    fids = [_add_via(ft, i, GW4) for i in range(3)]
    other = _add_via(ft, 3, GW6, GW4)  # through GW4 in its REPLY direction only
    keep = _add_via(ft, 4, GW6)
    assert ft.flow_offload_teardown_neigh(GW4) == sorted(fids + [other])
    assert ft.flow_offload_teardown_neigh(GW4) == []  # torn down already
    assert ft.key[2 * keep, V_FLAGS] & F_TEARDOWN == 0
    assert ft.gc(1) == sorted(fids + [other]) and len(ft) == 1
    assert GW4 not in ft._neigh and ft._neigh[GW6][0] == 1
    assert ft.nexthop[: 2 * keep].sum() == 0  # deleted entries' next hops cleared
    ft.flow_offload_del(keep)
    assert ft._neigh == {}


def test_neigh_rows_survive_growth_and_refused_adds():
    """Growth copies the next-hop column; a flow refused at the maximum leaves no reference behind."""
    ft = Flowtable("n", capacity=4, max_entries=8)
    fids = [_add_via(ft, i, GW4) for i in range(4)]
    assert ft.capacity == 8 and _add_via(ft, 9, GW4) == FLOW_ADD_FULL
    assert ft._neigh[GW4][0] == 4
    assert ft.flow_offload_neigh_update(GW4, MAC_B) == 4
    assert all(_h_dest(ft, 2 * f) == MAC_B for f in fids)


def test_entries_with_different_addresses_for_one_neighbour_are_all_rewritten():
    """Entries added with different h_dest for the same neighbour (the caller's routes disagree) are
    all rewritten by the next update, whatever address the first one cached."""
    ft = Flowtable("n")
    a, b = _add_via(ft, 0, GW4, h_dest=MAC_A), _add_via(ft, 1, GW4, h_dest=MAC_B)
    assert ft.flow_offload_neigh_update(GW4, MAC_A) == 2
    assert _h_dest(ft, 2 * a) == _h_dest(ft, 2 * b) == MAC_A

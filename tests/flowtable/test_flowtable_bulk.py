"""Bulk grouping (no Linux counterpart; 2026 RFC nft_bulk_receive): hits grouped by link-layer
header in a stable order, per-flow order kept, one header per group; bulk off = one group per hit."""

from __future__ import annotations

import numpy as np
from scapy.layers.l2 import Ether

from flowpath.flowtable import FlowRoute, Flowtable, FlowTuple
from flowpath.packet.reason import Reason

MAC_A, MAC_B = b"\x02\0\0\0\0\xaa", b"\x02\0\0\0\0\xbb"
GW2, GW3 = b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x03"


def _flow(ft, sport, oif, gw, nh, l3=4):
    a = (lambda x: 0x20010DB8 << 96 | x) if l3 == 6 else (lambda x: 0x0A000000 | x)
    o = FlowTuple(1, l3, 17, a(2), a(0x99), sport, 53)
    r = FlowTuple(oif, l3, 17, a(0x99), a(2), 53, sport)
    ft.flow_offload_add(o, r, FlowRoute(oif, 1500, gw, nh), FlowRoute(1, 1500, GW2, MAC_A), 0, None, 0)
    return o


def _setup(ftk):
    ft = Flowtable("b")
    flows = {
        "a": _flow(ft, 1001, 2, GW2, MAC_A),  # a and b share oif and next hop
        "b": _flow(ft, 1002, 2, GW2, MAC_A),
        "c": _flow(ft, 1003, 3, GW3, MAC_B),  # another port
        "d": _flow(ft, 1004, 2, GW2, MAC_B),  # same port, another next hop
        "e": _flow(ft, 1005, 2, GW2, MAC_A, l3=6),  # same neighbour, IPv6: another ethertype
    }
    seq = ["a", "c", "b", "a", "miss", "d", "c", "b", "e", "a", "d"]
    frames = []
    for i, name in enumerate(seq):
        t = flows.get(name, FlowTuple(1, 4, 17, 0x0A000002, 0x0A000099, 9, 9))
        frames.append(ftk.pkt(t, payload=bytes([i]) * 20))
    return ft, seq, ftk.batch_of(*frames)


def test_groups_by_neighbour_in_first_seen_order_keeping_batch_order(ftk):
    ft, seq, b = _setup(ftk)
    res = ftk.hook(b, ft, 0, bulk=True)
    assert b.verdict[4] == Reason.SLOW_NO_ENTRY and res.group[4] == -1
    ng = res.ngroups
    groups = [
        list(res.order[s : s + n]) for s, n in zip(res.group_start[:ng], res.group_count[:ng], strict=True)
    ]
    by_name = lambda names: [i for i, x in enumerate(seq) if x in names]  # noqa: E731
    assert groups == [by_name("ab"), by_name("c"), by_name("d"), by_name("e")]
    assert res.ngroups == 4 and res.forwarded == 10
    for g, members in enumerate(groups):
        assert all(res.group[i] == g for i in members)


def test_each_member_gets_its_groups_header(ftk):
    """One link-layer header per group, copied into each member (dev_hard_header once per bulk)."""
    ft, seq, b = _setup(ftk)
    ftk.hook(b, ft, 0)
    want = {"a": (MAC_A, GW2, 0x0800), "b": (MAC_A, GW2, 0x0800), "c": (MAC_B, GW3, 0x0800),
            "d": (MAC_B, GW2, 0x0800), "e": (MAC_A, GW2, 0x86DD)}  # fmt: skip
    for i, name in enumerate(seq):
        if name == "miss":
            continue
        p = Ether(b.frame_bytes(i))
        assert (bytes.fromhex(p.dst.replace(":", "")), bytes.fromhex(p.src.replace(":", "")), p.type) == want[
            name
        ]
        assert bytes(p.lastlayer())[:1] == bytes([i])  # payload: the packet stayed in its slot


def test_bulk_off_makes_one_group_per_hit_with_the_same_bytes(ftk):
    ft, seq, b = _setup(ftk)
    ft2, _, b2 = _setup(ftk)
    res = ftk.hook(b, ft, 0, bulk=False)
    hits = [i for i, x in enumerate(seq) if x != "miss"]
    assert res.ngroups == len(hits)
    assert list(res.order[: res.forwarded]) == hits and list(res.group_count[: res.ngroups]) == [1] * len(
        hits
    )
    assert list(res.group[hits]) == list(range(len(hits)))
    ftk.hook(b2, ft2, 0, bulk=True)
    assert all(b.frame_bytes(i) == b2.frame_bytes(i) for i in range(len(seq)))


def test_group_scratch_is_clean_for_the_next_batch(ftk):
    """The group hash is zeroed on return, so a second batch groups from scratch."""
    ft, seq, b = _setup(ftk)
    res = ftk.hook(b, ft, 0)
    ng = res.ngroups
    ft2, _, b2 = _setup(ftk)
    b2.verdict[:] = Reason.FLOW_FORWARD
    res2 = ftk.hook(b2, ft2, 0)
    assert res2.ngroups == ng
    from flowpath.flowtable.hook import scratch_for

    assert not np.any(scratch_for(b).gtab) and not np.any(scratch_for(b2).gtab)


def test_a_too_small_shared_scratch_is_refused(ftk):
    """The kernels do not bounds-check, so the wrapper checks a caller's scratch."""
    import pytest

    from flowpath.flowtable import OffloadScratch

    ft, seq, b = _setup(ftk)
    with pytest.raises(ValueError):
        ftk.hook(b, ft, 0, scratch=OffloadScratch.alloc(4))
    res = ftk.hook(b, ft, 0, scratch=OffloadScratch.alloc(len(seq)))
    assert res.forwarded == 10

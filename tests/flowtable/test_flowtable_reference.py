"""The compiled hit path against its plain-Python reference (conftest.ref_forward, Scapy) on random
flows and packets (hypothesis), and one compiled signature per kernel after a run."""

from __future__ import annotations

import ipaddress
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP

from flowpath.flowtable import Flowtable
from flowpath.packet.reason import Reason

v4 = st.integers(0x01000000, 0xDFFFFFFF).map(lambda a: ".".join(str((a >> s) & 255) for s in (24, 16, 8, 0)))
v6 = st.integers(1, (1 << 96) - 1).map(
    lambda a: str(ipaddress.IPv6Address(0x20010DB8 << 96 | a))
)  # no "::1" (Scapy resolves it)
port = st.integers(1, 65535)


@st.composite
def cases(draw):
    l3 = draw(st.sampled_from([4, 6]))
    a = v4 if l3 == 4 else v6
    c, s = draw(a), draw(a)
    cport, sport = draw(port), draw(port)
    snat = (draw(a), draw(port)) if draw(st.booleans()) else None
    dnat = (draw(a), draw(port)) if draw(st.booleans()) else None
    return {
        "flow": dict(l3=l3, l4=draw(st.sampled_from([6, 17])), c=c, s=s, cport=cport, sport=sport, snat=snat,
                     dnat=dnat, vlan_out=draw(st.sampled_from([-1, 7, 4095 | (5 << 13)]))),
        "reply": draw(st.booleans()),
        "ttl": draw(st.integers(2, 255)),
        "payload": draw(st.binary(max_size=64)),
        "udp0": draw(st.booleans()),
        "flags": draw(st.sampled_from(["A", "PA", "FA", "R", "S"])),
    }  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_kernel_matches_the_reference_on_random_hits(ftk, case):
    """nf_flow_offload_forward (compiled) == ref_forward (Scapy) byte for byte, both directions."""
    ft = Flowtable("h")
    fid, orig, reply = ftk.flow(ft, **case["flow"])
    if fid < 0:  # a random reply tuple that equals the original one: Linux refuses it too
        return
    t, iif = (reply, ftk.IIF_S) if case["reply"] else (orig, ftk.IIF_C)
    frame = bytes(
        ftk.pkt(t, l4flags=case["flags"], ttl=case["ttl"], payload=case["payload"], udp0=case["udp0"])
    )
    b = ftk.batch_of(frame, iif=iif)
    ftk.hook(b, ft, 0)
    assert b.verdict[0] == Reason.FLOW_FORWARD
    assert b.frame_bytes(0) == ftk.ref_forward(frame, ft, ft.lookup(t))


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled signatures without the JIT"
)
def test_each_kernel_has_one_compiled_signature(ftk):
    """After a run over IPv4 and IPv6, hits and misses, bulk on and off, each kernel was compiled once:
    a second signature would mean a dtype drifted somewhere."""
    from flowpath.flowtable.bulk import flow_bulk_group, flow_neigh_xmit_range
    from flowpath.flowtable.flow_add import flow_offload_add_rows, flow_offload_del_rows, flow_offload_gc_dead
    from flowpath.flowtable.hook import _nf_flow_offload_hook, scratch_for
    from flowpath.flowtable.ip import nf_flow_offload_ip_batch, nf_flow_offload_ip_batch_prefetch
    from flowpath.flowtable.key import flow_index_build

    ft = Flowtable("sig", capacity=2)
    _, o4, r4 = ftk.flow(ft)
    _, o6, _ = ftk.flow(ft, l3=6, l4=6, c="2001:db8::2", s="2001:db8::7", snat=("2001:db8::1", 9))
    for bulk in (True, False):
        ftk.hook(ftk.batch_of(ftk.pkt(o4), ftk.pkt(o6), ftk.pkt(r4)), ft, 10**9, bulk=bulk)
        ftk.hook(ftk.batch_of(ftk.pkt(r4), iif=ftk.IIF_S), ft, 2 * 10**9, bulk=bulk)
    ft.gc(10**12)
    assert len(_nf_flow_offload_hook.signatures) == 1, _nf_flow_offload_hook.signatures
    # The stages inside a hook loaded from numba's cache are not dispatched on their own: call each
    # once on an empty batch with the hook's own arguments, which must not add a second signature.
    b = ftk.batch_of(ftk.pkt(o4))
    sc, v = scratch_for(b), ft.views
    for kernel in (nf_flow_offload_ip_batch, nf_flow_offload_ip_batch_prefetch):
        kernel(b.cols, 0, v, (sc.pkey, sc.phash), np.int64(0))
    for bulk in (True, False):
        flow_bulk_group(b.verdict, b.flow, 0, v, bulk, tuple(sc)[2:])
    flow_neigh_xmit_range(b.data, b.head, b.len, sc.group, 0, 0, sc.hdr)
    kernels = (_nf_flow_offload_hook, nf_flow_offload_ip_batch, nf_flow_offload_ip_batch_prefetch,
               flow_bulk_group, flow_neigh_xmit_range,
               flow_index_build, flow_offload_add_rows, flow_offload_del_rows, flow_offload_gc_dead)  # fmt: skip
    for k in kernels:
        assert len(k.signatures) == 1, (k.__name__, k.signatures)


def _mixed_batch(ftk, ft):
    """40 packets over 6 flows: hits both ways, NAT, IPv6, misses, exceptions, FIN then SYN."""
    flows = [ftk.flow(ft, cport=40000 + i, snat=("192.0.2.1", 61000 + i) if i % 2 else None, l4=(6, 17)[i % 2])
             for i in range(4)]  # fmt: skip
    flows.append(ftk.flow(ft, l3=6, c="2001:db8::2", s="2001:db8::7", dnat=("2001:db8::9", 99)))
    frames, iifs = [], []
    for j in range(40):
        _, o, r = flows[j % 5]
        t, iif = (r, ftk.IIF_S) if j % 3 == 0 else (o, ftk.IIF_C)
        flags = {7: "FA", 17: "S", 27: "A"}.get(j, "A")
        frames.append(ftk.pkt(t, l4flags=flags, ttl=1 if j == 11 else 64, payload=bytes([j]) * 8))
        iifs.append(iif)
    frames[5] = ftk.pkt(flows[0][1], payload=b"miss")
    frames[5][IP].sport = 1
    b = ftk.batch_of(*frames)
    b.iif[:40] = iifs
    return b


def test_prefetch_variant_matches_the_one_packet_loop(ftk):
    """nf_flow_offload_ip_batch_prefetch (the three-stage pipeline) gives the same verdicts, flows,
    bytes and table state as nf_flow_offload_ip_batch, across the pipeline's fill and a teardown."""
    from flowpath.flowtable.hook import scratch_for
    from flowpath.flowtable.ip import nf_flow_offload_ip_batch, nf_flow_offload_ip_batch_prefetch

    out = []
    for kernel in (nf_flow_offload_ip_batch, nf_flow_offload_ip_batch_prefetch):
        ft = Flowtable("p", counter=True)
        b = _mixed_batch(ftk, ft)
        sc = scratch_for(b)
        kernel(b.cols, b.n, ft.views, (sc.pkey, sc.phash), np.int64(5 * 10**9))
        out.append((b.data.copy(), b.len.copy(), b.verdict.copy(), b.flow.copy(), b.oif.copy(), ft.key.copy(),
                    ft.val.copy()))  # fmt: skip
    assert set(out[0][2][:40]) >= {Reason.FLOW_FORWARD, Reason.SLOW_NO_ENTRY, Reason.SLOW_TTL}
    for a, b in zip(out[0], out[1], strict=True):
        assert np.array_equal(a, b)


def test_large_table_takes_the_prefetch_path_end_to_end(ftk):
    """A table of PREFETCH_MIN_ENTRIES entries goes through the prefetching loop; hits still match
    the Scapy reference."""
    from flowpath.flowtable.ip import PREFETCH_MIN_ENTRIES

    ft = Flowtable("big", capacity=PREFETCH_MIN_ENTRIES)
    b = _mixed_batch(ftk, ft)
    frames = [b.frame_bytes(i) for i in range(40)]
    ftk.hook(b, ft, 0)
    hits = [i for i in range(40) if b.verdict[i] == Reason.FLOW_FORWARD]
    assert len(hits) >= 30
    for i in hits[:10]:
        assert (
            b.frame_bytes(i) == ftk.ref_forward(frames[i], ft, int(b.flow[i])) or i > 7
        )  # FIN at 7 sets CLOSING


def test_probe_tag_points_past_the_home_slot():
    """flow_offload_probe_tag (what the pipeline prefetches) returns the entry of the first record on
    the probe run with the hash's tag, past records of other tags and tombstones; -1 at an empty slot
    or when the run ends without one."""
    from flowpath.flowtable.key import IDX_TOMBSTONE, flow_index_insert, flow_offload_probe_tag

    index, mask = np.zeros(16, np.int64), 15
    h_other, h = (7 << 4) | 5, (9 << 4) | 5  # 32-bit hashes, same home slot 5, other tags
    assert flow_index_insert(index, mask, 8, h_other, 3) == 1
    assert flow_index_insert(index, mask, 8, h, 11) == 1  # lands in slot 6
    assert flow_offload_probe_tag(index, mask, 8, h) == 11
    assert flow_offload_probe_tag(index, mask, 8, h_other) == 3
    index[5] = IDX_TOMBSTONE
    assert flow_offload_probe_tag(index, mask, 8, h) == 11
    assert flow_offload_probe_tag(index, mask, 8, (1 << 4) | 5) == -1  # reaches empty slot 7
    assert flow_offload_probe_tag(index, mask, 1, h) == -1  # one probe: the tombstone only


@pytest.mark.parametrize("l3", [4, 6])
def test_a_tag_collision_on_the_probe_run_still_finds_the_entry(ftk, l3):
    """The pipeline's stage 3 takes the entry stage 2 found by tag when its key is equal, and probes
    again when it is not: here the first record with flow A's tag points at flow B's entry (a 31-bit
    tag collision, made by hand), so every packet of A must still hit A's entry, with A's bytes."""
    from flowpath.flowtable.key import flow_index_insert, flow_offload_hash

    ft = Flowtable("collide", capacity=64)
    kw = dict(c="2001:db8::2", s="2001:db8::7") if l3 == 6 else {}
    fa, oa, _ = ftk.flow(ft, l3=l3, cport=1111, **kw)
    fb, ob, _ = ftk.flow(ft, l3=l3, cport=2222, snat=("2001:db8::1" if l3 == 6 else "192.0.2.1", 9), **kw)
    ea, eb = 2 * fa, 2 * fb
    mask = ft.index.shape[0] - 1
    ft.index[:] = 0
    ha = flow_offload_hash(ft.key[ea], 0, ft.seed, 0)
    fake = ((ha >> 1) << 32) | (eb + 1)  # A's tag, B's entry
    ft.index[ha & mask] = fake
    assert flow_index_insert(ft.index, mask, ft.max_probes, ha, ea) == 1  # A's record one slot later
    for e in range(ft.capacity):
        if ft.used[e] and e != ea:
            assert flow_index_insert(ft.index, mask, ft.max_probes, flow_offload_hash(ft.key[e], 0, ft.seed, 0), e)
    frames = [ftk.pkt(oa if i % 3 else ob, payload=bytes([i]) * 16) for i in range(40)]
    b = ftk.batch_of(*frames)
    ftk.hook(b, ft, 0)
    assert list(b.verdict[:40]) == [Reason.FLOW_FORWARD] * 40
    for i in range(40):
        want = ea if i % 3 else eb
        assert b.flow[i] == want
        assert b.frame_bytes(i) == ftk.ref_forward(bytes(frames[i]), ft, want)

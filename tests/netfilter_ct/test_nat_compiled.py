"""The compiled NAT binding against its naive reference (naive_nat.py, the Python binding it replaced).

Linux: nf_nat_core.c › nf_nat_setup_info (get_unique_tuple and its steps). Random histories of new
connections (IPv4 and IPv6; TCP, UDP, ICMP echo and an address-only protocol; DNAT, SNAT, masquerade,
redirect, netmap and the null binding; port ranges, PROTO_OFFSET, clients sharing ports below 512,
in 512..1023 and above; several workers), removals (nf_ct_kill) and entries left to expire are made
through the public path: the lookup nf_conntrack_in does (which removes an expired entry with the same
tuple), init_conntrack, nat.py › nf_nat_setup_info for the DST then the SRC manip (Conntrack.nat_setup,
nf_nat_core.py), the tracker's timeout, nf_conntrack_confirm. Before each connection the reference gets
a model of the table as it is (every confirmed entry, expired ones too, and the by-source lists in
confirm order); after each manip the verdict, the reply tuple and the NAT status bits must be equal.

Where the compiled code deviates on purpose (nf_nat_core.py's docstring), equality is not asked for:
the reference counts when it took an address by hash (find_best_ips_proto over a range of several
addresses) or searched past the port search's first round, and then the chosen tuple is only held to
the invariants: its address in the range, no live entry holding it. The random flags, the second rounds
and PERSISTENT have tests of their own below.
"""

from __future__ import annotations

import ipaddress
import os
from types import SimpleNamespace

import naive_nat as naive
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.conntrack_tuple import NfConnTuple, nf_ct_invert_tuple
from flowpath.netfilter.constants import (
    IP_CT_DIR_REPLY,
    IP_CT_NEW,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    NF_ACCEPT,
    NF_NAT_MANIP_DST,
    NF_NAT_MANIP_SRC,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
)
from flowpath.netfilter.nat import nf_nat_setup_info
from flowpath.netfilter.nat_range import (
    NF_NAT_RANGE_MAP_IPS,
    NF_NAT_RANGE_NETMAP,
    NF_NAT_RANGE_PERSISTENT,
    NF_NAT_RANGE_PROTO_OFFSET,
    NF_NAT_RANGE_PROTO_RANDOM,
    NF_NAT_RANGE_PROTO_RANDOM_FULLY,
    NF_NAT_RANGE_PROTO_SPECIFIED,
    NatRequest,
    NfNatRange,
)
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason

SEC = 10**9
LONG_NS = 1000 * SEC
JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT") == "1"
EXAMPLES = 60 if JIT_OFF else 1000
NAT_BITS = IPS_SRC_NAT | IPS_DST_NAT | IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
GRE = 47  # tracked on addresses alone (no ports)


def ip(a: str) -> int:
    return int(ipaddress.ip_address(a))


# Small pools, so that sources, ports and mappings collide.
FAM = {
    4: SimpleNamespace(
        l3=NFPROTO_IPV4, clients=[ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")],
        servers=[ip("192.168.1.9"), ip("192.168.1.10")], vips=[ip("203.0.113.10"), ip("203.0.113.11")],
        gw=[ip("198.51.100.1"), ip("10.0.0.2")], gw_range=(ip("198.51.100.1"), ip("198.51.100.4")),
        snat_prefix=(ip("100.64.0.0"), ip("100.64.255.255")), dnat_prefix=(ip("192.168.1.0"), ip("192.168.1.255")),
    ),
    6: SimpleNamespace(
        l3=NFPROTO_IPV6, clients=[ip("fd00::2"), ip("fd00::3"), ip("fd00::4")],
        servers=[ip("2001:db8:1::9"), ip("2001:db8:1::a")], vips=[ip("2001:db8:2::10"), ip("2001:db8:2::11")],
        gw=[ip("2001:db8::1"), ip("fd00::2")], gw_range=(ip("2001:db8::1"), ip("2001:db8::4")),
        snat_prefix=(ip("2001:db8:64::"), ip("2001:db8:64::ffff:ffff")),
        dnat_prefix=(ip("2001:db8:1::"), ip("2001:db8:1::ffff")),
    ),
}  # fmt: skip
PORTS = [7, 511, 512, 600, 1000, 1001, 1023, 1024, 40000, 65535]
RANGES = [(1000, 1000), (1000, 1001), (1000, 1003), (1020, 1030), (1, 511), (600, 1023), (1024, 65535),
          (40000, 40127), (5000, 4000)]  # fmt: skip


# ---- strategies --------------------------------------------------------------------------------------------
def _ports(draw, flags: int) -> tuple[int, int, int]:
    if not draw(st.booleans()):
        return flags, 0, 0
    flags |= NF_NAT_RANGE_PROTO_SPECIFIED
    if draw(st.integers(0, 3)) == 0:
        flags |= NF_NAT_RANGE_PROTO_OFFSET
    lo, hi = draw(st.sampled_from(RANGES))
    return flags, lo, hi


@st.composite
def dnat_req(draw, f):
    kind = draw(st.sampled_from(["addr", "addr", "range", "netmap", "redirect", "ports"]))
    s = draw(st.sampled_from(f.servers))
    flags, lo, hi = _ports(draw, NF_NAT_RANGE_MAP_IPS)
    if kind == "range":
        return NatRequest(NF_NAT_MANIP_DST, NfNatRange(flags, f.servers[0], f.servers[1], lo, hi))
    if kind == "netmap":
        return NatRequest(NF_NAT_MANIP_DST, NfNatRange(flags | NF_NAT_RANGE_NETMAP, *f.dnat_prefix, lo, hi))
    if kind == "redirect":
        return NatRequest(NF_NAT_MANIP_DST, NfNatRange(flags & ~NF_NAT_RANGE_MAP_IPS, f.gw[0], f.gw[0], lo, hi),
                          redirect=True)  # fmt: skip
    if kind == "ports":  # no address: the ports alone
        return NatRequest(NF_NAT_MANIP_DST, NfNatRange(flags & ~NF_NAT_RANGE_MAP_IPS, 0, 0, lo, hi))
    return NatRequest(NF_NAT_MANIP_DST, NfNatRange(flags, s, s, lo, hi))


@st.composite
def snat_req(draw, f):
    kind = draw(st.sampled_from(["masq", "masq", "addr", "addr", "range", "netmap", "ports", "masq0"]))
    flags, lo, hi = _ports(draw, NF_NAT_RANGE_MAP_IPS)
    if draw(st.booleans()):
        flags |= NF_NAT_RANGE_PERSISTENT
    if kind in ("masq", "masq0"):
        g = 0 if kind == "masq0" else f.gw[0]
        return NatRequest(
            NF_NAT_MANIP_SRC, NfNatRange(flags & ~NF_NAT_RANGE_MAP_IPS, g, g, lo, hi), masquerade=True
        )
    if kind == "range":
        return NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags, *f.gw_range, lo, hi))
    if kind == "netmap":
        return NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags | NF_NAT_RANGE_NETMAP, *f.snat_prefix, lo, hi))
    if kind == "ports":
        return NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags & ~NF_NAT_RANGE_MAP_IPS, 0, 0, lo, hi))
    g = draw(st.sampled_from(f.gw))
    return NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags, g, g, lo, hi))


def orig_tuple(fam: int, proto: str, client: int, dst: int, sport: int, dport: int) -> NfConnTuple:
    l3 = FAM[fam].l3
    if proto == "icmp":
        l4, type_ = (L.IPPROTO_ICMP, 8) if fam == 4 else (L.IPPROTO_ICMPV6, 128)
        return NfConnTuple(l3, l4, client, dst, sport, sport, type_, 0)
    if proto == "gre":
        return NfConnTuple(l3, GRE, client, dst, 0, 0)
    return NfConnTuple(l3, L.IPPROTO_TCP if proto == "tcp" else L.IPPROTO_UDP, client, dst, sport, dport)


@st.composite
def conn(draw, rules):
    """A new connection: its original tuple, one of the ruleset's DNAT and SNAT requests (None: no rule
    matched, the null binding), its timeout."""
    fam = draw(st.sampled_from([4, 6]))
    f = FAM[fam]
    sport = draw(st.sampled_from(PORTS) if draw(st.booleans()) else st.sampled_from([511, 1000, 1024, 40000]))
    t = orig_tuple(fam, draw(st.sampled_from(["tcp", "tcp", "udp", "udp", "icmp", "gre"])),
                   draw(st.sampled_from(f.clients[:1] + f.clients)),
                   draw(st.sampled_from(f.servers + f.servers[:1] + f.vips)),
                   sport, draw(st.sampled_from([80, 80, 443, 1000])))  # fmt: skip
    dnat, snat = rules[fam]
    timeout_ns = draw(
        st.sampled_from([LONG_NS, LONG_NS, SEC, SEC, 2 * SEC])
    )  # short ones expire in later steps
    # the first rule of each hook most often, so that a source's mappings come from one range
    dnat = draw(st.sampled_from([dnat[0], dnat[0], dnat[1], dnat[2]]))
    snat = draw(st.sampled_from([snat[0], snat[1], snat[1], snat[1], snat[2], snat[3]]))
    return "conn", t, dnat, snat, timeout_ns


@st.composite
def histories(draw):
    """A ruleset (per family: two DNAT and three SNAT requests besides no match), then the steps:
    new connections, removals, time passing."""
    rules = {fam: ([None, *draw(st.lists(dnat_req(FAM[fam]), min_size=2, max_size=2))],
                   [None, *draw(st.lists(snat_req(FAM[fam]), min_size=3, max_size=3))]) for fam in (4, 6)}  # fmt: skip
    # an earlier source to another destination, or another client with an earlier one's port and destination
    again = st.tuples(
        st.just("again"), st.integers(0, 1000), conn(rules), st.sampled_from(["dst", "client", "l4"])
    )
    step = st.one_of(conn(rules), conn(rules), conn(rules), again, again,
                     st.tuples(st.just("kill"), st.integers(0, 1000)), st.tuples(st.just("tick"), st.integers(1, 3)))  # fmt: skip
    return draw(st.lists(step, min_size=4, max_size=40))


# ---- the table, its model, one connection ------------------------------------------------------------------
def model_of(table: Conntrack, now_ns: int) -> naive.NaiveNet:
    """The reference's view of the table: every confirmed entry (expired ones too), and the by-source
    lists of the SRC_NAT_DONE ones in confirm order (confirmed_rows' order)."""
    net = naive.NaiveNet(now_ns=now_ns, nr_cpus=table.nr_cpus)
    for r in table.confirmed_rows().tolist():
        c = table.nf_ct_get(r)
        net.add_confirmed(naive.NaiveConn(net, list(c.tuplehash), int(c.status), int(c.timeout_ns)))
    return net


def assert_bysource_arrays(table: Conntrack) -> None:
    """The compiled by-source lists hold exactly the confirmed SRC_NAT_DONE rows, each bucket in
    confirm order with consistent back links."""
    head, link = table.bys
    rows = table.confirmed_rows()
    want = {r for r in rows.tolist() if table.nf_ct_get(r).status & IPS_SRC_NAT_DONE}
    got = set()
    assert not head[head[:, 0] == 0, 1].any()
    for b in np.flatnonzero(head[:, 0]).tolist():
        prev, e = 0, int(head[b, 0])
        while e:
            r = e - 1
            nxt, back, linked = link[r].tolist()
            assert r not in got and linked == 1 and back == prev
            assert prev == 0 or table.seq[prev - 1] < table.seq[r]
            got.add(r)
            prev, e = e, nxt
        assert head[b, 1] == prev
    assert got == want
    assert int(np.count_nonzero(link[:, 2])) == len(want)


def manip_addr(t: NfConnTuple, mt: int) -> int:
    """The address a manip of type mt set, read on the reply tuple."""
    return t.dst if mt == NF_NAT_MANIP_SRC else t.src


def has_ports(t: NfConnTuple) -> bool:
    return t.l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP, L.IPPROTO_ICMP, L.IPPROTO_ICMPV6)


def check_invariants(table: Conntrack, ct, req, mt: int, verdict) -> None:
    """A manip where the compiled code deviates on purpose: the address in the range, the tuple free."""
    if verdict != NF_ACCEPT:
        assert verdict.reason == Reason.NAT_NO_PORTS, verdict
        return
    reply = ct.tuplehash[IP_CT_DIR_REPLY]
    rng = naive.nf_nat_range_of(req)
    assert rng.min_addr <= manip_addr(reply, mt) <= rng.max_addr, (reply, rng)
    if has_ports(reply) and (mt == NF_NAT_MANIP_SRC or rng.flags & NF_NAT_RANGE_PROTO_SPECIFIED):
        assert table.nf_conntrack_find_get(reply, table.now_ns) is None, reply


def open_conn(table: Conntrack, now_ns: int, t: NfConnTuple, dnat, snat, timeout_ns: int, stats: dict):
    """One new connection through the public path, each manip compared with the reference's on the
    same table state; the entry (confirmed or not), or None when the datapath would not make one."""
    table.now_ns = now_ns  # nf_conntrack_in's
    if table.nf_conntrack_find_get(t, now_ns) is not None:  # resolve_normal_ct: not a new connection
        return None
    ct = table.init_conntrack(t, nf_ct_invert_tuple(t), now_ns)
    for mt, req in ((NF_NAT_MANIP_DST, dnat), (NF_NAT_MANIP_SRC, snat)):
        before = model_of(table, now_ns)
        tuples, status = list(ct.tuplehash), int(ct.status)
        nct = naive.NaiveConn(before, list(tuples), status)
        hashed, rounds = naive.HASHED_ADDRESSES, naive.SECOND_ROUNDS
        want = naive.nf_nat_setup_info(nct, req, mt)
        deviates = naive.HASHED_ADDRESSES != hashed or naive.SECOND_ROUNDS != rounds
        got = nf_nat_setup_info(ct, req, mt)
        # what the binding removed was expired (nf_ct_gc_expired), nothing else
        gone = set(before.tuples) - set(model_of(table, now_ns).tuples)
        assert all(before.tuples[x].timeout_ns - now_ns <= 0 for x in gone), gone
        stats["expired"] += len(before.gc_expired)
        src = naive._bysource_key(nf_ct_invert_tuple(tuples[IP_CT_DIR_REPLY]))
        if mt == NF_NAT_MANIP_SRC and any(naive._bysource_key(n.tuplehash[0]) == src for n in before.gc_expired):
            stats["bysource_expired"] += 1  # the mapping of an expired entry of this source: reused, as Linux
        if deviates:
            stats["deviating"] += 1
            check_invariants(table, ct, req, mt, got)
        else:
            stats["compared"] += 1
            where = f"{t} manip {mt} {req}: {want} / {got}"
            assert (int(got), got.reason) == want, where
            if got == NF_ACCEPT:
                assert ct.tuplehash[IP_CT_DIR_REPLY] == nct.tuplehash[IP_CT_DIR_REPLY], where
                assert ct.status & NAT_BITS == nct.status & NAT_BITS, where
                # the table's key row, not only the view's copy
                assert table.get_tuple(ct.row, IP_CT_DIR_REPLY) == ct.tuplehash[IP_CT_DIR_REPLY]
        if got != NF_ACCEPT:
            table.nf_ct_release_unconfirmed()
            return ct
    ct.timeout_ns = now_ns + timeout_ns  # the tracker's nf_ct_refresh
    table.nf_conntrack_confirm(SimpleNamespace(ct=ct, ctinfo=IP_CT_NEW, ts_ns=now_ns))
    table.nf_ct_release_unconfirmed()
    return ct


def run(table: Conntrack, history, stats: dict) -> None:
    now, seen = SEC, []
    for step in history:
        if step[0] == "tick":
            now += step[1] * SEC
            continue
        if step[0] == "kill":
            rows = table.confirmed_rows().tolist()
            if rows:
                assert table.nf_ct_kill(table.nf_ct_get(rows[step[1] % len(rows)]))
                stats["killed"] += 1
            continue
        _, t, dnat, snat, timeout_ns = step if step[0] == "conn" else step[2]
        if step[0] == "again" and seen:  # an earlier tuple, one field changed
            i, how, o = step[1], step[3], seen[step[1] % len(seen)]
            if t.l3proto != o.l3proto:  # the rules drawn are the other family's
                dnat = snat = None
            f = FAM[4 if o.l3proto == NFPROTO_IPV4 else 6]
            if how == "client":
                t = o._replace(src=f.clients[i % 3])
            elif how == "l4":  # TCP and UDP share the port (GRE and ICMP stay as they are)
                other = {L.IPPROTO_TCP: L.IPPROTO_UDP, L.IPPROTO_UDP: L.IPPROTO_TCP}
                t = o._replace(l4proto=other.get(o.l4proto, o.l4proto))
            else:
                ports = o.l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP)
                t = o._replace(dst=(f.servers + f.vips)[i % 4], dport=t.dport if ports else o.dport)
        seen.append(t)
        now += SEC
        open_conn(table, now, t, dnat, snat, timeout_ns, stats)
        assert_bysource_arrays(table)


# ---- the oracle tests --------------------------------------------------------------------------------------
STATS = {"compared": 0, "deviating": 0, "expired": 0, "bysource_expired": 0, "killed": 0}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    history=histories(),
    nr_cpus=st.sampled_from([1, 1, 2, 3]),
    small=st.booleans(),
    hash_seed=st.integers(0, 2**32 - 1),
)
def test_binding_matches_naive(history, nr_cpus, small, hash_seed):
    """Every manip of every new connection: the reference's verdict, reply tuple and status bits.
    A small table (4 rows, 4 by-source buckets) grows under the test, its buckets shared by sources."""
    table = Conntrack(max_entries=4 if small else 4096, hash_seed=hash_seed)
    table.nr_cpus = nr_cpus
    run(table, history, STATS)


# ---- one history spelled out: an expired by-source entry in the way --------------------------------------
def _masq(f) -> NatRequest:
    return NatRequest(NF_NAT_MANIP_SRC, NfNatRange(0, f.gw[0], f.gw[0]), masquerade=True)


def test_expired_bysource_entry_in_the_way():
    """E (10.0.0.2:1000 -> VIP, DNATed to S:80) was masqueraded to G:1001 because F held G:1000; F is
    removed and E expires. A new 10.0.0.2:1000 -> S:80 finds E's mapping by source, and E itself
    holds it: Linux's nf_conntrack_tuple_taken collects E and calls the tuple free, so the client
    keeps G:1001. The compiled binding counts E free, notes it, and Conntrack.nat_setup removes it
    once the binding is made: the same choice as the reference."""
    f, stats = FAM[4], dict.fromkeys(STATS, 0)
    table = Conntrack(hash_seed=7)
    dnat = NatRequest(NF_NAT_MANIP_DST, NfNatRange(NF_NAT_RANGE_MAP_IPS, f.servers[0], f.servers[0]))
    F = open_conn(table, SEC, orig_tuple(4, "tcp", f.clients[1], f.servers[0], 1000, 80), None, _masq(f), LONG_NS,
                  stats)  # fmt: skip
    E = open_conn(
        table, 2 * SEC, orig_tuple(4, "tcp", f.clients[0], f.vips[0], 1000, 80), dnat, _masq(f), SEC, stats
    )
    assert (E.tuplehash[IP_CT_DIR_REPLY].dst, E.tuplehash[IP_CT_DIR_REPLY].dport) == (f.gw[0], 1001)
    assert table.nf_ct_kill(F)
    now = 10 * SEC
    table.now_ns = now
    t = orig_tuple(4, "tcp", f.clients[0], f.servers[0], 1000, 80)
    before = model_of(table, now)
    nct = naive.NaiveConn(before, [t, nf_ct_invert_tuple(t)], IPS_DST_NAT_DONE)
    assert naive.nf_nat_setup_info(nct, _masq(f), NF_NAT_MANIP_SRC) == naive.ACCEPT
    assert nct.tuplehash[IP_CT_DIR_REPLY].dport == 1001 and before.gc_expired  # Linux's choice, E collected
    ct = table.init_conntrack(t, nf_ct_invert_tuple(t), now)
    ct.status |= IPS_DST_NAT_DONE
    assert nf_nat_setup_info(ct, _masq(f), NF_NAT_MANIP_SRC) == NF_ACCEPT
    assert E.row == -1  # removed (nf_ct_gc_expired)
    assert ct.tuplehash[IP_CT_DIR_REPLY] == nct.tuplehash[IP_CT_DIR_REPLY]


def test_bysource_reuse_and_forgetting():
    """find_appropriate_src: client B, whose port clashed with A's, keeps the mapping it got (2001) to
    other destinations while one of its entries lives; once they are removed (nf_ct_kill) the compiled
    list forgets them and B's next connection gets 2000 again, as the reference says."""
    for fam, proto in ((4, "udp"), (6, "udp"), (4, "icmp"), (6, "icmp")):
        f, stats = FAM[fam], dict.fromkeys(STATS, 0)
        table = Conntrack(max_entries=4, hash_seed=3)
        flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
        snat = NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags, f.gw[0], f.gw[0], 2000, 2999))
        a, b = f.clients[:2]
        dsts = [(a, f.servers[0]), (b, f.servers[0]), (b, f.servers[1]), (b, f.vips[0]), (a, f.vips[1])]
        conns = [open_conn(table, (i + 1) * SEC, orig_tuple(fam, proto, c, d, 40000, 80), None, snat, LONG_NS, stats)
                 for i, (c, d) in enumerate(dsts)]  # fmt: skip
        assert [c.tuplehash[IP_CT_DIR_REPLY].dport for c in conns] == [2000, 2001, 2001, 2001, 2000]
        for c in conns[1:4]:
            assert table.nf_ct_kill(c)
        assert_bysource_arrays(table)
        nxt = open_conn(
            table, 9 * SEC, orig_tuple(fam, proto, b, f.vips[0], 40000, 80), None, snat, LONG_NS, stats
        )
        assert nxt.tuplehash[IP_CT_DIR_REPLY].dport == 2000 and stats["compared"] == 12
        assert_bysource_arrays(table)


def test_same_src_compares_protocol():
    """same_src: a by-source bucket shared with another protocol's entries of the same
    address and port is no reuse: B's UDP mapping (G:p + 1, its port clashed with A's) is not taken
    for its TCP or ICMP connection. Two buckets, so that they are shared."""
    for fam in (4, 6):
        f, stats = FAM[fam], dict.fromkeys(STATS, 0)
        table = Conntrack(max_entries=2, hash_seed=11)
        a, b = f.clients[:2]
        for n, p in enumerate(range(2000, 2016, 2)):
            now = 10 * (n + 1) * SEC
            for c in (a, b):
                open_conn(
                    table, now, orig_tuple(fam, "udp", c, f.servers[0], p, 53), None, _masq(f), LONG_NS, stats
                )
            for proto in ("tcp", "icmp"):
                ct = open_conn(table, now, orig_tuple(fam, proto, b, f.servers[0], p, 53), None, _masq(f), LONG_NS,
                               stats)  # fmt: skip
                assert ct.tuplehash[IP_CT_DIR_REPLY].dport == p
        assert stats["compared"] == 2 * 4 * 8 and table.bys[0].shape[0] == 2


# ---- where the compiled code deviates on purpose: invariants ------------------------------------------------
def _bind_unconfirmed(table: Conntrack, t: NfConnTuple, req: NatRequest, now_ns: int) -> NfConnTuple | None:
    """The reply the SRC manip binds for a new connection t, which is then dropped (not confirmed)."""
    table.now_ns = now_ns
    ct = table.init_conntrack(t, nf_ct_invert_tuple(t), now_ns)
    v = nf_nat_setup_info(ct, req, NF_NAT_MANIP_SRC)
    reply = ct.tuplehash[IP_CT_DIR_REPLY] if v == NF_ACCEPT else None
    table.nf_ct_release_unconfirmed()
    return reply


def test_address_range_persistent_and_spread():
    """find_best_ips_proto over several addresses (flow_mix, not the reference's blake2b): always inside
    the range, IPv6 ranges wider than 2^64 included; with PERSISTENT one address per client whatever
    the destination; without it the clients are spread over more than one address."""
    for fam in (4, 6):
        f = FAM[fam]
        ranges = [f.gw_range] + (
            [(ip("2001:db8::"), ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))] if fam == 6 else []
        )
        for lo, hi in ranges:
            table = Conntrack(hash_seed=5)
            persistent = NatRequest(
                NF_NAT_MANIP_SRC, NfNatRange(NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PERSISTENT, lo, hi)
            )
            plain = NatRequest(NF_NAT_MANIP_SRC, NfNatRange(NF_NAT_RANGE_MAP_IPS, lo, hi))
            seen = set()
            for c in range(40):
                client = f.clients[0] + c
                got = {_bind_unconfirmed(table, orig_tuple(fam, "udp", client, d, 5000, 53), persistent, SEC).dst
                       for d in f.servers + f.vips}  # fmt: skip
                assert len(got) == 1 and lo <= min(got) <= hi, got
                for d in f.servers + f.vips:
                    a = _bind_unconfirmed(table, orig_tuple(fam, "tcp", client, d, 5000, 80), plain, SEC).dst
                    assert lo <= a <= hi
                    seen.add(a)
            assert len(seen) > 1


@given(seed=st.integers(0, 2**31), fully=st.booleans(), fam=st.sampled_from([4, 6]))
@settings(max_examples=20, deadline=None)
def test_random_ports_same_seed_same_ports(seed, fully, fam):
    """NF_NAT_RANGE_PROTO_RANDOM(_FULLY): offsets from the table's seeded PRNG. Every port is inside
    the range and free (clients sharing one port and destination), tables with the same seed choose
    the same ports, and a drop for want of ports leaves nothing behind."""
    f = FAM[fam]
    flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
    flags |= NF_NAT_RANGE_PROTO_RANDOM_FULLY if fully else NF_NAT_RANGE_PROTO_RANDOM
    snat = NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags, f.gw[0], f.gw[0], 3000, 3009))
    runs = []
    for _ in range(2):
        table = Conntrack(seed=seed, hash_seed=seed)
        ports = []
        for i in range(11):  # ten ports: the eleventh client finds none
            t = orig_tuple(fam, "udp", f.clients[0] + i, f.servers[0], 1000, 53)
            table.now_ns = (i + 1) * SEC
            ct = table.init_conntrack(t, nf_ct_invert_tuple(t), table.now_ns)
            v = nf_nat_setup_info(ct, snat, NF_NAT_MANIP_SRC)
            if i == 10:
                assert v.reason == Reason.NAT_NO_PORTS and ct.tuplehash[
                    IP_CT_DIR_REPLY
                ] == nf_ct_invert_tuple(t)
                table.nf_ct_release_unconfirmed()
                break
            reply = ct.tuplehash[IP_CT_DIR_REPLY]
            assert v == NF_ACCEPT and reply.dst == f.gw[0] and 3000 <= reply.dport <= 3009
            assert table.nf_conntrack_find_get(reply, table.now_ns) is None
            ct.timeout_ns = LONG_NS
            table.nf_conntrack_confirm(SimpleNamespace(ct=ct, ctinfo=IP_CT_NEW, ts_ns=table.now_ns))
            ports.append(reply.dport)
        assert sorted(ports) == list(range(3000, 3010))
        runs.append(ports)
    assert runs[0] == runs[1]


def test_second_round_port_search():
    """Past NF_NAT_MAX_ATTEMPTS used ports the search starts again at a hash of the original tuple
    (the reference: blake2b, so only invariants): the port is inside the range and free, the same
    table state gives the same port whatever the index's hash seed, and the reference too went past
    its first round."""
    for fam in (4, 6):
        f = FAM[fam]
        flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
        snat = NatRequest(NF_NAT_MANIP_SRC, NfNatRange(flags, f.gw[0], f.gw[0], 1000, 1999))
        got = []
        for hash_seed in (1, 2):
            table, stats = Conntrack(hash_seed=hash_seed), dict.fromkeys(STATS, 0)
            for i in range(130):  # G:1000..1129 to the server, each from a client port of its own
                t = orig_tuple(fam, "udp", f.clients[1], f.servers[0], 1000 + i, 53)
                open_conn(table, SEC, t, None, snat, LONG_NS, stats)
            assert stats["deviating"] == 0 and stats["compared"] == 260
            t = orig_tuple(fam, "udp", f.clients[0], f.servers[0], 1000, 53)
            rounds = naive.SECOND_ROUNDS
            open_conn(table, 2 * SEC, t, None, snat, LONG_NS, stats)
            assert stats["deviating"] == 1 and naive.SECOND_ROUNDS > rounds
            reply = table.confirmed_rows()[-1]
            reply = table.get_tuple(int(reply), IP_CT_DIR_REPLY)
            assert reply.dst == f.gw[0] and 1130 <= reply.dport <= 1999
            got.append(reply.dport)
        assert got[0] == got[1]

"""The naive reference of NAT's tuple choice: the Python binding as it was before it was compiled.

Kept on purpose as an oracle (as naive_tcp.py is for the TCP tracker, and stumpy keeps tests/naive.py):
the functions below are copied from flowpath/netfilter/nat.py at 54f69b7^ (get_unique_tuple and what it
calls, nft_nat_setup_netmap, nf_nat_setup_info and the null binding) and from that commit's
conntrack.py (`nat_bysource`, `_bysource_key`). Changes from that copy, all so that it runs standalone
over a tiny model of the table instead of a Conntrack:
- NaiveNet is what they read of struct net: `tuples` (every tuple a confirmed entry holds, either
  direction, to its entry: what nf_conntrack_tuple_taken looks up), `nat_bysource` (a dict per source
  in insertion order, as the old Conntrack's), `now_ns`, `nr_cpus` and the seeded `rng`. An expired
  entry found by nf_conntrack_tuple_taken is removed from both and does not count, as the old
  Conntrack._find did (nf_ct_gc_expired).
- NaiveConn is the part of struct nf_conn they touch: net, tuplehash, status.
- nf_nat_setup_info returns the NfVerdict's (verdict, reason) as a plain pair.
- Two counters, HASHED_ADDRESSES and SECOND_ROUNDS, count where the compiled code deviates on purpose
  (nf_nat_core.py's docstring: find_best_ips_proto's hash, the port search's later rounds), so a test
  knows when only invariants, not equality, can be asserted.

Linux: net/netfilter/nf_nat_core.c (get_unique_tuple, find_appropriate_src, find_best_ips_proto,
nf_nat_l4proto_unique_tuple, nf_nat_used_tuple, nf_nat_setup_info) and nft_nat.c › nft_nat_setup_netmap.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from flowpath.netfilter.conntrack_tuple import NfConnTuple, nf_ct_invert_tuple, nf_ct_tuple_cpu
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    NF_ACCEPT,
    NF_DROP,
    NF_NAT_MANIP_DST,
    NF_NAT_MANIP_SRC,
    NFPROTO_IPV4,
)
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

NF_NAT_RANGE_PROTO_RANDOM_ALL = NF_NAT_RANGE_PROTO_RANDOM | NF_NAT_RANGE_PROTO_RANDOM_FULLY
NF_NAT_MAX_ATTEMPTS = 128  # nf_nat_core.c: bound the port search per packet
ACCEPT = (NF_ACCEPT, None)

HASHED_ADDRESSES = 0  # find_best_ips_proto took an address by hash (the compiled code: flow_mix)
SECOND_ROUNDS = 0  # the port search went past its first round (the compiled code: another hash)


# ---- the model of the table ------------------------------------------------------------------------------
@dataclass(eq=False)
class NaiveConn:
    """The fields of struct nf_conn the binding touches. timeout_ns: absolute expiry, packet time."""

    net: NaiveNet
    tuplehash: list
    status: int = 0
    timeout_ns: int = 0


@dataclass
class NaiveNet:
    """The fields of struct net (the old Conntrack) the binding reads."""

    now_ns: int = 0
    nr_cpus: int = 1
    seed: int = 0
    tuples: dict = field(default_factory=dict)
    nat_bysource: dict = field(default_factory=dict)
    gc_expired: list = field(default_factory=list)  # the entries nf_conntrack_tuple_taken removed

    def __post_init__(self):
        self.rng = random.Random(self.seed)

    def add_confirmed(self, ct: NaiveConn) -> None:
        """A confirmed entry, appended to its source's by-source list when it is SNAT_DONE (the old
        Conntrack.nf_conntrack_confirm)."""
        ct.status |= IPS_CONFIRMED
        for t in ct.tuplehash:
            self.tuples[t] = ct
        if ct.status & IPS_SRC_NAT_DONE:
            self.nat_bysource.setdefault(_bysource_key(ct.tuplehash[IP_CT_DIR_ORIGINAL]), {})[ct] = None

    def kill(self, ct: NaiveConn) -> None:
        """The old Conntrack._kill_row: out of the index and the by-source list."""
        for t in ct.tuplehash:
            if self.tuples.get(t) is ct:
                del self.tuples[t]
        if ct.status & IPS_SRC_NAT_DONE:
            key = _bysource_key(ct.tuplehash[IP_CT_DIR_ORIGINAL])
            users = self.nat_bysource.get(key)
            if users is not None:
                users.pop(ct, None)
                if not users:
                    del self.nat_bysource[key]

    def nf_conntrack_tuple_taken(self, tuple: NfConnTuple, ignored: NaiveConn | None) -> bool:
        """Linux: nf_conntrack_tuple_taken: does a confirmed entry other than `ignored` use `tuple`?
        An expired entry does not count and is removed (nf_ct_gc_expired)."""
        ct = self.tuples.get(tuple)
        if ct is None:
            return False
        if ct.timeout_ns - self.now_ns <= 0:
            self.kill(ct)
            self.gc_expired.append(ct)
            return False
        return ignored is None or ct is not ignored


def _bysource_key(t: NfConnTuple) -> tuple:
    """Linux: hash_by_src / same_src: protocol, source address and source port (or ICMP id)."""
    return (t.l3proto, t.l4proto, t.src, t.sport)


def nf_ct_is_confirmed(ct: NaiveConn) -> bool:
    return bool(ct.status & IPS_CONFIRMED)


def nf_nat_initialized(ct: NaiveConn, manip: int) -> bool:
    return bool(ct.status & (IPS_SRC_NAT_DONE if manip == NF_NAT_MANIP_SRC else IPS_DST_NAT_DONE))


# ---- from here on: nat.py at 54f69b7^, verbatim but for the counters and the verdict pairs ---------------
def _manip_port(t: NfConnTuple, maniptype: int) -> int:
    """The port (or ICMP id, always a source part) a manip of this type changes."""
    if t.is_icmp or maniptype == NF_NAT_MANIP_SRC:
        return t.sport
    return t.dport


def _set_manip(t: NfConnTuple, maniptype: int, addr: int, port: int) -> NfConnTuple:
    if maniptype == NF_NAT_MANIP_SRC:
        return t.with_src(addr, port)
    if t.is_icmp:
        return t._replace(dst=addr, sport=port, dport=port)  # the id is src.u.icmp.id in Linux
    return t.with_dst(addr, port)


def _has_ports(t: NfConnTuple) -> bool:
    return t.l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP, L.IPPROTO_ICMP, L.IPPROTO_ICMPV6)


def l4proto_in_range(t: NfConnTuple, maniptype: int, rng: NfNatRange) -> bool:
    """Linux: nf_nat_l4proto_in_range."""
    if not _has_ports(t):
        return True
    return rng.min_proto <= _manip_port(t, maniptype) <= rng.max_proto


def nf_in_range(t: NfConnTuple, rng: NfNatRange) -> bool:
    """Linux: nf_in_range: is the tuple's source inside the range (used for source NAT only)?"""
    if rng.flags & NF_NAT_RANGE_MAP_IPS and not rng.min_addr <= t.src <= rng.max_addr:
        return False
    if not rng.flags & NF_NAT_RANGE_PROTO_SPECIFIED:
        return True
    return l4proto_in_range(t, NF_NAT_MANIP_SRC, rng)


def nf_nat_used_tuple(t: NfConnTuple, ct: NaiveConn) -> bool:
    """Would a connection with this original tuple clash? Its reply is what the table holds."""
    reply = nf_ct_invert_tuple(t)
    return reply is not None and ct.net.nf_conntrack_tuple_taken(reply, ct)


def find_appropriate_src(ct: NaiveConn, t: NfConnTuple, rng: NfNatRange) -> NfConnTuple | None:
    """Reuse the mapping another connection from the same source got (nf_nat_bysource)."""
    users = ct.net.nat_bysource.get((t.l3proto, t.l4proto, t.src, t.sport), ())
    for other in users:
        mapped = nf_ct_invert_tuple(other.tuplehash[IP_CT_DIR_REPLY])
        result = t.with_src(mapped.src, mapped.sport)
        if nf_in_range(result, rng):
            return result
    return None


def find_best_ips_proto(t: NfConnTuple, rng: NfNatRange, maniptype: int) -> NfConnTuple:
    """Pick the address in the range: a hash of the addresses, so a client keeps its address."""
    global HASHED_ADDRESSES
    if not rng.flags & NF_NAT_RANGE_MAP_IPS:
        return t
    if rng.min_addr == rng.max_addr:
        addr = rng.min_addr
    else:
        HASHED_ADDRESSES += 1
        n = 4 if t.l3proto == NFPROTO_IPV4 else 16
        key = t.src.to_bytes(n, "big")
        if not rng.flags & NF_NAT_RANGE_PERSISTENT:
            key += t.dst.to_bytes(n, "big")
        j = int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")
        addr = rng.min_addr + j % (rng.max_addr - rng.min_addr + 1)
    return _set_manip(t, maniptype, addr, _manip_port(t, maniptype))


def nf_nat_l4proto_unique_tuple(
    t: NfConnTuple, rng: NfNatRange, maniptype: int, ct: NaiveConn
) -> NfConnTuple | None:
    """Search the port (or ICMP id) range for a tuple nobody uses; None when the search fails.

    Linux: nf_nat_l4proto_unique_tuple, with its 512/1024 conventions for unspecified ranges, its
    NF_NAT_MAX_ATTEMPTS bound and the halving second rounds. Destination ports are never changed
    unless a range asks for it.
    """
    global SECOND_ROUNDS
    if not _has_ports(t):
        return t
    port = _manip_port(t, maniptype)
    if t.is_icmp:
        if rng.flags & NF_NAT_RANGE_PROTO_SPECIFIED:
            lo, size = rng.min_proto, rng.max_proto - rng.min_proto + 1
        else:
            lo, size = 0, 65536
    elif not rng.flags & NF_NAT_RANGE_PROTO_SPECIFIED:
        if maniptype == NF_NAT_MANIP_DST:
            return t
        if port < 512:
            lo, size = 1, 511  # loose convention: ports below 512 are for credential passing
        elif port < 1024:
            lo, size = 600, 1023 - 600 + 1
        else:
            lo, size = 1024, 65535 - 1024 + 1
    else:
        lo, hi = sorted((rng.min_proto, rng.max_proto))
        size = hi - lo + 1
    random_all = rng.flags & NF_NAT_RANGE_PROTO_RANDOM_ALL
    if random_all:
        off = ct.net.rng.randrange(65536)
    elif maniptype == NF_NAT_MANIP_DST:
        off = 0
    else:
        off = port - lo  # Deviation: deterministic start at the packet's own port (see module docstring)
    attempts = min(size, NF_NAT_MAX_ATTEMPTS)
    while True:
        free = None  # the first free tuple, should none keep the connection's worker
        for _ in range(attempts):
            cand = _set_manip(
                t, maniptype, t.src if maniptype == NF_NAT_MANIP_SRC else t.dst, lo + off % size
            )
            off += 1
            if not nf_nat_used_tuple(cand, ct):
                if nf_nat_steers_here(cand, ct):
                    return cand
                free = free or cand
        if free is not None:
            return free
        if attempts >= size or attempts < 16:
            return None
        attempts //= 2
        SECOND_ROUNDS += 1
        if random_all:
            off = ct.net.rng.randrange(65536)
        else:
            # Deviation: Linux jumps to a new random offset; a hash of the tuple jumps as far, and a
            # crowd of clients sharing one source port does not walk the same ports one by one.
            key = repr((ct.tuplehash[IP_CT_DIR_ORIGINAL], attempts)).encode()
            off = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")


def nf_nat_steers_here(t: NfConnTuple, ct: NaiveConn) -> bool:
    """With several workers: would a connection NATed to t keep the worker its original tuple steers
    to? (The steering hash is symmetric, so t's CPU is its replies'.)"""
    n = ct.net.nr_cpus
    return n <= 1 or nf_ct_tuple_cpu(t, n) == nf_ct_tuple_cpu(ct.tuplehash[IP_CT_DIR_ORIGINAL], n)


def get_unique_tuple(orig: NfConnTuple, rng: NfNatRange, ct: NaiveConn, maniptype: int) -> NfConnTuple | None:
    """Linux: get_unique_tuple: keep what we can (same source mapping, same port), else search."""
    random_all = rng.flags & NF_NAT_RANGE_PROTO_RANDOM_ALL
    if maniptype == NF_NAT_MANIP_SRC and not random_all:
        if nf_in_range(orig, rng):
            if not nf_nat_used_tuple(orig, ct):
                return orig
        else:
            t = find_appropriate_src(ct, orig, rng)
            if t is not None and not nf_nat_used_tuple(t, ct):
                return t
    t = find_best_ips_proto(orig, rng, maniptype)
    if not random_all:
        if rng.flags & NF_NAT_RANGE_PROTO_SPECIFIED:
            if (
                not rng.flags & NF_NAT_RANGE_PROTO_OFFSET
                and l4proto_in_range(t, maniptype, rng)
                and (rng.min_proto == rng.max_proto or not nf_nat_used_tuple(t, ct))
            ):
                return t
        elif not nf_nat_used_tuple(t, ct):
            return t
    return nf_nat_l4proto_unique_tuple(t, rng, maniptype, ct)


def nf_nat_range_of(req: NatRequest | NfNatRange) -> NfNatRange:
    """The range a NAT statement binds: masquerade and redirect always map to their (filled) address."""
    if isinstance(req, NfNatRange):
        return req
    r = req.range
    if req.masquerade or req.redirect:
        return NfNatRange(r.flags | NF_NAT_RANGE_MAP_IPS, r.min_addr, r.min_addr, r.min_proto, r.max_proto)
    return r


def nft_nat_setup_netmap(rng: NfNatRange, addr: int, l3proto: int) -> NfNatRange:
    """`snat ip prefix to P`: keep the host part of the address, take the network part from the range.

    Linux: nft_nat.c › nft_nat_setup_netmap.
    """
    ones = (1 << (32 if l3proto == NFPROTO_IPV4 else 128)) - 1
    netmask = ~(rng.min_addr ^ rng.max_addr) & ones
    new = (addr & ~netmask & ones) | (rng.min_addr & netmask)
    return NfNatRange(rng.flags, new, new, rng.min_proto, rng.max_proto)


def nf_nat_alloc_null_binding(ct: NaiveConn, maniptype: int) -> tuple:
    """Bind a manip that no rule asked for to the current address (ports may still move on a clash)."""
    reply = ct.tuplehash[IP_CT_DIR_REPLY]
    addr = reply.dst if maniptype == NF_NAT_MANIP_SRC else reply.src
    return nf_nat_setup_info(ct, NfNatRange(NF_NAT_RANGE_MAP_IPS, addr, addr), maniptype)


def nf_nat_setup_info(ct: NaiveConn, req: NatRequest | NfNatRange | None, maniptype: int) -> tuple:
    """Bind the SRC or DST manip of an unconfirmed connection: alter its reply tuple and status.

    Linux: nf_nat_setup_info. req None is the null binding. Returns ACCEPT, or (NF_DROP, reason) with
    reason NAT_NO_PORTS or NETFILTER_DROP (masquerade without an address, a manip bound twice).
    """
    if req is None:
        return nf_nat_alloc_null_binding(ct, maniptype)
    if nf_ct_is_confirmed(ct):
        return ACCEPT
    if nf_nat_initialized(ct, maniptype):
        return NF_DROP, Reason.NETFILTER_DROP
    if isinstance(req, NatRequest) and req.maniptype != maniptype:
        raise ValueError("NAT request for the other manip type than this hook's")
    rng = nf_nat_range_of(req)
    if isinstance(req, NatRequest) and (req.masquerade or req.redirect) and rng.min_addr == 0:
        return NF_DROP, Reason.NETFILTER_DROP  # nf_nat_masquerade_ipv4: the interface has no address
    curr = nf_ct_invert_tuple(ct.tuplehash[IP_CT_DIR_REPLY])
    if rng.flags & NF_NAT_RANGE_NETMAP and rng.flags & NF_NAT_RANGE_MAP_IPS:
        rng = nft_nat_setup_netmap(rng, curr.src if maniptype == NF_NAT_MANIP_SRC else curr.dst, curr.l3proto)
    new = get_unique_tuple(curr, rng, ct, maniptype)
    if new is None:
        return NF_DROP, Reason.NAT_NO_PORTS
    if new != curr:
        ct.tuplehash[IP_CT_DIR_REPLY] = nf_ct_invert_tuple(new)  # nf_conntrack_alter_reply
        ct.status |= IPS_SRC_NAT if maniptype == NF_NAT_MANIP_SRC else IPS_DST_NAT
    ct.status |= IPS_SRC_NAT_DONE if maniptype == NF_NAT_MANIP_SRC else IPS_DST_NAT_DONE
    return ACCEPT


__all__ = ["NaiveConn", "NaiveNet", "get_unique_tuple", "nf_nat_setup_info"]

"""NAT binding: choose the translated tuple at a connection's first packet, then mangle every packet.

Linux: net/netfilter/nf_nat_core.c (nf_nat_setup_info, get_unique_tuple, find_appropriate_src,
find_best_ips_proto, nf_nat_l4proto_unique_tuple, nf_nat_used_tuple, nf_nat_alloc_null_binding,
nf_nat_packet, nf_nat_inet_fn), nf_nat_masquerade.c and nf_nat_redirect.c (the range they build).
Packet rewriting lives in nat_proto.py (nf_nat_proto.c).

Deviation: where Linux draws a random port offset for source NAT (get_random_u16), we start the search
at the packet's own port and walk up, and later rounds jump to a hash of the connection's original
tuple, so replays are deterministic; with NF_NAT_RANGE_PROTO_RANDOM(_FULLY) the offsets come from the
table's seeded PRNG. find_best_ips_proto hashes with blake2b, not jhash.
Deviation: when no free port is left, the packet is dropped with NAT_NO_PORTS here (Linux keeps the
clashing tuple and the insert fails at confirm).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from flowpath.netfilter.conntrack import Conntrack, ctinfo2dir
from flowpath.netfilter.conntrack_tuple import (
    NfConn,
    NfConnTuple,
    nf_ct_invert_tuple,
    nf_ct_is_confirmed,
    nf_ct_tuple_cpu,
)
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IP_CT_NEW,
    IP_CT_RELATED,
    IP_CT_RELATED_REPLY,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    NF_ACCEPT,
    NF_DROP,
    NF_INET_LOCAL_IN,
    NF_INET_POST_ROUTING,
    NF_NAT_MANIP_DST,
    NF_NAT_MANIP_SRC,
    NFPROTO_IPV4,
)
from flowpath.netfilter.nat_proto import _nat_statusbit, nf_nat_icmp_reply_translation, nf_nat_manip_pkt
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
from flowpath.packet.skb import SkBuff

NF_NAT_RANGE_PROTO_RANDOM_ALL = NF_NAT_RANGE_PROTO_RANDOM | NF_NAT_RANGE_PROTO_RANDOM_FULLY
NF_NAT_MAX_ATTEMPTS = 128  # nf_nat_core.c: bound the port search per packet


class NfVerdict(int):
    """An NF_* verdict (compares as the int, as Linux's unsigned int) that also carries the drop Reason."""

    reason: Reason | None

    def __new__(cls, verdict: int, reason: Reason | None = None) -> NfVerdict:
        v = super().__new__(cls, verdict)
        v.reason = reason
        return v

    def __repr__(self) -> str:
        return f"NfVerdict({int(self)}, {self.reason!r})"


ACCEPT = NfVerdict(NF_ACCEPT)


def HOOK2MANIP(hooknum: int) -> int:  # noqa: N802 (kernel macro name)
    """Source NAT happens on the way out (POSTROUTING, LOCAL_IN), destination NAT on the way in."""
    return NF_NAT_MANIP_SRC if hooknum in (NF_INET_POST_ROUTING, NF_INET_LOCAL_IN) else NF_NAT_MANIP_DST


def nf_nat_initialized(ct: NfConn, manip: int) -> bool:
    return bool(ct.status & (IPS_SRC_NAT_DONE if manip == NF_NAT_MANIP_SRC else IPS_DST_NAT_DONE))


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


def nf_nat_used_tuple(t: NfConnTuple, ct: NfConn) -> bool:
    """Would a connection with this original tuple clash? Its reply is what the table holds."""
    reply = nf_ct_invert_tuple(t)
    return reply is not None and ct.net.nf_conntrack_tuple_taken(reply, ct)


def find_appropriate_src(ct: NfConn, t: NfConnTuple, rng: NfNatRange) -> NfConnTuple | None:
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
    if not rng.flags & NF_NAT_RANGE_MAP_IPS:
        return t
    if rng.min_addr == rng.max_addr:
        addr = rng.min_addr
    else:
        n = 4 if t.l3proto == NFPROTO_IPV4 else 16
        key = t.src.to_bytes(n, "big")
        if not rng.flags & NF_NAT_RANGE_PERSISTENT:
            key += t.dst.to_bytes(n, "big")
        j = int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")
        addr = rng.min_addr + j % (rng.max_addr - rng.min_addr + 1)
    return _set_manip(t, maniptype, addr, _manip_port(t, maniptype))


def nf_nat_l4proto_unique_tuple(
    t: NfConnTuple, rng: NfNatRange, maniptype: int, ct: NfConn
) -> NfConnTuple | None:
    """Search the port (or ICMP id) range for a tuple nobody uses; None when the search fails.

    Linux: nf_nat_l4proto_unique_tuple, with its 512/1024 conventions for unspecified ranges, its
    NF_NAT_MAX_ATTEMPTS bound and the halving second rounds. Destination ports are never changed
    unless a range asks for it.
    """
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
        for _ in range(attempts):
            cand = _set_manip(
                t, maniptype, t.src if maniptype == NF_NAT_MANIP_SRC else t.dst, lo + off % size
            )
            off += 1
            if not nf_nat_used_tuple(cand, ct) and nf_nat_steers_here(cand, ct):
                return cand
        if attempts >= size or attempts < 16:
            return None
        attempts //= 2
        if random_all:
            off = ct.net.rng.randrange(65536)
        else:
            # Deviation: Linux jumps to a new random offset; a hash of the tuple jumps as far, and a
            # crowd of clients sharing one source port does not walk the same ports one by one.
            key = repr((ct.tuplehash[IP_CT_DIR_ORIGINAL], attempts)).encode()
            off = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")


def nf_nat_steers_here(t: NfConnTuple, ct: NfConn) -> bool:
    """With several workers: do the replies of a connection NATed to t steer to the worker whose
    classic path runs now? (The steering hash is symmetric, so t's own CPU is its reply's.)

    No Linux counterpart (Linux's conntrack is shared by every CPU, so any CPU may receive a reply);
    VPP's NAT44-ED gives each worker its own port range for the same reason. Only a choice NAT has
    (a port or ICMP id it may pick) is steered: a fixed mapping keeps its tuple, and such a
    connection's directions may meet different workers (nft_flow_offload.py then keeps it on the
    classic path). With one worker every tuple steers here, and NAT chooses as Linux does."""
    n = ct.net.nr_cpus
    return n <= 1 or nf_ct_tuple_cpu(t, n) == ct.net.this_cpu


def get_unique_tuple(orig: NfConnTuple, rng: NfNatRange, ct: NfConn, maniptype: int) -> NfConnTuple | None:
    """Linux: get_unique_tuple: keep what we can (same source mapping, same port), else search."""
    random_all = rng.flags & NF_NAT_RANGE_PROTO_RANDOM_ALL
    if maniptype == NF_NAT_MANIP_SRC and not random_all:
        if nf_in_range(orig, rng):
            if not nf_nat_used_tuple(orig, ct) and nf_nat_steers_here(orig, ct):
                return orig
        else:
            t = find_appropriate_src(ct, orig, rng)
            if t is not None and not nf_nat_used_tuple(t, ct) and nf_nat_steers_here(t, ct):
                return t
    t = find_best_ips_proto(orig, rng, maniptype)
    if not random_all:
        if rng.flags & NF_NAT_RANGE_PROTO_SPECIFIED:
            if (
                not rng.flags & NF_NAT_RANGE_PROTO_OFFSET
                and l4proto_in_range(t, maniptype, rng)
                and (rng.min_proto == rng.max_proto or not nf_nat_used_tuple(t, ct))
                and (rng.min_proto == rng.max_proto or nf_nat_steers_here(t, ct))
            ):
                return t
        elif not nf_nat_used_tuple(t, ct) and nf_nat_steers_here(t, ct):
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

    Linux: nft_nat.c › nft_nat_setup_netmap (run by nft_nat_eval before nf_nat_setup_info; the rule
    evaluator hands the prefix range over as is, so it runs here).
    """
    ones = (1 << (32 if l3proto == NFPROTO_IPV4 else 128)) - 1
    netmask = ~(rng.min_addr ^ rng.max_addr) & ones
    new = (addr & ~netmask & ones) | (rng.min_addr & netmask)
    return NfNatRange(rng.flags, new, new, rng.min_proto, rng.max_proto)


def nf_nat_alloc_null_binding(ct: NfConn, maniptype: int) -> NfVerdict:
    """Bind a manip that no rule asked for to the current address (ports may still move on a clash)."""
    reply = ct.tuplehash[IP_CT_DIR_REPLY]
    addr = reply.dst if maniptype == NF_NAT_MANIP_SRC else reply.src
    return nf_nat_setup_info(ct, NfNatRange(NF_NAT_RANGE_MAP_IPS, addr, addr), maniptype)


def nf_nat_setup_info(ct: NfConn, req: NatRequest | NfNatRange | None, maniptype: int) -> NfVerdict:
    """Bind the SRC or DST manip of an unconfirmed connection: alter its reply tuple and status.

    Linux: nf_nat_setup_info. req None is the null binding. Returns NF_ACCEPT, or NF_DROP whose .reason
    is NAT_NO_PORTS or NETFILTER_DROP (masquerade without an address, a manip bound twice).
    """
    if req is None:
        return nf_nat_alloc_null_binding(ct, maniptype)
    if nf_ct_is_confirmed(ct):
        return ACCEPT
    if nf_nat_initialized(ct, maniptype):
        return NfVerdict(NF_DROP, Reason.NETFILTER_DROP)
    if isinstance(req, NatRequest) and req.maniptype != maniptype:
        raise ValueError("NAT request for the other manip type than this hook's")
    rng = nf_nat_range_of(req)
    if isinstance(req, NatRequest) and (req.masquerade or req.redirect) and rng.min_addr == 0:
        return NfVerdict(
            NF_DROP, Reason.NETFILTER_DROP
        )  # nf_nat_masquerade_ipv4: the interface has no address
    curr = nf_ct_invert_tuple(ct.tuplehash[IP_CT_DIR_REPLY])
    if rng.flags & NF_NAT_RANGE_NETMAP and rng.flags & NF_NAT_RANGE_MAP_IPS:
        rng = nft_nat_setup_netmap(rng, curr.src if maniptype == NF_NAT_MANIP_SRC else curr.dst, curr.l3proto)
    new = get_unique_tuple(curr, rng, ct, maniptype)
    if new is None:
        return NfVerdict(NF_DROP, Reason.NAT_NO_PORTS)
    if new != curr:
        ct.tuplehash[IP_CT_DIR_REPLY] = nf_ct_invert_tuple(new)  # nf_conntrack_alter_reply
        ct.status |= IPS_SRC_NAT if maniptype == NF_NAT_MANIP_SRC else IPS_DST_NAT
    ct.status |= IPS_SRC_NAT_DONE if maniptype == NF_NAT_MANIP_SRC else IPS_DST_NAT_DONE
    return ACCEPT


def nf_nat_packet(ct: NfConn, ctinfo: int, hooknum: int, skb: SkBuff) -> NfVerdict:
    """Apply the bound manip of this hook to the packet (its inverse for replies). Linux: nf_nat_packet."""
    mtype = HOOK2MANIP(hooknum)
    dir = ctinfo2dir(ctinfo)
    if ct.status & _nat_statusbit(mtype, dir) and not nf_nat_manip_pkt(skb, ct, mtype, dir):
        return NfVerdict(NF_DROP, Reason.PKT_TOO_SMALL)
    return ACCEPT


DoChain = Callable[[object], "NatRequest | None | int | tuple[int, Reason | None]"]


def nf_nat_inet_fn(ct_table: Conntrack, skb: SkBuff, hooknum: int, do_chain: DoChain | None) -> NfVerdict:
    """The NAT hook: translate ICMP errors, bind new connections via the nat chains, mangle.

    Linux: nf_nat_ipv4_fn / nf_nat_ipv6_fn (RELATED ICMP errors) and nf_nat_inet_fn. `do_chain(skb)`
    runs the nat chains of this hook and returns a NatRequest, None (no NAT rule matched) or a verdict
    (an int, or (verdict, reason)); it is called only for a manip not yet bound. Returns an NfVerdict:
    it compares equal to NF_ACCEPT / NF_DROP and carries the drop reason in .reason.
    """
    ct = skb.ct
    if ct is None:
        return ACCEPT
    ctinfo = skb.ctinfo
    maniptype = HOOK2MANIP(hooknum)
    if ctinfo in (IP_CT_RELATED, IP_CT_RELATED_REPLY) and skb.l4proto in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6):
        reason = nf_nat_icmp_reply_translation(skb, ct, ctinfo2dir(ctinfo), maniptype)
        return ACCEPT if reason is None else NfVerdict(NF_DROP, reason)
    if ctinfo in (IP_CT_NEW, IP_CT_RELATED, IP_CT_RELATED_REPLY) and not nf_nat_initialized(ct, maniptype):
        req = do_chain(skb) if do_chain is not None else None
        if isinstance(req, tuple):  # (verdict, reason)
            if req[0] != NF_ACCEPT:
                return NfVerdict(req[0], req[1])
            req = None
        elif isinstance(req, int):
            if req != NF_ACCEPT:
                return NfVerdict(req, Reason.NETFILTER_DROP if req == NF_DROP else None)
            req = None
        verdict = nf_nat_setup_info(ct, req, maniptype)
        if verdict != NF_ACCEPT:
            return verdict
    return nf_nat_packet(ct, ctinfo, hooknum, skb)


__all__ = [
    "HOOK2MANIP",
    "NfVerdict",
    "IP_CT_DIR_ORIGINAL",
    "get_unique_tuple",
    "nf_nat_alloc_null_binding",
    "nf_nat_inet_fn",
    "nf_nat_initialized",
    "nf_nat_packet",
    "nf_nat_setup_info",
]

"""NAT hook: bind the translated tuple at a connection's first packet, then mangle every packet.

Linux: net/netfilter/nf_nat_core.c (nf_nat_setup_info, nf_nat_alloc_null_binding, nf_nat_packet,
nf_nat_inet_fn), nf_nat_masquerade.c and nf_nat_redirect.c (the range they build). The tuple choice
(get_unique_tuple and its steps) is compiled in nf_nat_core.py, which the classic lane calls too;
packet rewriting lives in nat_proto.py (nf_nat_proto.c).

Deviation: when no free port is left, the packet is dropped with NAT_NO_PORTS here (Linux keeps the
clashing tuple and the insert fails at confirm). nf_nat_core.py lists the port search's.
"""

from __future__ import annotations

from collections.abc import Callable

from flowpath.netfilter.conntrack import Conntrack, ctinfo2dir
from flowpath.netfilter.conntrack_tuple import NfConn, nf_ct_is_confirmed
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IP_CT_NEW,
    IP_CT_RELATED,
    IP_CT_RELATED_REPLY,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT_DONE,
    NF_ACCEPT,
    NF_DROP,
    NF_INET_LOCAL_IN,
    NF_INET_POST_ROUTING,
    NF_NAT_MANIP_DST,
    NF_NAT_MANIP_SRC,
)
from flowpath.netfilter.nat_proto import _nat_statusbit, nf_nat_icmp_reply_translation, nf_nat_manip_pkt
from flowpath.netfilter.nat_range import NF_NAT_RANGE_MAP_IPS, NatRequest, NfNatRange
from flowpath.netfilter.nf_nat_core import NAT_OK
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


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


def nf_nat_range_of(req: NatRequest | NfNatRange) -> NfNatRange:
    """The range a NAT statement binds: masquerade and redirect always map to their (filled) address."""
    if isinstance(req, NfNatRange):
        return req
    r = req.range
    if req.masquerade or req.redirect:
        return NfNatRange(r.flags | NF_NAT_RANGE_MAP_IPS, r.min_addr, r.min_addr, r.min_proto, r.max_proto)
    return r


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
        return NfVerdict(NF_DROP, Reason.NETFILTER_DROP)  # nf_nat_masquerade_ipv4: the interface has no address
    net = ct.net
    r = ct.row
    if net.nat_setup(r, maniptype, rng.flags, rng.min_addr, rng.max_addr, rng.min_proto, rng.max_proto) != NAT_OK:
        return NfVerdict(NF_DROP, Reason.NAT_NO_PORTS)
    list.__setitem__(ct.tuplehash, IP_CT_DIR_REPLY, net.get_tuple(r, IP_CT_DIR_REPLY))  # the view's copy
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
    "nf_nat_alloc_null_binding",
    "nf_nat_inet_fn",
    "nf_nat_initialized",
    "nf_nat_packet",
    "nf_nat_setup_info",
]

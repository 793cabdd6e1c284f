"""Connection tuples and the connection entry.

Linux: include/net/netfilter/nf_conntrack_tuple.h (struct nf_conntrack_tuple, nf_ct_tuple_equal),
include/net/netfilter/nf_conntrack.h (struct nf_conn, nf_ct_is_confirmed, nf_ct_expires),
net/netfilter/nf_conntrack_core.c (nf_ct_invert_tuple, __nf_ct_refresh_acct).
Addresses are ints (IPv4 32-bit, IPv6 128-bit) and ports host-order ints. The tuple is a NamedTuple, so
it hashes and compares by value like nf_ct_tuple_equal; the table is a dict keyed by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IPS_CONFIRMED,
    IPS_FIXED_TIMEOUT,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
)
from flowpath.packet import layout as L
from flowpath.packet.steer import flow_steer_tuple, port_word

NSEC_PER_SEC = 1_000_000_000

# nf_conntrack_proto_icmp.c › invmap / nf_conntrack_proto_icmpv6.c › invmap: the reply type of a query.
ICMP_INVMAP = {
    L.ICMP_ECHO: L.ICMP_ECHOREPLY,
    L.ICMP_ECHOREPLY: L.ICMP_ECHO,
    L.ICMP_TIMESTAMP: L.ICMP_TIMESTAMPREPLY,
    L.ICMP_TIMESTAMPREPLY: L.ICMP_TIMESTAMP,
    L.ICMP_INFO_REQUEST: L.ICMP_INFO_REPLY,
    L.ICMP_INFO_REPLY: L.ICMP_INFO_REQUEST,
    L.ICMP_ADDRESS: L.ICMP_ADDRESSREPLY,
    L.ICMP_ADDRESSREPLY: L.ICMP_ADDRESS,
}
ICMPV6_NI_QUERY = 139
ICMPV6_NI_REPLY = 140
ICMPV6_INVMAP = {
    L.ICMPV6_ECHO_REQUEST: L.ICMPV6_ECHO_REPLY,
    L.ICMPV6_ECHO_REPLY: L.ICMPV6_ECHO_REQUEST,
    ICMPV6_NI_QUERY: ICMPV6_NI_REPLY,
    ICMPV6_NI_REPLY: ICMPV6_NI_QUERY,
}


class NfConnTuple(NamedTuple):
    """struct nf_conntrack_tuple.

    l3proto  NFPROTO_IPV4 or NFPROTO_IPV6 (Linux: src.l3num)
    l4proto  IPPROTO_* (Linux: dst.protonum)
    src, dst addresses as ints; sport, dport host-order ports.
    ICMP/ICMPv6: the echo id sits in both sport and dport (Linux keeps it in src.u.icmp.id, which NAT
    rewrites as part of the source manip); type and code are Linux's dst.u.icmp.type/code.
    Other protocols: ports, type and code are 0 (nf_conntrack_proto_generic.c).
    """

    l3proto: int
    l4proto: int
    src: int
    dst: int
    sport: int
    dport: int
    type: int = 0
    code: int = 0

    @property
    def is_icmp(self) -> bool:
        return self.l4proto in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6)

    def with_src(self, addr: int, port: int) -> NfConnTuple:
        """This tuple with its source manip part replaced (address and port or ICMP id)."""
        if self.is_icmp:
            return self._replace(src=addr, sport=port, dport=port)
        return self._replace(src=addr, sport=port)

    def with_dst(self, addr: int, port: int) -> NfConnTuple:
        """This tuple with its destination manip part replaced (an ICMP id is a source part)."""
        if self.is_icmp:
            return self._replace(dst=addr)
        return self._replace(dst=addr, dport=port)


def nf_ct_tuple_cpu(t: NfConnTuple, nr_cpus: int) -> int:
    """The worker a packet with tuple t (either direction's) steers to (flowpath.packet.steer)."""
    l3 = 4 if t.l3proto == NFPROTO_IPV4 else 6
    return flow_steer_tuple(l3, t.l4proto, t.src, t.dst, port_word(t.l4proto, t.sport, t.dport, t.type), nr_cpus)


def nf_ct_invert_tuple(t: NfConnTuple) -> NfConnTuple | None:
    """The tuple of the opposite direction, or None when the protocol cannot invert it.

    Linux: nf_conntrack_core.c › nf_ct_invert_tuple; ICMP queries map to their reply type
    (icmp_invert_tuple); an ICMP type without a reply (an error, an unknown type) has no inverse.
    """
    if t.l4proto == L.IPPROTO_ICMP or t.l4proto == L.IPPROTO_ICMPV6:
        inv = (ICMP_INVMAP if t.l4proto == L.IPPROTO_ICMP else ICMPV6_INVMAP).get(t.type)
        if inv is None:
            return None
        return NfConnTuple(t.l3proto, t.l4proto, t.dst, t.src, t.sport, t.dport, inv, t.code)
    return NfConnTuple(t.l3proto, t.l4proto, t.dst, t.src, t.dport, t.sport)


@dataclass(slots=True)
class IpCtTcpState:
    """struct ip_ct_tcp_state: what one side has sent and may send (sequence space, window)."""

    td_end: int = 0  # max of seq + len
    td_maxend: int = 0  # max of ack + max(win, 1)
    td_maxwin: int = 0  # max(win)
    td_maxack: int = 0  # max of ack
    td_scale: int = 0  # window scale factor
    flags: int = 0  # IP_CT_TCP_FLAG_*


@dataclass(slots=True)
class IpCtTcp:
    """struct ip_ct_tcp: TCP state machine data."""

    state: int = 0
    seen: list[IpCtTcpState] = field(default_factory=lambda: [IpCtTcpState(), IpCtTcpState()])
    last_dir: int = 0
    last_index: int = 0
    last_seq: int = 0
    last_ack: int = 0
    last_end: int = 0
    last_win: int = 0
    last_wscale: int = 0
    last_flags: int = 0
    retrans: int = 0


@dataclass(slots=True)
class IpCtUdp:
    """struct nf_ct_udp: when an UDP flow with replies counts as a stream."""

    stream_ts_ns: int = 0


@dataclass(slots=True, eq=False)
class NfConn:
    """struct nf_conn.

    tuplehash  [ORIGINAL, REPLY] tuples; the table maps each to (ct, dir)
    status     IPS_* bits; mark  ct mark
    timeout_ns absolute expiry in packet time (Linux: ct->timeout in jiffies)
    packets, bytes  per-direction counters (nf_conn_acct; bytes are IP lengths as skb->len)
    proto      IpCtTcp / IpCtUdp / None (union nf_conntrack_proto)
    net        the owning Conntrack (nf_ct_net)
    ext        extension slots (Linux: ct->ext); the flowtable keeps its entry here
    """

    tuplehash: list[NfConnTuple]
    status: int = 0
    mark: int = 0
    timeout_ns: int = 0
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    proto: object = None
    net: object = None
    ext: dict = field(default_factory=dict)

    @property
    def l3proto(self) -> int:
        return self.tuplehash[IP_CT_DIR_ORIGINAL].l3proto

    @property
    def l4proto(self) -> int:
        return self.tuplehash[IP_CT_DIR_ORIGINAL].l4proto

    def __repr__(self) -> str:
        o, r = self.tuplehash[IP_CT_DIR_ORIGINAL], self.tuplehash[IP_CT_DIR_REPLY]
        return f"NfConn({o} / {r}, status={self.status:#x})"


def nf_ct_is_confirmed(ct: NfConn) -> bool:
    return bool(ct.status & IPS_CONFIRMED)


def nf_ct_is_expired(ct: NfConn, now_ns: int) -> bool:
    """Linux: nf_conntrack.h › nf_ct_is_expired (timeout - now <= 0)."""
    return ct.timeout_ns - now_ns <= 0


def nf_ct_expires(ct: NfConn, now_ns: int) -> int:
    """Nanoseconds left before expiry, never negative (nf_ct_expires)."""
    return max(ct.timeout_ns - now_ns, 0)


def nf_ct_refresh(ct: NfConn, now_ns: int, extra_ns: int) -> None:
    """Set the expiry to now + extra, unless the timeout is fixed.

    Linux: nf_conntrack_core.c › __nf_ct_refresh_acct. The flowtable calls this to pin an offloaded
    entry (nf_flow_table_extend_ct_timeout) and on teardown (flow_offload_fixup_ct).
    """
    if ct.status & IPS_FIXED_TIMEOUT:
        return
    ct.timeout_ns = now_ns + extra_ns


def nf_ct_acct_update(ct: NfConn, dir: int, nbytes: int) -> None:
    """Linux: nf_conntrack_acct.h › nf_ct_acct_update."""
    ct.packets[dir] += 1
    ct.bytes[dir] += nbytes


def nf_ct_refresh_acct(ct: NfConn, dir: int, now_ns: int, nbytes: int, extra_ns: int) -> None:
    """Linux: nf_ct_refresh_acct: refresh the timeout and count the packet in its direction."""
    nf_ct_refresh(ct, now_ns, extra_ns)
    nf_ct_acct_update(ct, dir, nbytes)


def l3num(l3proto_eth: int) -> int:
    """NFPROTO_* of an ethertype (0 when not IP)."""
    if l3proto_eth == L.ETH_P_IP:
        return NFPROTO_IPV4
    if l3proto_eth == L.ETH_P_IPV6:
        return NFPROTO_IPV6
    return 0

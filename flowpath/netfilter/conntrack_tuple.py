"""Connection tuples and the connection entry.

Linux: include/net/netfilter/nf_conntrack_tuple.h (struct nf_conntrack_tuple, nf_ct_tuple_equal),
include/net/netfilter/nf_conntrack.h (struct nf_conn, nf_ct_is_confirmed, nf_ct_expires),
net/netfilter/nf_conntrack_core.c (nf_ct_invert_tuple, __nf_ct_refresh_acct).
Addresses are ints (IPv4 32-bit, IPv6 128-bit) and ports host-order ints. The tuple is a NamedTuple, so
it hashes and compares by value like nf_ct_tuple_equal. The table (nf_conntrack_table.py) holds it as a
key row (nf_ct_tuple_words / nf_ct_key_tuple convert), and NfConn is a view of a table row: its
attributes read and write the row's `hot` words, so the compiled path and this one share the state.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np

from flowpath.flowtable.key import K_DADDR, K_ENCAP, K_PORTS, K_PROTO, K_SADDR
from flowpath.netfilter.conntrack_proto_icmp import ICMP_INVMAP, ICMPV6_INVMAP
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IPS_CONFIRMED,
    IPS_FIXED_TIMEOUT,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
)
from flowpath.netfilter.ct_layout import (
    CT_BYTES,
    CT_MARK,
    CT_PACKETS,
    CT_PROTO,
    CT_PROTO_WORDS,
    CT_STATUS,
    CT_TIMEOUT,
    TCP_LAST_ACK,
    TCP_LAST_DIR,
    TCP_LAST_END,
    TCP_LAST_FLAGS,
    TCP_LAST_INDEX,
    TCP_LAST_SEQ,
    TCP_LAST_WIN,
    TCP_LAST_WSCALE,
    TCP_RETRANS,
    TCP_SEEN,
    TCP_SEEN_WORDS,
    TCP_STATE,
    TD_END,
    TD_FLAGS,
    TD_MAXACK,
    TD_MAXEND,
    TD_MAXWIN,
    TD_SCALE,
    UDP_STREAM_TS,
)
from flowpath.netfilter.ct_row import nf_ct_refresh_acct as _refresh_acct_row
from flowpath.netfilter.nf_conntrack_table import ct_entry, nf_ct_tuple_key
from flowpath.packet import layout as L
from flowpath.packet.steer import flow_steer_tuple, port_word

NSEC_PER_SEC = 1_000_000_000


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


def nf_ct_tuple_words(t: NfConnTuple, out: np.ndarray) -> np.ndarray:
    """The key row (uint32[16]) of a tuple, written into out and returned (nf_ct_tuple_key)."""
    if t.l3proto == NFPROTO_IPV4:
        args = (out, 4, t.l4proto, (t.src, 0, 0, 0), (t.dst, 0, 0, 0), t.sport, t.dport, t.type, t.code)
    else:
        s, d, m = t.src, t.dst, 0xFFFFFFFF
        sw = (s >> 96, (s >> 64) & m, (s >> 32) & m, s & m)
        dw = (d >> 96, (d >> 64) & m, (d >> 32) & m, d & m)
        args = (out, 6, t.l4proto, sw, dw, t.sport, t.dport, t.type, t.code)
    try:
        ct_entry(nf_ct_tuple_key, args)(*args)
    except TypeError:  # fields of other int types (the JIT off gives numpy ints): the dispatcher
        nf_ct_tuple_key(*args)
    return out


def nf_ct_key_tuple(k: np.ndarray) -> NfConnTuple:
    """The tuple of a key row (the inverse of nf_ct_tuple_words)."""
    w = k.tolist()
    proto, ports, encap = w[K_PROTO], w[K_PORTS], w[K_ENCAP]
    if (proto >> 8) & 0xFF == 4:  # proto_l3, without a compiled call
        l3, src, dst = NFPROTO_IPV4, w[K_SADDR], w[K_DADDR]
    else:
        l3 = NFPROTO_IPV6
        src = (w[K_SADDR] << 96) | (w[K_SADDR + 1] << 64) | (w[K_SADDR + 2] << 32) | w[K_SADDR + 3]
        dst = (w[K_DADDR] << 96) | (w[K_DADDR + 1] << 64) | (w[K_DADDR + 2] << 32) | w[K_DADDR + 3]
    return NfConnTuple(l3, proto & 0xFF, src, dst, ports >> 16, ports & 0xFFFF, encap >> 8, encap & 0xFF)


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


def _hot_word(i: int, doc: str) -> property:
    """A property over word i of an NfConn's row (`_h`)."""

    def get(self):
        return self._h[i]

    def set(self, v):
        self._h[i] = v

    return property(get, set, doc=doc)


# The protocol views are ctypes structures over the row's CT_PROTO words: their fields are read and
# written by C code, 2-3 times faster than Python properties, which the per-packet Python trackers feel.
_c64 = ctypes.c_int64


def _struct_fields(named: dict[int, str], words: int) -> list:
    """ctypes _fields_ with the int64 word named[i] at offset i (ct_layout's TCP_* / TD_* / UDP_*)."""
    assert sorted(named) == list(range(len(named)))
    fields = [(named[i], _c64) for i in range(len(named))]
    return fields + ([("_pad", _c64 * (words - len(named)))] if words > len(named) else [])


class IpCtTcpState(ctypes.Structure):
    """struct ip_ct_tcp_state: what one side has sent and may send (sequence space, window).

    td_end max of seq + len; td_maxend max of ack + max(win, 1); td_maxwin max(win); td_maxack max
    of ack; td_scale window scale factor; flags IP_CT_TCP_FLAG_*. A view of TCP_SEEN_WORDS words of a
    row (IpCtTcp.seen) or, made with IpCtTcpState(), of its own (a scratch state).
    """

    _fields_ = _struct_fields({TD_END: "td_end", TD_MAXEND: "td_maxend", TD_MAXWIN: "td_maxwin",
                               TD_MAXACK: "td_maxack", TD_SCALE: "td_scale", TD_FLAGS: "flags"}, TCP_SEEN_WORDS)  # fmt: skip


class _Seen:
    """IpCtTcp.seen: the two IpCtTcpState views. A row's view has them in its instance dict, made
    straight over the row's words (_tcp_view); a standalone IpCtTcp() makes them per use (kept, they
    would reference their parent through ctypes' base link: a cycle only the GC frees)."""

    def __get__(self, obj, cls=None):
        return self if obj is None else (obj._seen[0], obj._seen[1])


class IpCtTcp(ctypes.Structure):
    """struct ip_ct_tcp: TCP state machine data, a view of the CT_PROTO words of a row (TCP_*
    offsets, flowpath/netfilter/ct_layout.py); seen[dir] is the IpCtTcpState of dir's sender.
    IpCtTcp() has words of its own, all zero: assigned to ct.proto, it resets the connection's
    (tcp_new). A view is valid while the table's `hot` array stays: it is made for nf_conntrack_max
    rows and moves only past them (ct.proto then gives a view of the new array).
    """

    _fields_ = _struct_fields({TCP_STATE: "state", TCP_LAST_DIR: "last_dir", TCP_LAST_INDEX: "last_index",
                               TCP_LAST_SEQ: "last_seq", TCP_LAST_ACK: "last_ack", TCP_LAST_END: "last_end",
                               TCP_LAST_WIN: "last_win", TCP_LAST_WSCALE: "last_wscale",
                               TCP_LAST_FLAGS: "last_flags", TCP_RETRANS: "retrans"}, TCP_SEEN)  # fmt: skip
    _fields_ += [("_seen", IpCtTcpState * 2), ("_pad2", _c64 * (CT_PROTO_WORDS - TCP_SEEN - 2 * TCP_SEEN_WORDS))]
    seen = _Seen()

    def __repr__(self) -> str:
        s = [{f: getattr(x, f) for f, _ in IpCtTcpState._fields_[:6]} for x in self.seen]
        return f"IpCtTcp(state={self.state}, seen={s})"


class IpCtUdp(ctypes.Structure):
    """struct nf_ct_udp: stream_ts_ns, when an UDP flow with replies counts as a stream (a view of the
    CT_PROTO words of a row, as IpCtTcp)."""

    _fields_ = _struct_fields({UDP_STREAM_TS: "stream_ts_ns"}, CT_PROTO_WORDS)


def _proto_view(cls: type, row: memoryview) -> IpCtTcp | IpCtUdp:
    """The cls view of a row's CT_PROTO words (row: a memoryview of the hot row)."""
    p = cls.from_buffer(row, 8 * CT_PROTO)
    if cls is IpCtTcp:
        off = 8 * (CT_PROTO + TCP_SEEN)
        p.seen = tuple(IpCtTcpState.from_buffer(row, off + 8 * TCP_SEEN_WORDS * d) for d in (0, 1))
    return p


assert ctypes.sizeof(IpCtTcp) == ctypes.sizeof(IpCtUdp) == 8 * CT_PROTO_WORDS
assert IpCtTcp._seen.offset == 8 * TCP_SEEN and ctypes.sizeof(IpCtTcpState) == 8 * TCP_SEEN_WORDS


class _DirWords:
    """ct.packets / ct.bytes: the two per-direction counters of a row, indexable like a list."""

    __slots__ = ("_ct", "_base")

    def __init__(self, ct: NfConn, base: int):
        self._ct, self._base = ct, base

    def __getitem__(self, d: int) -> int:
        return self._ct._h[self._base + d]

    def __setitem__(self, d: int, v: int) -> None:
        self._ct._h[self._base + d] = v

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        return iter((self[0], self[1]))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return repr(list(self))


class _TupleHash(list):
    """ct.tuplehash: [ORIGINAL, REPLY] NfConnTuples, decoded from the row's key rows; an assignment
    writes the key row too, and is refused once the entry is confirmed (its tuples are indexed;
    Linux: nf_conntrack_alter_reply WARNs the same way)."""

    __slots__ = ("_net", "_row")  # not the NfConn: a reference cycle would leave it to the GC

    def __setitem__(self, d: int, t: NfConnTuple) -> None:
        r = self._row
        if r >= 0:
            if self._net.hot[r, CT_STATUS] & IPS_CONFIRMED:
                raise ValueError(f"{self[0]} / {self[1]}: the tuples of a confirmed entry do not change")
            self._net.set_tuple(r, d, t)
        list.__setitem__(self, d, t)


class NfConn:
    """struct nf_conn: a view of row `row` of a conntrack table (`net`, flowpath.netfilter.conntrack).

    tuplehash  [ORIGINAL, REPLY] tuples (key rows 2*row and 2*row + 1)
    status     IPS_* bits; mark  ct mark
    timeout_ns absolute expiry in packet time (Linux: ct->timeout in jiffies)
    packets, bytes  per-direction counters (nf_conn_acct; bytes are IP lengths as skb->len)
    proto      IpCtTcp / IpCtUdp view of the protocol words, None for other protocols
    net        the owning Conntrack (nf_ct_net)
    ext        extension slots (Linux: ct->ext), a dict made on first use
    The table keeps one NfConn per row while the entry lives (so `is` and dict keys work); when the
    row is freed the object keeps a copy of it (row -1), as a reference keeps a dead nf_conn in Linux.
    """

    __slots__ = ("net", "row", "tuplehash", "l3proto", "l4proto", "_h", "_proto", "_ext")

    def __init__(self, net, row: int, tuplehash: list[NfConnTuple] | None = None):
        self.net, self.row = net, row
        self._h = memoryview(net.hot[row])
        if tuplehash is None:  # an entry made without a Python view (the compiled path's)
            tuplehash = [net.get_tuple(row, d) for d in (IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY)]
        self.tuplehash = th = _TupleHash(tuplehash)
        th._net, th._row = net, row
        self.l3proto, self.l4proto = tuplehash[0].l3proto, tuplehash[0].l4proto  # the original's: fixed
        self._proto = self._ext = None

    def _bind(self, hot: np.ndarray) -> None:
        """The table grew: view the same row of its new arrays."""
        self._rebind(hot[self.row])

    def _rebind(self, row: np.ndarray) -> None:
        self._h = memoryview(row)
        if self._proto is not None:
            self._proto = _proto_view(type(self._proto), self._h)

    def _detach(self) -> None:
        """The row is being freed: keep a private copy of it."""
        self._rebind(np.array(self._h, np.int64))
        self.row = self.tuplehash._row = -1

    status = _hot_word(CT_STATUS, "IPS_* bits")
    mark = _hot_word(CT_MARK, "ct mark")
    timeout_ns = _hot_word(CT_TIMEOUT, "absolute expiry, ns of packet time")

    @property
    def hot_row(self) -> np.ndarray:
        """The row's int64 words (a view: the compiled trackers read and write them in place)."""
        return np.asarray(self._h)

    @property
    def packets(self) -> _DirWords:
        return _DirWords(self, CT_PACKETS)  # made per use: fewer objects per entry for the GC to walk

    @property
    def bytes(self) -> _DirWords:
        return _DirWords(self, CT_BYTES)

    @property
    def proto(self) -> IpCtTcp | IpCtUdp | None:
        p = self._proto
        if p is None:  # made on first use
            l4 = self.l4proto
            cls = IpCtTcp if l4 == L.IPPROTO_TCP else IpCtUdp if l4 == L.IPPROTO_UDP else None
            if cls is not None:
                p = self._proto = _proto_view(cls, self._h)
        return p

    @proto.setter
    def proto(self, p: IpCtTcp | IpCtUdp) -> None:
        """Copy a standalone IpCtTcp()/IpCtUdp()'s words into the row (a fresh protocol state)."""
        dst = self.proto
        ctypes.memmove(ctypes.addressof(dst), ctypes.addressof(p), ctypes.sizeof(dst))

    @property
    def ext(self) -> dict:
        if self._ext is None:
            self._ext = {}
        return self._ext

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


def nf_ct_refresh_acct(ct: NfConn, dir: int, now_ns: int, nbytes: int, extra_ns: int) -> None:
    """Linux: nf_ct_refresh_acct: refresh the timeout and count the packet in its direction (on ct's
    row, by the compiled helper the trackers use)."""
    _refresh_acct_row(ct.hot_row, dir, now_ns, nbytes, extra_ns)


def l3num(l3proto_eth: int) -> int:
    """NFPROTO_* of an ethertype (0 when not IP)."""
    if l3proto_eth == L.ETH_P_IP:
        return NFPROTO_IPV4
    if l3proto_eth == L.ETH_P_IPV6:
        return NFPROTO_IPV6
    return 0

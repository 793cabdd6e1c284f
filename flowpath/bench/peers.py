"""The hosts on both sides of the bench gateway (flowpath/bench/setup.py) for the connection benches:
TCP endpoints that answer what the gateway emitted, as a host's stack would, and the check of every
frame the gateway emitted against the frame it came from.

No Linux counterpart (the peers of a connection-rate test: TRex's ASTF mode, or two hosts). Checksums
are verified here with a plain one's-complement sum (RFC 1071), not with flowpath's helpers, so that a
wrong incremental update in the gateway cannot be confirmed by the code that made it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from flowpath.packet import layout as L

IP_DF = 0x4000
TTL = 64  # what the peers send; the gateway's output must carry TTL - 1
MSS_OPTION = struct.pack(">BBH", 2, 4, 1460)  # on SYN and SYN-ACK, as every stack sends it
WINDOW = 65535  # no window scaling: every segment of the exchange fits one window
_IP = struct.Struct(">BBHHHBBHII")
_TCP = struct.Struct(">HHIIBBHHH")
_UDP = struct.Struct(">HHHH")
_PORTS = struct.Struct(">HH")


class Mismatch(RuntimeError):
    """A frame the gateway emitted is not what it should have made of the frame it received."""


class Seg(NamedTuple):
    """An Ethernet/IPv4 TCP or UDP frame, parsed: what the checks compare and the peers answer.
    seq, ack, flags and window are 0 for UDP."""

    dmac: bytes
    smac: bytes
    tos: int
    id: int
    frag_off: int
    ttl: int
    protocol: int
    saddr: int
    daddr: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes

    @property
    def seq_len(self) -> int:
        """Sequence space the segment takes: its data, plus one for SYN and one for FIN (RFC 9293 §3.4)."""
        return len(self.payload) + bool(self.flags & L.TCPHDR_SYN) + bool(self.flags & L.TCPHDR_FIN)


def inet_sum(data: bytes, s: int = 0) -> int:
    """The folded one's-complement sum of data's 16-bit words (RFC 1071); 0xFFFF over a whole header
    or segment with its checksum means the checksum is right."""
    if len(data) & 1:
        data += b"\0"
    s += sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _pseudo(saddr: int, daddr: int, proto: int, length: int) -> int:
    return inet_sum(struct.pack(">IIBBH", saddr, daddr, 0, proto, length))


def ipv4_frame(smac: bytes, dmac: bytes, saddr: int, daddr: int, proto: int, l4: bytearray, check_off: int,
               ip_id: int = 0) -> bytes:  # fmt: skip
    """An Ethernet/IPv4 frame (TTL 64, DF) around the L4 header and payload l4, whose checksum at
    check_off (zero in l4) is filled in."""
    c = 0xFFFF - inet_sum(bytes(l4), _pseudo(saddr, daddr, proto, len(l4)))
    if proto == L.IPPROTO_UDP and c == 0:
        c = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
    struct.pack_into(">H", l4, check_off, c)
    ip = bytearray(_IP.pack(0x45, 0, L.IPH.size + len(l4), ip_id, IP_DF, TTL, proto, 0, saddr, daddr))
    struct.pack_into(">H", ip, L.IPH.check, 0xFFFF - inet_sum(bytes(ip)))
    return dmac + smac + struct.pack(">H", L.ETH_P_IP) + bytes(ip) + bytes(l4)


def tcp_frame(smac: bytes, dmac: bytes, saddr: int, daddr: int, sport: int, dport: int, seq: int, ack: int,
              flags: int, payload: bytes = b"", options: bytes = b"") -> bytes:  # fmt: skip
    """An Ethernet/IPv4/TCP frame with valid checksums."""
    doff = (L.TCPH.size + len(options)) // 4
    l4 = bytearray(_TCP.pack(sport, dport, seq, ack, doff << 4, flags, WINDOW, 0, 0) + options + payload)
    return ipv4_frame(smac, dmac, saddr, daddr, L.IPPROTO_TCP, l4, L.TCPH.check)


def udp_frame(
    smac: bytes, dmac: bytes, saddr: int, daddr: int, sport: int, dport: int, payload: bytes
) -> bytes:
    """An Ethernet/IPv4/UDP frame with valid checksums."""
    l4 = bytearray(_UDP.pack(sport, dport, L.UDPH.size + len(payload), 0) + payload)
    return ipv4_frame(smac, dmac, saddr, daddr, L.IPPROTO_UDP, l4, L.UDPH.check)


def parse(frame: bytes) -> Seg:
    """The frame's fields; Mismatch when it is not Ethernet/IPv4 (no options) carrying TCP or UDP
    with right lengths and checksums."""
    if (
        len(frame) < L.ETH_HLEN + L.IPH.size
        or struct.unpack_from(">H", frame, L.ETH.h_proto)[0] != L.ETH_P_IP
    ):
        raise Mismatch(f"not an IPv4 frame: {frame[:34].hex()}")
    ip = frame[L.ETH_HLEN : L.ETH_HLEN + L.IPH.size]
    vihl, tos, tot_len, ip_id, frag_off, ttl, proto, _, saddr, daddr = _IP.unpack(ip)
    if vihl != 0x45 or tot_len != len(frame) - L.ETH_HLEN:
        raise Mismatch(
            f"IPv4 header {ip.hex()}: version/ihl {vihl:#x}, tot_len {tot_len} in a {len(frame)}-byte frame"
        )
    if inet_sum(ip) != 0xFFFF:
        raise Mismatch(f"IPv4 header checksum wrong: {ip.hex()}")
    l4 = frame[L.ETH_HLEN + L.IPH.size :]
    if inet_sum(l4, _pseudo(saddr, daddr, proto, len(l4))) != 0xFFFF:
        raise Mismatch(f"L4 checksum wrong (protocol {proto}): {frame.hex()}")
    if proto == L.IPPROTO_TCP and len(l4) >= L.TCPH.size:
        sport, dport, seq, ack, doff, flags, window, _, _ = _TCP.unpack_from(l4)
        payload = l4[(doff >> 4) * 4 :]
    elif proto == L.IPPROTO_UDP and len(l4) >= L.UDPH.size:
        (sport, dport), seq, ack, flags, window = _PORTS.unpack_from(l4), 0, 0, 0, 0
        payload = l4[L.UDPH.size :]
    else:
        raise Mismatch(f"neither TCP nor UDP (protocol {proto}): {frame.hex()}")
    return Seg(frame[0:6], frame[6:12], tos, ip_id, frag_off, ttl, proto, saddr, daddr, sport, dport, seq, ack,
               flags, window, payload)  # fmt: skip


def check_forwarded(sent: Seg, got: Seg, **want) -> None:
    """Mismatch unless `got` is `sent` forwarded: TTL one less, the fields named in `want` (MACs,
    NATed addresses and ports) as given, every other field (ports, sequence numbers, flags, window,
    IP id and DF, payload) unchanged."""
    expect = sent._replace(ttl=sent.ttl - 1, **want)
    if got != expect:
        diff = ", ".join(f"{f} {getattr(got, f)!r} (want {getattr(expect, f)!r})" for f in Seg._fields
                         if getattr(got, f) != getattr(expect, f))  # fmt: skip
        raise Mismatch(f"forwarded frame differs: {diff}")


class TcpEndpoint:
    """One side of a TCP connection, as much of a stack as the exchange needs: sequence numbers
    (snd_nxt, rcv_nxt, snd_una), segments built from them, and the check that what arrives is the next
    in-order segment. peer_addr/peer_port are None on a server until the SYN arrives: it answers
    whatever address and port the SYN came from (the gateway's NAT binding), as a host would.

    No Linux counterpart (the bench's peer).
    """

    __slots__ = ("smac", "dmac", "addr", "port", "peer_addr", "peer_port", "snd_nxt", "snd_una", "rcv_nxt")

    def __init__(self, smac: bytes, dmac: bytes, addr: int, port: int, isn: int,
                 peer_addr: int | None = None, peer_port: int | None = None):  # fmt: skip
        self.smac, self.dmac, self.addr, self.port = smac, dmac, addr, port
        self.peer_addr, self.peer_port = peer_addr, peer_port
        self.snd_nxt = self.snd_una = isn
        self.rcv_nxt: int | None = None

    def segment(self, flags: int, payload: bytes = b"") -> bytes:
        """The next segment from this side: seq snd_nxt, ack rcv_nxt when flags has ACK."""
        ack = self.rcv_nxt if flags & L.TCPHDR_ACK else 0
        opts = MSS_OPTION if flags & L.TCPHDR_SYN else b""
        f = tcp_frame(self.smac, self.dmac, self.addr, self.peer_addr, self.port, self.peer_port, self.snd_nxt,
                      ack, flags, payload, opts)  # fmt: skip
        self.snd_nxt = (
            self.snd_nxt + len(payload) + bool(flags & L.TCPHDR_SYN) + bool(flags & L.TCPHDR_FIN)
        ) & 0xFFFFFFFF
        return f

    def receive(self, seg: Seg) -> None:
        """Take an arriving segment: the first (a SYN) sets rcv_nxt (and, on a server, the peer), any
        other must be the next in order; an ACK must acknowledge only what was sent. Mismatch if not."""
        if self.rcv_nxt is None:
            if not seg.flags & L.TCPHDR_SYN:
                raise Mismatch(f"port {self.port}: first segment without SYN (flags {seg.flags:#x})")
            if self.peer_addr is None:
                self.peer_addr, self.peer_port = seg.saddr, seg.sport
        elif seg.seq != self.rcv_nxt:
            raise Mismatch(f"port {self.port}: segment seq {seg.seq}, expected {self.rcv_nxt}")
        if (seg.saddr, seg.sport) != (self.peer_addr, self.peer_port):
            raise Mismatch(f"port {self.port}: segment from {seg.saddr:#x}:{seg.sport}, the peer is "
                           f"{self.peer_addr:#x}:{self.peer_port}")  # fmt: skip
        if seg.flags & L.TCPHDR_ACK:
            if (seg.ack - self.snd_una) & 0xFFFFFFFF > (self.snd_nxt - self.snd_una) & 0xFFFFFFFF:
                raise Mismatch(f"port {self.port}: ack {seg.ack} beyond snd_nxt {self.snd_nxt}")
            self.snd_una = seg.ack
        self.rcv_nxt = (seg.seq + seg.seq_len) & 0xFFFFFFFF

    @property
    def all_acked(self) -> bool:
        """Everything this side sent (its FIN included) has been acknowledged."""
        return self.snd_una == self.snd_nxt

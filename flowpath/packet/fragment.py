"""IPv4 fragmentation of an Ethernet frame, as the output path does it.

Linux: net/ipv4/ip_output.c › ip_do_fragment (its slow path: ip_frag_init, ip_frag_next, ip_frag_ipcb)
and net/ipv4/ip_options.c › ip_options_fragment. The caller has made the DF decision already
(ip_output.c › ip_fragment sends ICMP_FRAG_NEEDED instead when DF is set).
"""

from __future__ import annotations

import numpy as np

from flowpath.packet import layout as L
from flowpath.packet.csum import ip_fast_csum, ld16, st16

IPOPT_END = 0  # include/uapi/linux/ip.h
IPOPT_NOOP = 1
IPOPT_COPY = 0x80  # IPOPT_COPIED(o): the option goes into every fragment (RFC 791 §3.1)


def ip_options_fragment(iph: bytearray) -> None:
    """Overwrite with NOOP, in place, every option of `iph` (a whole IPv4 header) that is not copied.

    Linux: ip_options.c › ip_options_fragment; it stops at IPOPT_END or at a malformed length, as here.
    """
    pos, end = L.IPH.size, len(iph)
    while pos < end:
        kind = iph[pos]
        if kind == IPOPT_END:
            return
        if kind == IPOPT_NOOP:
            pos += 1
            continue
        optlen = iph[pos + 1] if pos + 1 < end else 0
        if optlen < 2 or optlen > end - pos:
            return
        if not kind & IPOPT_COPY:
            iph[pos : pos + optlen] = bytes([IPOPT_NOOP]) * optlen
        pos += optlen


def ip_do_fragment(frame: bytes, nhoff: int, mtu: int) -> list[bytes]:
    """Split the IPv4 packet at `nhoff` of an Ethernet frame into frames whose IP part is at most `mtu`.

    Each fragment carries a copy of the L2 header frame[:nhoff] and of the IP header (options not
    copied are NOOPs after the first fragment), data in multiples of 8 bytes except the last, offsets
    continuing an already-fragmented packet's offset, MF on all but the last (kept on the last when
    the input had MF), DF cleared, and a fresh header checksum. Ethernet padding is dropped.
    A packet that fits is returned unchanged (Linux calls ip_fragment only when skb->len > mtu).
    Raises ValueError when the frame holds no valid IPv4 header or mtu leaves no room for 8 data bytes.
    """
    if len(frame) < nhoff + L.IPH.size or frame[nhoff] >> 4 != 4:
        raise ValueError("no IPv4 header at nhoff")
    hlen = (frame[nhoff] & 0x0F) * 4
    tot_len = int.from_bytes(frame[nhoff + L.IPH.tot_len : nhoff + L.IPH.tot_len + 2], "big")
    if hlen < L.IPH.size or tot_len < hlen or nhoff + tot_len > len(frame):
        raise ValueError(f"bad IPv4 header: ihl {hlen // 4}, tot_len {tot_len}, frame {len(frame)} bytes")
    if tot_len <= mtu:
        return [bytes(frame)]
    space = mtu - hlen  # "Size of data space"
    if space < 8:  # Deviation: Linux never meets an MTU below IPV4_MIN_MTU here
        raise ValueError(f"mtu {mtu} leaves no room for data after a {hlen}-byte header")
    l2, iph = bytes(frame[:nhoff]), bytearray(frame[nhoff : nhoff + hlen])
    # ip_frag_init
    frag_off = int.from_bytes(iph[L.IPH.frag_off : L.IPH.frag_off + 2], "big")
    offset = (frag_off & L.IP_OFFSET) << 3
    not_last_frag = frag_off & L.IP_MF
    ptr, left = nhoff + hlen, tot_len - hlen
    frags = []
    while left > 0:
        first_frag = offset == 0
        # ip_frag_next: fill up to the data space, and align all but the last piece on 8 bytes
        n = min(left, space)
        if n < left:
            n &= ~7
        left -= n
        buf = np.frombuffer(bytearray(l2 + iph + frame[ptr : ptr + n]), np.uint8)
        new_off = (offset >> 3) | (L.IP_MF if left > 0 or not_last_frag else 0)
        st16(buf, nhoff + L.IPH.frag_off, new_off & 0xFFFF)
        st16(buf, nhoff + L.IPH.tot_len, n + hlen)
        st16(buf, nhoff + L.IPH.check, 0)  # ip_send_check: zero first, so 0x0000 is never written as 0xFFFF
        st16(buf, nhoff + L.IPH.check, ip_fast_csum(buf, nhoff, hlen))
        frags.append(buf.tobytes())
        ptr += n
        offset += n
        if first_frag:  # ip_frag_ipcb: later fragments inherit the fixed options
            ip_options_fragment(iph)
    return frags


def ip_is_fragment(frame: bytes, nhoff: int) -> bool:
    """MF set or a non-zero offset. Linux: include/net/ip.h › ip_is_fragment."""
    return bool(ld16(np.frombuffer(frame, np.uint8), nhoff + L.IPH.frag_off) & (L.IP_MF | L.IP_OFFSET))

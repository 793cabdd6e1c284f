"""IPv4 and IPv6 fragmentation of an Ethernet frame, as the output path does it.

Linux: net/ipv4/ip_output.c › ip_do_fragment (the frag_list fast path: ip_fraglist_init,
ip_fraglist_prepare; the slow path: ip_frag_init, ip_frag_next, ip_frag_ipcb) and net/ipv4/
ip_options.c › ip_options_fragment; net/ipv6/ip6_output.c › ip6_fragment and net/ipv6/output_core.c ›
ip6_find_1stfragopt. The caller has made the DF / too-big decision already (ip_output.c › ip_fragment
sends ICMP_FRAG_NEEDED instead when DF is set; ip6_fragment's fail_toobig).
"""

from __future__ import annotations

import struct

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


def ip_do_fragment(
    frame: bytes,
    nhoff: int,
    mtu: int,
    *,
    frag_max_size: int = 0,
    frag_list: tuple[int, ...] = (),
    frag_pmtu: bool = False,
) -> list[bytes]:
    """Split the IPv4 packet at `nhoff` of an Ethernet frame into frames whose IP part is at most `mtu`.

    Each fragment carries a copy of the L2 header frame[:nhoff] and of the IP header (options not
    copied are NOOPs after the first fragment) and a fresh header checksum; Ethernet padding is dropped.
    A datagram nf_defrag reassembled brings what IPCB(skb) holds: frag_max_size caps mtu, and frag_list
    (the data lengths of its fragments after the first) is reused when every piece fits the data space
    and all but the last are multiples of 8 (the frag_list fast path): the fragments are cut where they
    came, MF on all but the last, DF cleared. Otherwise (the slow path) data goes in multiples of 8 bytes
    except the last, offsets continue an already-fragmented packet's offset, MF on all but the last
    (kept on the last when the input had MF), DF cleared unless frag_pmtu (IPSKB_FRAG_PMTU).
    A packet that fits, with no frag_list, is returned unchanged (Linux fragments only past the MTU).
    Raises ValueError when the frame holds no valid IPv4 header or mtu leaves no room for 8 data bytes.
    """
    if len(frame) < nhoff + L.IPH.size or frame[nhoff] >> 4 != 4:
        raise ValueError("no IPv4 header at nhoff")
    hlen = (frame[nhoff] & 0x0F) * 4
    tot_len = int.from_bytes(frame[nhoff + L.IPH.tot_len : nhoff + L.IPH.tot_len + 2], "big")
    if hlen < L.IPH.size or tot_len < hlen or nhoff + tot_len > len(frame):
        raise ValueError(f"bad IPv4 header: ihl {hlen // 4}, tot_len {tot_len}, frame {len(frame)} bytes")
    if frag_max_size and frag_max_size < mtu:
        mtu = frag_max_size  # don't send fragments larger than what was received
    if tot_len <= mtu and not frag_list:
        return [bytes(frame)]
    space = mtu - hlen  # "Size of data space"
    if space < 8:  # Deviation: Linux never meets an MTU below IPV4_MIN_MTU here
        raise ValueError(f"mtu {mtu} leaves no room for data after a {hlen}-byte header")
    l2, iph = bytes(frame[:nhoff]), bytearray(frame[nhoff : nhoff + hlen])
    frag_off = int.from_bytes(iph[L.IPH.frag_off : L.IPH.frag_off + 2], "big")
    if frag_list:
        first = tot_len - hlen - sum(frag_list)
        pieces = (first, *frag_list)
        if first > 0 and not frag_off & (L.IP_MF | L.IP_OFFSET) and _fraglist_fits(pieces, space):
            return _ip_fraglist(frame, nhoff, l2, iph, pieces)
    # ip_frag_init
    offset = (frag_off & L.IP_OFFSET) << 3
    not_last_frag = frag_off & L.IP_MF
    df = L.IP_DF if frag_pmtu else 0
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
        new_off = (offset >> 3) | df | (L.IP_MF if left > 0 or not_last_frag else 0)
        _ip_frag_header(buf, nhoff, hlen, n, new_off)
        frags.append(buf.tobytes())
        ptr += n
        offset += n
        if first_frag:  # ip_frag_ipcb: later fragments inherit the fixed options
            ip_options_fragment(iph)
    return frags


def _fraglist_fits(pieces: tuple[int, ...], space: int) -> bool:
    """ip_do_fragment / ip6_fragment's geometry check of a frag_list: every piece within the data space,
    all but the last a multiple of 8 bytes."""
    last = len(pieces) - 1
    return all(n <= space and (k == last or not n & 7) for k, n in enumerate(pieces))


def _ip_fraglist(frame: bytes, nhoff: int, l2: bytes, iph: bytearray, pieces: tuple[int, ...]) -> list[bytes]:
    """The frag_list fast path (ip_fraglist_init, ip_fraglist_prepare): one fragment per piece, the
    first with the datagram's header, the next ones with that header's non-copied options made NOOPs."""
    hlen = len(iph)
    frags, ptr, offset = [], nhoff + hlen, 0
    for k, n in enumerate(pieces):
        buf = np.frombuffer(bytearray(l2 + iph + frame[ptr : ptr + n]), np.uint8)
        _ip_frag_header(buf, nhoff, hlen, n, (offset >> 3) | (L.IP_MF if k < len(pieces) - 1 else 0))
        frags.append(buf.tobytes())
        if k == 0:
            ip_options_fragment(iph)
        ptr += n
        offset += n
    return frags


def _ip_frag_header(buf: np.ndarray, nhoff: int, hlen: int, n: int, frag_off: int) -> None:
    st16(buf, nhoff + L.IPH.frag_off, frag_off & 0xFFFF)
    st16(buf, nhoff + L.IPH.tot_len, n + hlen)
    st16(buf, nhoff + L.IPH.check, 0)  # ip_send_check: zero first, so 0x0000 is never written as 0xFFFF
    st16(buf, nhoff + L.IPH.check, ip_fast_csum(buf, nhoff, hlen))


def ip6_find_1stfragopt(frame: bytes, nhoff: int) -> tuple[int, int]:
    """(length of the unfragmentable part, offset from nhoff of the byte naming what follows it): the
    IPv6 header, hop-by-hop and routing headers, and destination options before a routing header.
    Linux: net/ipv6/output_core.c › ip6_find_1stfragopt (no Mobile IPv6 home address option).
    Raises ValueError on a truncated extension header."""
    offset, prev, end = L.IP6H.size, L.IP6H.nexthdr, len(frame) - nhoff
    found_rhdr = False
    while offset <= end:
        nexthdr = frame[nhoff + prev]
        if nexthdr == L.IPPROTO_ROUTING:
            found_rhdr = True
        elif nexthdr == L.IPPROTO_DSTOPTS:
            if found_rhdr:
                return offset, prev
        elif nexthdr != L.IPPROTO_HOPOPTS:
            return offset, prev
        if offset + 2 > end:
            break
        prev, offset = offset, offset + (frame[nhoff + offset + 1] + 1) * 8
    raise ValueError("truncated IPv6 extension header")


def ip6_fragment(
    frame: bytes,
    nhoff: int,
    mtu: int,
    frag_id: int,
    *,
    frag_max_size: int = 0,
    frag_list: tuple[int, ...] = (),
) -> list[bytes]:
    """Split the IPv6 packet at `nhoff` of an Ethernet frame into fragments of at most `mtu` bytes of IP,
    each the unfragmentable part (ip6_find_1stfragopt), a fragment header (identification frag_id) and
    a piece of the rest. Linux: net/ipv6/ip6_output.c › ip6_fragment: frag_max_size (IP6CB) sets the size
    (never below IPV6_MIN_MTU); frag_list is reused when it fits (ip6_fraglist_init / _prepare), else
    the slow path (ip6_frag_init / ip6_frag_next) cuts multiples of 8 bytes but the last.
    The caller refuses what Linux refuses (too big without ignore_df, frag_max_size over mtu).
    Raises ValueError when the headers are truncated or mtu leaves no room for 8 data bytes.
    """
    if len(frame) < nhoff + L.IP6H.size or frame[nhoff] >> 4 != 6:
        raise ValueError("no IPv6 header at nhoff")
    total = L.IP6H.size + int.from_bytes(
        frame[nhoff + L.IP6H.payload_len : nhoff + L.IP6H.payload_len + 2], "big"
    )
    if nhoff + total > len(frame):
        raise ValueError(f"bad IPv6 payload length: {total - L.IP6H.size}, frame {len(frame)} bytes")
    frame = bytes(frame[: nhoff + total])
    hlen, prev = ip6_find_1stfragopt(frame, nhoff)
    if frag_max_size:
        mtu = max(frag_max_size, L.IPV6_MIN_MTU)  # don't send fragments larger than what we received
    if mtu < hlen + L.FRAGH.size + 8:
        raise ValueError(f"mtu {mtu} leaves no room for data after {hlen + L.FRAGH.size} bytes of headers")
    space = mtu - hlen - L.FRAGH.size
    unfrag = bytearray(frame[: nhoff + hlen])
    nexthdr = unfrag[nhoff + prev]
    unfrag[nhoff + prev] = L.IPPROTO_FRAGMENT
    left = total - hlen
    pieces: tuple[int, ...] = ()
    if frag_list:
        first = total - sum(frag_list) - hlen
        if first > 0 and _fraglist_fits((first, *frag_list), space):
            pieces = (first, *frag_list)
    if not pieces:  # ip6_frag_next: fill the data space, all but the last piece on 8 bytes
        cut = []
        while left > 0:
            n = min(left, space)
            if n < left:
                n &= ~7
            cut.append(n)
            left -= n
        pieces = tuple(cut)
    frags, ptr, offset = [], nhoff + hlen, 0
    for k, n in enumerate(pieces):
        more = k < len(pieces) - 1
        fh = struct.pack(">BBHI", nexthdr, 0, offset | int(more), frag_id)
        buf = np.frombuffer(bytearray(unfrag + fh + frame[ptr : ptr + n]), np.uint8)
        st16(buf, nhoff + L.IP6H.payload_len, hlen + L.FRAGH.size + n - L.IP6H.size)
        frags.append(buf.tobytes())
        ptr += n
        offset += n
    return frags


def ip_is_fragment(frame: bytes, nhoff: int) -> bool:
    """MF set or a non-zero offset. Linux: include/net/ip.h › ip_is_fragment."""
    return bool(ld16(np.frombuffer(frame, np.uint8), nhoff + L.IPH.frag_off) & (L.IP_MF | L.IP_OFFSET))

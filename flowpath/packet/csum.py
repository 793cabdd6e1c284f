"""Checksums: full (RFC 1071) and incremental (RFC 1624), plus byte-order loads and stores.

Linux: include/net/checksum.h (csum_replace4, csum_replace2, csum_fold), net/core/utils.c
(inet_proto_csum_replace4/16), include/net/ip.h (ip_decrease_ttl).
Scalar helpers are @njit so the compiled fast path and the Python slow path call the same code
(two paths, one truth). `b` is always a 1-D uint8 array (a slot row or a frame view); offsets are ints.
Loads and stores are big-endian: sums do not depend on byte order (RFC 1071 §2(B)).
"""

from __future__ import annotations

import numpy as np
from numba import njit

CSUM_MANGLED_0 = 0xFFFF  # include/net/checksum.h: a computed UDP checksum of 0 goes on the wire as ~0


@njit(cache=True, nogil=True)
def ld16(b, off):
    """Big-endian 16-bit load."""
    o = np.uint64(off)  # an unsigned index: no negative-index wraparound code, so LLVM merges the loads
    return (np.int64(b[o]) << 8) | np.int64(b[o + np.uint64(1)])


@njit(cache=True, nogil=True)
def ld32(b, off):
    """Big-endian 32-bit load."""
    return (ld16(b, off) << 16) | ld16(b, off + 2)


@njit(cache=True, nogil=True)
def st16(b, off, v):
    """Big-endian 16-bit store."""
    o = np.uint64(off)  # unsigned, as in ld16
    b[o] = (v >> 8) & 0xFF
    b[o + np.uint64(1)] = v & 0xFF


@njit(cache=True, nogil=True)
def st32(b, off, v):
    """Big-endian 32-bit store."""
    st16(b, off, (v >> 16) & 0xFFFF)
    st16(b, off + 2, v & 0xFFFF)


@njit(cache=True, nogil=True)
def csum_fold(s):
    """Fold a 32+ bit one's-complement sum to 16 bits (not inverted)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@njit(cache=True, nogil=True)
def csum_partial(b, off, n, s):
    """Add bytes b[off:off+n] as big-endian 16-bit words to the running sum s (odd tail padded); folded.

    The words go into their own accumulator in a counted loop over unsigned offsets: LLVM vectorises
    that loop, which a while loop carrying s through every addition, with signed indexes, kept scalar
    (32-bit words measured no faster: that loop stays scalar; benchmarks/csum_partial.py).
    csum_fold receives the same integer as a word-by-word sum, so every result is unchanged, 0 vs
    0xFFFF included.
    """
    acc = 0  # int64: n // 2 words of at most 0xFFFF cannot overflow it
    if n > 1:  # as uint64, a negative n would become a huge count
        o = np.uint64(off)
        for k in range(np.uint64(n) >> np.uint64(1)):
            acc += ld16(b, o + np.uint64(2) * k)
    if n & 1:
        acc += np.int64(b[off + n - 1]) << 8  # RFC 1071 §4.1: the odd byte padded with a zero byte
    return csum_fold(s + acc)


@njit(cache=True, nogil=True)
def ip_fast_csum(b, off, hlen):
    """The IPv4 header checksum over hlen bytes, with the check field taken as zero (ip_send_check)."""
    s = csum_partial(b, off, 10, 0)  # summed around the field: a true 0 stays 0x0000, never -0
    s = csum_partial(b, off + 12, hlen - 12, s)
    return (~s) & 0xFFFF


@njit(cache=True, nogil=True)
def l4_pseudo_sum(b, nhoff, is_ipv6, l4proto, l4len):
    """Sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1)."""
    if is_ipv6:
        s = csum_partial(b, nhoff + 8, 32, 0)
    else:
        s = csum_partial(b, nhoff + 12, 8, 0)
    return csum_fold(s + l4proto + l4len)


@njit(cache=True, nogil=True)
def l4_csum(b, nhoff, thoff, l4len, is_ipv6, l4proto, check_off):
    """Full TCP/UDP/ICMPv6 checksum over the segment with its check field taken as zero.

    check_off is the check field's offset inside the L4 header (TCP 16, UDP 6, ICMPv6 2).
    A UDP result of 0 is returned as CSUM_MANGLED_0 (RFC 768).
    """
    old = ld16(b, thoff + check_off)
    st16(b, thoff + check_off, 0)
    s = csum_partial(b, thoff, l4len, l4_pseudo_sum(b, nhoff, is_ipv6, l4proto, l4len))
    st16(b, thoff + check_off, old)
    c = (~s) & 0xFFFF
    if c == 0 and l4proto == 17:
        c = CSUM_MANGLED_0
    return c


@njit(cache=True, nogil=True)
def icmp_csum(b, off, n):
    """ICMPv4 checksum over n bytes (no pseudo-header) with the field at off+2 taken as zero."""
    s = csum_partial(b, off, 2, 0)
    s = csum_partial(b, off + 4, n - 4, s)
    return (~s) & 0xFFFF


@njit(cache=True, nogil=True)
def csum_replace2(b, coff, old, new):
    """RFC 1624 eq. 3 for a 16-bit field change: HC' = ~(~HC + ~m + m')."""
    s = ((~ld16(b, coff)) & 0xFFFF) + ((~old) & 0xFFFF) + (new & 0xFFFF)
    st16(b, coff, (~csum_fold(s)) & 0xFFFF)


@njit(cache=True, nogil=True)
def csum_replace4(b, coff, old, new):
    """RFC 1624 eq. 3 for a 32-bit field change (an IPv4 address)."""
    s = ((~ld16(b, coff)) & 0xFFFF) + ((~(old >> 16)) & 0xFFFF) + ((~old) & 0xFFFF)
    s += ((new >> 16) & 0xFFFF) + (new & 0xFFFF)
    st16(b, coff, (~csum_fold(s)) & 0xFFFF)


@njit(cache=True, nogil=True)
def csum_replace16(b, coff, aoff_old, b_new, aoff_new):
    """RFC 1624 for a 16-byte field change (an IPv6 address): old at b[aoff_old], new at b_new[aoff_new]."""
    s = (~ld16(b, coff)) & 0xFFFF
    for k in range(0, 16, 2):
        s += ((~ld16(b, aoff_old + k)) & 0xFFFF) + ld16(b_new, aoff_new + k)
    st16(b, coff, (~csum_fold(s)) & 0xFFFF)


@njit(cache=True, nogil=True)
def udp_csum_replace4(b, coff, old, new):
    """inet_proto_csum_replace4 for UDP: a zero checksum means none (IPv4) and stays zero;
    a result of zero becomes CSUM_MANGLED_0."""
    if ld16(b, coff) == 0:
        return
    csum_replace4(b, coff, old, new)
    if ld16(b, coff) == 0:
        st16(b, coff, CSUM_MANGLED_0)


@njit(cache=True, nogil=True)
def udp_csum_replace2(b, coff, old, new):
    """As udp_csum_replace4, for a port."""
    if ld16(b, coff) == 0:
        return
    csum_replace2(b, coff, old, new)
    if ld16(b, coff) == 0:
        st16(b, coff, CSUM_MANGLED_0)


@njit(cache=True, nogil=True)
def ip_decrease_ttl(b, nhoff):
    """Decrement the IPv4 TTL and patch the header checksum exactly as Linux does; returns the new TTL.

    Linux: include/net/ip.h › ip_decrease_ttl (adds htons(0x0100) with an end-around carry).
    """
    c = ld16(b, nhoff + 10) + 0x0100
    c = c + (1 if c >= 0xFFFF else 0)
    st16(b, nhoff + 10, c & 0xFFFF)
    o = np.uint64(nhoff + 8)  # unsigned, as in ld16
    ttl = b[o] - 1
    b[o] = ttl
    return ttl

"""Finding a TCP option or an IPv6 extension header in a frame: the walks the closures (nft_exthdr.py)
and the compiled VM (nft_vm.py's OP_EXTHDR) both make.

Linux: net/netfilter/nft_exthdr.c › nft_exthdr_tcp_eval (the option walk, optlen) and
net/ipv6/exthdrs_core.c › ipv6_find_hdr with *offset 0 and no flags: extension headers are walked from
the IPv6 header; an upper-layer header (or mh, which is not an extension header to Linux) is found only as
the first non-extension header; a non-first fragment ends the walk.
"""

from __future__ import annotations

from numba import njit

from flowpath.packet import layout as L

TCPOPT_EOL, TCPOPT_NOP = 0, 1
ENOENT, EBADMSG = -2, -74
_TCPH_SIZE, _DOFF = L.TCPH.size, L.TCPH.doff_res
_IP6H_SIZE, _PLEN, _NEXTHDR = L.IP6H.size, L.IP6H.payload_len, L.IP6H.nexthdr
_HOPOPTS, _ROUTING, _FRAGMENT, _AH, _NONE, _DSTOPTS = (L.IPPROTO_HOPOPTS, L.IPPROTO_ROUTING, L.IPPROTO_FRAGMENT,
                                                       L.IPPROTO_AH, L.IPPROTO_NONE, L.IPPROTO_DSTOPTS)  # fmt: skip


@njit(cache=True, nogil=True)
def optlen(d, o):
    """nft_exthdr.c › optlen: EOL and NOP are one byte, and so is an option with length 0."""
    return 1 if d[o] <= TCPOPT_NOP or d[o + 1] == 0 else d[o + 1]


@njit(cache=True, nogil=True)
def tcpopt_find(d, dlen, l4proto, t, kind, need):
    """Offset in d of option `kind` with at least `need` bytes: -1 if absent, -2 without a TCP header
    (nft_tcp_header_pointer fails: not TCP, a later fragment t < 0, short), -3 if the option runs past the
    header or is shorter (malformed: goto err).
    d uint8[>= dlen] the frame; t the TCP header's offset."""
    if l4proto != L.IPPROTO_TCP or t < 0 or t + _TCPH_SIZE > dlen:
        return -2
    hlen = (d[t + _DOFF] >> 4) * 4
    if hlen < _TCPH_SIZE or t + hlen > dlen:
        return -2
    i = _TCPH_SIZE
    while i < hlen - 1:
        o = t + i
        optl = optlen(d, o)
        if d[o] == kind:
            return o if i + optl <= hlen and need <= optl else -3
        i += optl
    return -1


@njit(cache=True, nogil=True)
def ipv6_find_hdr(d, dlen, nh, target):
    """Offset in d of the first header of type `target` after the IPv6 header at nh, ENOENT or EBADMSG."""
    if nh + _IP6H_SIZE > dlen:
        return EBADMSG
    end = min(dlen, nh + _IP6H_SIZE + (d[nh + _PLEN] << 8 | d[nh + _PLEN + 1]))
    start, nexthdr = nh + _IP6H_SIZE, d[nh + _NEXTHDR]
    while True:
        found = nexthdr == target
        ext = nexthdr in (_HOPOPTS, _ROUTING, _FRAGMENT, _AH, _DSTOPTS)  # ipv6_ext_hdr, NONE aside
        if not ext:
            return start if found else ENOENT
        if start + 2 > end:
            return EBADMSG
        if nexthdr == _FRAGMENT:
            if start + 4 > end:
                return EBADMSG
            if (d[start + 2] << 8 | d[start + 3]) & ~7:  # a later fragment: nothing follows
                return start if found else ENOENT
            hdrlen = 8
        elif nexthdr == _AH:
            hdrlen = (d[start + 1] + 2) << 2  # ipv6_authlen
        else:
            hdrlen = (d[start + 1] + 1) << 3  # ipv6_optlen
        if found:
            return start
        nexthdr, start = d[start], start + hdrlen

"""IPv4 options of a received packet: checked as Linux checks them, then source routes refused.

Linux: net/ipv4/ip_options.c › ip_options_compile (with an skb: the receive-side checks),
net/ipv4/ip_input.c › ip_rcv_options (a malformed option sends a parameter problem pointing at the
bad byte; a source-routed packet is dropped while net.ipv4.conf.*.accept_source_route is 0, the
default on a router).
Deviation: the options are checked, not processed: record route and timestamp are not filled in on
the way through, and a CIPSO option is not validated against a NetLabel DOI.
"""

from __future__ import annotations

from flowpath.packet import layout as L


def ip_options_compile(b, nhoff: int, ihl: int) -> tuple[int, bool]:
    """Walk the options of the IPv4 header at nhoff (ihl bytes long).

    Returns (pointer, srr): pointer is the offset from the IP header of the byte a parameter problem
    points at, or -1 when the options are well formed; srr is True when a source route is present.
    """
    opt, end = nhoff + L.IPH.size, nhoff + ihl
    srr = rr = ts = False
    while opt < end:
        kind = int(b[opt])
        if kind == L.IPOPT_END:
            break
        if kind == L.IPOPT_NOOP:
            opt += 1
            continue
        left = end - opt
        if left < 2:
            return opt - nhoff, srr
        optlen = int(b[opt + 1])
        if optlen < 2 or optlen > left:
            return opt - nhoff, srr
        bad = _option_error(b, opt, optlen, kind, srr, rr, ts)
        if bad >= 0:
            return bad - nhoff, srr
        srr |= kind in (L.IPOPT_LSRR, L.IPOPT_SSRR)
        rr |= kind == L.IPOPT_RR
        ts |= kind == L.IPOPT_TIMESTAMP
        opt += optlen
    return -1, srr


def _option_error(b, opt: int, optlen: int, kind: int, srr: bool, rr: bool, ts: bool) -> int:
    """The checks of one option with its length in range: the offending byte's offset, or -1."""
    ptr = int(b[opt + 2]) if optlen > 2 else 0
    if kind == L.IPOPT_RR:
        if rr:
            return opt
        if optlen < 3:
            return opt + 1
        if ptr < 4 or (ptr <= optlen and ptr + 3 > optlen):
            return opt + 2
        return -1
    if kind in (L.IPOPT_LSRR, L.IPOPT_SSRR):
        if optlen < 3:
            return opt + 1
        if ptr < 4:
            return opt + 2
        return opt if srr else -1  # a second source route (RFC 1812 §5.2.4.1)
    if kind == L.IPOPT_TIMESTAMP:
        if ts:
            return opt
        if optlen < 4:
            return opt + 1
        if ptr < 5:
            return opt + 2
        flag = int(b[opt + 3]) & 0xF
        if ptr <= optlen:
            if ptr + 3 > optlen:
                return opt + 2
            if flag in (L.IPOPT_TS_TSANDADDR, L.IPOPT_TS_PRESPEC) and ptr + 7 > optlen:
                return opt + 2
        elif flag != L.IPOPT_TS_PRESPEC and int(b[opt + 3]) >> 4 == 15:
            return opt + 3  # the overflow counter is full
        return -1
    if kind == L.IPOPT_RA and optlen < 4:
        return opt + 1
    return -1  # security, stream id, CIPSO and unknown options pass (the skb case of Linux)

"""ECN across a tunnel: the outer ECN field on encapsulation, the inner one on decapsulation (RFC 6040).

Linux: include/net/inet_ecn.h › INET_ECN_encapsulate, __INET_ECN_decapsulate, INET_ECN_decapsulate,
IP_ECN_set_ce, IP_ECN_set_ect1; include/net/ip_tunnels.h › ip_tunnel_ecn_encap.
"""

from __future__ import annotations

from flowpath.packet import layout as L
from flowpath.packet.csum import csum_replace2, ld16

INET_ECN_NOT_ECT = 0
INET_ECN_ECT_1 = 1
INET_ECN_ECT_0 = 2
INET_ECN_CE = 3
INET_ECN_MASK = 3

# __INET_ECN_decapsulate's answers: 0 fine, 1 "log" (ECT outer on a not-ECT inner), 2 drop (CE outer on
# a not-ECT inner: the congestion mark cannot be passed on, RFC 6040 §4.2)
ECN_DECAP_OK, ECN_DECAP_LOG, ECN_DECAP_DROP = 0, 1, 2


def INET_ECN_encapsulate(outer: int, inner: int) -> int:  # noqa: N802 -- the kernel's name
    """The outer TOS: its DSCP bits, and the inner ECN field copied, except CE, which becomes ECT(0)
    (RFC 6040 §4.1 normal mode: a CE mark is not propagated outward)."""
    outer &= ~INET_ECN_MASK & 0xFF
    return outer | (inner & INET_ECN_MASK if inner & INET_ECN_MASK != INET_ECN_CE else INET_ECN_ECT_0)


def ecn_decapsulate(outer_tos: int, inner_tos: int) -> tuple[int, int]:
    """RFC 6040 §4.2's table, as __INET_ECN_decapsulate and INET_ECN_decapsulate apply it:
    (ECN_DECAP_*, the inner ECN field to write). A not-ECT inner stays not-ECT (or is dropped under a
    CE outer); a CE outer marks an ECT inner CE; an ECT(1) outer turns an ECT(0) inner into ECT(1)."""
    outer, inner = outer_tos & INET_ECN_MASK, inner_tos & INET_ECN_MASK
    if inner == INET_ECN_NOT_ECT:
        if outer == INET_ECN_NOT_ECT:
            return ECN_DECAP_OK, inner
        return (ECN_DECAP_DROP if outer == INET_ECN_CE else ECN_DECAP_LOG), inner
    if outer == INET_ECN_CE:
        return ECN_DECAP_OK, INET_ECN_CE
    if outer == INET_ECN_ECT_1 and inner == INET_ECN_ECT_0:
        return ECN_DECAP_OK, INET_ECN_ECT_1
    return ECN_DECAP_OK, inner


def ip_ecn_set(buf, nhoff: int, ecn: int) -> None:
    """Write the ECN field of the IPv4 header at nhoff, its checksum updated (IP_ECN_set_ce and
    IP_ECN_set_ect1 make the same RFC 1624 update over the version/ihl/tos word)."""
    old = ld16(buf, nhoff + L.IPH.version_ihl)
    new = (old & ~INET_ECN_MASK & 0xFFFF) | ecn
    if new != old:
        buf[nhoff + L.IPH.tos] = new & 0xFF
        csum_replace2(buf, nhoff + L.IPH.check, old, new)

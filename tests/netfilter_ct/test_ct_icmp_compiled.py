"""The compiled ICMP/ICMPv6 tracker (flowpath/netfilter/conntrack_proto_icmp.py) against a plain
reference written from nf_conntrack_proto_icmp.c and nf_conntrack_proto_icmpv6.c, over Scapy packets
of every type, with good and bad checksums."""

import numpy as np
import pytest
from scapy.all import ICMP, IP, ICMPv6EchoRequest, IPv6, raw

from flowpath.netfilter.conntrack_proto_icmp import (
    ICMP_BAD_CSUM,
    ICMP_INVALID,
    ICMP_NOCT,
    ICMP_QUERY,
    ICMP_RELATED,
    icmp_error_pkt,
    icmp_invert_type,
    nf_conntrack_icmp_packet,
)
from flowpath.netfilter.constants import IPS_CONFIRMED, NF_ACCEPT
from flowpath.netfilter.ct_layout import CT_BYTES, CT_HOT_ROW, CT_PACKETS, CT_STATUS, CT_TIMEOUT

SEC = 1_000_000_000


def ref_error(l4proto: int, t: int, csum_ok: bool, n: int) -> int:
    """icmp_error / icmpv6_error up to the RELATED lookup, as the kernel reads them."""
    if n < 8:
        return ICMP_INVALID  # "short packet"
    if not csum_ok:
        return ICMP_BAD_CSUM
    if l4proto == 1:
        if t > 18:  # NR_ICMP_TYPES
            return ICMP_INVALID
        return ICMP_RELATED if t in (3, 4, 5, 11, 12) else ICMP_QUERY  # icmp_is_err
    if t in (130, 131, 132, 133, 134, 135, 136, 143):  # noct_valid_new
        return ICMP_NOCT
    return ICMP_QUERY if t >= 128 else ICMP_RELATED  # icmpv6 errors are below 128


def _pkt(v6: bool, t: int, bad: bool) -> bytes:
    if v6:
        p = IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=7, seq=1, data=b"abcd")
        p[ICMPv6EchoRequest].type = t
    else:
        p = IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=t, id=7, seq=1) / b"abcd"
    b = bytearray(raw(p))
    if bad:
        b[-1] ^= 0x55
    return bytes(b)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("bad", [False, True])
def test_icmp_error_pkt_every_type(v6, bad):
    l4, th = (58, 40) if v6 else (1, 20)
    for t in range(256):
        b = np.frombuffer(_pkt(v6, t, bad), np.uint8).copy()
        got = icmp_error_pkt(b, 0, th, b.shape[0], l4, True)
        assert got == ref_error(l4, t, not bad, b.shape[0] - th), (v6, t, bad)
        if bad:  # not at PRE_ROUTING: nf_conntrack_checksum does not apply
            assert icmp_error_pkt(b, 0, th, b.shape[0], l4, False) == ref_error(l4, t, True, 99)


def test_icmp_error_pkt_short_header_is_invalid():
    b = np.frombuffer(_pkt(False, 8, False), np.uint8).copy()
    assert icmp_error_pkt(b, 0, 20, 27, 1, True) == ICMP_INVALID


def test_icmp_invert_type_is_the_invmap():
    v4 = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
    v6 = {128: 129, 129: 128, 139: 140, 140: 139}
    for t in range(-1, 257):
        assert icmp_invert_type(1, t) == v4.get(t, -1), t
        assert icmp_invert_type(58, t) == v6.get(t, -1), t


@pytest.mark.parametrize("l4", [1, 58])
def test_icmp_packet_only_queries_open_and_refresh_30s(l4):
    """nf_conntrack_icmp_packet: valid_new only (ICMPv4 asks every time; ICMPv6 only unconfirmed);
    nf_ct_refresh_acct: 30 s and the packet counted in its direction."""
    new = {8, 13, 15, 17} if l4 == 1 else {128, 139}
    for t in range(256):
        for confirmed in (False, True):
            row = np.zeros(CT_HOT_ROW, np.int64)
            row[CT_STATUS] = IPS_CONFIRMED if confirmed else 0
            ok = t in new or (l4 == 58 and confirmed)
            got = nf_conntrack_icmp_packet(row, 1, 5 * SEC, 84, l4, t)
            assert got == (NF_ACCEPT if ok else -NF_ACCEPT), (t, confirmed)
            if ok:
                assert row[CT_TIMEOUT] == 35 * SEC and row[CT_PACKETS + 1] == 1 and row[CT_BYTES + 1] == 84
            else:
                assert row[CT_TIMEOUT] == 0 and row[CT_PACKETS + 1] == 0

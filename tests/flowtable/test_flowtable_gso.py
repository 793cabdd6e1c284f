"""GSO super-packets (PacketBatch.gso) on the fast path: the MTU check by segment size, and NAT of a
CHECKSUM_PARTIAL checksum, pinned against Scapy.

Linux: nf_flow_table_ip.c › nf_flow_exceeds_mtu (skb_gso_validate_network_len), net/core/utils.c ›
inet_proto_csum_replace4/16 (pseudohdr=true moves a partial checksum by the addresses) and
inet_proto_csum_replace2 (a port leaves it alone); a NIC then finishes the checksum per segment.
"""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from flowpath.flowtable import Flowtable
from flowpath.packet.csum import l4_pseudo_sum
from flowpath.packet.reason import Reason
from flowpath.ports.gso import (
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    skb_checksum_help,
    skb_gso_segment,
)

SLOT = 16384
v4 = st.integers(0x01000000, 0xDFFFFFFF).map(lambda a: str(ipaddress.IPv4Address(a)))
v6 = st.integers(1, (1 << 96) - 1).map(lambda a: str(ipaddress.IPv6Address(0x20010DB8 << 96 | a)))
port = st.integers(1, 65535)


def _l4_offsets(frame: bytes) -> tuple[int, int, bool]:
    """(nhoff, thoff, is_ipv6) of a TCP frame, 802.1Q tag or not."""
    p = Ether(frame)
    ip = p[IP] if IP in p else p[IPv6]
    nh = len(frame) - len(bytes(ip))
    return nh, len(frame) - len(bytes(p[TCP])), IPv6 in p


def make_partial(frame: bytes) -> bytes:
    """frame as a stack hands a TSO packet over: the TCP check field holds the pseudo-header sum."""
    b = np.frombuffer(bytearray(frame), np.uint8).copy()
    nh, th, v6_ = _l4_offsets(frame)
    b[th + 16 : th + 18] = 0
    ps = l4_pseudo_sum(b, nh, v6_, 6, len(b) - th)
    b[th + 16], b[th + 17] = ps >> 8, ps & 0xFF
    return b.tobytes()


def complete(frame: bytes) -> bytes:
    """A NIC's work on a partial frame: skb_checksum_help at the TCP checksum."""
    b = np.frombuffer(bytearray(frame), np.uint8).copy()
    _, th, _ = _l4_offsets(frame)
    skb_checksum_help(b, th, len(b), th + 16)
    return b.tobytes()


def gso_batch(ftk, frame: bytes, gso_size: int, iif: int):
    b = ftk.batch_of(frame, iif=iif, slot=SLOT, headroom=64)
    gtype = VIRTIO_NET_HDR_GSO_TCPV6 if IPv6 in Ether(frame) else VIRTIO_NET_HDR_GSO_TCPV4
    b.gso[0] = gtype << 16 | gso_size
    return b


@st.composite
def cases(draw):
    l3 = draw(st.sampled_from([4, 6]))
    a = v4 if l3 == 4 else v6
    snat = (draw(a), draw(port)) if draw(st.booleans()) else None
    dnat = (draw(a), draw(port)) if draw(st.booleans()) else None
    return {
        "flow": dict(l3=l3, l4=6, c=draw(a), s=draw(a), cport=draw(port), sport=draw(port), snat=snat, dnat=dnat,
                     vlan_out=draw(st.sampled_from([-1, 7]))),
        "reply": draw(st.booleans()),
        "payload": draw(st.binary(min_size=1, max_size=64)) * draw(st.integers(1, 150)),
        "gso_size": draw(st.integers(536, 1400)),
    }  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_partial_checksum_nat_then_segments_match_scapy(ftk, case):
    """A partial-checksum super-packet through NAT: finished as a NIC would, it is the bytes Scapy
    computes for the NATed packet (the pseudo-header sum moved by the addresses only); cut into
    segments in software, each segment's checksums are right and the payloads join up."""
    ft = Flowtable("gso")
    fid, orig, reply = ftk.flow(ft, **case["flow"])
    if fid < 0:
        return
    t, iif = (reply, ftk.IIF_S) if case["reply"] else (orig, ftk.IIF_C)
    frame = bytes(ftk.pkt(t, payload=case["payload"], l4flags="PA"))
    b = gso_batch(ftk, make_partial(frame), case["gso_size"], iif)
    ftk.hook(b, ft, 0)
    assert b.verdict[0] == Reason.FLOW_FORWARD
    out = b.frame_bytes(0)
    want = ftk.ref_forward(frame, ft, ft.lookup(t))
    assert complete(out) == want
    segs = skb_gso_segment(np.frombuffer(out, np.uint8), int(b.gso[0]))
    assert len(segs) == -(-len(case["payload"]) // case["gso_size"])
    payload = b""
    for s in segs:
        p = Ether(s.tobytes())
        again = Ether(s.tobytes())
        del again[TCP].chksum
        if IP in again:
            del again[IP].chksum
            assert Ether(bytes(again))[IP].chksum == p[IP].chksum
        assert Ether(bytes(again))[TCP].chksum == p[TCP].chksum
        payload += bytes(p[TCP].payload)
    assert payload == case["payload"]


def test_gso_packet_passes_the_mtu_by_its_segments(ftk):
    """nf_flow_exceeds_mtu: a 6000-byte super-packet on a 1500 MTU route stays on the fast path when
    each segment (headers + gso_size) fits, goes slow when one would not; an ordinary packet of the
    same size goes slow."""
    ft = Flowtable("mtu")
    _, orig, _ = ftk.flow(ft, l4=6, mtu=1500)
    frame = make_partial(bytes(ftk.pkt(orig, payload=b"y" * 6000)))
    for gso_size, want in ((1460, Reason.FLOW_FORWARD), (1461, Reason.SLOW_MTU)):
        b = gso_batch(ftk, frame, gso_size, ftk.IIF_C)
        ftk.hook(b, ft, 0)
        assert b.verdict[0] == want, gso_size
    b = ftk.batch_of(frame, slot=SLOT)
    ftk.hook(b, ft, 0)
    assert b.verdict[0] == Reason.SLOW_MTU

"""flowtable/xfrm.py: the tunnel tuples of ESP input and the parser that keys a frame on them.

Frames are built by Scapy; the gateway-level behaviour (decrypt, policy, order) is tested in
tests/datapath/test_ipsec_fastpath.py.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from scapy.all import IP, UDP, Ether, IPv6, Raw
from scapy.layers.ipsec import ESP

from flowpath.flowtable import FlowTuple
from flowpath.flowtable.key import flow_offload_hash, flow_offload_probe
from flowpath.flowtable.xfrm import (
    MAX_PROBES,
    TUN_CLASSIC,
    TUN_KEY,
    TUN_NOT_ESP,
    XfrmInputTable,
    nf_flow_xfrm_tunnel_key,
)

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
PORTS = np.array([4500], np.int64)


def _key(frame, iif=3, ports=PORTS):
    b = np.frombuffer(bytes(frame), np.uint8).copy()
    kr = np.zeros(16, np.uint32)
    ok = nf_flow_xfrm_tunnel_key(b, 0, len(b), iif, ports, kr)
    return ok, kr


def _tuple(src, dst, l4, sport, dport, spi, iif=3):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return FlowTuple(iif, a.version, l4, int(a), int(b), sport, dport, spi)


@pytest.mark.parametrize(
    "frame,tup",
    [
        (
            ETH / IP(src="192.0.2.2", dst="192.0.2.1") / ESP(spi=0x2002, seq=1) / Raw(bytes(40)),
            _tuple("192.0.2.2", "192.0.2.1", 50, 0, 0, 0x2002),
        ),
        (
            ETH / IPv6(src="2001:db8::2", dst="2001:db8::1") / ESP(spi=0xABCDEF01, seq=7) / Raw(bytes(40)),
            _tuple("2001:db8::2", "2001:db8::1", 50, 0, 0, 0xABCDEF01),
        ),
        (
            ETH
            / IP(src="198.51.100.9", dst="192.0.2.1")
            / UDP(sport=31000, dport=4500)
            / ESP(spi=5, seq=1)
            / Raw(bytes(40)),
            _tuple("198.51.100.9", "192.0.2.1", 17, 31000, 4500, 5),
        ),
    ],  # fmt: skip
)
def test_esp_and_esp_in_udp_are_keyed_like_the_tunnel_tuple(frame, tup):
    ok, kr = _key(frame)
    assert ok == TUN_KEY
    assert np.array_equal(kr[:12], tup.words()[:12])


@pytest.mark.parametrize(
    "frame",
    [
        ETH
        / IP(src="192.0.2.2", dst="192.0.2.1")
        / UDP(sport=4500, dport=4500)
        / Raw(bytes(4) + b"IKE-SA-INIT"),
        ETH / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=4500, dport=4500) / Raw(b"\xff"),  # keepalive
        ETH / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=500, dport=500) / ESP(spi=5) / Raw(bytes(20)),
        ETH / IP(src="192.0.2.2", dst="192.0.2.1", options=[b"\x01" * 4]) / ESP(spi=5) / Raw(bytes(20)),
        ETH / IP(src="192.0.2.2", dst="192.0.2.1", flags="MF") / ESP(spi=5) / Raw(bytes(20)),
        ETH / IP(src="192.0.2.2", dst="192.0.2.1") / Raw(b"\x00\x00"),  # ESP header cut short (proto 0)
        Ether(bytes(ETH / IP(src="192.0.2.2", dst="192.0.2.1") / ESP(spi=5) / Raw(bytes(20)))[: 14 + 20 + 4]),
        ETH / IP(src="192.0.2.2", dst="192.0.2.1") / ESP(spi=0) / Raw(bytes(20)),  # reserved SPI 0
    ],
    ids=[
        "ike-marker",
        "keepalive",
        "other-udp-port",
        "ip-options",
        "fragment",
        "not-esp",
        "truncated",
        "spi0",
    ],
)
def test_what_the_fast_path_leaves_to_the_classic_path(frame, request):
    """Not ESP at all, or ESP only the classic path takes (then the poll's later ESP follows it)."""
    ok, _ = _key(frame)
    classic = request.node.callspec.id in ("ip-options", "fragment", "truncated")
    assert ok == (TUN_CLASSIC if classic else TUN_NOT_ESP)


def test_tunnel_table_grows_and_finds_every_tuple():
    tab = XfrmInputTable(capacity=2, seed=7)
    tuples = [_tuple(f"198.51.100.{k}", "192.0.2.1", 17 if k % 2 else 50, 4500 if k % 2 else 0,
                     4500 if k % 2 else 0, 0x1000 + k, iif=2 + k % 3) for k in range(40)]  # fmt: skip
    for k, t in enumerate(tuples):
        assert tab.add(t, k)
    assert not tab.add(tuples[3], 3)  # already there for this SA
    assert tab.add(tuples[3], 33) and tab.lookup(tuples[3]) == 33  # re-pointed (a rekeyed SA)
    assert tab.count == 40 and list(tab.ports) == [4500] and tab.devs[2:5].all()
    index, key, sa, seed = tab.cols[:4]
    for k, t in enumerate(tuples):
        w = t.words()
        e = flow_offload_probe(
            index, key, index.shape[0] - 1, MAX_PROBES, w, 0, flow_offload_hash(w, 0, seed, 0), 0
        )
        assert e >= 0 and sa[e] == (33 if k == 3 else k)
    assert tab.lookup(_tuple("203.0.113.1", "192.0.2.1", 50, 0, 0, 1)) == -1

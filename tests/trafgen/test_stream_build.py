"""Frames built in bulk, checked against Scapy as the independent dissector (RFC 791/768/793/8200
checksums); rates and bursts against the arithmetic of TRex's L1 accounting."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, rdpcap

from flowpath.trafgen import FieldVar, Profile, Rate, Stream, build_stream, sig_find, write_frames_pcap


def _recomputed(pkt):
    """Scapy's own checksums for the same packet (fields deleted, rebuilt)."""
    p = Ether(bytes(pkt))
    l4 = p[UDP] if UDP in p else p[TCP]
    del l4.chksum
    if IP in p:
        del p[IP].chksum
    return Ether(bytes(p))


def test_ipv4_udp_frames_match_scapy_with_valid_checksums():
    s = Stream(saddr=FieldVar(0xC0A8010A, 0xC0A8010C, "inc"), sport=FieldVar(1024, 1027, "dec"), size=128,
               count=6, rate=Rate(pps=1000))  # fmt: skip
    fr = build_stream(s, 3)
    for i in range(6):
        raw = fr.frame(i)
        assert len(raw) == 124  # 128 on the wire minus the FCS
        p = Ether(raw)
        assert (
            p[IP].src == f"192.168.1.{10 + i % 3}" and p[UDP].sport == 1027 - i % 4 and p[UDP].dport == 5001
        )
        assert p[IP].len == 110 and p[UDP].len == 90 and p[IP].ttl == 64
        ref = _recomputed(p)
        assert p[IP].chksum == ref[IP].chksum and p[UDP].chksum == ref[UDP].chksum
        assert sig_find(raw) == (3, i, i * 1_000_000)


def test_ipv6_tcp_and_ipv6_udp_checksums_match_scapy():
    for l4 in ("tcp", "udp"):
        s = Stream(l3="ipv6", l4=l4, saddr="2001:db8:1::10", daddr=FieldVar(
            0x20010DB800FF00000000000000000007, 0x20010DB800FF00000000000000000009, "random", seed=1),
            size=FieldVar(100, 300, "random", seed=2), count=20)  # fmt: skip
        fr = build_stream(s, 0)
        for i in range(20):
            p = Ether(fr.frame(i))
            ref = _recomputed(p)
            l4cls = TCP if l4 == "tcp" else UDP
            assert p[IPv6].plen == len(fr.frame(i)) - 54
            assert p[l4cls].chksum == ref[l4cls].chksum
            assert p[IPv6].dst in ("2001:db8:ff::7", "2001:db8:ff::8", "2001:db8:ff::9")
            assert sig_find(fr.frame(i))[1] == i


def test_too_small_frames_are_refused():
    with pytest.raises(ValueError, match="minimum"):
        build_stream(Stream(l3="ipv6", size=64, count=1), 0)


def test_pps_and_l1_rates_set_the_timestamps():
    ts = build_stream(Stream(rate=Rate(pps=1e6), count=5, start_ns=100), 0).ts_ns
    assert ts.tolist() == [100, 1100, 2100, 3100, 4100]
    # 100 % of 10GbE at 64 B: (64 + 20) * 8 bits = 67.2 ns per frame (14.88 Mpps)
    ts = build_stream(Stream(rate=Rate(percent=100, line_bps=10e9), count=6), 0).ts_ns
    assert ts.tolist() == [0, 67, 134, 201, 268, 336]
    # L1 bit/s with IMIX: each gap is that frame's (size + 20) * 8 bits
    fr = build_stream(Stream(rate=Rate(l1_bps=1e9), size="imix", count=48), 0)
    sizes = fr.caplen + 4
    assert fr.ts_ns[-1] == int(np.floor(((sizes[:-1] + 20) * 8).sum() + 1e-6))


def test_burst_mode_and_duration():
    fr = build_stream(Stream(rate=Rate(pps=1e6), count=6, burst=2, ibg_ns=10_000), 0)
    assert fr.ts_ns.tolist() == [0, 1000, 12000, 13000, 24000, 25000]
    fr = build_stream(Stream(rate=Rate(pps=1e5), duration_s=0.001), 0)
    assert len(fr) == 100 and fr.ts_ns[-1] == 990_000


def test_profile_merges_streams_by_time_and_writes_a_pcap_scapy_reads(tmp_path):
    prof = Profile([Stream(count=3, rate=Rate(pps=1e3)), Stream(count=3, rate=Rate(pps=1e3), start_ns=500_000,
                                                               sport=7, size=200)])  # fmt: skip
    fr = prof.generate()
    assert fr.stream_id.tolist() == [0, 1, 0, 1, 0, 1]
    path = tmp_path / "g.pcap"
    write_frames_pcap(path, fr)
    pk = rdpcap(str(path))
    assert [len(p) for p in pk] == [60, 196] * 3
    assert [int(p.time * 1e9 + 0.5) for p in pk] == [0, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_500_000]
    assert [bytes(p) for p in pk] == [fr.frame(i) for i in range(6)]


def test_streams_keep_their_ports_and_random_fields_draw_independently():
    a = Stream(count=4, port="wan0", rate=Rate(pps=1e3), sport=FieldVar(1, 60000, "random"),
               dport=FieldVar(1, 60000, "random"))  # fmt: skip
    b = Stream(count=4, port="lan0", rate=Rate(pps=1e3), start_ns=1)
    fr = Profile([a, b]).generate()
    assert fr.ports == ["lan0", "wan0"]
    assert [fr.ports[p] for p in fr.port] == ["wan0", "lan0"] * 4
    ours = [Ether(fr.frame(i)) for i in range(0, 8, 2)]
    assert [p[UDP].sport for p in ours] != [p[UDP].dport for p in ours]

"""Malformed and truncated frames are counted drops with a reason, never a traceback (DESIGN.md §7)."""

from __future__ import annotations

from gateway import GW_LAN, H10, example_net, example_rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, Raw

from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import REASON_KIND, Reason

_WORKERS = {}


def worker(flowtable: bool) -> Worker:
    if flowtable not in _WORKERS:
        _WORKERS[flowtable] = Worker(example_net(), example_rules(), flowtable=flowtable)
    return _WORKERS[flowtable]


SEEDS = [
    bytes(Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=9, dport=9) / Raw(b"a" * 30)),
    bytes(Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7", options=b"\x94\x04\x00\x00")
          / TCP(flags="S")),
    bytes(Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="192.168.1.1") / ICMP() / Raw(b"p" * 8)),
    bytes(Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:2::1") / IPv6ExtHdrHopByHop()
          / IPv6ExtHdrFragment() / UDP() / Raw(b"x" * 16)),
    bytes(Ether(src=H10, dst=GW_LAN, type=0x8100) / Raw(b"\x00\x05\x08\x00") / IP(dst="198.51.100.7") / UDP()),
]  # fmt: skip


def _run(frames: list[bytes], flowtable: bool) -> None:
    w = worker(flowtable)
    batch = PacketBatch(len(frames))
    for k, f in enumerate(frames):
        batch.append(f, 2, 1_700_000_000_000_000_000 + k)
    before = int(w.stats.reasons.sum())
    w.rx_batch(batch)
    assert int(w.stats.reasons.sum()) == before + len(frames)  # every frame accounted once
    s = w.stats.as_dict(w.ifname)
    assert s["rx_packets"] == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(0, 200), st.binary(max_size=8), st.booleans())
def test_truncated_and_corrupted_frames_are_counted(seed, cut, junk, flowtable):
    frame = bytearray(seed[: max(0, len(seed) - cut)] if cut < len(seed) else seed[: cut % 15])
    for i, b in enumerate(junk):
        if frame:
            frame[(b * 7 + i) % len(frame)] ^= b
    _run([bytes(frame)], flowtable)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=8))
def test_random_bytes_never_raise(frames):
    _run(frames, False)


def test_truncated_ipv4_header_is_pkt_too_small():
    w = Worker(example_net(), example_rules(), flowtable=False)
    b = PacketBatch(1)
    b.append(SEEDS[0][:30], 2, 0)
    w.rx_batch(b)
    drops = {Reason(r).name: int(n) for r, n in enumerate(w.stats.reasons) if n and REASON_KIND[r] == "drop"}
    assert drops == {"PKT_TOO_SMALL": 1}

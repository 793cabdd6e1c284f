"""The signature's loss / reorder / duplicate / latency accounting on crafted traces, against a naive
reference (RFC 4737 §3.3 reordering, RFC 3550 §6.4.1 jitter), the signature inside IPIP and after
decapsulation, and the JSON schema (version 1) key by key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scapy.all import IP, UDP, Ether, Raw

from flowpath.trafgen import Rate, Stream, build_stream, rx_stats, sequence_stats, sig_find
from flowpath.trafgen.rxstats import LATENCY_KEYS, PORT_KEYS, STREAM_KEYS


def naive(seqs, expected=None):
    """Plain-Python reference: a set of seen sequence numbers and the highest so far."""
    seen, hi, dup, reo = set(), -1, 0, 0
    for s in seqs:
        if s in seen:
            dup += 1
            continue
        if s < hi:
            reo += 1
        seen.add(s)
        hi = max(hi, s)
    exp = max(seqs) + 1 if expected is None else expected
    return {"expected": exp, "lost": max(0, exp - len(seen)), "duplicates": dup, "reordered": reo}


@pytest.mark.parametrize(
    "seqs, lost, dup, reo",
    [
        ([0, 1, 2, 3, 4], 0, 0, 0),
        ([0, 1, 3, 4], 1, 0, 0),  # a drop
        ([0, 1, 1, 2], 0, 1, 0),  # a duplicate
        ([0, 2, 1, 3], 0, 0, 1),  # a swap
        ([3, 0, 1, 2], 0, 0, 3),  # one early packet: the three after it are late
        ([0, 2, 2, 1, 5, 1], 2, 2, 1),  # drops, dups and a swap together
    ],
)
def test_crafted_traces(seqs, lost, dup, reo):
    got = sequence_stats(np.array(seqs))
    assert (got["lost"], got["duplicates"], got["reordered"]) == (lost, dup, reo)
    assert {k: got[k] for k in ("expected", "lost", "duplicates", "reordered")} == naive(seqs)


def test_random_traces_match_the_naive_reference():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        s = rng.integers(0, n + 5, n)
        got = sequence_stats(s, expected=n + 5)
        assert {k: got[k] for k in ("expected", "lost", "duplicates", "reordered")} == naive(
            s.tolist(), n + 5
        )


def test_tail_loss_needs_the_sent_count():
    assert sequence_stats(np.array([0, 1, 2]))["lost"] == 0
    got = sequence_stats(np.array([0, 1, 2]), expected=5)
    assert got["lost"] == 2 and got["loss_ratio"] == pytest.approx(0.4)


def _frames(n, sid=0, pps=1e6):
    fr = build_stream(Stream(count=n, rate=Rate(pps=pps), size=100), sid)
    return [(int(fr.ts_ns[i]), fr.frame(i)) for i in range(n)]


def test_latency_and_rfc3550_jitter_of_a_crafted_trace():
    tx = _frames(5)
    delays = [1000, 3000, 2000, 2000, 6000]
    rx = [(ts + d, f) for (ts, f), d in zip(tx, delays, strict=True)]
    r = rx_stats({"p": rx})["streams"]["0"]
    lat = r["latency_ns"]
    assert (lat["min"], lat["max"], lat["avg"]) == (1000, 6000, 2800)
    j = 0.0
    for d in (2000, 1000, 0, 4000):  # |D| of consecutive transit times (RFC 3550 §6.4.1)
        j += (d - j) / 16
    assert lat["jitter"] == pytest.approx(j)


def test_streams_are_told_apart_and_ports_counted():
    a, b = _frames(10, 0), _frames(4, 7)
    late = [(10_000 + 1000 * k, f) for k, (_, f) in enumerate([b[1], b[0], b[2], b[2], b[3]])]
    rx = {"wan0": a[:3] + a[4:], "lan0": late}  # across ports, arrival order is receive-time order
    r = rx_stats(rx, expected={0: 10, 7: 4, 9: 2})
    assert r["ports"]["wan0"]["packets"] == 9 and r["ports"]["lan0"]["packets"] == 5
    assert r["ports"]["wan0"]["bytes"] == 9 * 100  # wire bytes: captured 96 + FCS
    s0, s7, s9 = r["streams"]["0"], r["streams"]["7"], r["streams"]["9"]
    assert (s0["lost"], s0["reordered"], s0["duplicates"], s0["ports"]) == (1, 0, 0, ["wan0"])
    assert (s7["lost"], s7["reordered"], s7["duplicates"]) == (0, 1, 1)
    assert s9["lost"] == 2 and s9["packets"] == 0 and s9["latency_ns"] is None
    assert s9["latency_note"] == "no packet received" and s7["latency_note"] is None


def test_latency_is_not_measured_when_send_and_receive_share_one_clock():
    """After `flowpath replay`, each output frame carries its input's capture time: receive - transmit
    is 0 for every packet, which says nothing about the gateway, so no 0/0/0 is reported."""
    r = rx_stats({"p": _frames(5)})["streams"]["0"]
    assert r["latency_ns"] is None
    assert r["latency_note"] == "replayed: send and receive share the capture clock"
    one_late = [(ts + (k == 3), f) for k, (ts, f) in enumerate(_frames(5))]
    assert rx_stats({"p": one_late})["streams"]["0"]["latency_ns"]["max"] == 1


def test_streams_carry_their_profile_names():
    r = rx_stats({"p": _frames(2, 0) + _frames(2, 7)}, names={7: "video"})
    assert r["streams"]["0"]["name"] is None and r["streams"]["7"]["name"] == "video"


def test_rates_of_a_steady_stream_are_exact():
    p = rx_stats({"p": _frames(1000, pps=1e5)})["ports"]["p"]
    assert p["pps"] == pytest.approx(1e5)
    assert p["l2_bps"] == pytest.approx(1e5 * 100 * 8)
    assert p["l1_bps"] == pytest.approx(1e5 * 120 * 8)


def test_signature_is_found_inside_ipip_and_after_nat_rewrites():
    """IPIP (RFC 2003) puts 20 bytes in front; NAT rewrites addresses, ports and checksums: the
    signature is payload and is found by scanning either way."""
    _, raw = _frames(3)[2]
    inner = Ether(raw)
    outer = Ether() / IP(src="192.0.2.1", dst="192.0.2.2", proto=4) / inner[IP]
    assert sig_find(bytes(outer)) == sig_find(raw) == (0, 2, 2000)
    natted = inner.copy()
    natted[IP].src, natted[UDP].sport = "203.0.113.1", 61000
    del natted[IP].chksum, natted[UDP].chksum
    assert sig_find(bytes(natted)) == (0, 2, 2000)
    assert sig_find(bytes(Ether() / IP() / UDP() / Raw(b"\x00" * 40))) is None


def test_json_schema_version_1_is_stable():
    """Consumers rely on these keys: change them only with a schema_version bump."""
    r = rx_stats({"p": [(ts + 500, f) for ts, f in _frames(3)]}, expected={0: 3})
    assert set(r) == {"schema_version", "conventions", "total", "ports", "streams"}
    assert r["schema_version"] == 1
    assert PORT_KEYS == ("packets", "bytes", "signed_packets", "first_ts_ns", "last_ts_ns", "duration_s",
                         "pps", "l2_bps", "l1_bps")  # fmt: skip
    assert STREAM_KEYS[:12] == ("packets", "bytes", "pps", "l2_bps", "l1_bps", "ports", "expected", "lost",
                                "loss_ratio", "duplicates", "reordered", "latency_ns")  # fmt: skip
    assert STREAM_KEYS[12:] == ("name", "latency_note")  # added later: new keys need no bump
    assert LATENCY_KEYS == ("min", "avg", "max", "jitter")
    assert tuple(r["ports"]["p"]) == PORT_KEYS and tuple(r["total"]) == PORT_KEYS
    assert tuple(r["streams"]["0"]) == STREAM_KEYS and tuple(r["streams"]["0"]["latency_ns"]) == LATENCY_KEYS
    assert json.loads(json.dumps(r)) == r


def test_signature_survives_esp_tunnel_mode_round_trip():
    """ESP (RFC 4303) tunnel mode hides the signature on the wire and gives it back, byte for byte,
    once decrypted: Scapy's SecurityAssociation is the independent ESP implementation."""
    from scapy.layers.ipsec import ESP, SecurityAssociation

    _, raw = _frames(5)[4]
    inner = Ether(raw)[IP]
    sa = SecurityAssociation(ESP, spi=0x1000, crypt_algo="AES-GCM", crypt_key=b"k" * 16 + b"salt",
                             tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))  # fmt: skip
    wire = sa.encrypt(inner)
    assert sig_find(bytes(Ether() / wire)) is None  # encrypted: nothing to see
    assert sig_find(bytes(Ether() / sa.decrypt(wire))) == (0, 4, 4000)

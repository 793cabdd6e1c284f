"""Writing pcap and pcapng: our files read by Scapy's rdpcap, and round trips through our reader.

No Linux counterpart; formats: libpcap sf-pcap.c, draft-ietf-opsawg-pcapng.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, UDP, Ether, rdpcap

from flowpath.ports.pcap import CaptureRecord, PcapWriter, read_capture, write_pcap
from flowpath.ports.pcapng import PcapngWriter, write_pcapng

TS = 1_700_000_000_987_654_321


@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_writer_read_by_scapy(tmp_path, nanosecond):
    path = tmp_path / "w.pcap"
    frames = [bytes(range(60)), b"\xff" * 1514, b"\x01" * 14]
    with PcapWriter(path, nanosecond=nanosecond) as w:
        for i, f in enumerate(frames):
            w.write(f, TS + i)
    pkts = rdpcap(str(path))
    want_ns = [TS + i if nanosecond else (TS + i) // 1000 * 1000 for i in range(3)]
    assert [int(p.time * 10**9) for p in pkts] == want_ns
    assert [p.original for p in pkts] == frames
    assert [p.wirelen for p in pkts] == [len(f) for f in frames]
    magic = path.read_bytes()[:4]
    assert magic == struct.pack("<I", 0xA1B23C4D if nanosecond else 0xA1B2C3D4)


def test_pcap_writer_snaplen_cuts_and_keeps_orig_len(tmp_path):
    path = tmp_path / "s.pcap"
    with PcapWriter(path, snaplen=64) as w:
        w.write(b"a" * 100, TS)
        w.write(b"b" * 30, TS, orig_len=1500)
    (p1, p2) = rdpcap(str(path))
    assert (len(p1.original), p1.wirelen, len(p2.original), p2.wirelen) == (64, 100, 30, 1500)
    assert struct.unpack_from("<I", path.read_bytes(), 16)[0] == 64  # snaplen in the file header


def test_write_pcap_takes_records_or_pairs(tmp_path):
    path = tmp_path / "p.pcap"
    recs = [CaptureRecord(TS, b"x" * 60, 60), (b"y" * 61, TS + 1000)]
    assert write_pcap(path, recs, nanosecond=True) == 2
    assert [(r.ts_ns, r.data) for r in read_capture(path)] == [(TS, b"x" * 60), (TS + 1000, b"y" * 61)]


def test_writer_rejects_timestamps_that_do_not_fit(tmp_path):
    with PcapWriter(tmp_path / "t.pcap") as w:
        with pytest.raises(ValueError):
            w.write(b"x", -1)
        with pytest.raises(ValueError):
            w.write(b"x", (1 << 32) * 10**9)


def test_pcapng_writer_read_by_scapy(tmp_path):
    path = tmp_path / "w.pcapng"
    with PcapngWriter(path) as w:
        wan, lan = w.add_interface("wan0"), w.add_interface("lan0")
        w.write(lan, b"l" * 60, TS)
        w.write(wan, b"w" * 61, TS + 1)
        with pytest.raises(ValueError):
            w.write(7, b"x", TS)
    pkts = rdpcap(str(path))
    assert [(int(p.time * 10**9), p.original, p.sniffed_on) for p in pkts] == [
        (TS, b"l" * 60, "lan0"),
        (TS + 1, b"w" * 61, "wan0"),
    ]
    assert [r.if_name for r in read_capture(path)] == ["lan0", "wan0"]


records = st.lists(
    st.builds(
        CaptureRecord,
        ts_ns=st.integers(0, (1 << 32) * 10**9 - 1),
        data=st.binary(min_size=0, max_size=200),
        orig_len=st.integers(0, 0xFFFFFFFF),
        if_name=st.sampled_from([None, "eth0", "wan1", "ü"]),
    ),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(recs=records, nanosecond=st.booleans())
def test_pcap_round_trip(tmp_path_factory, recs, nanosecond):
    """Everything a pcap can hold comes back: ns (or µs, floored), bytes, orig_len."""
    path = tmp_path_factory.mktemp("rt") / "r.pcap"
    write_pcap(path, recs, nanosecond=nanosecond)
    got = list(read_capture(path))
    unit = 1 if nanosecond else 1000
    assert [(r.ts_ns, r.data, r.orig_len, r.if_name) for r in got] == [
        (r.ts_ns // unit * unit, r.data, r.orig_len, None) for r in recs
    ]


@settings(max_examples=100, deadline=None)
@given(recs=records)
def test_pcapng_round_trip(tmp_path_factory, recs):
    """pcapng keeps ns timestamps and interface names (None is written as "unknown")."""
    path = tmp_path_factory.mktemp("rt") / "r.pcapng"
    write_pcapng(path, recs)
    got = list(read_capture(path))
    assert got == [CaptureRecord(r.ts_ns, r.data, r.orig_len, r.if_name or "unknown") for r in recs]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
@pytest.mark.parametrize("fmt", ["pcap_us", "pcap_ns", "pcapng"])
def test_our_files_read_by_tcpdump(tmp_path, fmt):
    """libpcap reads our pcap and pcapng files: same packets, same ns timestamps (µs floored)."""
    frames = [
        bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(id=i) / UDP()) for i in range(3)
    ]
    path = tmp_path / ("f.pcapng" if fmt == "pcapng" else "f.pcap")
    if fmt == "pcapng":
        with PcapngWriter(path) as w:
            ifidx = w.add_interface("eth0")
            for i, f in enumerate(frames):
                w.write(ifidx, f, TS + i)
    else:
        write_pcap(path, [(f, TS + i) for i, f in enumerate(frames)], nanosecond=fmt == "pcap_ns")
    out = subprocess.run(
        ["tcpdump", "-r", str(path), "-n", "-tt", "-v", "--time-stamp-precision=nano"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    lines = [line for line in out if " IP " in line]
    unit = 1000 if fmt == "pcap_us" else 1
    assert [line.split()[0] for line in lines] == [
        f"{(TS + i) // unit * unit // 10**9}.{(TS + i) // unit * unit % 10**9:09d}" for i in range(3)
    ]
    assert [f"id {i}," in line for i, line in enumerate(lines)] == [True] * 3

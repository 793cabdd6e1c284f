"""Reading pcap and pcapng: files from Scapy, tcpdump and hand-made blocks, checked against Scapy's reader.

No Linux counterpart; formats: libpcap sf-pcap.c, draft-ietf-opsawg-pcapng.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, Ether, Raw, rdpcap, wrpcap

from flowpath.errors import CaptureError
from flowpath.ports.pcap import CaptureRecord, read_capture

HERE = Path(__file__).resolve().parent
CAPTURES = HERE.parent / "data" / "captures"
_spec = importlib.util.spec_from_file_location("pcapng_build", HERE / "pcapng_build.py")
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)


def scapy_view(path: Path) -> list[tuple[int, bytes, int, str | None]]:
    """The oracle: (ts_ns, bytes, orig_len, if_name) of each packet as Scapy's rdpcap reads it."""
    return [(int(p.time * 10**9), p.original, p.wirelen, p.sniffed_on) for p in rdpcap(str(path))]


def our_view(path: Path) -> list[tuple[int, bytes, int, str | None]]:
    return [(r.ts_ns, r.data, r.orig_len, r.if_name) for r in read_capture(path)]


def frame(i: int, size: int = 20) -> bytes:
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(dst="192.0.2.9") / ICMP(seq=i)
    return bytes(p / Raw(bytes(range(size))))


@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURES.glob("*.pcap*")))
def test_tool_written_captures_read_as_scapy_reads_them(name):
    """tcpdump and Scapy files (µs/ns magic, both byte orders, pcapng with several IDBs) read identically."""
    path = CAPTURES / name
    ours = our_view(path)
    assert len(ours) >= 4
    assert ours == scapy_view(path)
    assert all(r.linktype == 1 for r in read_capture(path))


def test_tcpdump_snaplen_keeps_orig_len():
    """`tcpdump -s 96`: records hold 96 bytes, orig_len the frame's wire length."""
    recs = list(read_capture(CAPTURES / "tcpdump_lo_snap96.pcap"))
    assert {len(r.data) for r in recs} == {96}
    assert {r.orig_len for r in recs} == {14 + 20 + 8 + 300}


def test_scapy_pcapng_interface_names():
    """Scapy writes an unnamed IDB 0, then one IDB per `sniffed_on` name."""
    assert [r.if_name for r in read_capture(CAPTURES / "scapy_multi_if.pcapng")] == ["wan1", "eth0"] * 2


@pytest.mark.parametrize("endianness", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_scapy_wrpcap_both_byte_orders_and_precisions(tmp_path, endianness, nano):
    pkts = [Ether(frame(i)) for i in range(3)]
    for i, p in enumerate(pkts):
        p.time = 1_600_000_000 + i + (0.25 if not nano else 0)
    path = tmp_path / "s.pcap"
    wrpcap(str(path), pkts, endianness=endianness, nano=nano)
    assert our_view(path) == scapy_view(path)
    assert [r.ts_ns for r in read_capture(path)][1] == 1_600_000_001 * 10**9 + (
        250_000_000 if not nano else 0
    )


def handmade_pcapng() -> tuple[bytes, list[CaptureRecord]]:
    """Two sections: big-endian with two IDBs (ns and ms resolution), EPB, SPB, obsolete PB and blocks we
    skip (name resolution, statistics, custom, unknown); then little-endian, new IDB list, if_tsoffset
    and a 2^-10 resolution."""
    e, f0, f1, f2, f3 = ">", frame(0), frame(1, 33), frame(2, 7), frame(3)
    sec1 = B.shb(e, B.option(e, 4, b"handmade") + B.end_of_options(e))
    sec1 += B.idb(e, "wan0", tsresol=9) + B.block(e, 4, b"\0" * 4)  # NRB with only an end record
    sec1 += B.idb(e, "lan1", tsresol=3, snaplen=64)
    sec1 += B.epb(e, 1, 1_700_000_000_123, f1, comment=b"hello")
    sec1 += B.block(e, 0x00000BAD, b"custom" + b"\0" * 6) + B.block(e, 0x4000_0000, b"")
    sec1 += B.epb(e, 0, 1_700_000_000_123_456_789, f0[:40], orig_len=len(f0))
    sec1 += B.spb(e, f2)  # interface 0; no timestamp of its own
    sec1 += B.block(e, 5, struct.pack(e + "III", 0, 0, 0))  # interface statistics
    sec1 += B.pb(e, 1, 1_700_000_001_000, f3)
    e = "<"
    sec2 = B.shb(e) + B.idb(e, "only", tsresol=0x8A, tsoffset=1_000) + B.epb(e, 0, 3 * 1024 + 512, f0)
    want = [
        CaptureRecord(1_700_000_000_123_000_000, f1, len(f1), "lan1"),
        CaptureRecord(1_700_000_000_123_456_789, f0[:40], len(f0), "wan0"),
        CaptureRecord(1_700_000_000_123_456_789, f2, len(f2), "wan0"),
        CaptureRecord(1_700_000_001_000_000_000, f3, len(f3), "lan1"),
        CaptureRecord(1_003_500_000_000, f0, len(f0), "only"),
    ]
    return sec1 + sec2, want


def test_handmade_pcapng_sections_interfaces_and_block_types(tmp_path):
    data, want = handmade_pcapng()
    path = tmp_path / "h.pcapng"
    path.write_bytes(data)
    assert list(read_capture(path)) == want


def test_pcapng_spb_uses_interface_snaplen(tmp_path):
    """An SPB's captured length is min(orig_len, snaplen of interface 0, data in the block)."""
    e, f = "<", frame(1, 60)
    path = tmp_path / "s.pcapng"
    path.write_bytes(B.shb(e) + B.idb(e, snaplen=50) + B.spb(e, f[:52], orig_len=len(f)))
    (rec,) = read_capture(path)
    assert (rec.data, rec.orig_len, rec.ts_ns) == (f[:50], len(f), 0)


def test_linktype_not_ethernet_is_an_error_unless_allowed(tmp_path):
    path = tmp_path / "raw.pcap"
    wrpcap(str(path), [IP(dst="192.0.2.1") / ICMP()], linktype=101)
    with pytest.raises(CaptureError) as ei:
        list(read_capture(path))
    assert ei.value.offset == 0 and "link type 101" in ei.value.msg
    (rec,) = read_capture(path, linktypes=(1, 101))
    assert rec.linktype == 101 and rec.data == bytes(IP(dst="192.0.2.1") / ICMP())


def test_pcapng_packet_on_non_ethernet_interface(tmp_path):
    e = "<"
    head = B.shb(e) + B.idb(e, "eth0") + B.idb(e, "tun0", linktype=101) + B.epb(e, 0, 1, frame(0))
    path = tmp_path / "l.pcapng"
    path.write_bytes(head + B.epb(e, 1, 2, bytes(IP())))
    with pytest.raises(CaptureError) as ei:
        list(read_capture(path))
    assert ei.value.offset == len(head) and "link type 101" in ei.value.msg


def pcap_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "x.cap"
    path.write_bytes(data)
    return path


def error_of(path: Path) -> CaptureError:
    with pytest.raises(CaptureError) as ei:
        list(read_capture(path))
    assert str(ei.value).startswith(f"{path}: byte {ei.value.offset}: ")
    return ei.value


def test_empty_file_is_an_error_at_0(tmp_path):
    err = error_of(pcap_file(tmp_path, b""))
    assert (err.offset, err.msg) == (0, "empty file")


def test_short_or_unknown_file_header(tmp_path):
    good = (CAPTURES / "scapy_ns_le.pcap").read_bytes()
    err = error_of(pcap_file(tmp_path, good[:10]))
    assert (err.offset, err.msg) == (0, "truncated file header: 24 bytes needed, 10 left")
    err = error_of(pcap_file(tmp_path, b"GIF89a" + good[6:]))
    assert err.offset == 0 and err.msg.startswith("not a pcap or pcapng file")
    err = error_of(pcap_file(tmp_path, good[:4] + b"\x03\x00" + good[6:]))
    assert (err.offset, err.msg) == (0, "unsupported pcap version 3.4")


def test_text_file_is_not_a_capture(tmp_path):
    """A file shorter than a header whose first bytes are no magic is not a cut capture (libpcap
    pcap_fopen_offline reads the magic first); a cut real header stays "truncated"."""
    for text in (b"hello\n", b"#\n", b"table ip t {}\n"):
        err = error_of(pcap_file(tmp_path, text))
        assert (err.offset, err.msg) == (0, f"not a pcap or pcapng file: magic {text[:4].hex()}")
    good = (CAPTURES / "scapy_ns_le.pcap").read_bytes()
    assert error_of(pcap_file(tmp_path, good[:3])).msg == "truncated file header: 24 bytes needed, 3 left"


@pytest.mark.parametrize(
    ("idb", "ts", "msg"),
    [(dict(tsresol=0), 2**64 - 1, "after 2262"),  # 2**64 - 1 seconds
     (dict(tsresol=9, tsoffset=-(2**62)), 5, "before 1970"),
     (dict(tsresol=9, tsoffset=-1), 5, "before 1970"),
     (dict(tsresol=0x80), 2**63, "after 2262")],  # 2**63 seconds at a resolution of 2**0
)  # fmt: skip
def test_pcapng_timestamp_out_of_range_names_file_and_offset(tmp_path, idb, ts, msg):
    """draft-ietf-opsawg-pcapng §4.2 (if_tsresol, if_tsoffset) allows times an int64 ns clock cannot
    hold: CaptureError at the packet block, not OverflowError from numpy or the pcap writer."""
    e = "<"
    head = B.shb(e) + B.idb(e, "eth0", **idb)
    path = pcap_file(tmp_path, head + B.epb(e, 0, ts, frame(1)))
    err = error_of(path)
    assert err.offset == len(head) and err.msg.startswith("timestamp out of range: ") and msg in err.msg


def test_rxstats_reports_a_bad_timestamp_with_file_and_offset(tmp_path, capsys):
    """The CLI prints the CaptureError (file, byte offset) and exits 1, with no Python exception name."""
    from flowpath.cli import main

    e = "<"
    head = B.shb(e) + B.idb(e, "eth0", tsresol=0)
    path = pcap_file(tmp_path, head + B.epb(e, 0, 2**64 - 1, frame(0)))
    assert main(["rxstats", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"flowpath: error: {path}: byte {len(head)}: timestamp out of range")
    assert "Overflow" not in err


def test_truncated_packet_record_names_its_offset(tmp_path):
    """Records of scapy_ns_le.pcap are 42, 52, 62, 72 bytes; cut the third after 40 data bytes."""
    good = (CAPTURES / "scapy_ns_le.pcap").read_bytes()
    third = 24 + (16 + 42) + (16 + 52)
    err = error_of(pcap_file(tmp_path, good[: third + 16 + 40]))
    assert (err.offset, err.msg) == (third, "truncated packet record: header says 62 bytes, 40 left")
    err = error_of(pcap_file(tmp_path, good[: third + 5]))
    assert (err.offset, err.msg) == (third, "truncated record header: 16 bytes needed, 5 left")
    assert len(list(read_capture(pcap_file(tmp_path, good[:third])))) == 2  # a record boundary: shorter


def test_absurd_caplen_is_corrupt(tmp_path):
    good = bytearray((CAPTURES / "scapy_us_be.pcap").read_bytes())
    second = 24 + 16 + 42
    good[second + 8 : second + 12] = struct.pack(">I", 0x7FFFFFF0)
    err = error_of(pcap_file(tmp_path, bytes(good)))
    assert err.offset == second and "caplen 2147483632 larger than the maximum 262144" in err.msg


def test_pcapng_block_errors_name_the_block(tmp_path):
    e = "<"
    head = B.shb(e) + B.idb(e, "eth0")
    ok = B.epb(e, 0, 5, frame(0))
    off = len(head) + len(ok)
    bad = bytearray(ok)
    bad[-4:] = struct.pack(e + "I", len(ok) + 4)
    err = error_of(pcap_file(tmp_path, head + ok + bad))
    assert err.offset == off and err.msg.startswith("corrupt block: trailing length")
    bad = bytearray(ok)
    bad[4:8] = struct.pack(e + "I", 13)
    assert error_of(pcap_file(tmp_path, head + ok + bad)).msg == "bad block length 13 (block type 0x6)"
    err = error_of(pcap_file(tmp_path, head + ok + ok[:30]))
    assert (err.offset, err.msg) == (off, f"truncated block: header says {len(ok)} bytes, 30 left")
    err = error_of(pcap_file(tmp_path, head + ok + B.epb(e, 3, 5, frame(0))))
    assert (err.offset, err.msg) == (off, "packet block for interface 3, but 1 interfaces declared")
    bad = bytearray(ok)
    bad[20:24] = struct.pack(e + "I", len(frame(0)) + 5)
    err = error_of(pcap_file(tmp_path, head + ok + bad))
    assert err.offset == off and err.msg.startswith("corrupt packet block: captured length")
    err = error_of(pcap_file(tmp_path, head + ok + ok[:5]))
    assert (err.offset, err.msg) == (off, "truncated block header: 8 bytes needed, 5 left")


def test_pcapng_section_header_errors(tmp_path):
    good = B.shb(">") + B.idb(">", "eth0")
    bad = bytearray(good)
    bad[8:12] = b"\x1a\x2b\x3c\x4e"
    err = error_of(pcap_file(tmp_path, bytes(bad)))
    assert (err.offset, err.msg) == (0, "bad byte-order magic 1a2b3c4e in section header block")
    bad = bytearray(good)
    bad[12:14] = b"\x00\x02"
    assert error_of(pcap_file(tmp_path, bytes(bad))).msg == "unsupported pcapng version 2.0"
    second = good + B.shb("<")
    bad = bytearray(second)
    bad[len(good) + 4 : len(good) + 8] = struct.pack("<I", 20)
    err = error_of(pcap_file(tmp_path, bytes(bad)))
    assert (err.offset, err.msg) == (len(good), "bad section header block length 20")


def test_pcapng_corrupt_options(tmp_path):
    """An option running past its block, or an if_tsresol that is not one byte, is corrupt."""
    e = "<"
    body = struct.pack(e + "HHI", 1, 0, 0) + struct.pack(e + "HH", 2, 40) + b"eth0"
    err = error_of(pcap_file(tmp_path, B.shb(e) + B.block(e, 1, body)))
    assert (err.offset, err.msg) == (28, "corrupt option 2: length 40 runs past the block's end")
    body = struct.pack(e + "HHI", 1, 0, 0) + B.option(e, 9, b"\x06\x00")
    err = error_of(pcap_file(tmp_path, B.shb(e) + B.block(e, 1, body)))
    assert err.msg == "corrupt if_tsresol option: length 2"

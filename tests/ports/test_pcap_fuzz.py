"""Truncated and corrupt captures: CaptureError naming the bad record's offset, or a clean shorter read.

No Linux counterpart. Truncation is tried at every byte of each base file (small files, so exhaustive
is cheaper than sampling); corruption is sampled by hypothesis.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpath.errors import CaptureError
from flowpath.ports.pcap import CaptureRecord, read_capture

HERE = Path(__file__).resolve().parent
CAPTURES = HERE.parent / "data" / "captures"
_spec = importlib.util.spec_from_file_location("pcapng_build", HERE / "pcapng_build.py")
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)


def handmade() -> bytes:
    """Two sections in both byte orders, EPB/SPB/PB, skipped blocks, options."""
    out = b""
    for e in "><":
        out += B.shb(e, B.option(e, 4, b"fuzz") + B.end_of_options(e))
        out += B.idb(e, "wan0", tsresol=9, tsoffset=-5) + B.idb(e, "lan0", tsresol=0x83, snaplen=40)
        out += B.epb(e, 1, 123, b"\x01" * 50, comment=b"c") + B.block(e, 0x0BAD, b"\0" * 8)
        # the obsolete PB on wan0: 10 s + 7 ns, so the -5 s if_tsoffset keeps it after 1970
        out += B.spb(e, b"\x02" * 21) + B.pb(e, 0, 10**10 + 7, b"\x03" * 17)
    return out


BASES = {p.name: p.read_bytes() for p in sorted(CAPTURES.glob("*.pcap*"))}
BASES["handmade.pcapng"] = handmade()


def boundaries(data: bytes) -> tuple[list[int], list[int]]:
    """(ends of the file header / every block or record, ends of the records that carry packets).

    Walks the file with the format's lengths only: an oracle independent of the reader's code.
    """
    ends, pkt_ends = [], []
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        off, e = 0, "<"
        while off < len(data):
            if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":
                e = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack_from(e + "II", data, off)
            off += blen
            ends.append(off)
            if btype in (2, 3, 6):
                pkt_ends.append(off)
        return ends, pkt_ends
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off = 24
    ends.append(off)
    while off < len(data):
        off += 16 + struct.unpack_from(e + "I", data, off + 8)[0]
        ends.append(off)
        pkt_ends.append(off)
    return ends, pkt_ends


def read_all(path: Path) -> list[CaptureRecord] | CaptureError:
    try:
        return list(read_capture(path))
    except CaptureError as err:
        return err


@pytest.mark.parametrize("name", sorted(BASES))
def test_truncation_at_every_byte(tmp_path, name):
    """A cut at a record boundary reads the records before it; any other cut raises CaptureError at the
    offset where the cut record (or the file header) starts."""
    data = BASES[name]
    full = read_all_bytes(tmp_path, data)
    assert isinstance(full, list) and len(full) >= 4
    ends, pkt_ends = boundaries(data)
    assert ends[-1] == len(data)
    path = tmp_path / "cut"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        got = read_all(path)
        if n in ends:
            assert got == full[: sum(e <= n for e in pkt_ends)], n
        else:
            assert isinstance(got, CaptureError), n
            assert got.offset == max([0] + [e for e in ends if e <= n]), (n, got)


def read_all_bytes(tmp_path: Path, data: bytes) -> list[CaptureRecord] | CaptureError:
    path = tmp_path / "whole"
    path.write_bytes(data)
    return read_all(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(BASES)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_corruption_gives_capture_error_or_records(tmp_path, name, edits, cut):
    """Any bytes changed (and maybe a cut): a list of records or CaptureError, never another exception."""
    data = bytearray(BASES[name])
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    got = read_all_bytes(tmp_path, bytes(data))
    if isinstance(got, CaptureError):
        assert 0 <= got.offset <= len(data)
    else:
        assert all(isinstance(r, CaptureRecord) and r.orig_len >= 0 for r in got)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    magic=st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a", b""]),
    body=st.binary(max_size=300),
)
def test_random_bytes_after_a_magic(tmp_path, magic, body):
    got = read_all_bytes(tmp_path, magic + body)
    assert isinstance(got, (list, CaptureError))

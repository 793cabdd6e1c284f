"""Classic pcap capture files: read (both byte orders, µs and ns magic) and write; auto-detect pcapng.

No Linux counterpart: the format is libpcap's savefile (libpcap sf-pcap.c, draft-ietf-opsawg-pcap).
Readers stream the file front to back and check every length against the bytes really left before
reading, so a corrupt length never allocates a huge buffer. Bad input of any kind raises
`CaptureError(path, offset, msg)` with the offset of the bad file header, record or block; a file cut
exactly at a record boundary is a valid, shorter capture (the format cannot tell the difference).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from flowpath.errors import CaptureError

LINKTYPE_ETHERNET = 1  # pcap-linktype(7): DLT_EN10MB
TCPDUMP_MAGIC = 0xA1B2C3D4  # libpcap pcap-common.h: µs timestamps
NSEC_TCPDUMP_MAGIC = 0xA1B23C4D  # ns timestamps
PCAPNG_BLOCK_SHB = b"\x0a\x0d\x0d\x0a"  # a pcapng file starts with a section header block
PCAP_VERSION_MAJOR = 2
PCAP_VERSION_MINOR = 4
MAXIMUM_SNAPLEN = 262144  # libpcap pcap-int.h: the largest record libpcap accepts for Ethernet
NSEC_PER_SEC = 1_000_000_000
TS_NS_MAX = (1 << 63) - 1  # packet times travel as int64 ns (PacketBatch.ts_ns)
_MAGICS = (
    PCAPNG_BLOCK_SHB,
    *(m.to_bytes(4, order) for m in (TCPDUMP_MAGIC, NSEC_TCPDUMP_MAGIC) for order in ("little", "big")),
)

_FILE_HDR = struct.Struct(
    "IHHiIII"
)  # magic, version_major, version_minor, thiszone, sigfigs, snaplen, linktype
_REC_HDR = struct.Struct("IIII")  # ts_sec, ts_usec (or ts_nsec), incl_len, orig_len


@dataclass(slots=True)
class CaptureRecord:
    """One captured frame.

    ts_ns     capture time in ns since the epoch
    data      the captured bytes (may be shorter than orig_len when the capture was cut at a snaplen)
    orig_len  the frame's length on the wire
    if_name   the interface name from a pcapng interface block, None when the file does not say
    linktype  LINKTYPE_* of the frame (1: Ethernet)
    """

    ts_ns: int
    data: bytes
    orig_len: int
    if_name: str | None = None
    linktype: int = LINKTYPE_ETHERNET


class CaptureFile:
    """A binary file read front to back, knowing the offset of each read and the bytes left.

    No Linux counterpart. Shared by the pcap and pcapng readers.
    """

    def __init__(self, path: str | os.PathLike, f: BinaryIO):
        self.path, self.f = str(path), f
        self.size = os.fstat(f.fileno()).st_size
        self.pos = 0

    @property
    def left(self) -> int:
        return self.size - self.pos

    def error(self, offset: int, msg: str) -> CaptureError:
        return CaptureError(self.path, offset, msg)

    def read(self, n: int, offset: int, what: str) -> bytes:
        """Exactly n bytes, or CaptureError at `offset` (the start of the record being read)."""
        if n > self.left:
            raise self.error(offset, f"truncated {what}: {n} bytes needed, {self.left} left")
        data = self.f.read(n)
        self.pos += len(data)
        if len(data) != n:  # the file shrank while we read it
            raise self.error(offset, f"truncated {what}: {n} bytes needed, {len(data)} read")
        return data


def read_capture(
    path: str | os.PathLike, linktypes: Container[int] = (LINKTYPE_ETHERNET,)
) -> Iterator[CaptureRecord]:
    """Yield the records of a pcap or pcapng file, told apart by the first four bytes.

    A record whose link type is not in `linktypes` raises CaptureError, as does any truncated or
    corrupt part of the file (raised while iterating, at the point where it is met). OSError for a
    file that cannot be opened is not wrapped.
    """
    from flowpath.ports.pcapng import read_pcapng  # pcapng.py imports this module

    with open(path, "rb") as f:
        cf = CaptureFile(path, f)
        if cf.size == 0:
            raise cf.error(0, "empty file")
        magic = f.read(4)
        f.seek(0)
        if not any(m.startswith(magic) for m in _MAGICS):
            # a short file that is not even the start of a magic is not a cut capture (libpcap
            # pcap_fopen_offline also reads the magic before the rest of the header)
            raise cf.error(0, f"not a pcap or pcapng file: magic {magic.hex()}")
        if magic == PCAPNG_BLOCK_SHB:
            yield from read_pcapng(cf, linktypes)
        else:
            yield from read_pcap(cf, linktypes)


def read_pcap(cf: CaptureFile, linktypes: Container[int]) -> Iterator[CaptureRecord]:
    """Yield the records of a classic pcap file opened as `cf` (positioned at 0)."""
    hdr = cf.read(_FILE_HDR.size, 0, "file header")
    for endian in "<>":
        magic = struct.unpack_from(endian + "I", hdr)[0]
        if magic in (TCPDUMP_MAGIC, NSEC_TCPDUMP_MAGIC):
            break
    else:
        raise cf.error(0, f"not a pcap or pcapng file: magic {hdr[:4].hex()}")
    _, major, minor, _, _, snaplen, linktype = struct.unpack(endian + _FILE_HDR.format, hdr)
    if major != PCAP_VERSION_MAJOR:
        raise cf.error(0, f"unsupported pcap version {major}.{minor}")
    if linktype not in linktypes:
        raise cf.error(0, f"link type {linktype} not supported (Ethernet is {LINKTYPE_ETHERNET})")
    frac_ns = 1 if magic == NSEC_TCPDUMP_MAGIC else 1000
    # libpcap sf-pcap.c › pcap_next_packet rejects caplen above the largest snaplen for the link type
    max_caplen = max(snaplen, MAXIMUM_SNAPLEN)
    rec = struct.Struct(endian + _REC_HDR.format)
    while cf.left:
        off = cf.pos
        ts_sec, ts_frac, caplen, orig_len = rec.unpack(cf.read(rec.size, off, "record header"))
        if caplen > max_caplen:
            raise cf.error(off, f"bad packet record: caplen {caplen} larger than the maximum {max_caplen}")
        if caplen > cf.left:
            raise cf.error(off, f"truncated packet record: header says {caplen} bytes, {cf.left} left")
        data = cf.read(caplen, off, "packet record")
        # two u32 fields always give 0 <= ts_ns < 2**63: no check_ts_ns needed
        yield CaptureRecord(ts_sec * NSEC_PER_SEC + ts_frac * frac_ns, data, orig_len, None, linktype)


def check_ts_ns(cf: CaptureFile, off: int, ts_ns: int) -> int:
    """`ts_ns` if a packet time can carry it (0 to 2**63 - 1 ns since the epoch), else CaptureError at `off`.

    Deviation: libpcap keeps any time the fields can hold; flowpath's packet clock is int64 ns from
    the epoch, and the pcap files it writes cannot hold a time before 1970.
    """
    if not 0 <= ts_ns <= TS_NS_MAX:
        when = "before 1970" if ts_ns < 0 else "after 2262"
        raise cf.error(off, f"timestamp out of range: {ts_ns} ns since the epoch is {when}")
    return ts_ns


class PcapWriter:
    """Write a classic pcap file (little-endian; µs, or ns with `nanosecond=True`).

    No Linux counterpart. Frames longer than `snaplen` are cut, their orig_len kept.
    Use as a context manager, or call close().
    """

    def __init__(
        self,
        path: str | os.PathLike,
        nanosecond: bool = False,
        snaplen: int = MAXIMUM_SNAPLEN,
        linktype: int = LINKTYPE_ETHERNET,
    ):
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen {snaplen} out of range")
        self.path, self.nanosecond, self.snaplen, self.linktype = str(path), nanosecond, snaplen, linktype
        self._rec = struct.Struct("<" + _REC_HDR.format)
        self._f = open(path, "wb")
        magic = NSEC_TCPDUMP_MAGIC if nanosecond else TCPDUMP_MAGIC
        self._f.write(
            struct.pack(
                "<" + _FILE_HDR.format, magic, PCAP_VERSION_MAJOR, PCAP_VERSION_MINOR, 0, 0, snaplen, linktype
            )
        )

    def write(self, data: bytes, ts_ns: int, orig_len: int | None = None) -> None:
        """Append one record; `orig_len` defaults to len(data)."""
        sec, frac = divmod(ts_ns, NSEC_PER_SEC)
        if not 0 <= sec <= 0xFFFFFFFF:
            raise ValueError(f"{self.path}: timestamp {ts_ns} ns does not fit a pcap record")
        if not self.nanosecond:
            frac //= 1000
        caplen = min(len(data), self.snaplen)
        orig_len = len(data) if orig_len is None else orig_len
        self._f.write(self._rec.pack(sec, frac, caplen, orig_len))
        self._f.write(data[:caplen])

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_pcap(
    path: str | os.PathLike,
    records: Iterable[CaptureRecord | tuple[bytes, int]],
    nanosecond: bool = False,
    snaplen: int = MAXIMUM_SNAPLEN,
    linktype: int = LINKTYPE_ETHERNET,
) -> int:
    """Write CaptureRecords or (data, ts_ns) pairs to a new pcap file; return the number written."""
    n = 0
    with PcapWriter(path, nanosecond, snaplen, linktype) as w:
        for r in records:
            if isinstance(r, CaptureRecord):
                w.write(r.data, r.ts_ns, r.orig_len)
            else:
                w.write(r[0], r[1])
            n += 1
    return n

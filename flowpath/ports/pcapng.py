"""pcapng capture files: read (SHB in both byte orders, several sections and interfaces) and write.

No Linux counterpart: the format is draft-ietf-opsawg-pcapng (libpcap sf-pcapng.c reads it).
Read: section header, interface description (if_name, if_tsresol, if_tsoffset), enhanced, simple and
obsolete packet blocks; every other block type is skipped by its length. A new section header starts a
new list of interfaces and may change the byte order. Errors name the offset of the bad block.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass

from flowpath.ports.pcap import (
    LINKTYPE_ETHERNET,
    MAXIMUM_SNAPLEN,
    NSEC_PER_SEC,
    PCAPNG_BLOCK_SHB,
    CaptureFile,
    CaptureRecord,
    check_ts_ns,
)

BT_SHB = 0x0A0D0D0A  # section header block
BT_IDB = 0x00000001  # interface description block
BT_PB = 0x00000002  # packet block (obsolete, still read)
BT_SPB = 0x00000003  # simple packet block
BT_EPB = 0x00000006  # enhanced packet block
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT = 0
IF_NAME = 2
IF_TSRESOL = 9
IF_TSOFFSET = 14
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


@dataclass(slots=True)
class PcapngInterface:
    """One interface description block: what a packet block's interface id refers to.

    units_per_sec  timestamp units per second, from if_tsresol (default 10**6)
    tsoffset_s     if_tsoffset, seconds added to every timestamp
    """

    linktype: int
    snaplen: int
    name: str | None = None
    units_per_sec: int = 1_000_000
    tsoffset_s: int = 0

    def ts_ns(self, ts: int) -> int:
        return ts * NSEC_PER_SEC // self.units_per_sec + self.tsoffset_s * NSEC_PER_SEC


def read_pcapng(cf: CaptureFile, linktypes: Container[int]) -> Iterator[CaptureRecord]:
    """Yield the packets of a pcapng file opened as `cf` (positioned at 0)."""
    endian, ifaces, last_ts_ns = "", [], 0
    while cf.left:
        off = cf.pos
        head = cf.read(8, off, "block header")
        if head[:4] == PCAPNG_BLOCK_SHB:
            endian, ifaces = _read_shb(cf, off, head), []
            continue
        if not endian:
            raise cf.error(off, "not a pcapng file: no section header block first")
        btype, body = _read_block(cf, off, head, endian)
        if btype == BT_IDB:
            ifaces.append(_read_idb(cf, off, body, endian))
        elif btype in (BT_EPB, BT_PB, BT_SPB):
            rec = _read_packet(cf, off, btype, body, endian, ifaces, last_ts_ns)
            if rec.linktype not in linktypes:
                raise cf.error(off, f"packet on an interface of link type {rec.linktype} (Ethernet is 1)")
            last_ts_ns = rec.ts_ns
            yield rec


def _read_shb(cf: CaptureFile, off: int, head: bytes) -> str:
    """Check a section header block (type and length already read); return its byte order."""
    bom = cf.read(4, off, "section header block")
    endian = _BOM.get(bom)
    if endian is None:
        raise cf.error(off, f"bad byte-order magic {bom.hex()} in section header block")
    blen = struct.unpack(endian + "I", head[4:])[0]
    if blen < 28 or blen % 4:
        raise cf.error(off, f"bad section header block length {blen}")
    rest = _read_rest(cf, off, blen, 12, endian)
    major, minor = struct.unpack_from(endian + "HH", rest)
    if major != 1:
        raise cf.error(off, f"unsupported pcapng version {major}.{minor}")
    _read_options(cf, off, rest, 12, endian)
    return endian


def _read_block(cf: CaptureFile, off: int, head: bytes, endian: str) -> tuple[int, bytes]:
    """Read a block whose type and length are in `head`; return (type, body)."""
    btype, blen = struct.unpack(endian + "II", head)
    if blen < 12 or blen % 4:
        raise cf.error(off, f"bad block length {blen} (block type {btype:#x})")
    return btype, _read_rest(cf, off, blen, 8, endian)


def _read_rest(cf: CaptureFile, off: int, blen: int, done: int, endian: str) -> bytes:
    """Read a block's remaining blen - done bytes and check its trailing length; return the body."""
    if blen - done > cf.left:
        raise cf.error(off, f"truncated block: header says {blen} bytes, {cf.left + done} left")
    rest = cf.read(blen - done, off, "block")
    trailer = struct.unpack(endian + "I", rest[-4:])[0]
    if trailer != blen:
        raise cf.error(off, f"corrupt block: trailing length {trailer} differs from leading length {blen}")
    return rest[:-4]


def _read_options(cf: CaptureFile, off: int, body: bytes, start: int, endian: str) -> dict[int, bytes]:
    """Options from body[start:] as {code: first value}; stops at opt_endofopt or the body's end."""
    opts: dict[int, bytes] = {}
    pos = start
    while pos < len(body):
        if len(body) - pos < 4:
            raise cf.error(off, f"corrupt option header: {len(body) - pos} bytes left in the block")
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == OPT_ENDOFOPT:
            break
        if pos + 4 + length > len(body):
            raise cf.error(off, f"corrupt option {code}: length {length} runs past the block's end")
        opts.setdefault(code, body[pos + 4 : pos + 4 + length])
        pos += 4 + length + (-length % 4)
    return opts


def _read_idb(cf: CaptureFile, off: int, body: bytes, endian: str) -> PcapngInterface:
    if len(body) < 8:
        raise cf.error(off, f"corrupt interface description block: body of {len(body)} bytes")
    linktype, _, snaplen = struct.unpack_from(endian + "HHI", body)
    iface = PcapngInterface(linktype, snaplen)
    opts = _read_options(cf, off, body, 8, endian)
    if IF_NAME in opts:
        iface.name = opts[IF_NAME].rstrip(b"\0").decode("utf-8", "replace")
    if IF_TSRESOL in opts:
        if len(opts[IF_TSRESOL]) != 1:
            raise cf.error(off, f"corrupt if_tsresol option: length {len(opts[IF_TSRESOL])}")
        r = opts[IF_TSRESOL][0]
        iface.units_per_sec = 2 ** (r & 0x7F) if r & 0x80 else 10**r
    if IF_TSOFFSET in opts:
        if len(opts[IF_TSOFFSET]) != 8:
            raise cf.error(off, f"corrupt if_tsoffset option: length {len(opts[IF_TSOFFSET])}")
        iface.tsoffset_s = struct.unpack(endian + "q", opts[IF_TSOFFSET])[0]
    return iface


_PKT_HDR = {BT_EPB: "IIIII", BT_PB: "HHIIII", BT_SPB: "I"}  # fixed part of each packet block's body


def _read_packet(
    cf: CaptureFile,
    off: int,
    btype: int,
    body: bytes,
    endian: str,
    ifaces: list[PcapngInterface],
    last_ts_ns: int,
) -> CaptureRecord:
    fmt = struct.Struct(endian + _PKT_HDR[btype])
    if len(body) < fmt.size:
        raise cf.error(off, f"corrupt packet block: body of {len(body)} bytes")
    room = len(body) - fmt.size
    if btype == BT_SPB:
        # The simple packet block has no interface id, timestamp or captured length: interface 0, the
        # length from the block. Deviation: it has no time, so it takes the previous packet's.
        ifid, ts, (orig_len,) = 0, None, fmt.unpack_from(body)
        caplen = min(orig_len, room, ifaces[0].snaplen or room) if ifaces else 0
    else:
        fields = fmt.unpack_from(body)
        ifid, tshigh, tslow, caplen, orig_len = fields if btype == BT_EPB else fields[:1] + fields[2:]
        ts = (tshigh << 32) | tslow
        if caplen > room:
            raise cf.error(off, f"corrupt packet block: captured length {caplen}, {room} bytes of data")
    if ifid >= len(ifaces):
        raise cf.error(off, f"packet block for interface {ifid}, but {len(ifaces)} interfaces declared")
    iface = ifaces[ifid]
    ts_ns = last_ts_ns if ts is None else check_ts_ns(cf, off, iface.ts_ns(ts))
    data = body[fmt.size : fmt.size + caplen]
    return CaptureRecord(ts_ns, data, orig_len, iface.name, iface.linktype)


class PcapngWriter:
    """Write a little-endian pcapng file: one section, interfaces with if_name and ns timestamps.

    No Linux counterpart. Use as a context manager, or call close().
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._snaplens: list[int] = []
        self._f = open(path, "wb")
        body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)  # section length -1: not given
        self._block(BT_SHB, body)

    def _block(self, btype: int, body: bytes) -> None:
        body += b"\0" * (-len(body) % 4)
        blen = len(body) + 12
        self._f.write(struct.pack("<II", btype, blen) + body + struct.pack("<I", blen))

    def add_interface(
        self, name: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = MAXIMUM_SNAPLEN
    ) -> int:
        """Declare an interface (ns timestamps); return its id for write()."""
        raw = name.encode()
        opts = struct.pack("<HH", IF_NAME, len(raw)) + raw + b"\0" * (-len(raw) % 4)
        opts += struct.pack("<HHB3x", IF_TSRESOL, 1, 9) + struct.pack("<HH", OPT_ENDOFOPT, 0)
        self._block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts)
        self._snaplens.append(snaplen)
        return len(self._snaplens) - 1

    def write(self, ifidx: int, data: bytes, ts_ns: int, orig_len: int | None = None) -> None:
        """Append an enhanced packet block on interface `ifidx`; `orig_len` defaults to len(data)."""
        if not 0 <= ifidx < len(self._snaplens):
            raise ValueError(f"interface {ifidx} not declared")
        if not 0 <= ts_ns < 1 << 64:
            raise ValueError(f"{self.path}: timestamp {ts_ns} ns does not fit a pcapng block")
        orig_len = len(data) if orig_len is None else orig_len
        data = data[: self._snaplens[ifidx] or len(data)]
        hdr = struct.pack("<IIIII", ifidx, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), orig_len)
        self._block(BT_EPB, hdr + data)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_pcapng(path: str | os.PathLike, records: Iterable[CaptureRecord]) -> int:
    """Write CaptureRecords to a new pcapng file, one interface per distinct if_name (None: "unknown")."""
    n = 0
    with PcapngWriter(path) as w:
        ids: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.if_name or "unknown", r.linktype)
            if key not in ids:
                ids[key] = w.add_interface(key[0], r.linktype)
            w.write(ids[key], r.data, r.ts_ns, r.orig_len)
            n += 1
    return n

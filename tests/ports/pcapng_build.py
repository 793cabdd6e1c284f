"""Hand-made pcapng blocks for the tests, written from draft-ietf-opsawg-pcapng, not from our writer.

No Linux counterpart. Not a test module (no test_ prefix); tests load it by path.
"""

from __future__ import annotations

import struct


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + pad4(value)


def end_of_options(e: str) -> bytes:
    return struct.pack(e + "HH", 0, 0)


def block(e: str, btype: int, body: bytes) -> bytes:
    body = pad4(body)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str, options: bytes = b"") -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def idb(e: str, name: str | None = None, tsresol: int | None = None, tsoffset: int | None = None,
        linktype: int = 1, snaplen: int = 0) -> bytes:  # fmt: skip
    opts = b""
    if name is not None:
        opts += option(e, 2, name.encode())
    if tsresol is not None:
        opts += option(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += end_of_options(e)
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(e: str, ifid: int, ts: int, data: bytes, orig_len: int | None = None, comment: bytes = b"") -> bytes:
    body = struct.pack(e + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data), orig_len or len(data))
    body += pad4(data)
    if comment:
        body += option(e, 1, comment) + end_of_options(e)
    return block(e, 6, body)


def spb(e: str, data: bytes, orig_len: int | None = None) -> bytes:
    return block(e, 3, struct.pack(e + "I", orig_len or len(data)) + data)


def pb(e: str, ifid: int, ts: int, data: bytes) -> bytes:
    """The obsolete packet block (type 2)."""
    body = struct.pack(e + "HHIIII", ifid, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data
    return block(e, 2, body)

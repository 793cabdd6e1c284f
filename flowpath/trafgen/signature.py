"""The stream signature: 18 bytes at the start of the innermost UDP (or TCP) payload.

No Linux counterpart (TRex's latency/flow-stats signature plays this part, but its per-flow statistics
are lost once a tunnel wraps the packet; trex-core issue 528).

Layout (big-endian), FP_SIG:
    magic     u32  0xF10E5167
    stream_id u16  stream number in the profile
    seq       u32  sequence number within the stream, from 0
    tx_ts_ns  u64  transmit time, ns (the capture clock; live: CLOCK_REALTIME as the frame is queued)
It is payload, so NAT (which rewrites addresses, ports and checksums), ESP and IPIP (which wrap it and
unwrap it again) leave it intact. A receiver finds it by scanning the frame for the magic from the
first byte a UDP payload can start at (SIG_SCAN_FROM), which works whatever encapsulation is outside:
no header parsing, so an outer IPIP, VLAN or decrypted ESP layer needs no special case. 18 bytes is
what a 64-byte IPv4/UDP frame has room for (60 - 14 - 20 - 8). The generator fills the rest of the
payload with zeros, so the magic cannot appear in it by chance.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.packet.csum import CSUM_MANGLED_0, csum_fold, ld16, st16, st32

SIG_MAGIC = 0xF10E5167
SIG_MAGIC_BYTES = SIG_MAGIC.to_bytes(4, "big")
FP_SIG = np.dtype([("magic", ">u4"), ("stream_id", ">u2"), ("seq", ">u4"), ("tx_ts_ns", ">u8")])
SIG_LEN = FP_SIG.itemsize
SIG_SCAN_FROM = 14 + 20 + 8  # Ethernet + the smallest IPv4 header + UDP
assert SIG_LEN == 18


def sig_write(frames: np.ndarray, off: int, stream_id: int, seq: np.ndarray, tx_ts_ns: np.ndarray) -> None:
    """Write the signature of every row of frames uint8[n, width] at byte offset `off`.

    seq      int64[n]  sequence numbers (taken modulo 2**32)
    tx_ts_ns int64[n]  transmit times
    """
    n = frames.shape[0]
    sig = np.zeros(n, FP_SIG)
    sig["magic"] = SIG_MAGIC
    sig["stream_id"] = stream_id
    sig["seq"] = seq & 0xFFFFFFFF
    sig["tx_ts_ns"] = tx_ts_ns
    frames[:, off : off + SIG_LEN] = sig.view(np.uint8).reshape(n, SIG_LEN)


def sig_find(frame: bytes) -> tuple[int, int, int] | None:
    """(stream_id, seq, tx_ts_ns) of the first signature in the frame, or None."""
    i = frame.find(SIG_MAGIC_BYTES, SIG_SCAN_FROM)
    if i < 0 or i + SIG_LEN > len(frame):
        return None
    s = np.frombuffer(frame, FP_SIG, 1, i)[0]
    return int(s["stream_id"]), int(s["seq"]), int(s["tx_ts_ns"])


SIG_SEQ_OFF = FP_SIG.fields["seq"][1]
SIG_WORDS_END = FP_SIG.fields["tx_ts_ns"][1] + 8  # seq and tx_ts_ns: six 16-bit words, at even offsets


@njit(cache=True, nogil=True)
def sig_stamp(b, off, coff, udp, seq, tx_ts_ns):
    """Write seq (modulo 2**32) and tx_ts_ns into the signature at b[off] and update the L4 checksum at
    b[coff] for the change in one RFC 1624 eq. 3 step over their six 16-bit words (the signature starts
    at an even offset from the L4 header, so the words line up with the checksum's); a UDP result of 0
    goes out as CSUM_MANGLED_0, as udp_csum_replace4 does. The live generator's counterpart of
    sig_write, run on each frame in the transmit ring just before it is queued."""
    s = (~ld16(b, coff)) & 0xFFFF
    for j in range(off + SIG_SEQ_OFF, off + SIG_WORDS_END, 2):
        s += (~ld16(b, j)) & 0xFFFF
    st32(b, off + SIG_SEQ_OFF, seq & 0xFFFFFFFF)
    st32(b, off + SIG_SEQ_OFF + 4, (tx_ts_ns >> 32) & 0xFFFFFFFF)
    st32(b, off + SIG_SEQ_OFF + 8, tx_ts_ns & 0xFFFFFFFF)
    for j in range(off + SIG_SEQ_OFF, off + SIG_WORDS_END, 2):
        s += ld16(b, j)
    c = (~csum_fold(s)) & 0xFFFF
    if udp and c == 0:
        c = CSUM_MANGLED_0
    st16(b, coff, c)

"""PacketBatch: frames go in and come back unchanged; a frame over the slot is kept, cut, as PKT_TOO_BIG.

No Linux counterpart (closest: a NAPI poll's skb list; DPDK/VPP mbuf vectors).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import Reason

SLOT, HEADROOM = 512, 64
MAX = SLOT - HEADROOM


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.binary(max_size=MAX + 40), st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**63 - 1)),
        max_size=8,
    ),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_append_frame_round_trip(frames, kind):
    """Every column holds what was appended; oversize frames are cut to max_frame with PKT_TOO_BIG."""
    b = PacketBatch(capacity=8, slot=SLOT, headroom=HEADROOM)
    b.verdict[:] = Reason.IP_CSUM  # leftovers of a previous batch must not leak through
    b.flow[:] = 5
    for k, (frame, iif, ts) in enumerate(frames):
        assert b.append(kind(frame), iif, ts) == k
    assert len(b) == b.n == len(frames)
    for k, (frame, iif, ts) in enumerate(frames):
        big = len(frame) > MAX
        assert b.frame_bytes(k) == frame[:MAX]
        assert (int(b.head[k]), int(b.len[k])) == (HEADROOM, min(len(frame), MAX))
        assert (int(b.iif[k]), int(b.ts_ns[k]), int(b.oif[k]), int(b.flow[k])) == (iif, ts, 0, -1)
        assert b.verdict[k] == (Reason.PKT_TOO_BIG if big else Reason.FLOW_FORWARD)
        assert not b.data[k, :HEADROOM].any()  # the headroom stays free for pushed headers


def test_max_frame_boundary():
    b = PacketBatch(capacity=2, slot=SLOT, headroom=HEADROOM)
    assert b.max_frame == MAX
    b.append(b"\x01" * MAX, 1, 0)
    b.append(b"\x02" * (MAX + 1), 1, 0)
    assert list(b.verdict[:2]) == [Reason.FLOW_FORWARD, Reason.PKT_TOO_BIG]
    assert list(b.len[:2]) == [MAX, MAX]


def test_frame_is_a_writable_view_into_the_slot():
    b = PacketBatch(capacity=1, slot=SLOT, headroom=HEADROOM)
    b.append(b"\x00" * 60, 1, 0)
    b.frame(0)[12:14] = (0x86, 0xDD)
    assert b.data[0, HEADROOM + 12] == 0x86 and b.frame_bytes(0)[12:14] == b"\x86\xdd"


def test_full_batch_and_clear():
    b = PacketBatch(capacity=2, slot=SLOT, headroom=HEADROOM)
    b.append(b"a", 1, 0)
    b.append(b"b", 1, 0)
    with pytest.raises(IndexError):
        b.append(b"c", 1, 0)
    b.clear()
    assert len(b) == 0 and b.append(b"d", 2, 3) == 0 and b.frame_bytes(0) == b"d"


def test_column_dtypes():
    b = PacketBatch(capacity=4)
    dtypes = [b.data.dtype, b.head.dtype, b.len.dtype, b.iif.dtype, b.oif.dtype, b.verdict.dtype]
    assert dtypes == [np.uint8, np.uint16, np.uint16, np.int32, np.int32, np.uint8]
    assert (b.flow.dtype, b.ts_ns.dtype, b.data.shape) == (np.int32, np.int64, (4, 2048))


def test_headroom_must_be_smaller_than_slot():
    with pytest.raises(ValueError):
        PacketBatch(capacity=1, slot=128, headroom=128)


def test_slot_too_large_for_uint16_lengths_is_refused_up_front():
    """A slot past 65535 bytes cannot have its lengths stored; today append raises OverflowError."""
    with pytest.raises(ValueError):
        PacketBatch(capacity=1, slot=70_000, headroom=128)

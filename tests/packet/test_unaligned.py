"""packet/unaligned.py: 8-byte unaligned loads and stores equal the byte-wise little-endian value."""

import numpy as np
from numba import njit

from flowpath.packet.unaligned import get_unaligned_le64, put_unaligned_le64


@njit(cache=True)
def _roundtrip(a, idx, val):
    put_unaligned_le64(a, idx, val)
    return get_unaligned_le64(a, idx)


def test_unaligned_le64_matches_int_from_bytes():
    """include/linux/unaligned.h: put_unaligned_le64 writes exactly 8 bytes, least significant first."""
    rng = np.random.default_rng(3)
    for idx in (0, 1, 3, 7, 13):
        a = rng.integers(0, 256, 32, dtype=np.uint8)
        before = a.copy()
        val = int(rng.integers(0, 2**63)) | (1 << 63)
        assert int(_roundtrip(a, idx, np.uint64(val))) == val
        assert int.from_bytes(a[idx : idx + 8].tobytes(), "little") == val
        assert (a[:idx] == before[:idx]).all() and (a[idx + 8 :] == before[idx + 8 :]).all()

"""Bob Jenkins' lookup3 hash as Linux has it: include/linux/jhash.h (__jhash_mix, __jhash_final, jhash).

One implementation for the compiled kernels (the flowtable's tunnel key, flowtable/key.py) and the nft
evaluator (`jhash ... mod N`, netfilter/nft_keys.py). Ints < 2**32 in, masked int64 arithmetic.
"""

from __future__ import annotations

from numba import njit

JHASH_INITVAL = 0xDEADBEEF
_M = 0xFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def rol32(x, r):
    return ((x << r) | (x >> (32 - r))) & _M


@njit(cache=True, nogil=True, inline="always")
def jhash_mix(a, b, c):
    """__jhash_mix: three words mixed reversibly."""
    a = ((a - c) & _M) ^ rol32(c, 4)
    c = (c + b) & _M
    b = ((b - a) & _M) ^ rol32(a, 6)
    a = (a + c) & _M
    c = ((c - b) & _M) ^ rol32(b, 8)
    b = (b + a) & _M
    a = ((a - c) & _M) ^ rol32(c, 16)
    c = (c + b) & _M
    b = ((b - a) & _M) ^ rol32(a, 19)
    a = (a + c) & _M
    c = ((c - b) & _M) ^ rol32(b, 4)
    b = (b + a) & _M
    return a, b, c


@njit(cache=True, nogil=True, inline="always")
def jhash_final(a, b, c):
    """__jhash_final: the final mixing of three words into c."""
    c = ((c ^ b) - rol32(b, 14)) & _M
    a = ((a ^ c) - rol32(c, 11)) & _M
    b = ((b ^ a) - rol32(a, 25)) & _M
    c = ((c ^ b) - rol32(b, 16)) & _M
    a = ((a ^ c) - rol32(c, 4)) & _M
    b = ((b ^ a) - rol32(a, 14)) & _M
    c = ((c ^ b) - rol32(b, 24)) & _M
    return c


def jhash(key: bytes, initval: int) -> int:
    """jhash over bytes (little-endian words, the tail zero-padded; an empty tail returns c as is)."""
    n = len(key)
    a = b = c = (JHASH_INITVAL + n + initval) & _M
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(key[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(key[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(key[i + 8 : i + 12], "little")) & _M
        a, b, c = jhash_mix(a, b, c)
        i += 12
    tail = key[i:]
    if not tail:
        return c
    tail = tail.ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    return int(jhash_final(a, b, c))

"""nf_ct_find called from a compiled loop, as the classic lane will call it: a table of 100000 UDP
connections (200000 tuples), lookups of random tuples of both directions (hits) and of absent ones
(misses), best of 5 rounds, ns per lookup; and the Python-side lookup (nf_conntrack_find_get) for
scale. Run it in two checkouts to compare them:

    python benchmarks/ct_lookup.py [connections]
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np
from numba import njit

from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.conntrack_tuple import NfConnTuple, nf_ct_invert_tuple, nf_ct_tuple_words
from flowpath.netfilter.constants import IP_CT_NEW, NFPROTO_IPV4
from flowpath.netfilter.nf_conntrack_table import nf_ct_find

DAY_NS = 86400 * 10**9


@njit(cache=True, nogil=True)
def _find_all(views, keys, now_ns, out):
    found = 0
    for i in range(keys.shape[0]):
        out[i] = nf_ct_find(views, keys[i], now_ns)
        found += out[i] >= 0
    return found


def _tuple(k: int) -> NfConnTuple:
    return NfConnTuple(NFPROTO_IPV4, 17, 0x0A000000 + k, 0xC6336407, 1024 + k % 60000, 53)


def main(n: int = 100_000) -> None:
    c = Conntrack(max_entries=2 * n)
    for k in range(n):
        t = _tuple(k)
        ct = c.init_conntrack(t, nf_ct_invert_tuple(t), 0)
        ct.timeout_ns = DAY_NS
        c.nf_conntrack_confirm(SimpleNamespace(ct=ct, ctinfo=IP_CT_NEW, ts_ns=0))
    rng = np.random.default_rng(1)
    picks = rng.integers(0, n, 1 << 20)
    tuples = [_tuple(int(k)) for k in picks[: 1 << 14]]
    base = np.stack([nf_ct_tuple_words(t if i % 2 else nf_ct_invert_tuple(t), np.zeros(16, np.uint32))
                     for i, t in enumerate(tuples)])  # fmt: skip
    hits = base[rng.integers(0, len(base), 1 << 20)]
    misses = hits.copy()
    misses[:, 10] ^= 0x8000  # another source port: nobody's tuple
    out = np.zeros(len(hits), np.int64)
    views = c.views()
    _find_all(views, hits[:10], 1, out)
    print(f"conntrack: {len(c)} connections, capacity {c.capacity} rows, index {c.index.shape[0]} slots")
    for name, keys, want in (("hit", hits, len(hits)), ("miss", misses, 0)):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            got = _find_all(views, keys, 1, out)
            best = min(best, time.perf_counter() - t0)
        assert got == want, (name, got)
        print(f"nf_ct_find {name:4s} (compiled loop): {best / len(keys) * 1e9:6.1f} ns/lookup")
    t0 = time.perf_counter()
    for t in tuples:
        assert c.nf_conntrack_find_get(t, 1) is not None
    print(f"nf_conntrack_find_get (Python, tuple in): {(time.perf_counter() - t0) / len(tuples) * 1e9:6.0f} ns")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)

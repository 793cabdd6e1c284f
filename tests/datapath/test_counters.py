"""flowpath/packet/counters.py › account_batch: the fast path's share of a poll's counters, checked against a
plain per-packet count (the compiled kernel keeps runs of equal interfaces in registers)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.packet.counters import RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS, account_batch, account_rx
from flowpath.packet.reason import IS_SLOW, N_REASONS, Reason

NIF = 5
VERDICTS = [
    0,
    0,
    0,
    int(Reason.SLOW_NO_ENTRY),
    int(Reason.SLOW_TTL),
    int(Reason.PKT_TOO_BIG),
    int(Reason.TX),
    255,
]


def _reference(verdict, iif, oif, length, n):
    reasons, ifc = np.zeros(N_REASONS, np.int64), np.zeros((NIF, 4), np.int64)
    hits = 0
    for i in range(n):
        if 0 <= iif[i] < NIF:
            ifc[iif[i], RX_PACKETS] += 1
            ifc[iif[i], RX_BYTES] += int(length[i])
        v = int(verdict[i])
        if v == 0:
            hits += 1
            reasons[0] += 1
            if 0 <= oif[i] < NIF:
                ifc[oif[i], TX_PACKETS] += 1
                ifc[oif[i], TX_BYTES] += int(length[i])
        elif v < N_REASONS and not IS_SLOW[v]:
            reasons[v] += 1
    return hits, reasons, ifc


packets = st.lists(
    st.tuples(st.sampled_from(VERDICTS), st.integers(-1, NIF + 1), st.integers(-1, NIF + 1),
              st.integers(0, 0xFFFF)),
    max_size=300,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(packets, st.booleans())
def test_account_batch_counts_as_one_packet_at_a_time(pkts, runs):
    """Runs of one interface (the common case) and interfaces changing at every packet, unknown
    ifindexes (not counted), drops, slow-path markers and the parked marker 255 (not counted)."""
    if runs:  # long runs of the same interfaces, as a poll from one port to one next hop
        pkts = sorted(pkts, key=lambda p: (p[1], p[2]))
    n = len(pkts)
    cap = max(n, 1)
    verdict = np.array([p[0] for p in pkts] or [0], np.uint8)[:cap]
    iif = np.array([p[1] for p in pkts] or [0], np.int32)[:cap]
    oif = np.array([p[2] for p in pkts] or [0], np.int32)[:cap]
    length = np.array([p[3] for p in pkts] or [0], np.uint16)[:cap]
    reasons, ifc = np.zeros(N_REASONS, np.int64), np.zeros((NIF, 4), np.int64)
    hits = account_batch(verdict, iif, oif, length, n, reasons, ifc, True)
    want_hits, want_reasons, want_ifc = _reference(verdict, iif, oif, length, n)
    assert hits == want_hits
    assert np.array_equal(reasons, want_reasons)
    assert np.array_equal(ifc, want_ifc)


def test_account_batch_byte_counts_do_not_wrap():
    """4096 frames of 65535 bytes on one interface: the run's byte count passes 2**16 and 2**32."""
    n = 4096
    verdict, iif, oif = np.zeros(n, np.uint8), np.full(n, 1, np.int32), np.full(n, 2, np.int32)
    length = np.full(n, 0xFFFF, np.uint16)
    reasons, ifc = np.zeros(N_REASONS, np.int64), np.zeros((NIF, 4), np.int64)
    assert account_batch(verdict, iif, oif, length, n, reasons, ifc, True) == n
    assert ifc[1, RX_BYTES] == ifc[2, TX_BYTES] == n * 0xFFFF
    assert ifc[1, RX_PACKETS] == ifc[2, TX_PACKETS] == reasons[0] == n


@settings(max_examples=100, deadline=None)
@given(packets)
def test_rx_counted_first_then_the_batch_without_rx_is_the_same_count(pkts):
    """account_rx before the stages that change lengths, then account_batch(rx=False): the same counts
    as one account_batch when no length changed (flowtable/ingress.py, ING_RX_EARLY)."""
    n = len(pkts)
    cols = [np.array([p[k] for p in pkts] or [0], t)[: max(n, 1)] for k, t in
            enumerate((np.uint8, np.int32, np.int32, np.uint16))]  # fmt: skip
    one = np.zeros(N_REASONS, np.int64), np.zeros((NIF, 4), np.int64)
    two = np.zeros(N_REASONS, np.int64), np.zeros((NIF, 4), np.int64)
    h1 = account_batch(*cols, n, *one, True)
    account_rx(cols[1], cols[3], n, two[1])
    h2 = account_batch(*cols, n, *two, False)
    assert h1 == h2 and np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])

"""Replay window and ESN high-half inference against a naive reference; NAT-T non-ESP payloads.

Linux: xfrm_replay.c › xfrm_replay_check_esn, xfrm_replay_advance_esn, xfrm_replay_seqhi;
RFC 4303 §3.4.3 and Appendix A2 (ESN window); RFC 3948 §2.2/§2.3 (non-ESP marker, keepalive).
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.packet import raw

from flowpath.packet.batch import PacketBatch
from flowpath.xfrm import esp, evp
from flowpath.xfrm.esp_batch import esp_decrypt_batch
from flowpath.xfrm.replay import (
    REPLAY_DUP,
    REPLAY_OK,
    REPLAY_OLD,
    REPLAY_ZERO,
    xfrm_replay_advance,
    xfrm_replay_check,
    xfrm_replay_seqhi,
)
from flowpath.xfrm.state import AF_INET, UDP_ENCAP_ESPINUDP, Xfrm, XfrmState, xfrm_state_add


class NaiveWindow:
    """The set of accepted sequence numbers, and the rule of RFC 4303 §3.4.3 written out directly."""

    def __init__(self, window: int):
        self.w, self.seen, self.top = window, set(), 0

    def check(self, seq: int) -> int:
        if seq == 0:
            return REPLAY_ZERO
        if seq > self.top:
            return REPLAY_OK
        if self.top - seq >= self.w:
            return REPLAY_OLD
        return REPLAY_DUP if seq in self.seen else REPLAY_OK

    def advance(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 32, 64, 100, 4096]), st.lists(st.integers(0, 300), min_size=1, max_size=200))
def test_window_matches_naive_reference(window, seqs):
    top = np.zeros(1, np.int64)
    bmp = np.zeros((1, 4096), np.uint8)
    ref = NaiveWindow(window)
    for s in seqs:
        got = xfrm_replay_check(top, bmp, 0, s, window)
        assert got == ref.check(s)
        if got == REPLAY_OK:
            xfrm_replay_advance(top, bmp, 0, s, window)
            ref.advance(s)
    assert top[0] == ref.top


def naive_seqhi(top: int, window: int, seql: int) -> int:
    """RFC 4303 A2.2 by search: the candidate (th - 1, th, th + 1) closest to the window."""
    th = top >> 32
    cands = [((h << 32) | seql) for h in (th - 1, th, th + 1) if h >= 0]
    inside = [c for c in cands if top - window + 1 <= c]
    return min(inside) if inside else max(cands)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3), st.integers(0, 2**32 - 1), st.sampled_from([32, 64, 1024]), st.integers(0, 2**32 - 1)
)
def test_esn_high_half_inference(th, tl, window, seql):
    top = (th << 32) | tl
    assert xfrm_replay_seqhi(top, window, seql, 1) == naive_seqhi(top, window, seql)


def test_esn_wrap_accepts_the_next_subspace():
    """Across 2^32 the receiver infers seq hi + 1 and the window follows (RFC 4304)."""
    top = np.array([(5 << 32) | 0xFFFFFFF0], np.int64)
    bmp = np.zeros((1, 4096), np.uint8)
    seq = xfrm_replay_seqhi(int(top[0]), 64, 3, 1)
    assert seq == (6 << 32) | 3
    assert xfrm_replay_check(top, bmp, 0, seq, 64) == REPLAY_OK
    xfrm_replay_advance(top, bmp, 0, seq, 64)
    late = xfrm_replay_seqhi(int(top[0]), 64, 0xFFFFFFF8, 1)
    assert late == (5 << 32) | 0xFFFFFFF8 and xfrm_replay_check(top, bmp, 0, late, 64) == REPLAY_OK


def natt_state() -> XfrmState:
    x = XfrmState(AF_INET, ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"), 9, key=bytes(16),
                  salt=bytes(4), encap_type=UDP_ENCAP_ESPINUDP, encap_sport=4500, encap_dport=4500)  # fmt: skip
    return xfrm_state_add(Xfrm(), x)


@pytest.mark.parametrize(
    ("payload", "kind"), [(b"\xff", esp.NATT_KEEPALIVE), (bytes(4) + b"ikev2...", esp.NATT_IKE)]
)
def test_natt_keepalive_and_ike_marker_go_to_the_slow_path(payload, kind):
    f = raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500) / payload)
    assert esp.esp_udp_encap_rcv(f, 28, len(f)) == kind
    assert esp.esp_input(natt_state(), f, 0, 0) == esp.SLOW_NATT_NON_ESP
    if evp.evp_load():
        b = PacketBatch(2)
        b.append(f, 1, 0)
        x = natt_state()
        esp_decrypt_batch(
            x, b.data, b.head, b.len, b.verdict, np.zeros(2, np.uint16), np.zeros(1, np.int32), 0
        )
        assert b.verdict[0] == esp.SLOW_NATT_NON_ESP and b.frame_bytes(0) == f


def test_fallback_without_libcrypto_gives_the_same_bytes(monkeypatch):
    """With EVP unavailable the batch API runs esp_output per packet (`cryptography`), same result."""
    from flowpath.xfrm.esp_batch import esp_encrypt_batch

    frames = [raw(IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / bytes(n)) for n in (0, 7, 300)]
    out = []
    for force in (False, True):
        monkeypatch.setattr(evp, "EVP_AVAILABLE", None)
        if force:
            evp.evp_load(force_fallback=True)
        x = natt_state()
        b = PacketBatch(4)
        for f in frames:
            b.append(f, 1, 0)
        assert esp_encrypt_batch(x, b.data, b.head, b.len, b.verdict, np.zeros(4, np.uint16),
                                 np.arange(3, dtype=np.int32), 64, 0) == 0  # fmt: skip
        assert (x.tab.ctx_enc[x.index] == 0) == (force or not evp.EVP_AVAILABLE)
        out.append([b.frame_bytes(i) for i in range(3)])
    monkeypatch.setattr(evp, "EVP_AVAILABLE", None)
    evp.evp_load()
    assert out[0] == out[1]

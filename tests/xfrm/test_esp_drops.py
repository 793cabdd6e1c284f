"""Bad ESP is dropped with distinct reasons and counted per SA, on the per-packet and compiled paths.

RFC 4303 §3.4.3 (replay check before the ICV, window update after), §3.4.4 (ICV), §2.4 (padding);
Linux: xfrm_input.c › xfrm_input, esp4.c › esp_input_done2, xfrm_replay.c › xfrm_replay_check_esn.
"""

from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from flowpath.packet.batch import PacketBatch
from flowpath.xfrm import esp, evp
from flowpath.xfrm.esp import esp_input, esp_output
from flowpath.xfrm.esp_batch import esp_decrypt_batch, esp_encrypt_batch
from flowpath.xfrm.state import (
    AF_INET,
    XS_BAD_PADDING,
    XS_INTEGRITY_FAILED,
    XS_REPLAY,
    XS_REPLAY_WINDOW,
    XS_TRUNCATED,
    Xfrm,
    XfrmLifetimeCfg,
    XfrmState,
    xfrm_state_add,
)

KEY, SALT, SPI = bytes(range(16)), b"\x11\x22\x33\x44", 0x100
DROPS = (
    "XFRM_IN_REPLAY",
    "XFRM_IN_REPLAY_WINDOW",
    "XFRM_IN_ICV",
    "XFRM_IN_PADDING",
    "XFRM_IN_HDR",
    "XFRM_NO_STATE",
)


def state(window: int = 32, lft: XfrmLifetimeCfg | None = None) -> XfrmState:
    x = XfrmState(AF_INET, ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"), SPI, key=KEY,
                  salt=SALT, replay_window=window, lft=lft or XfrmLifetimeCfg())  # fmt: skip
    return xfrm_state_add(Xfrm(), x)


ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
INNER = raw(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / b"payload!")


def sealed(seq: int, plain_tail: bytes | None = None) -> bytes:
    """A tunnel-mode ESP frame built by hand with `cryptography` (trailer overridable)."""
    inner = INNER[14:]
    if plain_tail is None:
        pad = -(len(inner) + 2) % 4
        plain_tail = bytes(range(1, pad + 1)) + bytes((pad, 4))
    iv = struct.pack("!Q", seq)
    ct = AESGCM(KEY).encrypt(SALT + iv, inner + plain_tail, struct.pack("!II", SPI, seq))
    body = struct.pack("!II", SPI, seq) + iv + ct
    return raw(ETH / IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / body)


def test_drop_reasons_are_distinct():
    """Each failure has its own Reason (packet/reason.py XFRM_*)."""
    names = [getattr(esp, n) for n in DROPS]
    assert len(set(names)) == len(DROPS) == 6


def test_replayed_packet_dropped_after_first_accepted():
    x = state()
    assert isinstance(esp_input(x, sealed(1), 14, 0), tuple)
    assert esp_input(x, sealed(1), 14, 0) == esp.XFRM_IN_REPLAY
    assert x.tab.stats[x.index, XS_REPLAY] == 1


def test_out_of_window_dropped_but_inside_window_accepted_out_of_order():
    x = state(window=32)
    assert isinstance(esp_input(x, sealed(100), 14, 0), tuple)
    assert isinstance(esp_input(x, sealed(69), 14, 0), tuple)  # 100 - 69 = 31 < 32: inside
    assert esp_input(x, sealed(68), 14, 0) == esp.XFRM_IN_REPLAY_WINDOW
    assert x.tab.stats[x.index, XS_REPLAY_WINDOW] == 1


def test_corrupted_icv_dropped_and_window_not_moved():
    """RFC 4303 §3.4.3: the window moves only after the ICV checked out."""
    x = state()
    bad = bytearray(sealed(50))
    bad[-1] ^= 1
    assert esp_input(x, bytes(bad), 14, 0) == esp.XFRM_IN_ICV
    assert x.tab.stats[x.index, XS_INTEGRITY_FAILED] == 1
    assert x.tab.replay_top[x.index] == 0
    assert isinstance(esp_input(x, sealed(50), 14, 0), tuple)


def test_corrupted_ciphertext_dropped_as_icv_failure():
    x = state()
    bad = bytearray(sealed(3))
    bad[14 + 20 + 20] ^= 0x80
    assert esp_input(x, bytes(bad), 14, 0) == esp.XFRM_IN_ICV


def test_wrong_spi_dropped():
    x = state()
    other = bytearray(sealed(1))
    other[14 + 20 : 14 + 24] = struct.pack("!I", SPI + 1)
    assert esp_input(x, bytes(other), 14, 0) == esp.XFRM_NO_STATE


@pytest.mark.parametrize("cut", [1, 16, 30])
def test_truncated_packet_dropped(cut):
    """Shorter than ESP header + IV + ICV + 2, or the IP length beyond the frame."""
    x = state()
    f = sealed(1)
    short = f[: 14 + 20 + 8 + 8 + 16 + 1]
    fixed = bytearray(short)
    fixed[14 + 2 : 14 + 4] = struct.pack("!H", len(short) - 14)
    assert esp_input(x, bytes(fixed), 14, 0) == esp.XFRM_IN_HDR
    assert esp_input(x, f[:-cut], 14, 0) == esp.XFRM_IN_HDR
    assert x.tab.stats[x.index, XS_TRUNCATED] == 1


@pytest.mark.parametrize(
    "tail", [b"\x01\x03\x03\x04", b"\x00\x00\xff\x04"], ids=["bad-pad-bytes", "padlen-too-big"]
)
def test_badly_padded_packet_dropped(tail):
    """RFC 4303 §2.4: padding bytes 1, 2, 3...; pad length within the payload (esp_input_done2)."""
    x = state()
    f = sealed(7, tail)
    assert esp_input(x, f, 14, 0) == esp.XFRM_IN_PADDING
    assert x.tab.stats[x.index, XS_BAD_PADDING] == 1
    assert x.tab.replay_top[x.index] == 0  # Linux advances only after esp_input_done2 succeeded


def test_kernel_writes_the_same_reasons():
    """esp_decrypt_batch: one reason per failed packet, good packets decrypted, counters per SA."""
    if not evp.evp_load():
        pytest.skip("libcrypto not loadable")
    x = state()
    corrupt = bytearray(sealed(20))
    corrupt[-3] ^= 4
    wrong_spi = bytearray(sealed(10))
    wrong_spi[14 + 23] ^= 1
    frames = [sealed(5), sealed(5), sealed(9), bytes(corrupt), bytes(wrong_spi), sealed(11, b"\x02\x01\x02\x04"),
              sealed(12)[:-20]]  # fmt: skip
    b = PacketBatch(8)
    for f in frames:
        b.append(f, 1, 0)
    idx = np.arange(b.n, dtype=np.int32)
    x.tab.replay_top[x.index] = 0
    bad = esp_decrypt_batch(x, b.data, b.head, b.len, b.verdict, np.full(8, 14, np.uint16), idx, 0)
    want = [
        0,
        esp.XFRM_IN_REPLAY,
        0,
        esp.XFRM_IN_ICV,
        esp.XFRM_NO_STATE,
        esp.XFRM_IN_PADDING,
        esp.XFRM_IN_HDR,
    ]
    assert list(b.verdict[: b.n]) == want and bad == 5
    assert b.frame_bytes(0) == INNER
    # the per-packet path gives the same reasons on the same sequence of frames
    y = state()
    per = [r if isinstance(r, int) else 0 for r in (esp_input(y, f, 14, 0) for f in frames)]
    assert per == want


def test_encrypt_kernel_refuses_without_headroom():
    if not evp.evp_load():
        pytest.skip("libcrypto not loadable")
    x = state()
    b = PacketBatch(2, headroom=16)
    b.append(INNER, 1, 0)
    r = esp_encrypt_batch(
        x, b.data, b.head, b.len, b.verdict, np.full(2, 14, np.uint16), np.zeros(1, np.int32), 64, 0
    )
    assert r == 1 and b.verdict[0] == esp.XFRM_NO_ROOM and b.frame_bytes(0) == INNER  # decide, then write


def test_sequence_number_overflow_ends_the_sa():
    """RFC 4303 §3.3.3: without ESN the counter never cycles; xfrm_replay_overflow + hard expire."""
    x = state()
    x.tab.oseq[x.index] = 0xFFFFFFFE
    assert isinstance(esp_output(x, INNER, 14, 0), bytes)  # seq 2^32 - 1 is the last one
    assert x.tab.dead[x.index] == 1
    assert [(e.hard, e.reason) for e in x.owner.events] == [(True, "seq overflow")]
    assert esp_output(x, INNER, 14, 0) == esp.XFRM_STATE_EXPIRED


def test_lifetime_soft_then_hard_packet_limit():
    """xfrm_state_check_expire: a soft expire event first (rekey), then the SA ends at the hard limit."""
    x = state(lft=XfrmLifetimeCfg(soft_packet_limit=2, hard_packet_limit=3))
    for _ in range(2):
        assert isinstance(esp_output(x, INNER, 14, 5), bytes)
    assert [(e.hard, e.reason) for e in x.owner.events] == [(False, "packets")]
    assert isinstance(esp_output(x, INNER, 14, 6), bytes)
    assert [(e.hard, e.reason) for e in x.owner.events][-1] == (True, "packets")
    assert esp_output(x, INNER, 14, 7) == esp.XFRM_STATE_EXPIRED


def test_lifetime_seconds_from_first_packet_clock():
    """time-soft / time-hard count from the first packet time the SA sees (the port's clock)."""
    from flowpath.xfrm.state import xfrm_timer

    x = state(lft=XfrmLifetimeCfg(soft_add_expires_seconds=10, hard_add_expires_seconds=20))
    t0 = 1_700_000_000 * 10**9
    assert isinstance(esp_output(x, INNER, 14, t0), bytes)
    xfrm_timer(x.owner, t0 + 9 * 10**9)
    assert x.owner.events == []
    xfrm_timer(x.owner, t0 + 10 * 10**9)
    xfrm_timer(x.owner, t0 + 20 * 10**9)
    assert [(e.hard, e.reason) for e in x.owner.events] == [(False, "add"), (True, "add")]
    assert esp_output(x, INNER, 14, t0 + 21 * 10**9) == esp.XFRM_STATE_EXPIRED


@pytest.mark.parametrize(("natt", "mtu"), [(False, 1500), (True, 1500), (False, 1280)])
def test_state_mtu_is_the_largest_inner_packet_that_fits(natt, mtu):
    """xfrm_state_mtu: an inner packet of exactly that size encapsulates to <= mtu, one more byte does not."""
    from flowpath.xfrm.esp import xfrm_state_mtu
    from flowpath.xfrm.state import UDP_ENCAP_ESPINUDP

    x = state()
    if natt:
        x.encap_type, x.encap_sport, x.encap_dport = UDP_ENCAP_ESPINUDP, 4500, 4500
    m = xfrm_state_mtu(x, mtu)
    for size, fits in ((m, True), (m + 1, False)):
        p = raw(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / bytes(size - 28))
        assert (len(esp_output(x, p, 14, 0)) - 14 <= mtu) == fits

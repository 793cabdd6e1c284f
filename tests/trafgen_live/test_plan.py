"""The live generator's plan against the capture mode: template k mod K stamped with (k, send time) by
sig_stamp is byte for byte the capture mode's frame k (checksums included), and the nominal send
times repeat every period. No root needed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flowpath.trafgen import FieldVar, Profile, Rate, Stream, build_stream
from flowpath.trafgen.livetx import S_CHECK, S_K, S_PERIOD_NS, S_SIG, S_UDP, plan, template_count
from flowpath.trafgen.signature import sig_stamp

STREAMS = [
    Stream(size=128, count=300, sport=FieldVar(1000, 1049), rate=Rate(pps=1e5)),
    Stream(size="imix", count=300, l4="udp", rate=Rate(l1_bps=1e9), dport=FieldVar(1, 10, "dec")),
    Stream(
        size=FieldVar(80, 1500, "inc", step=7), l4="tcp", count=300, burst=8, ibg_ns=5000, rate=Rate(pps=1e6)
    ),
    Stream(size=200, l3="ipv6", count=300, saddr=FieldVar(1, 60, "inc"), rate=Rate(pps=1e4)),
    Stream(size=100, count=300, daddr=FieldVar(0x0A000000, 0x0A0000FF, "random", seed=5), rate=Rate(pps=1e4)),
]


@pytest.mark.parametrize("s", STREAMS, ids=["udp-sport", "imix-l1", "tcp-burst", "ipv6", "random"])
def test_stamped_templates_are_the_capture_modes_frames(s):
    k = template_count(dataclasses.replace(s, count=10**6))
    p = plan(Profile([dataclasses.replace(s, count=10**6)]), None, False)
    assert p.ss[0, S_K] == k and len(p.t_len) == k
    n = 2 * k + 3
    cap = build_stream(dataclasses.replace(s, count=n), 0)  # what `trafgen --out` writes
    random = isinstance(s.daddr, FieldVar) and s.daddr.op == "random"
    for i in list(range(5)) + list(range(k - 2, k + 5)) + [n - 1]:
        j = i % k
        frame = p.tmpl[p.t_off[j] : p.t_off[j] + p.t_len[j]].copy()
        due = (i // k) * p.ss[0, S_PERIOD_NS] + p.t_ts_ns[j]
        assert due == pytest.approx(int(cap.ts_ns[i]), abs=2), i  # the send times the capture mode gives
        sig_stamp(frame, p.ss[0, S_SIG], p.ss[0, S_CHECK], p.ss[0, S_UDP], i, int(cap.ts_ns[i]))
        if random and i >= k:
            continue  # a random field repeats after K packets live, not in the capture
        assert frame.tobytes() == cap.frame(i), i


def test_sig_stamp_handles_a_udp_sum_of_zero():
    """A UDP checksum that works out to 0 goes out as 0xffff (RFC 768), and the receiver's sum holds."""
    from flowpath.packet.csum import csum_fold, csum_partial

    s = Stream(size=64, count=1)
    fr = build_stream(s, 0)
    frame = np.frombuffer(fr.frame(0), np.uint8).copy()
    th, sig, coff = 34, 42, 40
    for seq in range(0, 1 << 16):  # search a seq whose checksum folds to zero
        f = frame.copy()
        sig_stamp(f, sig, coff, 1, seq, 0)
        if f[coff] == 0xFF and f[coff + 1] == 0xFF:
            break
    else:
        pytest.skip("no seq in range gives a zero sum")
    pseudo = csum_partial(f, 26, 8, np.int64(17 + len(f) - th))
    assert csum_fold(csum_partial(f, th, len(f) - th, pseudo)) == 0xFFFF


def test_template_count_covers_cycles_and_ranges():
    assert template_count(Stream(size="imix", count=10**6)) % 48 == 0
    assert template_count(Stream(size=64, count=10**6, burst=32)) % 32 == 0
    assert template_count(Stream(size=64, count=10**6, sport=FieldVar(0, 999))) == 1000
    assert template_count(Stream(size=64, count=5)) == 5
    assert template_count(Stream(size=1518, count=10**6, sport=FieldVar(0, 65535))) * 1518 <= 16 << 20
    assert template_count(Stream(size=64, count=10**6, sport=FieldVar(0, 49), burst=8)) == 200

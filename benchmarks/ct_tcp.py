"""TCP conntrack, one core: ns per segment of the compiled tracker vs the Python tracker it replaced.

No Linux counterpart. One conversation of S segments (a handshake, then client data of 1000 bytes
each answered by a server ACK, then a FIN close), as IPv4 frames in 2048-byte slots. Modes:
- "compiled": one @njit loop over C connections x S segments calling tcp_conntrack_packet on each
  connection's hot row (conntrack's part done inline: CONFIRMED after the first packet, SEEN_REPLY
  on replies), the connections interleaved segment by segment (C=1: the row stays in L1);
- "naive": tests/netfilter_ct/naive_tcp.py (the Python tracker before it was compiled), per segment;
- "wrapper": nf_conntrack_tcp_packet, the Python path's per-segment call now (NfConn bridged to a row);
- "row view": the same call on an entry with a `hot_row` (what NfConn becomes), no bridge.
Each mode's rows/entries start fresh each repetition; the best of R repetitions is printed. The
Python modes exclude the conntrack lookup (only the tracker call is timed), as the compiled one does.

    python benchmarks/ct_tcp.py [--segments 4096] [--conns 1,10000] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from numba import njit

from flowpath.netfilter.conntrack_proto_tcp import nf_conntrack_tcp_packet, tcp_conntrack_packet, tcp_params
from flowpath.netfilter.conntrack_tuple import NfConn, NfConnTuple
from flowpath.netfilter.constants import IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IPS_CONFIRMED, IPS_SEEN_REPLY
from flowpath.netfilter.ct_layout import CT_HOT_ROW, CT_STATUS
from flowpath.packet.csum import l4_csum, st16

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "netfilter_ct"))
import naive_tcp  # noqa: E402  (the reference lives with the tests)

SLOT, NHOFF, THOFF = 2048, 14, 34
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10


def segment(slot: np.ndarray, dir: int, flags: int, seq: int, ack: int, plen: int) -> int:
    """Write one Ethernet/IPv4/TCP frame into slot; its IP length."""
    ip_len = 20 + 20 + plen
    a, b = bytes([10, 0, 0, 2]), bytes([192, 168, 1, 9])
    sport, dport = (40000, 80) if dir == 0 else (80, 40000)
    hdr = (b"\x02" * 12 + b"\x08\x00" + b"\x45\x00" + ip_len.to_bytes(2, "big") + bytes(4) + bytes([64, 6, 0, 0])
           + (a + b if dir == 0 else b + a) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
           + seq.to_bytes(4, "big") + ack.to_bytes(4, "big") + bytes([0x50, flags]) + (29200).to_bytes(2, "big")
           + bytes(4))  # fmt: skip
    slot[: len(hdr)] = np.frombuffer(hdr, np.uint8)
    slot[len(hdr) : len(hdr) + plen] = 0x61
    st16(slot, THOFF + 16, l4_csum(slot, NHOFF, THOFF, 20 + plen, False, 6, 16))
    return ip_len


def conversation(n: int):
    """n segments of one connection: bufs uint8[n, SLOT], l3len/dir/now int64[n]."""
    bufs = np.zeros((n, SLOT), np.uint8)
    l3len, dirs, now = (np.zeros(n, np.int64) for _ in range(3))
    cseq, sseq = 1000, 5000
    plan = [(0, SYN, 0), (1, SYN | ACK, 0), (0, ACK, 0)]
    while len(plan) < n - 3:
        plan += [(0, ACK | PSH, 1000), (1, ACK, 0)]
    plan = plan[: n - 3] + [(0, FIN | ACK, 0), (1, FIN | ACK, 0), (0, ACK, 0)]
    for i, (d, flags, plen) in enumerate(plan):
        seq, ack = (cseq, sseq) if d == 0 else (sseq, cseq)
        l3len[i] = segment(bufs[i], d, flags, seq, 0 if flags == SYN else ack, plen)
        dirs[i], now[i] = d, i * 1000
        adv = plen + bool(flags & SYN) + bool(flags & FIN)
        cseq, sseq = (cseq + adv, sseq) if d == 0 else (cseq, sseq + adv)
    return bufs, l3len, dirs, now


@njit(cache=True, nogil=True)
def track_all(rows, bufs, l3len, dirs, now, params):
    """Every connection through every segment, interleaved; the number of accepted segments."""
    accepted = 0
    for i in range(bufs.shape[0]):
        for c in range(rows.shape[0]):
            row, d = rows[c], dirs[i]
            ctinfo = IP_CT_ESTABLISHED_REPLY if d == 1 else IP_CT_NEW
            if tcp_conntrack_packet(row, bufs[i], NHOFF, THOFF, l3len[i], d, ctinfo, now[i], params) > 0:
                accepted += 1
                row[CT_STATUS] |= IPS_CONFIRMED | (IPS_SEEN_REPLY if d == 1 else 0)
    return accepted


def bench_compiled(conv, conns: int, reps: int) -> float:
    bufs, l3len, dirs, now = conv
    params = tcp_params()
    track_all(np.zeros((1, CT_HOT_ROW), np.int64), bufs[:4], l3len[:4], dirs[:4], now[:4], params)  # compile
    best = float("inf")
    for _ in range(reps):
        rows = np.zeros((conns, CT_HOT_ROW), np.int64)
        t = time.perf_counter_ns()
        accepted = track_all(rows, bufs, l3len, dirs, now, params)
        best = min(best, (time.perf_counter_ns() - t) / (len(bufs) * conns))
    assert accepted == len(bufs) * conns, accepted  # every segment of the conversation is in window
    return best


def bench_python(conv, reps: int, mode: str) -> float:
    bufs, l3len, dirs, now = conv
    skbs = [SimpleNamespace(buf=bufs[i, : NHOFF + l3len[i]].copy(), nhoff=NHOFF, l3len=int(l3len[i]),
                            ts_ns=int(now[i]), ctinfo=IP_CT_ESTABLISHED_REPLY if dirs[i] else IP_CT_NEW)
            for i in range(len(bufs))]  # fmt: skip
    t4 = NfConnTuple(2, 6, 1, 2, 3, 4)
    best = float("inf")
    for _ in range(reps):
        if mode == "naive":
            ct, track = naive_tcp.NaiveConn(), naive_tcp.nf_conntrack_tcp_packet
        elif mode == "wrapper":
            ct, track = NfConn(tuplehash=[t4, t4]), nf_conntrack_tcp_packet
        else:  # a row view: what conntrack.py's NfConn becomes (status and the rest live in the row)
            ct, track = (
                SimpleNamespace(hot_row=np.zeros(CT_HOT_ROW, np.int64), net=None),
                nf_conntrack_tcp_packet,
            )
        t = time.perf_counter_ns()
        for skb, d in zip(skbs, dirs.tolist(), strict=True):
            if track(ct, skb, THOFF, d, False) > 0:
                bits = IPS_CONFIRMED | (IPS_SEEN_REPLY if d else 0)
                if mode == "row view":
                    ct.hot_row[CT_STATUS] |= bits
                else:
                    ct.status |= bits
        best = min(best, (time.perf_counter_ns() - t) / len(skbs))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=4096)
    ap.add_argument("--conns", default="1,10000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    conv = conversation(a.segments)
    res = {"segments": a.segments}
    for mode, label in (("naive", "naive (the Python tracker)"), ("wrapper", "wrapper, NfConn bridged"),
                        ("row view", "wrapper, NfConn a row view")):  # fmt: skip
        res[mode.replace(" ", "_") + "_ns"] = ns = bench_python(conv, a.reps, mode)
        print(f"{label:<32} {ns:9.0f} ns/segment")
    for conns in (int(c) for c in a.conns.split(",")):
        segs = max(64, a.segments // max(1, conns // 16))  # bounded total work for many connections
        ns = bench_compiled(conversation(segs), conns, a.reps)
        res[f"compiled_{conns}_ns"] = ns
        print(
            f"compiled, {conns:>6} connections     {ns:9.1f} ns/segment  ({res['naive_ns'] / ns:6.0f}x naive)"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

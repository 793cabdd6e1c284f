"""`flowpath trafgen PROFILE --live IF`: a profile's streams sent through an AF_PACKET transmit ring at
their rates (or flat out), each frame's signature stamped as it is queued.

No Linux counterpart (pktgen's job, net/core/pktgen.c › pktgen_xmit with its spin/hrtimer pacing,
done from user space; TRex's STL streams).
Each stream is prebuilt once into a ring of K templates by the capture mode's own builder
(stream.build_stream): frame k of the run is template k mod K, so the field engine repeats every K
packets (K is a multiple of every period in the stream: an IMIX cycle, a burst, an inc/dec
range; template_count) and its
nominal send time is start + (k div K) x period + the template's offset, the timestamps the capture
mode gives. A compiled loop (livetx_fill) picks the stream whose next frame is due soonest
(CLOCK_MONOTONIC), copies its template into a free ring frame, writes the sequence number and the
send time (CLOCK_REALTIME, the receive ring's clock) into the signature, updates the L4 checksum
incrementally (signature.sig_stamp) and marks the frame for sending. It returns to Python to kick
the ring (send()) as soon as it has queued something and the next frame is not due yet, so a frame's
stamp precedes its transmission by the time to the kick; the Python loop sleeps through gaps longer
than SLEEP_MIN_NS and lets the compiled loop spin through shorter ones. A generator that falls behind
sends what is due back to back (it catches up; it never skips a sequence number).
`--rate max` sends every stream round robin as fast as the ring drains.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from numba import njit

from flowpath.errors import UsageError
from flowpath.packet import layout as L
from flowpath.ports.tpacket import (
    C_TX_ERRORS,
    TX_DATA_OFF,
    memcpy,
    tx_frame_claim,
    tx_frame_commit,
)
from flowpath.trafgen.clock import CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime_ns
from flowpath.trafgen.field import FieldVar
from flowpath.trafgen.imix import ETH_FCS_LEN, ETH_L1_OVERHEAD, frame_sizes, imix_mix
from flowpath.trafgen.profile import Profile
from flowpath.trafgen.signature import SIG_MAGIC_BYTES, sig_stamp
from flowpath.trafgen.stream import IPV6_HLEN, TCP_HLEN, Stream, build_stream

# ss, one row per stream (int64[n, N_SS])
(S_BASE, S_K, S_PERIOD_NS, S_START_NS, S_LIMIT, S_END_NS, S_SENT, S_BYTES, S_SIG, S_CHECK, S_UDP,
 S_FIRST_NS, S_LAST_NS) = range(13)  # fmt: skip
N_SS = 16
# ctl, the loop's state (int64[8])
C_FLAT_OUT, C_RR, C_BUDGET, C_SPIN_NS, C_NEXT_NS, C_RING_FULL = range(6)
NEVER = np.iinfo(np.int64).max
MIN_TEMPLATES, MAX_TEMPLATES = 64, 8192
TEMPLATE_BYTES = 16 << 20  # per stream
RANDOM_TEMPLATES = 1024  # a random field repeats after this many packets
BUDGET = 1024  # frames per compiled call at most (a kick each)
SPIN_NS = 20_000  # gaps shorter than this are spun through in the compiled loop
SLEEP_MIN_NS = 40_000  # gaps longer than this are slept through (minus SPIN_NS / 2)
TIMER_SLACK_NS = 1_000  # prctl(PR_SET_TIMERSLACK): the default 50 us would oversleep most gaps
PR_SET_TIMERSLACK = 29
START_DELAY_NS = 2_000_000  # first frames due this long after setup, not in the past
TX_RING_BYTES = 4 << 20  # 2048 frames of 2 KiB, as AfPacketPort's: a larger ring measured no faster


@njit(cache=True, nogil=True)
def _due_ns(ss, t_ts_ns, s):
    k, kk = ss[s, S_SENT], ss[s, S_K]
    return ss[s, S_START_NS] + (k // kk) * ss[s, S_PERIOD_NS] + t_ts_ns[ss[s, S_BASE] + k % kk]


@njit(cache=True, nogil=True)
def _pick(ss, t_ts_ns, ctl, now):
    """(stream, due time) of the next frame to send, (-1, -1) when every stream is done. Paced: the
    earliest due (ties to the lower row); flat out: round robin from ctl[C_RR]."""
    n = ss.shape[0]
    best, best_due = -1, NEVER
    for j in range(n):
        s = (ctl[C_RR] + j) % n if ctl[C_FLAT_OUT] else j
        if ss[s, S_LIMIT] >= 0 and ss[s, S_SENT] >= ss[s, S_LIMIT]:
            continue
        if ctl[C_FLAT_OUT]:
            if now >= ss[s, S_END_NS]:
                continue
            ctl[C_RR] = s + 1
            return s, now
        due = _due_ns(ss, t_ts_ns, s)
        if due < ss[s, S_END_NS] and due < best_due:
            best, best_due = s, due
    return best, (best_due if best >= 0 else -1)


@njit(cache=True, nogil=True)
def livetx_fill(ring, ring32, st, cnt, tmpl, t_off, t_len, t_ts_ns, ss, ctl):
    """Queue due frames into the TX ring; return how many. Sets ctl[C_NEXT_NS] to when the next frame
    is due (monotonic ns; now when the ring is full) or -1 when every stream is done.

    ring uint8[size], ring32 uint32[size / 4], st int64[8], cnt int64[16]: a TxRing
    tmpl uint8[B] template bytes; t_off, t_len, t_ts_ns int64[T]: each template's start, length and
        send-time offset within its stream's period
    ss int64[streams, N_SS] the S_* columns; ctl int64[8] the C_* values
    """
    queued = 0
    while queued < ctl[C_BUDGET]:
        now = clock_gettime_ns(CLOCK_MONOTONIC)
        s, due = _pick(ss, t_ts_ns, ctl, now)
        if s < 0:
            ctl[C_NEXT_NS] = -1
            return queued
        if due > now:
            if queued > 0 or due - now > ctl[C_SPIN_NS]:
                ctl[C_NEXT_NS] = due
                return queued
            continue
        f = tx_frame_claim(ring32, st, cnt)
        if f < 0:
            ctl[C_RING_FULL] += 1
            ctl[C_NEXT_NS] = now
            return queued
        k = ss[s, S_SENT]
        j = ss[s, S_BASE] + k % ss[s, S_K]
        n = t_len[j]
        memcpy(ring, f + TX_DATA_OFF, tmpl, t_off[j], n)
        tx_ns = clock_gettime_ns(CLOCK_REALTIME)
        sig_stamp(
            ring, f + TX_DATA_OFF + ss[s, S_SIG], f + TX_DATA_OFF + ss[s, S_CHECK], ss[s, S_UDP], k, tx_ns
        )
        tx_frame_commit(ring32, st, cnt, f, n)
        if k == 0:
            ss[s, S_FIRST_NS] = tx_ns
        ss[s, S_LAST_NS] = tx_ns
        ss[s, S_SENT] = k + 1
        ss[s, S_BYTES] += n + ETH_FCS_LEN
        queued += 1
    ctl[C_NEXT_NS] = 0
    return queued


# ---- the plan: templates and per-stream rows ------------------------------------------------------


def _period(v) -> int:
    """Packets after which a field repeats: an inc/dec range of n values stepped by d, n / gcd(d, n);
    RANDOM_TEMPLATES for a random one (it never repeats; live, it does after that many)."""
    if not isinstance(v, FieldVar) or v.op == "fixed":
        return 1
    if v.op == "random":
        return RANDOM_TEMPLATES
    return v.size // math.gcd(v.step % v.size, v.size)


def template_count(s: Stream) -> int:
    """K, the templates of a stream: a multiple of every period in it (an IMIX cycle, a burst, each
    inc/dec field) and at least MIN_TEMPLATES, so the run repeats the capture mode's frames exactly.
    When that would exceed MAX_TEMPLATES or TEMPLATE_BYTES, whole IMIX cycles and bursts only (the
    fields then restart every K packets). A stream of fewer packets gets one template each."""
    cycle = math.lcm(
        sum(w for _, w in imix_mix(s.size)) if isinstance(s.size, (str, tuple)) else 1, s.burst or 1
    )
    top = int(frame_sizes(s.size, cycle).max()) if not isinstance(s.size, FieldVar) else s.size.max
    room = min(MAX_TEMPLATES, TEMPLATE_BYTES // top)
    base = math.lcm(cycle, *(_period(v) for v in (s.saddr, s.daddr, s.sport, s.dport, s.size)))
    if base > room:
        base = cycle
    k = base * max(1, -(-MIN_TEMPLATES // base))
    if k > room:
        k = max(base, room // base * base)
    return max(1, min(k, s.count) if s.count is not None else k)


def _offsets(s: Stream) -> tuple[int, int, int]:
    """Byte offsets of the signature and the L4 checksum in the stream's frames, and 1 for UDP."""
    th = L.ETH_HLEN + (IPV6_HLEN if s.v6 else L.IPH.size)
    udp = s.l4 == "udp"
    return th + (L.UDPH.size if udp else TCP_HLEN), th + (L.UDPH.check if udp else 16), int(udp)


@dataclasses.dataclass
class Plan:
    """What livetx_fill walks (its docstring), the streams' ids and names, and the largest frame."""

    tmpl: np.ndarray
    t_off: np.ndarray
    t_len: np.ndarray
    t_ts_ns: np.ndarray
    ss: np.ndarray
    ids: list[int]
    names: list[str]
    target_pps: list[float | None]
    max_caplen: int


def plan(prof: Profile, duration_s: float | None, flat_out: bool) -> Plan:
    """Templates and stream rows, times relative to 0 (send_live adds the start)."""
    ids = [s.stream_id if s.stream_id is not None else k for k, s in enumerate(prof.streams)]
    if len(set(ids)) != len(ids) or not all(0 <= i < 1 << 16 for i in ids):
        raise UsageError("stream ids must be distinct and fit 16 bits")
    ss = np.zeros((len(ids), N_SS), np.int64)
    parts, t_ts, targets, base = [], [], [], 0
    for r, (s, sid) in enumerate(zip(prof.streams, ids, strict=True)):
        k = template_count(s)
        fr = build_stream(dataclasses.replace(s, count=k, duration_s=None, start_ns=0), sid)
        sig, check, udp = _offsets(s)
        if fr.flat[fr.off[0] + sig : fr.off[0] + sig + 4].tobytes() != SIG_MAGIC_BYTES:
            raise AssertionError("signature not where _offsets puts it")  # the builder's layout changed
        gaps = s.rate.gaps_ns(fr.caplen + ETH_FCS_LEN)
        period = float(gaps.sum()) + (k // s.burst * s.ibg_ns if s.burst else 0)
        targets.append(None if flat_out else len(gaps) * 1e9 / period)  # bursts' gaps included
        end = NEVER
        if duration_s is not None:
            end = int(duration_s * 1e9)
        if s.duration_s is not None:
            end = min(end, s.start_ns + int(s.duration_s * 1e9))
        ss[r, [S_BASE, S_K, S_PERIOD_NS, S_START_NS, S_END_NS, S_SIG, S_CHECK, S_UDP]] = (
            base, k, round(period), 0 if flat_out else s.start_ns, end, sig, check, udp)  # fmt: skip
        ss[r, S_LIMIT] = s.count if s.count is not None else -1
        parts.append(fr)
        t_ts.append(fr.ts_ns)
        base += k
    flat_base = np.cumsum([0] + [len(f.flat) for f in parts])[:-1]
    return Plan(
        np.concatenate([f.flat for f in parts]),
        np.concatenate([f.off + b for f, b in zip(parts, flat_base, strict=True)]),
        np.concatenate([f.caplen for f in parts]),
        np.concatenate(t_ts).astype(np.int64),
        ss, ids, [s.name for s in prof.streams], targets,
        int(max(int(f.caplen.max()) for f in parts)),
    )  # fmt: skip


# ---- the run --------------------------------------------------------------------------------------


def _rates(n: int, nbytes: int, d_ns: float) -> dict:
    per = (lambda x: x * 1e9 / d_ns) if d_ns > 0 else (lambda x: 0.0)
    return {"packets": n, "bytes": nbytes, "duration_s": d_ns / 1e9, "pps": per(n), "l2_bps": per(nbytes * 8),
            "l1_bps": per((nbytes + ETH_L1_OVERHEAD * n) * 8)}  # fmt: skip


def send_live(prof: Profile, ifname: str, duration_s: float | None = None, flat_out: bool = False) -> dict:
    """Send the profile on `ifname` until every stream is done (its count, its duration_s, or
    `duration_s` for all), or SIGINT; return what was sent: totals and per stream packets, bytes and
    rates (over each stream's first to last stamp, n frames counting n gaps), `target_pps`, and
    `interrupted`. Raises UsageError for an interface that cannot be used or frames it cannot carry."""
    from flowpath.trafgen.ring import TxRing, pow2_at_least

    if duration_s is not None and not duration_s > 0:
        raise UsageError("--duration must be positive")
    p = plan(prof, duration_s, flat_out)
    frame_size = pow2_at_least(p.max_caplen + TX_DATA_OFF, 2048)
    tx = TxRing(ifname, frames=TX_RING_BYTES // frame_size, frame_size=frame_size)
    try:
        if p.max_caplen > tx.link.mtu + L.ETH_HLEN:
            raise UsageError(f"frames of {p.max_caplen + ETH_FCS_LEN} bytes (with FCS) exceed the MTU "
                             f"{tx.link.mtu} of {ifname}")  # fmt: skip
        ctl = np.zeros(8, np.int64)
        ctl[C_FLAT_OUT], ctl[C_SPIN_NS] = flat_out, SPIN_NS
        args = (tx.ring, tx.ring32, tx.st, tx.cnt, p.tmpl, p.t_off, p.t_len, p.t_ts_ns, p.ss, ctl)
        livetx_fill(*args)  # compile (or load) now: budget 0 queues nothing
        ctl[C_BUDGET] = BUDGET
        t0 = time.monotonic_ns() + START_DELAY_NS
        p.ss[:, S_START_NS] += t0
        p.ss[:, S_END_NS] = np.where(p.ss[:, S_END_NS] == NEVER, NEVER, p.ss[:, S_END_NS] + t0)
        _set_timer_slack(TIMER_SLACK_NS)
        interrupted = False
        try:
            while True:
                full = ctl[C_RING_FULL]
                if livetx_fill(*args) or ctl[C_RING_FULL] != full:  # queued something, or the ring is full
                    tx.kick()
                nxt = int(ctl[C_NEXT_NS])
                if nxt < 0:
                    break
                wait = nxt - time.monotonic_ns()
                if wait > SLEEP_MIN_NS:
                    time.sleep((wait - SPIN_NS // 2) / 1e9)
        except KeyboardInterrupt:
            interrupted = True
        t_end = time.monotonic_ns()
        _drain(tx)
        return _summary(p, tx, ifname, flat_out, max(0, t_end - t0), interrupted, int(ctl[C_RING_FULL]))
    finally:
        tx.close()


def _set_timer_slack(ns: int) -> None:
    """prctl(PR_SET_TIMERSLACK) for this thread (kernel/sys.c); left as it is where libc has no prctl."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _drain(tx, timeout_s: float = 1.0) -> None:
    """Kick until the kernel has every queued frame (closing the socket would drop the rest)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            tx.kick()
            if not tx.in_flight() or time.monotonic() > deadline:
                return
            time.sleep(0.001)
        except KeyboardInterrupt:
            return


def _summary(
    p: Plan, tx, ifname: str, flat_out: bool, elapsed_ns: int, interrupted: bool, ring_full: int
) -> dict:
    streams = []
    for r, sid in enumerate(p.ids):
        n, nbytes = int(p.ss[r, S_SENT]), int(p.ss[r, S_BYTES])
        span = int(p.ss[r, S_LAST_NS] - p.ss[r, S_FIRST_NS])
        st = {"stream_id": sid, "name": p.names[r] or None, **_rates(n, nbytes, span * n / (n - 1) if n > 1 else 0),
              "target_pps": p.target_pps[r]}  # fmt: skip
        streams.append(st)
    total = _rates(int(p.ss[:, S_SENT].sum()), int(p.ss[:, S_BYTES].sum()), elapsed_ns)
    return {"interface": ifname, "rate": "max" if flat_out else "profile", **total,
            "tx_errors": int(tx.cnt[C_TX_ERRORS]), "ring_full": ring_full, "interrupted": interrupted,
            "clock": "signature tx_ts_ns: CLOCK_REALTIME at queueing", "streams": streams}  # fmt: skip

"""Receive statistics per port and per stream: packets, bytes, rates, loss, reordering, duplicates and
latency from the signature (signature.py) that each generated frame carries.

No Linux counterpart (TRex's per-port counters and flow-stats/latency streams).

JSON schema, version 1 (`schema_version`: bumped whenever a key changes meaning or goes away; new keys
may be added without a bump):
  schema_version  1
  conventions     text: what bytes and rates count
  total, ports.<name>:
    packets, bytes          frames received and their wire bytes (captured length + 4 FCS)
    signed_packets          frames carrying a signature
    first_ts_ns, last_ts_ns receive times of the first and last frame (null when none)
    duration_s              last - first plus one mean gap (so n frames every g s measure 1/g pps)
    pps, l2_bps, l1_bps     rates over duration_s; L1 adds 20 bytes per frame (preamble, SFD, gap)
  streams.<id> (decimal stream id):
    packets, bytes, pps, l2_bps, l1_bps, ports (names it arrived on)
    expected                sent packets: given (--tx capture or API), else highest seq + 1
    lost, loss_ratio        expected - distinct sequence numbers received (>= 0), lost / expected
    duplicates              packets whose sequence number arrived before
    reordered               first arrivals whose sequence number is below the highest seen before
                            (RFC 4737 §3.3 "reordered": seq < next expected)
    latency_ns              min, avg, max of receive - transmit time; jitter: RFC 3550 §6.4.1
                            interarrival jitter (J += (|D| - J) / 16) in arrival order; null if none
                            was measured (latency_note says why)
    name                    the stream's name in the profile (rxstats --profile), else null
    latency_note            null when latency_ns holds a measurement, else why not: no packet received,
                            or every packet received at its transmit time, as after `flowpath replay`
                            (its outputs keep the input's capture times: one clock on both sides)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from flowpath.progress import NO_METER, PCAP_RECORD_HLEN, Meter
from flowpath.trafgen.imix import ETH_FCS_LEN, ETH_L1_OVERHEAD
from flowpath.trafgen.signature import sig_find
from flowpath.trafgen.stream import duration_ns

SCHEMA_VERSION = 1
CONVENTIONS = (
    "bytes are wire bytes: captured length + 4 FCS; l2_bps counts them, l1_bps adds 20 bytes of preamble, "
    "SFD and inter-frame gap per frame; times in ns of the capture clock"
)
PORT_KEYS = ("packets", "bytes", "signed_packets", "first_ts_ns", "last_ts_ns", "duration_s", "pps", "l2_bps",
             "l1_bps")  # fmt: skip
STREAM_KEYS = ("packets", "bytes", "pps", "l2_bps", "l1_bps", "ports", "expected", "lost", "loss_ratio",
               "duplicates", "reordered", "latency_ns", "name", "latency_note")  # fmt: skip
LATENCY_NONE = "no packet received"
LATENCY_SAME_CLOCK = "replayed: send and receive share the capture clock"
LATENCY_KEYS = ("min", "avg", "max", "jitter")
METER_EVERY = 8192  # packets between two reports to the meter


def _rates(ts_ns: np.ndarray, wire_bytes: np.ndarray) -> dict:
    n = len(ts_ns)
    d_ns = duration_ns(ts_ns)
    nbytes = int(wire_bytes.sum())
    per = (lambda x: x * 1e9 / d_ns) if d_ns else (lambda x: 0.0)
    return {
        "packets": n,
        "bytes": nbytes,
        "duration_s": d_ns / 1e9,
        "pps": per(n),
        "l2_bps": per(nbytes * 8),
        "l1_bps": per((nbytes + ETH_L1_OVERHEAD * n) * 8),
    }


def _port_stats(ts: np.ndarray, wire: np.ndarray, signed: int) -> dict:
    order = np.argsort(ts, kind="stable")
    r = _rates(ts[order], wire[order])
    r["signed_packets"] = signed
    r["first_ts_ns"] = int(ts.min()) if len(ts) else None
    r["last_ts_ns"] = int(ts.max()) if len(ts) else None
    return {k: r[k] for k in PORT_KEYS}


def rfc3550_jitter(transit_ns: np.ndarray) -> float:
    """Interarrival jitter after the last packet: J(i) = J(i-1) + (|D(i-1,i)| - J(i-1)) / 16 (RFC 3550
    §6.4.1), D the difference of consecutive transit times, in arrival order."""
    j = 0.0
    for d in np.abs(np.diff(transit_ns.astype(np.float64))).tolist():
        j += (d - j) / 16
    return j


def sequence_stats(seq: np.ndarray, expected: int | None = None) -> dict:
    """Loss, duplicates and reordering of one stream's sequence numbers in arrival order."""
    n = len(seq)
    if n == 0:
        exp = int(expected or 0)
        return {
            "expected": exp,
            "lost": exp,
            "loss_ratio": 1.0 if exp else 0.0,
            "duplicates": 0,
            "reordered": 0,
        }
    _, first_idx = np.unique(seq, return_index=True)
    first = np.zeros(n, np.bool_)
    first[first_idx] = True
    prev_max = np.empty(n, np.int64)
    prev_max[0] = -1
    prev_max[1:] = np.maximum.accumulate(seq)[:-1]
    exp = int(seq.max()) + 1 if expected is None else int(expected)
    lost = max(0, exp - len(first_idx))
    return {
        "expected": exp,
        "lost": lost,
        "loss_ratio": lost / exp if exp else 0.0,
        "duplicates": int(n - len(first_idx)),
        "reordered": int(np.count_nonzero(first & (seq < prev_max))),
    }


def latency(transit_ns: np.ndarray) -> tuple[dict | None, str | None]:
    """(latency_ns, latency_note) of one stream's receive - transmit times, in arrival order.

    All zero means there was nothing to measure: the receive times are the transmit times, as when
    `flowpath replay` writes its outputs with the inputs' capture times. 0/0/0 would read as a
    gateway that takes no time."""
    if not len(transit_ns):
        return None, LATENCY_NONE
    if not transit_ns.any():
        return None, LATENCY_SAME_CLOCK
    return {"min": int(transit_ns.min()), "avg": float(transit_ns.mean()), "max": int(transit_ns.max()),
            "jitter": rfc3550_jitter(transit_ns)}, None  # fmt: skip


def rx_stats(
    ports: dict[str, Iterable[tuple[int, bytes] | tuple[int, bytes, int]]],
    expected: dict[int, int] | None = None,
    names: dict[int, str] | None = None,
    meter: Meter = NO_METER,
) -> dict:
    """Statistics of frames received per port: {name: [(rx_ts_ns, frame[, orig_len]), ...]}, each
    list in arrival order.

    expected: packets sent per stream id (streams absent from it count highest seq + 1).
    names: stream id -> the stream's name in its profile (stream_names).
    meter: advanced every METER_EVERY frames by the bytes they take in a pcap."""
    cols = [], [], [], [], [], []  # port, rx_ts, wire, stream (-1: no signature), seq, tx_ts
    port_names = list(ports)
    for p, name in enumerate(port_names):
        k = nbytes = 0
        for rec in ports[name]:
            t, frame = rec[0], rec[1]
            s = sig_find(frame)
            sid, seq, tx = s if s is not None else (-1, 0, 0)
            for col, v in zip(cols, (p, t, (rec[2] if len(rec) > 2 else len(frame)) + ETH_FCS_LEN, sid, seq, tx),
                              strict=True):  # fmt: skip
                col.append(v)
            k += 1
            nbytes += len(frame) + PCAP_RECORD_HLEN
            if k % METER_EVERY == 0:
                meter.advance(nbytes, METER_EVERY)
                nbytes = 0
        meter.advance(nbytes, k % METER_EVERY)
    return stats_table(port_names, *(np.array(c, np.int64) for c in cols), expected, names)


def stats_table(
    port_names: list[str],
    port: np.ndarray,
    rx_ts: np.ndarray,
    wire: np.ndarray,
    stream: np.ndarray,
    seq: np.ndarray,
    tx_ts: np.ndarray,
    expected: dict[int, int] | None = None,
    names: dict[int, str] | None = None,
) -> dict:
    """The statistics (module docstring) of received frames given as columns, int64[n] each, every
    port's frames in arrival order: port (index into port_names), rx_ts (receive time, ns), wire
    (bytes with FCS), stream (stream id, -1 for a frame without signature), seq and tx_ts (the
    signature's). The one implementation behind capture files (rx_stats) and the live receive ring
    (trafgen/liverx.py)."""
    expected, stream_name = expected or {}, names or {}
    out_ports = {}
    signed = stream >= 0
    for p, name in enumerate(port_names):
        m = port == p
        out_ports[name] = _port_stats(rx_ts[m], wire[m], int(np.count_nonzero(m & signed)))
    total = _port_stats(rx_ts, wire, int(np.count_nonzero(signed)))
    streams = {}
    rows = np.flatnonzero(signed)
    if len(port_names) > 1:  # arrival order across ports is receive-time order; within a port, list order
        rows = rows[np.argsort(rx_ts[rows], kind="stable")]
    r_sid = stream[rows]
    ids = sorted(set(np.unique(r_sid).tolist()) | set(expected))
    for sid in ids:
        r = rows[r_sid == sid]
        st = _rates(rx_ts[r], wire[r])
        st["ports"] = sorted({port_names[k] for k in np.unique(port[r]).tolist()})
        st.update(sequence_stats(seq[r], expected.get(sid)))
        st["latency_ns"], st["latency_note"] = latency(rx_ts[r] - tx_ts[r])
        st["name"] = stream_name.get(sid)
        streams[str(sid)] = {k: st[k] for k in STREAM_KEYS}
    return {"schema_version": SCHEMA_VERSION, "conventions": CONVENTIONS, "total": total, "ports": out_ports,
            "streams": streams}  # fmt: skip


def capture_counts(paths: Iterable[str | Path], meter: Meter = NO_METER) -> dict[int, int]:
    """Packets per stream id in transmit captures (the `expected` of rx_stats); `meter` as rx_stats."""
    from flowpath.ports.pcap import read_capture

    counts: dict[int, int] = {}
    for path in paths:
        n = nbytes = 0
        for rec in read_capture(path):
            s = sig_find(rec.data)
            if s is not None:
                counts[s[0]] = counts.get(s[0], 0) + 1
            n += 1
            nbytes += len(rec.data) + PCAP_RECORD_HLEN
            if n % METER_EVERY == 0:
                meter.advance(nbytes, METER_EVERY)
                nbytes = 0
        meter.advance(nbytes, n % METER_EVERY)
    return counts


def stream_names(profile_path: str | Path) -> dict[int, str]:
    """Stream id -> name of a profile's named streams (ids as Profile.generate gives them)."""
    from flowpath.trafgen.profile import load_profile

    streams = load_profile(profile_path).streams
    return {s.stream_id if s.stream_id is not None else k: s.name for k, s in enumerate(streams) if s.name}


def rx_stats_captures(
    inputs: list[tuple[str, Path]],
    tx: list[Path] | None = None,
    profile: Path | None = None,
    meter: Meter = NO_METER,
) -> dict:
    """rx_stats over capture files, one port per (name, path); `tx` captures give the expected counts,
    `profile` (the generator's TOML) the streams' names. `meter`: a phase per kind of capture (tx,
    then received), in bytes of the files."""
    from flowpath.ports.pcap import read_capture

    names = stream_names(profile) if profile is not None else None
    ports = {name: ((r.ts_ns, r.data, r.orig_len) for r in read_capture(path)) for name, path in inputs}
    if len(ports) != len(inputs):
        raise ValueError("two inputs share a port name; use NAME=FILE")
    expected = None
    if tx:
        meter.begin("reading --tx", sum(Path(p).stat().st_size for p in tx))
        expected = capture_counts(tx, meter)
    meter.begin("rxstats", sum(Path(p).stat().st_size for _, p in inputs))
    return rx_stats(ports, expected, names, meter)


def parse_rx_inputs(specs: list[str]) -> list[tuple[str, Path]]:
    """`NAME=FILE` or `FILE` (port named after the file's stem, e.g. wan0 for out/wan0.pcap)."""
    from flowpath.errors import UsageError

    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        if not name or not Path(path).is_file():
            raise UsageError(f"{spec!r}: expected FILE or NAME=FILE of an existing capture")
        out.append((name, Path(path)))
    if len({n for n, _ in out}) != len(out):
        raise UsageError("two captures share a port name; name them with NAME=FILE")
    return out

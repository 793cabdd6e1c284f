"""Streams: a packet template, a field engine over its addresses and ports, frame sizes, a rate and a
count or duration; built in bulk into a Frames table (no per-packet Python objects).

No Linux counterpart (closest: pktgen.c › fill_packet_ipv4 and TRex's STLStream).
Conventions: sizes are wire frames with the 4-byte FCS (a capture holds size - 4 bytes); L1 rates
count 20 more bytes per frame (preamble, SFD and inter-frame gap), as TRex's L1 counters do.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

import numpy as np

from flowpath.packet import layout as L
from flowpath.progress import NO_METER, Meter
from flowpath.trafgen.field import FieldVar
from flowpath.trafgen.imix import ETH_FCS_LEN, ETH_L1_OVERHEAD, frame_sizes, mean_size
from flowpath.trafgen.signature import SIG_LEN, sig_write

CHUNK = 8192  # packets built per numpy pass; bounds the scratch array to CHUNK x 1518 bytes
IPV6_HLEN, TCP_HLEN = 40, 20


@dataclass(frozen=True)
class Rate:
    """How fast a stream sends: `pps`, or L1 bits per second (`l1_bps`), or `percent` of `line_bps`
    (L1). Timestamps of packet k follow it: k / pps, or the L1 bits sent before k / rate."""

    pps: float | None = None
    l1_bps: float | None = None
    percent: float | None = None
    line_bps: float = 10e9

    def __post_init__(self) -> None:
        given = [x for x in (self.pps, self.l1_bps, self.percent) if x is not None]
        if len(given) != 1 or given[0] <= 0:
            raise ValueError("a rate is exactly one positive value of pps, l1_bps or percent")

    def gaps_ns(self, sizes: np.ndarray) -> np.ndarray:
        """float64[n]: time each packet occupies before the next one starts."""
        if self.pps is not None:
            return np.full(len(sizes), 1e9 / self.pps)
        bps = self.l1_bps if self.l1_bps is not None else self.line_bps * self.percent / 100
        return (sizes + ETH_L1_OVERHEAD) * 8 * 1e9 / bps


def _addr(value: str | int | FieldVar, v6: bool) -> FieldVar:
    if isinstance(value, FieldVar):
        return value
    if isinstance(value, str):
        a = ipaddress.ip_address(value)
        if (a.version == 6) != v6:
            raise ValueError(f"address {value} does not match the stream's IP version")
        value = int(a)
    return FieldVar.fixed(int(value))


def _port(value: int | FieldVar) -> FieldVar:
    return value if isinstance(value, FieldVar) else FieldVar.fixed(int(value))


@dataclass
class Stream:
    """One stream of a profile (TRex STLStream). Addresses are strings, ints or FieldVars over ints;
    ports ints or FieldVars; `size` an int, an IMIX name, a FieldVar or (size, weight) pairs.
    `count` packets, or as many as fit in `duration_s`; `burst` packets back to back, then `ibg_ns` of
    silence (TRex multi-burst); `port` is the interface the stream enters the gateway on."""

    saddr: str | int | FieldVar | None = None  # None: 192.168.1.10, or 2001:db8:1::10 for ipv6
    daddr: str | int | FieldVar | None = None  # None: 198.51.100.7, or 2001:db8:ff::7
    sport: int | FieldVar = 1024
    dport: int | FieldVar = 5001
    size: int | str | FieldVar | tuple = 64
    rate: Rate = field(default_factory=lambda: Rate(pps=1e6))
    count: int | None = None
    duration_s: float | None = None
    burst: int | None = None
    ibg_ns: int = 0
    l3: str = "ipv4"
    l4: str = "udp"
    src_mac: str = "02:00:00:00:01:0a"
    dst_mac: str = "02:00:00:00:01:01"
    ttl: int = 64
    start_ns: int = 0
    port: str = "lan0"
    stream_id: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.l3 not in ("ipv4", "ipv6") or self.l4 not in ("udp", "tcp"):
            raise ValueError(f"template {self.l3}/{self.l4}: expected ipv4|ipv6 and udp|tcp")
        if (self.count is None) == (self.duration_s is None):
            raise ValueError("a stream has exactly one of count and duration_s")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1 packet")
        _mac(self.src_mac), _mac(self.dst_mac)
        if self.saddr is None:
            self.saddr = "2001:db8:1::10" if self.v6 else "192.168.1.10"
        if self.daddr is None:
            self.daddr = "2001:db8:ff::7" if self.v6 else "198.51.100.7"
        top = (1 << 128) - 1 if self.v6 else 0xFFFFFFFF
        for what, var in (("saddr", _addr(self.saddr, self.v6)), ("daddr", _addr(self.daddr, self.v6))):
            if not 0 <= var.min <= var.max <= top:
                raise ValueError(f"{what} outside the {self.l3} address space")
        if not 1 <= self.ttl <= 255:
            raise ValueError("ttl is 1..255")

    @property
    def v6(self) -> bool:
        return self.l3 == "ipv6"

    @property
    def min_size(self) -> int:
        """Smallest wire frame carrying this template and the signature."""
        l3 = IPV6_HLEN if self.v6 else L.IPH.size
        l4 = L.UDPH.size if self.l4 == "udp" else TCP_HLEN
        return max(64, L.ETH_HLEN + l3 + l4 + SIG_LEN + ETH_FCS_LEN)

    def packet_count(self) -> int:
        if self.count is not None:
            return int(self.count)
        # a first guess from the mean size, then timestamps decide exactly
        gap = float(self.rate.gaps_ns(np.array([mean_size(self.size)]))[0])
        return max(1, int(self.duration_s * 1e9 / gap * 1.05) + 64)

    def timestamps(self, sizes: np.ndarray) -> np.ndarray:
        """int64[n]: transmit time of each packet (start_ns + the gaps of those before it)."""
        gaps = self.rate.gaps_ns(sizes)
        t = np.concatenate(([0.0], np.cumsum(gaps[:-1]))) if len(gaps) else gaps
        ts = self.start_ns + np.floor(t + 1e-6).astype(np.int64)
        if self.burst is not None:
            ts += (np.arange(len(sizes), dtype=np.int64) // self.burst) * int(self.ibg_ns)
        return ts


@dataclass
class Frames:
    """Generated frames: packet i is flat[off[i] : off[i] + caplen[i]].

    No Linux counterpart.
    flat       uint8[B]   frame bytes, without FCS
    off        int64[n]   start of each frame in flat
    caplen     int64[n]   bytes of each frame (wire size - 4)
    ts_ns      int64[n]   transmit time
    stream_id  int64[n]   stream of each frame
    port       int64[n]   index into `ports` (the interface each frame enters on)
    """

    flat: np.ndarray
    off: np.ndarray
    caplen: np.ndarray
    ts_ns: np.ndarray
    stream_id: np.ndarray
    port: np.ndarray
    ports: list[str]

    def __len__(self) -> int:
        return len(self.off)

    def frame(self, i: int) -> bytes:
        o = int(self.off[i])
        return self.flat[o : o + int(self.caplen[i])].tobytes()

    def take(self, order: np.ndarray) -> Frames:
        """These frames in `order` (the bytes stay where they are; only the index moves)."""
        return Frames(self.flat, self.off[order], self.caplen[order], self.ts_ns[order],
                      self.stream_id[order], self.port[order], self.ports)  # fmt: skip

    @staticmethod
    def concat(parts: list[Frames]) -> Frames:
        """All frames of `parts`, ordered by transmit time (stable: stream order breaks ties)."""
        ports = sorted({p for f in parts for p in f.ports})
        base = np.cumsum([0] + [len(f.flat) for f in parts])
        port = [np.array([ports.index(n) for n in f.ports], np.int64)[f.port] for f in parts]
        joined = Frames(
            np.concatenate([f.flat for f in parts]),
            np.concatenate([f.off + b for f, b in zip(parts, base, strict=False)]),
            np.concatenate([f.caplen for f in parts]),
            np.concatenate([f.ts_ns for f in parts]),
            np.concatenate([f.stream_id for f in parts]),
            np.concatenate(port),
            ports,
        )
        return joined.take(np.argsort(joined.ts_ns, kind="stable"))


def _mac(s: str) -> bytes:
    try:
        b = bytes.fromhex(s.replace(":", ""))
    except ValueError:
        b = b""
    if len(b) != 6:
        raise ValueError(f"bad MAC address {s!r}")
    return b


def _put(buf: np.ndarray, off: int, values: np.ndarray, dtype: str) -> None:
    """Write values into every row at byte `off`, in the wire (big-endian) order of `dtype`."""
    w = np.dtype(dtype).itemsize
    buf[:, off : off + w] = values.astype(dtype).view(np.uint8).reshape(-1, w)


def _fold(s: np.ndarray) -> np.ndarray:
    for _ in range(4):  # 64-bit sums of < 2**20 words fold to 16 bits in at most 4 rounds
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _wordsum(buf: np.ndarray, start: int, end: int) -> np.ndarray:
    """uint64[n]: one's complement partial sum of the big-endian 16-bit words of buf[:, start:end]."""
    return np.ascontiguousarray(buf[:, start:end]).view(">u2").sum(axis=1, dtype=np.uint64)


def build_stream(s: Stream, stream_id: int, meter: Meter = NO_METER) -> Frames:
    """Build every frame of stream `s` (numpy over chunks of CHUNK packets; `meter` advanced by
    packets after each)."""
    n = s.packet_count()
    sizes = frame_sizes(s.size, n)
    if len(sizes) and sizes.min() < s.min_size:
        raise ValueError(f"frame size {int(sizes.min())} below the {s.min_size}-byte minimum of {s.l3}/{s.l4} "
                         "with the signature")  # fmt: skip
    if len(sizes) and sizes.max() > 9018:
        raise ValueError("frame size above 9018 bytes")
    ts = s.timestamps(sizes)
    if s.duration_s is not None:
        keep = int(np.searchsorted(ts, s.start_ns + int(s.duration_s * 1e9), side="left"))
        sizes, ts, n = sizes[:keep], ts[:keep], keep
    caplen = sizes - ETH_FCS_LEN
    v6 = s.v6
    sa, da, sp, dp = _addr(s.saddr, v6), _addr(s.daddr, v6), _port(s.sport), _port(s.dport)
    offs = [v.offsets(n, salt=k + 1) for k, v in enumerate((sa, da, sp, dp))]  # independent draws
    off = np.zeros(n, np.int64)
    np.cumsum(caplen[:-1], out=off[1:])
    flat = np.zeros(int(caplen.sum()), np.uint8)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        rows = _build_chunk(s, sizes[lo:hi] - ETH_FCS_LEN, ts[lo:hi], np.arange(lo, hi, dtype=np.int64),
                            stream_id, (sa, da, sp, dp), [o[lo:hi] for o in offs])  # fmt: skip
        dst = flat[off[lo] : off[lo] + int(caplen[lo:hi].sum())]
        if rows.shape[1] == caplen[lo] and (caplen[lo:hi] == caplen[lo]).all():
            dst[:] = rows.ravel()  # one size: the rows are already packed
        else:
            dst[:] = rows[np.arange(rows.shape[1])[None, :] < caplen[lo:hi, None]]
        meter.advance(hi - lo, hi - lo)
    return Frames(flat, off, caplen, ts, np.full(n, stream_id, np.int64), np.zeros(n, np.int64), [s.port])


def _build_chunk(s: Stream, caplen, ts, seq, stream_id, vars_, offs) -> np.ndarray:
    m = len(caplen)
    width = int(caplen.max()) + 1 & ~1 if m else 0  # even, so the checksum sees whole words
    buf = np.zeros((m, width), np.uint8)
    v6, udp = s.v6, s.l4 == "udp"
    proto = L.IPPROTO_UDP if udp else L.IPPROTO_TCP
    nh = L.ETH_HLEN
    th = nh + (IPV6_HLEN if v6 else L.IPH.size)
    pl = th + (L.UDPH.size if udp else TCP_HLEN)
    buf[:, 0:6] = np.frombuffer(_mac(s.dst_mac), np.uint8)
    buf[:, 6:12] = np.frombuffer(_mac(s.src_mac), np.uint8)
    _put(buf, 12, np.full(m, L.ETH_P_IPV6 if v6 else L.ETH_P_IP), ">u2")
    sa, da, sp, dp = vars_
    if v6:
        buf[:, nh] = 0x60
        _put(buf, nh + 4, caplen - th, ">u2")  # payload_len
        buf[:, nh + 6], buf[:, nh + 7] = proto, s.ttl
        for var, o, at in ((sa, offs[0], nh + 8), (da, offs[1], nh + 24)):
            if var.min >> 64 != var.max >> 64:
                raise ValueError("an IPv6 address range must keep its upper 64 bits")
            buf[:, at : at + 8] = np.frombuffer((var.min >> 64).to_bytes(8, "big"), np.uint8)
            _put(buf, at + 8, np.uint64(var.min & (2**64 - 1)) + o.astype(np.uint64), ">u8")
        csum = _wordsum(buf, nh + 8, nh + 40)
    else:
        buf[:, nh + L.IPH.version_ihl] = 0x45
        _put(buf, nh + L.IPH.tot_len, caplen - nh, ">u2")
        buf[:, nh + L.IPH.ttl], buf[:, nh + L.IPH.protocol] = s.ttl, proto
        _put(buf, nh + L.IPH.saddr, sa.min + offs[0], ">u4")
        _put(buf, nh + L.IPH.daddr, da.min + offs[1], ">u4")
        _put(buf, nh + L.IPH.check, 0xFFFF - _fold(_wordsum(buf, nh, th)), ">u2")
        csum = _wordsum(buf, nh + L.IPH.saddr, nh + L.IPH.saddr + 8)
    _put(buf, th, sp.min + offs[2], ">u2")
    _put(buf, th + 2, dp.min + offs[3], ">u2")
    if udp:
        _put(buf, th + L.UDPH.len, caplen - th, ">u2")
    else:
        buf[:, th + 12], buf[:, th + 13] = 0x50, 0x18  # doff 5, PSH|ACK: a mid-connection segment
        _put(buf, th + 16 - 2, np.full(m, 0xFFFF), ">u2")  # window
    sig_write(buf, pl, stream_id, seq, ts)
    # RFC 768 / RFC 8200 §8.1 pseudo-header: addresses, protocol, L4 length
    csum = csum + proto + (caplen - th).astype(np.uint64) + _wordsum(buf, th, width)
    check = 0xFFFF - _fold(csum)
    if udp:
        check[check == 0] = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
    _put(buf, th + (L.UDPH.check if udp else 16), check, ">u2")
    return buf


def duration_ns(ts_ns: np.ndarray) -> int:
    """Span of a run for rate computations: first to last timestamp plus one mean gap, so that n
    packets sent every g ns measure exactly 1/g pps."""
    n = len(ts_ns)
    if n < 2:
        return 0
    span = int(ts_ns[-1] - ts_ns[0])
    return math.ceil(span * n / (n - 1)) if span else 0

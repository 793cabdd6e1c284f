"""Profiles: a list of streams, from Python or from a TOML file; generation and pcap output.

No Linux counterpart (TRex's STLProfile; pktgen's /proc/net/pktgen scripts).

TOML schema (examples/profiles/*.toml):
    [profile]            name, description (optional)
    [[stream]]           one table per stream:
      name, port            strings; `port` is the interface the stream enters on (default lan0)
      l3, l4                "ipv4" | "ipv6", "udp" | "tcp"
      src_mac, dst_mac      "02:00:00:00:01:0a"
      saddr, daddr          "192.168.1.10" or {min = "...", max = "...", op = "inc"|"dec"|"random",
                            step = 1, init = "...", seed = 0}
      sport, dport          5001 or {min = 1024, max = 2047, op = ..., step, init, seed}
      size                  wire bytes with FCS: 128, "imix" (= "csit-imix"), "trex-imix", or a
                            field table {min = 64, max = 1518, op = "random", seed = 1}
      rate                  {pps = 1e6} | {l1_bps = 1e9} | {percent = 10, line_bps = 10e9}
      count | duration_s    packets, or seconds of packet time
      burst                 {packets = 32, ibg_ns = 100000} (optional)
      ttl, start_ns         optional
      stream_id             optional, 0..65535 (default: the stream's position in the file)
"""

from __future__ import annotations

import ipaddress
import re
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowpath.errors import ConfigError
from flowpath.progress import NO_METER, Meter
from flowpath.trafgen.field import FieldVar
from flowpath.trafgen.imix import frame_sizes
from flowpath.trafgen.stream import Frames, Rate, Stream, build_stream

_STREAM_KEYS = {
    "name", "port", "l3", "l4", "src_mac", "dst_mac", "saddr", "daddr", "sport", "dport", "size", "rate",
    "count", "duration_s", "burst", "ttl", "start_ns", "stream_id",
}  # fmt: skip
PCAP_NSEC_MAGIC, LINKTYPE_ETHERNET = 0xA1B23C4D, 1
_REC = np.dtype([("sec", "<u4"), ("nsec", "<u4"), ("incl_len", "<u4"), ("orig_len", "<u4")])


@dataclass
class Profile:
    """Streams sent together; stream k gets stream id k unless it sets its own."""

    streams: list[Stream]
    name: str = ""
    description: str = ""
    meta: dict = field(default_factory=dict)

    def generate(self, meter: Meter = NO_METER) -> Frames:
        """Every frame of every stream, merged by transmit time (`meter`: one phase, in packets)."""
        ids = [s.stream_id if s.stream_id is not None else k for k, s in enumerate(self.streams)]
        if len(set(ids)) != len(ids) or not all(0 <= i < 1 << 16 for i in ids):
            raise ValueError("stream ids must be distinct and fit 16 bits")
        # a duration's count is an upper estimate (Stream.packet_count): the phase may end short of it
        meter.begin("generating", sum(s.packet_count() for s in self.streams))
        parts = [build_stream(s, i, meter) for s, i in zip(self.streams, ids, strict=True)]
        return parts[0] if len(parts) == 1 else Frames.concat(parts)


def write_frames_pcap(path: str | Path, frames: Frames, chunk: int = 1 << 16, meter: Meter = NO_METER) -> int:
    """Write frames as a nanosecond pcap (orig_len = captured length); return the count.

    Record headers are built with numpy, `chunk` packets at a time, and joined with memoryview slices
    of the frame bytes (no per-packet struct packing or copies). `meter`: one phase, in packets."""
    meter.begin("writing", len(frames))
    mv = memoryview(frames.flat)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", PCAP_NSEC_MAGIC, 2, 4, 0, 0, 0xFFFF, LINKTYPE_ETHERNET))
        for lo in range(0, len(frames), chunk):
            hi = min(len(frames), lo + chunk)
            rec = np.zeros(hi - lo, _REC)
            rec["sec"], rec["nsec"] = np.divmod(frames.ts_ns[lo:hi], 1_000_000_000)
            rec["incl_len"] = rec["orig_len"] = frames.caplen[lo:hi]
            hdr = memoryview(rec.view(np.uint8))
            parts = []
            for k, (o, n) in enumerate(
                zip(frames.off[lo:hi].tolist(), frames.caplen[lo:hi].tolist(), strict=True)
            ):
                parts.append(hdr[16 * k : 16 * k + 16])
                parts.append(mv[o : o + n])
            f.write(b"".join(parts))
            meter.advance(hi - lo, hi - lo)
    return len(frames)


# -- TOML ------------------------------------------------------------------------------------------


def load_profile(path: str | Path) -> Profile:
    """Read a TOML profile; errors raise ConfigError(file, line, col, msg)."""
    path = Path(path)
    text = path.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line, col = (int(m[1]), int(m[2])) if m else (1, 1)
        raise ConfigError(path, line, col, str(e).split(" (at")[0], _line(text, line)) from None
    return profile_from_dict(doc, path, text)


def _line(text: str, line: int) -> str | None:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else None


def _where(text: str, k: int, key: str | None) -> tuple[int, int]:
    """Line and column of `key` in the k-th [[stream]] table (of the table itself when key is None)."""
    lines = text.splitlines()
    heads = [i for i, s in enumerate(lines) if s.strip().startswith("[[stream]]")]
    if k >= len(heads):
        return 1, 1
    end = heads[k + 1] if k + 1 < len(heads) else len(lines)
    for i in range(heads[k], end):
        m = re.match(rf"\s*({re.escape(key)})\s*=", lines[i]) if key else None
        if m:
            return i + 1, m.start(1) + 1
    return heads[k] + 1, 1


def profile_from_dict(doc: dict, path: str | Path = "<profile>", text: str = "") -> Profile:
    """Build a Profile from a parsed TOML document (see the module docstring)."""
    streams = doc.get("stream", [])
    meta = doc.get("profile", {})

    def fail(k: int, key: str | None, msg: str):
        line, col = _where(text, k, key)
        return ConfigError(path, line, col, msg, _line(text, line), len(key) if key else 1)

    if not isinstance(streams, list) or not streams:
        raise ConfigError(path, 1, 1, "a profile needs at least one [[stream]] table")
    out = []
    for k, st in enumerate(streams):
        for key in st:
            if key not in _STREAM_KEYS:
                raise fail(k, key, f"unknown stream key {key!r}; known: {', '.join(sorted(_STREAM_KEYS))}")
        key = None
        try:
            kw = {}
            for key in ("name", "port", "l3", "l4", "src_mac", "dst_mac", "count", "duration_s", "ttl",
                        "start_ns", "stream_id"):  # fmt: skip
                if key in st:
                    kw[key] = st[key]
            for key in ("saddr", "daddr"):
                if key in st:
                    kw[key] = _field(st[key], addr=True)
            for key in ("sport", "dport"):
                if key in st:
                    kw[key] = _field(st[key], addr=False)
                    if not 0 <= kw[key].min <= kw[key].max <= 0xFFFF:
                        raise ValueError("ports are 0..65535")
            key = "size"
            if "size" in st:
                kw["size"] = _field(st["size"], addr=False) if isinstance(st["size"], dict) else st["size"]
            key = "rate"
            if "rate" in st:
                if not isinstance(st["rate"], dict):
                    raise ValueError(
                        "rate is a table: {pps = ...}, {l1_bps = ...} or {percent = ..., line_bps = ...}"
                    )
                kw["rate"] = Rate(**st["rate"])
            key = "burst"
            if "burst" in st:
                b = dict(st["burst"])
                kw["burst"], kw["ibg_ns"] = int(b.pop("packets")), int(b.pop("ibg_ns", 0))
                if b:
                    raise ValueError(f"unknown burst keys {sorted(b)}")
            key = None
            s = Stream(**kw)
            s.packet_count()
            key = "size" if "size" in st else None
            sizes = frame_sizes(s.size, 96)
            if sizes.min() < s.min_size or sizes.max() > 9018:
                raise ValueError(f"frame sizes {int(sizes.min())}..{int(sizes.max())} outside {s.min_size}..9018 "
                                 f"bytes ({s.l3}/{s.l4} with the 18-byte signature, FCS included)")  # fmt: skip
        except (ValueError, TypeError, KeyError) as e:
            raise fail(k, key, str(e)) from None
        out.append(s)
    return Profile(out, str(meta.get("name", "")), str(meta.get("description", "")), dict(meta))


def _value(v, addr: bool) -> int:
    if addr and isinstance(v, str):
        return int(ipaddress.ip_address(v))
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected {'an address' if addr else 'an integer'}, got {v!r}")
    return v


def _field(v, addr: bool) -> FieldVar:
    if not isinstance(v, dict):
        return FieldVar.fixed(_value(v, addr))
    d = dict(v)
    unknown = set(d) - {"min", "max", "op", "step", "init", "seed"}
    if unknown:
        raise ValueError(f"unknown field keys {sorted(unknown)}")
    return FieldVar(_value(d["min"], addr), _value(d["max"], addr), d.get("op", "inc"), int(d.get("step", 1)),
                    _value(d["init"], addr) if "init" in d else None, int(d.get("seed", 0)))  # fmt: skip


def trafgen(profile_path: str | Path, out: str | Path, meter: Meter = NO_METER) -> dict:
    """`flowpath trafgen PROFILE --out FILE.pcap`: generate the profile into a capture; return a summary
    (per stream: id, name, port, packets, wire bytes, first and last transmit time). `meter` follows
    two phases: generating and writing."""
    prof = load_profile(profile_path)
    fr = prof.generate(meter)
    write_frames_pcap(out, fr, meter=meter)
    streams = []
    for k, s in enumerate(prof.streams):
        sid = s.stream_id if s.stream_id is not None else k
        m = fr.stream_id == sid
        ts = fr.ts_ns[m]
        streams.append({"stream_id": sid, "name": s.name, "port": s.port, "packets": int(m.sum()),
                        "bytes": int((fr.caplen[m] + 4).sum()),
                        "first_ts_ns": int(ts.min()) if len(ts) else None,
                        "last_ts_ns": int(ts.max()) if len(ts) else None})  # fmt: skip
    return {"profile": prof.name, "out": str(out), "packets": len(fr), "streams": streams}

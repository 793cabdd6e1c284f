"""A fuzzing campaign over the gateway's public inputs: hostile packets, captures and configs.

    python tests/fuzz/campaign.py [--cases N] [--seed S]

Kinds (N cases each, reproducible from the seed):
- packets   frames mutated from Scapy-built seeds (IPv4/IPv6, TCP/UDP/ICMP, options, fragments, ESP,
            VLAN, ARP): byte flips, truncation, junk appended, headers spliced, replayed in polls of
            random sizes and times through `replay`'s Worker with and without the flowtable, after an
            exchange that offloads flows. Every run: no exception, and rx = forwarded + dropped +
            local + held.
- captures  the bundled pcap/pcapng captures cut and corrupted: a clean CaptureError or records.
- networks  `ip -batch` lines mutated (tokens dropped, swapped, replaced): ConfigError or a network.
- rulesets  the bundled nft rulesets mutated the same way: ConfigError or a ruleset.
Prints one line per kind: cases, outcomes, crashes (any other exception, with the input saved under
--keep DIR). Exit status 1 when a crash or a conservation failure happened.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import traceback
from pathlib import Path

from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, Raw
from scapy.layers.ipsec import ESP

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.errors import CaptureError, ConfigError
from flowpath.packet.batch import PacketBatch
from flowpath.ports.pcap import read_capture

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GW_LAN, GW_WAN, H10, UP = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:01:0a", "02:00:00:00:02:fe"
T0 = 1_700_000_000_000_000_000


def seeds() -> list[tuple[int, bytes]]:
    """(input ifindex, frame): lan0 is 2, wan0 3 in the example network."""
    lan, wan = Ether(src=H10, dst=GW_LAN), Ether(src=UP, dst=GW_WAN)
    c, s = "192.168.1.10", "198.51.100.7"
    big = IP(src=c, dst=s, id=7) / UDP(sport=5000, dport=53) / Raw(bytes(range(256)) * 8)
    frames = [
        (2, lan / IP(src=c, dst=s) / UDP(sport=5000, dport=53) / Raw(b"q" * 30)),
        (3, wan / IP(src=s, dst="203.0.113.1") / UDP(sport=53, dport=5000) / Raw(b"r" * 30)),
        (2, lan / IP(src=c, dst=s) / TCP(sport=4000, dport=80, flags="S")),
        (3, wan / IP(src=s, dst="203.0.113.1") / TCP(sport=80, dport=4000, flags="SA", ack=1)),
        (2, lan / IP(src=c, dst=s, options=b"\x07\x07\x04\x00\x00\x00\x00\x00") / UDP() / Raw(b"o")),
        (2, lan / IP(src=c, dst="192.168.1.1") / ICMP() / Raw(b"ping")),
        (2, lan / IP(src=c, dst=s, ttl=1) / UDP()),
        (2, lan / IPv6(src="2001:db8:1::10", dst="2001:db8:2::1") / IPv6ExtHdrHopByHop() / UDP() / Raw(b"x" * 9)),
        (2, lan / IPv6(src="2001:db8:1::10", dst="2001:db8:2::1") / IPv6ExtHdrFragment(m=1, id=3) / UDP()),
        (3, wan / IP(src=s, dst="203.0.113.1") / ESP(spi=0x2002, seq=1) / Raw(bytes(40))),
        (3, wan / IP(src=s, dst="203.0.113.1") / UDP(sport=4500, dport=4500) / Raw(b"\x00" * 12)),
        (2, Ether(src=H10, dst=GW_LAN) / Dot1Q(vlan=5) / IP(src=c, dst=s) / UDP()),
        (2, Ether(src=H10, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=c, pdst="192.168.1.1", hwsrc=H10)),
    ]
    frames += [(2, lan / f) for f in __import__("scapy.all").all.fragment(big, 400)]
    return [(ifx, bytes(f)) for ifx, f in frames]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:  # flip bytes, header-heavy
            for _ in range(rng.randint(1, 6)):
                i = min(len(b) - 1, int(rng.expovariate(1 / 30)))
                b[i] ^= rng.randint(1, 255)
        elif op == 1:
            b = b[: rng.randint(0, len(b))]
        elif op == 2:
            b += rng.randbytes(rng.randint(1, 40))
        elif op == 3 and pool:  # splice another frame's tail at a random point
            o = rng.choice(pool)
            b = b[: rng.randint(0, len(b))] + o[rng.randint(0, len(o)) :]
        elif b:  # set a field to an edge value
            i = rng.randrange(len(b))
            b[i] = rng.choice((0, 1, 0x45, 0x7F, 0x80, 0xFF))
    return bytes(b)


def conserved(w: Worker) -> bool:
    s = w.stats.as_dict(w.ifname)
    return s["rx_packets"] == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]


def fuzz_packets(rng: random.Random, cases: int, keep: Path) -> dict:
    net = lambda: parse_network((EXAMPLES / "gateway.ip").read_text(), "gateway.ip")  # noqa: E731
    rules = lambda: parse_ruleset((EXAMPLES / "gateway.nft").read_text(), "gateway.nft")  # noqa: E731
    pool = seeds()
    frames = [f for _, f in pool]
    workers = {ft: Worker(net(), rules(), flowtable=ft) for ft in (True, False)}
    out = {"cases": 0, "packets": 0, "crashes": 0, "conservation failures": 0}
    now = T0
    for k in range(cases):
        polls = []
        for _ in range(rng.randint(1, 3)):
            batch = []
            for _ in range(rng.randint(1, 24)):
                ifx, f = rng.choice(pool)
                batch.append((ifx if rng.random() > 0.05 else rng.randint(0, 5), mutate(rng, f, frames)
                              if rng.random() < 0.8 else f))  # fmt: skip
            polls.append(batch)
        now += rng.choice((1_000, 1_000_000, 400_000_000, 31_000_000_000))  # idle gaps expire flows, queues
        for ft, w in workers.items():
            try:
                t = now
                for batch in polls:
                    b = PacketBatch(64)
                    for ifx, f in batch:
                        b.append(f, ifx, t)
                        t += rng.choice((0, 1000))
                    w.rx_batch(b)
                    out["packets"] += len(batch)
                if not conserved(w):
                    out["conservation failures"] += 1
            except Exception:  # noqa: BLE001 - a crash is what the campaign looks for
                out["crashes"] += 1
                (keep / f"packets-{k}-{ft}.txt").write_text(repr(polls) + "\n" + traceback.format_exc())
        out["cases"] += 1
    return out


def _mutate_lines(rng: random.Random, text: str) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        toks = lines[i].split(" ")
        op = rng.randrange(5)
        if op == 0 and len(toks) > 1:
            del toks[rng.randrange(len(toks))]
        elif op == 1 and len(toks) > 1:
            a, b = rng.randrange(len(toks)), rng.randrange(len(toks))
            toks[a], toks[b] = toks[b], toks[a]
        elif op == 2:
            toks[rng.randrange(len(toks))] = rng.choice(["", "{", "}", ";", "0", "-1", "99999999999", "::", "ff" * 9,
                                                          "1.2.3.4/33", "dev", "@x", '"', "\\", "add", "é"])  # fmt: skip
        elif op == 3:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:
            lines[i] = lines[i][: rng.randint(0, len(lines[i]))]
        lines[i] = " ".join(toks) if op < 3 else lines[i]
    return "\n".join(lines) + "\n"


def fuzz_configs(rng: random.Random, cases: int, keep: Path, kind: str) -> dict:
    if kind == "networks":
        texts = [p.read_text() for p in (ROOT / "tests" / "data" / "net").glob("*.ip")] + [
            (EXAMPLES / "gateway.ip").read_text()]  # fmt: skip
        parse = lambda t: parse_network(t, "fuzz.ip")  # noqa: E731
    else:
        texts = [p.read_text() for p in (ROOT / "tests" / "data" / "nft").glob("*.nft")]
        parse = lambda t: parse_ruleset(t, "fuzz.nft")  # noqa: E731
    out = {"cases": 0, "accepted": 0, "config errors": 0, "crashes": 0}
    for k in range(cases):
        text = _mutate_lines(rng, rng.choice(texts))
        try:
            parse(text)
            out["accepted"] += 1
        except ConfigError:
            out["config errors"] += 1
        except Exception:  # noqa: BLE001
            out["crashes"] += 1
            (keep / f"{kind}-{k}.txt").write_text(text + "\n" + traceback.format_exc())
        out["cases"] += 1
    return out


def fuzz_captures(rng: random.Random, cases: int, keep: Path) -> dict:
    files = [p.read_bytes() for p in (ROOT / "tests" / "data" / "captures").glob("*.pcap*")]
    files += [(EXAMPLES / "lan.pcap").read_bytes()]
    out = {"cases": 0, "read": 0, "capture errors": 0, "crashes": 0}
    with tempfile.TemporaryDirectory() as d:
        for k in range(cases):
            b = bytearray(rng.choice(files))
            for _ in range(rng.randint(1, 5)):
                if rng.random() < 0.3:
                    b = b[: rng.randint(0, len(b))]
                elif b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
            p = Path(d) / f"c{k}.pcap"
            p.write_bytes(bytes(b))
            try:
                for _ in read_capture(p):
                    pass
                out["read"] += 1
            except CaptureError:
                out["capture errors"] += 1
            except Exception:  # noqa: BLE001
                out["crashes"] += 1
                (keep / f"capture-{k}.pcap").write_bytes(bytes(b))
            out["cases"] += 1
    return out


def campaign(cases: int, seed: int, keep: Path) -> dict[str, dict]:
    rng = random.Random(seed)
    keep.mkdir(parents=True, exist_ok=True)
    return {
        "packets": fuzz_packets(rng, cases, keep),
        "captures": fuzz_captures(rng, cases, keep),
        "networks": fuzz_configs(rng, cases, keep, "networks"),
        "rulesets": fuzz_configs(rng, cases, keep, "rulesets"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000, help="cases per kind (default 1000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "flowpath-fuzz")
    a = ap.parse_args(argv)
    res = campaign(a.cases, a.seed, a.keep)
    bad = 0
    for kind, r in res.items():
        print(f"{kind:9} " + ", ".join(f"{k} {v}" for k, v in r.items()))
        bad += r.get("crashes", 0) + r.get("conservation failures", 0)
    if bad:
        print(f"inputs kept in {a.keep}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

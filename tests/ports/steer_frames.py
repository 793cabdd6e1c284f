"""Test helpers: frames of every kind packet/steer.py hashes, and a classic BPF interpreter that runs
the steering program on a frame as the kernel shows it to a fanout program.

No Linux counterpart (net/core/filter.c › ___bpf_prog_run after bpf_convert_filter, reduced to the
instructions a classic program has; net/ethernet/eth.c › eth_type_trans and net/core/skbuff.c ›
skb_vlan_untag for what the program sees).
"""

from __future__ import annotations

import random
import struct

from scapy.all import (
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    Raw,
    fragment,
)
from scapy.layers.ipsec import ESP

from flowpath.ports.fanout import (
    BPF_ABS,
    BPF_ALU,
    BPF_B,
    BPF_H,
    BPF_IMM,
    BPF_IND,
    BPF_JMP,
    BPF_LD,
    BPF_LDX,
    BPF_LEN,
    BPF_MEM,
    BPF_MISC,
    BPF_RET,
    BPF_ST,
    BPF_STX,
    BPF_X,
    SKF_AD_OFF,
    SKF_AD_PROTOCOL,
    SKF_AD_VLAN_TAG_PRESENT,
)

PORT_MAC, PEER_MAC = "02:00:00:00:aa:01", "02:00:00:00:bb:02"
TAGS = (0x8100, 0x88A8)
M32 = 0xFFFFFFFF


def kernel_view(frame: bytes) -> tuple[bytes, int, bool]:
    """(skb data, skb->protocol, vlan tag present) when a fanout program runs on `frame` received
    whole: eth_type_trans pulled 14 bytes, skb_vlan_untag took one outer tag (it drops a frame with
    fewer than VLAN_HLEN + 2 bytes after the Ethernet header: no tap sees that one)."""
    proto, data = int.from_bytes(frame[12:14], "big"), frame[14:]
    if proto in TAGS:
        assert len(data) >= 6, "skb_vlan_untag drops this frame"
        return data[4:], int.from_bytes(data[2:4], "big"), True
    return data, proto, False


_ALU = {
    0x00: lambda a, b: a + b, 0x10: lambda a, b: a - b, 0x20: lambda a, b: a * b,
    0x30: lambda a, b: a // b, 0x40: lambda a, b: a | b, 0x50: lambda a, b: a & b,
    0x60: lambda a, b: a << b, 0x70: lambda a, b: a >> b, 0x90: lambda a, b: a % b,
    0xA0: lambda a, b: a ^ b,
}  # fmt: skip
_JMP = {
    0x10: lambda a, b: a == b,
    0x20: lambda a, b: a > b,
    0x30: lambda a, b: a >= b,
    0x40: lambda a, b: a & b,
}


def run_cbpf(prog, data: bytes, protocol: int, vlan_present: bool) -> int:
    """What the program returns on a skb whose data is `data`: 0 when a load runs past the end."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        cls, pc = code & 7, pc + 1
        if cls in (BPF_LD, BPF_LDX):
            mode, size = code & 0xE0, {0: 4, BPF_H: 2, BPF_B: 1}[code & 0x18]
            if mode == BPF_IMM:
                v = k
            elif mode == BPF_LEN:
                v = len(data)
            elif mode == BPF_MEM:
                v = mem[k]
            elif mode in (BPF_ABS, BPF_IND):
                off = k - (1 << 32) if k & 0x80000000 else k
                if mode == BPF_IND:
                    off += x
                if mode == BPF_ABS and off >= SKF_AD_OFF and off < 0:
                    v = {SKF_AD_PROTOCOL: protocol, SKF_AD_VLAN_TAG_PRESENT: int(vlan_present)}[
                        off - SKF_AD_OFF
                    ]
                elif 0 <= off and off + size <= len(data):
                    v = int.from_bytes(data[off : off + size], "big")
                else:
                    return 0
            else:  # BPF_MSH is not used by the steering program
                raise AssertionError(f"load mode {mode:#x}")
            if cls == BPF_LD:
                a = v
            else:
                x = v
        elif cls == BPF_ST:
            mem[k] = a
        elif cls == BPF_STX:
            mem[k] = x
        elif cls == BPF_ALU:
            b = x if code & BPF_X else k
            a = _ALU[code & 0xF0](a, b) & M32
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == 0:
                pc += k
            else:
                pc += jt if _JMP[op](a, x if code & BPF_X else k) else jf
        elif cls == BPF_RET:
            return a if code & 0x18 == 0x10 else k
        elif cls == BPF_MISC:
            if code & 0xF8 == 0:
                x = a
            else:
                a = x
        else:
            raise AssertionError(f"class {cls}")


def _ports_l4(proto: int, sport: int, dport: int, rest: bytes = b"\0" * 8) -> Raw:
    return Raw(struct.pack("!HH", sport, dport) + rest)


def steer_frames(seed: int = 0) -> list[bytes]:
    """A few hundred distinct frames: TCP/UDP/UDP-Lite/SCTP/DCCP flows in both directions, IPv4
    fragments, IPv4 options, ICMP/ICMPv6 echo and non-echo, ESP (IPv4/IPv6) with various SPIs, 802.1Q,
    802.1ad and three-tag frames, ARP, IPv6 with extension headers, and cut-short headers."""
    rnd = random.Random(seed)
    eth = Ether(dst=PORT_MAC, src=PEER_MAC)
    out: list = []

    def v4() -> str:
        return f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"

    def v6() -> str:
        return "2001:db8:" + ":".join(f"{rnd.randrange(1 << 16):x}" for _ in range(6))

    for i in range(24):  # flows both ways, IPv4 and IPv6
        s4, d4, s6, d6 = v4(), v4(), v6(), v6()
        sp, dp = rnd.randrange(1024, 65536), rnd.choice((80, 443, 53, 4500, rnd.randrange(65536)))
        for src, dst, ip in ((s4, d4, IP), (s6, d6, IPv6)):
            for a, b, p, q in ((src, dst, sp, dp), (dst, src, dp, sp)):
                out.append(eth / ip(src=a, dst=b) / TCP(sport=p, dport=q, flags="A", seq=i))
                out.append(eth / ip(src=a, dst=b) / UDP(sport=p, dport=q) / Raw(b"x" * (i % 7)))
                proto = (33, 132, 136)[i % 3]  # DCCP, SCTP, UDP-Lite: ports first
                hdr = dict(proto=proto) if ip is IP else dict(nh=proto)
                out.append(eth / ip(src=a, dst=b, **hdr) / _ports_l4(proto, p, q))
    for i in range(12):  # IPv4 fragments: the first has ports, none is hashed on them
        pkt = IP(src=v4(), dst=v4(), id=i + 1) / UDP(sport=rnd.randrange(65536), dport=53) / Raw(b"f" * 1200)
        out += [eth / f for f in fragment(pkt, fragsize=512)]
    for i in range(10):  # IPv4 options (ihl 6..15)
        opts = b"\x01" * (4 * (1 + i % 10))
        out.append(eth / IP(src=v4(), dst=v4(), options=[Raw(opts)]) / UDP(sport=i, dport=999))
    for i in range(16):  # echo both ways, non-echo
        a, b, ident = v4(), v4(), rnd.randrange(65536)
        out.append(eth / IP(src=a, dst=b) / ICMP(type=8, id=ident, seq=i))
        out.append(eth / IP(src=b, dst=a) / ICMP(type=0, id=ident, seq=i))
        out.append(eth / IP(src=a, dst=b) / ICMP(type=3, code=1) / Raw(b"\0" * 28))
        a, b = v6(), v6()
        out.append(eth / IPv6(src=a, dst=b) / ICMPv6EchoRequest(id=ident, seq=i))
        out.append(eth / IPv6(src=b, dst=a) / ICMPv6EchoReply(id=ident, seq=i))
        out.append(eth / IPv6(src=a, dst=b) / ICMPv6DestUnreach() / Raw(b"\0" * 48))
    for i in range(16):  # ESP: the SPI alone steers
        spi = rnd.randrange(1, 1 << 32)
        out.append(eth / IP(src=v4(), dst=v4()) / ESP(spi=spi, seq=i + 1) / Raw(b"e" * 40))
        out.append(eth / IPv6(src=v6(), dst=v6()) / ESP(spi=spi, seq=i + 1) / Raw(b"e" * 40))
    for i in range(12):  # tagged: one tag (the kernel strips it), two, three (steer.py gives up)
        inner = IP(src=v4(), dst=v4()) / UDP(sport=rnd.randrange(65536), dport=5000 + i)
        inner6 = IPv6(src=v6(), dst=v6()) / TCP(sport=rnd.randrange(65536), dport=22)
        out.append(eth / Dot1Q(vlan=100 + i) / inner)
        out.append(eth / Dot1Q(vlan=100 + i) / inner6)
        out.append(
            Ether(dst=PORT_MAC, src=PEER_MAC, type=0x88A8) / Dot1AD(vlan=i + 1) / Dot1Q(vlan=7) / inner
        )
        out.append(eth / Dot1Q(vlan=i + 1) / Dot1Q(vlan=7) / inner6)
        out.append(eth / Dot1Q(vlan=i + 1) / Dot1Q(vlan=7) / Dot1Q(vlan=8) / inner)
    # ARP, IPv6 extension headers, IPv4 protocol 58 and IPv6 nexthdr 1 (echo types go by family)
    for i in range(8):
        out.append(eth / ARP(op=1, psrc=v4(), pdst=v4(), hwsrc=PEER_MAC))
        out.append(eth / IPv6(src=v6(), dst=v6()) / IPv6ExtHdrHopByHop() / UDP(sport=i, dport=53))
        out.append(eth / IPv6(src=v6(), dst=v6()) / IPv6ExtHdrFragment(m=1, id=i) / UDP(sport=i, dport=53))
        out.append(
            eth / IP(src=v4(), dst=v4(), proto=58) / Raw(bytes((8 if i % 2 else 128, 0, 0, 0, i, 7, 0, 1)))
        )
        out.append(
            eth / IPv6(src=v6(), dst=v6(), nh=1) / Raw(bytes((129 if i % 2 else 0, 0, 0, 0, i, 9, 0, 1)))
        )
    for i in range(8):  # IP-in-IP (4 and 41, either outer family): hashed on the inner header, one level
        sp = rnd.randrange(65536)
        inners = (IP(src=v4(), dst=v4()) / TCP(sport=sp, dport=443), IPv6(src=v6(), dst=v6()) / UDP(sport=sp, dport=53),
                  IP(src=v4(), dst=v4()) / ICMP(type=8, id=sp), IPv6(src=v6(), dst=v6()) / ICMPv6EchoReply(id=sp),
                  IP(src=v4(), dst=v4()) / ESP(spi=sp + 1) / Raw(b"e" * 16),
                  IP(src=v4(), dst=v4(), flags="MF") / UDP(sport=sp, dport=53),
                  IP(src=v4(), dst=v4()) / IP(src=v4(), dst=v4()) / UDP(sport=sp, dport=53))  # fmt: skip
        inner = inners[i % len(inners)]
        proto = 4 if isinstance(inner, IP) else 41
        out.append(eth / IP(src=v4(), dst=v4(), proto=proto) / inner)
        out.append(eth / IPv6(src=v6(), dst=v6(), nh=proto) / inner)
        out.append(
            eth / Dot1Q(vlan=9) / IP(src=v4(), dst=v4(), proto=proto, options=[Raw(b"\x01" * 4)]) / inner
        )
        out.append(eth / IP(src=v4(), dst=v4(), proto=proto, flags="MF") / inner)  # an outer fragment
    raw = [bytes(p) for p in out]
    cut = []  # cut short: within the IP header, within a tag, in L4 headers (TCP, ESP, echo), inner headers
    for k, f in enumerate(raw[:: max(1, len(raw) // 40)] + raw[-32:]):
        proto = int.from_bytes(f[12:14], "big")
        for n in (18 + k % 20, 14 + 20 + 2, 14 + 40 + 3, 14 + 20 + 5, 18 + 2, 14 + 20 + 17, 14 + 40 + 41):
            if 14 < n < len(f) and not (proto in TAGS and n < 20):  # skb_vlan_untag drops these
                cut.append(f[:n])
    return list(dict.fromkeys(raw + cut))  # distinct, in order

"""Load the datapath's compiled kernels before a live gateway says it is ready.

No Linux counterpart (a kernel module is linked before it is loaded). numba compiles a kernel, or
loads it from its cache, on its first call in a process: left to the first live packets, that holds
a ping for a second, and an ARP request for many (minutes of backlog on a cold cache). So `flowpath
run` first forwards a few flows both ways through an in-memory copy of the benchmark gateway
(flowpath.bench.setup: NAT, a flowtable), slow path then fast path, with its LAN host's address
resolved by ARP, and asks it what a host asks a gateway (ARP, Neighbour Solicitation, echo, both
families); with SAs configured, the same through the IPsec benchmark's pair of gateways.
"""

from __future__ import annotations

import struct

from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.csum import csum_partial, l4_csum, st16
from flowpath.packet.skb import frame_array

WARM_FLOWS = 4
LAN6, HOST6 = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db800000000000000000000000a")
BCAST = b"\xff" * 6


def warm_datapath(bulk: bool = True, ipsec: bool = False) -> None:
    """Run every path a live gateway's first packets take (see the module's docstring)."""
    from flowpath.bench import setup as S
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker

    # the benchmark gateway, its LAN host left to ARP, IPv6 on its LAN
    net = S.NET.replace("neigh add 10.0.0.2 lladdr 02:00:00:00:01:02 dev lan0\n", "")
    net += "addr add 2001:db8::1/64 dev lan0\n"
    w = Worker(parse_network(net, "<warm>"), parse_ruleset(S.RULES, "<warm>"), bulk=bulk)
    up, down = S.flow_frames(WARM_FLOWS, 128)
    host, gw = S.CLIENT_MAC, S.GW_LAN
    asks = [_arp(1, host, S.CLIENT, BCAST, 0x0A000001), _ns(host, gw), _echo4(host, gw), _echo6(host, gw)]
    ts = 1_000_000_000
    for frames, iif in ((up, S.LAN_IF), (down, S.WAN_IF), ([_arp(2, host, S.CLIENT, gw, 0x0A000001)], S.LAN_IF),
                        (asks, S.LAN_IF), (up, S.LAN_IF), (down, S.WAN_IF), (up, S.LAN_IF)):  # fmt: skip
        _poll(w, frames, iif, ts)
        ts += 1_000_000
    if ipsec:
        from flowpath.bench.ipsec import IpsecPair, establish

        establish(IpsecPair.build(bulk=bulk), WARM_FLOWS)


def _poll(w, frames: list[bytes], iif: int, ts_ns: int) -> None:
    batch = PacketBatch(max(1, len(frames)))
    for f in frames:
        batch.append(f, iif, ts_ns)
    w.poll(batch).frames()


def _arp(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    """An Ethernet ARP request (to broadcast) or reply (RFC 826)."""
    body = struct.pack(">HHBBH6sI6sI", 1, L.ETH_P_IP, 6, 4, op, sha, spa, bytes(6) if op == 1 else tha, tpa)
    return tha + sha + struct.pack(">H", L.ETH_P_ARP) + body


def _echo4(src_mac: bytes, dst_mac: bytes) -> bytes:
    """An ICMP echo request from the LAN host to the gateway."""
    icmp = bytearray(struct.pack(">BBHHH", 8, 0, 0, 1, 1) + bytes(32))
    st16(icmp, 2, (~csum_partial(frame_array(bytes(icmp)), 0, len(icmp), 0)) & 0xFFFF)
    ip = bytearray(struct.pack(">BBHHHBBHII", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, 0x0A000002, 0x0A000001))
    st16(ip, 10, (~csum_partial(frame_array(bytes(ip)), 0, 20, 0)) & 0xFFFF)
    return dst_mac + src_mac + struct.pack(">H", L.ETH_P_IP) + bytes(ip) + bytes(icmp)


def _icmp6(src_mac: bytes, dst_mac: bytes, dst: bytes, icmp: bytes) -> bytes:
    """IPv6 (hop limit 255, as ND requires) / ICMPv6 from the LAN host, its checksum set."""
    b = frame_array(dst_mac + src_mac + struct.pack(">H", L.ETH_P_IPV6)
                    + struct.pack(">IHBB", 0x60000000, len(icmp), 58, 255) + HOST6 + dst + icmp)  # fmt: skip
    nh, th = L.ETH_HLEN, L.ETH_HLEN + 40
    st16(b, th + 2, l4_csum(b, nh, th, len(icmp), True, 58, 2))
    return b.tobytes()


def _ns(src_mac: bytes, gw_mac: bytes) -> bytes:
    """A Neighbour Solicitation for the gateway's address, with the host's link-layer address."""
    solicited = bytes.fromhex("ff0200000000000000000001ff") + LAN6[-3:]
    icmp = struct.pack(">BBHI", L.NDISC_NEIGHBOUR_SOLICITATION, 0, 0, 0) + LAN6 + b"\x01\x01" + src_mac
    return _icmp6(src_mac, b"\x33\x33" + solicited[-4:], solicited, icmp)


def _echo6(src_mac: bytes, gw_mac: bytes) -> bytes:
    return _icmp6(src_mac, gw_mac, LAN6, struct.pack(">BBHHH", 128, 0, 0, 1, 1) + bytes(32))

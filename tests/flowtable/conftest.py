"""Shared builders for the flowtable tests: Scapy frames, flows added through the Python API, and a
plain-Python (Scapy) reference of the hit path (nf_flow_offload_forward) to compare the kernels with.
"""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from flowpath.flowtable import F_DNAT, F_SNAT, FlowRoute, Flowtable, FlowTuple, nf_flow_offload_hook
from flowpath.packet.batch import PacketBatch

MAC_C, MAC_GW_IN = "02:00:00:00:0c:01", "02:00:00:00:00:01"  # client side
MAC_GW_OUT, MAC_S = "02:00:00:00:00:02", "02:00:00:00:0s:01".replace("s", "5")  # server side
IIF_C, IIF_S = 1, 2


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def addr(s: str) -> int:
    return int(ipaddress.ip_address(s))


def flow(
    ft: Flowtable,
    l3: int = 4,
    l4: int = 17,
    c: str = "10.0.0.2",
    s: str = "198.51.100.7",
    cport: int = 40000,
    sport: int = 53,
    snat: tuple[str, int] | None = None,
    dnat: tuple[str, int] | None = None,
    mtu: int = 1500,
    vlan_out: int = -1,
    now_ns: int = 0,
    ct: object = "ct",
):
    """Offload a flow client c:cport -> server s:sport as conntrack would describe it.

    snat = (addr, port) the client is translated to; dnat = (addr, port) the server really is.
    Returns (flow id, orig tuple, reply tuple).
    """
    n_addr, n_port = snat if snat else (c, cport)
    d_addr, d_port = dnat if dnat else (s, sport)
    orig = FlowTuple(IIF_C, l3, l4, addr(c), addr(s), cport, sport)
    # vlan_out: the server side is a VLAN (TCI vlan_out) on IIF_S: replies arrive with that tag, and
    # the original direction pushes it (the reverse tuple's encap[])
    tags = ((0x8100, vlan_out),) if vlan_out >= 0 else ()
    reply = FlowTuple(IIF_S, l3, l4, addr(d_addr), addr(n_addr), d_port, n_port, vlan=tags)
    r_orig = FlowRoute(IIF_S, mtu, mac(MAC_GW_OUT), mac(MAC_S))
    r_reply = FlowRoute(IIF_C, mtu, mac(MAC_GW_IN), mac(MAC_C))
    nat = (F_SNAT if snat else 0) | (F_DNAT if dnat else 0)
    fid = ft.flow_offload_add(orig, reply, r_orig, r_reply, nat, ct, now_ns)
    return fid, orig, reply


def pkt(
    t: FlowTuple, l4flags: str = "A", ttl: int = 64, payload: bytes = b"x" * 20, dst_mac=MAC_GW_IN, udp0=False
):
    """A Scapy frame carrying tuple t (as seen on the wire)."""
    ip = (IP if t.l3proto == 4 else IPv6)(
        src=str(ipaddress.ip_address(t.saddr)), dst=str(ipaddress.ip_address(t.daddr))
    )
    if t.l3proto == 4:
        ip.ttl = ttl
    else:
        ip.hlim = ttl
    if t.l4proto == 6:
        l4 = TCP(sport=t.sport, dport=t.dport, flags=l4flags, seq=1000, ack=2000)
    else:
        l4 = UDP(sport=t.sport, dport=t.dport)
        if udp0:
            l4.chksum = 0
    eth = Ether(dst=dst_mac, src="02:00:00:00:aa:aa")
    for proto, tci in t.vlan:  # the tuple's encap[]: the tags it arrives with, outer first
        eth = eth / (Dot1Q if proto == 0x8100 else Dot1AD)(vlan=tci & 0xFFF, prio=tci >> 13)
    return eth / ip / l4 / payload


def batch_of(*frames, iif=IIF_C, slot=512, headroom=64) -> PacketBatch:
    b = PacketBatch(max(4, len(frames)), slot=slot, headroom=headroom)
    for f in frames:
        b.append(bytes(f), iif, 0)
    return b


def ref_forward(frame: bytes, ft: Flowtable, entry: int) -> bytes:
    """Plain-Python reference of a hit, with Scapy: what nf_flow_offload_forward + xmit emit.

    NAT values from the opposite direction's tuple (nf_flow_snat_ip/dnat_ip and ports), TTL or
    hop limit - 1, checksums recomputed by Scapy (a zero UDP checksum over IPv4 stays zero), frame
    trimmed to the IP length, link-layer header from the route (+ the reverse tuple's VLAN tags).
    """
    d = {x["entry"]: x for x in ft.entries()}
    me, other = d[entry], d[entry ^ 1]
    p = Ether(frame)
    ip = p[IP] if IP in p else p[IPv6]
    l4 = ip.payload
    udp0 = isinstance(l4, UDP) and l4.chksum == 0
    src = (me["dir"] == 0 and me["flags"] & F_SNAT) or (me["dir"] == 1 and me["flags"] & F_DNAT)
    dst = (me["dir"] == 0 and me["flags"] & F_DNAT) or (me["dir"] == 1 and me["flags"] & F_SNAT)
    if src:
        ip.src, l4.sport = other["daddr"], other["dport"]
    if dst:
        ip.dst, l4.dport = other["saddr"], other["sport"]
    if IP in p:
        ip.ttl -= 1
        del ip.chksum
        tot = ip.len
    else:
        ip.hlim -= 1
        tot = 40 + ip.plen
    del l4.chksum
    out = Ether(dst=me["h_dest"], src=me["h_source"])
    for proto, tci in other["vlan"] if me["xmit_encap"] else ():
        out = out / (Dot1Q if proto == 0x8100 else Dot1AD)(vlan=tci & 0xFFF, prio=tci >> 13)
    raw = bytes(out / ip)
    raw = raw[: len(raw) - len(bytes(ip)) + tot]
    if udp0:  # zero means no checksum (RFC 768); Linux leaves it zero, over IPv6 too
        q = Ether(raw)
        q[UDP].chksum = 0
        raw = bytes(q)
    return raw


@pytest.fixture
def ftk():
    """The builders above, as a namespace (importlib mode cannot import sibling modules)."""
    return SimpleNamespace(
        flow=flow, pkt=pkt, batch_of=batch_of, ref_forward=ref_forward, mac=mac, addr=addr,
        hook=nf_flow_offload_hook, IIF_C=IIF_C, IIF_S=IIF_S, MAC_GW_OUT=MAC_GW_OUT, MAC_S=MAC_S,
        MAC_GW_IN=MAC_GW_IN, MAC_C=MAC_C,
    )  # fmt: skip

"""Mixed gateway traces for differential tests (flowtable vs classic path), deterministic per seed.

Traffic for examples/gateway.ip with tests/data/gateway/dnat.nft: many UDP and TCP flows through
masquerade (both directions), port-forwarded (DNAT) TCP and UDP, TCP handshakes, FIN and RST closes
and re-opened tuples, TTL 1 and 2 packets inside established flows, oversize packets with and without
DF, IPv6 flows, and idle gaps longer than the flowtable timeout (30 s).
With encap=True (for tests/data/gateway/encap.ip and encap.nft), also flows from an 802.1Q VLAN
(lan0.10) and a QinQ VLAN (802.1ad 100, then 802.1Q 200: lan0.100.200), some of their frames with
priority bits (another encap id: Linux's key holds the whole TCI), and flows through the IPIP tunnel
tun0 (inner not NATed; the peer's outer packets arrive on wan0, some with an outer TTL of 1).
"""

from __future__ import annotations

import random

from scapy.all import IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, Raw

GW_LAN, GW_WAN = "02:00:00:00:01:01", "02:00:00:00:02:01"
UPSTREAM = "02:00:00:00:02:fe"
HOSTS = {"192.168.1.10": "02:00:00:00:01:0a", "192.168.1.11": "02:00:00:00:01:0b"}
WAN_IP = "203.0.113.1"
TUN_PEER = "198.51.100.77"  # encap.ip's tunnel remote
VLAN_HOSTS = {"vlan": ("192.168.10.10", "02:00:00:00:10:0a"), "qinq": ("192.168.20.10", "02:00:00:00:20:0a")}


class _Flow:
    """One connection's endpoints as the LAN side and the Internet side see them."""

    def __init__(self, rng: random.Random, proto: str, k: int, v6: bool = False, dnat: bool = False,
                 encap: str = ""):  # fmt: skip
        self.proto, self.v6, self.dnat, self.encap, self.rng = proto, v6, dnat, encap, rng
        self.host = "192.168.1.10" if k % 2 == 0 else "192.168.1.11"
        self.mac = HOSTS[self.host]
        if encap in VLAN_HOSTS:
            self.host, self.mac = VLAN_HOSTS[encap]
        self.sport = 20000 + k  # unique per flow: masquerade keeps it, so replies are predictable
        self.server = f"198.51.100.{1 + k % 200}" if k % 3 else f"192.0.2.{1 + k % 200}"
        if encap == "ipip":
            self.server = f"10.2.{k % 7}.{1 + k % 200}"
        self.dport = rng.choice([53, 80, 443, 5001])
        self.seq_c, self.seq_s = rng.randrange(1 << 31), rng.randrange(1 << 31)
        if v6:
            self.host6, self.server6 = "2001:db8:1::10", f"2001:db8:2::{k + 1:x}"
        if dnat:  # an Internet client reaching a LAN server through the port forward
            self.client = f"198.51.100.{200 + k % 50}"
            self.cport = 30000 + k
            self.fwd_port, self.lan_server = (
                (2222, "192.168.1.10") if proto == "tcp" else (5353, "192.168.1.11")
            )

    def up(self, payload: bytes, ttl: int = 64, flags: str = "", df: bool = False):
        """LAN -> Internet (or, for DNAT flows, the LAN server's reply)."""
        if self.dnat:
            ip = IP(src=self.lan_server, dst=self.client, ttl=ttl, flags="DF" if df else 0)
            l4 = self._l4(self.fwd_port_inner(), self.cport, flags, server=True, plen=len(payload))
            return Ether(src=HOSTS[self.lan_server], dst=GW_LAN) / ip / l4 / Raw(payload)
        if self.v6:
            ip = IPv6(src=self.host6, dst=self.server6, hlim=ttl)
        else:
            ip = IP(src=self.host, dst=self.server, ttl=ttl, flags="DF" if df else 0)
        prio = 3 if self.rng.random() < 0.1 else 0  # a tag with priority bits is another encap id
        eth = Ether(src=self.mac, dst=GW_LAN)
        if self.encap == "vlan":
            eth = eth / Dot1Q(vlan=10, prio=prio)
        elif self.encap == "qinq":
            eth = eth / Dot1AD(vlan=100) / Dot1Q(vlan=200, prio=prio)
        return eth / ip / self._l4(self.sport, self.dport, flags, plen=len(payload)) / Raw(payload)

    def down(self, payload: bytes, ttl: int = 60, flags: str = "", df: bool = False):
        """Internet -> LAN (addressed to the masqueraded address), or the DNAT client's request."""
        if self.dnat:
            ip = IP(src=self.client, dst=WAN_IP, ttl=ttl, flags="DF" if df else 0)
            l4 = self._l4(self.cport, self.fwd_port, flags, plen=len(payload))
            return Ether(src=UPSTREAM, dst=GW_WAN) / ip / l4 / Raw(payload)
        if self.v6:
            ip = IPv6(src=self.server6, dst=self.host6, hlim=ttl)
        elif self.encap == "ipip":  # from the tunnel: the inner packet is not NATed
            outer_ttl = 1 if self.rng.random() < 0.05 else 64  # an outer TTL of 1 is the classic path's
            ip = IP(src=TUN_PEER, dst=WAN_IP, ttl=outer_ttl, tos=self.rng.choice([0, 0, 1, 2])) / IP(
                src=self.server,
                dst=self.host,
                ttl=ttl,
                flags="DF" if df else 0,
                tos=self.rng.choice([0, 0x10, 2, 3]),
            )
        else:
            ip = IP(src=self.server, dst=WAN_IP, ttl=ttl, flags="DF" if df else 0)
        l4 = self._l4(self.dport, self.sport, flags, server=True, plen=len(payload))
        return Ether(src=UPSTREAM, dst=GW_WAN) / ip / l4 / Raw(payload)

    def fwd_port_inner(self) -> int:
        return 22 if self.proto == "tcp" else 53

    def _l4(self, sport: int, dport: int, flags: str, server: bool = False, plen: int = 0):
        if self.proto == "udp":
            return UDP(sport=sport, dport=dport)
        flags = flags or "PA"
        seq, ack = (self.seq_s, self.seq_c) if server else (self.seq_c, self.seq_s)
        adv = plen + ("S" in flags) + ("F" in flags)
        if server:
            self.seq_s = (self.seq_s + adv) & 0xFFFFFFFF
        else:
            self.seq_c = (self.seq_c + adv) & 0xFFFFFFFF
        if flags == "S":
            return TCP(sport=sport, dport=dport, flags=flags, seq=seq, window=65535)
        return TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535)


def mixed_trace(
    seed: int = 1, n_udp: int = 40, n_tcp: int = 20, rounds: int = 12, encap: bool = False
) -> tuple[list, list]:
    """(lan packets, wan packets), Scapy packets with .time set, in capture order per interface;
    encap: also VLAN, QinQ and IPIP flows (see the module docstring)."""
    rng = random.Random(seed)
    lan: list = []
    wan: list = []
    t = [1_700_000_000.0]

    def emit(side: list, pkt, dt: float | None = None) -> None:
        t[0] += rng.uniform(0.00001, 0.002) if dt is None else dt
        pkt.time = t[0]
        side.append(pkt)

    flows = [_Flow(rng, "udp", k) for k in range(n_udp)]
    flows += [_Flow(rng, "udp", n_udp + k, v6=True) for k in range(4)]
    flows += [_Flow(rng, "udp", 300 + k, dnat=True) for k in range(3)]
    tcp = [_Flow(rng, "tcp", 100 + k) for k in range(n_tcp)] + [
        _Flow(rng, "tcp", 400 + k, dnat=True) for k in range(3)
    ]
    if encap:
        for j, kind in enumerate(("vlan", "qinq", "ipip")):
            flows += [_Flow(rng, "udp", 500 + 20 * j + k, encap=kind) for k in range(5)]
            tcp += [_Flow(rng, "tcp", 600 + 20 * j + k, encap=kind) for k in range(2)]
    for f in tcp:  # handshake
        (emit(wan, f.down(b"", flags="S")) if f.dnat else emit(lan, f.up(b"", flags="S")))
        (emit(lan, f.up(b"", flags="SA")) if f.dnat else emit(wan, f.down(b"", flags="SA")))
        (emit(wan, f.down(b"", flags="A")) if f.dnat else emit(lan, f.up(b"", flags="A")))
    for r in range(rounds):
        if r == rounds // 2:
            t[0] += 45.0  # idle longer than nf_flowtable_udp/tcp_timeout (30 s)
        elif r:
            t[0] += 0.5  # UDP flows live past 2 s and become assured streams (nf_conntrack_udp_packet)
        order = flows + tcp
        rng.shuffle(order)
        for f in order:
            size = rng.choice([20, 86, 300, 1000])
            ttl = rng.choice([64] * 20 + [1, 2])
            if f.dnat:  # the Internet client speaks first
                emit(wan, f.down(bytes(size), ttl=ttl))
                emit(lan, f.up(bytes(size // 2)))
            else:
                emit(lan, f.up(bytes(size), ttl=ttl))
                emit(wan, f.down(bytes(size // 2), ttl=rng.choice([60] * 20 + [1])))
            if rng.random() < 0.05 and not f.v6:  # oversize for the 1400-byte route
                emit(lan, f.up(bytes(1440), df=rng.random() < 0.5))
    for k, f in enumerate(tcp):  # closes: FIN both ways, or RST; some tuples re-opened
        if k % 3 == 0:
            emit(wan, f.down(b"", flags="R")) if f.dnat else emit(lan, f.up(b"", flags="R"))
        else:
            emit(lan if not f.dnat else wan, (f.up if not f.dnat else f.down)(b"", flags="FA"))
            emit(wan if not f.dnat else lan, (f.down if not f.dnat else f.up)(b"", flags="FA"))
            emit(lan if not f.dnat else wan, (f.up if not f.dnat else f.down)(b"", flags="A"))
        if k % 4 == 1 and not f.dnat:
            emit(lan, f.up(b"", flags="S"))
            emit(wan, f.down(b"", flags="SA"))
            emit(lan, f.up(b"late data"))
    return lan, wan


GW_LAN6 = "2001:db8:1::1"
HOST6 = "2001:db8:1::10"
ROUTER = "203.0.113.254"


def ping_trace(seed: int = 1, n_ids: int = 8, rounds: int = 12, mixed: bool = True, errors: bool = True,
               reply6: str = HOST6, inbound: bool = False) -> tuple[list, list]:  # fmt: skip
    """(lan packets, wan packets): ICMP and ICMPv6 echo through examples/gateway.ip, in capture order.

    n_ids pings per round from the LAN hosts to Internet hosts (IPv4 through masquerade, the echo id
    its "port"; IPv6 routed), answered from the WAN side; ids 0 and 1 collide (two hosts, one
    server, one id: NAT moves the second, to the next id, where its answers come back). Every round some
    answers are lost, some requests go unanswered twice. A 45 s gap in the middle lets entries
    expire (30 s). mixed: on top of mixed_trace's TCP/UDP (its time span). errors: also what must
    stay on the Python path: destination unreachable and ICMPv6 errors about the pings (RELATED),
    echo requests with ttl 1 (time exceeded), a neighbour solicitation for the gateway, a bad ICMP
    checksum, unsolicited echo replies, a ping of the gateway itself, timestamp queries. reply6: where
    the IPv6 answers go (an IPv6 SNAT address). inbound: also a ping from the Internet to the WAN
    address each round, answered by 192.168.1.11 (for a DNAT of echo requests)."""
    from scapy.all import (
        ICMP,
        ICMPerror,
        ICMPv6DestUnreach,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6ND_NS,
        ICMPv6NDOptSrcLLAddr,
        IPerror,
    )

    lan, wan = mixed_trace(seed=seed, n_udp=8, n_tcp=4, rounds=4) if mixed else ([], [])
    rng = random.Random(seed + 1)
    t0 = min((p.time for p in lan + wan), default=1_700_000_000.0)
    t1 = max((p.time for p in lan + wan), default=t0)
    t = [t0]
    dt = max(t1 - t0 - 45.0, 1.0) / (rounds * n_ids)

    def emit(side: list, pkt, gap: float) -> None:
        t[0] += gap
        pkt.time = t[0]
        side.append(pkt)

    pings = []
    for k in range(n_ids):
        v6 = k % 4 == 3
        host = "192.168.1.10" if k % 2 == 0 else "192.168.1.11"
        j = 0 if k == 1 else k  # ping 1 takes ping 0's server and id
        pings.append((v6, host, HOSTS[host], f"198.51.100.{10 + j}", 0x4000 + 7 * j, f"2001:db8:2::{j + 0x50:x}"))
    for r in range(rounds):
        if r == rounds // 2:
            t[0] += 45.0  # idle past the ICMP timeout (30 s): the entries expire and open again
        for k, (v6, host, mac, server, eid, server6) in enumerate(pings):
            seq = r * 16 + k
            if v6:
                up = Ether(src=HOSTS["192.168.1.10"], dst=GW_LAN) / IPv6(src=HOST6, dst=server6) / ICMPv6EchoRequest(
                    id=eid, seq=seq, data=bytes(rng.choice([8, 56])))
                down = Ether(src=UPSTREAM, dst=GW_WAN) / IPv6(src=server6, dst=reply6, hlim=60) / ICMPv6EchoReply(
                    id=eid, seq=seq, data=bytes(8))
            else:
                up = Ether(src=mac, dst=GW_LAN) / IP(src=host, dst=server) / ICMP(type=8, id=eid, seq=seq) / Raw(
                    bytes(rng.choice([8, 56, 300])))
                nat_id = eid + 1 if k == 1 else eid  # where NAT's walk up from the clashing id lands
                down = Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=server, dst=WAN_IP, ttl=60) / ICMP(
                    type=0, id=nat_id, seq=seq) / Raw(bytes(8))
            emit(lan, up, dt * rng.uniform(0.2, 1.0))
            if rng.random() < 0.9 and not (r % 5 == 4 and k == 2):  # some answers lost; ping 2 unanswered
                emit(wan, down, dt * 0.1)
        if inbound:
            client = f"198.51.100.{200 + r % 3}"
            emit(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=client, dst=WAN_IP) / ICMP(type=8, id=0x5000 + r % 3,
                 seq=r) / Raw(bytes(24)), dt)  # fmt: skip
            emit(lan, Ether(src=HOSTS["192.168.1.11"], dst=GW_LAN) / IP(src="192.168.1.11", dst=client) / ICMP(
                type=0, id=0x5000 + r % 3, seq=r) / Raw(bytes(24)), dt * 0.1)  # fmt: skip
        if not errors:
            continue
        v4 = [p for p in pings if not p[0] and p[4] != pings[0][4]]
        _, host, mac, server, eid, _ = v4[r % len(v4)]
        inner = IPerror(src=WAN_IP, dst=server, ttl=1) / ICMPerror(type=8, id=eid, seq=r * 16)
        emit(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=ROUTER, dst=WAN_IP) / ICMP(type=3, code=1) / inner, dt)
        emit(lan, Ether(src=mac, dst=GW_LAN) / IP(src=host, dst=server, ttl=1) / ICMP(type=8, id=eid, seq=999), dt)
        bad = Ether(src=mac, dst=GW_LAN) / IP(src=host, dst=server) / ICMP(type=8, id=eid, seq=998, chksum=0x1234)
        emit(lan, bad, dt)
        emit(lan, Ether(src=mac, dst=GW_LAN) / IP(src=host, dst="192.168.1.1") / ICMP(type=8, id=eid, seq=997), dt)
        emit(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=server, dst=WAN_IP) / ICMP(type=0, id=0x7777, seq=r), dt)
        emit(lan, Ether(src=mac, dst=GW_LAN) / IP(src=host, dst=server) / ICMP(type=0, id=0x7778, seq=r), dt)
        emit(lan, Ether(src=mac, dst=GW_LAN) / IP(src=host, dst=server) / ICMP(type=13, id=eid + 1, seq=r), dt)
        emit(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=server, dst=WAN_IP) / ICMP(type=14, id=eid + 1, seq=r), dt)
        v6p = [p for p in pings if p[0]]
        if v6p:
            server6, eid6 = v6p[r % len(v6p)][5], v6p[r % len(v6p)][4]
            inner6 = IPv6(src=HOST6, dst=server6) / ICMPv6EchoRequest(id=eid6, seq=r)
            emit(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IPv6(src="2001:db8:ff::fe", dst=HOST6)
                 / ICMPv6DestUnreach(code=1) / inner6, dt)  # fmt: skip
            emit(lan, Ether(src=HOSTS["192.168.1.10"], dst=GW_LAN) / IPv6(src=HOST6, dst=server6, hlim=1)
                 / ICMPv6EchoRequest(id=eid6, seq=999), dt)  # fmt: skip
        if r % 3 == 0:
            ns = (Ether(src=HOSTS["192.168.1.10"], dst="33:33:ff:00:00:01")
                  / IPv6(src=HOST6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=GW_LAN6)
                  / ICMPv6NDOptSrcLLAddr(lladdr=HOSTS["192.168.1.10"]))  # fmt: skip
            emit(lan, ns, dt)
    lan.sort(key=lambda p: p.time)
    wan.sort(key=lambda p: p.time)
    return lan, wan

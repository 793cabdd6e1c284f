"""Linux as the oracle: the same frames through a real masquerading router namespace and through ours.

Topology (namespaces made and deleted by the fixture, names prefixed fpct<pid>):
client c0 10.0.0.2/24 -- r0 10.0.0.1/24 [router: forward, nft masquerade on r1] r1 198.51.100.1/24 -- s0
198.51.100.9/24 server. Client and server kernels drop every inbound IP packet (no RSTs of their own);
we inject both ends' segments with AF_PACKET and capture what the router forwards. Our output, after
ip_decrease_ttl (the router's job, not NAT's), must equal Linux's byte for byte, and the router's
/proc/net/nf_conntrack must show the state, flags and timeout our listing shows.
"""

import ctypes
import ipaddress
import os
import re
import select
import shutil
import socket
import subprocess
import time

import pytest
from ct_helpers import Path, l3
from scapy.all import ICMP, IP, TCP, UDP, Ether, raw

from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.nat_range import NatRequest, NfNatRange
from flowpath.packet.csum import ip_decrease_ttl

pytestmark = pytest.mark.root

PFX = f"fpct{os.getpid() % 100000}"
NS_C, NS_R, NS_S = f"{PFX}c", f"{PFX}r", f"{PFX}s"
C, R0, R1, S = "10.0.0.2", "10.0.0.1", "198.51.100.1", "198.51.100.9"
C6, R06, R16, S6 = "fd00::2", "fd00::1", "2001:db8::1", "2001:db8::9"
_NOISE6 = {133, 134, 135, 136, 143}  # neighbour discovery and MLD reports
CLONE_NEWNET = 0x40000000
PACKET_OUTGOING = 4


def sh(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, input=stdin).stdout


def nsx(ns: str, *args: str, stdin: str | None = None) -> str:
    return sh("ip", "netns", "exec", ns, *args, stdin=stdin)


def mac(ns: str, dev: str) -> str:
    return open_in(ns, f"/sys/class/net/{dev}/address").strip()


def open_in(ns: str, path: str) -> str:
    return nsx(ns, "cat", path)


def packet_socket(ns: str, dev: str) -> socket.socket:
    """An AF_PACKET socket bound to dev inside ns (a socket keeps the namespace it was made in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((dev, 0))
    finally:
        libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)
    return s


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, ip and nft")
    try:
        for ns in (NS_C, NS_R, NS_S):
            sh("ip", "netns", "add", ns)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("network namespaces unavailable")
    try:
        sh("ip", "link", "add", "c0", "netns", NS_C, "type", "veth", "peer", "name", "r0", "netns", NS_R)
        sh("ip", "link", "add", "s0", "netns", NS_S, "type", "veth", "peer", "name", "r1", "netns", NS_R)
        addrs = ((NS_C, "c0", C, C6), (NS_R, "r0", R0, R06), (NS_R, "r1", R1, R16), (NS_S, "s0", S, S6))
        for ns, dev, addr, addr6 in addrs:
            nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_ra=0")
            nsx(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            nsx(ns, "ip", "-6", "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            nsx(ns, "ip", "link", "set", dev, "up")
        nsx(NS_R, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nsx(NS_R, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        nsx(NS_C, "ip", "route", "add", "default", "via", R0)
        nsx(NS_S, "ip", "route", "add", "default", "via", R1)
        nsx(NS_C, "ip", "-6", "route", "add", "default", "via", R06)
        nsx(NS_S, "ip", "-6", "route", "add", "default", "via", R16)
        rules = (
            "table ip nat {\n chain pre {\n type nat hook prerouting priority dstnat;\n"
            " tcp dport 8080 dnat to 198.51.100.9:80\n }\n"
            " chain post {\n type nat hook postrouting priority srcnat;\n oifname r1 masquerade\n }\n}\n"
            "table ip6 nat6 {\n chain post {\n type nat hook postrouting priority srcnat;\n"
            " oifname r1 masquerade\n }\n}\n"
        )
        nsx(NS_R, "nft", "-f", "-", stdin=rules)
        for ns in (NS_C, NS_S):
            drop = "table inet f {\n chain in {\n type filter hook input priority 0; policy drop;\n }\n}\n"
            nsx(ns, "nft", "-f", "-", stdin=drop)
        # Resolve neighbours once, so no ARP is pending when the first frame arrives.
        nsx(NS_R, "ip", "neigh", "replace", C, "lladdr", mac(NS_C, "c0"), "dev", "r0")
        nsx(NS_R, "ip", "neigh", "replace", S, "lladdr", mac(NS_S, "s0"), "dev", "r1")
        nsx(NS_R, "ip", "-6", "neigh", "replace", C6, "lladdr", mac(NS_C, "c0"), "dev", "r0")
        nsx(NS_R, "ip", "-6", "neigh", "replace", S6, "lladdr", mac(NS_S, "s0"), "dev", "r1")
        lab = {
            "c": packet_socket(NS_C, "c0"),
            "s": packet_socket(NS_S, "s0"),
            "c_mac": mac(NS_C, "c0"),
            "s_mac": mac(NS_S, "s0"),
            "r0_mac": mac(NS_R, "r0"),
            "r1_mac": mac(NS_R, "r1"),
        }
        yield lab
        lab["c"].close()
        lab["s"].close()
    finally:
        for ns in (NS_C, NS_R, NS_S):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def exchange(lab, side: str, pkt) -> bytes:
    """Send an L3 packet from one end; return the L3 bytes the router delivers to the other end."""
    tx, rx = (lab["c"], lab["s"]) if side == "c" else (lab["s"], lab["c"])
    src, dst = (lab["c_mac"], lab["r0_mac"]) if side == "c" else (lab["s_mac"], lab["r1_mac"])
    frame = raw(Ether(src=src, dst=dst) / pkt)
    while select.select([rx], [], [], 0)[0]:
        rx.recv(65535)
    tx.send(frame)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not select.select([rx], [], [], 0.2)[0]:
            continue
        data, addr = rx.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING or data[12:14] != frame[12:14]:
            continue
        if data[12:14] == b"\x86\xdd" and (
            data[14 + 24] == 0xFF or data[14 + 6] == 58 and data[14 + 40] in _NOISE6
        ):
            continue  # multicast (MLD), neighbour discovery
        return data[14:]
    raise AssertionError(f"the router forwarded nothing for {pkt.summary()}")


def linux_ct_lines() -> list[str]:
    """The router's entries in our listing's shape (no l3 column, zone, secctx; use=1)."""
    out = []
    for line in open_in(NS_R, "/proc/net/nf_conntrack").splitlines():
        line = re.sub(r"^ipv[46]\s+\d+\s+", "", line.strip())
        line = re.sub(r" zone=\d+", "", line)
        line = re.sub(r"timeout=\d+, stream_timeout=\d+ ", "", line)  # gre_print_conntrack: /proc only
        # /proc prints IPv6 in full; conntrack -L (and we) compress it
        line = re.sub(
            r"(src|dst)=([0-9a-f:]+:[0-9a-f:]+)", lambda m: f"{m[1]}={ipaddress.ip_address(m[2])}", line
        )
        out.append(re.sub(r"use=\d+", "use=1", line))
    return out


def same_listing(ours: str, linux: list[str]) -> None:
    """Equal but for the timeout, which may be a second or two apart (jiffies vs packet time)."""
    strip = re.compile(r"^(\S+\s+\d+) (\d+) ")
    ours_l = ours.splitlines()
    assert len(ours_l) == len(linux), (ours_l, linux)
    for a, b in zip(sorted(ours_l), sorted(linux), strict=True):
        ma, mb = strip.match(a), strip.match(b)
        assert ma and mb, (a, b)
        assert abs(int(ma.group(2)) - int(mb.group(2))) <= 2, (a, b)
        assert strip.sub(r"\1 ", a) == strip.sub(r"\1 ", b)


def ours_after_routing(skb) -> bytes:
    if skb.is_ipv6:
        skb.buf[skb.nhoff + 7] -= 1  # hop limit
    else:
        ip_decrease_ttl(skb.buf, skb.nhoff)
    return raw(l3(skb))


def test_tcp_masquerade_matches_linux(lab):
    """nf_nat_ipv4_manip_pkt and the TCP state machine, side by side with the kernel."""
    table = Conntrack()
    g = int.from_bytes(socket.inet_aton(R1), "big")
    path = Path(table, snat=lambda skb: NatRequest(0, NfNatRange(0, g, g), masquerade=True))
    t0 = time.monotonic_ns()
    steps = [
        ("c", IP(src=C, dst=S, id=1) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=8192)),
        (
            "s",
            IP(src=S, dst=R1, id=2) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001, window=8192),
        ),
        (
            "c",
            IP(src=C, dst=S, id=3) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001, window=8192),
        ),
        ("c", IP(src=C, dst=S, id=4) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET /"),
        ("s", IP(src=S, dst=R1, id=5) / TCP(sport=80, dport=40000, flags="A", seq=5001, ack=1006)),
        ("c", IP(src=C, dst=S, id=6) / TCP(sport=40000, dport=80, flags="FA", seq=1006, ack=5001)),
        ("s", IP(src=S, dst=R1, id=7) / TCP(sport=80, dport=40000, flags="A", seq=5001, ack=1007)),
        ("s", IP(src=S, dst=R1, id=8) / TCP(sport=80, dport=40000, flags="FA", seq=5001, ack=1007)),
        ("c", IP(src=C, dst=S, id=9) / TCP(sport=40000, dport=80, flags="A", seq=1007, ack=5002)),
    ]
    for side, pkt in steps:
        linux = exchange(lab, side, pkt)
        ours = ours_after_routing(path.forward(pkt, time.monotonic_ns() - t0))
        assert ours == linux, (IP(ours).show(dump=True), IP(linux).show(dump=True))
        same_listing(table.listing(time.monotonic_ns() - t0), linux_ct_lines())
    assert "TIME_WAIT" in table.listing(0)


def test_udp_and_icmp_masquerade_match_linux(lab):
    table = Conntrack()
    g = int.from_bytes(socket.inet_aton(R1), "big")
    path = Path(table, snat=lambda skb: NatRequest(0, NfNatRange(0, g, g), masquerade=True))
    t0 = time.monotonic_ns()
    steps = [
        ("c", IP(src=C, dst=S, id=11) / UDP(sport=5353, dport=53, chksum=0) / b"zero"),
        ("c", IP(src=C, dst=S, id=12) / UDP(sport=5354, dport=53) / b"query"),
        ("s", IP(src=S, dst=R1, id=13) / UDP(sport=53, dport=5354) / b"answer"),
        ("c", IP(src=C, dst=S, id=14) / ICMP(id=4242, seq=1) / b"ping"),
        ("s", IP(src=S, dst=R1, id=15) / ICMP(type=0, id=4242, seq=1) / b"ping"),
    ]
    sent_udp = None
    for side, pkt in steps:
        linux = exchange(lab, side, pkt)
        ours = ours_after_routing(path.forward(pkt, time.monotonic_ns() - t0))
        assert ours == linux, (IP(ours).show(dump=True), IP(linux).show(dump=True))
        if pkt.haslayer(UDP) and pkt[UDP].sport == 5354 and side == "c":
            sent_udp = linux
    # An ICMP error from the server about the masqueraded datagram: RELATED, inner packet translated back.
    err = IP(src=S, dst=R1, id=16) / ICMP(type=3, code=3) / sent_udp
    linux = exchange(lab, "s", err)
    ours = ours_after_routing(path.forward(err, time.monotonic_ns() - t0))
    assert ours == linux, (IP(ours).show(dump=True), IP(linux).show(dump=True))
    ours_lines = [ln for ln in table.listing(time.monotonic_ns() - t0).splitlines() if "tcp" not in ln]
    same_listing("\n".join(ours_lines), [ln for ln in linux_ct_lines() if not ln.startswith("tcp")])


def masq_dnat_path(table):
    """Our equivalent of the router's ruleset."""
    from flowpath.netfilter.nat_range import NF_NAT_RANGE_MAP_IPS, NF_NAT_RANGE_PROTO_SPECIFIED

    g = int.from_bytes(socket.inet_aton(R1), "big")
    srv = int.from_bytes(socket.inet_aton(S), "big")

    def dnat(skb):
        if skb.l4proto == 6 and skb.dport == 8080:
            flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
            return NatRequest(1, NfNatRange(flags, srv, srv, 80, 80))
        return None

    return Path(table, dnat=dnat, snat=lambda skb: NatRequest(0, NfNatRange(0, g, g), masquerade=True))


def run_steps(lab, path, steps, t0, key) -> list[bytes]:
    out = []
    for side, pkt in steps:
        linux = exchange(lab, side, pkt)
        ours = ours_after_routing(path.forward(pkt, time.monotonic_ns() - t0))
        assert ours == linux, (IP(ours).show(dump=True), IP(linux).show(dump=True))
        mine = [ln for ln in path.table.listing(time.monotonic_ns() - t0).splitlines() if key in ln]
        same_listing("\n".join(mine), [ln for ln in linux_ct_lines() if key in ln])
        out.append(linux)
    return out


def test_out_of_window_is_invalid_and_rst_closes_like_linux(lab):
    """tcp_in_window: a segment beyond the receiver's window is INVALID, so it is not NATed
    (Linux forwards it with the client's own address); a RST then moves the entry to CLOSE."""
    path = masq_dnat_path(Conntrack())
    t0 = time.monotonic_ns()
    c = dict(src=C, dst=S)
    s = dict(src=S, dst=R1)
    steps = [
        ("c", IP(id=21, **c) / TCP(sport=41000, dport=80, flags="S", seq=100, window=1000)),
        ("s", IP(id=22, **s) / TCP(sport=80, dport=41000, flags="SA", seq=900, ack=101, window=1000)),
        ("c", IP(id=23, **c) / TCP(sport=41000, dport=80, flags="A", seq=101, ack=901, window=1000)),
        ("c", IP(id=24, **c) / TCP(sport=41000, dport=80, flags="PA", seq=50101, ack=901) / b"far"),
        ("s", IP(id=25, **s) / TCP(sport=80, dport=41000, flags="PA", seq=901, ack=101) / b"hi"),
        ("c", IP(id=26, **c) / TCP(sport=41000, dport=80, flags="A", seq=101, ack=903, window=1000)),
        ("c", IP(id=27, **c) / TCP(sport=41000, dport=80, flags="R", seq=101)),
    ]
    got = run_steps(lab, path, steps, t0, "sport=41000")
    assert IP(got[3]).src == C and IP(got[4]).dst == C  # the far segment went out un-NATed
    assert " CLOSE " in path.table.listing(time.monotonic_ns() - t0)


def test_dnat_and_masquerade_match_linux(lab):
    """A port forward (prerouting dnat + postrouting masquerade), replies and an ICMP error."""
    path = masq_dnat_path(Conntrack())
    t0 = time.monotonic_ns()
    c = dict(src=C, dst=R0)
    s = dict(src=S, dst=R1)
    steps = [
        ("c", IP(id=31, **c) / TCP(sport=42000, dport=8080, flags="S", seq=7, window=5000)),
        ("s", IP(id=32, **s) / TCP(sport=80, dport=42000, flags="SA", seq=70, ack=8, window=5000)),
        ("c", IP(id=33, **c) / TCP(sport=42000, dport=8080, flags="A", seq=8, ack=71, window=5000)),
    ]
    run_steps(lab, path, steps, t0, "sport=42000")
    sent = exchange(lab, "c", IP(id=34, **c) / TCP(sport=42000, dport=8080, flags="PA", seq=8, ack=71) / b"x")
    path.forward(IP(id=34, **c) / TCP(sport=42000, dport=8080, flags="PA", seq=8, ack=71) / b"x")
    err = IP(src=S, dst=R1, id=35) / ICMP(type=3, code=4) / sent
    linux = exchange(lab, "s", err)
    ours = ours_after_routing(path.forward(err, time.monotonic_ns() - t0))
    assert ours == linux, (IP(ours).show(dump=True), IP(linux).show(dump=True))


def test_ipv6_masquerade_matches_linux(lab):
    """IPv6: csum_replace16 on TCP/UDP/ICMPv6 pseudo-headers, and an ICMPv6 error's inner packet."""
    from scapy.all import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

    g = int(ipaddress.ip_address(R16))
    path = Path(Conntrack(), snat=lambda skb: NatRequest(0, NfNatRange(0, g, g), masquerade=True))
    t0 = time.monotonic_ns()
    c, s = dict(src=C6, dst=S6), dict(src=S6, dst=R16)
    steps = [
        ("c", IPv6(**c) / TCP(sport=43000, dport=443, flags="S", seq=1, window=4000)),
        ("s", IPv6(**s) / TCP(sport=443, dport=43000, flags="SA", seq=10, ack=2, window=4000)),
        ("c", IPv6(**c) / UDP(sport=43001, dport=53) / b"q6"),
        ("s", IPv6(**s) / UDP(sport=53, dport=43001) / b"a6"),
        ("c", IPv6(**c) / ICMPv6EchoRequest(id=4343, seq=1) / b"p"),
        ("s", IPv6(**s) / ICMPv6EchoReply(id=4343, seq=1) / b"p"),
    ]
    sent_udp = None
    for side, pkt in steps:
        linux = exchange(lab, side, pkt)
        ours = ours_after_routing(path.forward(pkt, time.monotonic_ns() - t0))
        assert ours == linux, (IPv6(ours).show(dump=True), IPv6(linux).show(dump=True))
        if pkt.haslayer(UDP) and side == "c":
            sent_udp = linux
    err = IPv6(**s) / ICMPv6DestUnreach(code=4) / sent_udp
    linux = exchange(lab, "s", err)
    ours = ours_after_routing(path.forward(err, time.monotonic_ns() - t0))
    assert ours == linux, (IPv6(ours).show(dump=True), IPv6(linux).show(dump=True))
    mine = [ln for ln in path.table.listing(time.monotonic_ns() - t0).splitlines()]
    same_listing("\n".join(mine), [ln for ln in linux_ct_lines() if ":" in ln.split("src=")[1].split()[0]])


def test_window_scaling_and_sack_match_linux(lab):
    """tcp_in_window with RFC 7323 scaling and SACK: in-window data passes NATed, data past the scaled
    window is INVALID (forwarded un-NATed by both), and the listing agrees throughout."""
    path = masq_dnat_path(Conntrack())
    t0 = time.monotonic_ns()
    c, s = dict(src=C, dst=S), dict(src=S, dst=R1)
    opts_c = [("MSS", 1460), ("SAckOK", b""), ("WScale", 2)]
    opts_s = [("MSS", 1460), ("SAckOK", b""), ("WScale", 4)]
    data = b"d" * 1200
    steps = [
        ("c", IP(id=41, **c) / TCP(sport=44000, dport=80, flags="S", seq=0, window=600, options=opts_c)),
        (
            "s",
            IP(id=42, **s) / TCP(sport=80, dport=44000, flags="SA", seq=0, ack=1, window=300, options=opts_s),
        ),
        ("c", IP(id=43, **c) / TCP(sport=44000, dport=80, flags="A", seq=1, ack=1, window=600)),
        # a SYN's window is never scaled; this ACK opens 300 << 4 = 4800 bytes for the client's data
        ("s", IP(id=50, **s) / TCP(sport=80, dport=44000, flags="A", seq=1, ack=1, window=300)),
        ("c", IP(id=44, **c) / TCP(sport=44000, dport=80, flags="PA", seq=1, ack=1, window=600) / data),
        ("c", IP(id=45, **c) / TCP(sport=44000, dport=80, flags="PA", seq=1201, ack=1, window=600) / data),
        ("c", IP(id=46, **c) / TCP(sport=44000, dport=80, flags="PA", seq=2401, ack=1, window=600) / data),
        (
            "s",
            IP(id=47, **s)
            / TCP(
                sport=80,
                dport=44000,
                flags="A",
                seq=1,
                ack=1201,
                window=300,
                options=[("NOP", None), ("NOP", None), ("SAck", (2401, 3601))],
            ),
        ),  # fmt: skip
        ("c", IP(id=48, **c) / TCP(sport=44000, dport=80, flags="PA", seq=20001, ack=1, window=600) / data),
        ("s", IP(id=49, **s) / TCP(sport=80, dport=44000, flags="A", seq=1, ack=3601, window=300)),
    ]
    got = run_steps(lab, path, steps, t0, "sport=44000")
    assert IP(got[4]).src == R1 and IP(got[6]).src == R1  # in window: NATed
    assert IP(got[8]).src == C  # past the window: INVALID, not NATed


def test_udp_stream_becomes_assured_like_linux(lab):
    """nf_conntrack_udp_packet: replies within 2 s keep 30 s; traffic after 2 s gives 120 s and ASSURED."""
    path = masq_dnat_path(Conntrack())
    t0 = time.monotonic_ns()
    c, s = dict(src=C, dst=S), dict(src=S, dst=R1)
    run_steps(lab, path, [("c", IP(id=51, **c) / UDP(sport=45000, dport=123) / b"a")], t0, "sport=45000")
    run_steps(lab, path, [("s", IP(id=52, **s) / UDP(sport=123, dport=45000) / b"b")], t0, "sport=45000")
    time.sleep(2.3)
    run_steps(lab, path, [("c", IP(id=53, **c) / UDP(sport=45000, dport=123) / b"c")], t0, "sport=45000")
    assert "[ASSURED]" in path.table.listing(time.monotonic_ns() - t0)


def test_gre_masquerade_matches_linux(lab):
    """GREv0 (no keys): masqueraded by address only, 30 s unreplied, then 180 s and ASSURED."""
    path = masq_dnat_path(Conntrack())
    t0 = time.monotonic_ns()
    gre = b"\x00\x00\x08\x00" + raw(IP(src="172.31.0.1", dst="172.31.0.2") / ICMP())
    steps = [
        ("c", IP(src=C, dst=S, id=61, proto=47) / gre),
        ("s", IP(src=S, dst=R1, id=62, proto=47) / gre),
        ("c", IP(src=C, dst=S, id=63, proto=47) / gre),
    ]
    run_steps(lab, path, steps, t0, "srckey=")


def test_syn_reopens_time_wait_like_linux(lab):
    """RFC 1122: a new SYN on a TIME_WAIT entry kills it and starts over (-NF_REPEAT)."""
    path = masq_dnat_path(Conntrack())
    t0 = time.monotonic_ns()
    c, s = dict(src=C, dst=S), dict(src=S, dst=R1)
    steps = [
        ("c", IP(id=71, **c) / TCP(sport=46000, dport=80, flags="S", seq=10, window=900)),
        ("s", IP(id=72, **s) / TCP(sport=80, dport=46000, flags="SA", seq=50, ack=11, window=900)),
        ("c", IP(id=73, **c) / TCP(sport=46000, dport=80, flags="A", seq=11, ack=51, window=900)),
        ("c", IP(id=74, **c) / TCP(sport=46000, dport=80, flags="FA", seq=11, ack=51, window=900)),
        ("s", IP(id=75, **s) / TCP(sport=80, dport=46000, flags="FA", seq=51, ack=12, window=900)),
        ("c", IP(id=76, **c) / TCP(sport=46000, dport=80, flags="A", seq=12, ack=52, window=900)),
        ("c", IP(id=77, **c) / TCP(sport=46000, dport=80, flags="S", seq=90000, window=900)),
    ]
    run_steps(lab, path, steps, t0, "sport=46000")
    assert "SYN_SENT" in path.table.listing(time.monotonic_ns() - t0)

"""AfPacketPort and kernel_if on a real veth pair, each end in its own network namespace.

Linux: net/packet/af_packet.c (tpacket_rcv, tpacket_snd, packet_notifier), drivers/net/veth.c,
net/core/dev.c › __netif_receive_skb_core (skb_vlan_untag), net/ipv4/tcp_offload.c (what the
sender's TSO leaves to us). The port sits on `fpa0` in namespace a; the peer is a raw socket or
the kernel stack on `fpb0` in namespace b. Root only.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6

from flowpath.errors import PortError
from flowpath.packet.batch import GSO_SLOT, PacketBatch
from flowpath.packet.csum import l4_pseudo_sum
from flowpath.packet.reason import Reason
from flowpath.ports import kernel_if
from flowpath.ports.af_packet import AfPacketPort
from flowpath.ports.gso import VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, skb_checksum_help

sys.path.insert(0, os.path.dirname(__file__))
from veth_netns import VethPair, have_netns, inside, sh  # noqa: E402

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not have_netns(), reason="needs root and iproute2 (ip)"),
]
ETH_P_TEST = 0x88B5  # IEEE local experimental: nothing else on the link uses it
PACKET_IGNORE_OUTGOING = 23
SOL_PACKET = 263
PORT_MAC, PEER_MAC = "02:00:00:00:aa:01", "02:00:00:00:bb:02"
_pairs = itertools.count()


@pytest.fixture
def pair(request):
    v = VethPair(str(next(_pairs)), ipv6=getattr(request, "param", False))
    try:
        sh("ip", "-n", v.a, "link", "set", v.pa, "address", PORT_MAC)
        sh("ip", "-n", v.b, "link", "set", v.pb, "address", PEER_MAC)
        v.up()
        yield v
    finally:
        v.close()


# small rings of either version, that wrap often
SMALL = {"v2": dict(rx_ring="v2", rx_frames=8, rx_frame_size=2048), "v3": dict(rx_ring="v3", ring_blocks=4, block_size=4096)}
both_rings = pytest.mark.parametrize("ring", ["v2", "v3"])


def open_port(v: VethPair, **kw) -> AfPacketPort:
    with inside(v.a):
        return AfPacketPort("lan0", 7, v.pa, **kw)


def peer_socket(v: VethPair, proto: int = ETH_P_TEST) -> socket.socket:
    """A raw socket on the peer end, receiving only `proto` and never its own transmits."""
    with inside(v.b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((v.pb, proto))
    s.settimeout(2.0)
    return s


def frame(i: int, size: int, ethertype: int = ETH_P_TEST) -> bytes:
    head = bytes.fromhex(PORT_MAC.replace(":", "")) + bytes.fromhex(PEER_MAC.replace(":", ""))
    body = i.to_bytes(4, "big") + bytes((i + k) % 256 for k in range(size - 18))
    return head + ethertype.to_bytes(2, "big") + body


def collect(port: AfPacketPort, want: int, capacity: int = 64, keep=None, timeout: float = 3.0):
    """rx_burst until `want` frames passing `keep` arrived (or the timeout); [(bytes, verdict)]."""
    out, end = [], time.monotonic() + timeout
    b = PacketBatch(capacity)
    while len(out) < want and time.monotonic() < end:
        b.clear()
        if port.rx_burst(b, time.monotonic_ns()) == 0:
            time.sleep(0.0005)
        for i in range(b.n):
            f = b.frame_bytes(i)
            if keep is None or keep(f):
                out.append((f, int(b.verdict[i])))
    return out


def is_test_frame(f: bytes) -> bool:
    return f[12:14] == ETH_P_TEST.to_bytes(2, "big")


@both_rings
def test_frames_arrive_byte_identical_in_order_across_ring_wraps(pair, ring):
    """Frames of 60..1514 bytes sent by the peer land byte-identical and in order, through a ring
    of 4 one-page blocks (V3) or 8 frames (V2) that wraps ~40 times, with batches that end in the
    middle of blocks."""
    port, peer = open_port(pair, **SMALL[ring]), peer_socket(pair)
    sizes = [60, 61, 128, 333, 1000, 1514, 64, 1499]
    sent, got = [], []
    with port:
        for chunk in range(54):
            batch = [frame(chunk * 6 + k, sizes[(chunk + k) % len(sizes)]) for k in range(6)]
            for f in batch:
                peer.send(f)
            sent += batch
            got += collect(port, 6, capacity=5, keep=is_test_frame)
        assert got == [(f, 0) for f in sent]
        c = port.counters()
        assert c["rx_missed"] == 0 and c["rx_packets"] >= len(sent)


@both_rings
def test_basic_rx_tx(pair, ring):
    """One frame each way (also the JIT-off run's test)."""
    port, peer = open_port(pair, **SMALL[ring], tx_frames=4), peer_socket(pair)
    with port:
        f = frame(1, 100)
        peer.send(f)
        assert collect(port, 1, keep=is_test_frame) == [(f, 0)]
        b = PacketBatch(4)
        b.append(frame(2, 200), 7, 0)
        assert port.tx_burst(b, np.array([0], np.int32)) == 1
        port.flush()
        assert peer.recv(4096) == frame(2, 200)


@both_rings
def test_warm_moves_no_frame_and_counts_nothing(pair, ring):
    """warm() runs the ring kernels on no room and no slots: a frame waiting in the ring is still
    there afterwards, nothing is sent, the counters stay at zero."""
    port, peer = open_port(pair, **SMALL[ring], tx_frames=4), peer_socket(pair)
    with port:
        f = frame(3, 100)
        peer.send(f)
        time.sleep(0.05)
        port.warm(PacketBatch(4))
        assert all(v == 0 for k, v in port.counters().items() if k.startswith("tx"))
        assert collect(port, 1, keep=is_test_frame) == [(f, 0)]
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(4096)


def test_basic_rx_tx_with_the_jit_off():
    """The kernels run as plain Python (NUMBA_DISABLE_JIT=1) with the same results."""
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        pytest.skip("already the JIT-off run")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", __file__ + "::test_basic_rx_tx"],
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize(
    "tags", [((0x8100, 0x0064),), ((0x88A8, 0x0FFF), (0x8100, 0x2005))], ids=["dot1q", "qinq"]
)
@both_rings
def test_vlan_tag_put_back(pair, tags, ring):
    """The receiving device strips the outer tag into tp_vlan_tci (skb_vlan_untag); the port puts it
    back with its TPID, so the frame is the one on the wire. A plain packet socket shows the strip."""
    port, peer = open_port(pair, rx_ring=ring), peer_socket(pair, 0x0003)
    with inside(pair.a):
        plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    plain.bind((pair.pa, 0x0003))
    plain.settimeout(2)
    inner = frame(3, 200)
    tagged = inner[:12] + b"".join(t.to_bytes(2, "big") + c.to_bytes(2, "big") for t, c in tags) + inner[12:]
    with port, plain:
        peer.send(tagged)
        assert collect(port, 1, keep=lambda f: f[12:14] == tags[0][0].to_bytes(2, "big")) == [(tagged, 0)]
        while (seen := plain.recv(4096))[-100:] != tagged[-100:]:
            pass
        assert len(seen) == len(tagged) - 4  # stripped by the kernel: the port did the work


def test_tx_frames_arrive_byte_identical_in_order(pair):
    """tx_burst and tx_frame frames reach the peer byte-identical and in order, through a 16-frame
    ring that wraps many times (each burst of 10 is flushed)."""
    port, peer = open_port(pair, tx_frames=16), peer_socket(pair)
    sizes = [60, 1514, 61, 128, 777, 1000]
    sent = []
    with port:
        for burst in range(20):
            b = PacketBatch(10)
            for k in range(10):
                b.append(frame(burst * 10 + k, sizes[(burst + k) % 6]), 7, 0)
            idx = np.arange(10, dtype=np.int32)[::-1].copy() if burst % 2 else np.arange(10, dtype=np.int32)
            assert port.tx_burst(b, idx) == 10
            port.flush()
            sent += [b.frame_bytes(int(i)) for i in idx]
            assert port.tx_frame(frame(9999, 90 + burst))
            port.flush()
            sent.append(frame(9999, 90 + burst))
        got = [peer.recv(4096) for _ in sent]
        assert got == sent
        c = port.counters()
        assert c["tx_packets"] == len(sent) and c["tx_errors"] == 0


def test_tx_refuses_what_the_device_would_refuse_and_keeps_going(pair):
    """A frame over MTU + 14 (MTU + 18 with an 802.1Q tag) or under 14 bytes is counted in tx_errors
    and skipped; the ring does not stall (PACKET_LOSS semantics) and the next frame goes."""
    port, peer = open_port(pair), peer_socket(pair, 0x0003)
    big = frame(1, 1515)
    tagged = frame(2, 1514)[:12] + b"\x81\x00\x00\x05" + frame(2, 1514)[12:]  # 1518: allowed
    with port:
        assert port.tx_frame(big) and port.tx_frame(b"\x01" * 13)
        assert port.tx_frame(tagged) and port.tx_frame(frame(3, 60))
        port.flush()
        # the peer's device strips the tag again (skb_vlan_untag): it arrives as the untagged frame
        assert peer.recv(4096) == frame(2, 1514) and peer.recv(4096) == frame(3, 60)
        assert port.counters()["tx_errors"] == 2


def _neigh_setup(v: VethPair, ipv6: bool) -> tuple[str, str]:
    a, b = ("fd00:77::1", "fd00:77::2") if ipv6 else ("10.77.0.1", "10.77.0.2")
    plen = "64" if ipv6 else "24"
    sh("ip", "-n", v.a, "addr", "add", f"{a}/{plen}", "dev", v.pa, *(("nodad",) if ipv6 else ()))
    sh("ip", "-n", v.b, "addr", "add", f"{b}/{plen}", "dev", v.pb, *(("nodad",) if ipv6 else ()))
    return a, b


@both_rings
def test_local_stack_checksums_completed(pair, ring):
    """UDP and a TCP SYN from the peer's own stack leave veth as CHECKSUM_PARTIAL; the port
    completes them (skb_checksum_help) and Scapy finds the checksums right."""
    port = open_port(pair, rx_ring=ring)
    sh("ip", "-n", pair.b, "addr", "add", "10.77.0.2/24", "dev", pair.pb)
    sh(
        "ip",
        "-n",
        pair.b,
        "neigh",
        "add",
        "10.77.0.1",
        "lladdr",
        PORT_MAC,
        "dev",
        pair.pb,
        "nud",
        "permanent",
    )
    with inside(pair.b):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with port, u, t:
        u.sendto(b"checksum me" * 20, ("10.77.0.1", 9999))
        t.setblocking(False)
        t.connect_ex(("10.77.0.1", 80))
        got = collect(port, 2, keep=lambda f: f[12:14] == b"\x08\x00" and f[26:30] == bytes([10, 77, 0, 2]))
        assert len(got) == 2 and all(v == 0 for _, v in got)
        for f, _ in got:
            e = Ether(f)
            l4 = e[UDP] if UDP in e else e[TCP]
            want, kind = l4.chksum, type(l4)
            del l4.chksum, e[IP].chksum
            again = Ether(bytes(e))
            assert again[kind].chksum == want and again[IP].chksum == Ether(f)[IP].chksum
        assert port.counters()["rx_csum_completed"] >= 2


@both_rings
@pytest.mark.parametrize("pair", [False, True], ids=["tcp4", "tcp6"], indirect=True)
def test_tso_super_packets_arrive_segmented(pair, ring):
    """A 512 KiB TCP send from the peer's stack leaves veth as TSO super-packets (gso_size = MSS);
    the port cuts them into wire-sized segments whose checksums Scapy accepts and whose sequence
    numbers follow each other, so the stream reassembles to exactly what was sent."""
    ipv6 = pair.ipv6
    port = open_port(pair, rx_ring=ring)
    sh("ip", "netns", "exec", pair.a, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 1048576 8388608")
    a, _ = _neigh_setup(pair, ipv6)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    with inside(pair.a):
        srv = socket.socket(family, socket.SOCK_STREAM)
    with inside(pair.b):
        cli = socket.socket(family, socket.SOCK_STREAM)
    data = bytes((i * 31 + i // 251) % 256 for i in range(1 << 19))
    srv.bind((a, 5001))
    srv.listen(1)
    received = bytearray()

    def serve():
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    server = threading.Thread(target=serve)
    server.start()
    cli.settimeout(10)
    cli.connect((a, 5001))
    sender = threading.Thread(target=lambda: (cli.sendall(data), cli.shutdown(socket.SHUT_WR)))
    sender.start()
    frames, end = [], time.monotonic() + 20
    b = PacketBatch(256)
    with port, srv, cli:
        while (sender.is_alive() or server.is_alive()) and time.monotonic() < end:
            b.clear()
            port.rx_burst(b, 0)
            frames += [(b.frame_bytes(i), int(b.verdict[i])) for i in range(b.n)]
            server.join(0.0005)
        frames += collect(port, 10**9, timeout=0.1)
        c = port.counters()
    sender.join()
    server.join()
    assert bytes(received) == data
    l3 = IPv6 if ipv6 else IP
    segs = {}
    for f, v in frames:
        e = Ether(f)
        if TCP not in e or e[TCP].dport != 5001 or not len(e[TCP].payload):
            continue
        assert v == 0 and len(f) <= 1514
        want = e[TCP].chksum
        del e[TCP].chksum
        if l3 is IP:
            del e[IP].chksum
        again = Ether(bytes(e))
        assert again[TCP].chksum == want and (l3 is IPv6 or again[IP].chksum == Ether(f)[IP].chksum)
        segs[e[TCP].seq] = bytes(e[TCP].payload)
    assert c["rx_gso_segments"] > c["rx_gso_packets"] > 0 and c["rx_missed"] == 0
    seqs = sorted(segs)
    stream = b"".join(segs[s] for s in seqs)
    assert all(seqs[i] + len(segs[seqs[i]]) == seqs[i + 1] for i in range(len(seqs) - 1))
    assert stream == data


def _complete(f: bytes, ipv6: bool) -> bytes:
    """A partial-checksum TCP frame with its checksum finished as a NIC would (skb_checksum_help)."""
    b = np.frombuffer(bytearray(f), np.uint8).copy()
    th = 14 + (40 if ipv6 else 20)
    skb_checksum_help(b, th, len(b), th + 16)
    return b.tobytes()


def _tcp_csum_ok(f: bytes, l3) -> bool:
    e = Ether(f)
    want = e[TCP].chksum
    del e[TCP].chksum
    return Ether(bytes(e))[TCP].chksum == want


@both_rings
@pytest.mark.parametrize("pair", [False, True], ids=["tcp4", "tcp6"], indirect=True)
def test_tso_super_packets_kept_whole_with_gso(pair, ring):
    """With gso, the peer stack's TSO super-packets arrive one per slot with their gso word (TCPv4 or
    TCPv6, gso_size = MSS) and the pseudo-header sum in the check field (CHECKSUM_PARTIAL): finished
    as a NIC would, Scapy accepts it; the stream reassembles to what was sent."""
    ipv6 = pair.ipv6
    port = open_port(pair, rx_ring=ring, gso=True)
    sh("ip", "netns", "exec", pair.a, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 1048576 8388608")
    a, _ = _neigh_setup(pair, ipv6)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    with inside(pair.a):
        srv = socket.socket(family, socket.SOCK_STREAM)
    with inside(pair.b):
        cli = socket.socket(family, socket.SOCK_STREAM)
    data = bytes((i * 31 + i // 251) % 256 for i in range(1 << 19))
    srv.bind((a, 5001))
    srv.listen(1)
    received = bytearray()

    def serve():
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    server = threading.Thread(target=serve)
    server.start()
    cli.settimeout(10)
    cli.connect((a, 5001))
    sender = threading.Thread(target=lambda: (cli.sendall(data), cli.shutdown(socket.SHUT_WR)))
    sender.start()
    frames, end = [], time.monotonic() + 20
    b = PacketBatch(64, slot=GSO_SLOT)
    with port, srv, cli:
        while (sender.is_alive() or server.is_alive()) and time.monotonic() < end:
            b.clear()
            port.rx_burst(b, 0)
            frames += [(b.frame_bytes(i), int(b.verdict[i]), int(b.gso[i])) for i in range(b.n)]
            server.join(0.0005)
        end = time.monotonic() + 0.1  # what the ring still holds (a block waits for its retire timer)
        while time.monotonic() < end:
            b.clear()
            port.rx_burst(b, 0)
            frames += [(b.frame_bytes(i), int(b.verdict[i]), int(b.gso[i])) for i in range(b.n)]
        c = port.counters()
    sender.join()
    server.join()
    assert bytes(received) == data
    l3 = IPv6 if ipv6 else IP
    segs, whole = {}, 0
    for f, v, g in frames:
        e = Ether(f)
        if TCP not in e or e[TCP].dport != 5001 or not len(e[TCP].payload):
            continue
        assert v == 0
        if g:
            whole += 1
            assert g >> 16 == (VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else VIRTIO_NET_HDR_GSO_TCPV4)
            assert len(e[TCP].payload) > g & 0xFFFF and (g & 0xFFFF) <= 1500
            assert _tcp_csum_ok(_complete(f, ipv6), l3)
        else:
            assert len(f) <= 1514 and _tcp_csum_ok(f, l3)
        segs[e[TCP].seq] = bytes(e[TCP].payload)
    assert whole > 0 and c["rx_gso_packets"] >= whole and c["rx_missed"] == 0, (whole, c)
    seqs = sorted(segs)
    assert all(seqs[i] + len(segs[seqs[i]]) == seqs[i + 1] for i in range(len(seqs) - 1))
    assert b"".join(segs[s] for s in seqs) == data


def _gso_frame(ipv6: bool, payload: int, mss: int) -> bytes:
    """A TCP super-packet as a stack hands it to TSO: the check field holds the pseudo-header sum."""
    l3 = IPv6(src="fd00:77::1", dst="fd00:77::2") if ipv6 else IP(src="10.77.0.1", dst="10.77.0.2", id=7)
    pkt = Ether(src=PORT_MAC, dst=PEER_MAC) / l3 / TCP(sport=4000, dport=5002, flags="A", seq=1000)
    pkt = Ether(bytes(pkt / bytes(i % 251 for i in range(payload))))
    b = np.frombuffer(bytearray(bytes(pkt)), np.uint8).copy()
    nh, th = 14, 14 + (40 if ipv6 else 20)
    b[th + 16 : th + 18] = 0
    ps = l4_pseudo_sum(b, nh, ipv6, 6, len(b) - th)
    b[th + 16], b[th + 17] = ps >> 8, ps & 0xFF
    return b.tobytes()


@pytest.mark.parametrize("pair", [False, True], ids=["tcp4", "tcp6"], indirect=True)
def test_gso_frame_sent_whole_with_its_vnet_header(pair):
    """tx_burst of a slot holding a 20 000-byte TCP super-packet (gso word set) reaches the peer as
    one GSO skb: a PACKET_VNET_HDR socket there reads gso_type, gso_size and NEEDS_CSUM with the
    frame unchanged; an ordinary frame in the same burst arrives with a vnet header of zeros."""
    ipv6 = pair.ipv6
    port = open_port(pair, gso=True)
    proto = 0x86DD if ipv6 else 0x0800
    with inside(pair.b):
        peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    peer.setsockopt(SOL_PACKET, 15, 1)  # PACKET_VNET_HDR
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    peer.bind((pair.pb, proto))
    peer.settimeout(2.0)
    big, small = _gso_frame(ipv6, 20000, 1400), _gso_frame(ipv6, 100, 1400)
    gtype = VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else VIRTIO_NET_HDR_GSO_TCPV4
    b = PacketBatch(4, slot=GSO_SLOT)
    b.append(big, 7, 0)
    b.gso[0] = gtype << 16 | 1400
    b.append(_complete(small, ipv6), 7, 0)
    with port, peer:
        assert port.tx_burst(b, np.array([0, 1], np.int32)) == 2
        port.flush()
        got = [peer.recv(1 << 17) for _ in range(2)]
        c = port.counters()
    assert c["tx_errors"] == 0 and c["tx_packets"] == 2
    flags, gso_type, hdr_len, gso_size, cstart, coff = struct.unpack("<BBHHHH", got[0][:10])
    assert got[0][10:] == big
    assert (flags, gso_type, gso_size, cstart, coff) == (1, gtype, 1400, 14 + (40 if ipv6 else 20), 16)
    assert got[1][:10] == bytes(10) and got[1][10:] == _complete(small, ipv6)


@pytest.mark.parametrize("pair", [True], indirect=True)
def test_kernel_if_reads_the_link_and_prepare_restore(pair):
    """kernel_link reads MAC, MTU and ifindex as `ip link` shows them; ipv4_addrs every address;
    prepare_port turns IPv6 off (the link-local address goes), arp_ignore 8, the link up;
    restore_port puts each back."""
    sh("ip", "-n", pair.a, "link", "set", pair.pa, "down", "mtu", "1400")
    ifindex = int(sh("ip", "-n", pair.a, "-o", "link", "show", "dev", pair.pa).stdout.split(":")[0])
    with inside(pair.a):
        link = kernel_if.kernel_link(pair.pa)
        assert (link.mac_str, link.mtu, link.ifindex, link.up) == (PORT_MAC, 1400, ifindex, False)
        assert kernel_if.kernel_link("nosuchif0") is None
        assert not kernel_if.has_ipv4(pair.pa) and kernel_if.ipv4_addrs(pair.pa) == []
        sh("ip", "addr", "add", "10.79.0.1/24", "dev", pair.pa)
        sh("ip", "addr", "add", "10.79.1.1/16", "dev", pair.pa)
        assert [str(x) for x in kernel_if.ipv4_addrs(pair.pa)] == ["10.79.0.1/24", "10.79.1.1/16"]
        assert kernel_if.has_ipv4(pair.pa) and kernel_if.has_ipv4("lo")
        sh("ip", "link", "set", pair.pa, "up")
        end = time.monotonic() + 5
        while not (v6 := kernel_if.ipv6_addrs(pair.pa)) and time.monotonic() < end:
            time.sleep(0.05)
        assert [(a.address.is_link_local, a.scope, a.prefixlen) for a in v6] == [(True, "link", 64)]
        sh("ip", "link", "set", pair.pa, "down")
        prep = kernel_if.prepare_port(pair.pa)
        assert kernel_if.kernel_link(pair.pa).up and kernel_if.ipv6_addrs(pair.pa) == []
        conf = f"/proc/sys/net/%s/conf/{pair.pa}/%s"
        assert open(conf % ("ipv6", "disable_ipv6")).read().strip() == "1"
        assert open(conf % ("ipv4", "arp_ignore")).read().strip() == "8"
        assert prep.brought_up and prep.disable_ipv6 == "0" and prep.arp_ignore == "0"
        kernel_if.restore_port(prep)
        assert not kernel_if.kernel_link(pair.pa).up
        assert open(conf % ("ipv6", "disable_ipv6")).read().strip() == "0"
        assert open(conf % ("ipv4", "arp_ignore")).read().strip() == "0"
        with pytest.raises(PortError, match="nosuchif0: no such interface"):
            kernel_if.prepare_port("nosuchif0")


def test_port_on_a_down_or_missing_link_is_a_port_error(pair):
    sh("ip", "-n", pair.a, "link", "set", pair.pa, "down")
    with pytest.raises(PortError, match="lan0: link fpa0 is down"):
        open_port(pair)
    with pytest.raises(PortError, match="no kernel interface 'nosuchif0'"), inside(pair.a):
        AfPacketPort("lan0", 7, "nosuchif0")


def test_link_down_and_vanished_interface_raise_port_error(pair):
    """packet_notifier: the link going down sets ENETDOWN on the socket (POLLERR): rx_burst raises
    PortError saying so; once the interface is deleted, sending raises PortError (ENXIO)."""
    port = open_port(pair)
    b = PacketBatch(8)
    with port:
        assert port.rx_burst(b, 0) == 0
        sh("ip", "-n", pair.a, "link", "set", pair.pa, "down")
        with pytest.raises(PortError, match="lan0: link fpa0 went down"):
            end = time.monotonic() + 2  # an idle port asks the socket at most once a millisecond
            while time.monotonic() < end:
                port.rx_burst(b, 0)
        sh("ip", "-n", pair.a, "link", "del", pair.pa)
        assert port.tx_frame(frame(1, 60))
        with pytest.raises(PortError, match="lan0: interface fpa0 vanished"):
            port.flush()
    port.close()  # twice is fine
    assert port.fileno() == -1


def _drain_both(ports, keep, settle: float, capacity: int, slot: int):
    """rx_burst every port until `settle` seconds pass with nothing new; {port: [(bytes, verdict, gso)]}."""
    out = {p: [] for p in ports}
    b = PacketBatch(capacity, slot=slot)
    last = time.monotonic()
    while time.monotonic() - last < settle:
        for p in ports:
            b.clear()
            if p.rx_burst(b, 0):
                last = time.monotonic()
            out[p] += [(b.frame_bytes(i), int(b.verdict[i]), int(b.gso[i])) for i in range(b.n)
                       if keep(b.frame_bytes(i))]  # fmt: skip
        time.sleep(0.0002)
    return out


@pytest.mark.parametrize("gso", [False, True], ids=["segmented", "gso"])
def test_v2_and_v3_rings_receive_the_same_frames(pair, gso):
    """A V2 and a V3 port on the same interface see the same traffic: plain frames of 60..1514
    bytes, 802.1Q and QinQ tagged ones, UDP and TCP from the peer's stack (checksums left partial)
    and a 256 KiB TCP stream (TSO super-packets, kept whole with gso, else segmented). Both hand
    out the same slots, byte for byte, with the same verdicts and gso words; a small V2 ring of 2 KiB
    frames cuts the super-packets instead (PACKET_RX_TRUNCATED), which is why the default frame
    holds 64 KiB."""
    sh("ip", "netns", "exec", pair.a, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 1048576 8388608")
    a, _ = _neigh_setup(pair, False)
    v2, v3 = open_port(pair, rx_ring="v2", gso=gso), open_port(pair, rx_ring="v3", gso=gso)
    small = open_port(pair, rx_ring="v2", rx_frames=64, rx_frame_size=2048, gso=gso)
    peer = peer_socket(pair, 0x0003)
    with inside(pair.a):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with inside(pair.b):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((a, 5003))
    srv.listen(1)
    data = bytes((i * 7 + i // 253) % 256 for i in range(1 << 18))
    received = bytearray()

    def serve():
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    server = threading.Thread(target=serve)
    server.start()
    tagged = frame(5, 300)[:12] + b"\x81\x00\x00\x64" + frame(5, 300)[12:]
    qinq = frame(6, 900)[:12] + b"\x88\xa8\x0f\xff\x81\x00\x20\x05" + frame(6, 900)[12:]
    mine = lambda f: f[26:30] == bytes([10, 77, 0, 2]) or ETH_P_TEST.to_bytes(2, "big") in (f[12:14], f[16:18], f[20:22])  # noqa: E731
    ports = (v2, v3, small)
    with v2, v3, small, peer, srv, cli, u:
        for k, size in enumerate([60, 61, 128, 1000, 1514, 333]):
            peer.send(frame(k, size))
        peer.send(tagged)
        peer.send(qinq)
        u.sendto(b"partial" * 100, (a, 9999))
        cli.settimeout(10)
        cli.connect((a, 5003))
        cli.sendall(data)
        cli.shutdown(socket.SHUT_WR)
        got = {p: [] for p in ports}
        end = time.monotonic() + 20
        while server.is_alive() and time.monotonic() < end:
            for p, fs in _drain_both(ports, mine, 0.001, 64, GSO_SLOT).items():
                got[p] += fs
            server.join(0.0005)
        for p, fs in _drain_both(ports, mine, 0.1, 64, GSO_SLOT).items():  # the V3 ring's last block
            got[p] += fs
        counters = {p: p.counters() for p in ports}
    server.join()
    assert bytes(received) == data
    assert len(got[v2]) > 20 and got[v2] == got[v3]
    assert counters[v2]["rx_gso_packets"] == counters[v3]["rx_gso_packets"] > 0
    assert counters[v2]["rx_csum_completed"] == counters[v3]["rx_csum_completed"] > 0
    assert counters[v2]["rx_missed"] == counters[v3]["rx_missed"] == 0
    assert any(g for _, _, g in got[v2]) == gso
    cut = [f for f, v, _ in got[small] if v == int(Reason.PACKET_RX_TRUNCATED)]
    assert cut and all(len(f) == 2048 - 76 for f in cut)  # frame_size - tpacket_rcv's macoff

    def not_tcp(fs):
        return [x for x in fs if not (x[0][12:14] == b"\x08\x00" and x[0][23] == 6)]

    assert len(not_tcp(got[v2])) == 9 and not_tcp(got[small]) == not_tcp(got[v2])


def test_v2_lone_frame_is_ready_at_once(pair):
    """A V2 ring hands a lone frame over as soon as the kernel wrote it: poll(2) on the port's
    descriptor wakes and rx_burst returns it within a millisecond of the send, every time (a V3
    block would wait for its retire timer, 1..4 ms with HZ=250)."""
    port, peer = open_port(pair, rx_ring="v2"), peer_socket(pair)
    p = select.poll()
    p.register(port.fileno(), select.POLLIN)
    b = PacketBatch(8)
    waits = []
    with port:
        collect(port, 0, timeout=0.05)  # whatever the link said when it came up
        while port.rx_burst(b, 0):
            b.clear()
        for k in range(20):
            f = frame(k, 100)
            t0 = time.perf_counter()
            peer.send(f)
            assert p.poll(100), "poll did not wake"
            b.clear()
            n = port.rx_burst(b, 0)
            waits.append(time.perf_counter() - t0)
            assert n >= 1 and any(b.frame_bytes(i) == f for i in range(b.n))
            while port.rx_burst(b, 0):
                b.clear()
    waits.sort()
    assert waits[len(waits) // 2] < 0.001 and waits[-2] < 0.005, waits

"""IPv4 and IPv6 fragmentation: Scapy reassembles our fragments; Linux, forwarding in namespaces, makes
the same bytes. A datagram nf_defrag reassembled leaves cut where it came (the frag_list fast path).

Linux: net/ipv4/ip_output.c › ip_do_fragment, ip_fraglist_prepare, ip_frag_next; net/ipv4/ip_options.c ›
ip_options_fragment; net/ipv6/ip6_output.c › ip6_fragment; net/ipv6/output_core.c › ip6_find_1stfragopt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (
    IP,
    UDP,
    Dot1Q,
    Ether,
    IPOption,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    defragment,
    defragment6,
    rdpcap,
)

from flowpath.packet.fragment import (
    ip6_find_1stfragopt,
    ip6_fragment,
    ip_do_fragment,
    ip_is_fragment,
    ip_options_fragment,
)

MAC_A, MAC_R0, MAC_R1, MAC_C = (
    "02:00:00:00:00:0a",
    "02:00:00:00:00:01",
    "02:00:00:00:00:02",
    "02:00:00:00:00:0c",
)
OPT_EXP_COPIED = b"\x9e\x04\xab\xcd"  # RFC 4727 experiment option 158: copied flag set
OPT_EXP_NOCOPY = b"\x1e\x06\x01\x02\x03\x04"  # option 30: copied flag clear
OPT_RA = b"\x94\x04\x00\x00"  # router alert (RFC 2113), copied


def expected_later_options(opts: bytes) -> bytes:
    """Plain-Python reference of ip_options_fragment: non-copied options become NOOPs, stop at END."""
    out, i = bytearray(opts), 0
    while i < len(out) and out[i] != 0:
        if out[i] == 1:
            i += 1
            continue
        n = out[i + 1]
        if n < 2 or n > len(out) - i:
            break
        if not out[i] & 0x80:
            out[i : i + n] = b"\x01" * n
        i += n
    return bytes(out)


def packet(
    payload: int, opts: bytes = b"", frag: int = 0, mf: bool = False, vlan: bool = False, ident=0x1234
):
    l2 = Ether(src=MAC_A, dst=MAC_R0) / Dot1Q(vlan=5) if vlan else Ether(src=MAC_A, dst=MAC_R0)
    ip = IP(src="10.1.0.2", dst="10.2.0.2", id=ident, frag=frag, flags="MF" if mf else 0, tos=0x10)
    if opts:
        ip.options = [IPOption(opts)]
    body = UDP(sport=4000, dport=5000) / Raw(bytes(i & 0xFF for i in range(payload)))
    return l2 / ip / body


def test_linux_sizes_for_1500_bytes_over_576():
    """1480 data bytes over MTU 576: 552 + 552 + 376 (556 rounded down to 8), offsets 0, 69, 138."""
    p = packet(1480 - 8)
    frags = [Ether(f) for f in ip_do_fragment(bytes(p), 14, 576)]
    assert [f[IP].len for f in frags] == [572, 572, 396]
    assert [f[IP].frag for f in frags] == [0, 69, 138]
    assert [int(f[IP].flags) for f in frags] == [1, 1, 0]
    assert all(f[IP].id == 0x1234 and f[IP].tos == 0x10 for f in frags)


def test_zero_header_checksum_written_as_zero():
    """ip_send_check zeroes the field before ip_fast_csum: a fragment whose checksum is 0x0000 gets
    0x0000, not 0xFFFF, although the header copied from the original holds another value."""
    c0 = Ether(ip_do_fragment(bytes(packet(1000, ident=0)), 14, 576)[0])[IP].chksum
    p = packet(1000, ident=c0)  # adding the checksum to the id word makes the header sum 0xFFFF
    assert p[IP].chksum != 0
    first = Ether(ip_do_fragment(bytes(p), 14, 576)[0])
    assert first[IP].chksum == 0x0000
    del first[IP].chksum
    assert Ether(bytes(first))[IP].chksum == 0x0000


def test_fitting_packet_is_returned_unchanged():
    b = bytes(packet(100, mf=True)) + b"\0" * 4  # Ethernet padding and MF stay: nothing to fragment
    assert ip_do_fragment(b, 14, 142) == [b]


def test_bad_input_raises_value_error():
    b = bytes(packet(100))
    with pytest.raises(ValueError):
        ip_do_fragment(b[:20], 14, 68)
    with pytest.raises(ValueError):
        ip_do_fragment(b, 14, 27)  # 20-byte header + 7: no room for 8 data bytes
    with pytest.raises(ValueError):
        ip_do_fragment(bytes(Ether(src=MAC_A, dst=MAC_R0) / Raw(b"\x60" + b"\0" * 40)), 14, 68)


def test_ip_options_fragment_stops_at_end_and_bad_lengths():
    hdr = bytearray(20) + bytearray(OPT_EXP_NOCOPY + b"\x00" + b"\x1e\x02" + b"\x00")
    ip_options_fragment(hdr)
    assert hdr[20:] == b"\x01" * 6 + b"\x00\x1e\x02\x00"
    hdr = bytearray(20) + bytearray(b"\x1e\x09\x01\x02" + OPT_EXP_NOCOPY[:4])  # length past the end
    ip_options_fragment(hdr)
    assert hdr[20:] == b"\x1e\x09\x01\x02" + OPT_EXP_NOCOPY[:4]


option_lists = st.lists(
    st.sampled_from([OPT_EXP_COPIED, OPT_EXP_NOCOPY, OPT_RA, b"\x01", b"\x07\x07\x04" + bytes(4)]), max_size=5
).map(lambda xs: b"".join(xs)[:40])


@settings(max_examples=100, deadline=None)
@given(
    payload=st.integers(0, 3000),
    mtu=st.integers(68, 1600),
    opts=option_lists,
    frag=st.integers(0, 300),
    mf=st.booleans(),
    vlan=st.booleans(),
)
def test_fragments_follow_linux_rules(payload, mtu, opts, frag, mf, vlan):
    """Sizes ≤ mtu, 8-byte multiples but the last, offsets continuing the input's, MF on all but the last
    (and on the last when the input had MF), DF clear, options per ip_options_fragment (only when the
    input was a first fragment), a header checksum Scapy agrees with, the L2 header copied."""
    p = packet(payload, opts, frag, mf, vlan)
    p[IP].flags |= 2 * (payload % 2)  # DF sometimes: ip_do_fragment clears it
    b = bytes(p)
    nhoff = 18 if vlan else 14
    hlen = (b[nhoff] & 0x0F) * 4
    frags = ip_do_fragment(b, nhoff, mtu)
    if len(b) - nhoff <= mtu:
        assert frags == [b]
        return
    data = b[nhoff + hlen :]
    later_opts = (
        b[nhoff + 20 : nhoff + hlen] if frag else expected_later_options(b[nhoff + 20 : nhoff + hlen])
    )
    pos = 0
    for k, f in enumerate(frags):
        last = k == len(frags) - 1
        assert f[:nhoff] == b[:nhoff]
        ip = Ether(f)[IP]
        n = ip.len - hlen
        assert ip.len <= mtu and len(f) == nhoff + ip.len and ip.ihl * 4 == hlen
        assert last or n % 8 == 0
        assert ip.frag * 8 == frag * 8 + pos
        assert int(ip.flags) == (1 if (not last or mf) else 0)
        assert f[nhoff + 20 : nhoff + hlen] == (b[nhoff + 20 : nhoff + hlen] if k == 0 else later_opts)
        assert f[nhoff + hlen :] == data[pos : pos + n]
        check = ip.chksum
        del ip.chksum
        assert IP(bytes(ip)).chksum == check
        pos += n
    assert pos == len(data)
    assert all(ip_is_fragment(f, nhoff) for f in frags)


@settings(max_examples=50, deadline=None)
@given(payload=st.integers(0, 4000), mtu=st.integers(68, 1500), opts=option_lists)
def test_scapy_defragment_rebuilds_the_packet(payload, mtu, opts):
    p = packet(payload, opts)
    frags = ip_do_fragment(bytes(p), 14, mtu)
    (whole,) = defragment([Ether(f) for f in frags])
    assert bytes(whole[IP]) == bytes(p[IP])


# -- a datagram nf_defrag reassembled: IPCB(skb)->frag_max_size, frag_list, IPSKB_FRAG_PMTU ---------


def naive_fraglist(b: bytes, nhoff: int, pieces: list[int]) -> list[bytes]:
    """Plain-Python reference of ip_fraglist_init / ip_fraglist_prepare, built with Scapy: piece k
    carries the datagram's header with offset and MF (but on the last), DF clear, non-copied options
    made NOOPs from the second piece on."""
    p = Ether(b)
    hlen = p[IP].ihl * 4
    opts = bytes(p[IP])[20:hlen]
    data, out, pos = bytes(p[IP])[hlen:], [], 0
    for k, n in enumerate(pieces):
        ip = p[IP].copy()
        ip.remove_payload()
        ip.options = [IPOption(opts if k == 0 else expected_later_options(opts))] if opts else []
        ip.flags, ip.frag, ip.len, ip.chksum = (1 if k < len(pieces) - 1 else 0), pos // 8, None, None
        out.append(b[:nhoff] + bytes(ip / Raw(data[pos : pos + n])))
        pos += n
    return out


@st.composite
def geometries(draw, total: int) -> list[int]:
    """How a sender could have cut `total` (>= 16) data bytes: 8-byte multiples but the last, at least
    two pieces (one would not have been a fragment)."""
    pieces, left = [], total
    while left > 0:
        n = min(left if pieces else (left - 1) & ~7, draw(st.integers(1, 190)) * 8)
        pieces.append(n)
        left -= n
    return pieces


@settings(max_examples=100, deadline=None)
@given(data=st.data(), payload=st.integers(8, 4000), opts=option_lists, df=st.booleans())
def test_reassembled_datagram_leaves_cut_where_it_came(data, payload, opts, df):
    """ip_do_fragment's frag_list fast path: when every original piece fits, the fragments are the
    original ones (sizes, offsets) whatever their sizes, MF but on the last, DF cleared even with
    IPSKB_FRAG_PMTU (seen on Linux 6.18 in namespaces), options NOOPed after the first."""
    p = packet(payload, opts)
    p[IP].flags = 2 if df else 0
    b = bytes(p)
    hlen = (b[14] & 0x0F) * 4
    pieces = data.draw(geometries(len(b) - 14 - hlen))
    fms = hlen + max(pieces)
    mtu = data.draw(st.integers(fms, 1600))
    got = ip_do_fragment(b, 14, mtu, frag_max_size=fms, frag_list=tuple(pieces[1:]), frag_pmtu=df)
    assert got == naive_fraglist(b, 14, pieces)
    (whole,) = defragment([Ether(f) for f in got])
    assert bytes(whole[IP].payload) == bytes(p[IP].payload)


def test_reassembled_datagram_over_the_route_mtu_takes_the_slow_path():
    """A piece over the route's MTU: the slow path cuts at the MTU (Linux, 1480-byte fragments forwarded
    through a 1400-byte MTU: 1396 + 1396 + 348 bytes); frag_max_size caps the size when no geometry is
    kept; IPSKB_FRAG_PMTU keeps DF on every slow-path fragment."""
    b = bytes(packet(3072))  # 3080 bytes of data, as the namespaces' test sent
    slow = ip_do_fragment(b, 14, 1400, frag_max_size=1500, frag_list=(1480, 120))
    assert [Ether(f)[IP].len for f in slow] == [1396, 1396, 348]
    assert [int(Ether(f)[IP].flags) for f in slow] == [1, 1, 0]
    capped = ip_do_fragment(b, 14, 1500, frag_max_size=620)
    assert [Ether(f)[IP].len for f in capped] == [620] * 5 + [100]
    pmtu = ip_do_fragment(b, 14, 1400, frag_max_size=1500, frag_list=(1480, 120), frag_pmtu=True)
    assert [int(Ether(f)[IP].flags) for f in pmtu] == [3, 3, 2]
    assert [f[: 14 + 6] + f[14 + 7 :] for f in pmtu] != slow  # only DF (and the checksum) differ
    assert all(IP(bytes(Ether(f)[IP])).chksum == Ether(f)[IP].chksum for f in pmtu)


V6 = dict(src="2001:db8:1::10", dst="2001:db8:2::7", hlim=63)
EXT = {  # (headers before the upper layer, how many of them ip6_find_1stfragopt keeps unfragmentable)
    "none": ([], 0),
    "hbh": ([IPv6ExtHdrHopByHop()], 1),
    "dst": ([IPv6ExtHdrDestOpt()], 1),  # no routing header after it: still unfragmentable
    "hbh_rt_dst": (
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["2001:db8::1"]), IPv6ExtHdrDestOpt()],
        2,
    ),
}


def packet6(payload: int, ext: str):
    p = IPv6(**V6)
    for h in EXT[ext][0]:
        p = p / h
    return (
        Ether(src=MAC_A, dst=MAC_R0)
        / p
        / UDP(sport=4000, dport=5000)
        / Raw(bytes(i & 0xFF for i in range(payload)))
    )


_PROTO = {IPv6ExtHdrHopByHop: 0, IPv6ExtHdrRouting: 43, IPv6ExtHdrDestOpt: 60}


def test_ip6_find_1stfragopt():
    """The unfragmentable part ends after hop-by-hop and routing headers, and after destination options
    unless a routing header came before them; `prev` points at the byte naming what follows."""
    for ext, (hdrs, keep) in EXT.items():
        b = bytes(packet6(10, ext))
        hlen, prev = ip6_find_1stfragopt(b, 14)
        assert hlen == 40 + sum(len(bytes(h)) - len(bytes(h.payload)) for h in hdrs[:keep]), ext
        assert b[14 + prev] == (_PROTO[type(hdrs[keep])] if keep < len(hdrs) else 17), ext


def check_fragments6(b: bytes, frags: list[bytes], hlen: int, frag_id: int) -> list[int]:
    """Each fragment: b's unfragmentable part (the byte naming what followed it now names the fragment
    header, 44), a fragment header, data at the right offset; Scapy's defragment6 rebuilds b. Returns
    the data sizes."""
    _, prev = ip6_find_1stfragopt(b, 14)
    unfrag = bytearray(b[: 14 + hlen])
    unfrag[14 + prev] = 44
    sizes, pos = [], 0
    for k, f in enumerate(frags):
        fh = Ether(f)[IPv6ExtHdrFragment]
        assert f[:18] == unfrag[:18] and f[20 : 14 + hlen] == unfrag[20:]  # all but the payload length
        assert (fh.id, fh.offset * 8, fh.m) == (frag_id, pos, int(k < len(frags) - 1))
        assert Ether(f)[IPv6].plen == len(f) - 14 - 40
        n = len(f) - 14 - hlen - 8
        assert f[14 + hlen + 8 :] == b[14 + hlen + pos : 14 + hlen + pos + n]
        sizes.append(n)
        pos += n
    assert pos == len(b) - 14 - hlen
    assert bytes(defragment6([Ether(f)[IPv6] for f in frags])) == b[14:]
    return sizes


@settings(max_examples=100, deadline=None)
@given(data=st.data(), payload=st.integers(1300, 6000), ext=st.sampled_from(sorted(EXT)))
def test_ip6_fragment_cuts_at_the_mtu_or_where_it_came(data, payload, ext):
    """ip6_fragment: the slow path fills the MTU with 8-byte multiples but the last; a datagram with a
    kept geometry (frag_list) leaves cut where it came; the fragment id is the one given."""
    b = bytes(packet6(payload, ext))
    hlen, _ = ip6_find_1stfragopt(b, 14)
    mtu = data.draw(st.integers(1280, 1500))
    slow = check_fragments6(b, ip6_fragment(b, 14, mtu, 0xCAFE), hlen, 0xCAFE)
    assert all(n % 8 == 0 and n + hlen + 8 <= mtu for n in slow[:-1]) and slow[-1] + hlen + 8 <= mtu
    assert len(slow) == 1 or slow[0] + hlen + 8 > mtu - 8  # filled up to the MTU
    pieces = data.draw(geometries(len(b) - 14 - hlen))
    fms = hlen + 8 + max(pieces)
    fast = ip6_fragment(b, 14, max(fms, 1280), 7, frag_max_size=fms, frag_list=tuple(pieces[1:]))
    assert check_fragments6(b, fast, hlen, 7) == pieces


def test_ip6_fragment_small_original_fragments_use_the_minimum_mtu():
    """frag_max_size below IPV6_MIN_MTU counts as 1280 (ip6_fragment), so without a usable geometry the
    slow path cuts 1232-byte pieces, not the original's 600."""
    b = bytes(packet6(3000, "none"))
    frags = ip6_fragment(b, 14, 1500, 1, frag_max_size=648, frag_list=(1204, 1204))  # 1204: not on 8 bytes
    assert check_fragments6(b, frags, 40, 1) == [1232, 1232, 544]


# Live oracle: A --veth-- R (forwarding, r1 MTU 576) --veth-- C. What tcpdump sees on C must be our
# fragments of A's frame after R's forwarding (TTL - 1, new MACs).

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("tcpdump") and shutil.which("ip")),
    reason="needs root (network namespaces), tcpdump and ip",
)

_SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
    "s.bind(('a0', 0))\n"
    "for h in sys.argv[1:]:\n"
    "    s.send(bytes.fromhex(h))\n"
)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def linux_router():
    tag = uuid.uuid4().hex[:6]
    a, r, c = f"fpfrag_a{tag}", f"fpfrag_r{tag}", f"fpfrag_c{tag}"
    for ns in (a, r, c):
        sh("ip", "netns", "add", ns)
    try:
        sh(
            "ip",
            "-n",
            r,
            "link",
            "add",
            "r0",
            "address",
            MAC_R0,
            "type",
            "veth",
            "peer",
            "name",
            "a0",
            "netns",
            a,
        )
        sh(
            "ip",
            "-n",
            r,
            "link",
            "add",
            "r1",
            "address",
            MAC_R1,
            "type",
            "veth",
            "peer",
            "name",
            "c0",
            "netns",
            c,
        )
        sh("ip", "-n", a, "link", "set", "a0", "address", MAC_A, "up")
        sh("ip", "-n", c, "link", "set", "c0", "address", MAC_C, "up")
        sh("ip", "-n", r, "link", "set", "r0", "up")
        sh("ip", "-n", r, "link", "set", "r1", "mtu", "576", "up")
        sh("ip", "-n", r, "addr", "add", "10.1.0.1/24", "dev", "r0")
        sh("ip", "-n", r, "addr", "add", "10.2.0.1/24", "dev", "r1")
        sh("ip", "-n", r, "neigh", "add", "10.2.0.2", "lladdr", MAC_C, "dev", "r1", "nud", "permanent")
        sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        wait_lower_up([(a, "a0"), (r, "r0"), (r, "r1"), (c, "c0")])
        yield a, c
    finally:
        for ns in (a, r, c):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def wait_lower_up(links: list[tuple[str, str]], timeout_s: float = 5.0) -> None:
    """veth carrier comes up asynchronously; frames sent before it are lost."""
    deadline = time.monotonic() + timeout_s
    for ns, dev in links:
        while (
            "LOWER_UP"
            not in subprocess.run(
                ["ip", "-n", ns, "link", "show", dev], capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline, f"{dev} in {ns} never came up"
            time.sleep(0.02)


def linux_forward(linux_router, frames: list[bytes], tmp_path) -> list[bytes]:
    a, c = linux_router
    out = tmp_path / "c0.pcap"
    cmd = [
        "ip",
        "netns",
        "exec",
        c,
        "tcpdump",
        "-i",
        "c0",
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-n",
        "-w",
        str(out),
        "ip",
    ]
    dump = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        dump.stderr.readline()  # listening
        sh("ip", "netns", "exec", a, "python3", "-c", _SEND, *[f.hex() for f in frames])
        time.sleep(0.3)
    finally:
        dump.terminate()
        dump.wait()
    return [p.original for p in rdpcap(str(out))]


def as_forwarded(p) -> bytes:
    """A's frame as R sends it before fragmenting: new MACs, TTL - 1 (ip_forward), checksum redone."""
    q = p.copy()
    q[Ether].src, q[Ether].dst = MAC_R1, MAC_C
    q[IP].ttl -= 1
    del q[IP].chksum
    return bytes(q)


@pytest.mark.root
@needs_root
def test_same_bytes_as_linux_forwarding(linux_router, tmp_path):
    """Whole packets, options (copied, not copied, router alert), first, middle and last fragments."""
    sent = [
        packet(1400, ident=1),
        packet(1000, OPT_EXP_COPIED + OPT_EXP_NOCOPY + b"\x01\x00", ident=2),
        packet(1000, OPT_RA + OPT_EXP_NOCOPY + b"\x01\x01", mf=True, ident=3),
        packet(1200, OPT_EXP_NOCOPY + OPT_EXP_COPIED + b"\x00\x00", frag=185, mf=True, ident=4),
        packet(997, frag=300, ident=5),
        packet(548, ident=6),  # exactly 576 bytes of IP: not fragmented
    ]
    got = linux_forward(linux_router, [bytes(p) for p in sent], tmp_path)
    want = [f for p in sent for f in ip_do_fragment(as_forwarded(p), 14, 576)]
    assert len(want) == 3 + 2 + 2 + 3 + 2 + 1  # 552-byte pieces (544 with a 32-byte header)
    assert got == want

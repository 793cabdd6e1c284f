"""Transport headers and fields of issue 18 on real packets: the VM, the closures and the kernel agree.

Linux: net/netfilter/nft_payload.c › nft_payload_eval (sctp, dccp, udplite, ah, esp, comp and igmp
fields, raw `@base,offset,len` loads), nft_exthdr.c › nft_exthdr_sctp_eval (chunks; `exists` stores
false rather than break, so `sctp chunk data missing` matches a TCP packet too), nftables
src/payload.c › payload_gen_icmp_dependency (icmp id/sequence/mtu and icmpv6 mtu/max-delay only for
their ICMP types) and src/netlink_delinearize.c (tcp flags binops). Each case is one rule with the
packets it must match and must not; a root-only test sends them all through a namespace's input hook
and compares the kernel's rule counters with ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6MLQuery, ICMPv6PacketTooBig, IPv6
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP, SCTPChunkData, SCTPChunkInit
from scapy.packet import Raw, raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import FakeCt, have_root_nft  # noqa: E402
from test_nft_kernel_diff import _SEND, B4, B6, _frame, _sh, assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402
from flowpath.packet.csum import ip_decrease_ttl  # noqa: E402
from flowpath.packet.skb import frame_array, skb_parse  # noqa: E402

A4, A6 = "10.7.0.1", "2001:db8:7::1"


def v4(l4, **kw):
    return IP(src=kw.pop("src", A4), dst=B4, **kw) / l4


def v6(l4, **kw):
    return IPv6(src=A6, dst=B6, **kw) / l4


def dccp(dport: int, type_byte: int):
    """struct dccp_hdr: ports, doff 3 (12 bytes), cscov/ccval, checksum, reserved:3 | type:4 | x:1, seq."""
    hdr = (5000).to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes([3, 0, 0, 0, type_byte, 0, 0, 1])
    return IP(src=A4, dst=B4, proto=33) / Raw(hdr)


def icmp_raw(type_: int, code: int, rest: bytes):
    return IP(src=A4, dst=B4, proto=1) / Raw(bytes([type_, code, 0, 0]) + rest)


# (rule, packets it matches, packets it does not match)
CASES = [
    ("sctp sport 5060 sctp vtag 0x11223344", [v4(SCTP(sport=5060, tag=0x11223344))],
     [v4(SCTP(sport=5060, tag=1)), v4(UDP(sport=5060))]),
    ("sctp chunk init exists", [v4(SCTP() / SCTPChunkData(data=b"abc") / SCTPChunkInit())],
     [v4(SCTP() / SCTPChunkData(data=b"abc")), v4(TCP())]),
    ("sctp chunk init num-inbound-streams 10", [v4(SCTP() / SCTPChunkInit(n_in_streams=10))],
     [v4(SCTP() / SCTPChunkInit(n_in_streams=11)), v4(SCTP() / SCTPChunkData())]),
    ("sctp chunk data missing", [v4(SCTP() / SCTPChunkInit()), v4(TCP())], [v4(SCTP() / SCTPChunkData())]),
    ("dccp dport 5004 dccp type response", [dccp(5004, 0x02), dccp(5004, 0x03)],
     [dccp(5004, 0x04), dccp(5005, 0x02), v4(UDP(dport=5004))]),
    ("udplite csumcov 8 udplite dport 53", [IP(src=A4, dst=B4, proto=136) / UDP(dport=53, len=8)],
     [v4(UDP(dport=53, len=8)), IP(src=A4, dst=B4, proto=136) / UDP(dport=53, len=9)]),
    ("ah spi 0x100 ah sequence 1-100", [v4(AH(spi=0x100, seq=5, nh=6, icv=b"\0" * 12))],
     [v4(AH(spi=0x100, seq=200, nh=6, icv=b"\0" * 12)), v4(ESP(spi=0x100, seq=5))]),
    ("esp spi { 0x200, 0x201 } esp sequence > 5", [v4(ESP(spi=0x201, seq=6))],
     [v4(ESP(spi=0x201, seq=5)), v4(ESP(spi=0x202, seq=6))]),
    ("comp flags 0x0 comp cpi 2", [IP(src=A4, dst=B4, proto=108) / Raw(bytes([4, 0, 0, 2]))],
     [IP(src=A4, dst=B4, proto=108) / Raw(bytes([4, 0, 0, 3])), IP(src=A4, dst=B4, proto=108) / Raw(b"\4\1\0\2")]),
    ("igmp type leave-group igmp mrt 10", [IP(src=A4, dst=B4, proto=2) / Raw(bytes([0x17, 10, 0, 0, 224, 0, 0, 9]))],
     [IP(src=A4, dst=B4, proto=2) / Raw(bytes([0x16, 10, 0, 0, 224, 0, 0, 9]))]),
    ("icmp id 7 icmp sequence 1", [v4(ICMP(type=8, id=7, seq=1)), v4(ICMP(type=0, id=7, seq=1))],
     [v4(ICMP(type=13, id=7, seq=1)), v4(ICMP(type=8, id=7, seq=2))]),
    ("icmp mtu 1400", [icmp_raw(3, 4, (1400).to_bytes(4, "big"))],
     [v4(ICMP(type=8, id=0, seq=1400)), icmp_raw(3, 4, (1500).to_bytes(4, "big"))]),
    ("icmpv6 mtu 1280", [v6(ICMPv6PacketTooBig(mtu=1280))], [v6(ICMPv6EchoRequest(id=0, seq=1280))]),
    ("icmpv6 max-delay 100", [v6(ICMPv6MLQuery(mrd=100), hlim=1)], [v6(ICMPv6EchoRequest(id=100))]),
    ("tcp flags & (syn | ack) == syn | ack", [v4(TCP(flags="SA")), v4(TCP(flags="SAF"))], [v4(TCP(flags="S"))]),
    ("tcp flags ! fin,rst", [v4(TCP(flags="S")), v4(TCP(flags="PA"))], [v4(TCP(flags="F")), v4(TCP(flags="RA"))]),
    ("tcp flags { syn, syn | ack }", [v4(TCP(flags="S")), v4(TCP(flags="SA"))],
     [v4(TCP(flags="SAP")), v4(TCP(flags="A"))]),
    ("tcp flags & (fin | syn | rst | ack) == syn", [v4(TCP(flags="S")), v4(TCP(flags="SP"))], [v4(TCP(flags="SA"))]),
    ("tcp urgptr 5 tcp reserved 0 tcp doff 5", [v4(TCP(urgptr=5))],
     [v4(TCP(urgptr=6)), v4(TCP(urgptr=5, options=[("MSS", 1400)]))]),
    ("udp length 28 udp checksum != 0", [v4(UDP() / (b"u" * 20))], [v4(UDP(chksum=0) / (b"u" * 20)), v4(UDP())]),
    ("ip ecn ce ip hdrlength 5", [v4(UDP(), tos=3)], [v4(UDP(), tos=2)]),
    ("ip frag-off & 0x4000 != 0", [v4(UDP(), flags="DF")], [v4(UDP())]),
    ("ip6 ecn ect0 ip6 flowlabel 12345", [v6(UDP(), tc=2, fl=12345)], [v6(UDP(), tc=3, fl=12345)]),
    ("@nh,8,8 0x10", [v4(UDP(), tos=0x10), v6(UDP(), tc=1)], [v4(UDP(), tos=0x11)]),
    ("@ll,0,1 1", [Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src=A4, dst="10.7.0.255") / UDP()], [v4(UDP())]),
    ("meta l4proto tcp @th,16,16 22", [v4(TCP(dport=22))], [v4(UDP(dport=22))]),
    ("ip saddr & 0xffff0000 == 0x0a070000", [v4(UDP())], [v4(UDP(), src="10.9.0.5")]),
    ("ip saddr & 0xff == 1", [v4(UDP())], [v4(UDP(), src="10.7.0.5")]),
    ("icmp type redirect", [icmp_raw(5, 1, bytes(4))], [icmp_raw(8, 0, bytes(4))]),
]  # fmt: skip


def _text(rules: list[str], policy: str = "accept") -> str:
    body = "".join(f"\t\t{r}\n" for r in rules)
    return f"table inet t {{\n\tchain c {{\n\t\ttype filter hook input priority 0; policy {policy};\n{body}\t}}\n}}\n"


def _runtime(rules: list[str], policy: str = "accept") -> NftRuntime:
    return NftRuntime.from_json(parse_ruleset(_text(rules, policy)).to_json())


def _pkt(p) -> NftPktinfo:
    skb = skb_parse(frame_array(raw(_frame(p, "02:00:00:00:00:01", "02:00:00:00:00:02"))), 2)
    skb.ct, skb.ctinfo = FakeCt(), C.IP_CT_NEW
    nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
    return NftPktinfo(skb=skb, hooknum=C.NF_INET_LOCAL_IN, nfproto=nfproto, iifname="vb", iif=2)


@pytest.mark.parametrize(("rule", "hits", "misses"), CASES, ids=[c[0] for c in CASES])
def test_rule_matches_its_packets(rule, hits, misses):
    """`RULE drop` drops exactly the packets the header says it should, in the VM and the closures."""
    vm_rt, ref_rt = _runtime([f"{rule} drop"]), _runtime([f"{rule} drop"])
    (vm_chain,), (ref_chain,) = vm_rt.chains, ref_rt.chains
    for p, want in [(p, C.NF_DROP) for p in hits] + [(p, C.NF_ACCEPT) for p in misses]:
        assert nft_do_chain(vm_chain, _pkt(p)) == want, p.summary()
        assert nft_do_chain_closures(ref_chain, _pkt(p)) == want, p.summary()
    if "sctp chunk" not in rule:  # exthdr sctp stays with the closures (a PUNT)
        assert vm_rt.vm.compiled == [(1, 1)], "the VM runs the rule itself"
        assert not sum(vm_rt.nft_fallback().values())


def test_icmpv6_in_an_ip_table_depends_on_l4proto_only():
    """In an ip table nft's dependency for `icmpv6 type` is `meta l4proto ipv6-icmp` alone (nftables
    tests/py ip/meta.t.payload): an IPv4 packet carrying ICMPv6 matches, in the VM and the closures."""
    text = _text(["icmpv6 type destination-unreachable drop"]).replace("table inet", "table ip")
    vm_rt, ref_rt = (NftRuntime.from_json(parse_ruleset(text).to_json()) for _ in range(2))
    (vm_chain,), (ref_chain,) = vm_rt.chains, ref_rt.chains
    hit = IP(src=A4, dst=B4, proto=58) / Raw(bytes([1, 0, 0, 0]) + bytes(4))
    miss = IP(src=A4, dst=B4, proto=58) / Raw(bytes([2, 0, 0, 0]) + bytes(4))
    for p, want in ((hit, C.NF_DROP), (miss, C.NF_ACCEPT), (icmp_raw(1, 0, bytes(4)), C.NF_ACCEPT)):
        assert nft_do_chain(vm_chain, _pkt(p)) == want, p.summary()
        assert nft_do_chain_closures(ref_chain, _pkt(p)) == want, p.summary()
    assert vm_rt.vm.compiled == [(1, 1)]


@pytest.mark.root
def test_counters_match_the_kernel(veth_pair):  # noqa: F811  (the fixture, imported)
    """All the rules, counting, in a namespace's input hook: the kernel counts what we count."""
    noise = [  # the namespaces' own IPv6 chatter (as kernel_diff.nft accepts it)
        "ip6 saddr fe80::/10 accept",
        "icmpv6 type { mld-listener-report, mld2-listener-report, nd-router-solicit, nd-neighbor-solicit, "
        "nd-neighbor-advert } accept",
    ]
    rules = noise + [f"{r} counter" for r, _, _ in CASES]
    packets = [p for _, hits, misses in CASES for p in hits + misses]
    rt = kernel_replay(veth_pair, _text(rules), packets)
    assert_kernel_counts(veth_pair[1], rt)


# --- payload set (nft_payload_set_eval) ---------------------------------------------------------------------
def _checksums_ok(frame: bytes) -> None:
    """Scapy recomputes every checksum of the frame: each must equal the one written."""
    p = Ether(frame)
    for layer in (IP, TCP, UDP, ICMP):
        if layer in p and (layer is not UDP or p[UDP].chksum):
            field = "chksum"
            got = getattr(p[layer], field)
            q = p.copy()
            delattr(q[layer], field)
            assert got == getattr(Ether(raw(q))[layer], field), (layer.__name__, p.summary())


# (statement, packet, the field it sets as Scapy reads it back: (layer, field, value)) or None: NFT_BREAK
SETS = [
    ("ip ttl set 23", v4(TCP(dport=22)), (IP, "ttl", 23)),
    ("ip dscp set af23", v4(UDP(), tos=0x03), (IP, "tos", (22 << 2) | 3)),
    ("ip ecn set ce", v4(UDP(), tos=0x20), (IP, "tos", 0x23)),
    ("ip protocol set 17", v4(TCP(dport=22)), (IP, "proto", 17)),
    ("ip daddr set 10.7.0.9", v4(TCP(dport=22)), (IP, "dst", "10.7.0.9")),
    ("ip saddr set 192.0.2.1", v4(UDP(dport=53) / b"q"), (IP, "src", "192.0.2.1")),
    ("ip saddr set 192.0.2.1", v4(UDP(dport=53, chksum=0)), (UDP, "chksum", 0)),  # no checksum: none after
    ("ip id set 0", v4(UDP(), id=777), (IP, "id", 0)),
    ("udp dport set 65535", v4(UDP(dport=53) / b"hello"), (UDP, "dport", 65535)),
    ("udp checksum set 0", v4(UDP(dport=53) / b"hello"), (UDP, "chksum", 0)),
    ("tcp dport set 8080", v4(TCP(dport=22, flags="S")), (TCP, "dport", 8080)),
    ("tcp flags set rst", v4(TCP(dport=22, flags="S")), (TCP, "flags", "R")),
    ("icmp id set 9", v4(ICMP(type=8, id=7)), (ICMP, "id", 9)),
    ("ip6 daddr set ::1", v6(TCP(dport=22)), (IPv6, "dst", "::1")),
    ("ip6 saddr set 2001:db8::5", v6(UDP(dport=53) / b"x"), (IPv6, "src", "2001:db8::5")),
    ("ip6 hoplimit set 1", v6(UDP()), (IPv6, "hlim", 1)),
    ("ip6 dscp set af42", v6(UDP(), tc=0x01), (IPv6, "tc", (36 << 2) | 1)),
    ("ip6 ecn set ce", v6(UDP(), tc=0x80, fl=5), (IPv6, "tc", 0x83)),
    ("ip6 flowlabel set 0xfffff", v6(UDP(), tc=0xFF), (IPv6, "fl", 0xFFFFF)),
    ("udp dport set 1", v4(TCP(dport=22)), None),  # the dependency fails: NFT_BREAK
    ("udp dport set 1", IP(src=A4, dst=B4, frag=10, proto=17) / Raw(b"\0" * 8), None),  # a later fragment
]  # fmt: skip


@pytest.mark.parametrize(("stmt", "packet", "want"), SETS, ids=[f"{s[0]}-{i}" for i, s in enumerate(SETS)])
def test_payload_set_writes_the_field_and_keeps_checksums(stmt, packet, want):
    """`STMT accept` (policy drop): the field holds the new value, every checksum still verifies, other
    bytes are untouched; the VM (which punts the statement) and the closures write the same bytes."""
    vm_rt, ref_rt = _runtime([f"{stmt} accept"], "drop"), _runtime([f"{stmt} accept"], "drop")
    a, b = _pkt(packet), _pkt(packet)
    va, vb = nft_do_chain(vm_rt.chains[0], a), nft_do_chain_closures(ref_rt.chains[0], b)
    assert (va, a.skb.buf.tobytes()) == (vb, b.skb.buf.tobytes())
    before = raw(_frame(packet, "02:00:00:00:00:01", "02:00:00:00:00:02"))
    if want is None:
        assert (va, a.skb.buf.tobytes()) == (C.NF_DROP, before)
        return
    assert va == C.NF_ACCEPT
    frame = a.skb.buf.tobytes()
    layer, field, value = want
    got = Ether(frame)[layer]
    assert (got.flags == value) if field == "flags" else getattr(got, field) == value
    _checksums_ok(frame)


# A sends raw frames to B, B mangles them in prerouting and forwards them to C, which captures them
C4, C6 = "10.8.0.2", "2001:db8:8::2"
# (the rule in B, the packet A sends to C); each packet carries its index as a tag in its payload
KERNEL_SETS = [
    ("ip id 1001 ip ttl set 23", IP(src=A4, dst=C4, id=1001) / UDP(dport=9)),
    ("ip id 1002 ip dscp set af23", IP(src=A4, dst=C4, id=1002, tos=1) / UDP(dport=9)),
    ("ip id 1003 ip daddr set 10.8.0.3", IP(src=A4, dst=C4, id=1003) / TCP(dport=9)),
    ("ip id 1004 ip saddr set 10.7.0.9", IP(src=A4, dst=C4, id=1004) / TCP(dport=9)),
    ("ip id 1005 ip saddr set 10.7.0.9", IP(src=A4, dst=C4, id=1005) / UDP(dport=9, chksum=0)),
    ("ip id 1006 ip ecn set ce", IP(src=A4, dst=C4, id=1006, tos=0x20) / UDP(dport=9)),
    ("udp dport 1007 udp dport set 3007", IP(src=A4, dst=C4) / UDP(dport=1007)),
    ("udp dport 1008 udp dport set 3008", IP(src=A4, dst=C4) / UDP(dport=1008, chksum=0)),
    ("udp dport 1009 udp checksum set 0", IP(src=A4, dst=C4) / UDP(dport=1009)),
    ("tcp dport 1010 tcp dport set 3010", IP(src=A4, dst=C4) / TCP(dport=1010)),
    ("tcp dport 1011 tcp flags set rst", IP(src=A4, dst=C4) / TCP(dport=1011, flags="S")),
    ("icmp id 1012 icmp id set 3012", IP(src=A4, dst=C4) / ICMP(type=8, id=1012)),
    ("ip6 flowlabel 1013 ip6 daddr set 2001:db8:8::3", IPv6(src=A6, dst=C6, fl=1013) / UDP(dport=9)),
    ("ip6 flowlabel 1014 ip6 saddr set 2001:db8:7::9", IPv6(src=A6, dst=C6, fl=1014) / TCP(dport=9)),
    ("ip6 flowlabel 1015 ip6 dscp set af42", IPv6(src=A6, dst=C6, fl=1015, tc=2) / UDP(dport=9)),
    ("ip6 flowlabel 1016 ip6 ecn set ce", IPv6(src=A6, dst=C6, fl=1016) / UDP(dport=9)),
    ("udp dport 1017 udp dport set 3017", IPv6(src=A6, dst=C6) / UDP(dport=1017)),
]  # fmt: skip
_CAPTURE = (
    "import select, socket, sys, time\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\n"
    "s.bind(('vd', 0))\n"
    "print('ready', flush=True)\n"
    "end = time.time() + float(sys.argv[1])\n"
    "while time.time() < end:\n"
    "    if select.select([s], [], [], 0.05)[0]:\n"
    "        print(s.recv(65535).hex(), flush=True)\n"
)


@pytest.fixture
def forwarder():
    """Namespaces A - B - C: B routes between 10.7.0.0/24 (A) and 10.8.0.0/24 (C), and their IPv6 twins."""
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    a, b, c = (f"fpl4_{os.getpid()}_{x}" for x in "abc")
    try:
        for ns in (a, b, c):
            _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        _sh("ip", "-n", b, "link", "add", "vc", "type", "veth", "peer", "name", "vd", "netns", c)
        for ns, dev, addrs in ((a, "va", (f"{A4}/24", f"{A6}/64")), (b, "vb", (f"{B4}/24", f"{B6}/64")),
                               (b, "vc", ("10.8.0.1/24", "2001:db8:8::1/64")), (c, "vd", (f"{C4}/24", f"{C6}/64"))):  # fmt: skip
            for addr in addrs:
                _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "netns", "exec", b, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.vb.rp_filter=0")  # fmt: skip
        vd = json.loads(_sh("ip", "-n", c, "-j", "link", "show", "vd").stdout)[0]["address"]
        for addr in ("10.8.0.2", "10.8.0.3", "2001:db8:8::2", "2001:db8:8::3"):
            _sh("ip", "-n", b, "neigh", "replace", addr, "lladdr", vd, "dev", "vc")
        yield a, b, c
    finally:
        for ns in (a, b, c):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.root
def test_payload_set_writes_what_the_kernel_writes(forwarder):
    """The bytes C receives (B's prerouting rules applied, then ip_forward's TTL or hop limit decrement)
    equal ours: the same rules on the same frames, then the same decrement."""
    a, b, c = forwarder
    rules = [f"{r} counter" for r, _ in KERNEL_SETS]
    text = _text(rules).replace("hook input", "hook prerouting")
    _sh("ip", "netns", "exec", b, "nft", "-f", "-", input=text)
    rt = NftRuntime.from_json(
        json.loads(_sh("ip", "netns", "exec", b, "nft", "-j", "list", "ruleset").stdout)
    )
    va = json.loads(_sh("ip", "-n", a, "-j", "link", "show", "va").stdout)[0]["address"]
    vb = json.loads(_sh("ip", "-n", b, "-j", "link", "show", "vb").stdout)[0]["address"]
    frames = [raw(Ether(src=va, dst=vb) / p / Raw(b"fpl4-%02d" % i)) for i, (_, p) in enumerate(KERNEL_SETS)]
    cap = subprocess.Popen(["ip", "netns", "exec", c, sys.executable, "-c", _CAPTURE, "2"], stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    assert cap.stdout.readline().strip() == "ready"
    _sh("ip", "netns", "exec", a, sys.executable, "-c", _SEND, input="\n".join(f.hex() for f in frames))
    got = {}
    for line in cap.communicate(timeout=10)[0].split():
        f = bytes.fromhex(line)
        if f[-7:-2] == b"fpl4-":
            got[int(f[-2:])] = f[14:]
    for i, f in enumerate(frames):
        skb = skb_parse(frame_array(f), 2)
        nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
        pkt = NftPktinfo(skb=skb, hooknum=C.NF_INET_PRE_ROUTING, nfproto=nfproto, iifname="vb", iif=2)
        for chain in rt.base_chains(nfproto, C.NF_INET_PRE_ROUTING):
            nft_do_chain(chain, pkt)
        want = bytearray(pkt.skb.buf.tobytes()[14:])
        if nfproto == C.NFPROTO_IPV6:
            want[7] -= 1  # ip6_forward: hdr->hop_limit--
        else:
            ip_decrease_ttl(np.frombuffer(want, np.uint8), 0)
        assert got.get(i) == bytes(want), KERNEL_SETS[i][0]

"""IPv6 extension header matches and TCP option matches and stripping (nft_exthdr.c) in the evaluator.

Linux: net/netfilter/nft_exthdr.c › nft_exthdr_ipv6_eval over net/ipv6/exthdrs_core.c › ipv6_find_hdr,
nft_exthdr_tcp_eval and nft_exthdr_tcp_strip_eval. Reference: `find_hdr` below walks Scapy's layers
(not the bytes) as ipv6_find_hdr walks headers, and each field's expected value is the Scapy field the
packet was built with. The compiled VM punts these rules (a counted fallback to the closures): the two
must agree. The kernel comparison is in test_nft_kernel_exthdr.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    MIP6MH_BU,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Ether

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import make_pkt  # noqa: E402

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402

S, D = "2001:db8::1", "2001:db8::2"
_EXT = (
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
    IPv6ExtHdrFragment,
    IPv6ExtHdrDestOpt,
    AH,
)
_TYPE = {"hbh": (IPv6ExtHdrHopByHop,), "rt": (IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting),
         "srh": (IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting), "frag": (IPv6ExtHdrFragment,),
         "dst": (IPv6ExtHdrDestOpt,), "mh": (MIP6MH_BU,)}  # fmt: skip


def find_hdr(p, name: str):
    """The Scapy layer ipv6_find_hdr finds for header `name`, or None: extension headers in order, a
    later fragment ends the walk, and a non-extension header (mh among them) is found only first."""
    layer = p[IPv6].payload
    while True:
        if isinstance(layer, _TYPE[name]):
            return layer
        if not isinstance(layer, _EXT) or (isinstance(layer, IPv6ExtHdrFragment) and layer.offset):
            return None
        layer = layer.payload


# (selector, the Scapy field it reads, its width in bits)
FIELDS = [
    ("hbh nexthdr", lambda h: h.nh, 8), ("hbh hdrlength", lambda h: h.len, 8),
    ("rt nexthdr", lambda h: h.nh, 8), ("rt hdrlength", lambda h: h.len, 8), ("rt type", lambda h: h.type, 8),
    ("rt seg-left", lambda h: h.segleft, 8),
    ("srh last-entry", lambda h: h.lastentry, 8), ("srh flags", lambda h: bytes(h)[5], 8),
    ("srh tag", lambda h: h.tag, 16), ("srh sid[1]", lambda h: h.addresses[0], 128),
    ("srh sid[2]", lambda h: h.addresses[1], 128),
    ("frag nexthdr", lambda h: h.nh, 8), ("frag reserved", lambda h: h.res1, 8),
    ("frag frag-off", lambda h: h.offset, 13), ("frag reserved2", lambda h: h.res2, 2),
    ("frag more-fragments", lambda h: h.m, 1), ("frag id", lambda h: h.id, 32),
    ("dst nexthdr", lambda h: h.nh, 8), ("dst hdrlength", lambda h: h.len, 8),
    ("mh nexthdr", lambda h: h.nh, 8), ("mh hdrlength", lambda h: h.len, 8), ("mh type", lambda h: h.mhtype, 8),
    ("mh reserved", lambda h: h.res, 8), ("mh checksum", lambda h: h.cksum, 16),
]  # fmt: skip

PACKETS = {
    "plain": IPv6(src=S, dst=D) / UDP(),
    "hbh": IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop() / TCP(),
    "hbh-dst-rt": IPv6(src=S, dst=D)
    / IPv6ExtHdrHopByHop()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1)
    / UDP(),  # fmt: skip
    "srh": IPv6(src=S, dst=D)
    / IPv6ExtHdrSegmentRouting(
        addresses=["dead::beef", "2001:db8::7"], segleft=1, lastentry=1, tag=0x1234, alert=1
    )
    / TCP(),  # fmt: skip
    "frag-first": IPv6(src=S, dst=D) / IPv6ExtHdrFragment(m=1, id=0xABCDEF01, res1=3, res2=2) / UDP(),
    "frag-later": IPv6(src=S, dst=D) / IPv6ExtHdrFragment(offset=185, id=9) / IPv6ExtHdrDestOpt() / UDP(),
    "mh": IPv6(src=S, dst=D) / MIP6MH_BU(),
    "hbh-mh": IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop() / MIP6MH_BU(),
    "dst-then-mh-after-udp": IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt() / UDP() / b"\x3b\x00\x05\x00\x00\x00",
}


def _runtime(rules: list[str], family: str = "ip6") -> NftRuntime:
    text = f"table {family} t {{\n\tchain c {{\n\t\ttype filter hook input priority 0; policy accept;\n"
    text += "".join(f"\t\t{r} counter\n" for r in rules) + "\t}\n}\n"
    return NftRuntime.from_json(parse_ruleset(text).to_json())


def _matches(rt: NftRuntime, family: str, p) -> list[int]:
    """Each rule's counter after one run of the chain (closures: the Python evaluator)."""
    chain = rt.chain(family, "t", "c")
    nft_do_chain_closures(chain, make_pkt(p, hooknum=C.NF_INET_LOCAL_IN))
    return [stmt["counter"]["packets"] for r in rt.list_ruleset_json()["nftables"] if "rule" in r
            for stmt in r["rule"]["expr"] if "counter" in stmt]  # fmt: skip


@pytest.mark.parametrize("name", sorted(PACKETS))
def test_fields_read_what_scapy_built(name):
    """`X field V` matches exactly when ipv6_find_hdr finds X and the field is V; `!= V` when it is not."""
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / PACKETS[name]
    p = Ether(bytes(p))  # Scapy's computed lengths and checksums, as on the wire
    rules, want = [], []
    for sel, get, bits in FIELDS:
        h = find_hdr(p, sel.split()[0])
        if sel.startswith("srh") and h is not None and not isinstance(h, IPv6ExtHdrSegmentRouting):
            continue  # another routing type: its bytes are not Scapy's srh fields
        v = get(h) if h is not None else ("::" if bits == 128 else 0)
        other = (v ^ 1) if isinstance(v, int) else "::1"
        rules += [f"{sel} {v}", f"{sel} != {v}", f"{sel} {other}"]
        want += [int(h is not None), 0, 0]
    for hdr in ("hbh", "rt", "frag", "dst", "mh"):
        found = find_hdr(p, hdr) is not None
        rules += [f"exthdr {hdr} exists", f"exthdr {hdr} missing", f"exthdr {hdr} != exists"]
        want += [int(found), int(not found), int(not found)]
    rt = _runtime(rules)
    assert dict(zip(rules, _matches(rt, "ip6", p), strict=True)) == dict(zip(rules, want, strict=True))


def test_ah_is_walked_with_its_own_length():
    """ipv6_authlen: (hdrlen + 2) * 4, not the (hdrlen + 1) * 8 of the other headers (Scapy does not
    dissect past AH, so this one is checked by hand: 24 bytes of AH, then a destination options header)."""
    p = IPv6(src=S, dst=D) / AH(nh=60, payloadlen=4, spi=1, icv=bytes(12)) / IPv6ExtHdrDestOpt(nh=17) / UDP()
    rt = _runtime(["exthdr dst exists", "dst nexthdr 17", "dst hdrlength 0", "exthdr hbh missing"])
    assert _matches(rt, "ip6", p) == [1, 1, 1, 1]


def test_inet_table_skips_ipv4():
    """In an inet table nft puts `meta nfproto ipv6` first: an IPv4 packet matches neither exists nor missing."""
    rt = _runtime(["exthdr hbh missing", "hbh nexthdr 6", "exthdr frag missing"], "inet")
    assert _matches(rt, "inet", IP(dst="192.0.2.1") / UDP()) == [0, 0, 0]
    assert _matches(rt, "inet", PACKETS["hbh"]) == [0, 1, 1]


def _cut_matches(rt: NftRuntime, p, keep: int) -> list[int]:
    """_matches for `p` cut to `keep` bytes of IPv6 payload (skb_parse refuses such a frame, so the parse
    is the whole one's; Linux's ipv6_rcv checks only the hop-by-hop header before the hooks)."""
    pkt = make_pkt(p, hooknum=C.NF_INET_LOCAL_IN)
    pkt.skb.buf = pkt.skb.buf[: pkt.skb.nhoff + 40 + keep].copy()
    nft_do_chain_closures(rt.chain("ip6", "t", "c"), pkt)
    return [stmt["counter"]["packets"] for r in rt.list_ruleset_json()["nftables"] if "rule" in r
            for stmt in r["rule"]["expr"] if "counter" in stmt]  # fmt: skip


def test_truncated_header_breaks():
    """A header cut short by the end of the packet: ipv6_find_hdr's -EBADMSG (exists is 0, a field
    breaks) or skb_copy_bits failing (a field past the end breaks, one inside is read)."""
    rules = ["exthdr dst exists", "dst nexthdr 17", "dst hdrlength 0", "hbh nexthdr 60", "exthdr dst missing"]
    p = IPv6(src=S, dst=D) / IPv6ExtHdrHopByHop(nh=60) / IPv6ExtHdrDestOpt(nh=17) / UDP()
    assert _cut_matches(_runtime(rules), p, 9) == [0, 0, 0, 1, 1]  # one byte of the dst header
    assert _cut_matches(_runtime(rules), p, 10) == [1, 1, 1, 1, 0]  # two: found, both fields read
    rules = ["srh tag 0", "srh last-entry 1", "rt type 4", "exthdr rt exists"]
    p = IPv6(src=S, dst=D) / IPv6ExtHdrSegmentRouting(addresses=["::1", "::2"], lastentry=1) / UDP()
    assert _cut_matches(_runtime(rules), p, 6) == [0, 1, 1, 1]  # the tag (bytes 6-7) is past the end


def test_vm_runs_them_and_agrees_with_the_closures():
    """The compiled VM loads extension header fields and TCP options itself (OP_EXTHDR, nft_exthdr_find.py's
    walks): no run punts, and every verdict is the closures'."""
    rules = ["hbh nexthdr 43 drop", "srh sid[1] dead::beef accept", "exthdr frag exists drop",
             "tcp option maxseg size 1460 drop", "mh type binding-update accept"]  # fmt: skip
    text = "table ip6 t {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n"
    text += "".join(f"\t\t{r}\n" for r in rules) + "\t}\n}\n"
    vm_rt = NftRuntime.from_json(parse_ruleset(text).to_json())
    ref_rt = NftRuntime.from_json(parse_ruleset(text).to_json())
    verdicts = []
    for name, p in sorted(PACKETS.items()) + [("syn", IPv6(src=S, dst=D) / TCP(options=[("MSS", 1460)]))]:
        a, b = make_pkt(p, hooknum=C.NF_INET_LOCAL_IN), make_pkt(p, hooknum=C.NF_INET_LOCAL_IN)
        v = nft_do_chain(vm_rt.chain("ip6", "t", "c"), a)
        assert v == nft_do_chain_closures(ref_rt.chain("ip6", "t", "c"), b), name
        verdicts.append(v)
    assert C.NF_DROP in verdicts and C.NF_ACCEPT in verdicts
    assert sum(vm_rt.nft_fallback().values()) == 0
    assert vm_rt.vm_stats()[0][1:3] == (len(rules), len(rules))  # every rule compiled whole


# --- TCP options ------------------------------------------------------------------------------------------
SYN_OPTS = [("MSS", 1400), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (11, 22)),
            ("SAck", (100, 200, 300, 400)), ("NOP", None), ("NOP", None)]  # fmt: skip


@pytest.mark.parametrize("l3", [IP(src="10.0.0.1", dst="10.0.0.2"), IPv6(src=S, dst=D)], ids=["ip", "ip6"])
def test_tcp_option_fields(l3):
    """Each field nft 1.0.6 names reads the option Scapy wrote; an absent option or block breaks."""
    p = l3 / TCP(flags="S", options=SYN_OPTS)
    cases = {
        "tcp option maxseg size 1400": 1, "tcp option maxseg length 4": 1, "tcp option window count 7": 1,
        "tcp option sack-perm exists": 1, "tcp option sack-perm length 2": 1, "tcp option sack length 18": 1,
        "tcp option sack left 100": 1, "tcp option sack right 200": 1, "tcp option sack1 left 300": 1,
        "tcp option sack1 right 400": 1, "tcp option sack2 left 0": 0, "tcp option sack2 left != 0": 0,
        "tcp option timestamp tsval 11": 1, "tcp option timestamp tsecr 22": 1, "tcp option 8 exists": 1,
        "tcp option @3,16,8 7": 1, "tcp option @8,48,32 22": 1, "tcp option md5sig missing": 1,
        "tcp option fastopen exists": 0, "tcp option mptcp subtype 0": 0, "tcp option eol missing": 1,
        "tcp option nop exists": 1, "tcp option 200 missing": 1, "tcp option window length != 3": 0,
    }  # fmt: skip
    fam = "ip" if isinstance(l3, IP) else "ip6"
    rt = _runtime(list(cases), fam)
    assert dict(zip(cases, _matches(rt, fam, p), strict=True)) == cases


def test_mptcp_subtype_is_the_high_nibble():
    """`tcp option mptcp subtype` is 4 bits at bit 16 (src/tcpopt.c): a byte load then >> 4."""
    p = IPv6(src=S, dst=D) / TCP(options=[(30, b"\x21\x05")])  # subtype 2, version 1
    rt = _runtime(["tcp option mptcp subtype 2", "tcp option mptcp subtype 1", "tcp option mptcp length 4"])
    assert _matches(rt, "ip6", p) == [1, 0, 1]


def _tcp_after(pkt):
    eth = Ether(pkt.skb.buf.tobytes())
    fresh = eth.copy()
    del fresh[TCP].chksum
    return eth[TCP], Ether(bytes(fresh))[TCP].chksum


@pytest.mark.parametrize("opt", ["sack-perm", "maxseg", "timestamp", "window"])
def test_reset_tcp_option_writes_nops_and_fixes_the_checksum(opt):
    """nft_exthdr_tcp_strip_eval: the option's bytes become NOPs, the checksum updated byte by byte
    (even and odd offsets both), the rest untouched."""
    rt = _runtime([f"reset tcp option {opt}"], "inet")
    p = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="S", options=SYN_OPTS)
    pkt = make_pkt(p, hooknum=C.NF_INET_LOCAL_IN)
    nft_do_chain_closures(rt.chain("inet", "t", "c"), pkt)
    tcp, fresh = _tcp_after(pkt)
    name, size = {"sack-perm": ("SAckOK", 2), "maxseg": ("MSS", 4), "timestamp": ("Timestamp", 10),
                  "window": ("WScale", 3)}[opt]  # fmt: skip
    kept = [o for o in tcp.options if o[0] != "NOP"]
    assert name not in dict(kept) and len(kept) == len([o for o in SYN_OPTS if o[0] != "NOP"]) - 1
    assert tcp.chksum == fresh
    before, after = bytes(p[TCP]), bytes(tcp)
    changed = [i for i in range(len(before)) if before[i] != after[i] and i not in (16, 17)]  # not check
    assert len(changed) == size
    assert all(after[i] == 1 for i in changed) and changed == list(range(changed[0], changed[0] + size))


def test_reset_malformed_option_drops_and_no_tcp_breaks():
    """An option running past the header: NF_DROP ("can't remove"); a UDP packet: NFT_BREAK."""
    text = "table inet t {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n"
    text += "\t\treset tcp option 4 accept\n\t}\n}\n"
    rt = NftRuntime.from_json(parse_ruleset(text).to_json())
    bad = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(options=[("NOP", None)] * 4))
    bad = bad[:-2] + b"\x04\x09"  # kind 4 (sack-perm) of length 9 in a 4-byte option space
    chain = rt.chain("inet", "t", "c")
    assert nft_do_chain_closures(chain, make_pkt(IP(bad), hooknum=C.NF_INET_LOCAL_IN)) == C.NF_DROP
    udp = IP(src="10.0.0.1", dst="10.0.0.2") / UDP()
    assert nft_do_chain_closures(chain, make_pkt(udp, hooknum=C.NF_INET_LOCAL_IN)) == C.NF_ACCEPT  # policy
    syn = IP(src="10.0.0.1", dst="10.0.0.2") / TCP()
    assert nft_do_chain_closures(chain, make_pkt(syn, hooknum=C.NF_INET_LOCAL_IN)) == C.NF_ACCEPT  # absent


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
def test_set_timestamp_tsval_checksum_at_any_offset(pad):
    """nft_exthdr_tcp_set_eval for a 4-byte field: the new value in place and a checksum equal to a full
    recompute, the option at an even or an odd offset."""
    rt = _runtime(["tcp option timestamp tsval set 0x01020304"], "inet")
    p = IPv6(src=S, dst=D) / TCP(flags="S", options=[("NOP", None)] * pad + [("Timestamp", (0xA0B0C0D0, 5))])
    pkt = make_pkt(p, hooknum=C.NF_INET_LOCAL_IN)
    nft_do_chain_closures(rt.chain("inet", "t", "c"), pkt)
    tcp, fresh = _tcp_after(pkt)
    assert dict(tcp.options)["Timestamp"] == (0x01020304, 5)
    assert tcp.chksum == fresh

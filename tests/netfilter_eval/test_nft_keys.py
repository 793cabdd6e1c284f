"""meta and ct keys, shifts, numgen, jhash and data maps in the datapath: closures, VM and the kernel.

Linux: net/netfilter/nft_meta.c, nft_ct.c, nft_bitwise.c, nft_numgen.c, nft_hash.c (include/linux/jhash.h),
nft_lookup.c. Rules are written in nft text, loaded through the front end, and run on Scapy packets;
the VM (nft_do_chain, which punts what it cannot read) must do what the closures do, and the kernel
(root only) must count what the closures count.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import make_pkt  # noqa: E402
from test_nft_kernel_diff import FRAMES, _frame, assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401  (a fixture)

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.conntrack_tuple import NfConnTuple  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402
from flowpath.packet.jhash import jhash  # noqa: E402
from flowpath.packet.skb import frame_array, skb_parse  # noqa: E402


class KeyCt:
    """The struct nf_conn fields the ct keys read: tuples, counters, timeout, zone and labels."""

    def __init__(self, mark=0, timeout_ns=0, packets=(0, 0), bytes_=(0, 0)):
        self.status, self.mark, self.timeout_ns = C.IPS_CONFIRMED, mark, timeout_ns
        self.packets, self.bytes = list(packets), list(bytes_)
        o = NfConnTuple(C.NFPROTO_IPV4, 6, 0x0A000001, 0xC0000201, 1000, 22)
        r = NfConnTuple(C.NFPROTO_IPV4, 6, 0xC0000201, 0x0A000001, 22, 1000)
        self.tuplehash = [o, r]
        self.l3proto, self.l4proto = C.NFPROTO_IPV4, 6
        self.ext: dict = {}
        self.hot_row = [0] * 8


def _rt(rules: str, family: str = "ip") -> NftRuntime:
    text = f"table {family} t {{\n\tchain c {{\n\t\ttype filter hook forward priority filter; policy accept;\n{rules}\n\t}}\n}}\n"
    return NftRuntime.from_json(parse_ruleset(text).to_json())


def _counts(rt: NftRuntime) -> list[int]:
    out = []
    for item in rt.list_ruleset_json()["nftables"]:
        for s in item.get("rule", {}).get("expr", []):
            if "counter" in s:
                out.append(s["counter"]["packets"])
    return out


def _tcp(**kw):
    return IP(src="10.0.0.1", dst="192.0.2.1") / TCP(sport=1000, dport=22, flags="A", **kw)


def test_ct_keys_read_the_entry():
    """nft_ct_get_eval: expiration in ms left, counters per direction or both, avgpkt, tuple fields."""
    rt = _rt("\n".join([
        "ct expiration 30s-60s counter",
        "ct original bytes 300 counter",
        "ct bytes 1000 counter",
        "ct reply packets < 3 counter",
        "ct avgpkt 200 counter",
        "ct original ip daddr 192.0.2.1 counter",
        "ct reply proto-src 22 counter",
        "ct l3proto ipv4 ct protocol tcp counter",
        "ct zone 0 counter",
        'ct helper "ftp" counter',
        "ct expiration < 10s counter",
    ]))  # fmt: skip
    ct = KeyCt(timeout_ns=45 * 10**9, packets=(3, 2), bytes_=(300, 700))
    pkt = make_pkt(_tcp(), ct=ct, ctinfo=C.IP_CT_ESTABLISHED)
    nft_do_chain(rt.chain("ip", "t", "c"), pkt)
    # ct helper: flowpath attaches no helper, so the rule breaks as nft_ct_get_eval does without one
    assert _counts(rt) == [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]


def test_ct_label_set_then_match():
    """nft_ct_set_eval › NFT_CT_LABELS adds the bit; `ct label N` tests it."""
    rt = _rt("ct label 5 counter\nct label set 5\nct label 5 counter\nct label 6 counter")
    pkt = make_pkt(_tcp(), ct=KeyCt(), ctinfo=C.IP_CT_ESTABLISHED)
    nft_do_chain(rt.chain("ip", "t", "c"), pkt)
    assert _counts(rt) == [0, 1, 0]
    assert pkt.skb.ct.ext["labels"] == 1 << 5


def test_meta_keys_of_devices_and_sockets():
    """iiftype and iifgroup of an Ethernet port in the default group; no local socket: skuid breaks;
    no VRF: no slave device (sdif)."""
    rt = _rt("meta iiftype ether counter\niifgroup \"default\" counter\noiftype ether counter\n"
             "meta skuid 0 counter\nmeta sdif \"lo\" counter\nmeta nftrace 0 counter")  # fmt: skip
    nft_do_chain(rt.chain("ip", "t", "c"), make_pkt(_tcp(), iif=1, oif=0))
    assert _counts(rt) == [1, 1, 0, 0, 0, 1]


def test_meta_time_day_hour_follow_the_packet_time():
    """NFT_META_TIME_NS/DAY/HOUR from the packet's time (local time, as nft lists the values)."""
    ts = time.mktime(time.strptime("2019-06-22 17:30:00", "%Y-%m-%d %H:%M:%S"))  # a Saturday
    rt = _rt('meta time > "2019-06-21 00:00:00" counter\nmeta day "Saturday" counter\n'
             'meta hour "17:00"-"18:00" counter\nmeta day "Sunday" counter')  # fmt: skip
    nft_do_chain(rt.chain("ip", "t", "c"), make_pkt(_tcp(), ts_ns=int(ts) * 10**9))
    assert _counts(rt) == [1, 1, 1, 0]


def test_set_values_shifts_maps_numgen():
    """meta mark set from shifts, a data map and numgen inc (0, 1, 0, ...: nft_ng_inc_init starts the
    counter at mod - 1 and each packet moves it first)."""
    rt = _rt("meta mark set ct mark >> 8\nct mark set meta mark << 4 | 0x1\n"
             "meta priority set mark map { 0x1 : 1:2, 0x2 : 3:4 }\nmeta priority 1:2 counter")  # fmt: skip
    pkt = make_pkt(_tcp(), ct=KeyCt(mark=0x1FF), ctinfo=C.IP_CT_ESTABLISHED)
    nft_do_chain(rt.chain("ip", "t", "c"), pkt)
    assert (pkt.skb.mark, pkt.skb.ct.mark, pkt.skb.meta["priority"]) == (1, 0x11, 0x10002)
    assert _counts(rt) == [1]
    rt = _rt("meta mark set numgen inc mod 2 offset 10")
    marks = []
    for _ in range(4):
        pkt = make_pkt(_tcp())
        nft_do_chain(rt.chain("ip", "t", "c"), pkt)
        marks.append(pkt.skb.mark)
    assert marks == [10, 11, 10, 11]


def test_jhash_is_linux_jhash():
    """include/linux/jhash.h: jhash of 0..n-1 bytes with initval 0, values the kernel's test_hash.c
    computes (lib/test_hash.c style, byte-wise keys), and nft_jhash_eval's reciprocal_scale."""
    assert jhash(b"", 0) == 0xDEADBEEF
    assert jhash(b"\x01\x02\x03\x04", 0) != jhash(b"\x04\x03\x02\x01", 0)
    rt = _rt("meta mark set jhash ip saddr mod 1000 seed 0xdeadbeef")
    pkt = make_pkt(_tcp())
    nft_do_chain(rt.chain("ip", "t", "c"), pkt)
    assert pkt.skb.mark == (jhash(bytes([10, 0, 0, 1]), 0xDEADBEEF) * 1000) >> 32


@pytest.mark.parametrize(
    ("rule", "msg"),
    [("meta cpu 1", "meta cpu"), ('meta rtclassid "cosmos"', "realm"), ("ct id 1", "ct id"),
     ("ct zone set 1", "zones"), ("ct event set new", "events"), ("meta mark set symhash mod 2", "symhash")],
)  # fmt: skip
def test_what_flowpath_cannot_know_is_refused_at_load(rule, msg):
    """Keys and statements with no flowpath counterpart are a ConfigError naming the rule, not a
    silent never-match."""
    with pytest.raises(ConfigError, match=msg):
        _rt(rule)


def _pkt4(frame: bytes, mark: int, ctmark: int) -> NftPktinfo:
    skb = skb_parse(frame_array(frame), 1, 0)
    skb.ct, skb.ctinfo, skb.mark = (
        KeyCt(mark=ctmark, timeout_ns=5 * 10**9, packets=(2, 1), bytes_=(100, 50)),
        0,
        mark,
    )
    nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
    return NftPktinfo(skb=skb, hooknum=C.NF_INET_FORWARD, nfproto=nfproto, iifname="eth0", iif=1, oif=2)


VM_RULES = """meta mark set ct mark >> 4
ct mark set meta mark << 3
meta mark & 0xf0 == 0x10 counter
meta mark | 0x3 == 0x13 counter
ct mark 0x88 counter
meta iiftype ether meta mark set meta mark << 1 counter
ct expiration < 10s ct original packets 2 counter
meta mark set ct mark map { 0x80-0x8f : 0x5, 0x90 : 0x6 }
meta mark 0x5 counter"""


@pytest.mark.parametrize("marks", [(0, 0), (1, 0x100), (0x10, 0x110), (0xFFFFFFFF, 0xFFFFFFFF)])
@pytest.mark.parametrize("frame", [raw(_frame(p, "02:00:00:00:00:01", "02:00:00:00:00:02"))
                                   for p in (_tcp(), IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP())])  # fmt: skip
def test_vm_equals_closures_on_the_new_keys(frame, marks):
    """nft_do_chain (the VM; it punts the keys it cannot read) and the closures agree on marks,
    verdict and counters; the shifts run in the VM itself."""
    vm_rt, ref_rt = _rt(VM_RULES), _rt(VM_RULES)
    a, b = _pkt4(frame, *marks), _pkt4(frame, *marks)
    va = nft_do_chain(vm_rt.chain("ip", "t", "c"), a)
    vb = nft_do_chain_closures(ref_rt.chain("ip", "t", "c"), b)
    assert (va, a.skb.mark, a.skb.ct.mark) == (vb, b.skb.mark, b.skb.ct.mark)
    assert _counts(vm_rt) == _counts(ref_rt)
    name, rules, whole, _ = next(s for s in vm_rt.vm_stats() if s[0] == "ip t c")
    assert whole >= 5, (rules, whole)  # shifts, bitwise and marks compile; ct expiration and maps punt


KERNEL_RULES = """table ip k {
	chain in {
		type filter hook input priority 0; policy accept;
		meta mark set jhash ip saddr mod 2 seed 0xdeadbeef offset 100
		meta mark 100 counter
		meta mark 101 counter
		meta mark set meta mark << 4
		meta mark 0x640 counter
		meta mark set numgen inc mod 3
		meta mark 0 counter
		meta mark 1 counter
		meta mark 2 counter
		meta iiftype ether counter
		iifgroup "default" counter
		meta priority set 1:2
		meta priority 1:2 counter
		meta mark set meta mark map { 0 : 7, 1-2 : 8 }
		meta mark 7 counter
		meta mark 8 counter
	}
}
"""


def test_new_keys_count_as_the_kernel_counts(veth_pair):  # noqa: F811
    """jhash, shifts, numgen inc, iiftype, iifgroup, priority and a data map on the kernel's input hook
    and in flowpath's closures: the same counters for the same IPv4 frames."""
    rt = kernel_replay(veth_pair, KERNEL_RULES, [p for p in FRAMES if p.haslayer(IP)], ct=False)
    assert_kernel_counts(veth_pair[1], rt)

"""nft `fib`: reverse-path filtering and address types against flowpath's FIB, in hooks and through a Worker.

Linux: net/netfilter/nft_fib.c (nft_fib_store_result, NFTA_FIB_F_PRESENT), nft_fib_ipv4.c (nft_fib4_eval,
nft_fib4_eval_type › inet_dev_addr_type), nft_fib_ipv6.c (nft_fib6_eval, __nft_fib6_eval_type).
The network is examples/gateway.ip: lan0 192.168.1.1/24 and 2001:db8:1::1/64, wan0 203.0.113.1/24 and
2001:db8:ff::1/64, default routes via wan0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datapath"))
from gateway import GW_LAN, GW_WAN, H10, UPSTREAM, example_net, run  # noqa: E402
from nfeval_util import make_skb, run_hook  # noqa: E402

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import (  # noqa: E402
    NftPktinfo,
    NftRuntime,
    nft_do_chain,
    nft_do_chain_closures,
)
from flowpath.netns import Net  # noqa: E402

PRE, IN, FWD, OUT, POST = (C.NF_INET_PRE_ROUTING, C.NF_INET_LOCAL_IN, C.NF_INET_FORWARD, C.NF_INET_LOCAL_OUT,
                           C.NF_INET_POST_ROUTING)  # fmt: skip
_HOOK = {PRE: "prerouting", IN: "input", FWD: "forward", OUT: "output", POST: "postrouting"}
NET = Net(example_net())
LAN, WAN = NET.link_by_name("lan0").ifindex, NET.link_by_name("wan0").ifindex


def matches(rule: str, l3, hook: int = PRE, iif: str = "lan0", oif: str = "") -> bool:
    """Whether `rule drop` drops the packet in a chain of `hook` (policy accept), run by the closures."""
    text = (f"table inet t {{\n\tchain c {{\n\t\ttype filter hook {_HOOK[hook]} priority filter; policy accept;\n"
            f"\t\t{rule} drop\n\t}}\n}}\n")  # fmt: skip
    rt = NftRuntime.from_json(parse_ruleset(text).to_json())
    iifx, oifx = NET.link_by_name(iif).ifindex if iif else 0, NET.link_by_name(oif).ifindex if oif else 0
    skb = make_skb(l3 / UDP(sport=1, dport=2), iif=iifx)
    nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
    pkt = NftPktinfo(skb=skb, hooknum=hook, nfproto=nfproto, iifname=iif, oifname=oif, iif=iifx, oif=oifx,
                     net=NET)  # fmt: skip
    return run_hook(rt, pkt) == C.NF_DROP


@pytest.mark.parametrize(
    ("rule", "src", "want"),
    [
        ("fib saddr . iif oif missing", "192.168.1.10", False),  # the route back leaves by lan0
        ("fib saddr . iif oif missing", "8.8.8.8", True),  # spoofed: the route back is wan0's default
        ("fib saddr . iif oif eq 0", "8.8.8.8", True),
        ("fib saddr . iif oif != 0", "192.168.1.10", True),
        ("fib saddr . iif oif exists", "192.168.1.10", True),
        ("fib saddr oif missing", "8.8.8.8", False),  # without iif: any route back will do
        ('fib saddr oif "wan0"', "8.8.8.8", True),
        ('fib saddr oifname "lan0"', "192.168.1.10", True),
        ('fib saddr . iif oifname "lan0"', "8.8.8.8", False),  # no device: "" (strscpy_pad)
        ("fib saddr . iif oif missing", "192.168.1.1", True),  # our own address: RTN_LOCAL is no route
        ("fib saddr . iif oif missing", "0.0.0.0", False),  # DHCP discover to 255.255.255.255: the input device
    ],
)
def test_rpf_oif_ipv4(rule, src, want):
    dst = "255.255.255.255" if src == "0.0.0.0" else "198.51.100.7"
    assert matches(rule, IP(src=src, dst=dst)) is want


@pytest.mark.parametrize(
    ("rule", "dst", "iif", "want"),
    [
        ("fib daddr type local", "192.168.1.1", "lan0", True),
        ("fib daddr type local", "203.0.113.1", "lan0", True),  # any device's address
        ("fib daddr . iif type local", "203.0.113.1", "lan0", False),  # not lan0's: inet_dev_addr_type
        ("fib daddr . iif type local", "192.168.1.1", "lan0", True),
        ("fib daddr type local", "198.51.100.7", "lan0", False),
        ("fib daddr type unicast", "198.51.100.7", "lan0", True),
        ("fib daddr type broadcast", "192.168.1.255", "lan0", True),
        ("fib daddr type broadcast", "255.255.255.255", "lan0", True),
        ("fib daddr type multicast", "224.0.0.251", "lan0", True),
        ("fib daddr . iif type != { local, broadcast, multicast }", "198.51.100.7", "lan0", True),
        ("fib daddr . iif type != { local, broadcast, multicast }", "192.168.1.1", "lan0", False),
        ("fib saddr type local", "198.51.100.7", "lan0", False),
    ],
)
def test_addrtype_ipv4(rule, dst, iif, want):
    assert matches(rule, IP(src="192.168.1.10", dst=dst), iif=iif) is want


@pytest.mark.parametrize(
    ("rule", "src", "dst", "want"),
    [
        ("fib saddr . iif oif missing", "2001:db8:1::10", "2001:db8:ff::5", False),
        ("fib saddr . iif oif missing", "2001:db8:ff::5", "2001:db8:1::10", True),  # via wan0, not lan0
        ("fib saddr . iif oif missing", "fe80::10", "ff02::1", False),  # link-local: looked up on lan0
        ("fib saddr . iif oif missing", "fe80::10", "fe80::1", False),
        ("fib daddr type local", "2001:db8:1::10", "2001:db8:1::1", True),
        ("fib daddr . iif type local", "2001:db8:1::10", "2001:db8:ff::1", False),  # wan0's address
        ("fib daddr type multicast", "2001:db8:1::10", "ff02::1", True),
        ("fib daddr type unicast", "2001:db8:1::10", "2001:db8:ff::5", True),
    ],
)
def test_ipv6(rule, src, dst, want):
    assert matches(rule, IPv6(src=src, dst=dst)) is want


def test_ipv6_link_local_source_passes_rpf_on_every_link():
    """Each link has fe80::/64: ND from a neighbour on wan0 must not look spoofed (RT6_LOOKUP_F_IFACE)."""
    for iif in ("lan0", "wan0"):
        assert not matches("fib saddr . iif oif missing", IPv6(src="fe80::1", dst="ff02::1"), iif=iif)
        assert matches('fib saddr oifname "' + iif + '"', IPv6(src="fe80::1", dst="fe80::2"), iif=iif)


def test_oif_and_type_with_oif_in_forward():
    """`fib daddr . oif type local` looks at the output device; `fib ... type` in FORWARD, OUTPUT too."""
    l3 = IP(src="192.168.1.10", dst="203.0.113.1")
    assert matches("fib daddr . oif type local", l3, hook=FWD, oif="wan0")
    assert not matches("fib daddr . oif type local", l3, hook=FWD, oif="lan0")
    assert matches("fib daddr type local", l3, hook=OUT, iif="", oif="wan0")


def test_vmap_on_fib_type():
    """`fib daddr type vmap { local : drop, unicast : accept }`: the map's key is the address type."""
    assert matches("fib daddr type vmap { local : drop, unicast : accept } counter", IP(dst="192.168.1.1"))
    assert not matches("fib daddr type vmap { local : drop, unicast : accept } counter", IP(dst="8.8.8.8"))


IFINDEX = {"lo": NET.link_by_name("lo").ifindex, "lan0": LAN, "wan0": WAN}
VM_RULES = [
    "fib saddr . iif oif missing",
    "fib saddr . iif oif exists",
    "fib saddr oif missing",
    "fib saddr . iif oif eq 0",
    "fib saddr . iif oif != 0",
    'fib saddr oif "wan0"',
    'fib saddr . iif oif { "lan0", "wan0" }',
    "fib daddr oif lan0",
    "fib daddr . iif oif exists",
]
VM_PACKETS = [
    ("lan0", IP(src="192.168.1.10", dst="198.51.100.7")),  # good source
    ("lan0", IP(src="8.8.8.8", dst="198.51.100.7")),  # spoofed: the route back is wan0's default
    ("wan0", IP(src="192.168.1.77", dst="192.168.1.10")),  # a LAN source arriving on wan0
    ("lan0", IP(src="192.168.1.1", dst="198.51.100.7")),  # our own address: a local route is no route
    ("lan0", IP(src="0.0.0.0", dst="255.255.255.255")),  # DHCP: the input device
    ("lo", IP(src="8.8.8.8", dst="192.168.1.1")),  # from loopback in PREROUTING: its own device
    ("lan0", IPv6(src="2001:db8:1::10", dst="2001:db8:ff::5")),
    ("lan0", IPv6(src="2001:db8:ff::5", dst="2001:db8:1::10")),  # via wan0, not lan0
    ("lan0", IPv6(src="fe80::10", dst="ff02::1")),  # link-local: looked up on lan0
    ("wan0", IPv6(src="fe80::1", dst="fe80::2")),
    ("lan0", IPv6(src="2001:db8:1::10", dst="ff02::1:2")),  # multicast destination
    ("lan0", IP(src="192.168.1.10", dst="203.0.113.1")),  # to the gateway's wan0 address
    ("lan0", IP(src="192.168.1.10", dst="192.168.1.255")),  # subnet broadcast
    ("lan0", IP(src="192.168.1.10", dst="224.0.0.251")),
    ("lan0", IPv6(src="2001:db8:1::10", dst="2001:db8:1::1")),  # to the gateway's lan0 address
    ("lan0", IPv6(src="2001:db8:1::10", dst="2001:db8:ff::1")),  # to its wan0 address
    ("lan0", IPv6(src="::", dst="ff02::1:ff00:10")),  # DAD: from ::
]


def _verdicts(rule: str, hook: int = PRE, oif: str = "") -> tuple[list, list, NftRuntime]:
    """Each of VM_PACKETS through `rule drop`: (through the VM, by the closures alone, the runtime)."""
    text = (f"table inet t {{\n\tchain c {{\n\t\ttype filter hook {_HOOK[hook]} priority filter; "
            f"policy accept;\n\t\t{rule} drop\n\t}}\n}}\n")  # fmt: skip
    rt = NftRuntime.from_json(parse_ruleset(text).to_json(), ifindex=IFINDEX)
    (chain,) = rt.chains
    vm, py = [], []
    for iif, l3 in VM_PACKETS:
        for got, run_chain in ((vm, nft_do_chain), (py, nft_do_chain_closures)):
            skb = make_skb(l3 / UDP(sport=1, dport=2), iif=IFINDEX[iif])
            nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
            pkt = NftPktinfo(skb=skb, hooknum=hook, nfproto=nfproto, iifname=iif, oifname=oif,
                             iif=IFINDEX[iif], oif=IFINDEX[oif] if oif else 0, net=NET)  # fmt: skip
            got.append(run_chain(chain, pkt))
    return vm, py, rt


@pytest.mark.parametrize("rule", VM_RULES)
def test_vm_runs_fib_oif_as_the_closures_do(rule):
    """`fib ... oif` and `oif exists|missing` compile (OP_FIB): no packet falls back to the closures,
    and each gets the verdict the closures give it (IPv4 and IPv6, good, spoofed, routed to another
    device, own address, DHCP, loopback, link-local, multicast)."""
    vm, py, rt = _verdicts(rule)
    assert list(rt.vm.compiled) == [(1, 1)]
    assert rt.vm.fallback.tolist() == [0]
    assert vm == py
    assert C.NF_DROP in py and C.NF_ACCEPT in py  # the packets tell the rule's outcomes apart


def test_vm_fib_oif_in_forward_matches_the_closures():
    """`fib daddr . oif oif missing` in FORWARD: restricted to the output device."""
    vm, py, rt = _verdicts("fib daddr . oif oif missing", hook=FWD, oif="wan0")
    assert rt.vm.fallback.tolist() == [0] and vm == py
    assert C.NF_DROP in py and C.NF_ACCEPT in py


@pytest.mark.parametrize(
    "rule",
    [
        "fib daddr type local",
        "fib daddr type unicast",
        "fib daddr type broadcast",
        "fib daddr type multicast",
        "fib saddr type local",
        "fib saddr type unicast",
        "fib daddr . iif type local",
        "fib daddr . iif type != { local, broadcast, multicast }",
        "fib daddr type vmap { local : drop, broadcast : drop, unicast : accept }",
        "fib saddr oif vmap { 2 : accept, 3 : drop }",  # lan0, wan0
    ],
)
def test_vm_runs_fib_type_as_the_closures_do(rule):
    """`fib ... type` compiles too (OP_FIB, fib_type_eval), and `fib` as a verdict map's key: the same
    verdicts as the closures; only an IPv6 type asked on a device (`. iif`: the device's own addresses,
    nf_ipv6_chk_addr) falls back."""
    vm, py, rt = _verdicts(rule)
    assert list(rt.vm.compiled) == [(1, 1)]
    v6 = sum(isinstance(l3, IPv6) for _, l3 in VM_PACKETS)
    assert rt.vm.fallback.tolist() == [v6 if ". iif" in rule else 0]
    assert vm == py
    assert C.NF_DROP in py and C.NF_ACCEPT in py


def test_vm_punts_fib_oifname():
    """Names by ifindex: the VM's names table is the packet's own devices', so oifname stays with the
    closures."""
    vm, py, rt = _verdicts('fib saddr oifname "lan0"')
    assert list(rt.vm.compiled) == [(1, 0)]
    assert rt.vm.fallback.tolist() == [len(VM_PACKETS)]
    assert vm == py


def test_vm_fib_without_a_network_punts():
    """No network to look routes up in: OP_FIB punts, and the closures break (no match)."""
    text = ("table inet t {\n\tchain c {\n\t\ttype filter hook prerouting priority filter; "
            "policy accept;\n\t\tudp dport 7 drop\n\t\tfib saddr . iif oif missing drop\n"
            "\t}\n}\n")  # fmt: skip
    rt = NftRuntime.from_json(parse_ruleset(text).to_json())
    assert list(rt.vm.compiled) == [(2, 2)]
    pkt = NftPktinfo(skb=make_skb(IP(src="8.8.8.8") / UDP()), hooknum=PRE, nfproto=C.NFPROTO_IPV4, iif=LAN,
                     iifname="lan0")  # fmt: skip
    assert run_hook(rt, pkt) == C.NF_ACCEPT
    assert rt.vm.fallback.tolist() == [1]


# --- through a Worker: Scapy frames in, frames out --------------------------------------------------------
RULES = """table inet f {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		fib saddr . iif oif missing counter drop
		fib daddr type local udp dport 9999 counter drop
	}
}
"""


@pytest.mark.parametrize("flowtable", [True, False])
def test_worker_rpf_drops_spoofed_and_fib_local_matches_own_address(tmp_path, flowtable):
    """rp-filter drops a spoofed source on lan0 and a LAN source arriving on wan0, passes a good one;
    `fib daddr type local` drops what is sent to the gateway's own address. The classic lane runs both
    rules in the VM: no packet is punted for nft. With or without flowtables, the same."""

    def lan(src, dst, tag):
        return "lan0", Ether(src=H10, dst=GW_LAN) / IP(src=src, dst=dst) / UDP(sport=1, dport=9999) / Raw(tag)

    pkts = [
        lan("192.168.1.10", "198.51.100.7", b"good"),
        lan("8.8.8.8", "198.51.100.7", b"spoofed"),
        ("wan0", Ether(src=UPSTREAM, dst=GW_WAN) / IP(src="192.168.1.77", dst="192.168.1.10") / UDP() / Raw(b"x")),
        lan("192.168.1.10", "192.168.1.1", b"to the gateway"),
        lan("192.168.1.10", "203.0.113.1", b"to its wan address"),
    ]
    out, stats, _ = run(tmp_path, pkts, rules=parse_ruleset(RULES), flowtable=flowtable)
    assert [bytes(p[Raw]) for p in out.get("wan0", [])] == [b"good"]
    assert out.get("lan0", []) == []
    assert stats["drops"] == {"netfilter_drop": 4}
    if flowtable:
        assert stats["classic_lane"]["punted"].get("nft", 0) == 0


RPF_RULES = """table inet f {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		fib saddr . iif oif missing counter drop
	}
}
"""


def test_worker_lane_runs_rpf_without_punting(tmp_path):
    """The rp-filter rule alone: the compiled classic lane forwards the good IPv4 and IPv6 sources and
    drops the spoofed ones (a source routed out of wan0 arriving on lan0, a LAN source arriving on
    wan0) with no packet punted to the Python path for nft."""
    def lan(l3, tag):
        return "lan0", Ether(src=H10, dst=GW_LAN) / l3 / UDP() / Raw(tag)

    def wan(l3, tag):
        return "wan0", Ether(src=UPSTREAM, dst=GW_WAN) / l3 / UDP() / Raw(tag)

    pkts = [
        lan(IP(src="192.168.1.10", dst="198.51.100.7"), b"good4"),
        lan(IP(src="8.8.8.8", dst="198.51.100.7"), b"spoofed4"),
        wan(IP(src="192.168.1.77", dst="192.168.1.10"), b"x"),
        lan(IPv6(src="2001:db8:1::10", dst="2001:db8:99::5"), b"good6"),
        lan(IPv6(src="2001:db8:ff::5", dst="2001:db8:99::6"), b"spoofed6"),
        wan(IPv6(src="2001:db8:1::77", dst="2001:db8:1::10"), b"y"),
    ]
    out, stats, _ = run(tmp_path, pkts, rules=parse_ruleset(RPF_RULES))
    assert [bytes(p[Raw]) for p in out.get("wan0", [])] == [b"good4", b"good6"]
    assert out.get("lan0", []) == []
    assert stats["drops"] == {"netfilter_drop": 4}
    assert stats["classic_lane"]["punted"].get("nft", 0) == 0
    assert stats["classic_lane"]["packets"] == 6


def test_hooks_checked_as_the_kernel_does_when_json_is_loaded():
    """nft_fib_validate from the runtime's own loader: an oif result is refused in OUTPUT, a type with
    oif in PREROUTING; netdev's ingress is hook 0, the bit prerouting has, so fib is allowed there."""
    from flowpath.errors import ConfigError

    def load(family, hook, left):
        chain = {"family": family, "table": "t", "name": "c", "type": "filter", "hook": hook, "prio": 0,
                 "policy": "accept"}  # fmt: skip
        if family == "netdev":
            chain["dev"] = "lan0"
        rule = {"family": family, "table": "t", "chain": "c", "handle": 2,
                "expr": [{"match": {"op": "==", "left": {"fib": left}, "right": "local"}}]}  # fmt: skip
        return NftRuntime.from_json({"nftables": [{"table": {"family": family, "name": "t"}}, {"chain": chain},
                                                  {"rule": rule}]})  # fmt: skip

    load("netdev", "ingress", {"result": "type", "flags": ["daddr", "iif"]})
    load("inet", "output", {"result": "type", "flags": ["daddr", "oif"]})
    with pytest.raises(ConfigError, match="fib is only valid at hooks forward, output, postrouting"):
        load("inet", "prerouting", {"result": "type", "flags": ["daddr", "oif"]})

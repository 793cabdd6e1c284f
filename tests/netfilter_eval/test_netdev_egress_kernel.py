"""Differential oracle for netdev egress chains: a forwarding kernel and a flowpath Worker, the same frames
(root only).

Linux: include/linux/netfilter_netdev.h › nf_hook_egress, run by net/core/dev.c › __dev_queue_xmit for
every frame a device transmits: forwarded ones (the classic path, and the flowtable's fast path through
nf_flow_queue_xmit), the gateway's own (an ICMP time exceeded) and a `dup`'s copies
(net/netfilter/nf_dup_netdev.c). Namespace g forwards between a
(10.7.0.0/24, veth va-ga) and c (10.8.0.0/24, veth gc-vc), with static neighbours; flowpath runs a
network file that mirrors g. The frames leave va (AF_PACKET, as test_nft_kernel_diff.py sends them);
each chain's counters, rule by rule, must equal the kernel's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import have_root_nft  # noqa: E402
from test_nft_kernel_diff import _SEND, _sh  # noqa: E402

from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.datapath import Worker  # noqa: E402
from flowpath.packet.batch import PacketBatch  # noqa: E402

pytestmark = pytest.mark.root

FLOWTABLE = "\tflowtable ft {\n\t\thook ingress priority filter\n\t\tdevices = { ga, gc }\n\t}\n"
RULES = """table inet f {
%s	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.7.0.1 counter
		meta l4proto udp flow add @ft
	}
}
table netdev e {
	chain out {
		type filter hook egress device "gc" priority filter; policy accept;
		ip saddr 10.7.0.1 udp dport 1007 counter drop
		ip saddr 10.7.0.1 counter
		ip saddr 10.7.0.1 ip ttl 63 counter
		udp dport 1000 dup to "ga"
	}
	chain back {
		type filter hook egress device "ga" priority filter; policy accept;
		icmp type time-exceeded counter
		ip daddr 10.8.0.1 udp dport 1000 counter
	}
}
"""


def _rules(flowtable: bool) -> str:
    text = RULES % (FLOWTABLE if flowtable else "")
    return text if flowtable else text.replace("\t\tmeta l4proto udp flow add @ft\n", "")


def _frames(mac_a: str, mac_g: str) -> list[bytes]:
    """Four packets of each of two UDP flows, interleaved (the flowtable takes them from the third),
    and one with TTL 1 (time exceeded back to a)."""
    out = []
    for k in range(4):
        for dport in (1000, 1007):
            p = IP(src="10.7.0.1", dst="10.8.0.1") / UDP(sport=4000, dport=dport) / Raw(bytes(k + 1))
            out.append(raw(Ether(src=mac_a, dst=mac_g) / p))
    out.append(raw(Ether(src=mac_a, dst=mac_g) / IP(src="10.7.0.1", dst="10.8.0.1", ttl=1) / UDP(sport=9, dport=9)))
    return out


def _chain_counters(listing: dict) -> dict[str, list[tuple[int, int]]]:
    """Each chain's rule counters, in rule order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for item in listing["nftables"]:
        rule = item.get("rule")
        for stmt in rule["expr"] if rule else ():
            if isinstance(stmt.get("counter"), dict):
                c = stmt["counter"]
                out.setdefault(rule["chain"], []).append((c["packets"], c["bytes"]))
    return out


@pytest.fixture
def three_ns():
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    a, g, c = (f"fpegr_{os.getpid()}_{x}" for x in "agc")
    try:
        for ns in (a, g, c):
            _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "ga", "netns", g)
        _sh("ip", "-n", c, "link", "add", "vc", "type", "veth", "peer", "name", "gc", "netns", g)
        for ns, dev, addr in ((a, "va", "10.7.0.1/24"), (g, "ga", "10.7.0.2/24"), (g, "gc", "10.8.0.2/24"),
                              (c, "vc", "10.8.0.1/24")):  # fmt: skip
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.ga.rp_filter=0")  # fmt: skip
        yield a, g, c
    finally:
        for ns in (a, g, c):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _mac(ns: str, dev: str) -> dict:
    return json.loads(_sh("ip", "-n", ns, "-j", "link", "show", dev).stdout)[0]


@pytest.mark.parametrize("flowtable", [False, True], ids=["classic", "flowtable"])
def test_egress_counters_match_the_kernel(three_ns, flowtable):
    """The egress chain of the out device counts and drops forwarded frames (with a flowtable, the
    fast path's too: the forward chain sees two packets of each flow, the egress chain all four, after
    the TTL decrement), and the egress chain of the in device counts the ICMP error the gateway sends
    back, and the copies a `dup to "ga"` in gc's chain sends (they meet ga's chain); skb->len from the
    MAC header. The same in both."""
    a, g, c = three_ns
    va, ga, gc, vc = _mac(a, "va"), _mac(g, "ga"), _mac(g, "gc"), _mac(c, "vc")
    _sh("ip", "-n", g, "neigh", "replace", "10.7.0.1", "lladdr", va["address"], "dev", "ga", "nud", "permanent")
    _sh("ip", "-n", g, "neigh", "replace", "10.8.0.1", "lladdr", vc["address"], "dev", "gc", "nud", "permanent")
    rules = _rules(flowtable)
    loaded = subprocess.run(["ip", "netns", "exec", g, "nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if loaded.returncode:  # this kernel has no nf_flow_table: test_netdev_egress.py checks flowpath alone
        pytest.skip(f"the kernel refuses the ruleset: {loaded.stderr.splitlines()[0]}")
    frames = _frames(va["address"], ga["address"])
    _sh("ip", "netns", "exec", a, sys.executable, "-c", _SEND, input="\n".join(f.hex() for f in frames))

    network = (f"link add ga address {ga['address']}\nlink add gc address {gc['address']}\n"
               "link set ga up\nlink set gc up\naddr add 10.7.0.2/24 dev ga\naddr add 10.8.0.2/24 dev gc\n"
               f"neigh add 10.7.0.1 lladdr {va['address']} dev ga\n"
               f"neigh add 10.8.0.1 lladdr {vc['address']} dev gc\n")  # fmt: skip
    w = Worker(parse_network(network, "g.ip"), parse_ruleset(rules, "g.nft"), flowtable=flowtable)
    iif = w.net.link_by_name("ga").ifindex
    for k, f in enumerate(frames):  # one poll each, as the kernel takes them one by one
        b = PacketBatch(1)
        b.append(f, iif, 10**9 + k * 1000)
        w.rx_batch(b)
    ours = _chain_counters(w.net.nft.list_ruleset_json())
    assert ours["out"] == [(4, 4 * 42 + 10), (4, 4 * 42 + 10), (4, 4 * 42 + 10)]  # 4 x (14 + 28) + 1..4
    assert w.stats.fastpath_packets == (4 if flowtable else 0)  # the third and fourth of each flow
    for _ in range(50):  # the kernel forwards in softirq: wait until it has counted every frame
        kernel = _chain_counters(json.loads(_sh("ip", "netns", "exec", g, "nft", "-j", "list", "ruleset").stdout))
        if kernel == ours:
            break
        time.sleep(0.05)
    assert kernel == ours
    st = w.stats.as_dict(w.ifname)
    assert st["rx_packets"] == st["forwarded_packets"] + st["dropped_packets"] == 9  # one disposition each
    assert (st["forwarded_packets"], st["drops"], st["generated_packets"]) == (4, {"netfilter_egress": 4, "ttl_expired": 1}, 5)
    assert ours["back"] == [(1, 70), (4, 4 * 42 + 10)]
    assert st["interfaces"]["gc"]["tx_packets"] == 4 and st["tx_packets"] == 4 + st["generated_packets"]

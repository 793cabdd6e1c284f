"""Differential oracle: the same frames through the Linux input hook and through the evaluator (root only).

Two namespaces joined by a veth pair; kernel_diff.nft is loaded on the receiving side, whose rules only
count. Raw frames go out of the sender's veth (AF_PACKET), and the kernel's per-rule counters, read back
with `nft -j list ruleset`, must equal ours for the same frames (nf_tables_core.c › nft_do_chain on
NF_INET_LOCAL_IN). Link-local IPv6 and ND/MLD noise is accepted by the first rules, before any counter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, FakeCt, have_root_nft  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain  # noqa: E402
from flowpath.packet.skb import frame_array, skb_parse  # noqa: E402

pytestmark = pytest.mark.root

B4, B6 = "10.7.0.2", "2001:db8:7::2"
FRAMES = [
    IP(src="10.9.0.5", dst=B4) / TCP(sport=1000, dport=22, flags="S"),
    IP(src="10.8.1.5", dst=B4) / TCP(sport=2000, dport=80, flags="SA"),
    IP(src="10.8.2.1", dst=B4) / TCP(sport=2001, dport=443, flags="FA", window=1234),
    IP(src="10.9.1.1", dst=B4) / TCP(sport=2002, dport=9, flags="R"),
    IP(src="192.0.2.7", dst=B4, tos=0x20) / UDP(sport=5000, dport=53),
    IP(src="192.0.2.7", dst=B4, tos=0x23) / UDP(sport=5000, dport=123) / (b"q" * 100),
    IP(src="10.7.0.1", dst=B4) / ICMP(type=8, id=7),
    IP(src="10.7.0.1", dst=B4) / ICMP(type=8, code=1, id=8),
    IP(src="10.7.0.1", dst=B4, ttl=5) / UDP(sport=9, dport=1500),
    IP(src="10.9.0.5", dst=B4) / UDP(sport=9, dport=7000),
    IP(src="10.9.0.5", dst=B4) / UDP(sport=9, dport=7001),
    IP(src="10.8.9.9", dst=B4) / UDP(sport=9, dport=7000),
    IP(src="10.7.0.1", dst=B4) / UDP(sport=9, dport=9),
    IP(src="10.7.0.1", dst=B4) / UDP(sport=9, dport=9) / (b"x" * 60),
    IPv6(src="2001:db8:7::1", dst=B6) / ICMPv6EchoRequest(id=3),
    IPv6(src="2001:db8:7::1", dst=B6, hlim=1) / UDP(sport=9, dport=53),
    IPv6(src="2001:db8:9::1", dst=B6) / TCP(sport=3000, dport=22, flags="S"),
    IPv6(src="2001:db8:7::1", dst=B6) / UDP(sport=9, dport=1000) / (b"y" * 200),
    IP(src="10.7.0.1", dst=B4, id=777)
    / TCP(sport=1000, dport=22, seq=1000, flags="S", options=[("MSS", 1400)]),
    IP(src="10.7.0.1", dst=B4) / TCP(sport=1001, dport=22, flags="S", options=[("NOP", None), ("MSS", 9000)]),
    IPv6(src="2001:db8:7::1", dst=B6, fl=12345) / TCP(sport=1002, dport=80, flags="S"),
    Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="10.7.0.1", dst="10.7.0.255") / UDP(sport=9, dport=9),
    Ether(src="02:00:00:00:00:aa") / IP(src="10.7.0.1", dst=B4) / UDP(sport=9, dport=10),
]
_SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
    "s.bind(('va', 0))\n"
    "for line in sys.stdin.read().split():\n"
    "    s.send(bytes.fromhex(line))\n"
)


def _frame(p, src: str, dst: str) -> Ether:
    if not isinstance(p, Ether):
        return Ether(src=src, dst=dst) / p
    p = p.copy()
    p.src = p.src if "src" in p.fields else src
    p.dst = p.dst if "dst" in p.fields else dst
    return p


def _sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def _counters(listing: dict) -> dict:
    out = {}
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule:
            for stmt in rule["expr"]:
                if "counter" in stmt:
                    out[rule["chain"], rule["handle"]] = (
                        stmt["counter"]["packets"],
                        stmt["counter"]["bytes"],
                    )
    return out


def assert_kernel_counts(ns: str, rt: NftRuntime) -> None:
    """Every rule counter of rt equals the one the kernel in namespace ns counted for the same ruleset,
    and every rule matched a frame (no vacuous equality)."""
    ours = _counters(rt.list_ruleset_json())
    for _ in range(50):  # the receive path runs in softirq: wait until the kernel has counted every frame
        kernel = _counters(json.loads(_sh("ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset").stdout))
        if kernel == ours:
            break
        time.sleep(0.05)
    diff = {k: (kernel[k], ours[k]) for k in ours if kernel[k] != ours[k]}
    assert not diff, f"(chain, handle): (kernel, ours) {diff}"
    assert all(packets for packets, _ in kernel.values())


@pytest.fixture
def veth_pair():
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    a, b = f"fpeval_{os.getpid()}_a", f"fpeval_{os.getpid()}_b"
    try:
        _sh("ip", "netns", "add", a)
        _sh("ip", "netns", "add", b)
        _sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        _sh("ip", "-n", a, "addr", "add", "10.7.0.1/24", "dev", "va")
        _sh("ip", "-n", a, "addr", "add", "2001:db8:7::1/64", "dev", "va", "nodad")
        _sh("ip", "-n", b, "addr", "add", f"{B4}/24", "dev", "vb")
        _sh("ip", "-n", b, "addr", "add", f"{B6}/64", "dev", "vb", "nodad")
        for ns, dev in ((a, "va"), (b, "vb")):
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh(
            "ip",
            "netns",
            "exec",
            b,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.vb.rp_filter=0",
        )
        _sh("ip", "-n", b, "route", "add", "default", "via", "10.7.0.1")
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", a], check=False)
        subprocess.run(["ip", "netns", "del", b], check=False)


def kernel_replay(veth_pair, rules: str, packets: list, send: str = _SEND, ct: bool = True,
                  accept: bool = False) -> NftRuntime:
    """`rules` (nft text) in the receiving namespace's kernel, `packets` sent to it from the other one
    (`send`: the sender script), and the same frames through flowpath's input hook, built from the kernel's
    own JSON listing; returns that runtime for assert_kernel_counts. `ct`: each packet a new connection's
    (a FakeCt); `accept`: every chain must accept every frame."""
    a, b = veth_pair
    _sh("ip", "netns", "exec", b, "nft", "-f", "-", input=rules)
    rt = NftRuntime.from_json(json.loads(_sh("ip", "netns", "exec", b, "nft", "-j", "list", "ruleset").stdout))
    vb = json.loads(_sh("ip", "-n", b, "-j", "link", "show", "vb").stdout)[0]
    va = json.loads(_sh("ip", "-n", a, "-j", "link", "show", "va").stdout)[0]
    frames = [raw(_frame(p, va["address"], vb["address"])) for p in packets]
    _sh("ip", "netns", "exec", a, sys.executable, "-c", send, input="\n".join(f.hex() for f in frames))
    for f in frames:
        skb = skb_parse(frame_array(f), vb["ifindex"])
        assert not isinstance(skb, int), (skb, f.hex())
        if ct:
            skb.ct, skb.ctinfo = FakeCt(), C.IP_CT_NEW
        nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
        pkt = NftPktinfo(skb=skb, hooknum=C.NF_INET_LOCAL_IN, nfproto=nfproto, iifname="vb", iif=vb["ifindex"])
        for chain in rt.base_chains(nfproto, C.NF_INET_LOCAL_IN):
            verdict = nft_do_chain(chain, pkt)
            assert verdict == C.NF_ACCEPT or not accept, (verdict, f.hex())
    return rt


def test_counters_match_the_kernel(veth_pair):
    rt = kernel_replay(veth_pair, (HERE / "kernel_diff.nft").read_text(), FRAMES, accept=True)
    assert_kernel_counts(veth_pair[1], rt)

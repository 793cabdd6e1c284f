"""Shared builders for the nf_tables evaluation tests: fixtures, Scapy packets, fake conntrack entries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import raw

from flowpath.netfilter import constants as C
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

HERE = Path(__file__).parent


class FakeCt:
    """The two attributes of struct nf_conn the evaluator reads."""

    def __init__(self, status: int = 0, mark: int = 0):
        self.status, self.mark = status, mark


def load_fixture(name: str, **kw) -> NftRuntime:
    return NftRuntime.from_json(json.loads((HERE / name).read_text()), **kw)


def runtime(items: list, **kw) -> NftRuntime:
    return NftRuntime.from_json({"nftables": items}, **kw)


def make_skb(pkt, iif: int = 1, ct=None, ctinfo: int = C.IP_CT_NEW, mark: int = 0, ts_ns: int = 0) -> SkBuff:
    if not isinstance(pkt, Ether):
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
    skb = skb_parse(frame_array(raw(pkt)), iif, ts_ns)
    assert isinstance(skb, SkBuff), skb
    skb.ct, skb.ctinfo, skb.mark = ct, ctinfo, mark
    return skb


def make_pkt(pkt, hooknum: int = C.NF_INET_FORWARD, iifname: str = "eth0", oifname: str = "", iif: int = 1,
             oif: int = 0, nfproto: int | None = None, **kw) -> NftPktinfo:  # fmt: skip
    skb = pkt if isinstance(pkt, SkBuff) else make_skb(pkt, iif=iif, **kw)
    if nfproto is None:
        nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
    return NftPktinfo(
        skb=skb, hooknum=hooknum, nfproto=nfproto, iifname=iifname, oifname=oifname, iif=iif, oif=oif
    )


def run_hook(rt: NftRuntime, pkt: NftPktinfo, types=("filter", "route", "nat")) -> int:
    """What the datapath does with a hook's base chains (nf_hook_slow): the first drop ends it."""
    for chain in rt.base_chains(pkt.nfproto, pkt.hooknum):
        if chain.type in types and nft_do_chain(chain, pkt) == C.NF_DROP:
            return C.NF_DROP
    return C.NF_ACCEPT


def eval_rule(rt: NftRuntime, family: str, table: str, chain: str, handle: int, pkt: NftPktinfo) -> int:
    """One rule's code: NFT_BREAK when it does not match, else its verdict (NFT_CONTINUE: no verdict)."""
    pkt.data = pkt.skb.buf.tobytes()
    rule = next(r for r in rt.chain(family, table, chain).rules if r.handle == handle)
    code = C.NFT_CONTINUE
    for op in rule.ops:
        code = op(pkt)
        if code != C.NFT_CONTINUE:
            break
    return code


def ip4(src="10.0.0.1", dst="192.0.2.1", **kw):
    return IP(src=src, dst=dst, **kw)


def ip6(src="2001:db8::10", dst="2001:db8:1::1", **kw):
    return IPv6(src=src, dst=dst, **kw)


def have_root_nft() -> bool:
    return os.geteuid() == 0 and shutil.which("nft") is not None and shutil.which("ip") is not None


class Netns:
    """A private network namespace for running the real nft (always deleted afterwards)."""

    def __init__(self):
        self.name = f"fpeval_{os.getpid()}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def nft(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, "nft", *args], input=stdin, capture_output=True,
                              text=True, check=False)  # fmt: skip


@pytest.fixture
def netns():
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    with Netns() as ns:
        yield ns

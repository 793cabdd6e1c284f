"""The compiled nft VM against the closure evaluator, on every ruleset under tests/ and examples/.

Linux: nf_tables_core.c › nft_do_chain. Random Scapy packets (IPv4/IPv6, TCP/UDP/ICMP/ICMPv6, later
fragments, truncated frames) with random hook metadata and conntrack state go through each chain twice:
nft_do_chain (the VM, falling back to the closures on a punt) on one runtime, nft_do_chain_closures
directly on a second runtime built from the same JSON. Verdict, drop reason, NAT request, flow add,
marks and every rule counter must be equal, and the VM must have decided most of the runs itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE  # noqa: E402

from flowpath.config.nft import load_ruleset  # noqa: E402
from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402
from flowpath.packet.skb import SkBuff, frame_array, skb_parse  # noqa: E402

ROOT = HERE.parent.parent
# corpus files with statements the datapath refuses on purpose (test_nft_objects.py checks the refusal)
_DATAPATH_REFUSES = ("tests/data/nft/stateful_refused.nft", "tests/data/nft/tproxy_dup.nft")


def _rulesets() -> dict[str, dict]:
    out = {}
    for p in sorted(HERE.glob("*.json")):
        out[p.name] = json.loads(p.read_text())
    for p in sorted([*ROOT.glob("tests/data/**/*.nft"), *ROOT.glob("examples/**/*.nft")]):
        if "invalid" in p.parts or str(p.relative_to(ROOT)) in _DATAPATH_REFUSES:
            continue
        try:
            rs = load_ruleset(p)
        except ConfigError:
            continue  # the fixtures the nft parser does not read have a .json twin above
        if any(t.family in ("arp", "bridge") for t in rs.tables):
            continue  # families the datapath does not run (their load-time error: test_nft_ether.py)
        out[str(p.relative_to(ROOT))] = rs.to_json()
    return out


RULESETS = _rulesets()
_ADDR4 = ["10.0.0.1", "10.0.0.2", "10.1.0.1", "192.168.1.2", "192.168.1.50", "1.1.1.1", "2.2.2.2", "1.2.3.4",
          "5.6.7.8", "127.0.0.2", "172.16.0.1", "192.0.2.1", "10.9.9.9", "8.8.8.8", "100.64.0.1"]  # fmt: skip
_ADDR6 = ["2001:db8::10", "2001:db8:1::1", "::1", "fe80::1", "2001:db8::1", "fd00::2", "2001:db8:ffff::5"]
_PORTS = [22, 23, 53, 67, 80, 81, 90, 123, 443, 500, 1000, 1500, 2000, 4500, 8080, 51820, 0, 65535]
_NAMES = ["", "eth0", "eth1", "lan0", "wan0", "lo", "wan9", "ppp0", "wg0", "br-lan"]


class FakeProto:
    def __init__(self, state: int):
        self.state = state


class FakeCt:
    """The attributes of struct nf_conn the evaluators read (status, mark, TCP state)."""

    def __init__(self, status: int, mark: int, tcp_state: int | None):
        self.status, self.mark = status, mark
        if tcp_state is not None:
            self.proto = FakeProto(tcp_state)


@st.composite
def frames(draw) -> tuple[bytes, int, bool]:
    """(frame bytes, truncation length or 0, later fragment)."""
    v6 = draw(st.booleans())
    l4 = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    addr = st.sampled_from(_ADDR6 if v6 else _ADDR4)
    frag = (not v6) and draw(st.integers(0, 9)) == 0
    if v6:
        ip = IPv6(src=draw(addr), dst=draw(addr), hlim=draw(st.sampled_from([1, 2, 64, 255])),
                  tc=draw(st.integers(0, 255)))  # fmt: skip
    else:
        ip = IP(src=draw(addr), dst=draw(addr), ttl=draw(st.sampled_from([1, 2, 64, 255])),
                tos=draw(st.integers(0, 255)), frag=7 if frag else 0, id=draw(st.integers(0, 0xFFFF)))  # fmt: skip
    port = st.one_of(st.sampled_from(_PORTS), st.integers(0, 0xFFFF))
    if l4 == "tcp":
        l4h = TCP(sport=draw(port), dport=draw(port), flags=draw(st.integers(0, 255)),
                  window=draw(st.integers(0, 0xFFFF)),
                  options=draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None), ("MSS", 1400)]])))  # fmt: skip
    elif l4 == "udp":
        l4h = UDP(sport=draw(port), dport=draw(port))
    else:
        t = draw(st.sampled_from([0, 3, 8, 11, 128, 129, 135, 1]))
        l4h = (
            ICMPv6EchoRequest(id=draw(st.integers(0, 5)))
            if v6
            else ICMP(type=t, code=draw(st.integers(0, 4)))
        )
        if v6 and t != 128:
            l4h.type = t
    dst = draw(st.sampled_from(["02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"]))
    b = raw(Ether(src="02:00:00:00:00:01", dst=dst) / ip / l4h / (b"x" * draw(st.integers(0, 40))))
    return b, draw(st.integers(15, len(b))) if draw(st.integers(0, 4)) == 0 else 0, frag


@st.composite
def metas(draw) -> dict:
    has_ct = draw(st.integers(0, 3)) > 0
    status = 0
    for bit in draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 12, 14]), max_size=5)):
        status |= 1 << bit
    return {
        "hooknum": draw(st.sampled_from([0, 1, 2, 3, 4, 5])),  # 5: NF_NETDEV_INGRESS
        "iifname": draw(st.sampled_from(_NAMES)), "oifname": draw(st.sampled_from(_NAMES)),
        "iif": draw(st.integers(0, 4)), "oif": draw(st.integers(0, 4)),
        "mtu": draw(st.sampled_from([0, 40, 576, 1280, 1500, 9000, 70000])),
        "mark": draw(st.sampled_from([0, 1, 5, 0x10, 0xFF0, 0xFFFFFFFF])),
        "ct": (status, draw(st.sampled_from([0, 1, 5, 0x11])), draw(st.sampled_from([None, 1, 3, 7])))
        if has_ct else None,
        "ctinfo": draw(st.sampled_from([0, 1, 2, 3, 4, 7])),
    }  # fmt: skip


def _pkt(frame: bytes, trunc: int, m: dict) -> NftPktinfo | None:
    skb = skb_parse(frame_array(frame), m["iif"], 0)
    if not isinstance(skb, SkBuff):
        return None
    if trunc:  # loads past the end of a short frame must break, as nft_payload_eval's skb_copy_bits
        skb.buf = skb.buf[: max(trunc, skb.nhoff)]
    skb.ct = FakeCt(*m["ct"]) if m["ct"] else None
    skb.ctinfo, skb.mark = m["ctinfo"], m["mark"]
    nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
    return NftPktinfo(skb=skb, hooknum=m["hooknum"], nfproto=nfproto, iifname=m["iifname"],
                      oifname=m["oifname"], iif=m["iif"], oif=m["oif"], mtu=m["mtu"])  # fmt: skip


def _effects(pkt: NftPktinfo, v: int) -> tuple:
    ct = pkt.skb.ct
    return (v, pkt.reason, pkt.nat, pkt.flow_add, pkt.skb.mark, ct.mark if ct else None, pkt.reject, pkt.logs,
            pkt.skb.buf.tobytes(), pkt.skb.ctinfo)  # fmt: skip


_PAIRS: dict[str, tuple[NftRuntime, NftRuntime]] = {}


def _pair(name: str) -> tuple[NftRuntime, NftRuntime]:
    if name not in _PAIRS:
        _PAIRS[name] = (
            NftRuntime.from_json(RULESETS[name], name),
            NftRuntime.from_json(RULESETS[name], name),
        )
    return _PAIRS[name]


@pytest.mark.parametrize("name", sorted(RULESETS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packet=frames(), meta=metas())
def test_vm_equals_closures(name, packet, meta):
    """Every chain, VM (with its fallback) vs closures: same verdict, NAT, flow add, marks, counters."""
    vm_rt, ref_rt = _pair(name)
    frame, trunc, _ = packet
    for cv, cr in zip(vm_rt.chains, ref_rt.chains, strict=True):
        a, b = _pkt(frame, trunc, meta), _pkt(frame, trunc, meta)
        assume(a is not None)
        counts = ref_rt.vm.progs[8].copy()
        try:
            want = _effects(b, nft_do_chain_closures(cr, b))
        except IndexError:  # a statement the closures run past a truncated frame's end (log, flow add)
            ref_rt.vm.progs[8][:] = counts  # undo what the rules before it counted (quotas, counters)
            assume(False)
        assert _effects(a, nft_do_chain(cv, a)) == want, cv
        assert vm_rt.vm.progs[8].tolist() == ref_rt.vm.progs[8].tolist(), cv  # both runtimes' counters


def test_vm_decides_most_runs():
    """The VM is not a punt machine: on the gateway fixtures it decides nearly every run itself."""
    from scapy.layers.inet import TCP as T

    for name in ("gateway.json", "examples/gateway.nft", "tests/data/nft/vmaps_dispatch.nft"):
        rt = NftRuntime.from_json(RULESETS[name], name)
        runs = 0
        for dport in (22, 23, 80, 443, 8080):
            frame = raw(Ether() / IP(src="10.0.0.1", dst="192.0.2.1") / T(dport=dport, flags="S"))
            for cv in rt.chains:
                pkt = _pkt(frame, 0, {"iif": 1, "ct": None, "ctinfo": 2, "mark": 0, "hooknum": C.NF_INET_FORWARD,
                                      "iifname": "lan0", "oifname": "wan0", "oif": 2, "mtu": 1500})  # fmt: skip
                nft_do_chain(cv, pkt)
                runs += 1
        punted = sum(rt.nft_fallback().values())
        assert punted <= runs // 10, (name, punted, runs)

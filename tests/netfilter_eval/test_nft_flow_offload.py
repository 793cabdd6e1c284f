"""`flow add @ft` (nft_flow_offload.c › nft_flow_offload_eval) on a hand-written flowtable ruleset.

The test kernel has no flowtable support, so flowtable.json is written by hand in the shape `nft -j`
prints (the root test in test_nft_oracle.py checks that nft parses it and fails only in the kernel).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, FakeCt, ip4, load_fixture, make_pkt, runtime  # noqa: E402

from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import nft_do_chain  # noqa: E402

OK = C.IPS_CONFIRMED | C.IPS_ASSURED | C.IPS_SEEN_REPLY


def forward(p, status=OK, ct=True, ctinfo=C.IP_CT_ESTABLISHED, **kw):
    rt = load_fixture("flowtable.json")
    pkt = make_pkt(p, ct=FakeCt(status) if ct else None, ctinfo=ctinfo, **kw)
    v = nft_do_chain(rt.chain("inet", "fw", "forward"), pkt)
    (counter,) = rt.rule_counters()
    return v, pkt.flow_add, counter.packets


def test_flowtable_object_is_loaded():
    rt = load_fixture("flowtable.json")
    (ft,) = rt.flowtables
    assert (ft.name, ft.hook, ft.prio, ft.devices) == ("ft", "ingress", 0, ("eth0", "eth1"))


def test_established_tcp_and_udp_are_offloaded():
    assert forward(ip4() / TCP(flags="A")) == (C.NF_ACCEPT, "ft", 1)
    assert forward(ip4() / UDP()) == (C.NF_ACCEPT, "ft", 1)


@pytest.mark.parametrize(
    ("p", "kw"),
    [
        (ip4() / TCP(flags="FA"), {}),  # FIN on this packet
        (ip4() / TCP(flags="RA"), {}),  # RST
        (ip4() / TCP(flags="A"), {"status": C.IPS_CONFIRMED}),  # TCP not assured (not established)
        (ip4() / UDP(), {"status": C.IPS_ASSURED}),  # not confirmed yet: the first packet of a flow
        (ip4() / UDP(), {"status": OK | C.IPS_OFFLOAD}),  # already offloaded (test_and_set_bit)
        (ip4() / UDP(), {"status": OK | C.IPS_SEQ_ADJUST}),
        (ip4() / UDP(), {"ct": False, "ctinfo": C.IP_CT_UNTRACKED}),
        (IP(src="10.0.0.1", dst="192.0.2.1", options=b"\x01\x01\x01\x00") / UDP(), {}),  # IPv4 options
    ],
)
def test_not_offloadable_breaks_the_rule(p, kw):
    """On every `goto out` the rule ends with NFT_BREAK: its counter does not run, the next rules do."""
    v, flow_add, counted = forward(p, **kw)
    assert (flow_add, counted) == (None, 0)
    assert v == (C.NF_ACCEPT if kw.get("ct", True) else C.NF_DROP)  # established accept / policy drop


def test_icmp_is_not_offloaded():
    """meta l4proto { tcp, udp } already excludes it; the statement alone would also refuse it."""
    items = json.loads((HERE / "flowtable.json").read_text())["nftables"]
    items[4]["rule"]["expr"].pop(0)
    rt = runtime(items)
    pkt = make_pkt(ip4() / ICMP(), ct=FakeCt(OK), ctinfo=C.IP_CT_ESTABLISHED)
    assert nft_do_chain(rt.chain("inet", "fw", "forward"), pkt) == C.NF_ACCEPT and pkt.flow_add is None


def test_flow_add_outside_forward_or_to_unknown_flowtable_is_refused():
    """nft_flow_offload_validate: forward hook only; the flowtable must exist in the table."""
    items = json.loads((HERE / "flowtable.json").read_text())["nftables"]
    bad_hook = copy.deepcopy(items)
    bad_hook[3]["chain"]["hook"] = "input"
    with pytest.raises(ConfigError, match="flow add is only valid at hooks forward"):
        runtime(bad_hook)
    bad_name = copy.deepcopy(items)
    bad_name[4]["rule"]["expr"][1]["flow"]["flowtable"] = "@nope"
    with pytest.raises(ConfigError, match="rule inet fw forward handle 4: flowtable 'nope' does not exist"):
        runtime(bad_name)


def test_tcp_state_must_be_established():
    """nf_conntrack_tcp_established: ASSURED and proto state ESTABLISHED (conntrack's ct.proto.state)."""
    from types import SimpleNamespace

    from flowpath.netfilter.conntrack_proto_tcp import TcpConntrack

    rt = load_fixture("flowtable.json")
    for state, want in ((TcpConntrack.ESTABLISHED, "ft"), (TcpConntrack.FIN_WAIT, None)):
        ct = FakeCt(OK)
        ct.proto = SimpleNamespace(state=state)
        pkt = make_pkt(ip4() / TCP(flags="A"), ct=ct, ctinfo=C.IP_CT_ESTABLISHED)
        nft_do_chain(rt.chain("inet", "fw", "forward"), pkt)
        assert pkt.flow_add == want

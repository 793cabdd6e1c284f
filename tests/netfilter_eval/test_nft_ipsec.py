"""IPsec-aware nft matches: `meta ipsec` (secpath), `ipsec in|out`, `rt ipsec`, on an ESP tunnel gateway.

Linux: net/netfilter/nft_xfrm.c (nft_xfrm_get_eval_in reads skb_sec_path, nft_xfrm_get_eval_out walks
skb_dst's xfrm bundle), nft_meta.c › NFT_META_SECPATH, nft_rt.c › NFT_RT_XFRM.
The network is tests/data/net/ipsec_gateway.ip: lan0 10.1.0.0/16, peer 192.0.2.2 on wan0; SA 0x1001
(reqid 1) out to the peer, SA 0x2002 (reqid 2) in from it; 10.2.0.0/16 lies behind the peer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datapath"))
from gateway import H10, run  # noqa: E402
from nfeval_util import make_skb, run_hook  # noqa: E402

from flowpath import datapath  # noqa: E402
from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter import nft_vm as V  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime  # noqa: E402

KEY = bytes(range(1, 17)) + b"\xca\xfe\xba\xbe"
GW_LAN, GW_WAN, PEER_MAC, HOST_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:02:02", "02:00:00:00:01:05"
NET_TEXT = (Path(__file__).resolve().parents[1] / "data" / "net" / "ipsec_gateway.ip").read_text()
_HOOK = {C.NF_INET_PRE_ROUTING: "prerouting", C.NF_INET_LOCAL_IN: "input", C.NF_INET_FORWARD: "forward",
         C.NF_INET_LOCAL_OUT: "output", C.NF_INET_POST_ROUTING: "postrouting"}  # fmt: skip


def peer_sa() -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=KEY, auth_algo="NULL",
                               tunnel_header=IP(src="192.0.2.2", dst="192.0.2.1"))  # fmt: skip


def states():
    net = parse_network(NET_TEXT, "ipsec.ip")
    sad = {x.spi: x for x in net.xfrm.states}
    return sad[0x1001], sad[0x2002]


def matches(rule: str, hook: int, sp=(), xfrm=None, src="10.2.0.7", dst="10.1.0.5") -> bool:
    """Whether `rule drop` drops a packet with secpath `sp` and output route SA `xfrm` at `hook`."""
    text = (f"table inet t {{\n\tchain c {{\n\t\ttype filter hook {_HOOK[hook]} priority filter; policy accept;\n"
            f"\t\t{rule} drop\n\t}}\n}}\n")  # fmt: skip
    rt = NftRuntime.from_json(parse_ruleset(text).to_json())
    skb = make_skb(IP(src=src, dst=dst) / UDP())
    if sp:
        skb.meta["sp"] = list(sp)
    pkt = NftPktinfo(skb=skb, hooknum=hook, nfproto=C.NFPROTO_IPV4, xfrm=xfrm)
    return run_hook(rt, pkt) == C.NF_DROP


PRE, FWD, POST = C.NF_INET_PRE_ROUTING, C.NF_INET_FORWARD, C.NF_INET_POST_ROUTING


@pytest.mark.parametrize(
    ("rule", "hook", "decrypted", "want"),
    [
        ("meta ipsec exists", PRE, True, True),
        ("meta ipsec exists", PRE, False, False),
        ("meta secpath missing", PRE, False, True),
        ("ipsec in reqid 2", PRE, True, True),
        ("ipsec in reqid 1", PRE, True, False),
        ("ipsec in reqid 2", PRE, False, False),  # no secpath: NFT_BREAK, whatever the operator
        ("ipsec in reqid != 1", PRE, False, False),
        ("ipsec in spi 0x2002", FWD, True, True),
        ("ipsec in ip saddr 192.0.2.2 ipsec in ip daddr 192.0.2.1", FWD, True, True),  # the SA's outer addresses
        ("ipsec in ip6 saddr ::1", FWD, True, False),  # an IPv4 SA: xfrm_state_addr_ok fails
        ("ipsec in spnum 1 reqid 2", FWD, True, False),  # one SA in the secpath
    ],
)
def test_ipsec_in_and_secpath(rule, hook, decrypted, want):
    _, sa_in = states()
    assert matches(rule, hook, sp=[sa_in] if decrypted else ()) is want


@pytest.mark.parametrize(
    ("rule", "hook", "encrypts", "want"),
    [
        ("ipsec out reqid 1", FWD, True, True),
        ("ipsec out reqid 1", POST, False, False),
        ("ipsec out ip daddr 192.0.2.2", POST, True, True),
        ("ipsec out spi 0x1001", C.NF_INET_LOCAL_OUT, True, True),
        ("ipsec out spnum 1 reqid 1", FWD, True, False),  # a one-SA bundle
        ("rt ipsec exists", FWD, True, True),
        ("rt ipsec missing", FWD, False, True),
        ("rt ipsec missing", PRE, False, False),  # not routed yet: no dst, NFT_BREAK
        ("rt ipsec exists", PRE, False, False),
    ],
)
def test_ipsec_out_and_rt_ipsec(rule, hook, encrypts, want):
    sa_out, _ = states()
    assert matches(rule, hook, xfrm=sa_out if encrypts else None) is want


# --- through a Worker: Scapy ESP in, frames out ------------------------------------------------------------
RULES = """table inet f {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
	}

	chain pre {
		type filter hook prerouting priority filter; policy accept;
		ip saddr 10.2.0.0/16 meta secpath missing counter drop
	}

	chain fw {
		type filter hook forward priority filter; policy drop;
		ipsec in reqid 2 ip saddr 10.2.0.0/16 accept
		ipsec out reqid 1 ip daddr 10.2.0.0/16 accept
		ip daddr 8.8.8.8 accept
	}

	chain postr {
		type filter hook postrouting priority filter; policy accept;
		rt ipsec missing udp dport 5555 counter drop
	}
}
"""


@pytest.mark.parametrize("flowtable", [True, False])
def test_worker_accepts_decrypted_and_drops_the_same_packet_in_clear(tmp_path, flowtable, monkeypatch):
    """ESP from the peer decrypts (the first by the classic path's xfrm4_rcv; with flowtables the next
    ones by the fast path's ESP input, whose inner packets reach the classic path with their SA):
    `meta secpath` and `ipsec in reqid 2` let the inner packets through. The same inner packet in clear
    is dropped by nft in PREROUTING, before the fwd policy could."""
    fast = []
    decrypted = datapath.xfrm_rcv_decrypted
    monkeypatch.setattr(datapath, "xfrm_rcv_decrypted", lambda *a: fast.append(a[-1].spi) or decrypted(*a))
    peer = peer_sa()
    inner = IP(src="10.2.0.7", dst="10.1.0.5", ttl=20) / UDP(sport=2222, dport=1111) / Raw(b"from the peer")
    esp = [Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(inner) for _ in range(3)]
    clear = Ether(src=PEER_MAC, dst=GW_WAN) / inner
    out, stats, _ = run(tmp_path, [("wan0", f) for f in esp] + [("wan0", clear)], net=parse_network(NET_TEXT),
                        rules=parse_ruleset(RULES), flowtable=flowtable, batch_size=1)  # fmt: skip
    assert fast == ([0x2002, 0x2002] if flowtable else [])
    assert [bytes(o[Raw]) for o in out["lan0"]] == [b"from the peer"] * 3
    assert all(o[IP].src == "10.2.0.7" and o[IP].ttl == 19 for o in out["lan0"])
    assert stats["drops"] == {"netfilter_drop": 1}


@pytest.mark.parametrize("flowtable", [True, False])
def test_worker_ipsec_out_and_rt_ipsec(tmp_path, flowtable):
    """LAN traffic to the peer's network is encrypted (`ipsec out reqid 1` accepts it in FORWARD, and
    `rt ipsec missing` leaves it alone in POSTROUTING); plain traffic to port 5555 is dropped there."""

    def lan(dst, dport):
        return "lan0", Ether(src=HOST_MAC, dst=GW_LAN) / IP(src="10.1.0.5", dst=dst) / UDP(dport=dport) / Raw(b"p")

    pkts = [lan("10.2.0.7", 5555), lan("8.8.8.8", 5555), lan("8.8.8.8", 6666), lan("10.3.0.1", 6666)]
    out, stats, _ = run(tmp_path, pkts, net=parse_network(NET_TEXT), rules=parse_ruleset(RULES), flowtable=flowtable)
    sent = out["wan0"]
    assert [o[IP].proto for o in sent] == [50, 17]  # ESP to the peer, then the plain 6666 to 8.8.8.8
    assert sent[0][ESP].spi == 0x1001 and sent[1][UDP].dport == 6666
    assert stats["drops"] == {"netfilter_drop": 2}  # 5555 in POSTROUTING, 10.3.0.1 by FORWARD's policy


LANE_RULES = """table inet f {
	chain fw {
		type filter hook forward priority filter; policy drop;
		meta ipsec exists ipsec in reqid 2 accept
		meta ipsec missing ip daddr 8.8.8.8 accept
	}
}
"""


def test_meta_ipsec_runs_in_the_compiled_lane_and_the_vm():
    """`meta ipsec` is in the VM (META_SECPATH): the compiled classic lane forwards plain packets through
    a chain using it without punting (its packets never have a secpath: it leaves decrypted ones to the
    Python path), and the VM run for a decrypted packet reads the secpath. `ipsec in` punts there."""
    rt = NftRuntime.from_json(parse_ruleset(LANE_RULES).to_json())
    assert list(rt.vm.compiled) == [(2, 1)]  # rule 1: meta ipsec, then OP_PUNT at ipsec in
    _, sa_in = states()
    skb = make_skb(IP(src="10.1.0.5", dst="8.8.8.8") / UDP())
    fw = rt.chain("inet", "f", "fw")
    assert rt.vm.run(fw, NftPktinfo(skb=skb, hooknum=FWD, nfproto=C.NFPROTO_IPV4)) == C.NF_ACCEPT
    skb.meta["sp"] = [sa_in]
    pkt = NftPktinfo(skb=skb, hooknum=FWD, nfproto=C.NFPROTO_IPV4)
    assert rt.vm.run(fw, pkt) == V.NFT_PUNT  # matched meta ipsec, then ipsec in


def test_worker_lane_forwards_through_meta_ipsec_without_punting(tmp_path):
    """On a gateway without SAs (the lane stands aside where xfrm policies are), examples/gateway.ip."""
    pkts = [("lan0", Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=d) / UDP(sport=7, dport=9) / Raw(b"p"))
            for d in ("8.8.8.8", "8.8.8.8", "9.9.9.9")]  # fmt: skip
    out, stats, _ = run(tmp_path, pkts, rules=parse_ruleset(LANE_RULES))
    assert [o[IP].dst for o in out["wan0"]] == ["8.8.8.8", "8.8.8.8"]
    assert stats["drops"] == {"netfilter_drop": 1}
    assert stats["classic_lane"]["packets"] == 3 and stats["classic_lane"]["punted"] == {}

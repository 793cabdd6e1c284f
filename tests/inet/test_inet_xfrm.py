"""ESP on the classic path, on a `net` without a Worker: xfrm_output's outer packet leaves through
ip_local_out, and xfrm4_rcv hands the inner packet back to be received again, asking the layer above
for a tunnel tuple (q.xfrm_in). Scapy's SecurityAssociation is the other gateway."""

from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.inet.dev import netif_receive_skb
from flowpath.inet.output_queue import OutputQueue
from flowpath.netns import Net
from flowpath.packet.reason import Reason
from flowpath.packet.skb import frame_array

KEY = bytes(range(1, 17)) + b"\xca\xfe\xba\xbe"
GW_LAN, GW_WAN, PEER, HOST = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:02:02",
    "02:00:00:00:01:05",
)
NET = (Path(__file__).resolve().parents[1] / "data" / "net" / "ipsec_gateway.ip").read_text()
RULES = "table inet f {\n\tchain fw {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n"
T0 = 10**18


def sa(spi, src, dst):
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=KEY, auth_algo="NULL",
                               tunnel_header=IP(src=src, dst=dst))  # fmt: skip


@pytest.fixture
def net():
    return Net(parse_network(NET, "ipsec.ip"), parse_ruleset(RULES))


def rx(net, pkt, ifname):
    q = OutputQueue()
    reason = netif_receive_skb(net, q, frame_array(bytes(pkt)), net.link_by_name(ifname).ifindex, T0)
    return reason, q, [(net.ifname(ifx), Ether(f)) for ifx, f in q.frames]


def test_out_policy_encrypts_through_ip_local_out(net):
    inner = IP(src="10.1.0.5", dst="10.2.0.7", ttl=30) / UDP(sport=1, dport=2) / Raw(b"secret")
    reason, q, [(ifname, e)] = rx(net, Ether(src=HOST, dst=GW_LAN) / inner, "lan0")
    assert reason == Reason.TX and ifname == "wan0" and (e.src, e.dst) == (GW_WAN, PEER)
    plain = sa(0x1001, "192.0.2.1", "192.0.2.2").decrypt(e[IP])
    assert plain[IP].ttl == 29 and bytes(plain[Raw]) == b"secret"
    assert not q.xfrm_in


def test_esp_in_is_received_again_and_asks_for_a_tunnel_tuple(net):
    inner = IP(src="10.2.0.7", dst="10.1.0.5", ttl=20) / UDP(sport=2, dport=1) / Raw(b"from the peer")
    esp = Ether(src=PEER, dst=GW_WAN) / sa(0x2002, "192.0.2.2", "192.0.2.1").encrypt(inner)
    reason, q, [(ifname, e)] = rx(net, esp, "wan0")
    assert reason == Reason.TX and ifname == "lan0" and e.dst == HOST and e[IP].ttl == 19
    assert bytes(e[Raw]) == b"from the peer"
    [(outer, x)] = q.xfrm_in
    assert x.spi == 0x2002 and outer.l4proto == 50 and outer.saddr == 0xC0000202
    again = rx(net, esp, "wan0")  # the same sequence number: the replay window refuses it
    assert again[0] == Reason.XFRM_IN_REPLAY and again[2] == [] and not again[1].xfrm_in

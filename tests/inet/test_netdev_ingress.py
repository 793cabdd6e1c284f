"""The netdev family's ingress chains on the classic path: a frame meets them before the IP stack.

Linux: include/linux/netfilter_netdev.h › nf_hook_ingress, run by net/core/dev.c ›
__netif_receive_skb_core before the frame is handed to ip_rcv; nft_chain_filter.c › nft_do_chain_netdev.
The gateway is the bundled example, with a netdev table added.
"""

import pytest
from example_gateway import EXAMPLES, GW_LAN, H10, example_net, rx
from scapy.all import IP, UDP, Ether, Raw

from flowpath.errors import ConfigError
from flowpath.inet.classic_lane_views import ClassicLane
from flowpath.packet.reason import Reason

GATEWAY = (EXAMPLES / "gateway.nft").read_text()


def with_netdev(chain: str) -> str:
    return GATEWAY + "table netdev edge {\n\tchain c {\n" + chain + "\n\t}\n}\n"


def lan_frame(src: str):
    return (
        Ether(src=H10, dst=GW_LAN) / IP(src=src, dst="198.51.100.7") / UDP(sport=5000, dport=53) / Raw(b"q")
    )


def test_ingress_chain_drops_before_the_ip_stack():
    """A drop in lan0's ingress chain ends the frame with its reason; other frames are forwarded, and
    a chain bound to another device does not see lan0's frames."""
    net = example_net(rules=with_netdev(
        "\t\ttype filter hook ingress device lan0 priority 10; policy accept;\n"
        "\t\tip saddr 192.168.1.66 counter drop\n"
        "\t\tether type ip6 drop"
    ) + "table netdev other {\n\tchain c {\n\t\ttype filter hook ingress device wan0 priority 10; policy drop;\n\t}\n}\n")  # fmt: skip
    reason, q, out = rx(net, lan_frame("192.168.1.66"))
    assert (reason, out, q.local_out) == (Reason.NETFILTER_DROP, [], [])
    assert [(c.packets, c.bytes) for c in net.nft.rule_counters() if c.family == "netdev"] == [
        (1, 29)
    ]  # skb->len: from the IP header
    reason, _, out = rx(net, lan_frame("192.168.1.10"))
    assert reason == Reason.TX and len(out) == 1
    assert not ClassicLane().usable(net, 1)  # the compiled lane would skip the hook: it steps aside


@pytest.mark.parametrize(
    ("chain", "msg"),
    [
        ("\t\ttype filter hook ingress device lan0 priority -10;", "runs before flowtable ft on lan0"),
        ("\t\ttype filter hook ingress device lan0 priority filter;", "runs before flowtable ft on lan0"),
        ("\t\ttype filter hook ingress device lan0 priority 10;\n\t\treject", "does not send a netdev chain's reject"),
        ("\t\ttype filter hook ingress device lan0 priority 10;\n\t\tfwd to \"wan9\"", "Interface does not exist"),
        ("\t\ttype filter hook egress device lan0 priority 10;\n\t\tdup to meta mark map { 1 : \"wan9\" }",
         "Interface does not exist"),
    ],
)  # fmt: skip
def test_what_the_gateway_cannot_run_is_refused_at_load(chain, msg):
    """The flowtable forwards its flows' packets without a chain that Linux runs before it; nft
    resolves a fwd or dup device when it loads the rule (src/datatype.c › ifindex_type_parse)."""
    with pytest.raises(ConfigError, match=msg) as e:
        example_net(rules=with_netdev(chain))
    assert e.value.line > 0 and e.value.col > 0  # at the chain or the rule

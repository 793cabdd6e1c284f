"""Shared by the tests/inet tests: the bundled example gateway as a `net` (no Worker), and one frame
through the classic path's entry."""

from pathlib import Path

from scapy.all import Ether

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.inet.dev import netif_receive_skb
from flowpath.inet.output_queue import OutputQueue
from flowpath.netns import Net
from flowpath.packet.skb import frame_array

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GW_LAN, GW_WAN, H10, UPSTREAM = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:01:0a",
    "02:00:00:00:02:fe",
)
LAN0, WAN0 = 2, 3  # after lo (1), in the network file's order
T0 = 1_700_000_000 * 10**9


def example_net(network: str | None = None, rules: str | None = None) -> Net:
    """The example gateway's namespace; `network`/`rules` replace the bundled files' texts."""
    dev = parse_network(network or (EXAMPLES / "gateway.ip").read_text(), "gateway.ip")
    n = Net(dev, parse_ruleset(rules or (EXAMPLES / "gateway.nft").read_text(), "gateway.nft"))
    assert (n.link_by_name("lan0").ifindex, n.link_by_name("wan0").ifindex) == (LAN0, WAN0)
    return n


def rx(net, pkt, iif=LAN0, ts_ns=T0):
    """One frame through netif_receive_skb: (reason, OutputQueue, [(ifindex, Ether)])."""
    q = OutputQueue()
    reason = netif_receive_skb(net, q, frame_array(bytes(pkt)), iif, ts_ns)
    return reason, q, [(ifx, Ether(f)) for ifx, f in q.frames]

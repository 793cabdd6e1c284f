"""What the classic path hands back for one received packet: frames to transmit and requests.

No Linux counterpart as one object: Linux transmits through dev_queue_xmit into the device's queue,
and the steps that touch per-CPU state (flow_offload_add, the tunnel tuples of the fast path's ESP
input) run in place. Here the classic path only appends to this queue; the Worker, one layer up,
transmits the frames and carries out the requests after the packet's path (flowpath.datapath).
"""

from __future__ import annotations

from flowpath.inet.nf_dup_netdev import dev_queue_xmit_egress, dev_xmit_path
from flowpath.netfilter import constants as C
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


class OutputQueue:
    """frames     (ifindex, frame) in transmit order (a VLAN device's frames leave through its parent)
    local_out  packets the gateway originates (ICMP errors, echo replies, resets) waiting for
               ip_local_out, sent after the received packet's own path (flowpath.inet.dev)
    offload    (skb, flowtable name): `flow add @ft` accepted skb and it was transmitted
    xfrm_in    (outer skb, SA): the classic path decrypted skb with SA; its later ESP may be
               decrypted at early ingress
    generated  how many originated packets were sent (the above, and ARP replies)
    generated_drops  the Reasons of those that were not (no route, a hook dropped them...): an
               originated packet's fate, never a second disposition of the received one
    held       (final Reason, held Reason) of packets held by an earlier path that this packet's path
               (or a timer) decided: fragments nf_defrag kept (IP_DEFRAG_QUEUED: merged into a datagram,
               or dropped with their queue), packets on a neighbour's queue (NEIGH_QUEUED: sent, or
               dropped when it failed or overflowed)
    originating  True while the gateway's own packets go out (local_out_flush): a queued one's fate
               is a generated packet's, not a held one's
    neigh_item   the neighbour queue entry this packet's path left (flowpath.inet.neigh_output), or None
    handoff    (cpu, frame, iif, SA index, ts_ns): a packet decrypted here whose inner flow steers to
               another worker, for that worker's classic path (xfrm4.py › xfrm_rcv_steer)
    now_ns     packet time of what goes out now (egress chains' skbs; a `fwd ip`'s neighbour)
    dup_recursion  fwd/dup transmits nested now (nf_dup_netdev.c's nf_dup_skb_recursion)
    """

    __slots__ = ("frames", "local_out", "offload", "xfrm_in", "generated", "generated_drops", "held",
                 "originating", "neigh_item", "handoff", "now_ns", "dup_recursion")  # fmt: skip

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.local_out: list[SkBuff] = []
        self.offload: list[tuple[SkBuff, str]] = []
        self.xfrm_in: list[tuple[SkBuff, object]] = []
        self.generated = 0
        self.generated_drops: list[int] = []
        self.held: list[tuple[int, int]] = []
        self.originating = False
        self.neigh_item = None
        self.handoff: list[tuple[int, bytes, int, int, int]] = []
        self.now_ns = 0
        self.dup_recursion = 0

    def dev_queue_xmit(self, net, link, frame: bytes) -> Reason | None:
        """Linux: net/core/dev.c › __dev_queue_xmit. A VLAN device transmits through its parent
        (vlan_dev_hard_start_xmit); with egress chains in the ruleset each device's chains see the
        frame first (flowpath.inet.nf_dup_netdev). None when it left, else its Reason (a drop, or
        NEIGH_QUEUED behind an egress chain's `fwd ip`)."""
        nft = net.nft
        if nft is not None and nft.has_hook(C.NFPROTO_NETDEV, C.NF_NETDEV_EGRESS):
            return dev_queue_xmit_egress(net, self, link, frame)
        self.frames.append((dev_xmit_path(net, link)[-1].ifindex, frame))
        return None

    def xmit_generated(self, net, link, frame: bytes) -> None:
        """Transmit a frame the gateway originates (ARP, neighbour discovery), counted as generated,
        or by its Reason in generated_drops when an egress chain did not let it go."""
        r = self.dev_queue_xmit(net, link, frame)
        if r is None:
            self.generated += 1
        elif r != Reason.NEIGH_QUEUED:
            self.generated_drops.append(r)

"""What the neighbour state machine's outcomes send: a resolved entry's queue, a failed one's errors.

Linux: net/core/neighbour.c › neigh_update (the arp_queue sent once the address is known),
neigh_invalidate (the queue dropped, each packet reported through ops->error_report), net/ipv4/arp.c ›
arp_error_report, net/ipv6/ndisc.c › ndisc_error_report. The table and its states are
flowpath.net.neighbour's; arp.py and ndisc.py call neigh_update_xmit when a reply teaches an address.
"""

from __future__ import annotations

from flowpath.inet.ether import link_header
from flowpath.inet.icmp import icmp_send
from flowpath.net.neighbour import NUD_VALID, Neighbour, neigh_flush_queue, neigh_update
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import frame_array, skb_parse

_MAC0 = bytes(12)


class NeighQueued:
    """One packet on a neighbour's arp_queue: its network-layer bytes (several when it was fragmented),
    the received packets whose fate it carries (`packets`: 1, more for a datagram nf_defrag reassembled,
    0 for one the gateway originated), its source address (arp_solicit's choice) and packet time.
    No Linux counterpart as a class: Linux queues the skb itself."""

    __slots__ = ("l3proto", "frames", "packets", "saddr", "ts_ns")

    def __init__(self, l3proto: int, frames: list[bytes], packets: int, saddr: int, ts_ns: int):
        self.l3proto, self.frames, self.packets, self.saddr, self.ts_ns = (
            l3proto,
            frames,
            packets,
            saddr,
            ts_ns,
        )

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


def neigh_queued_fate(q, item: NeighQueued, reason: Reason) -> None:
    """A queued packet's final reason: onto q.held for the received packets it stands for (moved from
    NEIGH_QUEUED by the Worker), or as an originated packet sent (generated) or not (generated_drops)."""
    if item.packets:
        q.held += [(reason, Reason.NEIGH_QUEUED)] * item.packets
    elif reason == Reason.TX:
        q.generated += 1
    else:
        q.generated_drops.append(reason)


def neigh_update_xmit(
    net, q, n: Neighbour, lladdr: bytes | None, state: int, now_ns: int, override=True
) -> None:
    """neigh_update, then the queue it releases transmitted in order with the learnt address."""
    queue = neigh_update(n, lladdr, state, now_ns, override)
    if not queue or not n.nud_state & NUD_VALID:
        return
    link = net.links[n.ifindex]
    for item, _ in queue:  # sent when one of its frames left (an egress chain may drop them)
        fates = [q.dev_queue_xmit(net, link, link_header(net, link, n.ha, item.l3proto) + f) for f in item.frames]
        neigh_queued_fate(q, item, Reason.TX if None in fates else fates[0])


def neigh_invalidate(net, q, n: Neighbour) -> None:
    """neigh_invalidate: resolution failed; each queued packet is dropped (NEIGH_FAILED) with an ICMP
    host unreachable to its sender (arp_error_report / ndisc_error_report: ICMP_HOST_UNREACH,
    ICMPV6_ADDR_UNREACH), queued on q.local_out."""
    for item in neigh_flush_queue(n):
        neigh_queued_fate(q, item, Reason.NEIGH_FAILED)
        skb = skb_parse(
            frame_array(_MAC0 + int(item.l3proto).to_bytes(2, "big") + item.frames[0]), n.ifindex, item.ts_ns
        )
        if isinstance(skb, Reason):
            continue
        if item.l3proto == L.ETH_P_IPV6:
            icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH, L.ICMPV6_ADDR_UNREACH, 0)
        else:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_HOST_UNREACH, 0)

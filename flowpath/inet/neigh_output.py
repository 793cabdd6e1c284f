"""Neighbour output: transmit towards a resolved next hop, or queue and solicit; the neighbours' timers.

Linux: net/core/neighbour.c › neigh_resolve_output, __neigh_event_send, neigh_timer_handler (the
requests through ops->solicit: net/ipv4/arp.c › arp_solicit, net/ipv6/ndisc.c › ndisc_solicit).
States and timers are flowpath.net.neighbour's; this module sends what they ask for.
"""

from __future__ import annotations

from flowpath.inet.arp import arp_solicit
from flowpath.inet.ether import link_header
from flowpath.inet.ndisc import ndisc_solicit
from flowpath.inet.neighbour import NeighQueued, neigh_invalidate, neigh_queued_fate
from flowpath.net.neighbour import (
    NEIGH_FAIL,
    NEIGH_NOTHING,
    NEIGH_SOLICIT,
    Neighbour,
    neigh_event_send,
    neigh_queue,
    neigh_timer_handler,
)
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


def neigh_resolve_output(net, q, frames: list[bytes], skb: SkBuff, fib) -> Reason:
    """ip_finish_output2 › neigh_output › neigh_resolve_output: the network-layer `frames` of skb (one,
    or its fragments) leave with the next hop's address; or, while it is unknown, wait on its entry's
    queue (NEIGH_QUEUED: held) and a request goes out. q.originating: skb is the gateway's own packet
    (its fate goes to generated / generated_drops when the queue ends, not to held)."""
    v6 = skb.l3proto == L.ETH_P_IPV6
    family = 6 if v6 else 4
    nexthop = fib.gateway if fib.gateway is not None else skb.daddr
    n = net.neigh.neigh_lookup(family, nexthop, fib.oif)
    if n is None:
        n = net.neigh.neigh_create(family, nexthop, fib.oif)
    now = skb.ts_ns
    neigh_run_timer(net, q, n, now)
    link = net.links[fib.oif]
    if neigh_event_send(n, now):  # sent when one of its frames left (an egress chain may drop them)
        fates = [q.dev_queue_xmit(net, link, link_header(net, link, n.ha, skb.l3proto) + f) for f in frames]
        return Reason.TX if None in fates else fates[0]
    item = NeighQueued(skb.l3proto, frames, 0 if q.originating else 1, skb.saddr, now)
    for old in neigh_queue(n, item, item.nbytes):  # the oldest beyond unres_qlen_bytes
        neigh_queued_fate(q, old, Reason.NEIGH_QUEUEFULL)
    if not q.originating:
        q.neigh_item = item  # nf_defrag's merged fragments share its fate (flowpath.inet.dev)
    neigh_run_timer(net, q, n, now)  # a new INCOMPLETE entry: the first request, now
    return Reason.NEIGH_QUEUED


def neigh_run_timer(net, q, n: Neighbour, now_ns: int) -> None:
    """neigh_timer_handler for n, as often as it is due by now_ns: requests, or the failure's drops and
    errors. Deviation: runs due while no packet came (a gap in the capture) are made late, at now_ns."""
    while True:
        todo = neigh_timer_handler(n, now_ns)
        if todo == NEIGH_NOTHING:
            return
        if todo == NEIGH_FAIL:
            neigh_invalidate(net, q, n)
            return
        assert todo == NEIGH_SOLICIT
        neigh_solicit(net, q, n)


def neigh_solicit(net, q, n: Neighbour) -> None:
    """ops->solicit: an ARP request or a Neighbour Solicitation, from the source of the newest queued
    packet when it is ours (arp_announce 0), counted as an originated packet (by the solicit)."""
    saddr = n.arp_queue[-1][0].saddr if n.arp_queue else None
    if n.family == 6:
        ndisc_solicit(net, q, n, saddr)
    else:
        arp_solicit(net, q, n, saddr)


def neigh_timers(net, q, now_ns: int) -> None:
    """The timers of every entry (the Worker's GC, each second of packet time)."""
    for n in list(net.neigh):
        if n.timer_ns and n.timer_ns <= now_ns:
            neigh_run_timer(net, q, n, now_ns)

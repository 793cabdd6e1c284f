"""The classic path's entry: one received frame from L2 checks to its final disposition.

Linux: net/core/dev.c › __netif_receive_skb_core (PACKET_OTHERHOST, VLAN untagging, dispatch by
ethertype to arp_rcv / ip_rcv), net/xfrm/xfrm_input.c (a packet decrypted on the fast path is received
again with its secpath). The packets the gateway originates on the way (ICMP errors, resets) leave
through ip_local_out once the received packet's own path has ended, as Linux's would after the
softirq's hook returned. Then no skb holds a conntrack entry created on the way but not confirmed (a
packet queued on a neighbour went through POSTROUTING's confirm; fragments held by nf_defrag have no
entry yet): those are freed (Conntrack.nf_ct_release_unconfirmed), as Linux frees them with the skb.
"""

from __future__ import annotations

from flowpath.inet.arp import arp_rcv
from flowpath.inet.ip_input import ip_rcv_finish
from flowpath.inet.ip_output import ip_local_out
from flowpath.inet.nf_dup_netdev import nf_hook_ingress
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import skb_parse

_BCAST = b"\xff" * 6
MAX_LOCAL_OUT = 64  # originated packets per received one: a bound on reject-of-a-reject chains


def netif_receive_skb(net, q, buf, iif: int, ts_ns: int) -> Reason:
    """One frame through the classic path: L2 checks, then ARP or the IP receive path.

    buf uint8[...] (the frame), q an OutputQueue that collects what it transmits and requests.
    Returns the frame's Reason.
    """
    link = net.links.get(iif)
    if link is None:
        return Reason.NO_LINK
    if not link.up:
        return Reason.LINK_DOWN
    skb = skb_parse(buf, iif, ts_ns)
    if isinstance(skb, Reason):
        return skb
    q.now_ns = ts_ns
    drop = nf_hook_ingress(net, q, skb, link)
    if drop is not None:
        return drop
    dst = skb.buf[0:6].tobytes()
    if dst != link.address and dst != _BCAST and not dst[0] & 1:
        return Reason.MAC_MISMATCH  # PACKET_OTHERHOST
    for tpid, vid in skb.vlans:  # vlan_do_receive, once per tag: a QinQ frame climbs two devices
        sub = net.vlans.get((skb.iif, tpid, vid))
        if sub is None or not sub.up:
            return Reason.VLAN_UNKNOWN
        skb.iif = sub.ifindex
        drop = nf_hook_ingress(net, q, skb, sub)  # another_round: the VLAN device's own hook
        if drop is not None:
            return drop
    if skb.l3proto == L.ETH_P_ARP:
        reason = arp_rcv(net, q, skb)
    elif skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6):
        return Reason.UNHANDLED_PROTO
    else:
        reason = ip_rcv_finish(net, q, skb)
    local_out_flush(net, q)
    net.conntrack.nf_ct_release_unconfirmed()
    nf_defrag_resolved(net, q, reason)
    return reason


def xfrm_rcv_decrypted(net, q, buf, iif: int, ts_ns: int, x) -> Reason:
    """A packet the fast path decrypted with SA x but did not forward: received again with its
    secpath, as xfrm_input does (the classic path's xfrm4_rcv after esp_input)."""
    skb = skb_parse(buf, iif, ts_ns)
    if isinstance(skb, Reason):
        return skb
    q.now_ns = ts_ns
    drop = nf_hook_ingress(net, q, skb, net.links[iif])  # xfrm_input hands it to netif_rx again
    if drop is not None:
        return drop
    skb.meta["sp"] = [x]
    reason = ip_rcv_finish(net, q, skb)
    local_out_flush(net, q)
    net.conntrack.nf_ct_release_unconfirmed()
    nf_defrag_resolved(net, q, reason)
    return reason


def nf_defrag_resolved(net, q, reason: Reason) -> None:
    """The fates this packet's path decided for fragments held earlier (flowpath.netfilter.nf_defrag):
    those it completed a datagram with share the datagram's reason, those its queue's death dropped
    have the killer's. Onto q.held, for the Worker to move them from IP_DEFRAG_QUEUED."""
    d = net.defrag
    if d.merged and reason == Reason.NEIGH_QUEUED and q.neigh_item is not None:
        q.neigh_item.packets += d.merged  # the datagram waits for its neighbour: so do they
    q.neigh_item = None
    if d.killed or d.merged:
        q.held += [(r, Reason.IP_DEFRAG_QUEUED) for r in d.killed + [reason] * d.merged]
        d.killed.clear()
        d.merged = 0


def local_out_flush(net, q) -> None:
    """Send the originated packets queued on q (and those their own output queues, up to a bound);
    count each as generated, or its Reason in generated_drops (later, for one that waits for its
    neighbour: flowpath.inet.neighbour)."""
    sent = 0
    q.originating = True
    while q.local_out and sent < MAX_LOCAL_OUT:
        skb = q.local_out.pop(0)
        sent += 1
        r = ip_local_out(net, q, skb)
        if r == Reason.TX:
            q.generated += 1
        elif r != Reason.NEIGH_QUEUED:  # a queued one is counted when its neighbour decides
            q.generated_drops.append(r)
    q.originating = False
    q.local_out.clear()

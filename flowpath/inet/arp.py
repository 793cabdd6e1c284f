"""ARP: answer requests for the gateway's own addresses, learn neighbours, and solicit them.

Linux: net/ipv4/arp.c › arp_process (reply when the target is a local address of the receiving device,
arp_ignore=0 would answer for any local address; we answer for the device's own, as arp_ignore=1;
a request to us creates or refreshes the sender's entry, STALE, as neigh_event_ns; a reply updates an
existing entry, REACHABLE when it was unicast to us, else STALE; arp_accept 0: an unsolicited reply
creates nothing), arp_solicit and arp_send / arp_create.
"""

from __future__ import annotations

import struct

from flowpath.inet.ether import link_header
from flowpath.inet.neighbour import neigh_update_xmit
from flowpath.net.neighbour import NUD_PROBE, NUD_REACHABLE, NUD_STALE, Neighbour
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16, ld32
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff

_BCAST = b"\xff" * 6


def arp_rcv(net, q, skb: SkBuff) -> Reason:
    b, a = skb.buf, skb.nhoff
    if ld16(b, a + L.ARPH.ar_hrd) != L.ARPHRD_ETHER or ld16(b, a + L.ARPH.ar_pro) != L.ETH_P_IP:
        return Reason.UNHANDLED_PROTO
    op = ld16(b, a + L.ARPH.ar_op)
    tip, sip = ld32(b, a + L.ARPH.ar_tip), ld32(b, a + L.ARPH.ar_sip)
    sha = b[a + L.ARPH.ar_sha : a + L.ARPH.ar_sha + 6].tobytes()
    link = net.links[skb.iif]
    if op == L.ARPOP_REQUEST and any(ifa.address == tip for ifa in net.addrs(skb.iif, 4)):
        if sip:  # neigh_event_ns; not for a duplicate address probe (sip 0.0.0.0)
            n = net.neigh.neigh_create(4, sip, skb.iif)
            neigh_update_xmit(net, q, n, sha, NUD_STALE, skb.ts_ns)
        body = struct.pack(">HHBBH", L.ARPHRD_ETHER, L.ETH_P_IP, 6, 4, L.ARPOP_REPLY)
        body += link.address + struct.pack(">I", tip) + sha + struct.pack(">I", sip)
        q.xmit_generated(net, link, link_header(net, link, sha, L.ETH_P_ARP) + body)
        return Reason.LOCAL_IN
    n = net.neigh.neigh_lookup(4, sip, skb.iif)
    if n is not None:
        unicast = b[0:6].tobytes() == link.address
        state = NUD_REACHABLE if op == L.ARPOP_REPLY and unicast else NUD_STALE
        neigh_update_xmit(net, q, n, sha, state, skb.ts_ns)
    return Reason.LOCAL_IN


def arp_solicit(net, q, n: Neighbour, saddr: int | None) -> bool:
    """arp_solicit: a request for n's address, broadcast (unicast to the known address when PROBE),
    from `saddr` when it is ours (arp_announce 0), else the device's address towards the target
    (inet_select_addr). False when the device has no address to send from. Counted as generated
    (or as a generated drop) here."""
    if saddr is None or not net.is_local(4, saddr):
        saddr = net.inet_select_addr(n.ifindex, 4, n.primary_key)
        if saddr is None:
            return False
    link = net.links[n.ifindex]
    dst = n.ha if n.nud_state == NUD_PROBE else _BCAST
    body = struct.pack(">HHBBH", L.ARPHRD_ETHER, L.ETH_P_IP, 6, 4, L.ARPOP_REQUEST)
    body += link.address + struct.pack(">I", saddr) + bytes(6) + struct.pack(">I", n.primary_key)
    q.xmit_generated(net, link, link_header(net, link, dst, L.ETH_P_ARP) + body)
    return True

"""ARP: answer requests for the gateway's own addresses.

Linux: net/ipv4/arp.c › arp_process (reply when the target is a local address of the receiving device,
arp_ignore=0 would answer for any local address; we answer for the device's own, as arp_ignore=1).
"""

from __future__ import annotations

import struct

from flowpath.inet.ip_output import link_header
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16, ld32
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


def arp_rcv(net, q, skb: SkBuff) -> Reason:
    b, a = skb.buf, skb.nhoff
    if ld16(b, a + L.ARPH.ar_hrd) != L.ARPHRD_ETHER or ld16(b, a + L.ARPH.ar_pro) != L.ETH_P_IP:
        return Reason.UNHANDLED_PROTO
    if ld16(b, a + L.ARPH.ar_op) != L.ARPOP_REQUEST:
        return Reason.LOCAL_IN
    tip = ld32(b, a + L.ARPH.ar_tip)
    if not any(ifa.address == tip for ifa in net.addrs(skb.iif, 4)):
        return Reason.LOCAL_IN
    link = net.links[skb.iif]
    sha = b[a + L.ARPH.ar_sha : a + L.ARPH.ar_sha + 6].tobytes()
    sip = ld32(b, a + L.ARPH.ar_sip)
    body = struct.pack(">HHBBH", L.ARPHRD_ETHER, L.ETH_P_IP, 6, 4, L.ARPOP_REPLY)
    body += link.address + struct.pack(">I", tip) + sha + struct.pack(">I", sip)
    q.dev_queue_xmit(net, link, link_header(link, sha, L.ETH_P_ARP) + body)
    q.generated += 1
    return Reason.LOCAL_IN

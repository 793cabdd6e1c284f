"""The `reject` statement's replies: ICMP/ICMPv6 unreachable or a TCP reset.

Linux: net/ipv4/netfilter/nf_reject_ipv4.c › nf_send_reset, nf_send_unreach (and the ipv6 twins);
net/netfilter/nft_reject_inet.c (icmpx codes mapped per family). The replies are queued on the
OutputQueue (q) and leave through ip_local_out after the rejected packet's path.
"""

from __future__ import annotations

import struct

from flowpath.inet.icmp import icmp_send
from flowpath.netfilter.hooks import NfHookResult, NfHookState
from flowpath.packet import layout as L
from flowpath.packet.csum import ip_fast_csum, l4_csum, ld32, st16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

# nft_reject.h › NFT_REJECT_ICMPX_*: no-route, port-unreachable, host-unreachable, admin-prohibited
_ICMPX_V4 = (L.ICMP_NET_UNREACH, L.ICMP_PORT_UNREACH, L.ICMP_HOST_UNREACH, L.ICMP_PKT_FILTERED)
_ICMPX_V6 = (L.ICMPV6_NOROUTE, L.ICMPV6_PORT_UNREACH, L.ICMPV6_ADDR_UNREACH, L.ICMPV6_ADM_PROHIBITED)


def nf_hook_drop(net, q, skb: SkBuff, res: NfHookResult, state: NfHookState) -> Reason:
    """A hook said drop, or stole the packet (nf_defrag held or dropped a fragment): its reason; a
    `reject` statement also sends its reply (nft_reject_inet_eval)."""
    if res.reject is not None:
        nf_send_reject(net, q, skb, res.reject, state)
    return res.reason or Reason.NETFILTER_DROP


def nf_send_reject(net, q, skb: SkBuff, reject: tuple, state: NfHookState) -> None:
    kind, code = reject
    v6 = skb.l3proto == L.ETH_P_IPV6
    local = net.is_local(6 if v6 else 4, skb.daddr)
    if kind == "tcp reset":
        if skb.l4proto == L.IPPROTO_TCP and not skb.frag:
            nf_send_reset(q, skb)
        return
    if kind == "icmpx":
        code = (_ICMPX_V6 if v6 else _ICMPX_V4)[code]
    elif (kind == "icmpv6") != v6:
        return  # `reject with icmp` on an IPv6 packet in an inet table: nothing sent
    icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH if v6 else L.ICMP_DEST_UNREACH, code, 0, local=local)


def nf_send_reset(q, skb: SkBuff) -> None:
    """RST for a TCP segment (RFC 9293 §3.10.7.1): seq from its ACK, or RST|ACK covering its length."""
    b, th = skb.buf, skb.thoff
    if b[th + L.TCPH.flags] & L.TCPHDR_RST:
        return
    v6 = skb.l3proto == L.ETH_P_IPV6
    flags = int(b[th + L.TCPH.flags])
    doff = (int(b[th + L.TCPH.doff_res]) >> 4) * 4
    if flags & L.TCPHDR_ACK:
        seq, ack, nflags = ld32(b, th + L.TCPH.ack_seq), 0, L.TCPHDR_RST
    else:
        plen = skb.len - th - doff
        ack = (
            ld32(b, th + L.TCPH.seq) + plen + bool(flags & L.TCPHDR_SYN) + bool(flags & L.TCPHDR_FIN)
        ) & 0xFFFFFFFF
        seq, nflags = 0, L.TCPHDR_RST | L.TCPHDR_ACK
    tcp = struct.pack(">HHIIBBHHH", skb.dport, skb.sport, seq, ack, 5 << 4, nflags, 0, 0, 0)
    if v6:
        nh = struct.pack(">IHBB", 0x60000000, len(tcp), L.IPPROTO_TCP, 64)
        nh += skb.daddr.to_bytes(16, "big") + skb.saddr.to_bytes(16, "big")
        proto = L.ETH_P_IPV6
    else:  # nf_reject_iphdr_put: DF, id 0, default TTL
        nh = struct.pack(">BBHHHBBHII", 0x45, 0, 40, 0, L.IP_DF, 64, L.IPPROTO_TCP, 0, skb.daddr, skb.saddr)
        proto = L.ETH_P_IP
    buf = frame_array(bytes(12) + struct.pack(">H", proto) + nh + tcp)
    nhoff, thoff = L.ETH_HLEN, L.ETH_HLEN + len(nh)
    st16(buf, thoff + L.TCPH.check, l4_csum(buf, nhoff, thoff, len(tcp), v6, L.IPPROTO_TCP, L.TCPH.check))
    if not v6:
        st16(buf, nhoff + L.IPH.check, ip_fast_csum(buf, nhoff, L.IPH.size))
    rst = skb_parse(buf, 0, skb.ts_ns)
    q.local_out.append(rst)

"""Reassembly timeouts: the queues nf_defrag kills when their timer runs out, and the ICMP they send.

Linux: net/ipv4/ip_fragment.c › ip_expire (frag_expire_skip_icmp: conntrack's queues stay silent
unless the datagram was for this host) and include/net/ipv6_frag.h › ip6frag_expire_frag_queue (IPv6
conntrack's queues send their time exceeded for forwarded datagrams too). The queues themselves are
flowpath.netfilter.nf_defrag's; this step sits in inet because it routes and sends ICMP.
"""

from __future__ import annotations

from flowpath.inet.icmp import icmp_send
from flowpath.packet import layout as L

ICMP_EXC_FRAGTIME = 1  # include/uapi/linux/icmp.h
ICMPV6_EXC_FRAGTIME = 1  # include/uapi/linux/icmpv6.h


def ip_expire(net, q, now_ns: int) -> int:
    """Expire the reassembly queues whose timer has run out at packet time now_ns; return how many
    fragments they held (each a FRAG_REASM_TIMEOUT drop). A queue whose first fragment came answers
    with ICMP time exceeded, fragment reassembly time exceeded, quoting that fragment: IPv4 only for
    a datagram to this host, IPv6 always. The errors go on q.local_out, which the caller (the Worker's
    GC) sends.

    Deviation: Linux sends them from the timer; here they leave at the first GC run after the
    deadline (GC runs once a second of packet time, at a poll), ahead of that poll's packets.
    """
    held, heads = net.defrag.inet_frag_expire(now_ns)
    for head in heads:
        head.ts_ns = now_ns  # the rate limiter's clock: the timer's time
        if head.l3proto == L.ETH_P_IPV6:
            local = net.is_local(6, head.daddr)
            icmp_send(net, q, head, L.ICMPV6_TIME_EXCEED, ICMPV6_EXC_FRAGTIME, 0, local=local)
        elif net.is_local(4, head.daddr):  # frag_expire_skip_icmp: forwarded datagrams stay silent
            icmp_send(net, q, head, L.ICMP_TIME_EXCEEDED, ICMP_EXC_FRAGTIME, 0, local=True)
    return held

"""ICMP and ICMPv6 messages the gateway itself sends: errors and echo replies.

Linux: net/ipv4/icmp.c (__icmp_send, icmp_echo, icmpv4_xrlim_allow) and net/ipv6/icmp.c (icmp6_send).
A message is built as a local-out SkBuff with a blank Ethernet header and queued on the OutputQueue:
flowpath.inet.dev routes it through ip_local_out (OUTPUT, POSTROUTING, link layer) once the packet
that caused it has finished its path.
"""

from __future__ import annotations

import struct

from flowpath.net.fib import RouteType
from flowpath.packet import layout as L
from flowpath.packet.csum import icmp_csum, ip_fast_csum, l4_csum, ld16, st16
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

IPTOS_PREC_INTERNETCONTROL = 0xC0
IPTOS_TOS_MASK = 0x1E
SYSCTL_IP_DEFAULT_TTL = 64
SYSCTL_IPV6_HOP_LIMIT = 64
ICMP_ERR_MAX = 576  # RFC 1812 §4.3.2.3: an ICMPv4 error carries as much as fits in 576 bytes
ICMPV6_ERR_MAX = L.IPV6_MIN_MTU  # RFC 4443 §2.4(c)
XRLIM_RATELIMIT_NS = 1_000_000_000  # net.ipv4.icmp_ratelimit = 1000 ms
XRLIM_BURST_FACTOR = 6
ICMP_RATEMASK = (
    (1 << L.ICMP_DEST_UNREACH)
    | (1 << L.ICMP_SOURCE_QUENCH)
    | (1 << L.ICMP_TIME_EXCEEDED)
    | (1 << L.ICMP_PARAMETERPROB)
)  # net.ipv4.icmp_ratemask = 0x1818
_MAC0 = bytes(12)


class IcmpRateLimit:
    """Per-destination token bucket (net/ipv4/inetpeer.c › inet_peer_xrlim_allow), on packet time."""

    def __init__(self, timeout_ns: int = XRLIM_RATELIMIT_NS):
        self.timeout_ns = timeout_ns
        self.peers: dict[int, tuple[int, int]] = {}  # daddr -> (tokens_ns, last_ns)

    def allow(self, daddr: int, now_ns: int) -> bool:
        tokens, last = self.peers.get(daddr, (XRLIM_BURST_FACTOR * self.timeout_ns, now_ns))
        tokens = min(tokens + now_ns - last, XRLIM_BURST_FACTOR * self.timeout_ns)
        ok = tokens >= self.timeout_ns
        self.peers[daddr] = (tokens - self.timeout_ns if ok else tokens, now_ns)
        return ok


def icmpv4_xrlim_needed(type_: int, code: int) -> bool:
    """icmpv4_mask_allow: PMTU messages are never rate limited; the others by icmp_ratemask."""
    if type_ == L.ICMP_DEST_UNREACH and code == L.ICMP_FRAG_NEEDED:
        return False
    return bool(ICMP_RATEMASK & (1 << type_)) if type_ < 32 else False


def _is_bad_source4(a: int) -> bool:
    return a == 0 or a == 0xFFFFFFFF or (a >> 28) == 0xE or (a >> 24) == 0x7F


def icmp_error_allowed(skb: SkBuff) -> bool:
    """__icmp_send's refusals: never about an ICMP error, a later fragment, or a non-unicast source/dest."""
    b = skb.buf
    if skb.l3proto == L.ETH_P_IP:
        if ld16(b, skb.nhoff + L.IPH.frag_off) & L.IP_OFFSET:
            return False
        if _is_bad_source4(skb.saddr) or (skb.daddr >> 28) == 0xE or skb.daddr == 0xFFFFFFFF:
            return False
        if skb.l4proto == L.IPPROTO_ICMP and skb.thoff >= 0:
            t = int(b[skb.thoff])
            if t in L.ICMP_ERRORS or t > L.ICMP_ADDRESSREPLY:
                return False
        return True
    if skb.saddr == 0 or (skb.saddr >> 120) == 0xFF:  # RFC 4443 §2.4(e)
        return False
    if skb.l4proto == L.IPPROTO_ICMPV6 and skb.thoff >= 0 and int(b[skb.thoff]) < 128:
        return False
    return True


class IcmpSender:
    """Builds ICMP/ICMPv6 messages; keeps the IPv4 ident counter and the rate limiter (one per `net`)."""

    def __init__(self) -> None:
        self.ident = 0
        self.ratelimit = IcmpRateLimit()
        self.ratelimited = 0

    def _ip_select_ident(self) -> int:
        self.ident = (self.ident + 1) & 0xFFFF
        return self.ident

    def ip_select_ident(self) -> int:
        """The IPv4 ident of another packet the gateway builds (a tunnel's outer header): Linux draws
        them all from one ip_idents table (net/ipv4/route.c › __ip_select_ident)."""
        return self._ip_select_ident()

    def icmp_send(self, skb: SkBuff, type_: int, code: int, info: int, saddr: int) -> SkBuff | None:
        """An ICMPv4 error about `skb` (its current bytes) from `saddr`, or None when refused or limited.

        info: the next-hop MTU for ICMP_FRAG_NEEDED (RFC 1191), the pointer for parameter problems.
        """
        if not icmp_error_allowed(skb):
            return None
        if icmpv4_xrlim_needed(type_, code) and not self.ratelimit.allow(skb.saddr, skb.ts_ns):
            self.ratelimited += 1
            return None
        inner = skb.buf[skb.nhoff :].tobytes()[: ICMP_ERR_MAX - L.IPH.size - L.ICMPH.size]
        tos = (int(skb.buf[skb.nhoff + L.IPH.tos]) & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL
        if type_ == L.ICMP_DEST_UNREACH and code == L.ICMP_FRAG_NEEDED:
            rest = struct.pack(">HH", 0, info)
        elif type_ == L.ICMP_PARAMETERPROB:
            rest = struct.pack(">BBH", info, 0, 0)
        else:
            rest = bytes(4)
        icmp = struct.pack(">BBH", type_, code, 0) + rest + inner
        return self._ip_local_out4(saddr, skb.saddr, tos, icmp)

    def icmp_echo(self, skb: SkBuff) -> SkBuff:
        """icmp_echo/icmp_reply: the echo reply to a request addressed to us."""
        icmp = bytearray(skb.buf[skb.thoff :].tobytes())
        icmp[0] = L.ICMP_ECHOREPLY
        tos = int(skb.buf[skb.nhoff + L.IPH.tos])
        return self._ip_local_out4(skb.daddr, skb.saddr, tos, bytes(icmp))

    def _ip_local_out4(self, saddr: int, daddr: int, tos: int, icmp: bytes) -> SkBuff:
        tot_len = L.IPH.size + len(icmp)
        iph = struct.pack(">BBHHHBBHII", 0x45, tos, tot_len, self._ip_select_ident(), 0,
                          SYSCTL_IP_DEFAULT_TTL, L.IPPROTO_ICMP, 0, saddr, daddr)  # fmt: skip
        buf = frame_array(_MAC0 + struct.pack(">H", L.ETH_P_IP) + iph + icmp)
        nh, th = L.ETH_HLEN, L.ETH_HLEN + L.IPH.size
        st16(buf, th + L.ICMPH.checksum, 0)
        st16(buf, th + L.ICMPH.checksum, icmp_csum(buf, th, len(icmp)))
        st16(buf, nh + L.IPH.check, ip_fast_csum(buf, nh, L.IPH.size))
        return skb_parse(buf, 0)

    def icmp6_send(self, skb: SkBuff, type_: int, code: int, info: int, saddr: int) -> SkBuff | None:
        """An ICMPv6 error about `skb` from `saddr` (RFC 4443 §2.4); info is the MTU for PKT_TOOBIG."""
        if not icmp_error_allowed(skb):
            return None
        if type_ != L.ICMPV6_PKT_TOOBIG and not self.ratelimit.allow(skb.saddr, skb.ts_ns):
            self.ratelimited += 1
            return None
        inner = skb.buf[skb.nhoff :].tobytes()[: ICMPV6_ERR_MAX - L.IP6H.size - L.ICMPH.size]
        icmp = struct.pack(">BBHI", type_, code, 0, info) + inner
        return self._ip6_local_out(saddr, skb.saddr, icmp)

    def icmpv6_echo_reply(self, skb: SkBuff) -> SkBuff:
        icmp = bytearray(skb.buf[skb.thoff :].tobytes())
        icmp[0] = L.ICMPV6_ECHO_REPLY
        return self._ip6_local_out(skb.daddr, skb.saddr, bytes(icmp))

    def _ip6_local_out(self, saddr: int, daddr: int, icmp: bytes) -> SkBuff:
        ip6h = struct.pack(">IHBB", 0x60000000, len(icmp), L.IPPROTO_ICMPV6, SYSCTL_IPV6_HOP_LIMIT)
        ip6h += saddr.to_bytes(16, "big") + daddr.to_bytes(16, "big")
        buf = frame_array(_MAC0 + struct.pack(">H", L.ETH_P_IPV6) + ip6h + icmp)
        nh, th = L.ETH_HLEN, L.ETH_HLEN + L.IP6H.size
        st16(buf, th + L.ICMPH.checksum, l4_csum(buf, nh, th, len(icmp), True, L.IPPROTO_ICMPV6, 2))
        return skb_parse(buf, 0)


def echo_request(skb: SkBuff) -> bool:
    """True for an ICMP/ICMPv6 echo request (not a fragment)."""
    if skb.thoff < 0 or skb.frag or skb.l4proto not in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6):
        return False  # other protocols may carry no byte at thoff at all
    t = int(skb.buf[skb.thoff])
    return t == (L.ICMP_ECHO if skb.l4proto == L.IPPROTO_ICMP else L.ICMPV6_ECHO_REQUEST)


def icmp_send(net, q, skb: SkBuff, type_: int, code: int, info: int, local: bool = False) -> None:
    """icmp_send / icmp6_send: an error about skb, queued for ip_local_out (q: an OutputQueue).

    The source is the address the route back to the sender selects, or skb's destination when the
    error is about a packet addressed to us (`local`).
    """
    family = 6 if skb.l3proto == L.ETH_P_IPV6 else 4
    if local:
        saddr = skb.daddr
    else:
        back = net.fib_lookup(family, skb.saddr)
        if back is None or back.type != RouteType.UNICAST:
            return
        saddr = back.prefsrc or net.inet_select_addr(back.oif, family, skb.saddr)
        if saddr is None:
            return
    send = net.icmp.icmp6_send if family == 6 else net.icmp.icmp_send
    msg = send(skb, type_, code, info, saddr)
    if msg is not None:
        msg.ts_ns = skb.ts_ns
        q.local_out.append(msg)

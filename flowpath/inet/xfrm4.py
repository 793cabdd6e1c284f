"""IPsec on the classic path: the policy checks, ESP output after FORWARD, and ESP input to a local SA.

Linux: net/ipv4/ip_forward.c (xfrm4_policy_check(XFRM_POLICY_FWD), xfrm4_route_forward),
net/xfrm/xfrm_output.c › xfrm_output, xfrm_output_resume (the outer packet leaves through LOCAL_OUT and
POSTROUTING like a locally generated one: the caller, ip_output, sends it), net/xfrm/xfrm_input.c ›
xfrm_input (the inner packet, returned to ip_local_deliver, is received again on the same device, with
the secpath that allows it through the fwd/in policy). IPv4 and IPv6 share these steps.
The SA is the one xfrm_state_find gives the CPU this view of the namespace runs on (`net.cpu`): its
pinned SA, else the unpinned one (RFC 9611). A template that finds no SA raises an ACQUIRE (see
flowpath.xfrm.state) and drops with XFRM_NO_STATE (Linux: larval_drop, the default).
"""

from __future__ import annotations

import ipaddress

from flowpath.packet import layout as L
from flowpath.packet.csum import ld32
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse
from flowpath.packet.steer import flow_steer_frame
from flowpath.xfrm.esp import esp_input, esp_output
from flowpath.xfrm.policy import XFRM_POLICY_BLOCK, XFRM_POLICY_OUT, xfrm_lookup
from flowpath.xfrm.policy import xfrm_policy_check as _xfrm_policy_check
from flowpath.xfrm.state import Flowi, xfrm_state_find, xfrm_state_lookup

UDP_ENCAP_PORT = 4500  # RFC 3948
_AF = {4: 2, 6: 10}  # AF_INET, AF_INET6


def _family(skb: SkBuff) -> int:
    return 6 if skb.l3proto == L.ETH_P_IPV6 else 4


def _sel_args(skb: SkBuff) -> tuple:
    return skb.saddr, skb.daddr, skb.l4proto, skb.sport, skb.dport


def _addr(skb: SkBuff, a: int):
    a = int(a)  # a numpy integer with the JIT off
    return ipaddress.IPv6Address(a) if skb.l3proto == L.ETH_P_IPV6 else ipaddress.IPv4Address(a)


def xfrm_policy_check(net, skb: SkBuff, dir_: int) -> bool:
    """__xfrm_policy_check on a received packet (decrypted or not): may it pass `dir_`?"""
    s, d, p, sp, dp = _sel_args(skb)
    return _xfrm_policy_check(
        net.xfrm, dir_, _AF[_family(skb)], _addr(skb, s), _addr(skb, d), p, sp, dp, skb.meta.get("sp", [])
    )


def _flowi(net, skb: SkBuff, oif: int) -> Flowi:
    """The flow xfrm_lookup decodes from the packet (Linux: xfrm_decode_session): ICMP's type and code
    stand in the ports; oif is the routed output device."""
    s, d, p, sp, dp = _sel_args(skb)
    if p in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6) and skb.thoff >= 0:
        sp, dp = int(skb.buf[skb.thoff]), int(skb.buf[skb.thoff + 1])
    return Flowi(_AF[_family(skb)], _addr(skb, s), _addr(skb, d), p, sp, dp, net.ifname(oif))


def xfrm_route_forward(net, skb: SkBuff, oif: int = 0):
    """xfrm_lookup on the way out: None (plain route), an XfrmState to encrypt with, or a drop Reason.
    oif: the routed output device (the ACQUIRE's selector names it)."""
    s, d, p, sp, dp = _sel_args(skb)
    pol = xfrm_lookup(net.xfrm, _AF[_family(skb)], _addr(skb, s), _addr(skb, d), p, sp, dp, XFRM_POLICY_OUT)
    if pol is None:
        return None
    if pol.action == XFRM_POLICY_BLOCK:
        return Reason.XFRM_POLICY
    x = None
    for t in pol.tmpls:  # one tunnel-mode template is what gateways use; nested bundles are not built
        x = xfrm_state_find(net.xfrm, t, skb.ts_ns, pol=pol, fl=_flowi(net, skb, oif), cpu=net.cpu)
        if x is None and not t.optional:
            return Reason.XFRM_NO_STATE
    return x


def xfrm_outer_route(net, x):
    family = 6 if x.daddr.version == 6 else 4
    return net.fib_lookup(family, int(x.daddr))


def xfrm_dst_lookup(net, skb: SkBuff, fib):
    """The route a packet leaves by, IPsec considered: (fib, None) for a plain route, (the SA's outer
    route, SA) when an out policy encrypts it, or a drop Reason (xfrm_lookup on the routed dst)."""
    if net.xfrm is None or skb.meta.get("xfrm_out"):
        return fib, None
    x = xfrm_route_forward(net, skb, fib.oif)
    if x is None:
        return fib, None
    if isinstance(x, Reason):
        return x
    outer = xfrm_outer_route(net, x)
    return Reason.IP_OUTNOROUTES if outer is None else (outer, x)


def xfrm_output(net, skb: SkBuff, x) -> SkBuff | Reason:
    """Encrypt skb (already through POSTROUTING as plaintext): the outer packet, for the caller to send
    as a local one (ip_local_out), or a drop Reason."""
    fib = xfrm_outer_route(net, x)
    ttl = 64  # outer TTL from the route's hop limit default (sysctl ip_default_ttl)
    out = esp_output(x, skb.tobytes(), skb.nhoff, skb.ts_ns, ttl)
    if isinstance(out, int):
        return Reason(out)
    outer = skb_parse(frame_array(out), skb.iif, skb.ts_ns)
    if isinstance(outer, Reason):
        return outer
    outer.meta["xfrm_out"] = True  # the outer packet is not looked up in the SPD again
    if fib is None:
        return Reason.IP_OUTNOROUTES
    return outer


def xfrm4_rcv(net, q, skb: SkBuff) -> SkBuff | Reason | None:
    """ESP (or ESP-in-UDP on port 4500) to one of our addresses: decrypt; return the inner packet (with
    its secpath) for the caller to receive again, or a drop Reason.

    Returns None when the packet is not for IPsec (UDP 4500 IKE with the non-ESP marker, keepalives).
    """
    b, th = skb.buf, skb.thoff
    if skb.l4proto == L.IPPROTO_UDP:
        if skb.dport != UDP_ENCAP_PORT or skb.len - th < L.UDPH.size + 8:
            return None  # IKE with the non-ESP marker is shorter or starts with 4 zero bytes; keepalive 0xFF
        spi = ld32(b, th + L.UDPH.size)
        if spi == 0:
            return None
    else:
        if skb.len - th < L.ESPH.size:
            return Reason.XFRM_IN_HDR
        spi = ld32(b, th)
    x = xfrm_state_lookup(net.xfrm, _addr(skb, skb.daddr), spi)
    if x is None or (skb.l4proto == L.IPPROTO_UDP) != bool(x.encap_sport):
        return Reason.XFRM_NO_STATE
    res = esp_input(x, skb.tobytes(), skb.nhoff, skb.ts_ns)
    if isinstance(res, int):
        return Reason(res)
    inner, l3 = res
    q.xfrm_in.append((skb, x))  # later ESP of this SA on this device: decrypted at early ingress
    frame = skb.buf[: skb.nhoff - 2].tobytes() + l3.to_bytes(2, "big") + inner
    iskb = skb_parse(frame_array(frame), skb.iif, skb.ts_ns)
    if isinstance(iskb, Reason):
        return iskb
    iskb.meta["sp"] = skb.meta.get("sp", []) + [x]  # the secpath
    return iskb


def xfrm_rcv_steer(net, q, iskb: SkBuff) -> bool:
    """With several workers: an inner packet this worker decrypted whose flow steers to another one
    goes there (q.handoff), as RPS would queue it to the CPU of its flow; True when handed over.
    No Linux counterpart (Linux's flowtable and conntrack are shared by all CPUs): each worker owns
    the flowtable entries of the flows steered to it (flowpath/workers.py), and ESP, steered by SPI,
    cannot be steered by its inner flow before it is decrypted."""
    nr = net.conntrack.nr_cpus
    if nr <= 1:
        return False
    cpu = int(flow_steer_frame(iskb.buf, 0, iskb.len, nr))
    if cpu == net.cpu:
        return False
    q.handoff.append((cpu, iskb.tobytes(), iskb.iif, iskb.meta["sp"][-1].index, iskb.ts_ns))
    return True

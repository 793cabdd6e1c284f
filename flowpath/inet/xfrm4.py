"""IPsec on the classic path: the policy checks, ESP output after FORWARD, and ESP input to a local SA.

Linux: net/ipv4/ip_forward.c (xfrm4_policy_check(XFRM_POLICY_FWD), xfrm4_route_forward),
net/xfrm/xfrm_output.c › xfrm_output, xfrm_output_resume (the outer packet leaves through LOCAL_OUT and
POSTROUTING like a locally generated one), net/xfrm/xfrm_input.c › xfrm_input (the inner packet is
received again on the same device, with the secpath that allows it through the fwd/in policy).
IPv4 and IPv6 share these steps.
Deviation: no ACQUIRE: a policy whose template finds no SA drops with XFRM_NO_STATE (Linux queues or
drops while the IKE daemon negotiates).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

if TYPE_CHECKING:
    from flowpath.datapath import Worker

UDP_ENCAP_PORT = 4500  # RFC 3948
_AF = {4: 2, 6: 10}  # AF_INET, AF_INET6


def _family(skb: SkBuff) -> int:
    return 6 if skb.l3proto == L.ETH_P_IPV6 else 4


def _sel_args(skb: SkBuff) -> tuple:
    return skb.saddr, skb.daddr, skb.l4proto, skb.sport, skb.dport


def _addr(skb: SkBuff, a: int):
    a = int(a)  # a numpy integer with the JIT off
    return ipaddress.IPv6Address(a) if skb.l3proto == L.ETH_P_IPV6 else ipaddress.IPv4Address(a)


def xfrm_policy_check(w: Worker, skb: SkBuff, dir_: int) -> bool:
    """__xfrm_policy_check on a received packet (decrypted or not): may it pass `dir_`?"""
    from flowpath.xfrm.policy import xfrm_policy_check as check

    s, d, p, sp, dp = _sel_args(skb)
    return check(
        w.xfrm, dir_, _AF[_family(skb)], _addr(skb, s), _addr(skb, d), p, sp, dp, skb.meta.get("sp", [])
    )


def xfrm_route_forward(w: Worker, skb: SkBuff):
    """xfrm_lookup on the way out: None (plain route), an XfrmState to encrypt with, or a drop Reason."""
    from flowpath.xfrm.policy import XFRM_POLICY_BLOCK, XFRM_POLICY_OUT, xfrm_lookup
    from flowpath.xfrm.state import xfrm_state_find

    s, d, p, sp, dp = _sel_args(skb)
    pol = xfrm_lookup(w.xfrm, _AF[_family(skb)], _addr(skb, s), _addr(skb, d), p, sp, dp, XFRM_POLICY_OUT)
    if pol is None:
        return None
    if pol.action == XFRM_POLICY_BLOCK:
        return Reason.XFRM_POLICY
    x = None
    for t in pol.tmpls:  # one tunnel-mode template is what gateways use; nested bundles are not built
        x = xfrm_state_find(w.xfrm, t, skb.ts_ns)
        if x is None and not t.optional:
            return Reason.XFRM_NO_STATE
    return x


def xfrm_outer_route(w: Worker, x):
    family = 6 if x.daddr.version == 6 else 4
    return w.net.fib_lookup(family, int(x.daddr))


def xfrm_state_mtu(x, outer_mtu: int) -> int:
    """xfrm_state_mtu for ESP tunnel mode with an AEAD (4-byte alignment, 8-byte IV)."""
    hdr = (40 if x.daddr.version == 6 else 20) + 8 + 8 + (8 if x.encap_sport else 0)
    return ((outer_mtu - hdr - x.icv_len) & ~3) - 2


def xfrm_output(w: Worker, skb: SkBuff, x) -> Reason:
    """Encrypt skb (already through POSTROUTING as plaintext) and send the outer packet as a local one."""
    from flowpath.inet.ip_input import ip_local_out
    from flowpath.xfrm.esp import esp_output

    fib = xfrm_outer_route(w, x)
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
    return ip_local_out(w, outer)


def xfrm4_rcv(w: Worker, skb: SkBuff) -> Reason | None:
    """ESP (or ESP-in-UDP on port 4500) to one of our addresses: decrypt and receive the inner packet.

    Returns None when the packet is not for IPsec (UDP 4500 IKE with the non-ESP marker, keepalives).
    """
    from flowpath.inet.ip_input import ip_rcv_finish
    from flowpath.packet.csum import ld32
    from flowpath.xfrm.esp import esp_input
    from flowpath.xfrm.state import xfrm_state_lookup

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
    x = xfrm_state_lookup(w.xfrm, _addr(skb, skb.daddr), spi)
    if x is None or (skb.l4proto == L.IPPROTO_UDP) != bool(x.encap_sport):
        return Reason.XFRM_NO_STATE
    res = esp_input(x, skb.tobytes(), skb.nhoff, skb.ts_ns)
    if isinstance(res, int):
        return Reason(res)
    inner, l3 = res
    w.xfrm_input_offload(skb, x)  # later ESP of this SA on this device: decrypted at early ingress
    frame = skb.buf[: skb.nhoff - 2].tobytes() + l3.to_bytes(2, "big") + inner
    iskb = skb_parse(frame_array(frame), skb.iif, skb.ts_ns)
    if isinstance(iskb, Reason):
        return iskb
    iskb.meta["sp"] = skb.meta.get("sp", []) + [x]  # the secpath
    return ip_rcv_finish(w, iskb)

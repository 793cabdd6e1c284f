"""netdev's fwd and dup statements: the frame sent out of another device as it is, or through a neighbour.

Linux: net/netfilter/nft_fwd_netdev.c (nft_fwd_netdev_eval, nft_fwd_neigh_eval, nft_fwd_validate),
nft_dup_netdev.c › nft_dup_netdev_eval. A statement leaves its transmit on pkt.xmit (NfDupRequest) and
the hook that runs the chain carries it out before anything else happens to the frame
(flowpath.inet.nf_dup_netdev), as Linux's dev_queue_xmit runs inside the statement. `fwd` ends the
packet's path (NF_STOLEN), `dup` sends a copy (skb_clone: the bytes as they are now) and the rule goes
on. The device (or the next hop) may come from a map; a key the map lacks ends the rule (NFT_BREAK), as
the lookup that loads the register does. nft resolves device names to indexes when it loads the rule
("Interface does not exist": flowpath.netfilter.netdev.netdev_check), so a device named here exists.
"""

from __future__ import annotations

from typing import NamedTuple

from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_dynset import build_map_load
from flowpath.netfilter.nft_expr import NftCtx, Op
from flowpath.netfilter.nft_set import parse_key
from flowpath.netfilter.nft_stmt import RuleInfo
from flowpath.packet import layout as L
from flowpath.packet.csum import ip_decrease_ttl

_FAMILY = {"ip": (4, "ipv4_addr", L.ETH_P_IP), "ip6": (6, "ipv6_addr", L.ETH_P_IPV6)}
_HOOKS = ("ingress", "egress")  # nft_fwd_validate: (1 << NF_NETDEV_INGRESS) | (1 << NF_NETDEV_EGRESS)


class NfDupRequest(NamedTuple):
    """One transmit a fwd or dup statement asked for. No Linux counterpart (Linux transmits in place).

    stolen  True for fwd (the packet itself goes), False for dup (a copy goes)
    dev     the output device's name
    frame   the bytes when the statement ran: the frame, Ethernet header first; for a neighbour, its
            network-layer bytes (neigh_xmit writes the link header)
    family  0: out of dev as it is (dev_queue_xmit); 4 or 6: to the neighbour `addr` on dev (neigh_xmit)
    addr    that next hop, as an int
    """

    stolen: bool
    dev: str
    frame: bytes
    family: int = 0
    addr: int = 0


def _xmit(pkt, req: NfDupRequest) -> None:
    if pkt.xmit is None:
        pkt.xmit = []
    pkt.xmit.append(req)


def _value(v: object, ctx: NftCtx, dtype: str):
    """A constant or a map's value, as a function of the packet (None: the map has no such key)."""
    if isinstance(v, dict) and "map" in v:
        return build_map_load(v["map"], ctx, dtype).fn
    const = parse_key(dtype, 0, v)
    return lambda pkt: const


def build_fwd_dup(kind: str, arg: dict, ctx: NftCtx, info: RuleInfo) -> Op:
    """`fwd to DEV`, `dup to DEV` ({"fwd": {"dev"}}, {"dup": {"addr"}}: nft -j names dup's device
    "addr"), or `fwd ip|ip6 to ADDR device DEV` ({"fwd": {"dev", "family", "addr"}})."""
    info.hooks.append((kind, _HOOKS, None))
    stolen = kind == "fwd"
    family = arg.get("family") if stolen else None
    dev = _value(arg["dev"] if stolen else arg["addr"], ctx, "ifname")
    if family is None:

        def op(pkt):
            name = dev(pkt)
            if name is None:
                return C.NFT_BREAK
            _xmit(pkt, NfDupRequest(stolen, name, pkt.skb.buf.tobytes()))
            return C.NF_STOLEN if stolen else C.NFT_CONTINUE

        return op
    fam, addr_type, proto = _FAMILY[family]
    addr = _value(arg["addr"], ctx, addr_type)

    def op_neigh(pkt):
        """nft_fwd_neigh_eval: the frame's own family only; its TTL or hop limit less one, unchecked."""
        skb = pkt.skb
        if skb.l3proto != proto:
            return C.NFT_BREAK
        name, nexthop = dev(pkt), addr(pkt)
        if name is None or nexthop is None:
            return C.NFT_BREAK
        if fam == 4:
            ip_decrease_ttl(skb.buf, skb.nhoff)
        else:
            hl = skb.nhoff + L.IP6H.hop_limit
            skb.buf[hl] = (int(skb.buf[hl]) - 1) & 0xFF
        _xmit(pkt, NfDupRequest(True, name, skb.buf[skb.nhoff :].tobytes(), fam, nexthop))
        return C.NF_STOLEN

    return op_neigh

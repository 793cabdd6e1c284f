"""nft's protocol context in a rule: the dependency an earlier match already states, which nft does not repeat.

Linux: nftables src/proto.c › proto_ctx_update, src/payload.c › payload_gen_dependency and
payload_gen_special_dependency; net/netfilter/nft_payload.c › nft_payload_eval (NFT_PAYLOAD_TRANSPORT_HEADER
reads at the packet's transport offset whatever its protocol).

`nft -j` prints a rule without the checks nft put in front of its payload loads, and the loads
(nft_expr.payload_dep) add them back. What nft adds depends on what the rule's earlier statements match:
  icmpv6 type echo-request                     inet: meta nfproto ipv6, meta l4proto 58, then the load
  meta nfproto ipv4 icmpv6 type echo-request   meta nfproto ipv4, meta l4proto 58 (no second nfproto)
  ip protocol ipv6-icmp icmpv6 type echo-request   meta nfproto ipv4, ip protocol 58: no check of its own,
                                               so ICMPv6 carried by IPv4 matches (tests/py/inet/icmpX.t)
A rule's statements are built each with the context its earlier statements leave (`rule_ctxs`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from flowpath.netfilter.nft_types import NftValueError, parse_value
from flowpath.packet import layout as L


class ProtoCtx(NamedTuple):
    """What the rule's earlier statements checked (struct proto_ctx's network and transport entries)."""

    l3: int = 0  # ETH_P_IP / ETH_P_IPV6, 0: no network protocol known
    l4: int = -1  # IPPROTO_*, -1: no transport protocol known


NO_PCTX = ProtoCtx()  # a rule's first statement: nothing checked yet
_NFPROTO_L3 = {2: L.ETH_P_IP, 10: L.ETH_P_IPV6}  # NFPROTO_IPV4, NFPROTO_IPV6
_L3_OF_HEADER = {"ip": L.ETH_P_IP, "ip6": L.ETH_P_IPV6}
_L4_FIELD = {("ip", "protocol"), ("ip6", "nexthdr")}


def _value(dtype: str, v: object) -> int | None:
    try:
        x = parse_value(dtype, v)
    except (NftValueError, KeyError, TypeError, ValueError):
        return None
    return x if isinstance(x, int) else None


def _payload_of(left: object) -> dict | None:
    if isinstance(left, dict) and "&" in left:
        left = left["&"][0]
    return left.get("payload") if isinstance(left, dict) else None


def proto_ctx_update(pctx: ProtoCtx, stmt: object) -> ProtoCtx:
    """The context after `stmt`: an `==` match of nfproto, ether type, `ip protocol`, `ip6 nexthdr` or
    l4proto with one value (relational_expr_pctx_update), or any load of an IPv4/IPv6 header field
    (whose own dependency, or the table's family, made the packet that protocol)."""
    m = stmt.get("match") if isinstance(stmt, dict) else None
    if not m:
        return pctx
    left, right = m["left"], m["right"]
    p = _payload_of(left)
    l3 = _L3_OF_HEADER.get(p.get("protocol")) if p else None
    if l3:
        pctx = pctx._replace(l3=l3)
    if m["op"] != "==" or not isinstance(right, (str, int)):
        return pctx
    if p and (p.get("protocol"), p.get("field")) in _L4_FIELD:
        v = _value("inet_proto", right)
        return pctx if v is None else pctx._replace(l4=v)
    if left == {"meta": {"key": "l4proto"}}:
        v = _value("inet_proto", right)
        return pctx if v is None else pctx._replace(l4=v)
    if left == {"meta": {"key": "nfproto"}}:
        l3 = _NFPROTO_L3.get(_value("nf_proto", right))
    elif left in ({"meta": {"key": "protocol"}}, {"payload": {"protocol": "ether", "field": "type"}}):
        l3 = _value("ether_type", right)
        l3 = l3 if l3 in _NFPROTO_L3.values() else None
    else:
        return pctx
    return pctx if l3 is None else pctx._replace(l3=l3)


def rule_ctxs(ctx, stmts: list) -> list:
    """The build context of each statement: `ctx` with the protocol context the statements before it leave."""
    out, pctx = [], NO_PCTX
    for s in stmts:
        out.append(ctx if pctx == ctx.pctx else replace(ctx, pctx=pctx))
        pctx = proto_ctx_update(pctx, s)
    return out

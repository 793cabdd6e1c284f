"""The link-layer protocol context of a rule: ether, stacked vlan headers, and the network header above.

Linux: nftables src/proto.c (proto_eth, proto_vlan, proto_arp, proto_netdev; hook_proto_desc: bridge's
base is the Ethernet header, netdev's `meta protocol`, ip/ip6/arp start at their network header),
src/payload.c › payload_gen_dependency and resolve_protocol_conflict (`ether type ip vlan id 1`:
"conflicting protocols specified: ether vs. vlan"), src/evaluate.c › stmt_evaluate_reject_bridge_family
and stmt_evaluate_reject_netdev (the reject type follows the network protocol), and
src/netlink_delinearize.c › payload_dependency_kill (what `nft list` leaves out: `ether type vlan` before
`vlan id`, `ether type ip`/`vlan type ip`/`meta protocol ip` before an IPv4 header, `meta iiftype ether`
before an Ethernet header in the ip, ip6, inet and netdev families).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lark import Token, Tree

# the network header each family starts at (None: the link layer, `meta protocol` or `ether type` says)
_FAMILY_NET = {"ip": "ip", "ip6": "ip6", "arp": "arp"}
# the network header a payload protocol lives in or above (its conflicts are the network header's)
_NET_OF = {"ip": "ip", "icmp": "ip", "ip6": "ip6", "icmpv6": "ip6", "arp": "arp"}
_VLAN_TPID = ("8021q", "8021ad")
_PROTO_KEYS = (
    {"payload": {"protocol": "ether", "field": "type"}},
    {"payload": {"protocol": "vlan", "field": "type"}},
)
_META_PROTOCOL = {"meta": {"key": "protocol"}}
_REJECT_NET = {"ip": "icmp", "ip6": "icmpv6"}


@dataclass
class LinkCtx:
    """What a rule's matches so far say about the headers: the link layer's next protocol (`ether type`,
    `vlan type`), `meta protocol`'s value, and the network header a payload match used."""

    ll_next: str | None = None
    protocol: str | None = None
    net: str | None = None


def _ctx(ctx: Any) -> LinkCtx:
    if ctx.link is None:
        ctx.link = LinkCtx(net=_FAMILY_NET.get(ctx.table.family))
    return ctx.link


def _pinned(lk: LinkCtx) -> str | None:
    """The network protocol the rule has pinned so far (None: any)."""
    if lk.net is not None:
        return lk.net
    if lk.protocol is not None:
        return lk.protocol
    return None if lk.ll_next in _VLAN_TPID else lk.ll_next


def link_update(ctx: Any, sel: Tree, left: dict, op: str | None, right: Any) -> None:
    """Check a match against the rule's protocol context, then note what it pins (evaluate.c)."""
    lk = _ctx(ctx)
    p = left.get("payload", {}).get("protocol") if isinstance(left, dict) else None
    if p == "vlan":
        if lk.protocol is not None or lk.ll_next not in (None, *_VLAN_TPID):
            raise ctx.error(sel, "conflicting protocols specified: ether vs. vlan")
        lk.ll_next = None
    elif p in _NET_OF and (p not in ("icmp", "icmpv6") or ctx.table.family in ("bridge", "netdev")):
        # in ip, ip6 and inet an icmp header depends on meta l4proto only (either family may carry it)
        pinned, net = _pinned(lk), _NET_OF[p]
        if pinned is not None and pinned != net:
            raise ctx.error(sel, f"conflicting protocols specified: {pinned} vs. {net}")
        lk.net, lk.ll_next = net, None
    if op not in (None, "==") or not isinstance(right, str):
        return
    if left in _PROTO_KEYS:
        lk.ll_next = right
    elif left == _META_PROTOCOL and ctx.table.family in ("bridge", "netdev"):
        lk.protocol = right


def _is_dep_of_net(dep: dict, net: str) -> bool:
    m = dep.get("match")
    return (
        bool(m)
        and m["op"] == "=="
        and m["right"] == net
        and (m["left"] in _PROTO_KEYS or m["left"] == _META_PROTOCOL)
    )


def reject_evaluate(ctx: Any, t: Tree, prev: list) -> dict | None:
    """`reject` in the bridge and netdev families: its type follows the network protocol the rule pins
    (stmt_evaluate_reject_bridge_family). None: `reject with tcp reset`, evaluated as in every family."""
    lk = _ctx(ctx)
    net = _pinned(lk)
    if net is None and lk.ll_next in _VLAN_TPID:
        net = lk.ll_next
    if net not in (None, "ip", "ip6", *_VLAN_TPID):
        at = Token("WORD", "reject", line=t.meta.line, column=t.meta.column, end_column=t.meta.column + 6)
        raise ctx.error(at, "cannot reject this network family")
    w = t.children[0] if t.children else None
    if w is not None and w.data == "reject_tcp":
        return None
    kind = str(w.children[0]) if w is not None else _REJECT_NET.get(net or "", "icmpx")
    code = str(w.children[-1]) if w is not None else "port-unreachable"
    if kind in ("icmp", "icmpv6") and net in _REJECT_NET and _REJECT_NET[net] != kind:
        raise ctx.error(w, "conflicting protocols specified: ip vs ip6")
    if kind in ("icmp", "icmpv6") and prev and _is_dep_of_net(prev[-1], net or ""):
        prev.pop()  # the network dependency of the reject is not listed
    return {"reject": {"type": kind, "expr": code}}


def ll_dependency(family: str, dep: dict, stmt: dict) -> bool:
    """Whether `dep` only states what the match `stmt` right after it implies (not listed then)."""
    m, d = stmt.get("match"), dep.get("match")
    if not m or not d or d["op"] != "==" or not isinstance(d["right"], str):
        return False
    left = m["left"]
    if isinstance(left, dict) and "&" in left:
        left = left["&"][0]
    p = left.get("payload", {}).get("protocol") if isinstance(left, dict) else None
    if p is None:
        return False
    if d["left"] == {"meta": {"key": "iiftype"}}:
        return family != "bridge" and d["right"] == "ether" and p in ("ether", "vlan")
    if p == "vlan":
        return d["left"] == _PROTO_KEYS[0] and d["right"] == "8021q" and left["payload"]["field"] != "type"
    if p in _NET_OF and (d["left"] in _PROTO_KEYS or (d["left"] == _META_PROTOCOL and family == "bridge")):
        return d["right"] == _NET_OF[p]
    return False

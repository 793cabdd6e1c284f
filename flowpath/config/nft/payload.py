"""Implied protocol dependencies: which protocol match nft leaves out of a listing.

Linux: nftables src/payload.c › payload_dependency_kill and src/netlink_delinearize.c: a match such as
`meta l4proto tcp` right before `tcp dport 22` only states what the payload match implies, so nft
neither lists it nor prints it in JSON; `meta l4proto tcp th dport 22` reads back as `tcp dport 22`.
"""

from __future__ import annotations

from typing import Any

from flowpath.config.nft.datatype import ICMP_DEP
from flowpath.config.nft.payload_ll import ll_dependency

_L4_NAME = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp", "udplite": "udplite",
            "sctp": "sctp", "dccp": "dccp", "ah": "ah", "esp": "esp", "comp": "comp", "igmp": "igmp"}  # fmt: skip


def _dep_of(family: str, stmt: dict) -> tuple[str, Any] | None:
    """('l4', proto) or ('l3', nfproto) if `stmt` is a match nft treats as a dependency."""
    m = stmt.get("match")
    if not m or m["op"] != "==" or not isinstance(m["right"], (str, int)):
        return None
    left = m["left"]
    if left == {"meta": {"key": "l4proto"}}:
        return ("l4", m["right"])
    if family == "ip" and left == {"payload": {"protocol": "ip", "field": "protocol"}}:
        return ("l4", m["right"])
    if family == "ip6" and left == {"payload": {"protocol": "ip6", "field": "nexthdr"}}:
        return ("l4", m["right"])
    if family == "inet" and left == {"meta": {"key": "nfproto"}}:
        return ("l3", m["right"])
    if family == "netdev" and left == {"meta": {"key": "protocol"}}:
        return ("l3", {"ip": "ipv4", "ip6": "ipv6"}.get(m["right"]))
    if family in ("ip", "ip6") and left == {"meta": {"key": "protocol"}} and m["right"] == family:
        return ("family", family)  # the table's own protocol: implied by any header match
    return None


def _icmp_type_dep(stmt: dict, left: dict) -> bool:
    """`icmpv6 type packet-too-big` right before `icmpv6 mtu`: the one type the field depends on
    (datatype.ICMP_DEP), which nft neither lists nor prints in JSON."""
    m = stmt.get("match")
    p = left.get("payload", {})
    dep = ICMP_DEP.get((p.get("protocol"), p.get("field")))
    return (
        isinstance(dep, str)
        and bool(m)
        and m["op"] == "=="
        and m["left"] == {"payload": {"protocol": p["protocol"], "field": "type"}}
        and m["right"] == dep
    )


def _l4_key_kept(family: str, stmts: list[dict]) -> bool:
    """An `ip protocol`/`ip6 nexthdr` match nft keeps in inet, bridge and netdev (payload.c ›
    payload_may_dependency_kill): it stays the transport header's dependency, so an icmp type after it
    is no dependency nft kills (`ip protocol ipv6-icmp icmpv6 type packet-too-big icmpv6 mtu 1280`)."""
    keys = ({"payload": {"protocol": "ip", "field": "protocol"}}, {"payload": {"protocol": "ip6", "field": "nexthdr"}})
    return family in ("inet", "bridge", "netdev") and any(
        s.get("match", {}).get("op") == "==" and s["match"]["left"] in keys for s in stmts
    )


_IIFTYPE = {"meta": {"key": "iiftype"}}


def _iiftype_kill(stmts: list[dict]) -> list[dict]:
    """`meta iiftype ether` is the link-layer dependency (payload_dependency_store at pdeps[LL]: meta.c
    gives iiftype no base) that the next link-layer payload match kills, whatever lies between, but a
    statement that is no expression (netlink_delinearize.c › rule_maybe_reset_payload_deps):
    `iiftype ether ip daddr 1.2.3.4 ether saddr X` lists as `ip daddr 1.2.3.4 ether saddr X`."""
    out: list[dict] = []
    dep = None  # index in out of the stored `meta iiftype`
    for s in stmts:
        m = s.get("match")
        if not m:
            dep = None if "vmap" not in s else dep
        elif m["left"] == _IIFTYPE and m["op"] == "==" and isinstance(m["right"], str):
            dep = len(out)
        elif dep is not None and _payload_proto(m["left"]) in ("ether", "vlan"):
            del out[dep]
            dep = None
        out.append(s)
    return out


def _payload_proto(left: Any) -> str | None:
    if isinstance(left, dict) and "&" in left:
        left = left["&"][0]
    return left.get("payload", {}).get("protocol") if isinstance(left, dict) else None


def dependency_kill(family: str, stmts: list[dict]) -> list[dict]:
    """Drop a protocol match that only states what the next payload match implies."""
    out: list[dict] = []
    for s in _iiftype_kill(stmts):
        m = s.get("match")
        left = m["left"] if m else None
        if out and ll_dependency(family, out[-1], s):
            out[-1] = s
            continue
        if out and isinstance(left, dict):
            p = (left.get("payload") or left.get("&", [{}])[0].get("payload") or {}).get("protocol")
            if "tcp option" in left:  # exthdr.c: a TCP option implies the TCP header
                p = "tcp"
            if "exthdr" in left:  # payload.c › exthdr_dependency_kill: an IPv6 header implies IPv6
                p = "ip6"
            if "sctp chunk" in left:  # sctp_chunk.c: a chunk implies the SCTP header
                p = "sctp"
            if _icmp_type_dep(out[-1], left) and not _l4_key_kept(family, out[:-1]):
                out[-1] = s
                continue
            if "ct" in left and " " in left["ct"].get("key", ""):  # ct.c: `ip saddr` implies its family
                p = left["ct"]["key"].split()[0]
            dep = _dep_of(family, out[-1])
            if p and dep:
                kind, val = dep
                if kind == "l4" and p == "th" and val in ("tcp", "udp"):
                    s = {
                        "match": {
                            **m,
                            "left": {"payload": {"protocol": val, "field": left["payload"]["field"]}},
                        }
                    }
                    out[-1] = s
                    continue
                if kind == "family" or kind == "l4" and _L4_NAME.get(p) == val:
                    out[-1] = s
                    continue
                if kind == "l3" and (val, p) in (
                    ("ipv4", "ip"),
                    ("ipv4", "icmp"),
                    ("ipv6", "ip6"),
                    ("ipv6", "icmpv6"),
                ):
                    out[-1] = s
                    continue
        out.append(s)
    return out

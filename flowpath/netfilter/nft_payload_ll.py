"""VLAN header matches as nft's bytecode has them: link-layer loads behind `ether type`/`vlan type` checks.

Linux: nftables src/payload.c › payload_gen_dependency and src/proto.c › proto_vlan (what `vlan id 1`
compiles to: `ether type 8021q`, then 2 bytes at link header + 14 masked with 0x0fff; a vlan header after
`vlan type 8021q` or `ether type 8021ad` is the next one, 4 bytes further; tests/py/bridge/vlan.t.payload);
net/netfilter/nft_payload.c › nft_payload_eval (NFT_PAYLOAD_LL_HEADER).

`nft -j` leaves the `ether type 8021q` dependency out, and a vlan field's JSON does not say which of
stacked tags it means: the rule's order does. Before a rule is built, its vlan matches become raw link-layer
payload matches (`@ll,offset,len`, which nft_expr and the VM's compiler load) with the dependency in front.

Deviation: the frame keeps its tags in place (packet/skb.py), so a chain at an IP hook sees them; Linux's
IP hooks see a frame vlan_do_receive untagged, where `vlan id` never matches.
"""

from __future__ import annotations

from typing import Any

from flowpath.netfilter.nft_types import ETHER_TYPE, NftBuildError
from flowpath.packet import layout as L

_TPID = (L.ETH_P_8021Q, L.ETH_P_8021AD)
# vlan field -> (bit offset in its 4-byte header, bits): TCI = pcp:3 | dei:1 | id:12, then the type
_VLAN_FIELD = {"pcp": (0, 3), "dei": (3, 1), "cfi": (3, 1), "id": (4, 12), "type": (16, 16)}
_ETHER_TYPE = {"payload": {"protocol": "ether", "field": "type"}}


def _raw(offset_bits: int, bits: int) -> dict:
    return {"payload": {"base": "ll", "offset": offset_bits, "len": bits}}


def _ethertype(v: Any) -> Any:
    """An ether_type value (name or number) as the integer a raw load compares with."""
    if isinstance(v, dict) and "set" in v:
        return {"set": [_ethertype(x) for x in v["set"]]}
    if isinstance(v, dict) and "range" in v:
        return {"range": [_ethertype(x) for x in v["range"]]}
    if isinstance(v, str):
        if v not in ETHER_TYPE:
            raise NftBuildError(f"unknown ether type {v!r}")
        return ETHER_TYPE[v]
    return v


def _vlan_left(left: Any) -> tuple[str, Any] | None:
    """(field, mask or None) when `left` is a vlan field, maybe under a bitwise and."""
    mask = None
    if isinstance(left, dict) and "&" in left:
        left, mask = left["&"]
    if isinstance(left, dict) and left.get("payload", {}).get("protocol") == "vlan":
        return left["payload"]["field"], mask
    return None


def ll_expand(stmts: list) -> list:
    """The rule's statements with each vlan match made a raw link-layer match behind its dependency."""
    if not any("match" in s and _vlan_left(s["match"]["left"]) for s in stmts if isinstance(s, dict)):
        return stmts
    out: list = []
    depth = -1  # the vlan header the rule's matches are in: -1 none yet, 0 the outer tag
    next_tpid = False  # the last `ether type`/`vlan type` match says a vlan header follows
    for s in stmts:
        m = s.get("match") if isinstance(s, dict) else None
        vl = _vlan_left(m["left"]) if m else None
        if vl is None:
            if m and m["left"] == _ETHER_TYPE and m["op"] == "==":
                next_tpid = _ethertype(m["right"]) in _TPID
            out.append(s)
            continue
        field, mask = vl
        if field not in _VLAN_FIELD:
            raise NftBuildError(f"unsupported payload field vlan {field}")
        if next_tpid:
            depth += 1
        elif depth < 0:
            depth = 0
            out.append({"match": {"op": "==", "left": _ETHER_TYPE, "right": L.ETH_P_8021Q}})
        off, bits = _VLAN_FIELD[field]
        left: Any = _raw((L.ETH_HLEN + 4 * depth) * 8 + off, bits)
        right = _ethertype(m["right"]) if field == "type" else m["right"]
        if mask is not None:
            left = {"&": [left, _ethertype(mask) if field == "type" else mask]}
        out.append({"match": {**m, "left": left, "right": right}})
        next_tpid = field == "type" and m["op"] == "==" and right in _TPID
    return out

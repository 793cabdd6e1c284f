"""nft expressions: payload, meta and ct loads, bitwise and concatenations (the matches on them: nft_cmp.py).

Linux: net/netfilter/nft_payload.c, nft_meta.c, nft_ct.c, nft_bitwise.c (plus nftables src/payload.c ›
payload_gen_dependency for the implicit protocol checks).

A `match` statement of libnftables JSON is compiled once into a closure `op(pkt) -> int` that returns
NFT_CONTINUE when it matches and NFT_BREAK when it does not, as the kernel's expression `eval` sets
`regs->verdict.code`. A load returns None where the kernel jumps to `err: regs->verdict.code = NFT_BREAK`
(missing header, a later fragment, no conntrack), so a failed load never matches, whatever the operator.
Implicit dependencies (`tcp dport` needs `meta l4proto tcp`, `ip saddr` in an inet table needs
`meta nfproto ipv4`) are folded into the loads: `nft -j list ruleset` omits them, the bytecode has them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple

from flowpath.config.nft.datatype import ICMP_DEP
from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_exthdr import (
    bit_span,
    build_exthdr_load,
    build_rt_load,
    build_sctp_chunk_load,
    build_tcpopt_load,
)
from flowpath.netfilter.nft_fib import build_fib
from flowpath.netfilter.nft_keys import (
    build_ct_key,
    build_jhash,
    build_meta_key,
    build_numgen,
)
from flowpath.netfilter.nft_pctx import NO_PCTX, ProtoCtx
from flowpath.netfilter.nft_types import ICMP_TYPE, ICMPV6_TYPE, NftBuildError, parse_value
from flowpath.netfilter.nft_xfrm import build_xfrm, secpath_exists
from flowpath.packet import layout as L

Op = Callable[[object], int]  # a compiled expression or statement: op(pkt) -> verdict code


class Load(NamedTuple):
    """A compiled value source: fn(pkt) -> int | str | tuple | None (None: NFT_BREAK)."""

    fn: Callable[[object], object]
    dtype: str | tuple
    bits: int


@dataclass
class NftCtx:
    """What a table's rules are built against (names resolved at build time, never per packet)."""

    family: str
    table: str
    sets: dict = field(default_factory=dict)  # name -> NftSet (maps included)
    chains: dict = field(default_factory=dict)  # name -> Chain
    flowtables: dict = field(default_factory=dict)  # name -> NftFlowtable
    counters: dict = field(default_factory=dict)  # name -> NftCounter (named counter objects)
    objs: dict = field(default_factory=dict)  # (kind, name) -> the other named objects (nft_objref.py)
    ifindex: Mapping[str, int] | None = None
    pctx: ProtoCtx = NO_PCTX  # what the rule's earlier statements checked (nft_pctx.rule_ctxs)


# --- payload (nft_payload.c; field table from nftables src/proto.c) -------------------------------------
_LL, _NH, _TH = 0, 1, 2
_NOT_CHECKED = -1
# protocol -> (base, l3proto dependency, l4proto dependency)
_PROTO_DEP = {
    "ether": (_LL, 0, _NOT_CHECKED), "ip": (_NH, L.ETH_P_IP, _NOT_CHECKED),
    "ip6": (_NH, L.ETH_P_IPV6, _NOT_CHECKED), "tcp": (_TH, 0, L.IPPROTO_TCP), "udp": (_TH, 0, L.IPPROTO_UDP),
    "icmp": (_TH, L.ETH_P_IP, L.IPPROTO_ICMP), "icmpv6": (_TH, L.ETH_P_IPV6, L.IPPROTO_ICMPV6),
    "th": (_TH, 0, _NOT_CHECKED), "udplite": (_TH, 0, L.IPPROTO_UDPLITE), "sctp": (_TH, 0, L.IPPROTO_SCTP),
    "dccp": (_TH, 0, L.IPPROTO_DCCP), "ah": (_TH, 0, L.IPPROTO_AH), "esp": (_TH, 0, L.IPPROTO_ESP),
    "comp": (_TH, 0, L.IPPROTO_COMP), "igmp": (_TH, L.ETH_P_IP, L.IPPROTO_IGMP),
}  # fmt: skip


def payload_dep(proto: str, family: str, pctx: ProtoCtx = NO_PCTX) -> tuple[int, int, int]:
    """(base, l3proto, l4proto) a field of `proto` is loaded behind. nft's dependency for icmp, icmpv6
    and igmp is `meta l4proto` alone in an ip or ip6 table (an IPv4 packet may carry ICMPv6: the kernel
    matches it); in inet, bridge and netdev nft puts the network protocol in front too, unless an earlier
    statement of the rule checked one (`pctx`, nft_pctx.py). After a match of the transport protocol
    itself (`ip protocol ipv6-icmp`) nft adds no check at all."""
    base, l3, l4 = _PROTO_DEP[proto]
    if family in ("ip", "ip6") and proto in ("icmp", "icmpv6", "igmp") or pctx.l3 and base == _TH:
        l3 = 0
    if base == _TH and l4 >= 0 and pctx.l4 == l4:
        l3, l4 = 0, _NOT_CHECKED
    return base, l3, l4
# (protocol, field) -> (offset, length in bytes, right shift, mask (0: none), datatype)
_PAYLOAD = {
    ("ether", "daddr"): (L.ETH.h_dest, 6, 0, 0, "ether_addr"),
    ("ether", "saddr"): (L.ETH.h_source, 6, 0, 0, "ether_addr"),
    ("ether", "type"): (L.ETH.h_proto, 2, 0, 0, "ether_type"),
    ("ip", "version"): (L.IPH.version_ihl, 1, 4, 0xF, "integer"),
    ("ip", "hdrlength"): (L.IPH.version_ihl, 1, 0, 0xF, "integer"),
    ("ip", "dscp"): (L.IPH.tos, 1, 2, 0x3F, "dscp"),
    ("ip", "ecn"): (L.IPH.tos, 1, 0, 0x3, "ecn"),
    ("ip", "length"): (L.IPH.tot_len, 2, 0, 0, "integer"),
    ("ip", "id"): (L.IPH.id, 2, 0, 0, "integer"),
    ("ip", "frag-off"): (L.IPH.frag_off, 2, 0, 0, "integer"),
    ("ip", "ttl"): (L.IPH.ttl, 1, 0, 0, "integer"),
    ("ip", "protocol"): (L.IPH.protocol, 1, 0, 0, "inet_proto"),
    ("ip", "checksum"): (L.IPH.check, 2, 0, 0, "integer"),
    ("ip", "saddr"): (L.IPH.saddr, 4, 0, 0, "ipv4_addr"),
    ("ip", "daddr"): (L.IPH.daddr, 4, 0, 0, "ipv4_addr"),
    ("ip6", "version"): (L.IP6H.ver_tc_flow, 1, 4, 0xF, "integer"),
    ("ip6", "dscp"): (L.IP6H.ver_tc_flow, 2, 6, 0x3F, "dscp"),
    ("ip6", "ecn"): (L.IP6H.ver_tc_flow, 2, 4, 0x3, "ecn"),
    ("ip6", "flowlabel"): (L.IP6H.ver_tc_flow, 4, 0, 0xFFFFF, "integer"),
    ("ip6", "length"): (L.IP6H.payload_len, 2, 0, 0, "integer"),
    ("ip6", "nexthdr"): (L.IP6H.nexthdr, 1, 0, 0, "inet_proto"),
    ("ip6", "hoplimit"): (L.IP6H.hop_limit, 1, 0, 0, "integer"),
    ("ip6", "saddr"): (L.IP6H.saddr, 16, 0, 0, "ipv6_addr"),
    ("ip6", "daddr"): (L.IP6H.daddr, 16, 0, 0, "ipv6_addr"),
    ("tcp", "sport"): (L.TCPH.source, 2, 0, 0, "inet_service"),
    ("tcp", "dport"): (L.TCPH.dest, 2, 0, 0, "inet_service"),
    ("tcp", "sequence"): (L.TCPH.seq, 4, 0, 0, "integer"),
    ("tcp", "ackseq"): (L.TCPH.ack_seq, 4, 0, 0, "integer"),
    ("tcp", "doff"): (L.TCPH.doff_res, 1, 4, 0xF, "integer"),
    ("tcp", "reserved"): (L.TCPH.doff_res, 1, 0, 0xF, "integer"),
    ("tcp", "flags"): (L.TCPH.flags, 1, 0, 0, "tcp_flag"),
    ("tcp", "window"): (L.TCPH.window, 2, 0, 0, "integer"),
    ("tcp", "checksum"): (L.TCPH.check, 2, 0, 0, "integer"),
    ("tcp", "urgptr"): (L.TCPH.urg_ptr, 2, 0, 0, "integer"),
    ("udp", "sport"): (L.UDPH.source, 2, 0, 0, "inet_service"),
    ("udp", "dport"): (L.UDPH.dest, 2, 0, 0, "inet_service"),
    ("udp", "length"): (L.UDPH.len, 2, 0, 0, "integer"),
    ("udp", "checksum"): (L.UDPH.check, 2, 0, 0, "integer"),
    ("th", "sport"): (L.UDPH.source, 2, 0, 0, "inet_service"),
    ("th", "dport"): (L.UDPH.dest, 2, 0, 0, "inet_service"),
    ("icmp", "type"): (L.ICMPH.type, 1, 0, 0, "icmp_type"),
    ("icmp", "code"): (L.ICMPH.code, 1, 0, 0, "icmp_code"),
    ("icmp", "checksum"): (L.ICMPH.checksum, 2, 0, 0, "integer"),
    ("icmp", "id"): (L.ICMPH.id, 2, 0, 0, "integer"),
    ("icmp", "sequence"): (L.ICMPH.sequence, 2, 0, 0, "integer"),
    ("icmp", "gateway"): (L.ICMPH.id, 4, 0, 0, "ipv4_addr"),
    ("icmp", "mtu"): (L.ICMPH.sequence, 2, 0, 0, "integer"),
    ("icmpv6", "type"): (L.ICMPH.type, 1, 0, 0, "icmpv6_type"),
    ("icmpv6", "code"): (L.ICMPH.code, 1, 0, 0, "icmpv6_code"),
    ("icmpv6", "checksum"): (L.ICMPH.checksum, 2, 0, 0, "integer"),
    ("icmpv6", "parameter-problem"): (L.ICMPH.id, 4, 0, 0, "integer"),
    ("icmpv6", "packet-too-big"): (L.ICMPH.id, 4, 0, 0, "integer"),
    ("icmpv6", "id"): (L.ICMPH.id, 2, 0, 0, "integer"),
    ("icmpv6", "sequence"): (L.ICMPH.sequence, 2, 0, 0, "integer"),
    ("icmpv6", "max-delay"): (L.ICMPH.id, 2, 0, 0, "integer"),
    ("icmpv6", "mtu"): (L.ICMPH.id, 4, 0, 0, "integer"),
    ("udplite", "sport"): (L.UDPH.source, 2, 0, 0, "inet_service"),
    ("udplite", "dport"): (L.UDPH.dest, 2, 0, 0, "inet_service"),
    ("udplite", "csumcov"): (L.UDPH.len, 2, 0, 0, "integer"),  # RFC 3828: the length field's place
    ("udplite", "checksum"): (L.UDPH.check, 2, 0, 0, "integer"),
    ("sctp", "sport"): (L.SCTPH.source, 2, 0, 0, "inet_service"),
    ("sctp", "dport"): (L.SCTPH.dest, 2, 0, 0, "inet_service"),
    ("sctp", "vtag"): (L.SCTPH.vtag, 4, 0, 0, "integer"),
    ("sctp", "checksum"): (L.SCTPH.checksum, 4, 0, 0, "integer"),
    ("dccp", "sport"): (L.DCCPH.dccph_sport, 2, 0, 0, "inet_service"),
    ("dccp", "dport"): (L.DCCPH.dccph_dport, 2, 0, 0, "inet_service"),
    ("dccp", "type"): (L.DCCPH.dccph_res_type_x, 1, 1, 0xF, "dccp_pkttype"),
    ("ah", "nexthdr"): (L.AUTHH.nexthdr, 1, 0, 0, "inet_proto"),
    ("ah", "hdrlength"): (L.AUTHH.hdrlen, 1, 0, 0, "integer"),
    ("ah", "reserved"): (L.AUTHH.reserved, 2, 0, 0, "integer"),
    ("ah", "spi"): (L.AUTHH.spi, 4, 0, 0, "integer"),
    ("ah", "sequence"): (L.AUTHH.seq_no, 4, 0, 0, "integer"),
    ("esp", "spi"): (L.ESPH.spi, 4, 0, 0, "integer"),
    ("esp", "sequence"): (L.ESPH.seq_no, 4, 0, 0, "integer"),
    ("comp", "nexthdr"): (L.COMPH.nexthdr, 1, 0, 0, "inet_proto"),
    ("comp", "flags"): (L.COMPH.flags, 1, 0, 0, "integer"),
    ("comp", "cpi"): (L.COMPH.cpi, 2, 0, 0, "integer"),
    ("igmp", "type"): (L.IGMPH.type, 1, 0, 0, "igmp_type"),
    ("igmp", "mrt"): (L.IGMPH.code, 1, 0, 0, "integer"),
    ("igmp", "checksum"): (L.IGMPH.csum, 2, 0, 0, "integer"),
    ("igmp", "group"): (L.IGMPH.group, 4, 0, 0, "integer"),
}  # fmt: skip
# ICMP fields that mean something for some types only: the types nft's dependency admits
# (config/nft/datatype.py › ICMP_DEP; payload.c › payload_gen_icmp_dependency)
ICMP_DEP_TYPES = {
    (proto, fld): tuple((ICMP_TYPE if proto == "icmp" else ICMPV6_TYPE)[t] for t in dep)
    for (proto, fld), dep in ((k, v if isinstance(v, tuple) else (v,)) for k, v in ICMP_DEP.items())
}
_RAW_BASE = {"ll": _LL, "nh": _NH, "th": _TH}


def _payload_fn(base: int, l3: int, l4: int, off: int, n: int, shift: int, mask: int):
    """nft_payload_eval for one field, with its dependency checks in front.

    Specialised by base and width when built, so the per-packet closure has no branches it does not need.
    """
    if base == _TH:
        if l4 == _NOT_CHECKED:
            l4 = None  # `th`: any transport header

        def where(pkt):
            skb = pkt.skb
            if (l3 and skb.l3proto != l3) or (l4 is not None and skb.l4proto != l4):
                return -1
            return skb.thoff  # -1 for a later fragment: nft_payload_eval › pkt->fragoff

    elif base == _NH:

        def where(pkt):
            skb = pkt.skb
            return skb.nhoff if not l3 or skb.l3proto == l3 else -1

    else:

        def where(pkt):
            return 0

    if n == 1 and not mask:

        def load_u8(pkt):
            o = where(pkt)
            if o < 0 or o + off >= len(pkt.data):
                return None
            return pkt.data[o + off]

        return load_u8
    if n == 2 and not mask:

        def load_be16(pkt):
            o = where(pkt)
            d = pkt.data
            if o < 0 or o + off + 2 > len(d):
                return None
            o += off
            return d[o] << 8 | d[o + 1]

        return load_be16

    def load(pkt):
        o = where(pkt)
        d = pkt.data
        if o < 0 or o + off + n > len(d):
            return None
        o += off
        v = int.from_bytes(d[o : o + n], "big")
        return (v >> shift) & mask if mask else v

    return load


def raw_payload(p: dict) -> tuple[int, int, int, int, int]:
    """{"payload": {"base", "offset", "len"}} (`@nh,96,32`): (base, first byte, byte count, right shift,
    length in bits); the closures and the VM's compiler load it the same way."""
    base, off_bits, len_bits = _RAW_BASE.get(p["base"]), int(p["offset"]), int(p["len"])
    if base is None or len_bits <= 0:
        raise NftBuildError(f"unsupported payload base {p['base']!r}")
    return (base, *bit_span(off_bits, len_bits), len_bits)


def build_payload(p: dict, family: str, pctx: ProtoCtx = NO_PCTX) -> Load:
    if "base" in p:  # raw payload: @nh,96,32
        base, first, n, shift, len_bits = raw_payload(p)
        fn = _payload_fn(base, 0, _NOT_CHECKED, first, n, shift, (1 << len_bits) - 1)
        return Load(fn, "integer", len_bits)
    proto, fld = p.get("protocol"), p.get("field")
    if (proto, fld) not in _PAYLOAD:
        raise NftBuildError(f"unsupported payload field {proto} {fld}")
    off, n, shift, mask, dtype = _PAYLOAD[proto, fld]
    base, l3, l4 = payload_dep(proto, family, pctx)
    bits = mask.bit_length() if mask else n * 8
    fn = _payload_fn(base, l3, l4, off, n, shift, mask)
    if (proto, fld) in ICMP_DEP_TYPES:
        fn = _icmp_dep_fn(fn, ICMP_DEP_TYPES[proto, fld])
    return Load(fn, dtype, bits)


def _icmp_dep_fn(load, types: tuple[int, ...]):
    """The field's load behind nft's `icmp type` dependency (a load that found the field has the type)."""

    def load_dep(pkt):
        v = load(pkt)
        return v if v is not None and pkt.data[pkt.skb.thoff + L.ICMPH.type] in types else None

    return load_dep


# --- meta (nft_meta.c › nft_meta_get_eval) ----------------------------------------------------------------
def _meta_l4proto(pkt):
    p = pkt.skb.l4proto
    return p if p >= 0 else None  # NFT_PKTINFO_L4PROTO not set


def _meta_pkttype(pkt):
    """skb->pkt_type from the Ethernet destination (eth_type_trans).

    Deviation: a unicast frame counts as PACKET_HOST; frames for other MACs were dropped before (MAC_MISMATCH).
    """
    d = pkt.data
    if not d[0] & 1:
        return 0
    return 1 if d[:6] == b"\xff\xff\xff\xff\xff\xff" else 2


def _meta_length(pkt):
    skb = pkt.skb
    return skb.skb_len  # skb->len


_META = {
    "l4proto": (_meta_l4proto, "inet_proto", 8),
    "nfproto": (lambda pkt: pkt.nfproto, "nf_proto", 8),
    "protocol": (lambda pkt: pkt.skb.l3proto, "ether_type", 16),
    "iifname": (lambda pkt: pkt.iifname, "ifname", 128),  # no device: "" (nft_meta_store_ifname)
    "oifname": (lambda pkt: pkt.oifname, "ifname", 128),
    "iif": (lambda pkt: pkt.iif, "iface_index", 32),  # no device: 0 (nft_meta_store_ifindex)
    "oif": (lambda pkt: pkt.oif, "iface_index", 32),
    "mark": (lambda pkt: pkt.skb.mark, "mark", 32),
    "length": (_meta_length, "integer", 32),
    "pkttype": (_meta_pkttype, "pkt_type", 8),
    "ipsec": (secpath_exists, "boolean", 8),  # NFT_META_SECPATH
}  # fmt: skip


def build_meta(m: dict) -> Load:
    key = m.get("key")
    if key not in _META:
        return Load(*build_meta_key(key))
    return Load(*_META[key])


# --- ct (nft_ct.c › nft_ct_get_eval) ------------------------------------------------------------------------
def _ct_state(pkt):
    skb = pkt.skb
    ctinfo = skb.ctinfo
    if ctinfo == C.IP_CT_UNTRACKED:
        return 64  # NF_CT_STATE_UNTRACKED_BIT
    if skb.ct is None:
        return 1  # NF_CT_STATE_INVALID_BIT
    return 1 << (ctinfo % C.IP_CT_IS_REPLY + 1)  # NF_CT_STATE_BIT(ctinfo)


def _ct_direction(pkt):
    skb = pkt.skb
    if skb.ct is None:
        return None
    return C.IP_CT_DIR_REPLY if skb.ctinfo >= C.IP_CT_IS_REPLY else C.IP_CT_DIR_ORIGINAL  # CTINFO2DIR


def _ct_status(pkt):
    ct = pkt.skb.ct
    return None if ct is None else ct.status


def _ct_mark(pkt):
    ct = pkt.skb.ct
    return None if ct is None else ct.mark


_CT = {"state": (_ct_state, "ct_state", 32), "direction": (_ct_direction, "ct_dir", 8),
       "status": (_ct_status, "ct_status", 32), "mark": (_ct_mark, "mark", 32)}  # fmt: skip


def build_ct(m: dict) -> Load:
    key = m.get("key")
    if key not in _CT or "dir" in m:
        return Load(*build_ct_key(m))
    return Load(*_CT[key])


# --- bitwise (nft_bitwise.c) and concatenations -------------------------------------------------------------
_BINOPS = {
    "&": operator.and_,
    "|": operator.or_,
    "^": operator.xor,
    "<<": operator.lshift,
    ">>": operator.rshift,
}


def _binop_fn(inner, fn, c):
    def load(pkt):
        v = inner(pkt)
        return None if v is None else fn(v, c)

    return load


def _concat_fn(fns):
    def load(pkt):
        out = tuple(f(pkt) for f in fns)
        return None if None in out else out

    return load


def build_load(e: object, ctx: NftCtx) -> Load:
    """Compile the left-hand side of a match (or a mangle value) into a Load."""
    if isinstance(e, dict) and len(e) == 1:
        (kind, arg), = e.items()  # fmt: skip
        if kind == "payload":
            return build_payload(arg, ctx.family, ctx.pctx)
        if kind == "meta":
            return build_meta(arg)
        if kind == "ct":
            return build_ct(arg)
        if kind in _BINOPS:
            left, right = arg
            inner = build_load(left, ctx)
            if isinstance(inner.dtype, tuple):
                raise NftBuildError("bitwise on a concatenation")
            c = parse_value(inner.dtype, right) if kind in "&|^" else int(right)
            if not isinstance(c, int):
                raise NftBuildError(f"bitwise {kind} needs an integer, got {right!r}")
            return Load(_binop_fn(inner.fn, _BINOPS[kind], c), inner.dtype, inner.bits)
        if kind == "tcp option":
            return Load(*build_tcpopt_load(arg))
        if kind == "exthdr":
            return Load(*build_exthdr_load(arg))
        if kind == "sctp chunk":
            return Load(*build_sctp_chunk_load(arg))
        if kind == "rt":
            return Load(*build_rt_load(arg))
        if kind == "fib":
            return Load(*build_fib(arg, by_name=ctx.ifindex is None))
        if kind == "ipsec":
            return Load(*build_xfrm(arg))
        if kind == "concat":
            parts = [build_load(x, ctx) for x in arg]
            return Load(_concat_fn(tuple(p.fn for p in parts)), tuple(p.dtype for p in parts), 0)
        if kind == "numgen":
            return Load(*build_numgen(arg))
        if kind == "jhash":
            key = arg.get("expr")
            parts = key["concat"] if isinstance(key, dict) and "concat" in key else [key]
            return Load(*build_jhash(arg, build_load(key, ctx).fn, _register_bytes(parts, ctx)))
        if kind == "symhash":
            raise NftBuildError("symhash: flowpath has no flow dissector hash (__skb_get_hash_symmetric)")
        raise NftBuildError(f"unsupported expression {kind!r}")
    raise NftBuildError(f"unsupported expression {e!r}")


def _register_bytes(parts: list, ctx: NftCtx):
    """The bytes a key's registers hold (what nft_hash.c hashes): a payload field in network order, a meta
    or ct number in host (little-endian) order, a name NUL-padded; each part padded to 4 bytes."""
    shapes = []
    for p in parts:
        load = build_load(p, ctx)
        n = 16 if load.dtype == "ifname" else (load.bits + 7) // 8
        host = isinstance(p, dict) and ("meta" in p or "ct" in p) and load.dtype not in _NET_ORDER
        shapes.append((n, "little" if host else "big"))

    def to_bytes(v: object) -> bytes:
        vals = v if isinstance(v, tuple) else (v,)
        out = b""
        for x, (n, order) in zip(vals, shapes, strict=True):
            b = x.encode().ljust(n, b"\0")[:n] if isinstance(x, str) else int(x).to_bytes(n, order)
            out += b.ljust((n + 3) & ~3, b"\0") if len(shapes) > 1 else b
        return out

    return to_bytes


# ct addresses and ports, and the meta keys nft_meta.c stores as in the packet
_NET_ORDER = ("ipv4_addr", "ipv6_addr", "inet_service", "ether_type", "inet_proto", "nf_proto", "pkt_type")


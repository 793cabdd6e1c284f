"""`ip ttl set 23`, `udp dport set 53`, `ip6 dscp set af42`: writing a header field, checksums kept right.

Linux: net/netfilter/nft_payload.c › nft_payload_set_eval, nft_payload_csum_inet, nft_csum_replace,
nft_payload_l4csum_update; nftables src/evaluate.c › stmt_evaluate_payload (a field less than whole
bytes is read, masked and written back with its neighbours; with a checksum to keep, the write covers
whole 16-bit words, so that the sums of the old and new bytes are aligned with the checksum's) and
src/netlink_linearize.c › netlink_gen_payload_stmt (checksum_key of the header: NFT_PAYLOAD_CSUM_INET;
the addresses of the pseudo-header: NFT_PAYLOAD_L4CSUM_PSEUDOHDR).

Packets here are never CHECKSUM_PARTIAL on the classic path, so every update is the software one.
The compiled VM has no payload write: its rule punts to this closure (nft_compile.py).
"""

from __future__ import annotations

from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_expr import _NH, _PAYLOAD, _TH, Op, payload_dep
from flowpath.netfilter.nft_pctx import NO_PCTX, ProtoCtx
from flowpath.netfilter.nft_types import NftBuildError, parse_value
from flowpath.packet import layout as L
from flowpath.packet.csum import csum_fold, ld16, st16

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
CSUM_MANGLED_0 = 0xFFFF
# nftables src/proto.c: the headers with a checksum_key of type NFT_PAYLOAD_CSUM_INET, its offset
_CSUM_INET = {"ip": L.IPH.check, "tcp": L.TCPH.check, "udp": L.UDPH.check, "udplite": L.UDPH.check,
              "icmp": L.ICMPH.checksum, "icmpv6": L.ICMPH.checksum, "igmp": L.IGMPH.csum}  # fmt: skip
# nftables src/proto.c › pseudohdr: fields the TCP/UDP/ICMPv6 checksum covers through the pseudo-header
_PSEUDOHDR = {("ip", "saddr"), ("ip", "daddr"), ("ip6", "saddr"), ("ip6", "daddr")}
# nft_payload.c › nft_payload_l4csum_offset
_L4CSUM = {L.IPPROTO_TCP: L.TCPH.check, L.IPPROTO_UDP: L.UDPH.check, L.IPPROTO_UDPLITE: L.UDPH.check,
           L.IPPROTO_ICMPV6: L.ICMPH.checksum}  # fmt: skip


def _header_offset(pkt, base: int, l3: int, l4: int) -> int:
    """Where the field's header starts in pkt.data, or -1 (its dependency fails, a later fragment)."""
    skb = pkt.skb
    if l3 and skb.l3proto != l3:
        return -1
    if base == _NH:
        return skb.nhoff
    if base == _TH:
        return skb.thoff if l4 < 0 or skb.l4proto == l4 else -1  # thoff is -1 for a later fragment
    return 0


def _terms(old: bytes, new: bytes) -> int:
    """The RFC 1624 eq. 3 terms ~m + m' of an even run of bytes (csum_sub(fsum) + tsum)."""
    t = 0
    for i in range(0, len(old), 2):
        t += ((~(old[i] << 8 | old[i + 1])) & 0xFFFF) + (new[i] << 8 | new[i + 1])
    return t


def nft_csum_replace(b, coff: int, terms: int) -> None:
    """Linux: nft_payload.c › nft_csum_replace: a zero result is written as CSUM_MANGLED_0.

    A UDP checksum of 0 (none) is updated too, so `udp dport set` gives such a packet a wrong checksum,
    as Linux 6.x does (tests/netfilter_eval: the bytes a namespace forwards); only the pseudo-header
    update skips it (nft_payload_udp_checksum)."""
    c = (~csum_fold(((~ld16(b, coff)) & 0xFFFF) + terms)) & 0xFFFF
    st16(b, coff, c or CSUM_MANGLED_0)


def _l4csum_offset(pkt) -> int:
    """Linux: nft_payload_l4csum_offset; -1: no L4 checksum to update (a fragment, UDP without one)."""
    skb = pkt.skb
    t = skb.thoff
    coff = _L4CSUM.get(skb.l4proto)
    if t < 0 or coff is None or t + coff + 2 > len(pkt.data):
        return -1
    if skb.l4proto == L.IPPROTO_UDP and not ld16(pkt.data, t + coff):  # nft_payload_udp_checksum
        return -1
    return t + coff


def build_payload_set(p: dict, value: object, family: str, pctx: ProtoCtx = NO_PCTX) -> Op:
    """nft_payload_set_eval for a field of nft_expr's table, set to a constant."""
    proto, fld = p.get("protocol"), p.get("field")
    if "base" in p or (proto, fld) not in _PAYLOAD:
        raise NftBuildError(f"cannot set payload {p!r}")
    if proto == "sctp":
        raise NftBuildError("cannot set an sctp field: flowpath has no CRC32c update (nft_payload_csum_sctp)")
    off, n, shift, mask, dtype = _PAYLOAD[proto, fld]
    base, l3, l4 = payload_dep(proto, family, pctx)
    v = parse_value(dtype, value)
    width_mask = mask or (1 << (8 * n)) - 1
    if not isinstance(v, int) or not 0 <= v <= width_mask:
        raise NftBuildError(f"{proto} {fld} set {value!r}: not a value of the field")
    coff, pseudo = _CSUM_INET.get(proto), (proto, fld) in _PSEUDOHDR
    start, end = off, off + n
    if coff is not None or pseudo:  # stmt_evaluate_payload: whole 16-bit words
        start, end = start & ~1, end + (end & 1)
    pad = 8 * (end - off - n)
    keep = ~((width_mask << shift) << pad) & ((1 << (8 * (end - start))) - 1)
    put = (v << shift) << pad

    def op(pkt):
        o = _header_offset(pkt, base, l3, l4)
        d = pkt.data
        if o < 0 or o + end > len(d):
            return NFT_BREAK
        old = d[o + start : o + end]
        new = ((int.from_bytes(old, "big") & keep) | put).to_bytes(end - start, "big")
        l4coff = _l4csum_offset(pkt) if pseudo else -1
        b = pkt.skb.buf
        if coff is not None:
            nft_csum_replace(b, o + coff, _terms(old, new))
        if l4coff >= 0:
            nft_csum_replace(b, l4coff, _terms(old, new))
        b[o + start : o + end] = list(new)
        pkt.data = b.tobytes()  # later loads in this walk see the new bytes
        return NFT_CONTINUE

    return op

"""TCP options (`tcp option maxseg size`, `... set rt mtu`), SCTP chunks and the route's TCP MSS.

Linux: net/netfilter/nft_exthdr.c › nft_exthdr_tcp_eval, nft_exthdr_tcp_set_eval, nft_exthdr_sctp_eval, and
net/netfilter/nft_rt.c › get_tcpmss (NFT_RT_TCPMSS). The usual MSS clamp of a tunnel gateway,
`tcp flags syn tcp option maxseg size set rt mtu`, only ever lowers the option and patches the TCP
checksum incrementally (inet_proto_csum_replace2; here csum_replace2 from packet.csum).
"""

from __future__ import annotations

from flowpath.config.nft.datatype import SCTP_CHUNKS, sctp_chunk_field
from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_types import NftBuildError
from flowpath.netfilter.nft_xfrm import rt_xfrm
from flowpath.packet import layout as L
from flowpath.packet.csum import csum_replace2

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS = 0, 1, 2
TCP_MSS_DEFAULT = 536  # include/net/tcp.h, RFC 1122
# nftables src/tcpopt.c: option name -> kind, and field -> (offset in the option, length in bytes)
_TCPOPT = {"eol": 0, "nop": 1, "maxseg": 2, "window": 3, "sack-perm": 4, "sack": 5, "timestamp": 8}
_FIELDS = {"kind": (0, 1), "length": (1, 1), "size": (2, 2), "count": (2, 1), "tsval": (2, 4), "tsecr": (6, 4),
           "left": (2, 4), "right": (6, 4)}  # fmt: skip


def _tcpopt_find(pkt, kind: int, need: int) -> int:
    """Offset in pkt.data of option `kind` with at least `need` bytes, -1 if absent, -2 without TCP."""
    skb = pkt.skb
    t = skb.thoff
    if skb.l4proto != L.IPPROTO_TCP or t < 0:  # nft_tcp_header_pointer: tprot and fragoff
        return -2
    d = pkt.data
    hlen = (d[t + L.TCPH.doff_res] >> 4) * 4
    if hlen < L.TCPH.size or t + hlen > len(d):
        return -2
    i = L.TCPH.size
    while i < hlen - 1:
        o = t + i
        optl = 1 if d[o] <= TCPOPT_NOP or d[o + 1] == 0 else d[o + 1]  # optlen()
        if d[o] == kind:
            return o if i + optl <= hlen and need <= optl else -2  # malformed: goto err
        i += optl
    return -1


def _option(name: str, field: str | None) -> tuple[int, int, int]:
    if name not in _TCPOPT or (field is not None and field not in _FIELDS):
        raise NftBuildError(f"unsupported tcp option {name} {field or ''}".rstrip())
    off, n = _FIELDS[field] if field is not None else (0, 1)
    return _TCPOPT[name], off, n


def build_tcpopt_load(arg: dict):
    """`tcp option maxseg size` (the field, NFT_BREAK when absent) or `tcp option maxseg` (exists: 1/0)."""
    kind, off, n = _option(arg.get("name", ""), arg.get("field"))
    if arg.get("field") is None:

        def present(pkt):
            return 1 if _tcpopt_find(pkt, kind, 1) >= 0 else 0  # NFT_EXTHDR_F_PRESENT: never breaks

        return present, "boolean", 8

    def load(pkt):
        o = _tcpopt_find(pkt, kind, off + n)
        return None if o < 0 else int.from_bytes(pkt.data[o + off : o + off + n], "big")

    return load, "integer", n * 8


def _sctp_chunk_find(pkt, ctype: int, need: int) -> int:
    """Offset in pkt.data of the first chunk of type `ctype`, -1 when there is none or it is shorter
    than `need` bytes (or runs past the packet). Linux: nft_exthdr.c › nft_exthdr_sctp_eval."""
    skb, d = pkt.skb, pkt.data
    if skb.l4proto != L.IPPROTO_SCTP or skb.thoff < 0:  # pkt->tprot
        return -1
    o = skb.thoff + L.SCTPH.size
    while o + L.SCTP_CHUNKH.size <= len(d):
        length = d[o + L.SCTP_CHUNKH.length] << 8 | d[o + L.SCTP_CHUNKH.length + 1]
        if not length:
            return -1
        if d[o + L.SCTP_CHUNKH.type] == ctype:
            return o if need <= length and o + length <= len(d) else -1
        o += (length + 3) & ~3  # SCTP_PAD4
    return -1


def build_sctp_chunk_load(arg: dict):
    """`sctp chunk NAME FIELD` (NFT_BREAK when the chunk is absent) or `sctp chunk NAME` (exists: 1/0)."""
    name, field = arg.get("name"), arg.get("field")
    if name not in SCTP_CHUNKS or (field is not None and sctp_chunk_field(name, field) is None):
        raise NftBuildError(f"unsupported sctp chunk {name} {field or ''}".rstrip())
    ctype = SCTP_CHUNKS[name][0]
    if field is None:

        def present(pkt):
            return 1 if _sctp_chunk_find(pkt, ctype, 0) >= 0 else 0  # NFT_EXTHDR_F_PRESENT

        return present, "boolean", 8
    bit, bits = sctp_chunk_field(name, field)
    off, n = bit // 8, bits // 8

    def load(pkt):
        o = _sctp_chunk_find(pkt, ctype, off + n)
        return None if o < 0 else int.from_bytes(pkt.data[o + off : o + off + n], "big")

    return load, "integer", bits


def rt_tcpmss(pkt):
    """NFT_RT_TCPMSS: pkt.mtu is min(output route MTU, reverse route MTU) as get_tcpmss takes; 0: no route."""
    mtu = pkt.mtu
    if not mtu:
        return None
    minlen = (L.IP6H.size if pkt.nfproto == C.NFPROTO_IPV6 else L.IPH.size) + L.TCPH.size
    return TCP_MSS_DEFAULT if mtu <= minlen or mtu > 0xFFFF else mtu - minlen


def build_rt_load(arg: dict):
    if arg.get("key") == "ipsec":
        return rt_xfrm, "boolean", 8
    if arg.get("key") not in ("mtu", "tcpmss"):
        raise NftBuildError(f"unsupported rt key {arg.get('key')!r}")
    return rt_tcpmss, "integer", 16


def build_tcpopt_set(arg: dict, src):
    """nft_exthdr_tcp_set_eval for 2- and 4-byte fields; src(pkt) -> new value or None (NFT_BREAK)."""
    kind, off, n = _option(arg.get("name", ""), arg.get("field"))
    if arg.get("field") is None or n not in (2, 4):
        raise NftBuildError(f"cannot set tcp option {arg.get('name')} {arg.get('field') or ''}".rstrip())
    words = tuple(range(0, n, 2))

    def op(pkt):
        new = src(pkt)
        if new is None:
            return NFT_BREAK
        o = _tcpopt_find(pkt, kind, off + n)
        if o == -2:
            return NFT_BREAK
        if o < 0:
            return NFT_CONTINUE  # the option is not there: nothing to do
        skb, d = pkt.skb, pkt.data
        old = int.from_bytes(d[o + off : o + off + n], "big")
        new &= (1 << (8 * n)) - 1
        if (kind == TCPOPT_MSS and old <= new) or old == new:
            return NFT_CONTINUE  # "increase can cause connection to stall"
        b, check = skb.buf, skb.thoff + L.TCPH.check
        # Deviation: inet_proto_csum_replace2 treats the field as 16-bit aligned, so Linux writes a bad
        # checksum when the option sits at an odd offset (a NOP before MSS; seen on 6.18). At an
        # odd offset the bytes count swapped in the one's-complement sum, so swap them for the update.
        odd = (o + off - skb.thoff) & 1
        for w in words:
            shift = 8 * (n - 2 - w)
            ow, nw = (old >> shift) & 0xFFFF, (new >> shift) & 0xFFFF
            b[o + off + w], b[o + off + w + 1] = nw >> 8, nw & 0xFF
            if odd:
                ow, nw = ((ow & 0xFF) << 8) | (ow >> 8), ((nw & 0xFF) << 8) | (nw >> 8)
            csum_replace2(b, check, ow, nw)
        pkt.data = b.tobytes()  # later loads in this walk see the new bytes
        return NFT_CONTINUE

    return op

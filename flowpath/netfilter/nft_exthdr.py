"""IPv6 extension headers, TCP options and SCTP chunks (`hbh nexthdr`, `tcp option maxseg size`,
`... set rt mtu`, `reset tcp option`, `sctp chunk data tsn`) and the route's TCP MSS.

Linux: net/netfilter/nft_exthdr.c › nft_exthdr_ipv6_eval (net/ipv6/exthdrs_core.c › ipv6_find_hdr),
nft_exthdr_tcp_eval, nft_exthdr_tcp_set_eval, nft_exthdr_tcp_strip_eval, nft_exthdr_sctp_eval, and
net/netfilter/nft_rt.c › get_tcpmss (NFT_RT_TCPMSS). The usual MSS clamp of a tunnel gateway, `tcp flags
syn tcp option maxseg size set rt mtu`, only ever lowers the option and patches the TCP checksum
incrementally (inet_proto_csum_replace2; here csum_replace2 from packet.csum). Fields are the front end's
templates (config/nft/exthdr.py, nftables src/exthdr.c and src/tcpopt.c): a kind or header type, and an
offset and a length in bits, loaded as whole bytes and narrowed as nft's bitwise does. The walks that
find an option or a header are nft_exthdr_find.py's, which the compiled VM runs too (OP_EXTHDR: the loads;
writes and SCTP chunks punt).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flowpath.config.nft.datatype import SCTP_CHUNKS, sctp_chunk_field
from flowpath.config.nft.exthdr import EXTHDR, exthdr_field, tcpopt_bits, tcpopt_kind_of
from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_exthdr_find import TCPOPT_NOP, ipv6_find_hdr, optlen, tcpopt_find
from flowpath.netfilter.nft_types import NftBuildError
from flowpath.netfilter.nft_xfrm import rt_xfrm
from flowpath.packet import layout as L
from flowpath.packet.csum import csum_replace2

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
TCPOPT_MSS = 2
TCP_MSS_DEFAULT = 536  # include/net/tcp.h, RFC 1122


def _tcpopt_find(pkt, kind: int, need: int) -> int:
    """nft_exthdr_find.tcpopt_find over the frame the walk reads (pkt.data)."""
    skb, d = pkt.skb, pkt.data
    return tcpopt_find(np.frombuffer(d, np.uint8), len(d), skb.l4proto, skb.thoff, kind, need)


def bit_span(off_bits: int, len_bits: int) -> tuple[int, int, int]:
    """(first byte, byte count, right shift) of a field of `len_bits` at bit `off_bits`: nft loads the
    whole bytes (payload or exthdr offset and length), then a bitwise shifts and masks them
    (nftables src/netlink_linearize.c › netlink_gen_payload with a sub-byte template)."""
    first = off_bits // 8
    n = (off_bits + len_bits + 7) // 8 - first
    return first, n, n * 8 - off_bits % 8 - len_bits


def _bytes(off_bits: int, len_bits: int) -> tuple[int, int, int, int]:
    """bit_span and the mask that narrows the bytes (0: none, the field is whole bytes)."""
    exact = off_bits % 8 == 0 and len_bits % 8 == 0
    return (*bit_span(off_bits, len_bits), 0 if exact else (1 << len_bits) - 1)


def _value(d, o: int, n: int, shift: int, mask: int) -> int:
    v = int.from_bytes(d[o : o + n], "big")
    return (v >> shift) & mask if mask else v


def _option(arg: dict) -> tuple[int, int, int, int, int]:
    """(kind, first byte, byte count, shift, mask) of a {"tcp option": ...} field."""
    try:
        kind, off, n = tcpopt_bits(arg)
    except (KeyError, TypeError, ValueError):
        raise NftBuildError(f"unsupported tcp option {arg!r}") from None
    return (kind, *_bytes(off, n))


class ExthdrSpec(NamedTuple):
    """What nft_exthdr loads (struct nft_exthdr): a TCP option (tcp) or an IPv6 extension header, its
    kind or type, the bytes (first, n) narrowed by shift and mask (0: whole bytes), and the load's dtype and
    bits; present: NFT_EXTHDR_F_PRESENT (1/0 in a byte). The closures and the VM's compiler read it."""

    tcp: bool
    type: int
    first: int
    n: int
    shift: int
    mask: int
    dtype: str
    bits: int
    present: bool


def tcpopt_spec(arg: dict, present: bool = False) -> ExthdrSpec:
    """`tcp option maxseg size` (the field), `tcp option @5,80,32`, or `tcp option maxseg` (present; a
    kind nft has no name for is listed with base/offset/len, and `present` says it is compared with
    exists/missing)."""
    if present or ("field" not in arg and "base" not in arg):
        try:
            kind = tcpopt_kind_of(arg)
        except (KeyError, TypeError, ValueError):
            raise NftBuildError(f"unsupported tcp option {arg!r}") from None
        return ExthdrSpec(True, kind, 0, 1, 0, 0, "boolean", 8, True)
    kind, first, n, shift, mask = _option(arg)
    return ExthdrSpec(True, kind, first, n, shift, mask, "integer", mask.bit_length() if mask else n * 8, False)


def exthdr_spec(arg: dict) -> ExthdrSpec:
    """`frag more-fragments` (a field) or `exthdr frag` (present)."""
    try:
        if "field" in arg:
            nexthdr, off, bits, dtype = exthdr_field(arg["name"], arg["field"])
        else:
            nexthdr = EXTHDR[arg["name"]][0]
    except (KeyError, TypeError):
        raise NftBuildError(f"unsupported extension header {arg!r}") from None
    if "field" not in arg:
        return ExthdrSpec(False, nexthdr, 0, 1, 0, 0, "boolean", 8, True)
    first, n, shift, mask = _bytes(off, bits)
    return ExthdrSpec(False, nexthdr, first, n, shift, mask, "integer" if dtype.startswith("integer") else dtype,
                      bits, False)  # fmt: skip


def build_tcpopt_load(arg: dict, present: bool = False):
    """nft_exthdr_tcp_eval (tcpopt_spec): the field, NFT_BREAK when the option is absent; or 1/0 when
    present is asked for, never a break."""
    sp = tcpopt_spec(arg, present)
    kind, first, n, shift, mask = sp.type, sp.first, sp.n, sp.shift, sp.mask
    if sp.present:

        def present(pkt):
            return 1 if _tcpopt_find(pkt, kind, 1) >= 0 else 0

        return present, "boolean", 8

    def load(pkt):
        o = _tcpopt_find(pkt, kind, first + n)
        return None if o < 0 else _value(pkt.data, o + first, n, shift, mask)

    return load, sp.dtype, sp.bits


def _ipv6_find_hdr(pkt, target: int) -> int:
    """nft_exthdr_find.ipv6_find_hdr over the frame the walk reads (pkt.data): an offset, ENOENT or EBADMSG."""
    d = pkt.data
    return ipv6_find_hdr(np.frombuffer(d, np.uint8), len(d), pkt.skb.nhoff, target)


def build_exthdr_load(arg: dict):
    """nft_exthdr_ipv6_eval (exthdr_spec): the field (NFT_BREAK when the header is absent or short) or
    1/0 (NFT_EXTHDR_F_PRESENT). An IPv4 packet never matches: in an inet or netdev table nft puts
    `meta nfproto ipv6` (`meta protocol ip6`) in front."""
    sp = exthdr_spec(arg)
    nexthdr, first, n, shift, mask = sp.type, sp.first, sp.n, sp.shift, sp.mask
    if sp.present:

        def present(pkt):
            if pkt.skb.l3proto != L.ETH_P_IPV6:
                return None
            return 1 if _ipv6_find_hdr(pkt, nexthdr) >= 0 else 0

        return present, "boolean", 8

    def load(pkt):
        if pkt.skb.l3proto != L.ETH_P_IPV6:
            return None
        o = _ipv6_find_hdr(pkt, nexthdr)
        if o < 0 or o + first + n > len(pkt.data):  # skb_copy_bits fails
            return None
        return _value(pkt.data, o + first, n, shift, mask)

    return load, sp.dtype, sp.bits


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
    kind, off, n, _, mask = _option(arg)
    if mask or n not in (2, 4) or off < 2:  # nft_exthdr_tcp_set_init: 2- and 4-byte fields, not kind/length
        raise NftBuildError(f"cannot set tcp option {arg!r}")
    words = tuple(range(0, n, 2))

    def op(pkt):
        new = src(pkt)
        if new is None:
            return NFT_BREAK
        o = _tcpopt_find(pkt, kind, off + n)
        if o <= -2:
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


def build_tcpopt_strip(arg: dict):
    """nft_exthdr_tcp_strip_eval: `reset tcp option sack-perm` overwrites the first such option with NOPs,
    each byte's change folded into the TCP checksum as a 16-bit word (inet_proto_csum_replace2); no
    TCP header: NFT_BREAK; an option past the header: NF_DROP ("can't remove, no choice but to drop")."""
    try:
        kind = tcpopt_kind_of(arg)
    except (KeyError, TypeError, ValueError):
        raise NftBuildError(f"unsupported tcp option {arg!r}") from None

    def op(pkt):
        o = _tcpopt_find(pkt, kind, 1)
        if o == -1:
            return NFT_CONTINUE  # not there: continue, so that a rule can strip several
        if o == -2:
            return NFT_BREAK
        if o == -3:
            return C.NF_DROP
        skb, d = pkt.skb, pkt.data
        b, check, t = skb.buf, skb.thoff + L.TCPH.check, skb.thoff
        optl = int(optlen(np.frombuffer(d, np.uint8), o))
        for j in range(o, o + optl):
            even = (j - t) % 2 == 0  # the byte is a word's high half
            csum_replace2(b, check, d[j] << 8 if even else d[j], TCPOPT_NOP << 8 if even else TCPOPT_NOP)
            b[j] = TCPOPT_NOP
        pkt.data = b.tobytes()
        return NFT_CONTINUE

    return op

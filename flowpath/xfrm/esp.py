"""ESP tunnel mode, one packet at a time: encapsulate and decapsulate with the `cryptography` AEAD.

Linux: net/ipv4/esp4.c and net/ipv6/esp6.c (esp_output, esp_input, esp_input_done2), with the tunnel
mode of net/xfrm/xfrm_output.c › xfrm4_tunnel_encap_add / xfrm6_tunnel_encap_add and the decap of
xfrm_input.c › xfrm4_remove_tunnel_encap. RFC 4303 (ESP), RFC 4106 (GCM), RFC 7634 (ChaCha20-Poly1305),
RFC 4304 (ESN), RFC 3948 (UDP encapsulation). This is the slow path and the reference the compiled
kernels in esp_batch.py are tested against; it calls the per-call `cryptography` API on purpose.

Frames: `frame[nhoff:]` is the IP packet; the bytes before nhoff (the link-layer header) are kept, and
when nhoff >= 2 the two bytes before nhoff (the ethertype) are set to the new network protocol.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag

from flowpath.packet.layout import (
    ETH_P_IP,
    ETH_P_IPV6,
    IP_DF,
    IPPROTO_ESP,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
)
from flowpath.packet.reason import Reason
from flowpath.xfrm.replay import (
    REPLAY_DUP,
    REPLAY_OK,
    SEQ32_MAX,
    xfrm_replay_advance,
    xfrm_replay_check,
    xfrm_replay_seqhi,
)
from flowpath.xfrm.state import (
    AF_INET,
    XFRM_STATE_DECAP_DSCP,
    XFRM_STATE_NOECN,
    XFRM_STATE_NOPMTUDISC,
    XS_BAD_PADDING,
    XS_IN_PACKETS,
    XS_INTEGRITY_FAILED,
    XS_OUT_PACKETS,
    XS_REPLAY,
    XS_REPLAY_WINDOW,
    XS_SEQ_OVERFLOW,
    XS_TRUNCATED,
    XfrmState,
    xfrm_state_check_expire,
)

# Drop reasons this module writes (Linux MIB in the comment); a rename in packet/reason.py breaks here.
XFRM_IN_HDR = int(Reason.XFRM_IN_HDR)  # XfrmInHdrError: truncated ESP
XFRM_IN_REPLAY = int(Reason.XFRM_IN_REPLAY)  # XfrmInStateSeqError (replay)
XFRM_IN_REPLAY_WINDOW = int(Reason.XFRM_IN_REPLAY_WINDOW)  # left of the window
XFRM_IN_ICV = int(Reason.XFRM_IN_ICV)  # XfrmInStateProtoError (-EBADMSG)
XFRM_IN_PADDING = int(Reason.XFRM_IN_PADDING)  # XfrmInStateProtoError (-EINVAL)
XFRM_IN_NEXTHDR = int(Reason.XFRM_IN_NEXTHDR)  # XfrmInStateModeError
XFRM_NO_STATE = int(Reason.XFRM_NO_STATE)  # XfrmInNoStates: wrong SPI / no SA
XFRM_STATE_EXPIRED = int(Reason.XFRM_STATE_EXPIRED)  # XfrmIn/OutStateExpired
XFRM_OUT_SEQ_OVERFLOW = int(Reason.XFRM_OUT_SEQ_OVERFLOW)  # XfrmOutStateSeqError
XFRM_NO_ROOM = int(Reason.XFRM_NO_ROOM)  # no headroom/tailroom in the slot
XFRM_INNER_PROTO = int(Reason.XFRM_INNER_PROTO)  # inner packet not IPv4/IPv6
# UDP 4500 payload that is not ESP (IKE with the non-ESP marker, NAT keepalive): the slow path's
SLOW_NATT_NON_ESP = int(Reason.SLOW_NATT_NON_ESP)

ESP_HLEN, ESP_IVLEN, UDP_HLEN = 8, 8, 8
INET_ECN_MASK, INET_ECN_ECT_0, INET_ECN_CE = 3, 2, 3


def esp_pad_len(plen: int) -> int:
    """Padding so that payload + pad length + next header is 4-byte aligned (RFC 4303 §2.4; the
    AEADs here have block size 1, so Linux's esp4 aligns to 4)."""
    return -(plen + 2) % 4


def xfrm_state_mtu(x: XfrmState, mtu: int) -> int:
    """The largest inner packet that fits an outer path MTU `mtu` once encapsulated.

    Linux: xfrm_state.c › xfrm_state_mtu (tunnel mode: header_len = outer IP + [UDP] + ESP header +
    IV; payload aligned to 4, minus pad length and next header). The PMTU check on output (ICMP frag
    needed / packet too big with this value) is the caller's, as xfrm4_tunnel_check_size.
    """
    header_len = (
        (20 if x.family == AF_INET else 40) + (UDP_HLEN if x.encap_type else 0) + ESP_HLEN + ESP_IVLEN
    )
    return ((mtu - header_len - x.icv_len) & ~3) - 2


def esp_nonce(x: XfrmState, iv: bytes) -> bytes:
    """RFC 4106 §4 / RFC 7634 §2: nonce = 4-byte salt ‖ 8-byte explicit IV."""
    return x.salt + iv


def esp_aad(spi: int, seq: int, esn: bool) -> bytes:
    """RFC 4106 §5: SPI ‖ seq (32-bit), or SPI ‖ seq high ‖ seq low with ESN."""
    if esn:
        return struct.pack("!III", spi, seq >> 32, seq & SEQ32_MAX)
    return struct.pack("!II", spi, seq & SEQ32_MAX)


def _inner(frame: bytes, nhoff: int) -> tuple[int, int, int, int, int] | int:
    """(l3 proto, length, dsfield, df, flow label) of the inner IP packet, or a Reason."""
    if len(frame) < nhoff + 1:
        return int(Reason.PKT_TOO_SMALL)
    ver = frame[nhoff] >> 4
    if ver == 4 and len(frame) >= nhoff + 20:
        tos, tot_len, frag_off = struct.unpack_from("!xBHxxH", frame, nhoff)
        if tot_len < 20 or nhoff + tot_len > len(frame):
            return int(Reason.IP_INHDR)
        return IPPROTO_IPIP, tot_len, tos, frag_off & IP_DF, 0
    if ver == 6 and len(frame) >= nhoff + 40:
        vtf, plen = struct.unpack_from("!IH", frame, nhoff)
        if nhoff + 40 + plen > len(frame):
            return int(Reason.IP_INHDR)
        return IPPROTO_IPV6, 40 + plen, (vtf >> 20) & 0xFF, IP_DF, vtf & 0xFFFFF  # v6 inner: DF
    return XFRM_INNER_PROTO if ver not in (4, 6) else int(Reason.PKT_TOO_SMALL)


def _outer_dsfield(x: XfrmState, inner_ds: int) -> int:
    """DSCP copied; ECN by INET_ECN_encapsulate (CE becomes ECT(0)); NOECN clears it."""
    ecn = inner_ds & INET_ECN_MASK
    if x.flags & XFRM_STATE_NOECN:
        ecn = 0
    elif ecn == INET_ECN_CE:
        ecn = INET_ECN_ECT_0
    return (inner_ds & ~INET_ECN_MASK) | ecn


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def esp_output(x: XfrmState, frame: bytes, nhoff: int, now_ns: int, ttl: int = 64) -> bytes | int:
    """Encapsulate the IP packet at frame[nhoff:] in tunnel-mode ESP; the new frame or a Reason.

    Linux: xfrm_output_one (lifetime, xfrm_replay_overflow), xfrm4/6_tunnel_encap_add, esp_output.
    `ttl` is the outer TTL / hop limit (from the route). Ethernet padding after the inner packet is cut.
    """
    t, i = x.tab, x.index
    if t.dead[i]:
        return XFRM_STATE_EXPIRED
    inner = _inner(frame, nhoff)
    if isinstance(inner, int):
        return inner
    nexthdr, ilen, ds, df, flowlbl = inner
    if t.packets[i] >= x.lft.hard_packet_limit or t.bytes[i] + ilen > x.lft.hard_byte_limit:
        return XFRM_STATE_EXPIRED
    seq = int(t.oseq[i]) + 1
    if not x.esn and seq > SEQ32_MAX:  # xfrm_replay_overflow: never wrap (RFC 4303 §3.3.3)
        t.stats[i, XS_SEQ_OVERFLOW] += 1
        return XFRM_OUT_SEQ_OVERFLOW
    t.oseq[i] = seq
    padlen = esp_pad_len(ilen)
    plain = frame[nhoff : nhoff + ilen] + bytes(range(1, padlen + 1)) + bytes((padlen, nexthdr))
    iv = struct.pack("!Q", seq)
    sealed = x.aead().encrypt(esp_nonce(x, iv), plain, esp_aad(x.spi, seq, x.esn))
    esp = struct.pack("!II", x.spi, seq & SEQ32_MAX) + iv + sealed
    proto = IPPROTO_ESP
    if x.encap_type:
        proto = IPPROTO_UDP
        esp = struct.pack("!HHHH", x.encap_sport, x.encap_dport, UDP_HLEN + len(esp), 0) + esp
    dsfield = _outer_dsfield(x, ds)
    if x.family == AF_INET:
        frag_off = 0 if x.flags & XFRM_STATE_NOPMTUDISC else df
        ident = 0 if frag_off else seq & 0xFFFF  # Deviation: Linux uses ip_select_ident's hash
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, dsfield, 20 + len(esp), ident, frag_off, ttl, proto, 0,
                          x.saddr.packed, x.daddr.packed)  # fmt: skip
        hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
        l3 = ETH_P_IP
    else:
        hdr = struct.pack("!IHBB16s16s", (6 << 28) | (dsfield << 20) | flowlbl, len(esp), proto, ttl,
                          x.saddr.packed, x.daddr.packed)  # fmt: skip
        if proto == IPPROTO_UDP:  # RFC 8200 §8.1: no zero UDP checksum over IPv6
            pseudo = x.saddr.packed + x.daddr.packed + struct.pack("!IxxxB", len(esp), IPPROTO_UDP)
            esp = esp[:6] + struct.pack("!H", _csum(pseudo + esp) or 0xFFFF) + esp[8:]
        l3 = ETH_P_IPV6
    t.packets[i] += 1
    t.bytes[i] += ilen
    t.stats[i, XS_OUT_PACKETS] += 1
    xfrm_state_check_expire(x.owner, x, now_ns)
    return _l2(frame, nhoff, l3) + hdr + esp


def _l2(frame: bytes, nhoff: int, l3: int) -> bytes:
    if nhoff >= 2:
        return frame[: nhoff - 2] + struct.pack("!H", l3)
    return frame[:nhoff]


def esp_outer(frame: bytes, nhoff: int) -> tuple[int, int, int] | int:
    """(offset of the ESP header, l4 proto of the outer header, outer dsfield) or a Reason."""
    if len(frame) < nhoff + 20:
        return XFRM_IN_HDR
    ver = frame[nhoff] >> 4
    if ver == 4:
        hl, ds, proto = (frame[nhoff] & 15) * 4, frame[nhoff + 1], frame[nhoff + 9]
        end = nhoff + struct.unpack_from("!H", frame, nhoff + 2)[0]
    elif ver == 6 and len(frame) >= nhoff + 40:
        hl, proto = 40, frame[nhoff + 6]
        ds = (struct.unpack_from("!I", frame, nhoff)[0] >> 20) & 0xFF
        end = nhoff + 40 + struct.unpack_from("!H", frame, nhoff + 4)[0]
    else:
        return XFRM_IN_HDR
    if end > len(frame):
        return XFRM_IN_HDR
    off = nhoff + hl
    if proto == IPPROTO_UDP:
        off += UDP_HLEN
        if esp_udp_encap_rcv(frame, off, end) != NATT_ESP:
            return SLOW_NATT_NON_ESP
    elif proto != IPPROTO_ESP:
        return XFRM_IN_HDR
    return off, end, ds


NATT_ESP, NATT_IKE, NATT_KEEPALIVE = 0, 1, 2


def esp_udp_encap_rcv(frame: bytes, off: int, end: int) -> int:
    """What a UDP-encapsulated payload at frame[off:end] is: NATT_ESP, NATT_IKE (the 4-byte zero
    non-ESP marker) or NATT_KEEPALIVE (the single byte 0xFF). RFC 3948 §2.2, §2.3; Linux:
    xfrm4_input.c › xfrm4_udp_encap_rcv (IKE and keepalives go to the socket, i.e. the slow path)."""
    if end - off == 1 and frame[off] == 0xFF:
        return NATT_KEEPALIVE
    if end - off >= 4 and frame[off : off + 4] == b"\0\0\0\0":
        return NATT_IKE
    return NATT_ESP


def esp_input(x: XfrmState, frame: bytes, nhoff: int, now_ns: int) -> tuple[bytes, int] | int:
    """Decapsulate one tunnel-mode ESP packet: (inner IP packet, its ETH_P_*) or a Reason.

    Linux: xfrm_input (replay check before decrypting, advance after), esp_input, esp_input_done2
    (padding), xfrm4_remove_tunnel_encap (ECN CE onto the inner header). RFC 4303 §3.4.
    """
    t, i = x.tab, x.index
    if t.dead[i]:
        return XFRM_STATE_EXPIRED
    outer = esp_outer(frame, nhoff)
    if isinstance(outer, int):
        return outer
    off, end, outer_ds = outer
    icv = x.icv_len
    elen = end - off - ESP_HLEN - ESP_IVLEN - icv
    if elen < 2:
        t.stats[i, XS_TRUNCATED] += 1
        return XFRM_IN_HDR
    spi, seql = struct.unpack_from("!II", frame, off)
    if spi != x.spi:
        return XFRM_NO_STATE
    window = x.replay_window
    seq = xfrm_replay_seqhi(int(t.replay_top[i]), window, seql, x.esn)
    r = xfrm_replay_check(t.replay_top, t.replay_bmp, i, seq, window)
    if r != REPLAY_OK:
        t.stats[i, XS_REPLAY if r == REPLAY_DUP else XS_REPLAY_WINDOW] += 1
        return XFRM_IN_REPLAY if r == REPLAY_DUP else XFRM_IN_REPLAY_WINDOW
    iv = frame[off + ESP_HLEN : off + ESP_HLEN + ESP_IVLEN]
    try:
        plain = x.aead().decrypt(esp_nonce(x, iv), frame[off + 16 : end], esp_aad(spi, seq, x.esn))
    except InvalidTag:
        t.stats[i, XS_INTEGRITY_FAILED] += 1
        return XFRM_IN_ICV
    padlen, nexthdr = plain[-2], plain[-1]
    if padlen + 2 > len(plain) or plain[-2 - padlen : -2] != bytes(range(1, padlen + 1)):
        t.stats[i, XS_BAD_PADDING] += 1
        return XFRM_IN_PADDING
    xfrm_replay_advance(t.replay_top, t.replay_bmp, i, seq, window)
    inner = bytearray(plain[: len(plain) - 2 - padlen])
    if nexthdr == IPPROTO_IPIP and len(inner) >= 20 and inner[0] >> 4 == 4:
        l3 = ETH_P_IP
    elif nexthdr == IPPROTO_IPV6 and len(inner) >= 40 and inner[0] >> 4 == 6:
        l3 = ETH_P_IPV6
    else:
        return XFRM_IN_NEXTHDR
    _ecn_decapsulate(x, outer_ds, inner, l3)
    t.packets[i] += 1
    t.bytes[i] += len(inner)
    t.stats[i, XS_IN_PACKETS] += 1
    xfrm_state_check_expire(x.owner, x, now_ns)
    return bytes(inner), l3


def _ecn_decapsulate(x: XfrmState, outer_ds: int, inner: bytearray, l3: int) -> None:
    """ipip_ecn_decapsulate / ipip6_ecn_decapsulate: outer CE marks an ECT inner packet CE;
    with XFRM_STATE_DECAP_DSCP the outer DSCP is copied inward too."""
    if l3 == ETH_P_IP:
        old = inner[1]
    else:
        old = ((inner[0] & 15) << 4) | (inner[1] >> 4)
    new = old
    if x.flags & XFRM_STATE_DECAP_DSCP:
        new = (outer_ds & ~INET_ECN_MASK) | (new & INET_ECN_MASK)
    if not x.flags & XFRM_STATE_NOECN and outer_ds & INET_ECN_MASK == INET_ECN_CE and new & INET_ECN_MASK:
        new |= INET_ECN_CE
    if new == old:
        return
    if l3 == ETH_P_IP:
        inner[1] = new
        ihl = (inner[0] & 15) * 4
        inner[10:12] = b"\0\0"
        inner[10:12] = struct.pack("!H", _csum(bytes(inner[:ihl])))
    else:
        inner[0] = 0x60 | (new >> 4)
        inner[1] = ((new & 15) << 4) | (inner[1] & 15)

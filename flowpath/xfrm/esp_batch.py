"""Linux: net/ipv4/esp4.c, net/ipv6/esp6.c over a bulk of one SA: compiled, OpenSSL EVP in place.

esp_output / esp_input as in esp.py (the per-packet reference), but over a batch, the way
VPP's esp_encrypt/esp_decrypt nodes work on a frame: one SA resolution per bulk, per-SA counters in the
SAD columns, a reason per failed packet. The outer headers go into the batch headroom (head moves
back), the trailer and ICV into the slot's tailroom; decryption moves head forward past the outer
headers. The bytes before nhoff (link-layer header) move with the packet and get the new ethertype.
The per-packet reference is esp.py (the `cryptography` API); tests compare the two byte for byte.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.packet.csum import ip_fast_csum, l4_csum, ld16, ld32, st16, st32
from flowpath.packet.layout import (
    ETH_P_IP,
    ETH_P_IPV6,
    IP6H,
    IP_DF,
    IPH,
    IPPROTO_ESP,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    UDPH,
)
from flowpath.packet.reason import Reason
from flowpath.packet.unaligned import get_unaligned_le64, put_unaligned_le64
from flowpath.xfrm import evp
from flowpath.xfrm.esp import (
    ESP_HLEN,
    ESP_IVLEN,
    INET_ECN_CE,
    INET_ECN_ECT_0,
    INET_ECN_MASK,
    SLOW_NATT_NON_ESP,
    UDP_HLEN,
    XFRM_IN_HDR,
    XFRM_IN_ICV,
    XFRM_IN_NEXTHDR,
    XFRM_IN_PADDING,
    XFRM_IN_REPLAY,
    XFRM_IN_REPLAY_WINDOW,
    XFRM_INNER_PROTO,
    XFRM_NO_ROOM,
    XFRM_NO_STATE,
    XFRM_OUT_SEQ_OVERFLOW,
    XFRM_STATE_EXPIRED,
)
from flowpath.xfrm.evp import (
    EVP_CIPHER_CTX_ctrl,
    EVP_CIPHER_CTX_get_params,
    EVP_CIPHER_CTX_set_params,
    EVP_CipherFinal_ex,
    EVP_CipherInit_ex,
    EVP_CipherUpdate,
)
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
    XFRM_STATE_ESN,
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
    xfrm_state_ctx,
)

ICV_LEN = 16
# scratch layout (bytes): nonce 0..12 | AAD 12..24 | EVP out-length 24..28 | salt 28..32 |
# outer saddr 32..48 | outer daddr 48..64 | OSSL_PARAM list for the tag 64..144 (esp_scratch). The
# per-SA bytes are copied in once per bulk, so the per-packet functions take only two arrays (each
# array argument costs refcount traffic per call).
SCR_SALT, SCR_SADDR, SCR_DADDR, SCR_PARAMS = 28, 32, 48, 64
SCRATCH = SCR_PARAMS + 2 * evp.OSSL_PARAM_SIZE


def esp_scratch() -> np.ndarray:
    """A scratch for the kernels below, with the tag's OSSL_PARAM list prepared (all zeros without
    OpenSSL 3's params API: the kernels then take EVP_CIPHER_CTX_ctrl)."""
    global _scratch_template
    if _scratch_template is None:
        _scratch_template = np.zeros(SCRATCH, np.uint8)
        evp.ossl_tag_params(_scratch_template, SCR_PARAMS, ICV_LEN)
    return _scratch_template.copy()


_scratch_template: np.ndarray | None = None
FLOW_FORWARD = int(Reason.FLOW_FORWARD)


@njit(cache=True, nogil=True)
def esp_nonce_aad(scr, iv, seq, spi, esn):
    """Write nonce = salt ‖ IV (scr[0:12]) and AAD = SPI ‖ [seq hi ‖] seq lo (scr[12:]); return the AAD
    length. RFC 4106 §4-5, RFC 7634 §2, RFC 4303 §2.2.1 (ESN)."""
    for k in range(4):
        scr[k] = scr[SCR_SALT + k]
    for k in range(8):
        scr[4 + k] = (iv >> (56 - 8 * k)) & 0xFF
    st32(scr, 12, spi)
    if esn:
        st32(scr, 16, (seq >> 32) & SEQ32_MAX)
        st32(scr, 20, seq & SEQ32_MAX)
        return 12
    st32(scr, 16, seq & SEQ32_MAX)
    return 8


@njit(cache=True, nogil=True)
def esp_aead_seal(ctx, enc, scr, b, off, n, seq, spi, esn):
    """Run one EVP AEAD operation in place over b[off:off+n]; the tag is at b[off+n:off+n+16].

    RFC 4106 §4/§5, RFC 7634 §2: nonce = salt ‖ IV (8-byte big-endian seq, also written before off
    by the caller), AAD = SPI ‖ [seq hi ‖] seq lo. enc 1 encrypts and writes the tag; 0 checks it.
    Returns 1 when OpenSSL reports success (for decryption: the ICV matched).
    """
    alen = esp_nonce_aad(scr, seq, seq, spi, esn)
    sp = scr.ctypes.data
    bp = b.ctypes.data + off
    outl = sp + 24
    if EVP_CipherInit_ex(ctx, 0, 0, 0, sp, enc) != 1:
        return 0
    EVP_CipherUpdate(ctx, 0, outl, sp + 12, alen)
    EVP_CipherUpdate(ctx, bp, outl, bp, n)
    if enc:
        EVP_CipherFinal_ex(ctx, bp + n, outl)
        return esp_aead_tag(ctx, scr, bp + n, 1)
    esp_aead_tag(ctx, scr, bp + n, 0)
    return 1 if EVP_CipherFinal_ex(ctx, bp + n, outl) > 0 else 0


@njit(cache=True, nogil=True, inline="always")
def esp_aead_tag(ctx, scr, tagp, get):
    """Get (get 1, after the final) or set (get 0, before it) the 16-byte tag at address tagp: through
    the scratch's OSSL_PARAM list when esp_scratch prepared one, else EVP_CIPHER_CTX_ctrl."""
    if get_unaligned_le64(scr, SCR_PARAMS) != 0:
        put_unaligned_le64(scr, SCR_PARAMS + 16, np.uint64(tagp))
        pp = scr.ctypes.data + SCR_PARAMS
        return EVP_CIPHER_CTX_get_params(ctx, pp) if get else EVP_CIPHER_CTX_set_params(ctx, pp)
    return EVP_CIPHER_CTX_ctrl(ctx, evp.EVP_CTRL_AEAD_GET_TAG if get else evp.EVP_CTRL_AEAD_SET_TAG, ICV_LEN, tagp)


@njit(cache=True, nogil=True)
def esp_scratch_fill(t, sa, scr):
    """Copy the SA's salt and outer addresses into the bulk's scratch."""
    for k in range(4):
        scr[SCR_SALT + k] = t.salt[sa, k]
    for k in range(16):
        scr[SCR_SADDR + k] = t.saddr[sa, k]
        scr[SCR_DADDR + k] = t.daddr[sa, k]


@njit(cache=True, nogil=True)
def xfrm_state_wants_check(t, sa):
    """True when SA sa has crossed a count that xfrm_state_check_expire must see (first use, a soft or
    hard byte/packet limit, the end of the 32-bit sequence space, death), so that a compiled caller
    hands the control plane only the bulks that matter."""
    return (t.packets[sa] >= t.check_packets[sa] or t.bytes[sa] >= t.check_bytes[sa] or t.dead[sa] != 0
            or (not t.flags[sa] & XFRM_STATE_ESN and t.oseq[sa] >= SEQ32_MAX))  # fmt: skip


@njit(cache=True, nogil=True)
def esp_output_one(b, lo, hi, h, ln, nhoff, seq, budget, sa, ttl, scr):
    """Encapsulate the packet at b[h:h+ln] (IP header at h+nhoff; its slot is b[lo:hi]) with sequence
    number `seq`.

    Linux: xfrm_output_one, xfrm4/6_tunnel_encap_add, esp_output. Decide first: every check runs
    before the slot is written, so a refused packet keeps its bytes. `budget` is the byte lifetime
    left; sa (ctx, spi, flags, v4, sport, dport) the SA's values for the bulk (esp_encrypt_kernel),
    sport/dport 0 = no NAT-T. Returns (reason, head, len, inner length). b is the batch's flat data (a
    row view per packet would cost a reference count round trip per call).
    """
    ctx, spi, flags, v4, sport, dport = sa
    ip = h + nhoff
    if ln < nhoff + 20:
        return Reason.PKT_TOO_SMALL, h, ln, 0
    ver = b[ip] >> 4
    if ver == 4:
        ilen = ld16(b, ip + IPH.tot_len)
        ds = b[ip + IPH.tos]
        df = ld16(b, ip + IPH.frag_off) & IP_DF
        nexthdr, flowlbl = IPPROTO_IPIP, 0
        if ilen < 20:
            return Reason.IP_INHDR, h, ln, 0
    elif ver == 6 and ln >= nhoff + 40:
        ilen = 40 + ld16(b, ip + IP6H.payload_len)
        vtf = ld32(b, ip)
        ds, df, nexthdr, flowlbl = (vtf >> 20) & 0xFF, IP_DF, IPPROTO_IPV6, vtf & 0xFFFFF
    elif ver == 6:
        return Reason.PKT_TOO_SMALL, h, ln, 0
    else:
        return XFRM_INNER_PROTO, h, ln, 0
    if nhoff + ilen > ln:
        return Reason.IP_INHDR, h, ln, 0
    if ilen > budget:
        return XFRM_STATE_EXPIRED, h, ln, 0
    esn = flags & XFRM_STATE_ESN
    if not esn and seq > SEQ32_MAX:
        return XFRM_OUT_SEQ_OVERFLOW, h, ln, 0
    udp = dport != 0
    ohl = (20 if v4 else 40) + (UDP_HLEN if udp else 0)
    padlen = (-(ilen + 2)) % 4
    nh = h - ohl - ESP_HLEN - ESP_IVLEN
    if nh < lo or ip + ilen + padlen + 2 + ICV_LEN > hi:
        return XFRM_NO_ROOM, h, ln, 0
    # write: trailer, link-layer header moved back, outer header, ESP header + IV, then encrypt in
    # place; nh was chosen so that the inner packet already sits right after the IV (esp + 16 == ip)
    tail = ip + ilen
    for k in range(padlen):
        b[tail + k] = k + 1
    b[tail + padlen] = padlen
    b[tail + padlen + 1] = nexthdr
    for k in range(nhoff):
        b[nh + k] = b[h + k]
    if nhoff >= 2:
        st16(b, nh + nhoff - 2, ETH_P_IP if v4 else ETH_P_IPV6)
    o = nh + nhoff
    esp = o + ohl
    elen = ilen + padlen + 2
    plen = ESP_HLEN + ESP_IVLEN + elen + ICV_LEN + (UDP_HLEN if udp else 0)
    ecn = ds & INET_ECN_MASK
    if flags & XFRM_STATE_NOECN:
        ecn = 0
    elif ecn == INET_ECN_CE:
        ecn = INET_ECN_ECT_0
    dsfield = (ds & ~INET_ECN_MASK & 0xFF) | ecn
    proto = IPPROTO_UDP if udp else IPPROTO_ESP
    if v4:
        frag_off = 0 if flags & XFRM_STATE_NOPMTUDISC else df
        b[o] = 0x45
        b[o + IPH.tos] = dsfield
        st16(b, o + IPH.tot_len, 20 + plen)
        st16(b, o + IPH.id, 0 if frag_off else seq & 0xFFFF)
        st16(b, o + IPH.frag_off, frag_off)
        b[o + IPH.ttl] = ttl
        b[o + IPH.protocol] = proto
        st16(b, o + IPH.check, 0)
        for k in range(4):
            b[o + IPH.saddr + k] = scr[SCR_SADDR + k]
            b[o + IPH.daddr + k] = scr[SCR_DADDR + k]
        st16(b, o + IPH.check, ip_fast_csum(b, o, 20))
    else:
        st32(b, o, (6 << 28) | (dsfield << 20) | flowlbl)
        st16(b, o + IP6H.payload_len, plen)
        b[o + IP6H.nexthdr] = proto
        b[o + IP6H.hop_limit] = ttl
        for k in range(16):
            b[o + IP6H.saddr + k] = scr[SCR_SADDR + k]
            b[o + IP6H.daddr + k] = scr[SCR_DADDR + k]
    if udp:
        u = esp - UDP_HLEN
        st16(b, u + UDPH.source, sport)
        st16(b, u + UDPH.dest, dport)
        st16(b, u + UDPH.len, plen)
        st16(b, u + UDPH.check, 0)
    st32(b, esp, spi)
    st32(b, esp + 4, seq & SEQ32_MAX)
    for k in range(8):
        b[esp + 8 + k] = (seq >> (56 - 8 * k)) & 0xFF
    if esp_aead_seal(ctx, 1, scr, b, esp + 16, elen, seq, spi, esn) != 1:
        return XFRM_NO_STATE, h, ln, 0
    if udp and not v4:  # RFC 8200 §8.1: UDP over IPv6 carries a checksum
        c = l4_csum(b, o, esp - UDP_HLEN, plen, True, IPPROTO_UDP, UDPH.check)
        st16(b, esp - UDP_HLEN + UDPH.check, c if c != 0 else 0xFFFF)
    return FLOW_FORWARD, nh, nhoff + ohl + plen - (UDP_HLEN if udp else 0), ilen


@njit(cache=True, nogil=True)
def esp_encrypt_kernel(data, head, length, verdict, nhoff, idx, t, sa, ttl, scr):
    """Encrypt the packets idx[] of one SA in place (tunnel mode); returns the number refused.

    data uint8[cap, slot]; head, length uint16[cap] in/out; verdict uint8[cap] in/out (only
    FLOW_FORWARD packets are taken; a refused one gets its reason); nhoff uint16[cap] offset of the
    inner IP header from head; idx int32[m] the bulk; t XfrmStateTable (oseq, lifetime and stats of
    row sa updated once per bulk, as VPP flushes SA counters); sa int; ttl outer TTL;
    scr uint8[SCRATCH] scratch.
    """
    if scr.shape[0] < SCRATCH:  # the kernel writes SCRATCH bytes into it: refuse, never overrun
        for j in range(idx.shape[0]):
            verdict[idx[j]] = XFRM_NO_ROOM
        return idx.shape[0]
    esp_scratch_fill(t, sa, scr)
    sa_out = (t.ctx_enc[sa], np.int64(t.spi[sa]), t.flags[sa], t.family[sa] == AF_INET, t.encap_sport[sa],
              t.encap_dport[sa])  # fmt: skip
    seq, packets, nbytes = t.oseq[sa], t.packets[sa], t.bytes[sa]
    bad = overflow = 0
    flat, slot = data.reshape(-1), np.int64(data.shape[1])
    for j in range(idx.shape[0]):
        i = idx[j]
        if verdict[i] != FLOW_FORWARD:
            continue
        base = i * slot
        if t.dead[sa] or packets >= t.hard_packets[sa]:
            r, h, ln, ilen = XFRM_STATE_EXPIRED, 0, 0, 0
        else:
            r, h, ln, ilen = esp_output_one(flat, base, base + slot, base + np.int64(head[i]), np.int64(length[i]),
                                            np.int64(nhoff[i]), seq + 1, t.hard_bytes[sa] - nbytes, sa_out, ttl, scr)  # fmt: skip
        if r != FLOW_FORWARD:
            verdict[i] = r
            bad += 1
            overflow += r == XFRM_OUT_SEQ_OVERFLOW
        else:
            head[i], length[i] = h - base, ln
            seq += 1
            packets += 1
            nbytes += ilen
    t.stats[sa, XS_OUT_PACKETS] += packets - t.packets[sa]
    t.stats[sa, XS_SEQ_OVERFLOW] += overflow
    t.oseq[sa], t.packets[sa], t.bytes[sa] = seq, packets, nbytes
    return bad


@njit(cache=True, nogil=True)
def esp_input_one(b, h, ln, nhoff, ctx, spi_sa, flags, window, top, bmp, sa, scr):
    """Decapsulate the ESP packet at b[h:h+ln] (outer IP header at h+nhoff; b the batch's flat data, as
    esp_output_one); (reason, head, len).

    Linux: xfrm_input + esp_input + esp_input_done2 + xfrm4_remove_tunnel_encap, as esp.esp_input.
    top, bmp: the SAD replay columns (row sa). Returns (reason, head, len, inner length, XS_* stat to
    count or -1).
    """
    o = h + nhoff
    if ln < nhoff + 20:
        return XFRM_IN_HDR, h, ln, 0, -1
    ver = b[o] >> 4
    if ver == 4:
        hl, ds, proto = (b[o] & 15) * 4, b[o + IPH.tos], b[o + IPH.protocol]
        end = o + ld16(b, o + IPH.tot_len)
    elif ver == 6 and ln >= nhoff + 40:
        hl, ds, proto = 40, (ld32(b, o) >> 20) & 0xFF, b[o + IP6H.nexthdr]
        end = o + 40 + ld16(b, o + IP6H.payload_len)
    else:
        return XFRM_IN_HDR, h, ln, 0, -1
    if end > h + ln:
        return XFRM_IN_HDR, h, ln, 0, -1
    esp = o + hl
    if proto == IPPROTO_UDP:
        esp += UDP_HLEN
        # RFC 3948 §2.2/§2.3: the non-ESP marker (IKE) and NAT keepalives belong to the slow path
        if (end - esp == 1 and b[esp] == 0xFF) or (end - esp >= 4 and ld32(b, esp) == 0):
            return SLOW_NATT_NON_ESP, h, ln, 0, -1
    elif proto != IPPROTO_ESP:
        return XFRM_IN_HDR, h, ln, 0, -1
    elen = end - esp - ESP_HLEN - ESP_IVLEN - ICV_LEN
    if elen < 2:
        return XFRM_IN_HDR, h, ln, 0, XS_TRUNCATED
    spi = ld32(b, esp)
    if spi != spi_sa:
        return XFRM_NO_STATE, h, ln, 0, -1
    esn = flags & XFRM_STATE_ESN
    seq = xfrm_replay_seqhi(top[sa], window, ld32(b, esp + 4), esn)
    r = xfrm_replay_check(top, bmp, sa, seq, window)
    if r != REPLAY_OK:
        if r == REPLAY_DUP:
            return XFRM_IN_REPLAY, h, ln, 0, XS_REPLAY
        return XFRM_IN_REPLAY_WINDOW, h, ln, 0, XS_REPLAY_WINDOW
    iv = 0
    for k in range(8):
        iv = (iv << 8) | np.int64(b[esp + 8 + k])
    # the explicit IV is the sender's choice: use it for the nonce, the inferred seq for the AAD
    if esp_aead_open(ctx, scr, b, esp + 16, elen, iv, seq, spi, esn) != 1:
        return XFRM_IN_ICV, h, ln, 0, XS_INTEGRITY_FAILED
    ip = esp + 16
    padlen = np.int64(b[ip + elen - 2])
    nexthdr = b[ip + elen - 1]
    good = padlen + 2 <= elen
    if good:
        for k in range(padlen):
            if b[ip + elen - 2 - padlen + k] != k + 1:
                good = False
    if not good:
        return XFRM_IN_PADDING, h, ln, 0, XS_BAD_PADDING
    xfrm_replay_advance(top, bmp, sa, seq, window)
    ilen = elen - 2 - padlen
    if nexthdr == IPPROTO_IPIP and ilen >= 20 and b[ip] >> 4 == 4:
        l3 = ETH_P_IP
    elif nexthdr == IPPROTO_IPV6 and ilen >= 40 and b[ip] >> 4 == 6:
        l3 = ETH_P_IPV6
    else:
        return XFRM_IN_NEXTHDR, h, ln, 0, -1
    if not flags & XFRM_STATE_NOECN and ds & INET_ECN_MASK == INET_ECN_CE:
        esp_ecn_set_ce(b, ip, l3)
    nh = ip - nhoff
    for k in range(nhoff - 1, -1, -1):  # move right: copy from the end
        b[nh + k] = b[h + k]
    if nhoff >= 2:
        st16(b, nh + nhoff - 2, l3)
    return FLOW_FORWARD, nh, nhoff + ilen, ilen, XS_IN_PACKETS


@njit(cache=True, nogil=True)
def esp_ecn_set_ce(b, ip, l3):
    """IP_ECN_set_ce / IP6_ECN_set_ce: CE on an ECT inner packet (IPv4 checksum updated)."""
    if l3 == ETH_P_IP:
        if b[ip + IPH.tos] & INET_ECN_MASK:
            b[ip + IPH.tos] |= INET_ECN_CE
            st16(b, ip + IPH.check, ip_fast_csum(b, ip, (b[ip] & 15) * 4))
    elif (b[ip + 1] >> 4) & INET_ECN_MASK:
        b[ip + 1] |= INET_ECN_CE << 4


@njit(cache=True, nogil=True)
def esp_aead_open(ctx, scr, b, off, n, iv, seq, spi, esn):
    """Check and decrypt b[off:off+n] (tag after it) in place; nonce from the explicit IV."""
    alen = esp_nonce_aad(scr, iv, seq, spi, esn)
    sp = scr.ctypes.data
    bp = b.ctypes.data + off
    outl = sp + 24
    if EVP_CipherInit_ex(ctx, 0, 0, 0, sp, 0) != 1:
        return 0
    EVP_CipherUpdate(ctx, 0, outl, sp + 12, alen)
    EVP_CipherUpdate(ctx, bp, outl, bp, n)
    esp_aead_tag(ctx, scr, bp + n, 0)
    return 1 if EVP_CipherFinal_ex(ctx, bp + n, outl) > 0 else 0


@njit(cache=True, nogil=True)
def esp_decrypt_kernel(data, head, length, verdict, nhoff, idx, t, sa, scr):
    """Decrypt the packets idx[] of one SA in place; returns the number dropped.

    Same columns as esp_encrypt_kernel; nhoff uint16[cap] is the outer IP header's offset from head.
    On success head/length frame the link-layer header plus the inner packet.
    """
    if scr.shape[0] < SCRATCH:  # the kernel writes SCRATCH bytes into it: refuse, never overrun
        for j in range(idx.shape[0]):
            verdict[idx[j]] = XFRM_NO_ROOM
        return idx.shape[0]
    esp_scratch_fill(t, sa, scr)
    ctx, spi, flags, window = t.ctx_dec[sa], np.int64(t.spi[sa]), t.flags[sa], t.window[sa]
    top, bmp = t.replay_top, t.replay_bmp
    bad = packets = nbytes = 0
    flat, slot = data.reshape(-1), np.int64(data.shape[1])
    for j in range(idx.shape[0]):
        i = idx[j]
        if verdict[i] != FLOW_FORWARD:
            continue
        base = i * slot
        if t.dead[sa]:
            r, h, ln, ilen, stat = XFRM_STATE_EXPIRED, 0, 0, 0, -1
        else:
            r, h, ln, ilen, stat = esp_input_one(flat, base + np.int64(head[i]), np.int64(length[i]),
                                                 np.int64(nhoff[i]), ctx, spi, flags, window, top, bmp, sa, scr)  # fmt: skip
        if stat >= 0:
            t.stats[sa, stat] += 1
        if r != FLOW_FORWARD:
            verdict[i] = r
            bad += 1
        else:
            head[i], length[i] = h - base, ln
            packets += 1
            nbytes += ilen
    t.packets[sa] += packets
    t.bytes[sa] += nbytes
    return bad


def esp_encrypt_batch(x: XfrmState, data, head, length, verdict, nhoff, idx, ttl: int, now_ns: int) -> int:
    """Encrypt a bulk of one SA: the compiled EVP kernel, or per packet through esp.esp_output when
    libcrypto is not loadable (evp.EVP_AVAILABLE False). Runs the SA's lifetime check after the bulk.
    Returns the number of packets refused (their verdict says why). No Linux counterpart (bulk)."""
    xfrm = x.owner
    ctx_enc, _ = xfrm_state_ctx(xfrm, x)
    if ctx_enc:
        scr = esp_scratch()
        bad = esp_encrypt_kernel(data, head, length, verdict, nhoff, idx, xfrm.tab, x.index, ttl, scr)
    else:
        bad = _per_packet(x, data, head, length, verdict, nhoff, idx, now_ns, ttl, True)
    xfrm_state_check_expire(xfrm, x, now_ns)
    return int(bad)


def esp_decrypt_batch(x: XfrmState, data, head, length, verdict, nhoff, idx, now_ns: int) -> int:
    """Decrypt a bulk of one SA (compiled EVP kernel or the per-packet fallback); see esp_encrypt_batch."""
    xfrm = x.owner
    _, ctx_dec = xfrm_state_ctx(xfrm, x)
    if ctx_dec:
        scr = esp_scratch()
        bad = esp_decrypt_kernel(data, head, length, verdict, nhoff, idx, xfrm.tab, x.index, scr)
    else:
        bad = _per_packet(x, data, head, length, verdict, nhoff, idx, now_ns, 0, False)
    xfrm_state_check_expire(xfrm, x, now_ns)
    return int(bad)


def _per_packet(
    x: XfrmState, data, head, length, verdict, nhoff, idx, now_ns: int, ttl: int, out: bool
) -> int:
    from flowpath.xfrm.esp import esp_input, esp_outer, esp_output

    bad = 0
    for i in idx:
        if verdict[i] != FLOW_FORWARD:
            continue
        h, n, l2 = int(head[i]), int(length[i]), int(nhoff[i])
        frame = data[i, h : h + n].tobytes()
        if out:
            r = esp_output(x, frame, l2, now_ns, ttl)
            if isinstance(r, int):
                verdict[i], bad = r, bad + 1
                continue
            # the kernel leaves the inner packet in place and pushes the headers in front of it
            nh = h - (20 if x.family == AF_INET else 40) - (UDP_HLEN if x.encap_type else 0) - 16
        else:
            r = esp_input(x, frame, l2, now_ns)
            if isinstance(r, int):
                verdict[i], bad = r, bad + 1
                continue
            inner, l3 = r
            r = frame[: l2 - 2] + l3.to_bytes(2, "big") + inner if l2 >= 2 else frame[:l2] + inner
            nh = h + esp_outer(frame, l2)[0] + ESP_HLEN + ESP_IVLEN - l2
        if nh < 0 or nh + len(r) > data.shape[1]:
            verdict[i], bad = XFRM_NO_ROOM, bad + 1
            continue
        data[i, nh : nh + len(r)] = np.frombuffer(r, np.uint8)
        head[i], length[i] = nh, len(r)
    return bad

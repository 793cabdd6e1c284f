"""Checksums: full sums against Scapy, RFC 1624 updates against full recomputes, each against a naive reference.

Linux: include/net/checksum.h (csum_fold, csum_replace2/4), net/core/utils.c (inet_proto_csum_replace4/16),
include/net/ip.h (ip_decrease_ttl); RFC 1071, RFC 1624, RFC 768.

±0: one's-complement arithmetic has two zeros. A checksum computed over data that is not all zero is
never 0xFFFF, and RFC 1624 eq. 3 (HC' = ~(~HC + ~m + m')) yields 0xFFFF only when ~HC, ~m and m' are
all 0. So from a checksum computed the normal way (not 0xFFFF), incremental updates agree exactly with
a full recompute; starting from 0xFFFF (UDP's mangled zero) they may give 0xFFFF where the recompute
gives 0x0000, and the tests accept exactly that equivalence, after checking the result verifies.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, IPv6, Raw

from flowpath.packet import layout as L
from flowpath.packet.csum import (
    CSUM_MANGLED_0,
    csum_partial,
    csum_replace2,
    csum_replace4,
    csum_replace16,
    icmp_csum,
    ip_decrease_ttl,
    ip_fast_csum,
    l4_csum,
    ld16,
    ld32,
    st16,
    st32,
    udp_csum_replace2,
    udp_csum_replace4,
)

# ---- plain-Python references (RFC 1071 / RFC 1624, written for clarity, not speed) ----


def ref_sum(data: bytes) -> int:
    """One's-complement sum of big-endian 16-bit words, odd byte padded with zero, folded to 16 bits."""
    return ref_sum_from(0, data)


def ref_sum_from(s: int, data: bytes) -> int:
    """ref_sum with a running sum s (any size) added before the fold."""
    if len(data) % 2:
        data += b"\0"
    s += sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_csum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


def ref_ip_fast_csum(hdr: bytes) -> int:
    return ref_csum(hdr[:10] + b"\0\0" + hdr[12:])


def ref_l4_csum(pseudo_addrs: bytes, proto: int, seg: bytes, check_off: int) -> int:
    seg = seg[:check_off] + b"\0\0" + seg[check_off + 2 :]
    c = ref_csum(pseudo_addrs + bytes([0, proto]) + len(seg).to_bytes(2, "big") + seg)
    return 0xFFFF if c == 0 and proto == 17 else c


def ref_replace(check: int, old: bytes, new: bytes) -> int:
    """RFC 1624 eq. 3 over a field of any even length."""
    s = ~check & 0xFFFF
    for i in range(0, len(old), 2):
        s += (~int.from_bytes(old[i : i + 2], "big") & 0xFFFF) + int.from_bytes(new[i : i + 2], "big")
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ref_udp_replace(check: int, old: bytes, new: bytes) -> int:
    if check == 0:
        return 0
    return ref_replace(check, old, new) or CSUM_MANGLED_0


def ref_ip_decrease_ttl(hdr: bytes) -> bytes:
    """The TTL one lower and the header checksum recomputed in full."""
    h = bytearray(hdr)
    h[8] -= 1
    h[10:12] = ref_ip_fast_csum(bytes(h)).to_bytes(2, "big")
    return bytes(h)


def arr(b: bytes) -> np.ndarray:
    return np.frombuffer(bytearray(b), np.uint8)


# ---- packets built by Scapy ----

# Explicit MACs: left out, Scapy resolves the destination by ARP on the host's network.
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

ipv4 = st.integers(0, 2**32 - 1).map(lambda v: ".".join(str(v >> s & 0xFF) for s in (24, 16, 8, 0)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda v: ":".join(f"{v >> s & 0xFFFF:x}" for s in range(112, -1, -16)))
port = st.integers(0, 0xFFFF)
payload = st.binary(max_size=64)


@st.composite
def packets(draw, v6: bool | None = None, kind: str | None = None):
    """(frame, is_ipv6, l4proto) with every checksum filled in by Scapy."""
    v6 = draw(st.booleans()) if v6 is None else v6
    kind = kind or draw(st.sampled_from(["tcp", "udp", "icmp"]))
    if v6:
        ip = IPv6(src=draw(ipv6), dst=draw(ipv6), hlim=draw(st.integers(1, 255)))
    else:
        ip = IP(
            src=draw(ipv4),
            dst=draw(ipv4),
            ttl=draw(st.integers(1, 255)),
            id=draw(port),
            tos=draw(port) & 0xFF,
        )
        if draw(st.booleans()):
            ip.options = b"\x01" * draw(st.integers(1, 40))
    if kind == "tcp":
        l4 = TCP(
            sport=draw(port), dport=draw(port), seq=draw(st.integers(0, 2**32 - 1)), flags=draw(port) & 0xFF
        )
    elif kind == "udp":
        l4 = UDP(sport=draw(port), dport=draw(port))
    else:
        l4 = ICMPv6EchoRequest(id=draw(port), seq=draw(port)) if v6 else ICMP(id=draw(port), seq=draw(port))
    data = draw(payload)
    raw = bytes(ETH / ip / l4 / Raw(data))
    pkt = Ether(raw)
    if bytes(pkt) != raw:  # a payload dissector that does not rebuild the same bytes (DCE/RPC on 135)
        pkt[type(l4)].remove_payload()
        pkt[type(l4)].add_payload(Raw(data))
    assert bytes(pkt) == raw
    proto = {"tcp": 6, "udp": 17, "icmp": 58 if v6 else 1}[kind]
    return pkt, v6, proto


def offsets(pkt, v6):
    nh = 14
    th = nh + (40 if v6 else pkt[IP].ihl * 4)
    return nh, th


def l4_check_off(proto: int) -> int:
    return {6: L.TCPH.check, 17: L.UDPH.check, 58: 2, 1: L.ICMPH.checksum}[proto]


def scapy_l4_check(pkt, proto: int) -> int:
    layer = {6: TCP, 17: UDP, 1: ICMP, 58: ICMPv6EchoRequest}[proto]
    return pkt[layer].cksum if proto == 58 else pkt[layer].chksum


def verifies(b: np.ndarray, nh: int, th: int, v6: bool, proto: int) -> bool:
    """Receiver's check: the sum over pseudo-header and segment, check field included, is 0xFFFF."""
    seg = b[th:].tobytes()
    if proto == 1:
        return ref_sum(seg) == 0xFFFF
    addrs = b[nh + 8 : nh + 40].tobytes() if v6 else b[nh + 12 : nh + 20].tobytes()
    return ref_sum(addrs + bytes([0, proto]) + len(seg).to_bytes(2, "big") + seg) == 0xFFFF


@settings(max_examples=100, deadline=None)
@given(p=packets())
def test_full_checksums_equal_scapys(p):
    """ip_fast_csum, l4_csum (TCP/UDP/ICMPv6 with pseudo-header) and icmp_csum give Scapy's values."""
    pkt, v6, proto = p
    b = arr(bytes(pkt))
    nh, th = offsets(pkt, v6)
    raw = bytes(pkt)
    if not v6:
        hlen = pkt[IP].ihl * 4
        assert ip_fast_csum(b, nh, hlen) == pkt[IP].chksum == ref_ip_fast_csum(raw[nh : nh + hlen])
    n, coff = len(raw) - th, l4_check_off(proto)
    if proto == 1:
        got, ref = icmp_csum(b, th, n), ref_csum(raw[th : th + 2] + b"\0\0" + raw[th + 4 :])
    else:
        got = l4_csum(b, nh, th, n, v6, proto, coff)
        addrs = raw[nh + 8 : nh + 40] if v6 else raw[nh + 12 : nh + 20]
        ref = ref_l4_csum(addrs, proto, raw[th:], coff)
    assert got == scapy_l4_check(pkt, proto) == ref
    assert b.tobytes() == raw  # the check field is restored


def recompute(pkt_bytes: bytes, v6: bool, proto: int):
    """Scapy's full recompute of every checksum of an edited frame."""
    pkt = Ether(pkt_bytes)
    if not v6:
        del pkt[IP].chksum
    layer = {6: TCP, 17: UDP, 1: ICMP, 58: ICMPv6EchoRequest}[proto]
    if proto == 58:
        del pkt[layer].cksum
    else:
        del pkt[layer].chksum
    return Ether(bytes(pkt))


def same_or_both_zero(a: int, b: int, start: int) -> bool:
    return a == b or (start == 0xFFFF and {a, b} == {0, 0xFFFF})


@settings(max_examples=100, deadline=None)
@given(p=packets(), new_s=st.binary(min_size=16, max_size=16), new_d=st.binary(min_size=16, max_size=16),
       new_sport=port, new_dport=port)  # fmt: skip
def test_incremental_updates_after_nat_match_full_recompute(p, new_s, new_d, new_sport, new_dport):
    """Addresses (csum_replace4 / csum_replace16 / udp_csum_replace4) and ports (csum_replace2 /
    udp_csum_replace2) rewritten as NAT does; every checksum verifies and equals Scapy's recompute."""
    pkt, v6, proto = p
    b = arr(bytes(pkt))
    nh, th = offsets(pkt, v6)
    coff = th + l4_check_off(proto)
    start = ld16(b, coff)
    pseudo = proto != 1
    udp = proto == 17
    if v6:
        for aoff, new in ((nh + L.IP6H.saddr, new_s), (nh + L.IP6H.daddr, new_d)):
            old = b[aoff : aoff + 16].tobytes()
            want = ref_replace(ld16(b, coff), old, new) if pseudo else ld16(b, coff)
            if pseudo:
                csum_replace16(b, coff, aoff, arr(new), 0)
                assert ld16(b, coff) == want
            b[aoff : aoff + 16] = arr(new)
    else:
        for aoff, new in ((nh + L.IPH.saddr, new_s[:4]), (nh + L.IPH.daddr, new_d[:4])):
            old, newv = int(ld32(b, aoff)), int.from_bytes(new, "big")
            want_ip = ref_replace(ld16(b, nh + L.IPH.check), old.to_bytes(4, "big"), new)
            csum_replace4(b, nh + L.IPH.check, old, newv)
            assert ld16(b, nh + L.IPH.check) == want_ip
            if pseudo:
                fn, ref = (udp_csum_replace4, ref_udp_replace) if udp else (csum_replace4, ref_replace)
                want = ref(ld16(b, coff), old.to_bytes(4, "big"), new)
                fn(b, coff, old, newv)
                assert ld16(b, coff) == want
            st32(b, aoff, newv)
    if proto in (6, 17):
        for poff, newp in ((th, new_sport), (th + 2, new_dport)):
            old = int(ld16(b, poff))
            fn, ref = (udp_csum_replace2, ref_udp_replace) if udp else (csum_replace2, ref_replace)
            want = ref(ld16(b, coff), old.to_bytes(2, "big"), newp.to_bytes(2, "big"))
            fn(b, coff, old, newp)
            assert ld16(b, coff) == want
            st16(b, poff, newp)
    full = recompute(b.tobytes(), v6, proto)
    if not v6:
        assert ld16(b, nh + L.IPH.check) == full[IP].chksum
        assert ref_sum(b[nh:th].tobytes()) == 0xFFFF
    assert verifies(b, nh, th, v6, proto)
    assert same_or_both_zero(ld16(b, coff), scapy_l4_check(full, proto), start)


def test_udp_zero_checksum_left_alone():
    """IPv4 UDP without a checksum (0) stays without one: inet_proto_csum_replace* skip it (RFC 768)."""
    b = arr(bytes(ETH / IP() / UDP(chksum=0)))
    coff = 14 + 20 + L.UDPH.check
    udp_csum_replace4(b, coff, 0x7F000001, 0x0A000001)
    udp_csum_replace2(b, coff, 53, 5353)
    assert ld16(b, coff) == 0


def test_zero_result_becomes_mangled_for_udp_only():
    """~(~0x1234 + ~0 + 0x1234) = 0: csum_replace2 writes 0x0000, udp_csum_replace2 CSUM_MANGLED_0."""
    b = arr(b"\x12\x34")
    csum_replace2(b, 0, 0, 0x1234)
    assert ld16(b, 0) == 0
    b = arr(b"\x12\x34")
    udp_csum_replace2(b, 0, 0, 0x1234)
    assert ld16(b, 0) == 0xFFFF
    b = arr(b"\x12\x34")
    udp_csum_replace4(b, 0, 0, 0x1234)
    assert ld16(b, 0) == 0xFFFF


@settings(max_examples=100, deadline=None)
@given(p=packets(kind="udp"))
def test_udp_port_rewrite_to_a_zero_sum_gives_ffff_like_a_recompute(p):
    """Choose the new source port so that the updated UDP checksum is 0: it goes on the wire as 0xFFFF,
    as Scapy's full recompute (RFC 768) puts it."""
    pkt, v6, _ = p
    b = arr(bytes(pkt))
    nh, th = offsets(pkt, v6)
    coff = th + L.UDPH.check
    check, old = ld16(b, coff), ld16(b, th)
    new = (0xFFFF - (~check & 0xFFFF) - (~old & 0xFFFF)) % 0xFFFF  # ~check + ~old + new ≡ 0xFFFF
    udp_csum_replace2(b, coff, old, new)
    st16(b, th, new)
    assert ld16(b, coff) == 0xFFFF == recompute(b.tobytes(), v6, 17)[UDP].chksum
    assert verifies(b, nh, th, v6, 17)


@settings(max_examples=100, deadline=None)
@given(p=packets(v6=False))
def test_ip_decrease_ttl_matches_full_recompute(p):
    """ip_decrease_ttl's add-0x0100-with-carry gives exactly the recomputed checksum (never 0xFFFF)."""
    pkt = p[0]
    b = arr(bytes(pkt))
    hlen = pkt[IP].ihl * 4
    want = ref_ip_decrease_ttl(bytes(pkt)[14 : 14 + hlen])
    assert ip_decrease_ttl(b, 14) == pkt[IP].ttl - 1
    assert b[14 : 14 + hlen].tobytes() == want
    assert ld16(b, 14 + L.IPH.check) == ip_fast_csum(b, 14, hlen)


@st.composite
def slices(draw):
    """(buffer, off, n): n in 0..1600, odd and even, with random bytes on both sides of the slice,
    so a read outside b[off:off+n] changes the sum."""
    n = draw(st.integers(0, 1600))
    off = draw(st.integers(0, 7))
    return arr(draw(st.binary(min_size=off + n, max_size=off + n + 7))), off, n


initial_sums = st.one_of(
    st.sampled_from([0, 1, 0xFFFE, 0xFFFF, 0x10000, 0xFFFF * 0xFFFF, 2**40]), st.integers(0, 2**40)
)


@settings(max_examples=300, deadline=None)
@given(sl=slices(), s0=initial_sums)
def test_csum_partial_against_reference(sl, s0):
    """RFC 1071 §4.1: csum_partial(b, off, n, s) is s plus the big-endian words of b[off:off+n], odd byte
    padded, folded: any offset, odd lengths, large running sums; compiled and plain Python agree."""
    b, off, n = sl
    want = ref_sum_from(s0, b[off : off + n].tobytes())
    assert csum_partial(b, off, n, s0) == want
    assert getattr(csum_partial, "py_func", csum_partial)(b, off, n, s0) == want  # the JIT-off path


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 1600), s0=initial_sums)
def test_csum_partial_all_zero_and_all_ones(n, s0):
    """±0 (RFC 1071 §2(A)): all-zero bytes leave s's fold unchanged (0 stays 0); all-0xFF bytes of even
    length sum to a nonzero multiple of 0xFFFF, which folds to 0xFFFF, never 0."""
    zeros, ones = np.zeros(n, np.uint8), np.full(n, 0xFF, np.uint8)
    assert csum_partial(zeros, 0, n, s0) == ref_sum_from(s0, bytes(n)) == ref_sum_from(s0, b"")
    assert csum_partial(zeros, 0, n, 0) == 0
    assert csum_partial(ones, 0, n, s0) == ref_sum_from(s0, b"\xff" * n)
    if n and n % 2 == 0:
        assert csum_partial(ones, 0, n, 0) == 0xFFFF


@settings(max_examples=200, deadline=None)
@given(
    check=st.integers(0, 0xFFFE),
    old=st.binary(min_size=16, max_size=16),
    new=st.binary(min_size=16, max_size=16),
)
def test_replace_helpers_against_reference(check, old, new):
    """csum_replace2/4/16 and the UDP variants equal the naive RFC 1624 eq. 3 on arbitrary values."""
    for n, fn in ((2, csum_replace2), (4, csum_replace4)):
        b = arr(check.to_bytes(2, "big"))
        fn(b, 0, int.from_bytes(old[:n], "big"), int.from_bytes(new[:n], "big"))
        assert ld16(b, 0) == ref_replace(check, old[:n], new[:n])
    for n, fn in ((2, udp_csum_replace2), (4, udp_csum_replace4)):
        b = arr(check.to_bytes(2, "big"))
        fn(b, 0, int.from_bytes(old[:n], "big"), int.from_bytes(new[:n], "big"))
        assert ld16(b, 0) == ref_udp_replace(check, old[:n], new[:n])
    b = arr(check.to_bytes(2, "big") + old)
    csum_replace16(b, 0, 2, arr(new), 0)
    assert ld16(b, 0) == ref_replace(check, old, new)


def test_loads_and_stores_are_big_endian():
    b = np.zeros(6, np.uint8)
    st32(b, 1, 0x01020304)
    st16(b, 4, 0xA0B0)
    assert b.tobytes() == b"\x00\x01\x02\x03\xa0\xb0"
    assert (ld16(b, 1), ld32(b, 1)) == (0x0102, 0x010203A0)


def header_summing_to_ffff() -> bytearray:
    """An IPv4 frame whose header checksum, computed with the field zero, is 0x0000."""
    b = bytearray(bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2", id=0x1111) / UDP(sport=1, dport=2)))
    s = int.from_bytes(b[18:20], "big") + int.from_bytes(b[24:26], "big")
    b[18:20] = ((s & 0xFFFF) + (s >> 16)).to_bytes(2, "big")  # id += check: the header now sums to 0xFFFF
    return b


def test_ip_fast_csum_ignores_the_old_field_even_when_the_result_is_zero():
    """'with the check field taken as zero': a header whose checksum is 0x0000 but whose field holds
    something else must still give 0x0000 (ip_send_check), not 0xFFFF."""
    b = header_summing_to_ffff()
    b[24:26] = b"\x12\x34"
    assert ref_ip_fast_csum(bytes(b[14:34])) == 0
    assert ip_fast_csum(arr(bytes(b)), 14, 20) == 0


def test_icmp_csum_ignores_the_old_field_even_when_the_result_is_zero():
    seg = bytearray(bytes(ICMP(type=8, id=0, seq=0) / Raw(b"\x00\x01")))
    s = int.from_bytes(seg[4:6], "big") + int.from_bytes(seg[2:4], "big")
    seg[4:6] = ((s & 0xFFFF) + (s >> 16)).to_bytes(2, "big")  # id += checksum: now it is 0x0000
    seg[2:4] = b"\xab\xcd"
    assert ref_csum(bytes(seg[:2] + b"\0\0" + seg[4:])) == 0
    assert icmp_csum(arr(bytes(seg)), 0, len(seg)) == 0


@settings(max_examples=100, deadline=None)
@given(p=packets(v6=False), junk=st.integers(0, 0xFFFF))
def test_ip_fast_csum_with_junk_in_the_field(p, junk):
    """Away from the ±0 case above, the old field's value does not matter."""
    pkt = p[0]
    hlen = pkt[IP].ihl * 4
    b = arr(bytes(pkt))
    st16(b, 14 + L.IPH.check, junk)
    want = pkt[IP].chksum
    if want != 0:
        assert ip_fast_csum(b, 14, hlen) == want

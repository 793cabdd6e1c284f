"""ESP tunnel mode against Scapy's SecurityAssociation, both directions, per packet and compiled.

RFC 4303 (ESP), RFC 4106 (AES-GCM), RFC 7634 (ChaCha20-Poly1305), RFC 4304 (ESN), RFC 3948 (NAT-T).
Scapy is the independent oracle: flowpath's ESP must decrypt there, Scapy's must decrypt here, and with
the same IV (flowpath uses the 64-bit sequence number) the two encapsulations are byte-identical.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import raw

from flowpath.packet.batch import PacketBatch
from flowpath.xfrm import evp
from flowpath.xfrm.esp import esp_input, esp_output
from flowpath.xfrm.esp_batch import esp_decrypt_batch, esp_encrypt_batch
from flowpath.xfrm.state import (
    AF_INET,
    AF_INET6,
    UDP_ENCAP_ESPINUDP,
    XFRM_STATE_ESN,
    Xfrm,
    XfrmState,
    xfrm_state_add,
)

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
ALGS = {  # name: (xfrm alg, key + salt, Scapy name)
    "gcm128": (evp.XFRM_AEAD_GCM, bytes(range(1, 17)) + b"\xca\xfe\xba\xbe", "AES-GCM"),
    "gcm256": (evp.XFRM_AEAD_GCM, bytes(range(1, 33)) + b"\x01\x02\x03\x04", "AES-GCM"),
    "chacha": (evp.XFRM_AEAD_CHACHA, bytes(range(0x80, 0xA0)) + b"\x07\x00\x00\x00", "CHACHA20-POLY1305"),
}
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
CASES = list(itertools.product(ALGS, (4, 6), (4, 6), (False, True), (False, True)))
IDS = [f"{a}-out{o}-in{i}{'-natt' if n else ''}{'-esn' if e else ''}" for a, o, i, n, e in CASES]
ESN_HI = 1  # with ESN the high half is non-zero, so a wrong AAD shows


def make_state(alg: str, outer: int, natt: bool, esn: bool) -> XfrmState:
    a, key, _ = ALGS[alg]
    s, d = OUTER[outer]
    x = XfrmState(AF_INET if outer == 4 else AF_INET6, ipaddress.ip_address(s), ipaddress.ip_address(d), 0x1234ABCD,
                  reqid=1, alg=a, key=key[:-4], salt=key[-4:], replay_window=128 if esn else 32,
                  flags=XFRM_STATE_ESN if esn else 0, encap_type=UDP_ENCAP_ESPINUDP if natt else 0,
                  encap_sport=4500, encap_dport=4500)  # fmt: skip
    xfrm_state_add(Xfrm(), x)
    if esn:
        x.tab.oseq[x.index] = (ESN_HI << 32) + 4
        x.tab.replay_top[x.index] = (ESN_HI << 32) + 2
    return x


def scapy_sa(alg: str, outer: int, natt: bool, esn: bool, tunnel=None) -> SecurityAssociation:
    _, key, name = ALGS[alg]
    s, d = OUTER[outer]
    if tunnel is None:
        tunnel = IP(src=s, dst=d) if outer == 4 else IPv6(src=s, dst=d)
    return SecurityAssociation(ESP, spi=0x1234ABCD, crypt_algo=name, crypt_key=key, tunnel_header=tunnel,
                               nat_t_header=UDP(sport=4500, dport=4500) if natt else None, esn_en=esn,
                               esn=ESN_HI if esn else 0)  # fmt: skip


def inner_packet(ver: int, n: int = 40, tos: int = 0xB8 | 1):
    if ver == 4:
        return (
            IP(src="10.1.0.1", dst="10.2.0.1", tos=tos, flags="DF", id=7)
            / UDP(sport=1000, dport=2000)
            / bytes(n)
        )
    return IPv6(src="fd01::1", dst="fd02::1", tc=tos, fl=0x12345) / TCP(sport=1000, dport=80) / bytes(n)


def expected_tunnel(outer: int, inner_ver: int, ttl: int):
    """The outer header Linux builds: DSCP copied, ECT kept, DF from the inner header (IPv6: set)."""
    s, d = OUTER[outer]
    if outer == 4:
        return IP(src=s, dst=d, tos=0xB8 | 1, flags="DF", ttl=ttl, id=0)
    return IPv6(src=s, dst=d, tc=0xB8 | 1, fl=0x12345 if inner_ver == 6 else 0, hlim=ttl)


def strip_udp_csum(b: bytes, outer: int, natt: bool) -> bytes:
    """Scapy fills the IPv4 UDP checksum that RFC 3948 §2.1 lets a sender (and Linux) leave zero, and
    leaves zero the IPv6 one that RFC 8200 §8.1 requires (Linux esp6 computes it): compare without."""
    if natt:
        c = 20 if outer == 4 else 40
        return b[: c + 6] + b"\0\0" + b[c + 8 :]
    return b


def udp6_csum_ok(b: bytes) -> bool:
    """Scapy recomputes the checksum of the outer UDP over IPv6; it must equal ours (and be non-zero)."""
    p = IPv6(b)
    sent = p[UDP].chksum
    del p[UDP].chksum
    return sent != 0 and IPv6(raw(p))[UDP].chksum == sent


@pytest.mark.parametrize(("alg", "outer", "inner", "natt", "esn"), CASES, ids=IDS)
def test_flowpath_esp_decrypts_in_scapy_byte_for_byte(alg, outer, inner, natt, esn):
    """esp4.c/esp6.c › esp_output in tunnel mode; RFC 4303 §3.3, RFC 4106 §3, RFC 7634 §2."""
    x = make_state(alg, outer, natt, esn)
    p = inner_packet(inner)
    out = esp_output(x, raw(ETH / p), 14, 0, ttl=61)
    assert isinstance(out, bytes)
    outer_pkt = Ether(out).payload
    got = scapy_sa(alg, outer, natt, esn).decrypt(outer_pkt)
    assert raw(got) == raw(p)
    seq = (ESN_HI << 32) + 5 if esn else 1
    ref = scapy_sa(alg, outer, natt, esn, expected_tunnel(outer, inner, 61)).encrypt(
        p, seq_num=seq & 0xFFFFFFFF, iv=struct.pack("!Q", seq)
    )
    assert strip_udp_csum(out[14:], outer, natt) == strip_udp_csum(raw(ref), outer, natt)
    if natt and outer == 6:
        assert udp6_csum_ok(out[14:])


@pytest.mark.parametrize(("alg", "outer", "inner", "natt", "esn"), CASES, ids=IDS)
def test_scapy_esp_decrypts_in_flowpath(alg, outer, inner, natt, esn):
    """esp4.c/esp6.c › esp_input + xfrm4_remove_tunnel_encap; RFC 4303 §3.4, RFC 4304 (seq high half)."""
    x = make_state(alg, outer, natt, esn)
    p = inner_packet(inner)
    e = scapy_sa(alg, outer, natt, esn).encrypt(p, seq_num=5)
    r = esp_input(x, raw(e), 0, 0)
    assert r == (raw(p), 0x0800 if inner == 4 else 0x86DD)


@pytest.mark.parametrize(("alg", "outer", "inner", "natt", "esn"), CASES[::3], ids=IDS[::3])
def test_compiled_kernels_agree_with_per_packet_path_and_scapy(alg, outer, inner, natt, esn):
    """The bulk kernels (numba + EVP) write the same bytes as esp_output, and decrypt Scapy's ESP."""
    if not evp.evp_load():
        pytest.skip(f"libcrypto not loadable: {evp.EVP_ERROR}")
    x, ref_x = make_state(alg, outer, natt, esn), make_state(alg, outer, natt, esn)
    frames = [raw(ETH / inner_packet(inner, n)) for n in (0, 1, 2, 3, 100, 1300)]
    b = PacketBatch(8)
    for f in frames:
        b.append(f, 1, 0)
    nhoff = np.full(8, 14, np.uint16)
    idx = np.arange(b.n, dtype=np.int32)
    assert esp_encrypt_batch(x, b.data, b.head, b.len, b.verdict, nhoff, idx, 61, 0) == 0
    for i, f in enumerate(frames):
        assert b.frame_bytes(i) == esp_output(ref_x, f, 14, 0, 61)
    sa = scapy_sa(alg, outer, natt, esn)
    scapy_frames = [raw(ETH / sa.encrypt(inner_packet(inner, n), seq_num=10 + n)) for n in (0, 5, 700)]
    d = PacketBatch(4)
    for f in scapy_frames:
        d.append(f, 1, 0)
    y = make_state(alg, outer, natt, esn)
    assert esp_decrypt_batch(y, d.data, d.head, d.len, d.verdict, nhoff, np.arange(3, dtype=np.int32), 0) == 0
    for i, n in enumerate((0, 5, 700)):
        want = raw(ETH / inner_packet(inner, n))
        assert d.frame_bytes(i)[14:] == want[14:]
        assert d.frame_bytes(i)[12:14] == want[12:14]  # ethertype of the inner family

"""Published AEAD test vectors through the ESP nonce/AAD construction and both crypto paths.

RFC 4106 has no test vectors. Used here:
- NIST GCM (McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 3, 4 and 15): the AES-GCM
  AEAD level, through the EVP contexts flowpath creates and through `cryptography`.
- RFC 7539 §2.8.2 (the AEAD example RFC 7634 builds on): its 12-byte nonce 07000000 ‖ 4041424344454647
  and 12-byte AAD 50515253 ‖ c0c1c2c3 ‖ c4c5c6c7 are exactly an ESP nonce (salt ‖ IV) and an ESN AAD
  (SPI ‖ seq hi ‖ seq lo, RFC 7634 §2.1), so the vector runs through the ESP kernel's own construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowpath.xfrm import evp
from flowpath.xfrm.esp import esp_aad, esp_nonce
from flowpath.xfrm.esp_batch import SCR_SALT, SCRATCH, esp_aead_open, esp_aead_seal
from flowpath.xfrm.state import AF_INET, XfrmState

H = bytes.fromhex
GCM_K = H("feffe9928665731c6d6a8f9467308308")
GCM_IV = H("cafebabefacedbaddecaf888")
GCM_P = H(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_CASES = [  # (name, key, aad, plaintext, ciphertext ‖ tag)
    ("case3", GCM_K, b"", GCM_P,
     H("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa05"
       "1ba30b396a0aac973d58e091473f5985" "4d5c2af327cd64a62cf35abd2ba6fab4")),
    ("case4", GCM_K, H("feedfacedeadbeeffeedfacedeadbeefabaddad2"), GCM_P[:60],
     H("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa05"
       "1ba30b396a0aac973d58e091" "5bc94fbc3221a5db94fae95ae7121a47")),
    ("case15", GCM_K + GCM_K, b"", GCM_P,
     H("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838"
       "c5f61e6393ba7a0abcc9f662898015ad" "b094dac5d93471bdec1a502270e3cc6c")),
]  # fmt: skip

CHACHA_KEY = bytes(range(0x80, 0xA0))
CHACHA_SALT, CHACHA_IV = H("07000000"), H("4041424344454647")
CHACHA_SPI, CHACHA_SEQ = 0x50515253, 0xC0C1C2C3C4C5C6C7
CHACHA_P = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
    b"sunscreen would be it."
)
CHACHA_C = H(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
    "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
CHACHA_TAG = H("1ae10b594f09e26a7e902ecbd0600691")


@pytest.mark.parametrize(("name", "key", "aad", "p", "ct"), GCM_CASES, ids=[c[0] for c in GCM_CASES])
def test_nist_gcm_vectors_per_call_path(name, key, aad, p, ct):
    assert evp.aead_new(evp.XFRM_AEAD_GCM, key).encrypt(GCM_IV, p, aad) == ct


def test_rfc7539_vector_as_esp_esn_nonce_and_aad_per_packet_path():
    """RFC 7634 §2 nonce = salt ‖ IV, §2.1 AAD with ESN = SPI ‖ seq hi ‖ seq lo."""
    x = XfrmState(AF_INET, None, None, CHACHA_SPI, alg=evp.XFRM_AEAD_CHACHA, key=CHACHA_KEY, salt=CHACHA_SALT)
    nonce, aad = esp_nonce(x, CHACHA_IV), esp_aad(CHACHA_SPI, CHACHA_SEQ, True)
    assert x.aead().encrypt(nonce, CHACHA_P, aad) == CHACHA_C + CHACHA_TAG


@pytest.fixture(scope="module")
def need_evp():
    if not evp.evp_load():
        pytest.skip(f"libcrypto not loadable: {evp.EVP_ERROR}")


@pytest.mark.parametrize(("name", "key", "aad", "p", "ct"), GCM_CASES, ids=[c[0] for c in GCM_CASES])
def test_nist_gcm_vectors_through_flowpath_evp_context(need_evp, name, key, aad, p, ct):
    """The contexts evp_ctx_new makes (cipher, 12-byte IV, key) give the published output."""
    import ctypes

    ctx = evp.evp_ctx_new(evp.XFRM_AEAD_GCM, key, True)
    lib = evp._lib
    buf = ctypes.create_string_buffer(p, len(p) + 16)
    outl = ctypes.c_int()
    lib.EVP_CipherInit_ex(ctx, None, None, None, GCM_IV, 1)
    if aad:
        lib.EVP_CipherUpdate(ctypes.c_void_p(ctx), None, ctypes.byref(outl), aad, len(aad))
    lib.EVP_CipherUpdate(ctypes.c_void_p(ctx), buf, ctypes.byref(outl), p, len(p))
    lib.EVP_CipherFinal_ex(ctypes.c_void_p(ctx), None, ctypes.byref(outl))
    tag = ctypes.create_string_buffer(16)
    lib.EVP_CIPHER_CTX_ctrl(ctx, evp.EVP_CTRL_AEAD_GET_TAG, 16, tag)
    evp.evp_ctx_free(ctx)
    assert buf.raw[: len(p)] + tag.raw == ct


def test_rfc7539_vector_through_the_compiled_esp_seal_and_open(need_evp):
    """esp_aead_seal builds the nonce from salt ‖ 64-bit seq and the ESN AAD; the vector's IV equals
    its seq here, so the kernel must produce the published ciphertext and tag, and open them again."""
    seq_as_iv = int.from_bytes(CHACHA_IV, "big")
    # the kernels hold 64-bit sequence numbers as int64 (two's complement above 2^63)
    seq = np.int64(CHACHA_SEQ - (1 << 64))
    ctx_e = evp.evp_ctx_new(evp.XFRM_AEAD_CHACHA, CHACHA_KEY, True)
    ctx_d = evp.evp_ctx_new(evp.XFRM_AEAD_CHACHA, CHACHA_KEY, False)
    scr = np.zeros(SCRATCH, np.uint8)
    scr[SCR_SALT : SCR_SALT + 4] = np.frombuffer(CHACHA_SALT, np.uint8)
    b = np.zeros(256, np.uint8)
    b[8 : 8 + len(CHACHA_P)] = np.frombuffer(CHACHA_P, np.uint8)
    n = len(CHACHA_P)
    ok = esp_aead_open(ctx_d, scr, _with(b, CHACHA_C + CHACHA_TAG), 8, n, seq_as_iv, seq, CHACHA_SPI, 1)
    assert ok == 1
    c = _with(b, CHACHA_C + CHACHA_TAG)
    esp_aead_open(ctx_d, scr, c, 8, n, seq_as_iv, seq, CHACHA_SPI, 1)
    assert bytes(c[8 : 8 + n]) == CHACHA_P
    tampered = _with(b, CHACHA_C + CHACHA_TAG[:-1] + b"\x00")
    assert esp_aead_open(ctx_d, scr, tampered, 8, n, seq_as_iv, seq, CHACHA_SPI, 1) == 0
    # and the sealing kernel reproduces the vector when IV and AAD come from the same seq
    x = XfrmState(AF_INET, None, None, CHACHA_SPI, alg=evp.XFRM_AEAD_CHACHA, key=CHACHA_KEY, salt=CHACHA_SALT)
    e = _with(b, CHACHA_P)
    assert esp_aead_seal(ctx_e, 1, scr, e, 8, n, seq_as_iv, CHACHA_SPI, 1) == 1
    ref = x.aead().encrypt(esp_nonce(x, CHACHA_IV), CHACHA_P, esp_aad(CHACHA_SPI, seq_as_iv, True))
    assert bytes(e[8 : 8 + n + 16]) == ref
    evp.evp_ctx_free(ctx_e)
    evp.evp_ctx_free(ctx_d)


def _with(b: np.ndarray, data: bytes) -> np.ndarray:
    c = b.copy()
    c[8 : 8 + len(data)] = np.frombuffer(data, np.uint8)
    return c

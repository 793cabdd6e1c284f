"""No Linux counterpart (Linux: crypto/gcm.c, crypto/chacha20poly1305.c): OpenSSL EVP AEAD for numba.

The AEADs Linux calls rfc4106(gcm(aes)) and rfc7539esp(chacha20,poly1305), reached through OpenSSL,
with `cryptography` as the fallback.
The numba kernels declare the EVP calls as `types.ExternalFunction` (resolved by symbol name when the
code is linked), so the compiled stages keep `cache=True`; `evp_load()` makes the symbols visible to
the JIT with llvmlite's `load_library_permanently` and must run before a kernel is first called.
Pointers cross as `uintp` (the address of an array is `arr.ctypes.data`). Nothing is loaded at import.

Module flags (log-free): `EVP_AVAILABLE` is None until `evp_load()` ran, then True or False;
`EVP_LIBRARY` names the loaded library, `EVP_ERROR` says why loading failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os

from numba import types

XFRM_AEAD_GCM = 1  # rfc4106(gcm(aes))
XFRM_AEAD_CHACHA = 2  # rfc7539esp(chacha20,poly1305)

EVP_CTRL_AEAD_SET_IVLEN = 0x9
EVP_CTRL_AEAD_GET_TAG = 0x10
EVP_CTRL_AEAD_SET_TAG = 0x11

EVP_AVAILABLE: bool | None = None
EVP_LIBRARY: str | None = None
EVP_ERROR: str | None = None
_lib: ctypes.CDLL | None = None

_p, _i = types.uintp, types.int32
EVP_CipherInit_ex = types.ExternalFunction("EVP_CipherInit_ex", _i(_p, _p, _p, _p, _p, _i))
EVP_CipherUpdate = types.ExternalFunction("EVP_CipherUpdate", _i(_p, _p, _p, _p, _i))
EVP_CipherFinal_ex = types.ExternalFunction("EVP_CipherFinal_ex", _i(_p, _p, _p))
EVP_CIPHER_CTX_ctrl = types.ExternalFunction("EVP_CIPHER_CTX_ctrl", _i(_p, _i, _i, _p))
# OpenSSL 3: the AEAD tag through a prepared OSSL_PARAM list, not through EVP_CIPHER_CTX_ctrl (whose
# translation into params costs tens of ns per packet)
EVP_CIPHER_CTX_get_params = types.ExternalFunction("EVP_CIPHER_CTX_get_params", _i(_p, _p))
EVP_CIPHER_CTX_set_params = types.ExternalFunction("EVP_CIPHER_CTX_set_params", _i(_p, _p))
OSSL_PARAM_SIZE = 40  # struct ossl_param_st on LP64: key, data_type (+pad), data, data_size, return_size
OSSL_PARAM_OCTET_STRING = 5
_TAG_KEY = ctypes.create_string_buffer(b"tag")  # OSSL_CIPHER_PARAM_AEAD_TAG; lives as long as the process


def _candidates() -> list[str]:
    names = []
    found = ctypes.util.find_library("crypto")
    if found:
        names.append(found)
    try:  # a wheel that bundles its own libcrypto (older cryptography, or a manylinux build)
        import cryptography

        base = os.path.dirname(os.path.dirname(cryptography.__file__))
        names += sorted(glob.glob(os.path.join(base, "cryptography*.libs", "libcrypto*.so*")))
    except ImportError:
        pass
    return names


def evp_load(force_fallback: bool = False) -> bool:
    """Load libcrypto once; return EVP_AVAILABLE. `force_fallback` pins the `cryptography` path (tests)."""
    global EVP_AVAILABLE, EVP_LIBRARY, EVP_ERROR, _lib
    if force_fallback:
        EVP_AVAILABLE, EVP_ERROR = False, "fallback forced"
        return False
    if EVP_AVAILABLE is not None:
        return EVP_AVAILABLE
    from llvmlite import binding as llb
    from numba.core import config

    if config.DISABLE_JIT:  # ExternalFunction calls exist only in compiled code
        EVP_AVAILABLE, EVP_ERROR = False, "NUMBA_DISABLE_JIT is set"
        return False

    EVP_AVAILABLE, EVP_ERROR = False, "libcrypto not found"
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
            for fn in ("EVP_CipherInit_ex", "EVP_chacha20_poly1305", "EVP_aes_256_gcm", "EVP_CIPHER_CTX_new",
                       "EVP_CIPHER_CTX_get_params", "EVP_CIPHER_CTX_set_params"):  # fmt: skip
                getattr(lib, fn)
            llb.load_library_permanently(name)
        except (OSError, AttributeError, RuntimeError) as e:
            EVP_ERROR = f"{name}: {e}"
            continue
        for fn in ("EVP_CIPHER_CTX_new", "EVP_aes_128_gcm", "EVP_aes_256_gcm", "EVP_chacha20_poly1305"):
            getattr(lib, fn).restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_CipherInit_ex.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int]
        lib.EVP_CIPHER_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        _lib, EVP_AVAILABLE, EVP_LIBRARY, EVP_ERROR = lib, True, name, None
        break
    return EVP_AVAILABLE


def ossl_tag_params(out, off: int, taglen: int) -> None:
    """Write a one-entry OSSL_PARAM list {"tag": octet string of taglen bytes} + its end marker into
    out[off : off + 2 * OSSL_PARAM_SIZE] (uint8, off 8-aligned); the kernels fill in the data pointer.
    All zeros (no list) when the OpenSSL 3 params API is not there: the kernels then use ctrl."""
    out[off : off + 2 * OSSL_PARAM_SIZE] = 0
    if not evp_load() or _lib is None or not hasattr(_lib, "EVP_CIPHER_CTX_get_params"):
        return
    import numpy as np

    words = out[off : off + OSSL_PARAM_SIZE].view(np.uint64)
    words[0] = ctypes.addressof(_TAG_KEY)
    words[1] = OSSL_PARAM_OCTET_STRING
    words[3] = taglen


def evp_ctx_new(alg: int, key: bytes, enc: bool) -> int:
    """An EVP_CIPHER_CTX keyed for one SA and one direction; its address as an int (0 if no EVP)."""
    if not evp_load() or _lib is None:
        return 0
    if alg == XFRM_AEAD_CHACHA:
        cipher = _lib.EVP_chacha20_poly1305()
    else:
        cipher = _lib.EVP_aes_128_gcm() if len(key) == 16 else _lib.EVP_aes_256_gcm()
    ctx = _lib.EVP_CIPHER_CTX_new()
    if not ctx or _lib.EVP_CipherInit_ex(ctx, cipher, None, None, None, int(enc)) != 1:
        raise RuntimeError("EVP_CipherInit_ex failed")
    if _lib.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, None) != 1:
        raise RuntimeError("EVP_CTRL_AEAD_SET_IVLEN failed")
    if _lib.EVP_CipherInit_ex(ctx, None, None, key, None, int(enc)) != 1:
        raise RuntimeError("EVP_CipherInit_ex (key) failed")
    return int(ctx)


def evp_ctx_free(ctx: int) -> None:
    if ctx and _lib is not None:
        _lib.EVP_CIPHER_CTX_free(ctx)


def aead_new(alg: int, key: bytes):
    """The `cryptography` AEAD object (the per-call path and the fallback)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    return ChaCha20Poly1305(key) if alg == XFRM_AEAD_CHACHA else AESGCM(key)

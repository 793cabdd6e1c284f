"""include/linux/unaligned.h › get_unaligned_le64 / put_unaligned_le64 for the compiled fast path.

numba indexes a uint8 array one byte at a time; these `@intrinsic`s load or store eight bytes at
arr[idx] in one unaligned access (little-endian value: byte idx is bits 0-7), so the fast path copies
a link-layer header in two or three stores instead of fourteen. With the JIT off they are plain
Python over the same bytes, so the kernels still run as Python with identical results.
The caller guarantees arr[idx : idx + 8] lies inside the array (no bounds check, as in Linux).
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic

_BIG_ENDIAN_HOST = sys.byteorder == "big"


def _ptr64(context, builder, aryty, ary_val, idx_val, idxty):
    ary = context.make_array(aryty)(context, builder, ary_val)
    i = context.cast(builder, idx_val, idxty, types.intp)
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i], wraparound=False)
    return builder.bitcast(ptr, ir.IntType(64).as_pointer())


def _bswap_if_be(builder, v):
    if not _BIG_ENDIAN_HOST:
        return v
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v.type, [v.type]), "llvm.bswap.i64")
    return builder.call(fn, [v])


@intrinsic
def _get_unaligned_le64(typingctx, arr, idx):
    sig = types.uint64(arr, idx)

    def codegen(context, builder, signature, args):
        ptr = _ptr64(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        return _bswap_if_be(builder, builder.load(ptr, align=1))

    return sig, codegen


@intrinsic
def _put_unaligned_le64(typingctx, arr, idx, val):
    sig = types.void(arr, idx, val)

    def codegen(context, builder, signature, args):
        ptr = _ptr64(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        v = context.cast(builder, args[2], signature.args[2], types.uint64)
        builder.store(_bswap_if_be(builder, v), ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


def _get_unaligned_le64_py(arr, idx):
    """get_unaligned_le64 with the JIT off."""
    i = int(idx)
    return np.uint64(int.from_bytes(arr[i : i + 8].tobytes(), "little"))


def _put_unaligned_le64_py(arr, idx, val) -> None:
    """put_unaligned_le64 with the JIT off."""
    i = int(idx)
    arr[i : i + 8] = np.frombuffer(int(val).to_bytes(8, "little"), np.uint8)


get_unaligned_le64 = _get_unaligned_le64_py if config.DISABLE_JIT else _get_unaligned_le64
put_unaligned_le64 = _put_unaligned_le64_py if config.DISABLE_JIT else _put_unaligned_le64

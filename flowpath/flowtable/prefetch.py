"""include/linux/prefetch.h › prefetch: a software prefetch for the compiled fast path.

numba has no prefetch, so this is an `@intrinsic` that emits `llvm.prefetch` (read, keep in all
cache levels) for the address of arr[idx]. It only hints: no fault on any address, no effect on
results. With the JIT off it is a no-op Python function, so the kernels still run as Python.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic


@intrinsic
def _prefetch(typingctx, arr, idx):
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, locality 3, data
        return context.get_dummy_value()

    return sig, codegen


def _prefetch_py(arr, idx) -> None:
    """prefetch with the JIT off: nothing to do."""


prefetch = _prefetch_py if config.DISABLE_JIT else _prefetch

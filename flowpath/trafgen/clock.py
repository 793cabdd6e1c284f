"""clock_gettime(2) for compiled loops: the generator paces by CLOCK_MONOTONIC and stamps each frame's
signature with CLOCK_REALTIME, the clock the receive ring's tp_sec/tp_nsec come from.

Linux: kernel/time/posix-timers.c › clock_gettime (served by the vDSO, lib/vdso/gettimeofday.c, so a
read is a function call, not a syscall). numba has no clock, so this is an `@intrinsic` that calls
libc's clock_gettime with a timespec on the stack; the symbol is resolved by name when a cached
kernel is loaded, so cache=True works. With the JIT off it is time.clock_gettime_ns.
"""

from __future__ import annotations

import time

from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic

CLOCK_REALTIME = 0  # include/uapi/linux/time.h
CLOCK_MONOTONIC = 1
NSEC_PER_SEC = 1_000_000_000


@intrinsic
def _clock_gettime_ns(typingctx, clockid):
    sig = types.int64(clockid)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])  # struct timespec on LP64: tv_sec, tv_nsec
        fnty = ir.FunctionType(i32, [i32, timespec.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, timespec)
        builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.int32), ts])
        sec = builder.load(builder.gep(ts, [i32(0), i32(0)]))
        nsec = builder.load(builder.gep(ts, [i32(0), i32(1)]))
        return builder.add(builder.mul(sec, i64(NSEC_PER_SEC)), nsec)

    return sig, codegen


def _clock_gettime_ns_py(clockid) -> int:
    """clock_gettime_ns with the JIT off."""
    return time.clock_gettime_ns(int(clockid))


clock_gettime_ns = _clock_gettime_ns_py if config.DISABLE_JIT else _clock_gettime_ns

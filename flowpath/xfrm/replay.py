"""Anti-replay window and ESN high-order inference, one truth for the slow path and the kernels.

Linux: net/xfrm/xfrm_replay.c (xfrm_replay_check_esn, xfrm_replay_seqhi, xfrm_replay_advance_esn).
The window is a circular bitmap of one byte per sequence number (bit of seq s at s % window), and
`top` is the highest full 64-bit sequence number accepted. Check before decrypting, advance only after
a good ICV (RFC 4303 §3.4.3), so a forged packet cannot move the window.
"""

from __future__ import annotations

from numba import njit

XFRMA_REPLAY_ESN_MAX = 4096  # bits; include/uapi/linux/xfrm.h
# The legacy replay state holds a 32-bit bitmap. iproute2 sends a wider window (or any window with
# flag esn) as XFRMA_REPLAY_ESN_VAL, with xsinfo.replay_window 0; without ESN the kernel then runs
# that bitmap on 32-bit sequence numbers (XFRM_REPLAY_MODE_BMP), and lists it as an esn context.
XFRM_REPLAY_LEGACY_MAX = 32
SEQ32_MAX = 0xFFFFFFFF

# xfrm_replay_check results (0 = accept)
REPLAY_OK = 0
REPLAY_ZERO = 1  # sequence number 0 is never sent (RFC 4303 §3.3.3)
REPLAY_OLD = 2  # left of the window: XFRM stats replay_window
REPLAY_DUP = 3  # inside the window and already seen: XFRM stats replay


@njit(cache=True, nogil=True)
def xfrm_replay_seqhi(top, window, seql, esn):
    """The full 64-bit sequence number of a received low half `seql`.

    Linux: xfrm_replay.c › xfrm_replay_seqhi; RFC 4303 Appendix A2.2 (window of `window` packets,
    `top` the highest accepted). Without ESN the number is the 32-bit value itself.
    """
    if not esn:
        return seql
    tl = top & SEQ32_MAX
    th = top >> 32
    w = window if window > 0 else 1
    if tl >= w - 1:  # window inside one 2^32 subspace
        if seql >= tl - w + 1:
            return (th << 32) | seql
        return ((th + 1) << 32) | seql
    # window spans two subspaces: a large seql belongs to the previous one
    if seql >= ((tl - w + 1) & SEQ32_MAX) and th > 0:
        return ((th - 1) << 32) | seql
    return (th << 32) | seql


@njit(cache=True, nogil=True)
def xfrm_replay_check(top, bmp, sa, seq, window):
    """REPLAY_OK when `seq` may be accepted; top int64[N], bmp uint8[N, XFRMA_REPLAY_ESN_MAX].

    Linux: xfrm_replay.c › xfrm_replay_check_esn. A zero window disables the check (Linux alike).
    """
    if seq == 0:
        return REPLAY_ZERO
    if window == 0 or seq > top[sa]:
        return REPLAY_OK
    if top[sa] - seq >= window:
        return REPLAY_OLD
    if bmp[sa, seq % window]:
        return REPLAY_DUP
    return REPLAY_OK


@njit(cache=True, nogil=True)
def xfrm_replay_advance(top, bmp, sa, seq, window):
    """Record `seq` as received after its ICV checked out; slide the window when it is new highest.

    Linux: xfrm_replay.c › xfrm_replay_advance_esn.
    """
    if window == 0:
        if seq > top[sa]:
            top[sa] = seq
        return
    t = top[sa]
    if seq > t:
        diff = seq - t
        if diff >= window:
            bmp[sa, :window] = 0
        else:
            for s in range(t + 1, seq):
                bmp[sa, s % window] = 0
        top[sa] = seq
    bmp[sa, seq % window] = 1

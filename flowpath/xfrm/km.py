"""Key managers: who hears the ACQUIREs that xfrm_state_find raises (an IKE daemon, `ip xfrm monitor`).

Linux: net/xfrm/xfrm_state.c › xfrm_register_km, km_query (each registered xfrm_mgr's acquire());
net/xfrm/xfrm_user.c › xfrm_send_acquire, the manager that multicasts build_acquire's message on
XFRMNLGRP_ACQUIRE, which iproute2's `ip xfrm monitor` prints. Here a manager is a callback that
receives that printed text (flowpath.xfrm.listing.xfrm_acquire_print) for every ACQUIRE. It runs on
the classic path of the worker whose packet raised the ACQUIRE, between two packets: it must return
quickly (queue the text; do not negotiate in it).
"""

from __future__ import annotations

from typing import Callable

from flowpath.xfrm.listing import xfrm_acquire_print
from flowpath.xfrm.state import Xfrm, XfrmAcquire


def xfrm_register_km(xfrm: Xfrm, callback: Callable[[str], object]) -> Callable[[XfrmAcquire], None]:
    """Call `callback(text)` for every ACQUIRE from now on, text as `ip xfrm monitor` prints it.

    Returns the registration, for xfrm_unregister_km. ACQUIREs raised before it are in
    xfrm.acquires (listing.xfrm_monitor prints them)."""

    def km(acq: XfrmAcquire) -> None:
        callback(xfrm_acquire_print(acq))

    xfrm.km.append(km)
    return km


def xfrm_unregister_km(xfrm: Xfrm, km: Callable[[XfrmAcquire], None]) -> None:
    """Stop a registration of xfrm_register_km (Linux: xfrm_unregister_km); ValueError if unknown."""
    xfrm.km.remove(km)

"""Neighbour arrays: the compiled path's mirror of the ARP / NDISC table, and its neighbour lookup.

Linux: net/core/neighbour.c › neigh_lookup (the hash of tbl->nht) and include/net/neighbour.h ›
neigh_event_send (the test a transmit makes before it uses an entry's address). The table itself, its
states, queues and timers stay flowpath.net.neighbour's (Python: the rare case); NeighTable writes each
entry's mirrored fields here on every change (creation, neigh_update, neigh_event_send, the timer,
`ip neigh add|replace|del`, flushes), so that the compiled classic path transmits to a resolved
neighbour without Python and hands the rest to it.

  index  int64[icap]         open addressing, linear probe: row + 1, 0 empty, -1 removed
  key    uint32[cap, NK_COLS] family, ifindex, the address words (IPv4 in word 0)
  nb     int64[cap, NB_COLS]  the NB_* columns: nud state, lladdr as a 48-bit big-endian int, the
                              updated / confirmed / used times and the pending timer (ns of packet
                              time), flags
The views are `(index, key, nb, genid)`; genid moves when the arrays are replaced (growth): rows change
in place, so a caller holding the views sees every update. Writes are ordered for a lane reading
without the GIL: a new row is filled before its index record appears, a removed row loses its record
before it is cleared, and freed rows are reused last (first in, first out).

When may the compiled path use an entry without Python (neigh_output_ok)? Linux's neigh_event_send
transmits at once when state & (NUD_CONNECTED | NUD_DELAY | NUD_PROBE), only refreshing `used`; every
other state goes through __neigh_event_send, which changes the entry: a STALE entry becomes DELAY and
arms the delay_first_probe_time timer (the packet still leaves, with the stale address), an
INCOMPLETE one queues the packet, a NONE or FAILED one starts resolution. Our Python output also runs
the entry's due timer first (neigh_run_timer: REACHABLE ages to STALE, DELAY turns into PROBE or
REACHABLE, PROBE sends a probe or fails). So the rule: usable without Python iff state is
REACHABLE, PERMANENT, NOARP, DELAY or PROBE and no timer is due (timer 0 or now_ns < timer); STALE,
INCOMPLETE, FAILED and NONE punt, as does any entry whose timer is due.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numba import njit

from flowpath.net.fib_table import mix32

# key columns (uint32[cap, NK_COLS])
NK_FAMILY = 0
NK_IFINDEX = 1
NK_ADDR = 2  # 4 words, most significant first
NK_COLS = 8
# row columns (int64[cap, NB_COLS])
NB_STATE = 0  # NUD_* (0: NUD_NONE, or a free row)
NB_LLADDR = 1  # neigh->ha as a 48-bit big-endian int (the flowtable's V_H_DEST form)
NB_UPDATED = 2  # neigh->updated: last change of state or address
NB_CONFIRMED = 3  # neigh->confirmed: last proof of reachability
NB_USED = 4  # neigh->used: last transmit through the entry (the compiled path writes it too)
NB_TIMER = 5  # when the entry's timer is due, 0 none (only resolution's entries have timers here)
NB_FLAGS = 6  # NB_F_* below
NB_COLS = 8
NB_F_DYNAMIC = 1  # created by resolution (not `ip neigh add`). No Linux counterpart as a flag.

# include/uapi/linux/neighbour.h (flowpath.net.neighbour holds the same values; it imports this module)
_NUD_REACHABLE, _NUD_DELAY, _NUD_PROBE, _NUD_NOARP, _NUD_PERMANENT = 0x02, 0x08, 0x10, 0x40, 0x80
NUD_OUTPUT_OK = _NUD_PERMANENT | _NUD_NOARP | _NUD_REACHABLE | _NUD_DELAY | _NUD_PROBE

IDX_EMPTY = 0
IDX_REMOVED = -1


@njit(cache=True, nogil=True, inline="always")
def neigh_hash(family, ifindex, w0, w1, w2, w3):
    """32-bit hash of a neighbour key. Linux: arp_hashfn / ndisc_hashfn (ours unseeded: the
    addresses hashed are the gateway's next hops and on-link hosts, chosen by routes)."""
    h = mix32(np.int64(0x1B873593), (np.int64(family) << 24) ^ np.int64(ifindex))
    h = mix32(h, np.int64(w0))
    h = mix32(h, np.int64(w1))
    h = mix32(h, np.int64(w2))
    h = mix32(h, np.int64(w3))
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def neigh_lookup(nv, family, ifindex, w0, w1, w2, w3):
    """Linux: neighbour.c › neigh_lookup: the row of the entry (family, ifindex, address), -1 none.

    nv      (index, key, nb, genid), net.neigh_views()
    family  4 or 6; ifindex the device; w0..w3 the address words (IPv4: w0, the rest 0)
    """
    index, key = nv[0], nv[1]
    mask = index.shape[0] - 1
    i = neigh_hash(family, ifindex, w0, w1, w2, w3) & mask
    for _ in range(index.shape[0]):
        rec = index[i]
        if rec == IDX_EMPTY:
            return -1
        if rec > 0:
            r = rec - 1
            if (key[r, NK_FAMILY] == family and key[r, NK_IFINDEX] == ifindex and key[r, NK_ADDR] == w0
                    and key[r, NK_ADDR + 1] == w1 and key[r, NK_ADDR + 2] == w2 and key[r, NK_ADDR + 3] == w3):  # fmt: skip
                return r
        i = (i + 1) & mask
    return -1


@njit(cache=True, nogil=True, inline="always")
def neigh_output_ok(nb, r, now_ns):
    """True when row r's address may be used for a transmit at now_ns without Python (the module
    docstring's rule: neigh_event_send's fast test, and no timer due); then `used` is refreshed as
    neigh_event_send does. False: the packet goes to the Python path, which changes the entry."""
    if not nb[r, NB_STATE] & NUD_OUTPUT_OK:
        return False
    timer = nb[r, NB_TIMER]
    if timer != 0 and now_ns >= timer:
        return False
    if nb[r, NB_USED] < now_ns:
        nb[r, NB_USED] = now_ns
    return True


@njit(cache=True, nogil=True)
def neigh_index_insert(index, key, r):
    """Row r (key written) into the index: the first empty or removed record on its probe path.
    The caller keeps the index under half full, removed records counted."""
    mask = index.shape[0] - 1
    i = neigh_hash(key[r, NK_FAMILY], key[r, NK_IFINDEX], key[r, NK_ADDR], key[r, NK_ADDR + 1],
                   key[r, NK_ADDR + 2], key[r, NK_ADDR + 3]) & mask  # fmt: skip
    while index[i] > 0:
        i = (i + 1) & mask
    reused = index[i] == IDX_REMOVED
    index[i] = r + 1
    return reused


@njit(cache=True, nogil=True)
def neigh_index_remove(index, key, r):
    """Row r's index record marked removed (the probe paths through it stay intact)."""
    mask = index.shape[0] - 1
    i = neigh_hash(key[r, NK_FAMILY], key[r, NK_IFINDEX], key[r, NK_ADDR], key[r, NK_ADDR + 1],
                   key[r, NK_ADDR + 2], key[r, NK_ADDR + 3]) & mask  # fmt: skip
    for _ in range(index.shape[0]):
        if index[i] == r + 1:
            index[i] = IDX_REMOVED
            return True
        if index[i] == IDX_EMPTY:
            return False
        i = (i + 1) & mask
    return False


def _words(family: int, addr: int) -> tuple[int, int, int, int]:
    if family == 4:
        return addr, 0, 0, 0
    return (addr >> 96) & 0xFFFFFFFF, (addr >> 64) & 0xFFFFFFFF, (addr >> 32) & 0xFFFFFFFF, addr & 0xFFFFFFFF


class NeighArrays:
    """The owner of the neighbour arrays (one writer: NeighTable). No Linux counterpart."""

    def __init__(self, cap: int = 16) -> None:
        self.key = np.zeros((cap, NK_COLS), np.uint32)
        self.nb = np.zeros((cap, NB_COLS), np.int64)
        self.index = np.zeros(2 * cap, np.int64)
        self.rows: dict[tuple[int, int, int], int] = {}  # (family, ifindex, addr) -> row
        self._free = deque(range(cap))
        self._removed = 0  # IDX_REMOVED records in the index
        self.genid = 0
        self._views: tuple | None = None

    def views(self) -> tuple:
        v = self._views
        if v is None:
            v = self._views = (self.index, self.key, self.nb, self.genid)
        return v

    def update(self, family: int, ifindex: int, addr: int, state: int, ha: bytes, updated_ns: int,
               confirmed_ns: int, used_ns: int, timer_ns: int, flags: int) -> int:  # fmt: skip
        """Write an entry's mirrored fields, adding its row if new: the row."""
        k = (family, ifindex, addr)
        r = self.rows.get(k)
        nb = self.nb
        if r is not None:
            used_ns = max(used_ns, int(nb[r, NB_USED]))  # the compiled path's transmits count too
            # the address before the state: a reader that sees the new state sees the new address
            nb[r, NB_LLADDR], nb[r, NB_UPDATED], nb[r, NB_CONFIRMED] = (
                int.from_bytes(ha, "big"),
                updated_ns,
                confirmed_ns,
            )
            nb[r, NB_USED], nb[r, NB_TIMER], nb[r, NB_FLAGS] = used_ns, timer_ns, flags
            nb[r, NB_STATE] = state
            return r
        if not self._free or 2 * (len(self.rows) + 1 + self._removed) > self.index.shape[0]:
            self._grow()
        r = self._free.popleft()
        self.key[r] = (family, ifindex, *_words(family, addr), 0, 0)
        self.nb[r] = (state, int.from_bytes(ha, "big"), updated_ns, confirmed_ns, used_ns, timer_ns, flags, 0)
        self._removed -= int(neigh_index_insert(self.index, self.key, r))
        self.rows[k] = r
        return r

    def remove(self, family: int, ifindex: int, addr: int) -> None:
        r = self.rows.pop((family, ifindex, addr), None)
        if r is None:
            return
        if neigh_index_remove(self.index, self.key, r):
            self._removed += 1
        self.nb[r] = 0
        self.key[r] = 0
        self._free.append(r)

    def _grow(self) -> None:
        """New arrays (twice the rows when they are more than half used), the index rebuilt without
        its removed records. Readers holding the old views keep a consistent old table."""
        cap = self.nb.shape[0]
        new_cap = 2 * cap if 2 * len(self.rows) >= cap else cap
        key = np.zeros((new_cap, NK_COLS), np.uint32)
        nb = np.zeros((new_cap, NB_COLS), np.int64)
        key[:cap], nb[:cap] = self.key, self.nb
        index = np.zeros(2 * new_cap, np.int64)
        for r in self.rows.values():
            neigh_index_insert(index, key, r)
        self._free.extend(range(cap, new_cap))
        self.key, self.nb, self.index, self._removed = key, nb, index, 0
        self.genid += 1
        self._views = None

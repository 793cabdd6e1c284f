"""Neighbour (ARP / NDISC) entries: those `ip neigh` configures and those resolution creates.

Linux: net/core/neighbour.c (neigh_lookup, neigh_create, __neigh_event_send, neigh_update,
neigh_timer_handler) and include/uapi/linux/neighbour.h (NUD_*). This module holds the table and the
state machine on packet time; the packets it asks for (requests, the queue's frames, errors) are built
by the inet layer (flowpath.inet.neighbour), which calls these functions and carries out what they return.
Whoever caches a neighbour's address (the flowtable's entries) learns of its changes through the table's
netevent notifiers (include/net/netevent.h › NETEVENT_NEIGH_UPDATE, called as neigh_update_notify calls
call_netevent_notifiers), so this module imports none of them.

Simplified from Linux (each a `Deviation:`): reachable_time is base_reachable_time exactly (Linux draws
0.5-1.5x); the queue is bounded by the frames' lengths, not by skb->truesize; entries configured with
`neigh add` never age, whatever their `nud` (only the entries resolution creates do); no garbage
collection of FAILED or STALE entries (gc_staletime, gc_thresh*); timers run at lookup and from the
Worker's GC (every second of packet time), so a timer fires up to a second late; the netevent chain is
the table's (one namespace), not global, and `neigh replace` puts a new entry in place of the old one
(Linux updates the old one through __neigh_update; the notifiers see the same key either way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flowpath.net.neigh_table import NB_F_DYNAMIC, NeighArrays

# include/uapi/linux/neighbour.h
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_NAMES = {
    "permanent": NUD_PERMANENT,
    "reachable": NUD_REACHABLE,
    "stale": NUD_STALE,
    "delay": NUD_DELAY,
    "probe": NUD_PROBE,
    "noarp": NUD_NOARP,
}  # fmt: skip  (what `neigh add ... nud` accepts)
NUD_TEXT = {v: k.upper() for k, v in NUD_NAMES.items()} | {NUD_INCOMPLETE: "INCOMPLETE", NUD_FAILED: "FAILED"}
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
NUD_CONNECTED = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE
NUD_IN_TIMER = NUD_INCOMPLETE | NUD_REACHABLE | NUD_DELAY | NUD_PROBE

# struct neigh_parms defaults (net/ipv4/arp.c › arp_tbl, net/ipv6/ndisc.c › nd_tbl)
NSEC_PER_SEC = 1_000_000_000
RETRANS_TIME_NS = NSEC_PER_SEC  # retrans_time_ms 1000
BASE_REACHABLE_TIME_NS = 30 * NSEC_PER_SEC  # base_reachable_time 30 s
DELAY_PROBE_TIME_NS = 5 * NSEC_PER_SEC  # delay_first_probe_time 5 s
MCAST_SOLICIT = 3  # broadcast / multicast requests while INCOMPLETE
UCAST_SOLICIT = 3  # unicast probes while PROBE
UNRES_QLEN_BYTES = 212992  # unres_qlen_bytes: SK_WMEM_MAX

NETEVENT_NEIGH_UPDATE = 1  # include/net/netevent.h › enum netevent_notif_type


@dataclass(slots=True, eq=False)
class Neighbour:
    """struct neighbour: `primary_key` the protocol address, `ha` the 6-byte hardware address.

    dynamic        created by resolution (neigh_create); False for `ip neigh add`, which never ages here
    arp_queue      what waits for INCOMPLETE to end: opaque items of the inet layer, each with its bytes
    arp_queue_len_bytes  their total, bounded by UNRES_QLEN_BYTES
    probes         requests sent in this INCOMPLETE or PROBE period
    timer_ns       when neigh_timer_handler next has work (0: none)
    confirmed_ns   last confirmation of reachability (a reply)
    updated_ns     last change of state or address (neigh->updated)
    used_ns        last transmit through it by the Python path (neigh->used; the compiled path keeps
                   its own in the arrays)
    dead           removed from its table (neigh->dead): listeners drop what they cached from it
    tbl            the NeighTable holding it (neigh->tbl): whose notifiers hear of its changes
    """

    family: int
    primary_key: int
    ifindex: int
    ha: bytes
    nud_state: int = NUD_PERMANENT
    dynamic: bool = False
    arp_queue: list = field(default_factory=list)
    arp_queue_len_bytes: int = 0
    probes: int = 0
    timer_ns: int = 0
    confirmed_ns: int = 0
    updated_ns: int = 0
    used_ns: int = 0
    dead: bool = False
    tbl: NeighTable | None = field(default=None, repr=False)


def neigh_mirror(n: Neighbour) -> None:
    """n's fields into its table's arrays (flowpath.net.neigh_table), after any change; an entry out of
    its table (dead, or never added) has no row."""
    if n.tbl is not None and not n.dead:
        n.tbl.mirror(n)


def neigh_update_notify(n: Neighbour) -> None:
    """neigh_update_notify: NETEVENT_NEIGH_UPDATE to the notifiers of n's table (the rtnetlink
    RTM_NEWNEIGH / RTM_DELNEIGH messages __neigh_notify also sends have no listener here). The
    arrays are written first: a listener that reads them sees the change."""
    if n.tbl is not None:
        neigh_mirror(n)
        n.tbl.call_netevent_notifiers(NETEVENT_NEIGH_UPDATE, n)


# What neigh_timer_handler asks of the inet layer
NEIGH_NOTHING, NEIGH_SOLICIT, NEIGH_FAIL = 0, 1, 2


def neigh_event_send(n: Neighbour, now_ns: int) -> bool:
    """__neigh_event_send: True when output may transmit now (a valid entry), False when the packet
    must be queued (INCOMPLETE). A FAILED or new entry starts resolving (INCOMPLETE, its first
    request is the caller's to send: probes is 0); a STALE one goes to DELAY. The compiled path's
    share of this test is flowpath.net.neigh_table › neigh_output_ok."""
    n.used_ns = max(n.used_ns, now_ns)
    ok = _neigh_event_send(n, now_ns)
    neigh_mirror(n)
    return ok


def _neigh_event_send(n: Neighbour, now_ns: int) -> bool:
    if n.nud_state & (NUD_CONNECTED | NUD_DELAY | NUD_PROBE):
        return True
    if n.nud_state == NUD_STALE:
        n.nud_state, n.timer_ns, n.updated_ns = NUD_DELAY, now_ns + DELAY_PROBE_TIME_NS, now_ns
        return True
    if n.nud_state != NUD_INCOMPLETE:  # NUD_NONE or NUD_FAILED
        n.nud_state, n.probes, n.timer_ns, n.updated_ns = NUD_INCOMPLETE, 0, now_ns, now_ns
    return False


def neigh_timer_handler(n: Neighbour, now_ns: int) -> int:
    """neigh_timer_handler, one step at now_ns: returns NEIGH_SOLICIT (send a request: broadcast or
    multicast when INCOMPLETE, unicast to `ha` when PROBE), NEIGH_FAIL (the entry went FAILED: drop its
    queue with an error each) or NEIGH_NOTHING. Called until it returns NEIGH_NOTHING. Each change of
    state is notified (notify = 1 in Linux's handler), FAILED included."""
    old_state = n.nud_state
    todo = _neigh_timer_handler(n, now_ns)
    if n.nud_state != old_state:
        n.updated_ns = now_ns
    neigh_mirror(n)
    return todo


def _neigh_timer_handler(n: Neighbour, now_ns: int) -> int:
    if not n.dynamic or not n.nud_state & NUD_IN_TIMER or not n.timer_ns or now_ns < n.timer_ns:
        return NEIGH_NOTHING
    state = n.nud_state
    if state == NUD_REACHABLE:
        if now_ns - n.confirmed_ns < BASE_REACHABLE_TIME_NS:
            n.timer_ns = n.confirmed_ns + BASE_REACHABLE_TIME_NS
        else:
            n.nud_state, n.timer_ns = NUD_STALE, 0
            neigh_update_notify(n)
        return NEIGH_NOTHING
    if state == NUD_DELAY:
        if now_ns - n.confirmed_ns < DELAY_PROBE_TIME_NS:  # confirmed meanwhile
            n.nud_state, n.timer_ns = NUD_REACHABLE, n.confirmed_ns + BASE_REACHABLE_TIME_NS
            neigh_update_notify(n)
            return NEIGH_NOTHING
        n.nud_state, n.probes = NUD_PROBE, 0
        neigh_update_notify(n)
    limit = MCAST_SOLICIT if n.nud_state == NUD_INCOMPLETE else UCAST_SOLICIT
    if n.probes >= limit:
        n.nud_state, n.timer_ns = NUD_FAILED, 0
        neigh_update_notify(n)
        return NEIGH_FAIL
    n.probes += 1
    n.timer_ns += RETRANS_TIME_NS
    return NEIGH_SOLICIT


def neigh_update(n: Neighbour, lladdr: bytes | None, new: int, now_ns: int, override: bool = True) -> list:
    """neigh_update: a reply (REACHABLE) or a request / unsolicited advertisement (STALE) about n.
    Returns the queue to transmit now (the entry became valid), emptied from n. Permanent entries and
    `ip neigh add` ones are the administrator's: left alone. Without `override` (an NA without the O
    flag) a different address of a valid entry is not taken (NEIGH_UPDATE_F_WEAK_OVERRIDE). A new
    address or state is notified (neigh_update_notify)."""
    if not n.dynamic or n.nud_state & (NUD_PERMANENT | NUD_NOARP):
        return []
    if lladdr is None:
        if not n.nud_state & NUD_VALID:
            return []
        lladdr = n.ha
    if n.nud_state & NUD_VALID and lladdr != n.ha and not override:
        return []
    if new == NUD_STALE and n.nud_state & NUD_VALID and lladdr == n.ha:
        return []  # a request from a known neighbour changes nothing (neigh_update keeps the state)
    notify = lladdr != n.ha or new != n.nud_state
    if notify:
        n.updated_ns = now_ns
    n.ha, n.nud_state = lladdr, new
    if new == NUD_REACHABLE:
        n.confirmed_ns, n.timer_ns = now_ns, now_ns + BASE_REACHABLE_TIME_NS
    else:
        n.timer_ns = 0
    n.probes = 0
    queue, n.arp_queue, n.arp_queue_len_bytes = n.arp_queue, [], 0
    if notify:
        neigh_update_notify(n)
    else:
        neigh_mirror(n)  # the timer and confirmation moved
    return queue


def neigh_queue(n: Neighbour, item, nbytes: int) -> list:
    """__neigh_event_send's queueing: append item; returns the oldest items dropped to stay within
    UNRES_QLEN_BYTES (NEIGH_QUEUEFULL)."""
    dropped = []
    while n.arp_queue and n.arp_queue_len_bytes + nbytes > UNRES_QLEN_BYTES:
        old_item, old_bytes = n.arp_queue.pop(0)
        n.arp_queue_len_bytes -= old_bytes
        dropped.append(old_item)
    n.arp_queue.append((item, nbytes))
    n.arp_queue_len_bytes += nbytes
    return dropped


def neigh_flush_queue(n: Neighbour) -> list:
    """The items of a FAILED entry's queue (neigh_invalidate), emptied from n."""
    queue, n.arp_queue, n.arp_queue_len_bytes = n.arp_queue, [], 0
    return [item for item, _ in queue]


class NeighTable:
    """arp_tbl and nd_tbl in one dict keyed by (family, ifindex, address), and the netevent notifiers:
    callables (event, neighbour) told of every entry's new address or state, and of its removal
    (`dead` set). Linux: net/core/netevent.c › register_netevent_notifier, call_netevent_notifiers."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int, int], Neighbour] = {}
        self._notifiers: list[Callable[[int, Neighbour], None]] = []
        self.arrays = NeighArrays()

    def views(self) -> tuple:
        """The compiled path's view of the entries (flowpath.net.neigh_table): (index, key, nb, genid)."""
        return self.arrays.views()

    def mirror(self, n: Neighbour) -> None:
        """n (in this table) into the arrays. A timer only counts for the entries resolution made and
        in the states neigh_timer_handler acts on: the others' timer_ns is never acted upon."""
        timer = n.timer_ns if n.dynamic and n.nud_state & NUD_IN_TIMER else 0
        self.arrays.update(n.family, n.ifindex, n.primary_key, n.nud_state, n.ha, n.updated_ns,
                           n.confirmed_ns, n.used_ns, timer, NB_F_DYNAMIC if n.dynamic else 0)  # fmt: skip

    def register_netevent_notifier(self, fn: Callable[[int, Neighbour], None]) -> None:
        self._notifiers.append(fn)

    def unregister_netevent_notifier(self, fn: Callable[[int, Neighbour], None]) -> None:
        if fn in self._notifiers:
            self._notifiers.remove(fn)

    def call_netevent_notifiers(self, event: int, n: Neighbour) -> None:
        for fn in self._notifiers:
            fn(event, n)

    def _unlink(self, key: tuple[int, int, int]) -> None:
        """neigh_mark_dead + neigh_cleanup_and_release: out of the table, then the notifiers hear."""
        n = self._entries.pop(key)
        n.dead = True
        self.arrays.remove(*key)
        neigh_update_notify(n)

    def neigh_lookup(self, family: int, addr: int, ifindex: int) -> Neighbour | None:
        return self._entries.get((family, ifindex, addr))

    def neigh_create(self, family: int, addr: int, ifindex: int) -> Neighbour:
        """A new entry in NUD_NONE, to resolve (neigh_create); the existing one if there is one."""
        addr = int(addr)  # an address read off a frame may be a numpy integer (JIT off)
        key = (family, ifindex, addr)
        n = self._entries.get(key)
        if n is None:
            n = self._entries[key] = Neighbour(family, addr, ifindex, bytes(6), 0, dynamic=True, tbl=self)
            self.mirror(n)
        return n

    def add(self, n: Neighbour, replace: bool = False, create: bool = True) -> bool:
        """Add an entry; False if one exists and `replace` is off (EEXIST, as `ip neigh add`), or if
        none exists and `create` is off (ENOENT, as `ip neigh change`). The notifiers hear of it when
        it is new or its address or state differ from the entry it replaces."""
        key = (n.family, n.ifindex, n.primary_key)
        old = self._entries.get(key)
        if (old is not None and not replace) or (old is None and not create):
            return False
        self._entries[key] = n
        n.tbl, n.dead = self, False
        self.mirror(n)
        if old is not None:
            old.dead = True  # its successor's notification covers the key
            if old.ha == n.ha and old.nud_state == n.nud_state:
                return True
        neigh_update_notify(n)
        return True

    def remove(self, family: int, addr: int, ifindex: int) -> bool:
        key = (family, ifindex, addr)
        if key not in self._entries:
            return False
        self._unlink(key)
        return True

    def flush_dev(self, ifindex: int, family: int | None = None) -> None:
        """Linux: neighbour.c › neigh_ifdown, on NETDEV_DOWN: the link's entries go, permanent ones too
        (`family`: only arp_tbl or nd_tbl)."""
        for key in [k for k in self._entries if k[1] == ifindex and family in (None, k[0])]:
            self._unlink(key)

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda n: (n.family, n.ifindex, n.primary_key)))

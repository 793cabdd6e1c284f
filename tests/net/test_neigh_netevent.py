"""The neighbour table's netevent notifiers: every new address or state, and every removal, is told
to the listeners (whoever caches a neighbour's address: the flowtable); nothing else is.

Linux: net/core/neighbour.c › __neigh_update (notify when the state or the address changes),
neigh_timer_handler (notify on each change of state, FAILED included), neigh_update_notify,
neigh_del / neigh_ifdown (the entry marked dead, then notified); net/core/netevent.c.
"""

from __future__ import annotations

import pytest

from flowpath.config.ipbatch import parse_network, read_commands, run_command
from flowpath.net.neighbour import (
    BASE_REACHABLE_TIME_NS,
    DELAY_PROBE_TIME_NS,
    NETEVENT_NEIGH_UPDATE,
    NUD_DELAY,
    NUD_FAILED,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    NUD_STALE,
    NeighTable,
    neigh_event_send,
    neigh_timer_handler,
    neigh_update,
)

A, B = b"\x02\0\0\0\0\x0a", b"\x02\0\0\0\0\x0b"
SEC = 10**9


@pytest.fixture
def tbl():
    t = NeighTable()
    t.events = []
    t.register_netevent_notifier(lambda ev, n: t.events.append((ev, n.nud_state, n.ha, n.dead)))
    return t


def test_neigh_update_notifies_a_new_address_or_state_only(tbl):
    n = tbl.neigh_create(4, 0xC0000201, 1)
    assert tbl.events == []  # NUD_NONE: nothing cached from it yet
    neigh_event_send(n, 0)  # INCOMPLETE: no notification (__neigh_event_send)
    neigh_update(n, A, NUD_REACHABLE, 1)
    neigh_update(n, A, NUD_STALE, 2)  # a request from a known neighbour: no change
    neigh_update(n, B, NUD_STALE, 3, override=False)  # weak override: refused
    neigh_update(n, B, NUD_STALE, 4)
    neigh_update(n, B, NUD_REACHABLE, 5)
    assert tbl.events == [(NETEVENT_NEIGH_UPDATE, NUD_REACHABLE, A, False), (NETEVENT_NEIGH_UPDATE, NUD_STALE, B, False),
                          (NETEVENT_NEIGH_UPDATE, NUD_REACHABLE, B, False)]  # fmt: skip


def test_timer_transitions_are_notified_failure_included(tbl):
    n = tbl.neigh_create(4, 0xC0000201, 1)
    neigh_update(n, A, NUD_REACHABLE, 0)
    tbl.events.clear()
    neigh_timer_handler(n, BASE_REACHABLE_TIME_NS)  # REACHABLE -> STALE
    neigh_event_send(n, 31 * SEC)  # STALE -> DELAY: not notified, as Linux
    t = 31 * SEC + DELAY_PROBE_TIME_NS
    while neigh_timer_handler(n, t):  # DELAY -> PROBE, three probes, FAILED
        t += SEC
    assert [s for _, s, _, _ in tbl.events] == [NUD_STALE, NUD_PROBE, NUD_FAILED]
    assert n.nud_state == NUD_FAILED and NUD_DELAY not in [s for _, s, _, _ in tbl.events]


def test_removal_and_link_flush_mark_the_entry_dead_and_notify(tbl):
    for addr in (1, 2):
        tbl.neigh_create(4, addr, 1)
    tbl.neigh_create(4, 3, 2)
    assert tbl.remove(4, 1, 1) and not tbl.remove(4, 1, 1)
    tbl.flush_dev(1)
    assert [dead for *_, dead in tbl.events] == [True, True]
    assert [n.primary_key for n in tbl] == [3]


def test_configured_entries_notify_when_added_or_changed():
    net = parse_network("link add eth0 type dummy\nlink set eth0 up\naddr add 192.0.2.1/24 dev eth0\n")
    events = []
    net.neigh.register_netevent_notifier(lambda ev, n: events.append((n.ha, n.nud_state, n.dead)))

    def ip(line):
        for tokens in read_commands(line + "\n"):
            run_command(net, "<runtime>", tokens)

    ip("neigh add 192.0.2.9 lladdr 02:00:00:00:00:0a dev eth0")
    ip("neigh replace 192.0.2.9 lladdr 02:00:00:00:00:0a dev eth0")  # the same: not notified
    ip("neigh change 192.0.2.9 lladdr 02:00:00:00:00:0b dev eth0")
    ip("neigh replace 192.0.2.9 lladdr 02:00:00:00:00:0b dev eth0 nud stale")
    ip("neigh del 192.0.2.9 dev eth0")
    assert events == [(A, NUD_PERMANENT, False), (B, NUD_PERMANENT, False), (B, NUD_STALE, False),
                      (B, NUD_STALE, True)]  # fmt: skip

"""The neighbour arrays mirror the NeighTable after every change, and the compiled lookup finds them.

Linux: net/core/neighbour.c › neigh_lookup, neigh_update, __neigh_event_send, neigh_timer_handler,
neigh_add / neigh_delete / neigh_ifdown (the changes), include/net/neighbour.h › neigh_event_send (the
states a transmit uses at once: NUD_CONNECTED, DELAY, PROBE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ARP, IP, UDP, Ether

from flowpath.config.ipbatch import parse_network, read_commands, run_command
from flowpath.config.nft import parse_ruleset
from flowpath.errors import ConfigError
from flowpath.inet.dev import netif_receive_skb
from flowpath.inet.neigh_output import neigh_timers
from flowpath.inet.output_queue import OutputQueue
from flowpath.net import neigh_table as T
from flowpath.net.neighbour import (
    NUD_DELAY,
    NUD_FAILED,
    NUD_IN_TIMER,
    NUD_INCOMPLETE,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    NUD_STALE,
)
from flowpath.netns import Net
from flowpath.packet.reason import Reason
from flowpath.packet.skb import frame_array

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEC = 10**9
T0 = 1_700_000_000 * SEC


def _words(family, addr):
    return (addr, 0, 0, 0) if family == 4 else tuple((addr >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0))


def assert_mirror(tbl, gone=()):
    """Every entry has a row equal to it, found by the compiled lookup; nothing else has one."""
    nv = tbl.views()
    index, key, nb, _ = nv
    entries = list(tbl)
    assert int(np.count_nonzero(index > 0)) == len(entries) == len(tbl.arrays.rows)
    for n in entries:
        r = T.neigh_lookup(nv, n.family, n.ifindex, *_words(n.family, n.primary_key))
        assert r >= 0, n
        timer = n.timer_ns if n.dynamic and n.nud_state & NUD_IN_TIMER else 0
        assert (nb[r, T.NB_STATE], nb[r, T.NB_LLADDR], nb[r, T.NB_CONFIRMED], nb[r, T.NB_UPDATED]) == (
            n.nud_state, int.from_bytes(n.ha, "big"), n.confirmed_ns, n.updated_ns)  # fmt: skip
        assert nb[r, T.NB_TIMER] == timer and nb[r, T.NB_USED] >= n.used_ns
        assert nb[r, T.NB_FLAGS] == (T.NB_F_DYNAMIC if n.dynamic else 0)
    for family, ifindex, addr in gone:
        assert T.neigh_lookup(nv, family, ifindex, *_words(family, addr)) == -1


# ---- the configured entries: ip neigh add / replace / change / del, flushes ----
NET = "link add eth0 type dummy\nlink set eth0 up\nlink add eth1 type dummy\nlink set eth1 up\n"
ADDRS = {4: ["192.0.2.%d" % i for i in range(1, 30)], 6: ["2001:db8::%x" % i for i in range(1, 30)]}
STATES = ["", " nud stale", " nud reachable", " nud noarp", " nud permanent", " nud delay", " nud probe"]


@st.composite
def _neigh_cmd(draw):
    family = draw(st.sampled_from([4, 6]))
    addr = draw(st.sampled_from(ADDRS[family]))
    dev = draw(st.sampled_from(["eth0", "eth1"]))
    verb = draw(st.sampled_from(["add", "replace", "change", "del", "flush-link", "addr-del"]))
    if verb == "flush-link":  # the link goes down and up again: neigh_ifdown
        return [f"link set {dev} down", f"link set {dev} up"]
    if verb == "addr-del":  # the link's last IPv4 address goes: its ARP entries go (fib_disable_ip)
        return [f"addr add 198.51.100.1/24 dev {dev}", f"addr del 198.51.100.1/24 dev {dev}"]
    if verb == "del":
        return [f"neigh del {addr} dev {dev}"]
    mac = "02:00:00:00:%02x:%02x" % (draw(st.integers(0, 255)), draw(st.integers(0, 255)))
    return [f"neigh {verb} {addr} lladdr {mac} dev {dev}{draw(st.sampled_from(STATES))}"]


@settings(max_examples=60, deadline=None)
@given(st.lists(_neigh_cmd(), min_size=1, max_size=60))
def test_configured_entries_mirrored_after_every_command(cmds):
    """neigh_add (EEXIST / ENOENT refused), replace, neigh_delete, neigh_ifdown: the arrays follow, the
    table growing past its first 16 rows and reusing freed ones."""
    net = parse_network(NET)
    for lines in cmds:
        for line in lines:
            try:
                for tokens in read_commands(line + "\n"):
                    run_command(net, "<runtime>", tokens)
            except ConfigError:
                pass  # refused (File exists, No such file): nothing changed
            assert_mirror(net.neigh)


def test_many_entries_grow_and_removed_ones_are_not_found():
    net = parse_network(NET)
    gone = []
    for i in range(200):
        for tokens in read_commands(
            f"neigh add 10.0.{i // 256}.{i % 256} lladdr 02:00:00:00:00:01 dev eth0\n"
        ):
            run_command(net, "<runtime>", tokens)
    for i in range(0, 200, 3):
        net.neigh_del(4, 0x0A000000 | i, net.link_by_name("eth0").ifindex)
        gone.append((4, net.link_by_name("eth0").ifindex, 0x0A000000 | i))
    assert_mirror(net.neigh, gone)
    assert net.neigh.views()[3] > 0  # grown: new arrays, a new generation


# ---- the entries resolution makes, through the classic path ----
GW_LAN, GW_WAN, H10, UPSTREAM = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:01:0a",
    "02:00:00:00:02:fe",
)
LAN0, WAN0 = 2, 3
ACCEPT = "table inet filter {\n chain forward {\n  type filter hook forward priority filter; policy accept;\n }\n}\n"
NEXTHOP = 0xCB0071FE  # 203.0.113.254


@pytest.fixture
def net():
    text = (
        (EXAMPLES / "gateway.ip")
        .read_text()
        .replace("neigh add 203.0.113.254 lladdr 02:00:00:00:02:fe dev wan0\n", "")
    )
    return Net(parse_network(text, "gateway.ip"), parse_ruleset(ACCEPT, "accept.nft"))


def rx(net, pkt, iif=LAN0, ts_ns=T0):
    q = OutputQueue()
    reason = netif_receive_skb(net, q, frame_array(bytes(pkt)), iif, ts_ns)
    assert_mirror(net.neigh)
    return reason


def udp():
    return Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=1, dport=53)


def arp_reply(dst=GW_WAN):
    return Ether(src=UPSTREAM, dst=dst) / ARP(op=2, hwsrc=UPSTREAM, psrc="203.0.113.254", hwdst=GW_WAN,
                                              pdst="203.0.113.1")  # fmt: skip


def _row(net):
    nv = net.neigh_views()
    return nv[2], T.neigh_lookup(nv, 4, WAN0, NEXTHOP, 0, 0, 0)


def test_arp_learning_mirrored_and_the_compiled_rule(net):
    """INCOMPLETE (queued: punt) -> REACHABLE by the reply (usable until its timer) -> STALE (punt:
    __neigh_event_send must arm DELAY) -> DELAY by a packet (usable) -> PROBE -> REACHABLE."""
    assert rx(net, udp()) == Reason.NEIGH_QUEUED
    nb, r = _row(net)
    assert nb[r, T.NB_STATE] == NUD_INCOMPLETE and not T.neigh_output_ok(nb, r, T0)
    rx(net, arp_reply(), WAN0, T0 + SEC // 2)
    nb, r = _row(net)
    assert nb[r, T.NB_STATE] == NUD_REACHABLE and nb[r, T.NB_LLADDR] == 0x0200000002FE
    assert T.neigh_output_ok(nb, r, T0 + 10 * SEC) and nb[r, T.NB_USED] == T0 + 10 * SEC
    rx(net, arp_reply(), WAN0, T0 + 5 * SEC)  # confirmed again: no notification, the row follows
    assert nb[r, T.NB_CONFIRMED] == T0 + 5 * SEC and T.neigh_output_ok(nb, r, T0 + 31 * SEC)
    assert not T.neigh_output_ok(nb, r, T0 + 36 * SEC)  # the timer is due: Python ages it first
    neigh_timers(net, OutputQueue(), T0 + 36 * SEC)
    assert_mirror(net.neigh)
    assert nb[r, T.NB_STATE] == NUD_STALE and not T.neigh_output_ok(nb, r, T0 + 37 * SEC)
    assert rx(net, udp(), ts_ns=T0 + 37 * SEC) == Reason.TX
    assert nb[r, T.NB_STATE] == NUD_DELAY and T.neigh_output_ok(nb, r, T0 + 38 * SEC)
    assert nb[r, T.NB_UPDATED] == T0 + 37 * SEC
    assert not T.neigh_output_ok(nb, r, T0 + 42 * SEC)  # delay_first_probe_time passed
    neigh_timers(net, OutputQueue(), T0 + 42 * SEC)
    assert_mirror(net.neigh)
    assert nb[r, T.NB_STATE] == NUD_PROBE and T.neigh_output_ok(nb, r, T0 + 42 * SEC + 1)
    rx(net, arp_reply(), WAN0, T0 + 43 * SEC)
    assert nb[r, T.NB_STATE] == NUD_REACHABLE and nb[r, T.NB_CONFIRMED] == T0 + 43 * SEC


def test_failed_resolution_mirrored_then_the_link_flush_removes_it(net):
    rx(net, udp())
    for t in (1, 2, 3):
        neigh_timers(net, OutputQueue(), T0 + t * SEC)
        assert_mirror(net.neigh)
    nb, r = _row(net)
    assert nb[r, T.NB_STATE] == NUD_FAILED and not T.neigh_output_ok(nb, r, T0 + 4 * SEC)
    net.dev.link_set(net.link_by_name("wan0"), up=False)
    assert_mirror(net.neigh, [(4, WAN0, NEXTHOP)])


@pytest.mark.parametrize("state", [NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_FAILED,
                                   NUD_NOARP, NUD_PERMANENT, 0])  # fmt: skip
def test_output_ok_states(state):
    """neigh_event_send's fast test: NUD_CONNECTED | NUD_DELAY | NUD_PROBE, and no timer due."""
    nb = np.zeros((1, T.NB_COLS), np.int64)
    nb[0, T.NB_STATE] = state
    fast = bool(state & (NUD_REACHABLE | NUD_PERMANENT | NUD_NOARP | NUD_DELAY | NUD_PROBE))
    assert T.neigh_output_ok(nb, 0, 5) == fast
    nb[0, T.NB_TIMER] = 5
    assert not T.neigh_output_ok(nb, 0, 5) and T.neigh_output_ok(nb, 0, 4) == fast

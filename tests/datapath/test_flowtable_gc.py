"""The flowtable's GC gives offloaded connections back to conntrack (flow_offload_fixup_ct, compiled
over the rows with the deletions: flowpath/netfilter/nf_flow_table_ct.py), and keeps the entries of
live flows from expiring (nf_flow_table_extend_ct_timeout).

Linux: nf_flow_table_core.c › nf_flow_offload_gc_step (expired or torn down: flow_offload_del, whose
flow_offload_fixup_ct clears IPS_OFFLOAD, restarts TCP window tracking, moves a closing connection to
CLOSE, and sets the state's timeout less the offload timeout already spent when the flow expired).
The connections are the cps bench's: a real handshake through the NAT gateway, peers answering what
the gateway emitted, so the flows are offloaded by the compiled classic lane (classic_lane_offload.py)."""

from __future__ import annotations

import pytest

from flowpath.bench.cps import CLIENT_SIDE, PHASES, Conn, Gateway
from flowpath.bench.peers import parse
from flowpath.bench.setup import LAN_IF, NET, RULES, WAN_IF
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack_proto_tcp import TCP_TIMEOUTS_NS, TcpConntrack
from flowpath.netfilter.conntrack_proto_tcp_window import IP_CT_TCP_FLAG_CLOSE_INIT, IP_CT_TCP_FLAG_MAXACK_SET
from flowpath.packet.reason import LANE_PUNT_NAMES

SEC = 10**9


def _exchange(g: Gateway, conns: list[Conn], phases, t_ns: int) -> None:
    """The given phases of the bench's exchange, every connection's packet of a phase in one poll at
    t_ns, each emitted frame handed to the peer it is for."""
    by_port = {c.client.port: c for c in conns}
    for _, side, flags, payload in phases:
        sender = [(c.client if side == CLIENT_SIDE else c.server) for c in conns]
        g.batch.clear()
        for s in sender:
            g.batch.append(s.segment(flags, payload), LAN_IF if side == CLIENT_SIDE else WAN_IF, t_ns)
        out = g.worker.poll(g.batch).frames()
        assert len(out) == len(conns)
        for _, f, _ in out:
            seg = parse(f)
            c = by_port[seg.sport if side == CLIENT_SIDE else seg.dport]  # masquerade keeps the ports here
            (c.server if side == CLIENT_SIDE else c.client).receive(seg)


def _entries(g: Gateway) -> list:
    return sorted(g.worker.conntrack, key=lambda ct: ct.tuplehash[0].sport)


@pytest.mark.parametrize("closing", [False, True])
def test_gc_hands_expired_flows_back_to_conntrack(closing):
    g = Gateway(True, 16)
    conns = [Conn(k) for k in range(4)]
    t0 = g.worker.now_ns + SEC
    _exchange(g, conns, PHASES[:5] if not closing else PHASES[:6], t0)  # the client's FIN: CLOSING
    ft = g.worker.flowtables["ft"][0]
    assert len(ft) == 4 and g.worker.stats.flows_offloaded == 4
    assert not g.worker.stats.lane_punts[LANE_PUNT_NAMES.index("offload")]  # the lane offloaded them
    for ct in _entries(g):
        assert ct.status & C.IPS_OFFLOAD and ct.proto.state == TcpConntrack.ESTABLISHED
        assert ct.timeout_ns == t0 + 86400 * SEC  # pinned for a day at the add
    idle = ft.timeout_tcp_ns + 2 * SEC
    now = t0 + idle
    g.worker.timers(now)
    assert len(ft) == 0 and g.worker.stats.flows_expired == 4
    left = _entries(g)
    if closing:  # CLOSE, whose 10 s are less than the 30 s offloaded: the entry is due at once
        assert max(TCP_TIMEOUTS_NS[TcpConntrack.CLOSE] - ft.timeout_tcp_ns, 0) == 0
        assert all(ct.proto.state == TcpConntrack.CLOSE for ct in left)
        assert all(ct.proto.seen[0].flags & IP_CT_TCP_FLAG_CLOSE_INIT for ct in left)
        assert all(ct.timeout_ns == now for ct in left)
        g.worker.timers(now + SEC)
        assert _entries(g) == []
        return
    assert len(left) == 4
    for ct in left:
        assert not ct.status & C.IPS_OFFLOAD and ct.proto.state == TcpConntrack.ESTABLISHED
        # the state's 5 days less the 30 s offloaded are further than the pinned day: only shortens
        assert ct.timeout_ns == min(t0 + 86400 * SEC, now + TCP_TIMEOUTS_NS[TcpConntrack.ESTABLISHED] - idle)
        assert ct.timeout_ns == t0 + 86400 * SEC
        for seen in ct.proto.seen:  # window tracking starts over
            assert seen.td_maxwin == 0 and not seen.flags & IP_CT_TCP_FLAG_MAXACK_SET


def test_gc_keeps_live_flows_entries_alive():
    """An offloaded entry's day runs out while its flow still carries packets: each GC run with less
    than 5 minutes left gives it another day (nf_flow_table_extend_ct_timeout)."""
    g = Gateway(True, 16)
    # flows that stay offloaded for more than a day without a packet: a flowtable timeout of 2 days
    g.worker = Worker(parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>"),
                      sysctl={"net.netfilter.nf_flowtable_tcp_timeout": 2 * 86400})  # fmt: skip
    conns = [Conn(k) for k in range(2)]
    t0 = g.worker.now_ns + SEC
    _exchange(g, conns, PHASES[:4], t0)
    ft = g.worker.flowtables["ft"][0]
    assert len(ft) == 2 and g.worker.stats.flows_offloaded == 2
    g.worker.timers(t0 + 86400 * SEC - 6 * 60 * SEC)  # 6 minutes left: not yet
    assert all(ct.timeout_ns == t0 + 86400 * SEC for ct in _entries(g))
    late = t0 + 86400 * SEC - 4 * 60 * SEC  # 4 minutes left: another day
    g.worker.timers(late)
    assert len(ft) == 2 and g.worker.stats.flows_offloaded == 2
    for ct in _entries(g):
        assert ct.status & C.IPS_OFFLOAD and ct.timeout_ns == late + 86400 * SEC

"""The control plane over several workers (flowpath/workers.py): `nft -f`, a reload and `ip xfrm`
reach every worker's flowtables at once, with the workers stopped, and the counters are summed."""

from __future__ import annotations

from flowpath.bench import ipsec as B
from flowpath.bench.scaling import _relay, steer_frames
from flowpath.bench.setup import LAN_IF, NET, RULES, flow_frames
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.workers import Workers

FLOWS = 32
DROP_ALL = """\
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
}
"""


def _forwarding_gateway():
    ws = Workers(parse_network(NET, "<net>"), parse_ruleset(RULES, "<rules>"), n=2)
    up, down = flow_frames(FLOWS, 124)
    wan = ws.net.link_by_name("wan0").ifindex
    for frames, iif in ((up, LAN_IF), (down, wan), (up, LAN_IF)):
        _relay(ws, frames, iif)
    return ws, up, wan


def _entries(ws) -> list[int]:
    return [sum(len(ft) for ft, _ in w.flowtables.values()) for w in ws.workers]


def test_flows_are_offloaded_on_the_worker_they_steer_to():
    ws, up, _ = _forwarding_gateway()
    owner = steer_frames(up, 2)
    assert _entries(ws) == [owner.count(0), owner.count(1)] and min(_entries(ws)) > 0
    out = _relay(ws, up, LAN_IF)
    assert len(out) == FLOWS
    s = ws.stats
    assert s.fastpath_packets >= FLOWS and s.flows_offloaded == FLOWS
    assert s.rx_packets == sum(w.stats.rx_packets for w in ws.workers) == 4 * FLOWS
    ws.close()


def test_nft_replace_reaches_every_worker():
    ws, up, _ = _forwarding_gateway()
    ws.nft_replace(parse_ruleset(DROP_ALL, "<drop>"))
    assert _entries(ws) == [0, 0]
    assert _relay(ws, up, LAN_IF) == []  # dropped by the new forward chain on both workers
    assert ws.stats.as_dict(ws.ifname)["drops"]["netfilter_drop"] == FLOWS
    ws.close()


def test_reload_reaches_every_worker_and_keeps_conntrack():
    ws, up, wan = _forwarding_gateway()
    ct = ws.conntrack
    n = len(ct)
    ws.reload(parse_network(NET, "<net>"), parse_ruleset(RULES, "<rules>"))
    assert _entries(ws) == [0, 0] and ws.conntrack is ct and len(ct) == n
    assert all(w.net.conntrack is ct for w in ws.workers) and ws.workers[1].net.cpu == 1
    assert len([f for ifx, f in _relay(ws, up, LAN_IF) if ifx == wan]) == FLOWS  # classic path, re-offloaded
    assert sum(_entries(ws)) == FLOWS
    ws.close()


def test_xfrm_delete_tears_down_flows_on_every_worker():
    west = Workers(parse_network(B.gateway_net("west"), "<west>"), parse_ruleset(B.RULES, "<w.nft>"), n=2)
    east = Worker(parse_network(B.gateway_net("east"), "<east>"), parse_ruleset(B.RULES, "<e.nft>"))
    lan, wan = (west.net.link_by_name(n).ifindex for n in ("lan0", "wan0"))
    up, down = B.inner_frames(FLOWS, 128)
    for frames, first, second in ((up, west, east), (down, east, west), (up, west, east)):
        _relay(second, [f for ifx, f in _relay(first, frames, lan) if ifx == wan], wan)
    assert sum(_entries(west)) == FLOWS and min(_entries(west)) > 0
    from flowpath.xfrm.state import xfrm_state_delete, xfrm_state_lookup

    x = xfrm_state_lookup(west.xfrm, B.SIDES["east"][3], B.SPI_WE)
    west.xfrm_modify(lambda xfrm: xfrm_state_delete(xfrm, x))
    fast = west.stats.fastpath_packets
    assert _relay(west, up, lan) == []  # no flow of either worker still encrypts with the dead SA
    assert west.stats.fastpath_packets == fast
    assert west.stats.as_dict(west.ifname)["drops"]["xfrm_no_state"] == FLOWS
    west.close()

"""`net.netfilter.nf_conntrack_max`: conntrack's limit, set per namespace as Linux's sysctl is; past it a
new connection takes an unassured entry's place (early_drop) or, when none can go, is dropped."""

from __future__ import annotations

import pytest

from flowpath.bench.peers import udp_frame
from flowpath.bench.setup import CLIENT, CLIENT_MAC, GW_LAN, LAN_IF, NET, RULES, SERVER
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.errors import UsageError
from flowpath.netfilter.constants import IPS_ASSURED
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import Reason


def _worker(**sysctl) -> Worker:
    return Worker(parse_network(NET, "<t>"), parse_ruleset(RULES, "<t>"), sysctl=sysctl or None)


def _flows(w: Worker, n: int) -> list:
    b = PacketBatch(n)
    for k in range(n):
        b.append(udp_frame(CLIENT_MAC, GW_LAN, CLIENT, SERVER, 2000 + k, 53, b"q"), LAN_IF, 1_000_000_000)
    return w.rx_batch(b)


def test_default_limit_is_262144():
    assert _worker().conntrack.max_entries == 262144


def test_one_way_flows_past_the_limit_evict_unassured_entries():
    """Linux: nf_conntrack_core.c › __nf_conntrack_alloc calls early_drop once nf_conntrack_max is reached."""
    w = _worker(**{"net.netfilter.nf_conntrack_max": 4})
    assert len(_flows(w, 6)) == 6  # every packet forwarded
    assert len(w.conntrack) == 4 and w.conntrack.stat["early_drop"] == 2
    assert w.stats.reasons[Reason.CT_TABLE_FULL] == 0


def test_a_full_table_of_assured_entries_drops_the_new_flow():
    """early_drop finds nothing to evict (the entry is assured, a UDP stream both ways): NF_DROP."""
    w = _worker(**{"net.netfilter.nf_conntrack_max": 1})
    _flows(w, 1)
    next(iter(w.conntrack)).status |= IPS_ASSURED
    assert len(_flows(w, 2)) == 1  # port 2000's entry is found; port 2001's cannot be made
    assert w.stats.reasons[Reason.CT_TABLE_FULL] == 1 and len(w.conntrack) == 1


def test_unknown_sysctl_is_a_usage_error():
    with pytest.raises(UsageError, match="nf_conntrack_max"):
        _worker(**{"net.netfilter.nf_conntrack_maxx": 1})


def _flood(w: Worker, frames: list[bytes], lo: int, hi: int, batch: int, now_ns: int) -> list:
    """Flood packets lo..hi-1 (ct_pressure's one-way new flows) through w in polls of `batch`, each
    poll's output checked as that bench checks it (masqueraded, TTL - 1, checksums, nothing lost);
    the frames out, in order."""
    from flowpath.bench.ct_pressure import check_output

    out = []
    b = PacketBatch(batch)
    for s in range(lo, hi, batch):
        b.clear()
        for f in frames[s : min(s + batch, hi)]:
            b.append(f, LAN_IF, now_ns)
        got = w.poll(b).frames()
        check_output(got, s, b.n, frames)
        out += [f for _, f, _ in got]
    return out


def _lane_worker(limit: int, lane: bool = True) -> Worker:
    return Worker(parse_network(NET, "<t>"), parse_ruleset(RULES, "<t>"),
                  sysctl={"net.netfilter.nf_conntrack_max": limit}, classic_lane=lane)  # fmt: skip


def test_a_probe_run_found_full_grows_the_index_and_the_lane_goes_on(monkeypatch):
    """Confirming a new entry whose tuple finds no index slot within its probe run (CT_MAX_PROBES, 2
    here so that it happens often): the lane stops at that packet, Python rebuilds the index twice
    as large (as hash_insert does) and the lane goes on with that packet. Nothing is left to the
    Python path (before, each such packet was, and so were the new connections after it in its
    batch, each entry of theirs then held by a Python view)."""
    from flowpath.bench.ct_pressure import flood_frames
    from flowpath.netfilter import nf_conntrack_table as T

    monkeypatch.setattr(T, "CT_MAX_PROBES", 2)
    monkeypatch.setattr(T.secrets, "randbits", lambda n: 0x5EED)
    frames = flood_frames(2048, 64)
    w = _lane_worker(4096)
    _flood(w, frames, 0, 2048, 64, 1_000_000_000)
    ct = w.conntrack
    assert len(ct) == 2048 and w.stats.lane_packets == 2048
    assert not w.stats.lane_punts.any(), w.stats.lane_punts
    assert ct.index.shape[0] > T.nf_ct_index_size(len(ct), 8)  # grown past what room alone asks
    assert all(ct.find(ct.key[2 * r], 1_000_000_000) == 2 * r for r in ct.confirmed_rows().tolist())


def test_evicting_entries_python_views_hold_keeps_the_lane_going(monkeypatch):
    """A full table whose entries all have Python views (iterating the table made them): early_drop's
    victims are rows the lane may not free under a view, so it leaves them to Python and no row
    is free for the new entry. The lane stops at that packet, Python frees the rows (each view
    keeps a copy) and the lane goes on with it. Before, each such packet was punted, with every new
    connection after it in its batch, whose entries Python's views then held in turn: at the limit
    the lane never got the traffic back. The same entries, frames and drops as the Python path
    (with one hash seed: early_drop's victims follow the index's layout)."""
    from flowpath.bench.ct_pressure import flood_frames
    from flowpath.netfilter import nf_conntrack_table as T

    monkeypatch.setattr(T.secrets, "randbits", lambda n: 0x5EED)

    limit = 2 * T.CT_INITIAL_ROWS  # the table grows to exactly the limit's rows: none spare there
    frames = flood_frames(2 * limit, 64)
    runs = []
    for lane in (True, False):
        w = _lane_worker(limit, lane)
        out = _flood(w, frames, 0, limit, 64, 1_000_000_000)
        ct = w.conntrack
        list(ct)  # a view of every entry, kept while the entry lives
        assert ct.viewed.sum() == limit and ct.capacity == limit
        out += _flood(w, frames, limit, 2 * limit, 64, 2_000_000_000)
        assert len(ct) == limit and ct.stat["early_drop"] == limit
        runs.append((out, ct.listing(2_000_000_000), w.stats.lane_packets, w.stats.lane_punts.sum()))
    (lane_out, lane_list, carried, punted), (py_out, py_list, _, _) = runs
    assert carried == 2 * limit and punted == 0
    assert lane_out == py_out and lane_list == py_list


def test_a_listing_leaves_no_view_behind():
    """`conntrack -L` (Conntrack.listing, and ctl's) formats each entry without keeping a view of it,
    so it marks no row for the lane to leave to Python; a view Python holds is the one listed."""
    w = _lane_worker(64)
    _flows(w, 8)
    ct = w.conntrack
    held = ct.nf_ct_get(int(ct.confirmed_rows()[0]))  # one view kept, as the Python path keeps skb.nfct's
    text = ct.listing(w.now_ns)
    assert text.count("\n") == 8 and "sport=2000 dport=53" in text
    assert ct.viewed.sum() == 1 and ct.peek()[0] is held

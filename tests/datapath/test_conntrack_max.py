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

"""Set elements declared with a timeout expire in packet time, counted from when they were added.

Linux: nf_tables_api.c › nft_add_set_elem (an element's timeout: its own, else the set's, NFTA_SET_TIMEOUT;
its expiration = the time it was added + timeout) and nft_set_elem_expired (a lookup at or after it misses).
flowpath's packet clock starts with the first packet: a ruleset loaded before any starts its elements'
clocks there, one loaded by a running Worker (`nft -f` through ctl) at the Worker's clock.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.all import IP, TCP, Ether, raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import runtime  # noqa: E402

from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.datapath import Worker  # noqa: E402
from flowpath.errors import ConfigError  # noqa: E402
from flowpath.packet.batch import PacketBatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NET = (ROOT / "examples" / "gateway.ip").read_text()
SEC = 10**9
RULES = """table inet t {
	set own { type ipv4_addr; flags timeout; elements = { 198.18.0.5 timeout 30s } }
	set dflt { type ipv4_addr; timeout 1m; elements = { 198.18.0.6 } }
	chain pre {
		type filter hook prerouting priority 0; policy accept;
		ip saddr @own counter
		ip saddr @dflt counter
	}
}
"""


def _from_wan(src: str) -> Ether:
    return Ether(src="02:00:00:00:02:fe", dst="02:00:00:00:02:01") / IP(src=src, dst="203.0.113.1") / TCP(dport=22)


def _matches(w: Worker, now_ns: int) -> list[int]:
    """Send one packet from each element's address at now_ns; how many times each rule counted so far."""
    b = PacketBatch(2)
    wan0 = w.net.dev.link_by_name("wan0").ifindex
    for src in ("198.18.0.5", "198.18.0.6"):
        b.append(raw(_from_wan(src)), wan0, now_ns)
    w.poll(b)
    return [c.packets for c in w.net.nft.rule_counters()]


def test_declared_timeouts_start_with_the_first_packet():
    """Loaded before any packet: the first one (t0) starts both clocks; 198.18.0.5 matches until t0 + 30s,
    198.18.0.6 (the set's 1m) until t0 + 60s."""
    w = Worker(parse_network(NET, "<net>"), parse_ruleset(RULES), flowtable=False)
    t0 = 1000 * SEC
    assert _matches(w, t0) == [1, 1]
    assert _matches(w, t0 + 29 * SEC) == [2, 2]
    assert _matches(w, t0 + 30 * SEC) == [2, 3]  # nft_set_elem_expired: now >= expiration
    assert _matches(w, t0 + 59 * SEC) == [2, 4]
    assert _matches(w, t0 + 61 * SEC) == [2, 4]


def test_declared_timeouts_of_a_ruleset_loaded_while_running_start_at_the_workers_clock():
    w = Worker(parse_network(NET, "<net>"), parse_ruleset("table inet t { }"), flowtable=False)
    _matches(w, 500 * SEC)  # the Worker's clock: 500 s
    w.nft_replace(parse_ruleset(RULES))
    assert _matches(w, 520 * SEC) == [1, 1]
    assert _matches(w, 531 * SEC) == [1, 2]  # 500 + 30 s: gone, though its first lookup was at 520 s


def test_timeout_in_an_interval_set_is_refused_at_load():
    """lookup() expires the exact key it is asked for: a timed interval would never expire."""
    s = {"set": {"family": "inet", "table": "t", "name": "s", "type": "ipv4_addr", "flags": ["interval", "timeout"],
                 "elem": [{"elem": {"val": {"prefix": {"addr": "10.0.0.0", "len": 8}}, "timeout": 30}}]}}  # fmt: skip
    with pytest.raises(ConfigError, match="timeout in an interval set"):
        runtime([{"table": {"family": "inet", "name": "t"}}, s])


def test_declared_timeout_in_a_set_the_packet_path_updates():
    """A set a rule updates keeps its elements in the VM's table (nft_set_hash_store.py): its declared
    element's timeout is set there when the clock starts, and the lookup misses from t0 + 30s on."""
    rules = """table inet t {
	set own { type ipv4_addr; flags timeout; elements = { 198.18.0.5 timeout 30s } }
	chain pre {
		type filter hook prerouting priority 0; policy accept;
		ip saddr 198.18.0.99 update @own { ip saddr timeout 5s }
		ip saddr @own counter
	}
}
"""
    w = Worker(parse_network(NET, "<net>"), parse_ruleset(rules), flowtable=False)
    own = next(s for ctx in w.net.nft.tables.values() for n, s in ctx.sets.items() if n == "own")
    assert own.table is not None  # its elements live in the table the packet path updates
    t0 = 1000 * SEC
    assert _matches(w, t0) == [1]
    assert _matches(w, t0 + 29 * SEC) == [2]
    assert _matches(w, t0 + 30 * SEC) == [2]
    assert _matches(w, t0 + 31 * SEC) == [2]

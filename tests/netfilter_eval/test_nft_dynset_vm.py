"""Sets the rules update, meters and limits in the compiled VM and the classic lane, against Linux.

Linux: net/netfilter/nft_dynset.c › nft_dynset_eval / nft_dynset_new (an element per key, its own limit
and counter, the set's size, the element's timeout), nft_set_hash.c › nft_rhash_update, nft_limit.c ›
nft_limit_eval; flowpath: nft_set_hash.py (the arrays both evaluators use), nft_limit.py.
The lane tests run packets through a Worker and check the lane finished them (no punt to the Python
path: Stats.lane_punts, NftVm.fallback), the verdicts, and the sets' elements as Linux would leave them.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, Ether, raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, have_root_nft  # noqa: E402
from test_nft_kernel_diff import assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401

from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.datapath import Worker  # noqa: E402
from flowpath.netfilter.nft_set_hash import DS_CAP  # noqa: E402
from flowpath.packet.batch import PacketBatch  # noqa: E402
from flowpath.packet.reason import PUNT_NFT  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NET = (ROOT / "examples" / "gateway.ip").read_text()
GW_LAN = "02:00:00:00:01:01"
SEC = 10**9

METER = """table inet lt {
	set seen {
		type ipv4_addr
		flags dynamic,timeout
		timeout 1m
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		meter perhost { ip saddr limit rate over 10/second } counter drop
		update @seen { ip saddr counter } counter accept
	}
}
"""


def _worker(rules: str) -> Worker:
    return Worker(parse_network(NET, "<net>"), parse_ruleset(rules), flowtable=False)


def _from_lan(host: int, sport: int) -> bytes:
    src_mac = f"02:00:00:00:01:{host:02x}"
    return raw(Ether(src=src_mac, dst=GW_LAN) / IP(src=f"192.168.1.{host}", dst="198.18.0.9") /
               UDP(sport=sport, dport=53) / (b"q" * 20))  # fmt: skip


def _poll(w: Worker, frames: list[bytes], now_ns: int) -> int:
    """The frames from lan0 in one poll; the number forwarded."""
    b = PacketBatch(len(frames))
    for f in frames:
        b.append(f, w.net.dev.link_by_name("lan0").ifindex, now_ns)
    return len(list(w.poll(b).frames()))


def _punts(w: Worker) -> tuple[int, int]:
    """(lane punts to the Python path for nft, VM runs the closures took again)."""
    return int(w.stats.lane_punts[PUNT_NFT]), sum(w.net.nft.nft_fallback().values())


def _elements(w: Worker, table: str, name: str, now_ns: int) -> dict:
    return {k: rest for k, *rest in w.net.nft.set("inet", table, name).table.elements(now_ns)}


def test_meter_and_set_update_run_in_the_lane():
    """A per-source meter at 10/second (burst 5) drops .10's packets past its fifth and lets .11's three
    through; `update @seen { ip saddr counter }` keeps one element per source with the set's 1m timeout
    and the packets it counted; the lane finished every packet (no punt), and a minute later both
    elements are gone (nft_set_elem_expired) while the meter's stay (it has no timeout)."""
    w = _worker(METER)
    t0 = 100 * SEC
    frames = [_from_lan(10, 1000 + i) for i in range(12)] + [_from_lan(11, 2000 + i) for i in range(3)]
    assert _poll(w, frames, t0) == 8
    assert _punts(w) == (0, 0)
    assert w.stats.lane_packets == 15
    seen = _elements(w, "lt", "seen", t0)
    assert seen == {0xC0A8010A: [t0 + 60 * SEC, 5, 5 * 48], 0xC0A8010B: [t0 + 60 * SEC, 3, 3 * 48]}
    assert set(_elements(w, "lt", "perhost", t0)) == {0xC0A8010A, 0xC0A8010B}
    counters = [c.packets for c in w.net.nft.rule_counters()]
    assert counters == [7, 8]
    assert _elements(w, "lt", "seen", t0 + 60 * SEC) == {}
    assert set(_elements(w, "lt", "perhost", t0 + 60 * SEC)) == {0xC0A8010A, 0xC0A8010B}


def test_the_python_path_sees_the_elements_the_lane_added():
    """One store: with the lane off, the closures' nft_dynset_eval finds .10's bucket the lane emptied, so
    the next packets from .10 at the same time are dropped, and .12 starts a bucket of its own."""
    w = _worker(METER)
    t0 = 100 * SEC
    assert _poll(w, [_from_lan(10, 1000 + i) for i in range(5)], t0) == 5
    w.lane = None  # the Python classic path from here on
    assert _poll(w, [_from_lan(10, 3000 + i) for i in range(2)] + [_from_lan(12, 4000)], t0) == 1
    assert _elements(w, "lt", "seen", t0)[0xC0A8010A][1] == 5


def test_a_run_that_punts_after_the_meter_is_undone():
    """`meter m { ip saddr limit rate 10/second } log accept`: the VM takes a token, then punts at `log`;
    the undo log gives the token back, so the closures that run the packet again take it once: five of
    eight packets pass (a bucket of five), not three."""
    rules = METER.replace("meter perhost { ip saddr limit rate over 10/second } counter drop",
                          "meter perhost { ip saddr limit rate 10/second } log accept\n\t\tdrop")  # fmt: skip
    w = _worker(rules)
    assert _poll(w, [_from_lan(10, 1000 + i) for i in range(8)], SEC) == 5
    assert _punts(w)[1] > 0  # the VM did punt them


def test_a_full_table_grows_between_polls():
    """More sources than the first table holds: the lane punts the inserts it has no room for, the Python
    path grows the arrays (and adds them), and the next poll's lane runs on the grown table without a punt."""
    rules = METER.replace("limit rate over 10/second", "limit rate over 1000/second")
    w = _worker(rules)
    hosts = range(10, 250)  # 240 sources: more than 3/4 of the first table's 256 slots
    cap0 = int(w.net.nft.vm.store.dyn[0][0, DS_CAP])
    assert _poll(w, [_from_lan(h, 1000) for h in hosts], SEC) == 240
    assert _punts(w)[0] > 0
    assert int(w.net.nft.vm.store.dyn[0][0, DS_CAP]) > cap0
    before = _punts(w)[0]
    assert _poll(w, [_from_lan(h, 5000) for h in hosts], 2 * SEC) == 240
    assert _punts(w)[0] == before
    assert len(_elements(w, "lt", "perhost", 2 * SEC)) == len(_elements(w, "lt", "seen", 2 * SEC)) == 240


# --- against the kernel -------------------------------------------------------------------------------------
def _syn(src: str, dport: int, sport: int) -> IP:
    return IP(src=src, dst="10.7.0.2") / TCP(sport=sport, dport=dport, flags="S")


KERNEL_FRAMES = (
    [_syn(f"10.8.0.{h}", 81, 1000 + h) for h in (1, 2, 3)]  # the third: @seen is full (size 2)
    + [_syn("10.8.0.1", 82, 1100 + i) for i in range(3)]
    + [_syn("10.8.0.2", 82, 1200)]
    + [_syn("10.8.0.2", 83, 1300)]  # delete @cnt
    + [_syn("10.8.0.1", 84, 1400 + i) for i in range(7)]  # limit name "lim": 5 of 7
    + [_syn("10.8.0.1", 85, 5000) for _ in range(3)]  # the meter's 2-packet burst
)


def _kernel_elements(ns: str, kind: str, name: str) -> dict:
    """{key: counter packets or None} of a set or meter as the kernel lists it; IPv4 keys as integers."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", kind, "ip", "dk", name],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    (obj,) = [o[kind] for o in json.loads(out)["nftables"] if kind in o]
    elems = {}
    for e in obj.get("elem", []):
        e = e["elem"] if isinstance(e, dict) and "elem" in e else {"val": e}
        parts = e["val"]["concat"] if isinstance(e["val"], dict) else [e["val"]]
        key = tuple(int(ipaddress.ip_address(p)) if isinstance(p, str) else p for p in parts)
        elems[key if len(key) > 1 else key[0]] = e.get("counter", {}).get("packets")
    return elems


@pytest.mark.root
def test_set_statements_meters_and_named_limits_match_the_kernel(veth_pair):  # noqa: F811
    """dynset_kernel.nft on a veth's receiving side: the rule counters equal the kernel's (a full set breaks
    the `add` rule, a named limit's bucket, a meter on a concatenation), and so do the sets' elements and
    their counters; flowpath's VM ran every rule (no punt)."""
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    rt = kernel_replay(veth_pair, (HERE / "dynset_kernel.nft").read_text(), KERNEL_FRAMES)
    assert_kernel_counts(veth_pair[1], rt)
    assert sum(rt.nft_fallback().values()) == 0
    for kind, name in (("set", "seen"), ("set", "cnt"), ("meter", "m")):
        ours = {key: packets for key, _, packets, _ in rt.set("ip", "dk", name).table.elements(0)}
        assert ours == _kernel_elements(veth_pair[1], kind, name), name


LIMITS = """table inet lt {
	limit shared {
		rate 1/second burst 2 packets
	}

	limit other {
		rate 1/second burst 1 packets
	}

	counter hits {
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		udp dport 53 limit rate 2/second burst 3 packets counter accept
		udp dport 54 limit name "shared" accept
		udp dport 55 limit name "shared" accept
		counter name udp dport map { 56 : "hits", 57 : "hits" }
		limit name udp dport map { 56 : "other", 57 : "other" } accept
		limit rate over 1 kbytes/second counter accept
	}
}
"""


def _udp(dport: int, sport: int, size: int = 20) -> bytes:
    return raw(Ether(src="02:00:00:00:01:0a", dst=GW_LAN) / IP(src="192.168.1.10", dst="198.18.0.9")
               / UDP(sport=sport, dport=dport) / (b"q" * size))  # fmt: skip


def test_limits_anonymous_named_and_by_map_run_in_the_lane():
    """nft_limit_eval in the VM: an anonymous bucket of 3 (port 53: 3 of 5 pass); a named limit's bucket of 2
    shared by two rules (ports 54 and 55: 2 of 4 pass); `counter name` and `limit name` picked by a map
    (ports 56, 57: one bucket of 1, the counter counts both); a bytes limit `over 1 kbytes/second` (a bucket
    of 1024 bytes' worth: the first 528-byte datagram fits, the next two are over and match). The lane
    punted none, and the Python path (lane off) decides the same."""
    frames = [_udp(53, 1000 + i) for i in range(5)] + [_udp(54 + i % 2, 2000 + i) for i in range(4)]
    frames += [_udp(56, 3000), _udp(57, 3001)] + [_udp(99, 4000 + i, 500) for i in range(3)]
    got = []
    for lane in (True, False):
        w = _worker(LIMITS)
        if not lane:
            w.lane = None
        sent = _poll(w, frames, SEC)
        objs = {(k, o.get("name")): o for x in w.net.nft.list_ruleset_json()["nftables"] for k, o in x.items()}
        got.append((sent, [c.packets for c in w.net.nft.rule_counters()], objs["counter", "hits"]["packets"]))
        if lane:
            assert _punts(w) == (0, 0) and w.stats.lane_packets == len(frames)
    assert got[0] == got[1] == (3 + 2 + 1 + 2, [3, 2], 2)

"""A gateway ruleset built on maps (examples/nft/gateway-maps.nft): listed as nft 1.0.6 lists it, and acting
on packets through a Worker as Linux would; a rule set of the same kinds counted against the kernel.

Linux: nft_lookup.c (concatenated interval sets, verdict maps, data maps with a catch-all), nft_nat.c with a
map (nft_lookup's data as the NAT range), nft_dynset.c (a per-source meter: `add @flood { ip saddr limit
rate over 10/second }`, an element per source with its own limit), nft_quota.c (a named quota for a guest
host), nft_fib.c (reverse-path filtering),
and nftables src/rule.c / src/statement.c for the listing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, FakeCt, have_root_nft  # noqa: E402
from test_nft_kernel_diff import assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401

from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.config.nft import load_ruleset, parse_ruleset  # noqa: E402
from flowpath.config.nft.output import output_options  # noqa: E402
from flowpath.datapath import Worker  # noqa: E402
from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain  # noqa: E402
from flowpath.packet.batch import PacketBatch  # noqa: E402
from flowpath.packet.skb import frame_array, skb_parse  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "nft" / "gateway-maps.nft"
NET = (ROOT / "examples" / "gateway.ip").read_text()
GW_WAN, GW_LAN, WAN_PEER = "02:00:00:00:02:01", "02:00:00:00:01:01", "02:00:00:00:02:fe"
LAN_HOST = "02:00:00:00:01:0a"
SEC = 10**9


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker(parse_network(NET, "<net>"), load_ruleset(RULES), flowtable=False)


def _poll(w: Worker, frames: list, dev: str, now_ns: int) -> list[tuple[int, Ether]]:
    idx = w.net.dev.link_by_name(dev).ifindex
    b = PacketBatch(len(frames))
    for f in frames:
        b.append(raw(f), idx, now_ns)
    return [(i, Ether(f)) for i, f, _ in w.poll(b).frames()]


def _from_wan(src: str, dport: int, sport: int = 40000, dst: str = "203.0.113.1") -> Ether:
    return Ether(src=WAN_PEER, dst=GW_WAN) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")


def _checksums_ok(f: Ether) -> bool:
    again = Ether(raw(f))
    del again[IP].chksum, again[TCP].chksum
    again = Ether(raw(again))
    return (again[IP].chksum, again[TCP].chksum) == (f[IP].chksum, f[TCP].chksum)


# --- the listing --------------------------------------------------------------------------------------------
@pytest.mark.root
def test_gateway_lists_as_nft_lists_it(netns):
    """`nft -s list ruleset` of the real nft equals flowpath's, and nft's JSON of it loads back to the same."""
    res = netns.nft("-f", str(RULES))
    assert res.returncode == 0, res.stderr
    with output_options(stateless=True):
        assert load_ruleset(RULES).list() == netns.nft("-s", "list", "ruleset").stdout
    from flowpath.config.nft import ruleset_from_json

    nft_json = json.loads(netns.nft("-j", "list", "ruleset").stdout)
    with output_options(stateless=True):
        assert ruleset_from_json(nft_json).list() == load_ruleset(RULES).list()


# --- packets through a Worker ---------------------------------------------------------------------------------
def test_dnat_map_sends_each_port_to_its_address_and_port(worker):
    """`dnat ip to tcp dport map @dnat_ports`: 2222 -> 192.168.1.10:22, 8080 -> 192.168.1.11:80, out of lan0
    with both checksums right; a port the map lacks is not NATed, and from_wan's policy drops it."""
    lan0 = worker.net.dev.link_by_name("lan0").ifindex
    out = _poll(worker, [_from_wan("198.18.0.5", 2222), _from_wan("198.18.0.5", 8080, 40001)], "wan0", SEC)
    got = sorted((i, f[IP].src, f[IP].dst, f[TCP].sport, f[TCP].dport) for i, f in out)
    assert got == [
        (lan0, "198.18.0.5", "192.168.1.10", 40000, 22),
        (lan0, "198.18.0.5", "192.168.1.11", 40001, 80),
    ]
    assert all(_checksums_ok(f) for _, f in out)
    assert _poll(worker, [_from_wan("198.18.0.5", 9999, 40002)], "wan0", SEC) == []


def test_meter_drops_a_source_past_its_rate_and_forgets_it_after_the_timeout(worker):
    """nft_dynset + nft_limit: each source gets its own bucket of 5 (the default burst) at 10/second; a
    second source is not slowed by the first; 0.3 s later 3 more tokens; after the set's 1m timeout the
    element is gone and a new one starts with a full bucket."""
    t0 = 100 * SEC
    burst = [_from_wan("198.18.1.1", 2222, 1000 + i) for i in range(12)]
    assert len(_poll(worker, burst, "wan0", t0)) == 5
    assert len(_poll(worker, [_from_wan("198.18.1.2", 2222, 3000 + i) for i in range(5)], "wan0", t0)) == 5
    later = [_from_wan("198.18.1.1", 2222, 2000 + i) for i in range(6)]
    assert len(_poll(worker, later, "wan0", t0 + 3 * SEC // 10)) == 3
    flood = worker.net.nft.set("inet", "gw", "flood")
    assert {k for k, *_ in flood.table.elements(t0)} >= {0xC6120101, 0xC6120102}  # ip saddr keys, host integers
    expired = [_from_wan("198.18.1.1", 2222, 2100 + i) for i in range(6)]
    assert len(_poll(worker, expired, "wan0", t0 + 61 * SEC)) == 5  # a fresh element: a full bucket


def test_verdict_map_jumps_by_input_interface(worker):
    """`iifname vmap @by_iif`: from lan0 the jump to from_lan forwards to wan0 (masqueraded); from wan0,
    a packet to a LAN host that no DNAT brought is dropped by the forward policy after from_wan."""
    wan0 = worker.net.dev.link_by_name("wan0").ifindex
    f = (
        Ether(src=LAN_HOST, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.18.0.9")
        / TCP(sport=5555, dport=443)
    )
    out = _poll(worker, [f], "lan0", 200 * SEC)
    assert [(i, g[IP].src, g[IP].dst) for i, g in out] == [(wan0, "203.0.113.1", "198.18.0.9")]
    assert _poll(worker, [_from_wan("198.18.0.9", 22, dst="192.168.1.10")], "wan0", 200 * SEC) == []


def test_guest_quota_drops_once_over_and_spares_other_hosts(worker):
    """`ip saddr 192.168.1.50 quota name "guest" drop` with `quota guest { over 1 kbytes }`: the guest's
    packets count against the quota (nft_quota_do_eval adds each skb->len); it matches, and the packet is
    dropped, once consumed is past 1024 bytes: 400-byte packets pass twice and the third is dropped, as
    every one after it; another LAN host is not counted."""
    wan0 = worker.net.dev.link_by_name("wan0").ifindex

    def lan(src: str, sport: int) -> Ether:
        ip = IP(src=src, dst="198.18.0.9") / UDP(sport=sport, dport=53)
        return Ether(src=LAN_HOST, dst=GW_LAN) / ip / (b"q" * (400 - len(ip)))

    out = [_poll(worker, [lan("192.168.1.50", 6000 + i)], "lan0", 400 * SEC) for i in range(4)]
    assert [len(x) for x in out] == [1, 1, 0, 0]
    assert [i for i, _ in out[0] + out[1]] == [wan0, wan0]
    assert len(_poll(worker, [lan("192.168.1.11", 6100 + i) for i in range(4)], "lan0", 400 * SEC)) == 4
    objs = worker.net.nft.list_ruleset_json()["nftables"]
    guest = next(o["quota"] for o in objs if "quota" in o and o["quota"].get("name") == "guest")
    assert (guest["bytes"], guest["used"]) == (1024, 1024)  # 1600 consumed, dumped at most the quota


def test_fib_reverse_path_filter_drops_a_lan_source_on_the_wan(worker):
    """`fib saddr . iif oif missing drop`: 192.168.1.50 routes out of lan0, not wan0 where it came in."""
    assert _poll(worker, [_from_wan("192.168.1.50", 2222, 7000)], "wan0", 300 * SEC) == []
    assert len(_poll(worker, [_from_wan("198.18.2.1", 2222, 7001)], "wan0", 300 * SEC)) == 1


def test_every_rule_compiles_whole_and_no_chain_punts(worker):
    """The meter (`add @flood { ip saddr limit rate over 10/second }`) runs in the VM on the set's table
    (nft_set_hash.py), with the vmap, the DNAT map and fib: every chain is compiled whole, and no run the
    earlier tests made was evaluated again by the closures."""
    stats = {name: (rules, whole, fallback) for name, rules, whole, fallback in worker.net.nft.vm_stats()}
    assert all(whole == rules and fallback == 0 for rules, whole, fallback in stats.values()), stats
    assert stats["inet gw from_wan"][:2] == (2, 2)


def test_catch_all_and_concatenated_data_map_in_the_evaluator():
    """`meta mark set ip saddr . udp dport map { 10.7.0.1 . 53 : 0x1, * : 0x2 }`: the key's element, else
    the catch-all (nft_set_catchall_lookup)."""
    rt = NftRuntime.from_json(load_ruleset(HERE / "maps_kernel.nft").to_json())
    marks = []
    for src in ("10.7.0.1", "10.8.0.1"):
        skb = skb_parse(frame_array(raw(Ether() / IP(src=src, dst="10.7.0.2") / UDP(sport=9, dport=53))), 1)
        skb.ct, skb.ctinfo = FakeCt(), C.IP_CT_NEW
        pkt = NftPktinfo(skb=skb, hooknum=C.NF_INET_LOCAL_IN, nfproto=C.NFPROTO_IPV4, iifname="vb", iif=1)
        for chain in rt.base_chains(C.NFPROTO_IPV4, C.NF_INET_LOCAL_IN):
            assert nft_do_chain(chain, pkt) == C.NF_ACCEPT
        marks.append(skb.mark)
    assert marks == [1, 2]


def test_a_set_statement_on_a_missing_set_or_a_wrong_key_is_refused():
    base = "table ip t {\n set s { type ipv4_addr; }\n chain c { %s; }\n}\n"
    with pytest.raises(ConfigError, match="No such file or directory"):
        parse_ruleset(base % "add @nope { ip saddr }")
    with pytest.raises(ConfigError, match="datatype mismatch: expected IPv4 address, expression has type "
                       r"concatenation of \(IPv4 address, internet network service\)"):  # fmt: skip
        parse_ruleset(base % "add @s { ip saddr . tcp dport }")


# --- against the kernel -------------------------------------------------------------------------------------
KERNEL_FRAMES = (
    [IP(src="10.7.0.1", dst="10.7.0.2") / TCP(sport=1000, dport=22, flags="S")]  # @mgmt
    + [IP(src="10.9.0.5", dst="10.7.0.2") / TCP(sport=1001, dport=443, flags="S")]  # @mgmt
    + [IP(src="10.8.0.1", dst="10.7.0.2") / TCP(sport=2000 + i, dport=80, flags="S") for i in range(8)]
    + [IP(src="10.8.0.2", dst="10.7.0.2") / TCP(sport=3000 + i, dport=80, flags="S") for i in range(2)]
    + [IP(src="10.7.0.1", dst="10.7.0.2") / UDP(sport=9, dport=53)]  # mark 0x1
    + [IP(src="10.8.0.3", dst="10.7.0.2") / UDP(sport=9, dport=53)] * 2  # the catch-all: 0x2
    + [IP(src="10.7.0.1", dst="10.7.0.2") / ICMP(type=8, id=1)]  # no vmap element: the last rule
)


@pytest.mark.root
def test_counters_match_the_kernel(veth_pair):  # noqa: F811  (the fixture imported above)
    """maps_kernel.nft on the receiving side of a veth: per-rule counters equal the kernel's for the same
    frames (the meter: 5 of 10.8.0.1's 8 SYNs pass, 3 are dropped; 10.8.0.2 has its own bucket)."""
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    rt = kernel_replay(veth_pair, (HERE / "maps_kernel.nft").read_text(), KERNEL_FRAMES)
    assert_kernel_counts(veth_pair[1], rt)

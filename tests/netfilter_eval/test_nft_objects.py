"""Stateful objects in the datapath: quota (anonymous and named), named counters and limits, object maps;
queue as the kernel does it with no listener; the statements flowpath refuses when a ruleset loads.

Linux: net/netfilter/nft_quota.c › nft_overquota (consumed > quota; the dump caps `used` at the quota),
nft_objref.c › nft_objref_eval / nft_objref_map_eval, nft_counter.c, nft_limit.c, nf_queue.c › nf_queue
(-ESRCH without a listener: NF_DROP, or on with the bypass flag). Each ruleset is nft text, loaded as
the datapath loads it (its JSON); packets are Scapy's, run by the compiled VM and by the closures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, UDP, Ether, Raw, raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import ip4, make_pkt, run_hook  # noqa: E402

from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.config.nft import parse_ruleset, ruleset_from_json  # noqa: E402
from flowpath.datapath import Worker  # noqa: E402
from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain_closures  # noqa: E402
from flowpath.packet.batch import PacketBatch  # noqa: E402
from flowpath.packet.reason import Reason  # noqa: E402

PING = 84  # IP length of an echo request with 56 bytes of data (ping's default)


def load(text: str) -> NftRuntime:
    return NftRuntime.from_json(parse_ruleset(text, "<rules>").to_json())


def ping():
    return make_pkt(ip4() / ICMP(type=8) / Raw(b"x" * 56))


def run(rt: NftRuntime, n: int, closures: bool, pkt=ping) -> list[int]:
    """Verdicts of n packets through the forward hook: by the VM (as the datapath runs it) or by the
    closures alone (the Python evaluator)."""
    out = []
    for _ in range(n):
        p = pkt()
        if closures:
            chains = rt.base_chains(p.nfproto, p.hooknum)
            out.append(min(nft_do_chain_closures(c, p) for c in chains))
        else:
            out.append(run_hook(rt, p))
    return out


def quota_over_reference(quota: int, lengths: list[int], inv: bool) -> list[bool]:
    """nft_quota_do_eval by hand: each packet adds its length, then the rule matches while consumed <=
    quota (plain), or once consumed > quota (`over`)."""
    consumed, out = 0, []
    for n in lengths:
        consumed += n
        out.append((consumed > quota) == inv)
    return out


def listed_rules(rt: NftRuntime) -> list[list]:
    return [o["rule"]["expr"] for o in rt.list_ruleset_json()["nftables"] if "rule" in o]


FILTER = "table ip q {{ chain fwd {{ type filter hook forward priority 0; {}\n}}\n}}"


@pytest.mark.parametrize("closures", [False, True], ids=["vm", "closures"])
@pytest.mark.parametrize("inv", [False, True], ids=["until", "over"])
def test_quota_matches_as_nft_quota_do_eval(closures, inv):
    """A plain quota matches until the bytes are past it, an `over` quota from then on; `used` is listed
    capped at the quota (nft_quota_do_dump). 168 = two pings: the second is at, not past, the quota."""
    mode = "over " if inv else ""
    rt = load(FILTER.format(f"icmp type echo-request quota {mode}168 bytes drop"))
    got = [v == C.NF_DROP for v in run(rt, 4, closures)]
    assert got == quota_over_reference(168, [PING] * 4, inv)
    (quota,) = [s["quota"] for s in listed_rules(rt)[0] if "quota" in s]
    assert (quota["used"], quota["used_unit"]) == (168, "bytes")
    if not closures:
        assert rt.nft_fallback() == {"ip q fwd": 0}  # the VM ran it (OP_QUOTA)


@pytest.mark.parametrize("closures", [False, True], ids=["vm", "closures"])
def test_named_quota_is_shared_by_the_rules_naming_it(closures):
    """nft_objref_eval: both rules consume the one object; the second packet takes it past 100 bytes."""
    rt = load(
        "table ip q { quota q1 { over 100 bytes }\n"
        " chain fwd { type filter hook forward priority 0;\n"
        '  icmp type echo-request quota name "q1" counter\n'
        '  icmp type echo-request quota name "q1" drop\n}\n}'
    )
    # packet 1: 84, then 168 (> 100: the drop rule matches) -> dropped; each packet passes both rules
    assert run(rt, 2, closures) == [C.NF_DROP, C.NF_DROP]
    obj = next(o["quota"] for o in rt.list_ruleset_json()["nftables"] if "quota" in o)
    assert obj["used"] == 100  # 4 * 84 consumed, listed at most the quota
    # the first rule's counter: packet 1 (84 > 100 is false: `over` does not match) never counted;
    # packet 2 (252 > 100) counted
    counter = next(s["counter"] for s in listed_rules(rt)[0] if "counter" in s)
    assert counter == {"packets": 1, "bytes": PING}


@pytest.mark.parametrize("closures", [False, True], ids=["vm", "closures"])
def test_named_counter_counts_and_lists(closures):
    rt = load(
        "table ip q { counter c1 { packets 5 bytes 7 }\n"
        ' chain fwd { type filter hook forward priority 0; icmp type echo-request counter name "c1"\n}\n}'
    )
    run(rt, 3, closures)
    obj = next(o["counter"] for o in rt.list_ruleset_json()["nftables"] if "counter" in o)
    assert (obj["packets"], obj["bytes"]) == (5 + 3, 7 + 3 * PING)


def test_counter_and_quota_maps_pick_the_object_by_key():
    """nft_objref_map_eval: the key selects the object; no element, no match (the VM punts the map to
    the closures, which count it)."""
    rt = load(
        "table ip q { counter web { }; counter dns { }; quota small { 100 bytes }\n"
        " chain fwd { type filter hook forward priority 0;\n"
        '  counter name udp dport map { 53 : "dns", 80 : "web" }\n'
        '  quota name udp dport map { 53 : "small" } accept\n'
        "  drop\n}\n}"
    )
    dns = lambda: make_pkt(ip4() / UDP(dport=53) / Raw(b"x" * 22))  # noqa: E731  (50 bytes)
    web = lambda: make_pkt(ip4() / UDP(dport=80) / Raw(b"x" * 22))  # noqa: E731
    assert run(rt, 3, False, dns) == [C.NF_ACCEPT, C.NF_ACCEPT, C.NF_DROP]  # 150 > 100
    assert run(rt, 1, False, web) == [C.NF_DROP]  # no quota for port 80: the accept rule ends
    objs = {(k, o.get("name")): o for x in rt.list_ruleset_json()["nftables"] for k, o in x.items()}
    assert (objs["counter", "dns"]["packets"], objs["counter", "web"]["packets"]) == (3, 1)
    assert rt.nft_fallback()["ip q fwd"] == 4


def test_named_limit_is_one_bucket_for_every_rule():
    """nft_limit.c: rate 1/second, burst 1: the first packet takes the token, whichever rule it hits."""
    rt = load(
        "table ip q { limit l1 { rate 1/second burst 1 packets }\n"
        " chain fwd { type filter hook forward priority 0;\n"
        '  udp dport 53 limit name "l1" accept\n'
        '  udp dport 54 limit name "l1" accept\n'
        "  drop\n}\n}"
    )
    p53 = make_pkt(ip4() / UDP(dport=53), ts_ns=10**9)
    p54 = make_pkt(ip4() / UDP(dport=54), ts_ns=10**9)
    assert run_hook(rt, p53) == C.NF_ACCEPT
    assert run_hook(rt, p54) == C.NF_DROP  # the bucket is empty for the other rule too


def test_queue_drops_for_want_of_a_listener_and_bypass_goes_on():
    """nf_queue: no program bound to the queue: -ESRCH; nf_hook_slow drops, or with NFT_QUEUE_FLAG_BYPASS
    goes on with the next hook function (the next base chain)."""
    rt = load(FILTER.format("udp dport 1 queue num 3\n udp dport 2 queue flags bypass to 4\n drop"))
    p1 = make_pkt(ip4() / UDP(dport=1))
    assert run_hook(rt, p1) == C.NF_DROP and p1.reason == Reason.NETFILTER_QUEUE
    p2 = make_pkt(ip4() / UDP(dport=2))
    assert run_hook(rt, p2) == C.NF_ACCEPT


@pytest.mark.parametrize(
    "rule, why",
    [
        ('ct helper set "h1"', "no conntrack helpers"),
        ("tcp dport 80 synproxy mss 1460", "no SYN proxy"),
        ("meta l4proto tcp tproxy to :50080", "no local sockets"),
        ("dup to 192.0.2.7", "does not duplicate"),
        ("socket transparent 1", "socket: flowpath has no local sockets"),
        ('osf ttl loose name "Linux"', "osf: flowpath has no OS fingerprints"),
    ],
)
def test_statements_flowpath_cannot_carry_out_are_refused_at_load(rule, why):
    text = (
        'table ip q { ct helper h1 { type "ftp" protocol tcp; }\n'
        f" chain pre {{ type filter hook prerouting priority 0; {rule}\n}}\n}}"
    )
    with pytest.raises(ConfigError, match=why) as ei:
        load(text)
    assert "rule ip q pre handle" in str(ei.value)


def test_nft_list_ruleset_shows_quota_used_and_counter_values():
    """What `flowpath ctl nft list ruleset` prints (the live JSON, listed): nft's own listing."""
    rt = load(
        "table ip q { quota q1 { 1 kbytes }\n"
        " chain fwd { type filter hook forward priority 0;\n"
        '  icmp type echo-request quota name "q1" quota 2 kbytes counter\n}\n}'
    )
    run(rt, 2, False)
    text = ruleset_from_json(rt.list_ruleset_json(), "<live>").list()
    assert "\t\t1 kbytes used 168 bytes\n" in text
    assert 'quota name "q1" quota 2 kbytes used 168 bytes counter packets 2 bytes 168\n' in text


# --- through a Worker ---------------------------------------------------------------------------------------
NET = (Path(__file__).resolve().parents[2] / "examples" / "gateway.ip").read_text()
LAN_MAC, GW_LAN_MAC = "02:00:00:00:01:0a", "02:00:00:00:01:01"


def _poll(w: Worker, payload: int, n: int, dport: int = 53) -> int:
    """n UDP datagrams (IP length 28 + payload) from the LAN through the worker; how many left."""
    lan = w.net.dev.link_by_name("lan0").ifindex
    b = PacketBatch(n)
    for i in range(n):
        frame = raw(Ether(src=LAN_MAC, dst=GW_LAN_MAC) / IP(src="192.168.1.10", dst="198.51.100.7")
                    / UDP(sport=1000, dport=dport) / (b"q" * payload))  # fmt: skip
        b.append(frame, lan, 10**9 + i)
    return len(list(w.poll(b).frames()))


def test_a_worker_forwards_until_the_quota_is_used_up():
    """The gateway use: a plain quota accepts until 250 bytes have passed, then the policy drops.
    Three datagrams of 100 bytes: 100, 200 within the quota, 300 past it."""
    rules = (
        "table inet f { chain forward { type filter hook forward priority filter; policy drop;\n"
        "  udp dport 53 quota 250 bytes accept\n}\n}"
    )
    w = Worker(parse_network(NET, "<net>"), parse_ruleset(rules, "<rules>"), flowtable=False)
    assert _poll(w, 72, 3) == 2
    assert w.stats.reasons[Reason.NETFILTER_DROP] == 1
    live = w.net.nft.list_ruleset_json()
    (q,) = [s["quota"] for o in live["nftables"] if "rule" in o for s in o["rule"]["expr"] if "quota" in s]
    assert (q["used"], q["used_unit"]) == (250, "bytes")  # 300 consumed, listed capped


def test_a_worker_counts_a_queue_drop_with_its_reason():
    rules = (
        "table inet f { chain forward { type filter hook forward priority filter; policy accept;\n"
        "  udp dport 53 queue num 0\n}\n}"
    )
    w = Worker(parse_network(NET, "<net>"), parse_ruleset(rules, "<rules>"), flowtable=False)
    assert _poll(w, 10, 2) == 0
    assert w.stats.reasons[Reason.NETFILTER_QUEUE] == 2


def test_a_worker_refuses_a_ruleset_with_tproxy():
    rules = (
        "table ip f { chain pre { type filter hook prerouting priority -150;\n"
        "  meta l4proto udp tproxy to :53\n}\n}"
    )
    with pytest.raises(ConfigError, match="tproxy: flowpath has no local sockets"):
        Worker(parse_network(NET, "<net>"), parse_ruleset(rules, "<rules>"), flowtable=False)


# --- against the kernel --------------------------------------------------------------------------------------
ORACLE = """table ip q {
	quota qn { over 300 bytes }
	counter cn { }
	chain out {
		type filter hook output priority 0;
		icmp type echo-request quota name "qn" counter name "cn" drop
		icmp type echo-request quota 250 bytes counter
	}
}
"""


@pytest.mark.root
def test_quota_and_named_counter_state_as_the_kernel(netns):
    """Echo requests of growing sizes through a namespace's output hook (ping to 127.0.0.1): which get
    through, and the quotas' used bytes and the counters nft -j lists afterwards, equal flowpath's."""
    sizes = [56, 100, 200, 56, 8]
    assert netns.nft("-f", "-", stdin=ORACLE).returncode == 0
    subprocess.run(["ip", "netns", "exec", netns.name, "ip", "link", "set", "lo", "up"], check=True)
    kernel = []
    for s in sizes:
        r = subprocess.run(["ip", "netns", "exec", netns.name, "ping", "-c", "1", "-W", "0.3", "-s", str(s),
                            "127.0.0.1"], capture_output=True, check=False)  # fmt: skip
        kernel.append(r.returncode == 0)
    rt = NftRuntime.from_json(parse_ruleset(ORACLE, "<rules>").to_json())
    ours = []
    for s in sizes:
        p = make_pkt(ip4(src="127.0.0.1", dst="127.0.0.1") / ICMP(type=8) / Raw(b"x" * s),
                     hooknum=C.NF_INET_LOCAL_OUT)  # fmt: skip
        ours.append(run_hook(rt, p) == C.NF_ACCEPT)
    assert ours == kernel

    def state(obj: dict) -> list:
        out = []
        for item in obj["nftables"]:
            ((kind, body),) = item.items()
            if kind in ("quota", "counter"):
                out.append((kind, body["name"], body.get("used"), body.get("packets"), body.get("bytes")))
            elif kind == "rule":
                out.append(body["expr"])
        return out

    live = json.loads(netns.nft("-j", "list", "ruleset").stdout)
    assert state(rt.list_ruleset_json()) == state(live)

"""`flowpath ctl` against a gateway that has forwarded traffic: each command prints what the Linux tool
prints, from the live tables, and `nft -f` replaces the ruleset whole or not at all.

Linux: conntrack-tools (conntrack -L, ct_seq_show's [OFFLOAD]), nftables (nft -f: nf_tables_commit;
a deleted flowtable's flows go back to conntrack, nf_flow_table_free), iproute2 (ip route, ip neigh)."""

from __future__ import annotations

import json
import re

import pytest
from ctlgw import EXAMPLES, LAN0, QUERY, T0, example_gateway, poll, serving
from ctlgw import ctl as run_ctl

from flowpath.ctl.commands import ctl_dispatch
from flowpath.netfilter import constants as C

DROP_FORWARD = """flush ruleset
table inet filter {
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t}
}
"""


@pytest.fixture(scope="module")
def served():
    """One gateway and server for the read-only commands."""
    gw = example_gateway()
    with serving(gw) as srv:
        yield gw, srv


def test_stats_numbers_are_the_workers_and_the_ports(served):
    gw, srv = served
    rc, out, err = run_ctl(srv, "stats", "--json")
    assert (rc, err) == (0, "")
    p = json.loads(out)
    w = gw.worker
    assert p["stats"] == w.stats.as_dict(w.ifname)
    assert p["ports"] == {"lan0": {"rx_missed": 7}, "wan0": {"rx_missed": 0}}
    assert p["conntrack_entries"] == len(w.conntrack) == 1 and p["flowtables"] == {"ft": 1}
    assert 0 <= p["uptime_ns"] < 600 * 10**9
    rc, text, _ = run_ctl(srv, "stats")
    s = p["stats"]
    assert rc == 0
    assert f"rx {s['rx_packets']}  forwarded {s['forwarded_packets']}" in text
    assert f"fast {w.stats.fastpath_packets}  slow {w.stats.slowpath_packets}" in text
    lan = s["interfaces"]["lan0"]
    row = next(line.split() for line in text.splitlines() if line.startswith("lan0"))
    assert row == ["lan0", str(lan["rx_packets"]), str(lan["rx_bytes"]), str(lan["tx_packets"]),
                   str(lan["tx_bytes"]), "7"]  # fmt: skip


def test_conntrack_lists_the_offloaded_connection(served):
    gw, srv = served
    rc, out, err = run_ctl(srv, "conntrack", "-L")
    assert rc == 0
    (line,) = out.splitlines()
    assert line.startswith("udp      17 src=192.168.1.10 dst=198.51.100.7 sport=1000 dport=53 ")
    assert "src=198.51.100.7 dst=203.0.113.1 sport=53 dport=1000 [OFFLOAD] mark=0 use=1" in line
    assert "1 flow entries have been shown" in err
    assert run_ctl(srv, "conntrack", "-L", "-f", "ipv6")[1] == ""
    assert run_ctl(srv, "conntrack", "-C")[1] == "1\n"


def test_flowtable_list_and_the_ip_listings(served):
    gw, srv = served
    rc, out, _ = run_ctl(srv, "flowtable", "list")
    assert rc == 0 and out.startswith("flowtable ft: 1 flows, 2 entries")
    assert re.search(r"orig\s+ip/udp\s+192\.168\.1\.10:1000 > 198\.51\.100\.7:53\s+wan0\s+snat\s+3 ", out)
    assert run_ctl(srv, "flowtable", "list", "nope")[0] == 1
    rc, out, _ = run_ctl(srv, "ip", "route", "show")
    assert rc == 0 and "default via 203.0.113.254 dev wan0\n" in out
    assert "198.51.100.0/24 via 203.0.113.254 dev wan0 mtu 1400\n" in out
    assert (
        "default via 2001:db8:ff::fe dev wan0 metric 1024 pref medium\n" in run_ctl(srv, "ip", "-6", "r")[1]
    )
    out = run_ctl(srv, "ip", "-6", "neigh", "show")[1]
    assert out == ("2001:db8:1::10 dev lan0 lladdr 02:00:00:00:01:0a PERMANENT\n"
                   "2001:db8:ff::fe dev wan0 lladdr 02:00:00:00:02:fe PERMANENT\n")  # fmt: skip
    assert "203.0.113.254 dev wan0 lladdr 02:00:00:00:02:fe PERMANENT\n" in run_ctl(srv, "ip", "neigh")[1]


def test_nft_list_ruleset_is_the_live_one(served):
    gw, srv = served
    rc, out, _ = run_ctl(srv, "nft", "list", "ruleset")
    assert rc == 0 and "flow add @ft" in out and "tcp dport 23 counter packets 0 bytes 0 reject" in out
    rc, out, _ = run_ctl(srv, "nft", "-j", "list", "ruleset")
    assert rc == 0 and json.loads(out) == gw.worker.net.nft.list_ruleset_json()


@pytest.mark.parametrize("args, msg", [
    (["bogus"], 'unknown command "bogus"'),
    (["stats", "--jsn"], 'unknown option "--jsn"'),
    (["conntrack", "-D"], 'unknown or repeated option "-D"'),
    (["nft", "list", "tables"], "is not supported"),
    (["ip", "route", "add", "10.0.0.0/8", "dev", "lan0"], "change it in the network file"),
    (["ip", "-x", "route"], 'unknown option "-x"'),
    (["ip", "frob"], 'unknown object "frob"'),
])  # fmt: skip
def test_unknown_commands_and_options_exit_2(served, args, msg):
    rc, out, err = run_ctl(served[1], *args)
    assert (rc, out) == (2, "") and msg in err and "Traceback" not in err


@pytest.mark.parametrize("request_, msg", [
    ([], "a request is a JSON object"),
    ({"argv": ["stats"], "cmd": "x"}, 'unknown request field "cmd"'),
    ({"argv": []}, "non-empty list of strings"),
    ({"argv": ["stats", 3]}, "non-empty list of strings"),
    ({"argv": ["stats"], "file": {"name": "x", "text": ""}}, '"stats" takes no file'),
    ({"argv": ["nft", "-f", "/etc/passwd"]}, "the gateway opens no file"),
    ({"argv": ["nft", "-f", "a.nft"], "file": {"name": "b.nft", "text": ""}}, "the gateway opens no file"),
    ({"argv": ["nft", "-f", "a.nft"], "file": {"name": "a.nft", "text": 5}}, "must be strings"),
])  # fmt: skip
def test_requests_are_checked_before_anything_runs(request_, msg):
    """Nothing from the request is trusted; `nft -f` never reads a path named by the client."""
    r = ctl_dispatch(None, request_)  # no gateway: the checks come first
    assert r["rc"] == 2 and msg in r["err"]


def test_a_bad_ruleset_is_refused_with_its_position_and_the_old_one_forwards(tmp_path):
    gw = example_gateway()
    w = gw.worker
    bad = tmp_path / "bad.nft"
    bad.write_text(
        "table inet filter {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy dorp;\n\t}\n}\n"
    )
    unknown_dev = tmp_path / "dev.nft"
    unknown_dev.write_text("table inet f {\n\tflowtable ft {\n\t\thook ingress priority filter\n"
                           "\t\tdevices = { lan0, eth9 }\n\t}\n}\n")  # fmt: skip
    nft = w.net.nft
    with serving(gw) as srv:
        rc, out, err = run_ctl(srv, "nft", "-f", str(bad))
        assert rc == 2 and err.startswith(f"{bad}:3:") and "Error:" in err
        assert err.splitlines()[1].endswith("policy dorp;") and err.splitlines()[2].strip().startswith("^")
        rc, out, err = run_ctl(srv, "nft", "-f", str(unknown_dev))
        assert rc == 2 and err.startswith(f"{unknown_dev}:4:") and "eth9" in err
        assert run_ctl(srv, "nft", "-c", "-f", str(EXAMPLES / "gateway.nft"))[0] == 0
    assert w.net.nft is nft
    fast = w.stats.fastpath_packets
    assert len(poll(w, [(LAN0, QUERY)], T0 + 3000)) == 1
    assert w.stats.fastpath_packets == fast + 1  # still offloaded: nothing was touched


def test_a_new_ruleset_that_drops_forwarding_drops_the_offloaded_flow(tmp_path):
    gw = example_gateway()
    w = gw.worker
    (ct,) = list(w.conntrack)
    assert ct.status & C.IPS_OFFLOAD
    rules = tmp_path / "drop.nft"
    rules.write_text(DROP_FORWARD)
    with serving(gw) as srv:
        assert run_ctl(srv, "nft", "-f", str(rules)) == (0, "", "")
        assert not ct.status & C.IPS_OFFLOAD  # flow_offload_fixup_ct: back to the classic path
        assert list(w.conntrack) == [ct]  # conntrack is kept
        assert w.flowtables == {} and run_ctl(srv, "flowtable", "list")[1] == ""
        assert "policy drop;" in run_ctl(srv, "nft", "list", "ruleset")[1]
    before = w.stats.as_dict(w.ifname)["drops"].get("netfilter_drop", 0)
    fast = w.stats.fastpath_packets
    assert poll(w, [(LAN0, QUERY)] * 2, T0 + 3000) == []
    assert w.stats.as_dict(w.ifname)["drops"]["netfilter_drop"] == before + 2
    assert w.stats.fastpath_packets == fast


def test_the_same_ruleset_again_offloads_the_connection_anew(tmp_path):
    """After a reload the established connection's next packet takes the classic path, where the new
    ruleset's `flow add @ft` offloads it again; the one after is on the fast path."""
    gw = example_gateway()
    w = gw.worker
    with serving(gw) as srv:
        assert run_ctl(srv, "nft", "-f", str(EXAMPLES / "gateway.nft"))[0] == 0
    fast, slow = w.stats.fastpath_packets, w.stats.slowpath_packets
    assert len(poll(w, [(LAN0, QUERY)], T0 + 3000)) == 1
    assert (w.stats.fastpath_packets, w.stats.slowpath_packets) == (fast, slow + 1)
    assert len(poll(w, [(LAN0, QUERY)], T0 + 4000)) == 1
    assert w.stats.fastpath_packets == fast + 1

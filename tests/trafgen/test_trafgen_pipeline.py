"""trafgen -> replay -> rxstats through the example NAT gateway (the signature survives masquerade),
in-process chains of gateways, and profile errors reported at file:line:col (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

from scapy.all import IP, UDP, Ether, rdpcap

from flowpath.cli import main
from flowpath.config.ipbatch import load_network, parse_network
from flowpath.config.nft import load_ruleset
from flowpath.datapath import Worker
from flowpath.trafgen import FieldVar, Hop, Profile, Rate, Stream, inject, load_profile

EX = Path(__file__).resolve().parents[2] / "examples"


def test_example_profiles_all_load():
    for p in sorted((EX / "profiles").glob("*.toml")):
        assert load_profile(p).streams, p


def test_trafgen_replay_rxstats_pipeline_through_the_nat_gateway(tmp_path):
    gen, out, rx = tmp_path / "lan.pcap", tmp_path / "out", tmp_path / "rx.json"
    assert main(["trafgen", str(EX / "profiles/gateway-udp.toml"), "--out", str(gen), "-q"]) == 0
    assert main(["replay", "-n", str(EX / "gateway.ip"), "-r", str(EX / "gateway.nft"), "--in", f"lan0={gen}",
                 "--out-dir", str(out), "-q"]) == 0  # fmt: skip
    # Scapy confirms the gateway really masqueraded what rxstats then recognises
    first = rdpcap(str(out / "wan0.pcap"), count=1)[0]
    assert first[IP].src == "203.0.113.1" and first[UDP].dport == 5001
    assert main(["rxstats", str(out / "wan0.pcap"), "--tx", str(gen), "--json", str(rx), "-q"]) == 0
    r = json.loads(rx.read_text())
    assert r["schema_version"] == 1 and set(r["ports"]) == {"wan0"}
    s0, s1 = r["streams"]["0"], r["streams"]["1"]
    assert (s0["packets"], s0["lost"], s0["duplicates"], s0["reordered"]) == (4000, 0, 0, 0)
    assert s0["pps"] == 100000 and s0["l2_bps"] == 100000 * 128 * 8
    # IMIX frames of 1514 B to 198.51.100.8 are fragmented by the route's mtu 1400: the signature
    # rides in the first fragment, so stream 1 is still complete
    assert (s1["packets"], s1["lost"]) == (960, 0)
    assert r["ports"]["wan0"]["packets"] == 4000 + 960 + 960 * 4 // 48
    # replay forwards in zero packet time: its outputs keep the inputs' times, so nothing to measure
    assert s0["latency_ns"] is None and s0["latency_note"].startswith("replayed")
    assert (s0["name"], s1["name"]) == (None, None)  # no --profile


def test_rxstats_table_names_streams_says_why_no_latency_and_writes_rates_plainly(tmp_path, capsys):
    """Streams by their profile names; "n/a" with the reason instead of a 0/0/0 latency after a
    replay; rates with SI prefixes, never 1.72489e+08."""
    gen, out = tmp_path / "lan.pcap", tmp_path / "out"
    prof = EX / "profiles/gateway-udp.toml"
    assert main(["trafgen", str(prof), "--out", str(gen), "-q"]) == 0
    assert main(["replay", "-n", str(EX / "gateway.ip"), "-r", str(EX / "gateway.nft"), "--in", f"lan0={gen}",
                 "--out-dir", str(out), "-q"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["rxstats", str(out / "wan0.pcap"), "--tx", str(gen), "--profile", str(prof)]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    rows = {name: line.split() for name, line in lines.items()}
    assert rows["lan-to-server"][1:3] == ["4000", "0"] and rows["lan-imix"][1:3] == ["960", "0"]
    for name in ("lan-to-server", "lan-imix"):
        assert "n/a (replayed: send and receive share the capture clock)  n/a" in lines[name]
    assert rows["wan0"][3:6] == ["126.0k", "172.5M", "192.6M"]
    assert "e+" not in text and "0/0/0" not in text
    assert main(["rxstats", str(out / "wan0.pcap"), "--profile", str(tmp_path / "none.toml")]) == 2
    assert "--profile: no such file" in capsys.readouterr().err


def test_rxstats_without_tx_counts_only_gaps(tmp_path):
    gen = tmp_path / "g.pcap"
    assert main(["trafgen", str(EX / "profiles/classic-vs-flowtable.toml"), "--out", str(gen), "-q"]) == 0
    assert main(["rxstats", f"in={gen}", "--json", str(tmp_path / "r.json"), "-q"]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["streams"]["0"]["packets"] == r["streams"]["0"]["expected"] == 50000
    assert r["ports"]["in"]["pps"] == 5e6


ROUTER = """\
link add eth0 address 02:00:00:00:02:fe
link add eth1 address 02:00:00:00:03:01
link set eth0 up
link set eth1 up
addr add 203.0.113.254/24 dev eth0
addr add 198.51.100.1/24 dev eth1
neigh add 198.51.100.7 lladdr 02:00:00:00:03:07 dev eth1
"""


def test_chain_sender_gateway_router_receiver():
    """sender -> NAT gateway -> router -> receiver, in process (the pCPU test report's west -> east chain)."""
    gw = Worker(load_network(EX / "gateway.ip"), load_ruleset(EX / "gateway.nft"))
    rt = Worker(parse_network(ROUTER, "<router>"), None)
    fr = Profile([Stream(sport=FieldVar(40000, 40003), count=300, size=128, rate=Rate(pps=1e4))]).generate()
    res = inject(fr, [Hop(gw, "wan0"), Hop(rt, "eth1", iif="eth0")], batch_size=64, wall_clock=True)
    assert res.elsewhere == 0 and len(res.received) == 300
    p = Ether(res.received[0][1])
    assert p.dst == "02:00:00:00:03:07" and p[IP].src == "203.0.113.1" and p[IP].ttl == 62
    s = res.stats["streams"]["0"]
    assert (s["expected"], s["lost"], s["reordered"], s["duplicates"]) == (300, 0, 0, 0)
    assert s["latency_ns"]["min"] > 0  # wall clock: the batch's time through both gateways


def test_profile_errors_name_file_line_and_column(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[[stream]]\ncount = 10\n\n[[stream]]\ncount = 5\n  size = 40\n")
    assert main(["trafgen", str(p), "--out", str(tmp_path / "x.pcap")]) == 2
    err = capsys.readouterr().err
    assert f"{p}:6:3: Error: frame sizes 40..40 outside 64..9018" in err and "^^^^" in err
    p.write_text("[[stream]]\ncount = 10\nrate = {pps = 1e6, percent = 3}\n")
    assert main(["trafgen", str(p), "--out", str(tmp_path / "x.pcap")]) == 2
    assert f"{p}:3:1: Error: a rate is exactly one" in capsys.readouterr().err
    p.write_text("[[stream]]\ncount = 10\nsprot = 5\n")
    assert main(["trafgen", str(p), "--out", str(tmp_path / "x.pcap")]) == 2
    assert "3:1: Error: unknown stream key 'sprot'" in capsys.readouterr().err
    p.write_text("[[stream]\n")
    assert main(["trafgen", str(p), "--out", str(tmp_path / "x.pcap")]) == 2
    assert f"{p}:1:" in capsys.readouterr().err

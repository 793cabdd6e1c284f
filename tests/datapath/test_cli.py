"""The `flowpath` command in-process: exit codes, error messages naming file:line:col or byte offsets, stats."""

from __future__ import annotations

import json

from gateway import EXAMPLES, GW_LAN, H10
from scapy.all import IP, UDP, Ether, Raw, rdpcap, wrpcap

from flowpath.cli import main

NET, RULES = str(EXAMPLES / "gateway.ip"), str(EXAMPLES / "gateway.nft")


def test_replay_example_writes_pcaps_and_stats(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["replay", "-n", NET, "-r", RULES, "--in", f"lan0={EXAMPLES / 'lan.pcap'}",
               "--in", f"wan0={EXAMPLES / 'wan.pcap'}", "--out-dir", str(out), "--stats", str(out / "s.json")])  # fmt: skip
    assert rc == 0
    stats = json.loads((out / "s.json").read_text())
    for key in ("rx_packets", "tx_packets", "drops", "interfaces", "fastpath_packets", "slowpath_packets",
                "flows_offloaded", "flows_expired"):  # fmt: skip
        assert key in stats
    n_in = len(rdpcap(str(EXAMPLES / "lan.pcap"))) + len(rdpcap(str(EXAMPLES / "wan.pcap")))
    assert stats["rx_packets"] == n_in
    n_out = len(rdpcap(str(out / "lan0.pcap"))) + len(rdpcap(str(out / "wan0.pcap")))
    assert stats["tx_packets"] == n_out
    assert stats["interfaces"]["wan0"]["tx_packets"] == len(rdpcap(str(out / "wan0.pcap")))
    assert stats["drops"]["pkt_too_small"] == 1  # the runt frame in the example
    assert "rx" in capsys.readouterr().out


def test_replay_out_spec_and_bare_pcapng(tmp_path):
    from flowpath.ports.pcapng import PcapngWriter

    p = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=1234, dport=53) / Raw(
        b"q")  # fmt: skip
    ng = tmp_path / "in.pcapng"
    with PcapngWriter(ng) as w:
        idx = w.add_interface("lan0")
        w.write(idx, bytes(p), 1_700_000_000_000_000_000)
    rc = main(
        ["replay", "-n", NET, "-r", RULES, "--in", str(ng), "--out", f"wan0={tmp_path / 'w.pcap'}", "-q"]
    )
    assert rc == 0
    (o,) = rdpcap(str(tmp_path / "w.pcap"))
    assert o[IP].src == "203.0.113.1"


def test_bad_network_line_exits_2_with_position(tmp_path, capsys):
    bad = tmp_path / "bad.ip"
    bad.write_text("link add lan0\naddr add 10.0.0.1/33 dev lan0\n")
    rc = main(["replay", "-n", str(bad), "--in", f"lan0={EXAMPLES / 'lan.pcap'}", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:2:" in err and "Traceback" not in err


def test_bad_ruleset_exits_2_with_position(tmp_path, capsys):
    bad = tmp_path / "bad.nft"
    bad.write_text("table inet t {\n\tchain c {\n\t\tip saddr 10.0.0.0/8 acept\n\t}\n}\n")
    assert main(["nft", "-c", "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "Error:" in err and "^" in err


def test_nft_check_and_list(capsys):
    assert main(["nft", "-c", "-f", RULES]) == 0
    assert capsys.readouterr().out == ""
    assert main(["nft", "list", "ruleset", "-f", RULES]) == 0
    listing = capsys.readouterr().out
    assert "flowtable ft" in listing and "masquerade" in listing
    assert main(["nft", "list", "ruleset", "-f", RULES, "--json"]) == 0
    assert "nftables" in json.loads(capsys.readouterr().out)


def test_truncated_capture_exits_1_naming_the_offset(tmp_path, capsys):
    good = tmp_path / "g.pcap"
    wrpcap(str(good), [Ether() / IP() / UDP() / Raw(b"a" * 40)] * 3)
    data = good.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    rc = main(["replay", "-n", NET, "--in", f"lan0={cut}", "--out-dir", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and str(cut) in err and "byte" in err and "Traceback" not in err


def test_unknown_interface_is_a_usage_error(tmp_path, capsys):
    rc = main(["replay", "-n", NET, "--in", f"eth9={EXAMPLES / 'lan.pcap'}", "--out-dir", str(tmp_path)])
    assert rc == 2 and "eth9" in capsys.readouterr().err


def test_missing_options_are_usage_errors(tmp_path, capsys):
    assert main(["replay", "-n", NET, "--out-dir", str(tmp_path)]) == 2
    assert main(["replay"]) == 2
    assert main(["nosuchcommand"]) == 2


def test_dump_flowtable_conntrack_and_timeout_sysctl(tmp_path):
    """nf_flowtable_udp_timeout: a flow idle longer than the timeout is expired by GC (packet time)."""
    from scapy.all import UDP

    t0 = 1_700_000_000.0
    pkts = []
    for k, dt in enumerate([0.0, 0.001, 0.002, 0.003, 8.0, 8.001]):
        up = k % 2 == 0
        p = (Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=4444, dport=53)
             if up else
             Ether(src="02:00:00:00:02:fe", dst="02:00:00:00:02:01") / IP(src="198.51.100.7", dst="203.0.113.1")
             / UDP(sport=53, dport=4444))  # fmt: skip
        p.time = t0 + dt
        pkts.append(p)
    wrpcap(str(tmp_path / "l.pcap"), [p for p in pkts if p[IP].src == "192.168.1.10"])
    wrpcap(str(tmp_path / "w.pcap"), [p for p in pkts if p[IP].src != "192.168.1.10"])
    args = ["replay", "-n", NET, "-r", RULES, "--in", f"lan0={tmp_path / 'l.pcap'}", "--in",
            f"wan0={tmp_path / 'w.pcap'}", "--out-dir", str(tmp_path / "o"), "-q", "--batch", "1",
            "--stats", str(tmp_path / "s.json"), "--dump-flowtable", str(tmp_path / "ft.txt"),
            "--dump-conntrack", str(tmp_path / "ct.txt")]  # fmt: skip
    assert main(args + ["--sysctl", "net.netfilter.nf_flowtable_udp_timeout=5"]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["flows_offloaded"] == 2 and s["flows_expired"] == 1  # re-offloaded after the idle gap
    assert "192.168.1.10:4444" in (tmp_path / "ft.txt").read_text()
    assert "[OFFLOAD]" in (tmp_path / "ct.txt").read_text()
    assert main(args) == 0  # default 30 s: the flow survives the 8 s gap
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["flows_offloaded"] == 1 and s["flows_expired"] == 0
    assert s["fastpath_packets"] >= 3

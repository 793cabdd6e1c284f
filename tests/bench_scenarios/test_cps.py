"""`flowpath bench cps` and `bench ct-pressure` with tiny counts: the JSON keys, connections really
completed (every FIN acknowledged, conntrack's entries where Linux leaves them), the peers answering
whatever port NAT chose, loud failures on a lost or altered frame, real PNGs, and usage errors that
exit 2 naming the option. No timing assertions: the figures depend on the machine (they are in
examples/profiles/results/)."""

from __future__ import annotations

import json
import time

import pytest

from flowpath.bench.cps import PACKETS_PER_CONNECTION, WARMUP, Conn, Gateway
from flowpath.bench.peers import Mismatch, TcpEndpoint, check_forwarded, parse, tcp_frame
from flowpath.bench.setup import CLIENT_MAC, GW_LAN, LAN_IF, RULES, SERVER, UPSTREAM_MAC
from flowpath.cli import main
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch

PNG = b"\x89PNG\r\n\x1a\n"


def test_bench_cps_quick_completes_every_connection(tmp_path):
    """With the flowtable, the ACK that completes the handshake offloads the connection
    (nft_flow_offload_eval: ESTABLISHED, no SYN/FIN/RST) and the 5 packets after it stay on the fast
    path, FINs included (Linux 6.14 nf_flow_state_check marks the flow CLOSING): conntrack still says
    ESTABLISHED [OFFLOAD], and once the flow has been idle past the flowtable's timeout
    flow_offload_fixup_ct hands it back as CLOSE with the offload time taken off, so it is gone. On the
    classic path alone conntrack follows the close to TIME_WAIT."""
    js, png = tmp_path / "cps.json", tmp_path / "cps.png"
    assert (
        main(
            ["bench", "cps", "--quick", "--flows", "8", "--batch", "4", "--json", str(js), "--plot", str(png)]
        )
        == 0
    )
    r = json.loads(js.read_text())
    assert r["scenario"] == "cps" and r["flows_in_flight"] == 8 and r["batch_size"] == 4
    assert r["connections_per_s"] == r["results"]["flowtable"]["connections_per_s"] > 0
    assert r["connections_per_s_no_flowtable"] == r["results"]["no_flowtable"]["connections_per_s"] > 0
    rounds, total = r["rounds"], 8 * (r["rounds"] + 1)  # the warm-up round: min(8, WARMUP) connections
    assert WARMUP >= 8
    for x in r["results"].values():
        conns = 8 * rounds
        assert x["connections"] == conns and len(x["connections_per_s_rounds"]) == rounds
        assert x["fastpath_packets"] + x["slowpath_packets"] == conns * PACKETS_PER_CONNECTION
        assert (
            x["packets_per_s"] > 0 and x["polls"] == rounds * PACKETS_PER_CONNECTION * 2
        )  # 8 packets, 4 a poll
        assert x["packets_per_poll"] == 4.0 and x["conntrack_entries"] == total
        assert x["nat_ports_changed"] == 0  # one client, every source port free on the WAN side
    ft, cl = r["results"]["flowtable"], r["results"]["no_flowtable"]
    assert ft["fastpath_packets"] == 5 * 8 * rounds and ft["flows_offloaded"] == 8 * rounds
    assert ft["conntrack_states"] == {"ESTABLISHED [OFFLOAD]": total}
    assert ft["flowtable"] == {"flows": total, "closing": total}
    assert ft["conntrack_states_after_idle"] == {}
    assert cl["fastpath_packets"] == 0 and cl["flowtable"] is None
    assert cl["conntrack_states"] == cl["conntrack_states_after_idle"] == {"TIME_WAIT": total}
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000


def test_peers_answer_the_port_nat_chose():
    """Another client holds connection 0's source port towards the same server port: masquerade gives
    connection 0 another port (nf_nat_l4proto_unique_tuple), and the server answers that one."""
    g = Gateway(True, 16)
    first = Conn(0)
    other = TcpEndpoint(bytes.fromhex("020000000103"), GW_LAN, 0x0A000003, first.client.port, 7, SERVER,
                        first.server.port)  # fmt: skip
    b = PacketBatch(1)
    b.append(other.segment(L.TCPHDR_SYN), LAN_IF, time.monotonic_ns())  # the bench's clock: not expired
    (_, syn, _), = g.worker.rx_batch(b)  # fmt: skip
    assert parse(syn).sport == first.client.port
    g.round(range(4))
    # flowpath searches from the packet's own port (a Deviation in nat.py): 1025 for connection 0,
    # then each next one moves up
    assert g.nat_ports_changed >= 1 and len(g.nat_tuples) == 4
    assert (first.client.port, first.server.port) not in g.nat_tuples


def test_a_lost_frame_fails_the_round():
    """A ruleset that drops the server's FIN: the round stops on the missing frame."""
    rules = RULES.replace("ct state established,related accept",
                          'iifname "wan0" tcp flags & fin == fin drop\n\t\tct state established,related accept')  # fmt: skip
    with pytest.raises(Mismatch, match="FIN phase: 4 packets in, 0 frames out"):
        Gateway(False, 16, rules).round(range(4))


def test_forwarded_frame_checks_catch_each_kind_of_error():
    """RFC 1071 sums and field comparisons of the peers, without the gateway."""
    args = (CLIENT_MAC, GW_LAN, 0x0A000002, SERVER, 1024, 80, 1000, 0, L.TCPHDR_SYN)
    sent = parse(tcp_frame(*args))
    fwd = sent._replace(ttl=63, smac=bytes(6))
    check_forwarded(sent, fwd, smac=bytes(6))
    with pytest.raises(Mismatch, match="ttl 64"):
        check_forwarded(sent, sent, smac=sent.smac)
    with pytest.raises(Mismatch, match="dport 81"):
        check_forwarded(sent, fwd._replace(dport=81), smac=bytes(6))
    good = bytearray(tcp_frame(*args))
    for off, what in ((L.ETH_HLEN + L.IPH.check, "IPv4 header checksum"), (len(good) - 1, "L4 checksum")):
        bad = bytearray(good)
        bad[off] ^= 1
        with pytest.raises(Mismatch, match=what):
            parse(bytes(bad))


def test_endpoint_refuses_out_of_order_and_unsent_acks():
    server = TcpEndpoint(UPSTREAM_MAC, bytes(6), SERVER, 80, 5000)
    syn = parse(tcp_frame(CLIENT_MAC, GW_LAN, 0x0A000002, SERVER, 1024, 80, 1000, 0, L.TCPHDR_SYN))
    server.receive(syn)
    assert (server.peer_addr, server.peer_port, server.rcv_nxt) == (0x0A000002, 1024, 1001)
    with pytest.raises(Mismatch, match="seq 1000, expected 1001"):
        server.receive(syn)
    with pytest.raises(Mismatch, match="beyond snd_nxt"):
        server.receive(syn._replace(seq=1001, flags=L.TCPHDR_ACK, ack=5001))


def test_bench_ct_pressure_quick_keeps_the_table_at_its_limit(tmp_path):
    js, png = tmp_path / "ct.json", tmp_path / "ct.png"
    assert main(["bench", "ct-pressure", "--quick", "--flows", "256", "--batch", "64", "--reps", "2", "--json",
                 str(js), "--plot", str(png)]) == 0  # fmt: skip
    r = json.loads(js.read_text())
    assert r["scenario"] == "ct-pressure" and r["conntrack_max"] == 256 and r["batch_size"] == 64
    assert r["repetitions"] == 2 and all(len(x["us_per_packet_runs"]) == 2 for x in r["regimes"].values())
    one, four = r["regimes"]["1x"], r["regimes"]["4x"]
    assert (one["packets"], four["packets"]) == (256, 1024)
    assert one["conntrack_entries"] == four["conntrack_entries"] == 256
    assert (one["early_drop"], four["early_drop"]) == (0, 768)
    assert one["slowpath_packets"] == 256 and four["slowpath_packets"] == 1024  # one-way: never offloaded
    assert four["past_limit_packets"] == 768 and one["us_per_packet_past_limit"] is None
    assert [p[0] for p in four["profile_us"]] == [0.25 * k for k in range(1, 17)]
    assert r["per_packet_ratio"] == pytest.approx(r["us_per_packet_4x"] / r["us_per_packet_1x"], rel=1e-2)
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000


def test_bench_ct_pressure_survives_a_warm_up_that_compiles(monkeypatch, tmp_path):
    """A first run compiles the datapath in the warm-up's polls: minutes of packet clock, after which its
    first entries have expired (UDP's 30 s) and the GC removed them. The warm-up allows that; the timed
    runs, on a clock that no longer jumps, still check every entry."""
    import time as real_time
    from types import SimpleNamespace

    from flowpath.bench import ct_pressure as P

    polls = {"n": 0}

    def monotonic_ns():  # the warm-up's polls 40 s apart, as if each compiled for that long
        polls["n"] += 1
        return real_time.monotonic_ns() + 40_000_000_000 * min(polls["n"], 4)

    monkeypatch.setattr(P, "time", SimpleNamespace(monotonic_ns=monotonic_ns, perf_counter=real_time.perf_counter))
    r = P.ct_pressure(256, reps=1, batch_size=64)
    assert polls["n"] > 4 and r["regimes"]["4x"]["early_drop"] == 768


@pytest.mark.parametrize(("args", "says"), [
    (["cps", "--frame-size", "128"], "--frame-size does not apply to cps"),
    (["cps", "--flows", "8,16"], "--flows: cps takes one count"),
    (["cps", "--flows", "100000"], "--flows 100000: at most"),
    (["cps", "--alg", "chacha"], "--alg, --packets and --reps apply"),
    (["cps", "--workers", "2"], "--workers applies to"),
    (["ct-pressure", "--flows", "100"], "--flows: ct-pressure takes one count, the conntrack limit"),
    (["ct-pressure", "--packets", "2"], "--alg and --packets apply"),
])  # fmt: skip
def test_usage_errors_exit_2_naming_the_option(args, says, tmp_path, capsys):
    assert main(["bench", *args, "--json", str(tmp_path / "x.json")]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()

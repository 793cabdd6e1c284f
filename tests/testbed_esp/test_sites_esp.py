"""`flowpath testbed`: sunset -- west ==ESP== east -- sunrise with flowpath as both gateways, live.

Traffic between the sites must cross the west--east link as ESP only (AES-GCM with the keys the
testbed made), arrive byte for byte, move the SA counters, survive a rekey, and adapt to a smaller
MTU on the link (ICMP fragmentation-needed from west through to sunset, TCP's MSS follows).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from esp_testbed import (
    DATA_SIZE,
    ctl,
    finish,
    ping,
    sa_counters,
    skip_reason,
    start_transfer,
    transfer,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import ARP
from scapy.utils import rdpcap

from flowpath.cli import Environment, main
from flowpath.testbed import sites
from flowpath.testbed.netns import Netns

pytestmark = pytest.mark.root

SUNSET, SUNRISE = sites.HOSTS["sunset"][0], sites.HOSTS["sunrise"][0]


def gateways_view(tb) -> str:
    """Both gateways' stats and neighbours, for a failure's message."""
    return "".join(f"\n{gw}: {ctl(tb, gw, 'stats')}{ctl(tb, gw, 'ip', 'neigh')}" for gw in sites.GATEWAYS)


def test_ping_both_ways(testbed):
    for host, dst in (("sunset", SUNRISE), ("sunrise", SUNSET)):
        got, out = ping(testbed.ns[host], dst)
        assert got == 3, out + gateways_view(testbed)


def test_tcp_both_ways_arrives_byte_for_byte(testbed, data_file, tmp_path):
    ns = testbed.ns
    transfer(ns["sunset"], ns["sunrise"], SUNRISE, data_file, tmp_path / "up.bin", 5001)
    assert (tmp_path / "up.bin").read_bytes() == data_file.read_bytes()
    transfer(ns["sunrise"], ns["sunset"], SUNSET, data_file, tmp_path / "down.bin", 5002)
    assert (tmp_path / "down.bin").read_bytes() == data_file.read_bytes()
    for gw in sites.GATEWAYS:  # the flows were offloaded: most packets took the fast path
        s = testbed.gateways[gw].stats()["stats"]
        assert s["flows_offloaded"] >= 2 and s["fastpath_packets"] > s["slowpath_packets"], (gw, s)


def test_wan_capture_is_esp_and_arp_only_and_decrypts_to_the_data(testbed, data_file, tmp_path):
    """tcpdump on east's wan0 (the receiving side) during a 1 MiB transfer sunset -> sunrise: every
    frame is ESP or ARP;
    Scapy decrypts each ESP packet with the SA the testbed configured, and every TCP segment of the
    transfer carries the file's bytes at its sequence offset."""
    data = data_file.read_bytes()[: 1 << 20]
    (tmp_path / "small.bin").write_bytes(data)
    pcap, east = tmp_path / "wan.pcap", testbed.ns["east"]
    dump = east.popen(
        "tcpdump",
        "-i",
        "wan0",
        "-n",
        "-U",
        "--immediate-mode",
        "-B",
        "32768",
        "-s",
        "0",
        "-w",
        pcap,
        stderr=subprocess.PIPE,
    )
    line = dump.stderr.readline().decode()  # "listening on wan0 ..." once the socket is bound
    assert "listening" in line, line
    transfer(
        testbed.ns["sunset"], testbed.ns["sunrise"], SUNRISE, tmp_path / "small.bin", tmp_path / "o.bin", 5003
    )
    time.sleep(0.3)
    dump.send_signal(signal.SIGINT)
    dump.wait(10)
    tail = dump.stderr.read().decode()
    frames = rdpcap(str(pcap))
    others = [f.summary() for f in frames if not (ARP in f or (IP in f and f[IP].proto == 50))]
    assert not others, others[:5]
    sa_by_spi = {sa.spi: sa for sa in testbed.sas.values()}
    isn, checked, seen_spis = None, 0, set()
    for f in frames:
        if ARP in f:
            continue
        esp = f[IP]
        sa = sa_by_spi[esp[ESP].spi]
        seen_spis.add(sa.spi)
        scapy_sa = SecurityAssociation(ESP, spi=sa.spi, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(sa.key),
                                       tunnel_header=IP(src=sa.src, dst=sa.dst))  # fmt: skip
        inner = scapy_sa.decrypt(IP(bytes(esp)))
        assert inner[IP].src in (SUNSET, SUNRISE) and inner[IP].dst in (SUNSET, SUNRISE), inner.summary()
        if TCP not in inner or inner[TCP].dport != 5003:
            continue
        tcp = inner[TCP]
        if tcp.flags.S:
            isn = tcp.seq
        payload = bytes(tcp.payload)[: inner[IP].len - inner[IP].ihl * 4 - tcp.dataofs * 4]
        if payload:
            assert isn is not None, "data before the SYN"
            off = (tcp.seq - isn - 1) % (1 << 32)
            assert payload == data[off : off + len(payload)], f"segment at offset {off}"
            checked += len(payload)
    # only what east received: east's own ESP (the ACKs) leaves through its AF_PACKET ring, which
    # bypasses the qdisc and with it the taps tcpdump reads (Linux: packet_direct_xmit)
    assert seen_spis == {testbed.sas["west>east"].spi}
    assert checked >= len(data), tail  # every byte seen (retransmissions count twice)


def test_sa_counters_move(testbed, data_file, tmp_path):
    """`ctl ip -s xfrm state`: the west>east SA counts what west encrypted and east decrypted."""
    spi = testbed.sas["west>east"].spi
    before = {gw: sa_counters(testbed, gw)[spi] for gw in sites.GATEWAYS}
    transfer(testbed.ns["sunset"], testbed.ns["sunrise"], SUNRISE, data_file, tmp_path / "o.bin", 5004)
    for gw in sites.GATEWAYS:
        after = sa_counters(testbed, gw)[spi]
        assert after[0] - before[gw][0] >= DATA_SIZE and after[1] - before[gw][1] >= DATA_SIZE // 1500, (
            gw,
            before,
            after,
        )


def test_rekey_during_a_transfer_loses_no_byte(testbed, data_file, tmp_path):
    """Mid-transfer (a paced 10 MiB upload), new SAs (new SPIs, keys, reqids) are added on both
    gateways, then `ip xfrm policy update` points the policies at them: the file arrives whole, the
    new SAs carry the rest of it, and west's old outbound SA carries nothing after the update."""
    new = sites.tunnel_sas(reqid_base=3)
    procs = start_transfer(testbed.ns["sunset"], testbed.ns["sunrise"], SUNRISE, data_file, tmp_path / "o.bin",
                           5005, rate=DATA_SIZE / 4)  # fmt: skip
    time.sleep(1.5)
    for gw in sites.GATEWAYS:
        for sa in new.values():
            ctl(testbed, gw, "ip", *shlex.split(sa.state_line()))
    for gw in sites.GATEWAYS:
        for line in sites.policy_lines(gw, new, "update"):
            ctl(testbed, gw, "ip", *shlex.split(line))
    old_out = testbed.sas["west>east"].spi
    at_update = sa_counters(testbed, "west")[old_out]
    assert procs[0].poll() is None, "the transfer ended before the rekey: pace it slower"
    finish(procs, 60)
    assert (tmp_path / "o.bin").read_bytes() == data_file.read_bytes()
    west, east = sa_counters(testbed, "west"), sa_counters(testbed, "east")
    assert west[old_out] == at_update
    for sa in new.values():
        assert west[sa.spi][1] > 0 and east[sa.spi][1] > 0, (sa, west, east)
    moved = west[new["west>east"].spi][0]
    assert moved >= DATA_SIZE // 8, f"only {moved} bytes through the new SA"
    # the old SAs go, as an IKE daemon would remove them; traffic keeps flowing through the new ones
    for gw in sites.GATEWAYS:
        for sa in testbed.sas.values():
            ctl(testbed, gw, "ip", "xfrm", "state", "delete", "src", sa.src, "dst", sa.dst, "proto", "esp",
                "spi", hex(sa.spi))  # fmt: skip
    testbed.sas = new
    assert ping(testbed.ns["sunset"], SUNRISE)[0] == 3


# ---- a second testbed, through the CLI: --mtu 1300, then `down` after kill -9 ---------------------
def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(args), Environment(stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_mtu():
    """`flowpath testbed up --mtu 1300`: its prefix and state."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"fpt{os.getpid()}m"
    rc, out, err = cli("testbed", "up", "--mtu", "1300", "--prefix", prefix)
    try:
        assert rc == 0, out + err
        yield prefix, json.loads((sites.state_dir(prefix) / "state.json").read_text())
    finally:
        sites.down(prefix, say=lambda _: None)


def test_smaller_wan_mtu_tcp_adapts(small_mtu, data_file, tmp_path):
    """The tunnel's packets no longer fit 1500-byte frames: west answers sunset's too-big packets
    with ICMP fragmentation-needed (east to sunrise's), each sending host's path MTU drops below
    1300, and transfers both ways complete byte for byte."""
    prefix, state = small_mtu
    ns = {role: Netns(name) for role, name in state["namespaces"].items()}
    assert ns["west"].link("wan0")["mtu"] == 1300
    for src, dst, addr, port in (("sunset", "sunrise", SUNRISE, 5011), ("sunrise", "sunset", SUNSET, 5012)):
        # the receiver forgets what it learned: its SYN-ACK would announce the smaller MSS already
        ns[dst].run("ip", "route", "flush", "cache")
        transfer(ns[src], ns[dst], addr, data_file, tmp_path / f"{src}.bin", port)
        assert (tmp_path / f"{src}.bin").read_bytes() == data_file.read_bytes()
        route = ns[src].run("ip", "route", "get", addr).stdout
        m = re.search(r"\bmtu (\d+)", route)
        assert m and int(m.group(1)) < 1300, f"{src}: no path MTU below 1300 learned: {route}"


def test_status_then_down_after_kill_9_leaves_nothing(small_mtu):
    prefix, state = small_mtu
    rc, out, _ = cli("testbed", "status", "--prefix", prefix)
    assert rc == 0 and out.count("running") == 2 and "packets: rx" in out, out
    for pid in state["pids"].values():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    rc, out, _ = cli("testbed", "status", "--prefix", prefix)
    assert rc == 1 and out.count("NOT RUNNING") == 2, out
    rc, out, err = cli("testbed", "down", "--prefix", prefix)
    assert rc == 0, out + err
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in state["namespaces"].values()), listed
    assert not sites.state_dir(prefix).exists()
    for pid in state["pids"].values():
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    rc, out, _ = cli("testbed", "status", "--prefix", prefix)
    assert rc == 1 and "not up" in out

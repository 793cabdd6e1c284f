"""`flowpath trafgen --live` into `flowpath rxstats --live` across namespaces: gen -- mid -- rcv, mid a
bridge whose netdev ingress drops every 10th frame of one stream (this kernel has no netem). One run
of both CLIs serves most tests: counts, rates, latency, loss, checksums (the receiving stack's own
UDP/TCP checksum counters), stream names, SIGINT of the receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowpath.testbed.netns import Testbed, require_netns

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
RCV_MAC, RCV_V4 = "02:00:00:00:02:07", "198.51.100.7"
PACED_PPS, PACED_S = 20_000, 1.5
TCP_COUNT, LOSSY_COUNT = 3000, 2000
PROFILE = f"""
[profile]
name = "live-test"
[[stream]]
name = "paced"
dst_mac = "{RCV_MAC}"
daddr = "{RCV_V4}"
size = 128
rate = {{pps = {PACED_PPS}}}
duration_s = {PACED_S}
sport = {{min = 1000, max = 1099}}
[[stream]]
name = "mixed-tcp"
l4 = "tcp"
dst_mac = "{RCV_MAC}"
daddr = "{RCV_V4}"
size = {{min = 80, max = 1514, op = "random", seed = 3}}
rate = {{pps = 5000}}
count = {TCP_COUNT}
[[stream]]
name = "lossy"
dst_mac = "{RCV_MAC}"
daddr = "{RCV_V4}"
dport = 6000
size = "imix"
rate = {{pps = 10000}}
count = {LOSSY_COUNT}
"""
# every 10th frame to UDP port 6000 (the lossy stream) dies entering the bridge
DROP = """table netdev lossy {
 chain in {
  type filter hook ingress device in0 priority 0;
  udp dport 6000 numgen inc mod 10 == 0 counter drop
 }
}
"""


def flowpath_argv(*args, jit: bool = True) -> list[str]:
    env = [f"PYTHONPATH={ROOT}"] + ([] if jit else ["NUMBA_DISABLE_JIT=1"])
    return ["env", *env, sys.executable, "-m", "flowpath", *map(str, args)]


def snmp(ns) -> dict[str, dict[str, int]]:
    """/proc/net/snmp of the namespace: {"Udp": {"InCsumErrors": 0, ...}, ...}."""
    lines = ns.run("cat", "/proc/net/snmp").stdout.splitlines()
    out = {}
    for head, vals in zip(lines[::2], lines[1::2], strict=True):
        proto, keys = head.split(":")
        out[proto] = dict(zip(keys.split(), map(int, vals.split(":")[1].split()), strict=True))
    return out


def wait_packet_socket(ns, proc, timeout_s: float = 60) -> None:
    """Until a packet socket is bound in the namespace (the receiver's ring is open)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the receiver ended: {proc.communicate()}")
        if len(ns.run("cat", "/proc/net/packet").stdout.splitlines()) > 1:
            return
        time.sleep(0.1)
    raise AssertionError("the receiver never opened its ring")


def live_pair(gen, rcv, tmp: Path, profile: Path, tx_args=(), jit: bool = True):
    """rxstats --live on rcv (stopped by SIGINT once the generator is done), trafgen --live on gen;
    returns (trafgen JSON, rxstats JSON, rxstats stdout)."""
    tx_json, rx_json = tmp / "tx.json", tmp / "rx.json"
    rx = rcv.popen(*flowpath_argv("rxstats", "--live", "rcv0", "--duration", 300, "--profile", profile,
                                  "--json", rx_json, jit=jit), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)  # fmt: skip
    try:
        wait_packet_socket(rcv, rx)
        gen.run(*flowpath_argv("trafgen", profile, "--live", "gen0", "--json", tx_json, "-q", *tx_args, jit=jit),
                timeout=240)  # fmt: skip
        time.sleep(0.5)  # the last block retires after 1 ms; the bridge's queue drains
        os.kill(rx.pid, signal.SIGINT)
        out, err = rx.communicate(timeout=120)
    finally:
        if rx.poll() is None:
            rx.kill()
    assert rx.returncode == 0, err
    return json.loads(tx_json.read_text()), json.loads(rx_json.read_text()), out


@pytest.fixture(scope="module")
def bed():
    reason = require_netns()
    if reason:
        pytest.skip(reason)
    with Testbed("fpt-lg") as tb:
        gen, mid, rcv = tb.add_netns("gen"), tb.add_netns("mid"), tb.add_netns("rcv")
        tb.veth(gen, "gen0", mid, "in0")
        tb.veth(mid, "out0", rcv, "rcv0", b_mac=RCV_MAC)
        for ns, dev in ((gen, "gen0"), (mid, "in0"), (mid, "out0"), (rcv, "rcv0")):
            ns.sysctl(f"net.ipv6.conf.{dev}.disable_ipv6=1")
        mid.ip("link", "add", "name", "br0", "type", "bridge")
        for dev in ("in0", "out0", "br0"):
            if dev != "br0":
                mid.ip("link", "set", "dev", dev, "master", "br0")
            mid.ip("link", "set", "dev", dev, "up")
        mid.run("nft", "-f", "-", input=DROP)
        rcv.ip("addr", "add", f"{RCV_V4}/24", "dev", "rcv0")
        rcv.ip("route", "add", "default", "dev", "rcv0")
        yield tb, gen, mid, rcv


@pytest.fixture(scope="module")
def run(bed, tmp_path_factory):
    tb, gen, mid, rcv = bed
    tmp = tmp_path_factory.mktemp("live")
    prof = tmp / "live.toml"
    prof.write_text(PROFILE)
    before = snmp(rcv)
    tx, rx, out = live_pair(gen, rcv, tmp, prof)
    after = snmp(rcv)
    delta = {p: {k: after[p][k] - before.get(p, {}).get(k, 0) for k in after[p]} for p in after}
    return tx, rx, out, delta


def by_name(res: dict) -> dict:
    return {
        st["name"]: st
        for st in (res["streams"].values() if isinstance(res["streams"], dict) else res["streams"])
    }


def test_counts_match_what_was_sent_with_no_loss_or_reordering(run):
    tx, rx, _, _ = run
    sent, got = by_name(tx), by_name(rx)
    assert sent["mixed-tcp"]["packets"] == TCP_COUNT
    assert sent["lossy"]["packets"] == LOSSY_COUNT
    assert abs(sent["paced"]["packets"] - PACED_PPS * PACED_S) <= 1
    for name in ("paced", "mixed-tcp"):
        st = got[name]
        assert st["packets"] == sent[name]["packets"] == st["expected"], name
        assert (st["lost"], st["duplicates"], st["reordered"]) == (0, 0, 0), name
        assert st["bytes"] == sent[name]["bytes"], name
    assert rx["live"]["ring_drops"] == 0 and rx["live"]["coarse_timestamps"] == 0
    assert rx["live"]["interrupted"] is True  # stopped by SIGINT, statistics written all the same
    assert rx["total"]["signed_packets"] == tx["packets"] - LOSSY_COUNT // 10


def test_latency_is_positive_and_small(run):
    _, rx, _, _ = run
    for name, st in by_name(rx).items():
        lat = st["latency_ns"]
        assert st["latency_note"] is None, name
        assert 0 < lat["min"] <= lat["avg"] <= lat["max"], name
        assert lat["avg"] < 5e6, (
            name
        )  # a veth and a bridge: microseconds, on a busy machine milliseconds at worst


def test_a_paced_stream_arrives_at_its_rate(run):
    tx, rx, _, _ = run
    sent, got = by_name(tx)["paced"], by_name(rx)["paced"]
    assert sent["target_pps"] == PACED_PPS
    assert sent["pps"] == pytest.approx(PACED_PPS, rel=0.02)
    assert got["pps"] == pytest.approx(PACED_PPS, rel=0.05)
    assert got["packets"] / rx["total"]["duration_s"] <= PACED_PPS * 1.5 + 15_000  # not sent in one burst


def test_the_dropping_hop_shows_as_loss_of_that_stream_only(run):
    _, rx, _, _ = run
    st = by_name(rx)["lossy"]
    # numgen drops seq 0, 10, ..., 1990: the last frame (1999) arrives, so no tail loss hides any
    assert (st["expected"], st["lost"], st["packets"]) == (
        LOSSY_COUNT,
        LOSSY_COUNT // 10,
        LOSSY_COUNT * 9 // 10,
    )
    assert st["loss_ratio"] == pytest.approx(0.1)
    assert st["reordered"] == 0


def test_checksums_are_right_after_the_live_stamp(run):
    """The receiving stack checks every UDP and TCP checksum: none failed, all were counted."""
    tx, _, _, delta = run
    sent = by_name(tx)
    assert delta["Udp"]["InCsumErrors"] == 0 and delta["Tcp"]["InCsumErrors"] == 0
    udp = sent["paced"]["packets"] + LOSSY_COUNT * 9 // 10
    assert delta["Udp"]["NoPorts"] + delta["Udp"]["InDatagrams"] >= udp
    assert delta["Tcp"]["InSegs"] >= TCP_COUNT


def test_rxstats_prints_the_streams_by_name(run):
    _, _, out, _ = run
    for name in ("paced", "mixed-tcp", "lossy"):
        assert name in out
    assert "ring drops 0" in out


def test_generator_sigint_stops_cleanly_with_totals(bed, tmp_path):
    tb, gen, mid, rcv = bed
    prof = tmp_path / "long.toml"
    prof.write_text(f'[[stream]]\nname = "long"\ndst_mac = "{RCV_MAC}"\nsize = 128\nrate = {{pps = 5000}}\n'
                    f'duration_s = 120.0\n')  # fmt: skip
    out = tmp_path / "tx.json"
    before = int(rcv.link("rcv0")["stats64"]["rx"]["packets"])
    p = gen.popen(*flowpath_argv("trafgen", prof, "--live", "gen0", "--json", out), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while int(rcv.link("rcv0")["stats64"]["rx"]["packets"]) - before < 2000:
            assert time.monotonic() < deadline and p.poll() is None, (
                p.stderr.read() if p.poll() is not None else ""
            )
            time.sleep(0.1)
        os.kill(p.pid, signal.SIGINT)
        stdout, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    res = json.loads(out.read_text())
    assert res["interrupted"] is True
    assert 2000 <= res["packets"] < 5000 * 100
    assert "interrupted" in stdout
    got = int(rcv.link("rcv0")["stats64"]["rx"]["packets"]) - before
    assert got >= res["packets"]  # every queued frame went out before the socket closed


def test_frames_over_the_mtu_are_refused(bed, tmp_path):
    tb, gen, mid, rcv = bed
    prof = tmp_path / "big.toml"
    prof.write_text("[[stream]]\nsize = 1600\ncount = 1\n")
    p = gen.run(*flowpath_argv("trafgen", prof, "--live", "gen0"), check=False)
    assert p.returncode == 2 and "exceed the MTU 1500 of gen0" in p.stderr


def test_with_the_jit_off(bed, tmp_path):
    """The compiled loops as plain Python (NUMBA_DISABLE_JIT=1) on both ends: same results."""
    tb, gen, mid, rcv = bed
    prof = tmp_path / "small.toml"
    prof.write_text(f'[[stream]]\nname = "s"\ndst_mac = "{RCV_MAC}"\ndaddr = "{RCV_V4}"\nsize = 100\n'
                    f'rate = {{pps = 2000}}\ncount = 300\n')  # fmt: skip
    before = snmp(rcv)
    tx, rx, _ = live_pair(gen, rcv, tmp_path, prof, jit=False)
    st = by_name(rx)["s"]
    assert tx["packets"] == st["packets"] == 300 and st["lost"] == 0 and st["reordered"] == 0
    assert st["latency_ns"]["min"] > 0
    assert snmp(rcv)["Udp"]["InCsumErrors"] == before["Udp"]["InCsumErrors"]

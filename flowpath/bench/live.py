"""Live measurements through real gateways in network namespaces: a UDP flood from a sender host to a
receiver host (Mpps and Gbit/s at the receiver), iperf3 TCP, ping, and the CPU accounting beside
them. `flowpath bench live` (flowpath/bench/live_sites.py, the four-box testbed) and
benchmarks/live_forward.py (the three-box h1 -- gw -- h2) both measure with these.

No Linux counterpart: what a tester does by hand with a traffic generator (TRex in the pCPU test
report), ip -s link and /proc/stat. The flood is `flowpath trafgen --live --rate max` on the sender: one UDP flow per
source port, each flow first opened as a real conversation (a socket on the sender, a responder on
the receiver that answers, so that conntrack sees the reply and `flow add` offloads it), then the
receiver drops the flood at netdev ingress (nft) and counts what reached its interface: the veth's
rx_packets over a timed window, after a warm-up. Frame sizes count the 4-byte FCS (RFC 2544, as
`flowpath bench frame-sizes`): Gbit/s are L2 with FCS.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from flowpath.testbed.gateway import flowpath_env
from flowpath.testbed.netns import Netns, TestbedError

ETH_FCS_LEN, ETH_HLEN, IPV4_HLEN, UDP_HLEN = 4, 14, 20, 8
UDP_PORT, TCP_PORT, BLAST_PORT, BLAST_SPORT = 5201, 5202, 9, 20000
USER_HZ_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

# receiver: answer the first datagram of each of N flows from where it came (after any NAT).
RESPONDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(30)
seen = set()
while len(seen) < int(sys.argv[3]):
    data, src = s.recvfrom(2048)
    seen.add(src); s.sendto(data, src)
"""
# sender: open each flow from its source port and wait for the receiver's answer (asked again a
# few times: a gateway's first packets may wait for a neighbour or a kernel compiled on first use).
OPENER = """
import socket, sys
for sport in range(int(sys.argv[3]), int(sys.argv[3]) + int(sys.argv[4])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[5], sport)); s.settimeout(2)
    for attempt in range(10):
        s.sendto(b"open", (sys.argv[1], int(sys.argv[2])))
        try:
            s.recvfrom(2048)
            break
        except TimeoutError:
            if attempt == 9:
                raise
    s.close()
"""
SINK = """table netdev sink {
	chain ingress {
		type filter hook ingress device "%s" priority 0; policy accept;
		udp dport %d drop
	}
}
"""
PROFILE = """[[stream]]
name = "udp"
src_mac = "{src_mac}"
dst_mac = "{dst_mac}"
saddr = "{saddr}"
daddr = "{daddr}"
sport = {{ min = {sport}, max = {sport_max}, op = "inc" }}
dport = {dport}
size = {size}
duration_s = 3600.0
"""


@dataclass
class LivePath:
    """Who sends, who receives and what forwards in between.

    tx, tx_dev, tx_mac, saddr    the sender host, its interface, MAC and address
    dst_mac                      the first gateway's MAC on the sender's link
    rx, rx_dev, daddr            the receiver host, its interface and address
    gateway_devs                 (namespace, device) of every gateway interface (RPS placement)
    pids                         the flowpath processes forwarding (pinned to the gateway CPU)
    workdir                      where the flood's profile goes
    """

    tx: Netns
    tx_dev: str
    tx_mac: str
    saddr: str
    dst_mac: str
    rx: Netns
    rx_dev: str
    daddr: str
    gateway_devs: list[tuple[Netns, str]]
    pids: list[int] = field(default_factory=list)
    workdir: Path = Path("/tmp")


def payload_bytes(frame_size: int) -> int:
    """UDP payload of an IPv4 frame of frame_size wire bytes (FCS counted)."""
    return frame_size - ETH_FCS_LEN - ETH_HLEN - IPV4_HLEN - UDP_HLEN


def rx_tx(lp: LivePath) -> tuple[int, int]:
    """(packets the receiver's interface received, packets the sender's sent)."""
    return (lp.rx.link(lp.rx_dev)["stats64"]["rx"]["packets"],
            lp.tx.link(lp.tx_dev)["stats64"]["tx"]["packets"])  # fmt: skip


def cpu_times() -> dict[int, dict[str, int]]:
    """Per CPU, /proc/stat's jiffies by field (USER_HZ_FIELDS) and their total."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = dict(zip(USER_HZ_FIELDS, map(int, vals), strict=False))
            v["total"] = sum(map(int, vals))
            out[int(name[3:])] = v
    return out


def cpu_shares(c0: dict, c1: dict) -> dict[int, dict[str, float]]:
    """Per CPU between two cpu_times(): the busy share (all but idle and iowait) and each field's."""
    out = {}
    for c in c1.keys() & c0.keys():
        total = max(1, c1[c]["total"] - c0[c]["total"])
        d = {k: (c1[c][k] - c0[c][k]) / total for k in USER_HZ_FIELDS}
        d["busy"] = 1.0 - d["idle"] - d["iowait"]
        out[c] = d
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process and its threads (s); 0.0 when it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / 100.0  # fields 14, 15 of proc(5), in USER_HZ


def open_flows(lp: LivePath, flows: int) -> None:
    """Open `flows` UDP conversations saddr:BLAST_SPORT.. -> daddr:BLAST_PORT, each answered, so the
    gateways have seen both directions and offloaded them."""
    args = (lp.daddr, BLAST_PORT, flows)
    responder = lp.rx.popen(sys.executable, "-c", RESPONDER, *args, stderr=subprocess.PIPE)
    wait_listening(lp.rx, BLAST_PORT, "u", responder)
    lp.tx.run(sys.executable, "-c", OPENER, *args[:2], BLAST_SPORT, flows, lp.saddr, timeout=60 + flows / 20)
    try:
        responder.wait(35)
    except subprocess.TimeoutExpired:
        raise TestbedError(f"the UDP responder on {lp.rx.name} did not see {flows} flows") from None


def udp_flood(lp: LivePath, frame_size: int, flows: int, seconds: float, cpu: int | None,
              warmup_s: float = 1.0, during=None) -> dict:  # fmt: skip
    """`flowpath trafgen --live --rate max` from the sender over flows opened first: {mpps, gbps at the
    receiver, sender_mpps, cpu: shares per CPU, proc_cpu_s: each pid's CPU seconds, seconds}, over
    `seconds` after warmup_s. during(): called at the window's start and end (gateway counters)."""
    open_flows(lp, flows)
    lp.rx.run("nft", "-f", "-", input=SINK % (lp.rx_dev, BLAST_PORT))
    profile = lp.workdir / "udp.toml"
    profile.write_text(PROFILE.format(src_mac=lp.tx_mac, dst_mac=lp.dst_mac, saddr=lp.saddr, daddr=lp.daddr,
                                      sport=BLAST_SPORT, sport_max=BLAST_SPORT + flows - 1, dport=BLAST_PORT,
                                      size=frame_size))  # fmt: skip
    total = warmup_s + seconds + 1.0 + 30.0  # + its start-up; stopped once the window is over
    taskset = ("taskset", "-c", cpu) if cpu is not None else ()
    gen = lp.tx.popen(*taskset, sys.executable, "-m", "flowpath", "trafgen", profile, "--live", lp.tx_dev,
                      "--rate", "max", "--duration", f"{total:.1f}", "-q", stderr=subprocess.PIPE,
                      env=flowpath_env())  # fmt: skip
    try:
        sending(lp, gen)
        res = window(lp, warmup_s, seconds, during)
        if gen.poll() is not None and gen.returncode != 0:
            raise TestbedError(f"trafgen --live: {gen.communicate()[1].decode(errors='replace').strip()}")
        gen.send_signal(signal.SIGINT)  # the window is over: trafgen stops on SIGINT like Ctrl-C
        try:
            gen.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.communicate()
    finally:
        lp.rx.run("nft", "delete", "table", "netdev", "sink", check=False)
    res["gbps"] = res["mpps"] * frame_size * 8 / 1e3
    return res


def sending(lp: LivePath, gen: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until the sender's interface counts frames going out: trafgen has started (its interpreter
    and compiled kernels loaded) and the warm-up can begin. TestbedError when it exits first."""
    tx0 = rx_tx(lp)[1]
    deadline = time.monotonic() + timeout_s
    while rx_tx(lp)[1] - tx0 < 1000:
        if gen.poll() is not None:
            raise TestbedError(f"trafgen --live exited {gen.returncode} before sending")
        if time.monotonic() > deadline:
            raise TestbedError(f"trafgen --live sent nothing within {timeout_s:g} s")
        time.sleep(0.05)


def window(lp: LivePath, warmup_s: float, seconds: float, during=None) -> dict:
    """Receiver and sender Mpps, CPU shares and the forwarding processes' CPU over `seconds`."""
    time.sleep(warmup_s)
    if during:
        during("start")
    rx0, tx0 = rx_tx(lp)
    c0, p0 = cpu_times(), {p: proc_cpu_s(p) for p in lp.pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    rx1, tx1 = rx_tx(lp)
    c1, p1 = cpu_times(), {p: proc_cpu_s(p) for p in lp.pids}
    dt = time.monotonic() - t0
    if during:
        during("end")
    return {"mpps": (rx1 - rx0) / dt / 1e6, "sender_mpps": (tx1 - tx0) / dt / 1e6, "seconds": dt,
            "cpu": cpu_shares(c0, c1), "proc_cpu_s": {p: p1[p] - p0[p] for p in lp.pids}}  # fmt: skip


def iperf3_udp(lp: LivePath, frame_size: int, flows: int, seconds: float, cpu: int | None,
               warmup_s: float = 1.0) -> dict:  # fmt: skip
    """As udp_flood with iperf3 -u -b 0 (-P flows) as the sender (no flows opened first)."""
    server = lp.rx.popen("iperf3", "-s", "-1", "-p", UDP_PORT, "-B", lp.daddr)
    wait_listening(lp.rx, UDP_PORT, "t")
    total = warmup_s + seconds + 1.0
    taskset = ("taskset", "-c", cpu) if cpu is not None else ()
    client = lp.tx.popen(*taskset, "iperf3", "-c", lp.daddr, "-p", UDP_PORT, "-u", "-b", "0", "-l",
                         payload_bytes(frame_size), "-P", flows, "-t", f"{total:.1f}")  # fmt: skip
    res = window(lp, warmup_s, seconds)
    for p in (client, server):
        p.wait(total + 10)
    res["gbps"] = res["mpps"] * frame_size * 8 / 1e3
    return res


def tcp_gbps(lp: LivePath, streams: int, seconds: float) -> float:
    """iperf3 TCP sender -> receiver with `streams` parallel streams: the receiver's Gbit/s."""
    server = lp.rx.popen("iperf3", "-s", "-1", "-p", TCP_PORT, "-B", lp.daddr)
    wait_listening(lp.rx, TCP_PORT, "t")
    p = lp.tx.run("iperf3", "-c", lp.daddr, "-p", TCP_PORT, "-P", streams, "-t", seconds, "-O", "1", "-J",
                  timeout=seconds + 30, check=False)  # fmt: skip
    server.wait(10)
    try:
        return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        raise TestbedError(
            f"iperf3 -P {streams}: exit {p.returncode}: {(p.stderr or p.stdout)[-400:]}"
        ) from None


def ping_avg_ms(lp: LivePath, count: int = 20) -> float | None:
    """The average round trip of `ping` sender -> receiver through the idle gateways (ms)."""
    p = lp.tx.run("ping", "-q", "-c", count, "-i", "0.05", lp.daddr, check=False, timeout=count + 10)
    for line in p.stdout.splitlines():
        if line.startswith("rtt"):
            return float(line.split("=")[1].split("/")[1])
    return None


def wait_listening(ns: Netns, port: int, proto: str, proc: subprocess.Popen | None = None,
                   timeout_s: float = 30) -> None:  # fmt: skip
    """Until something listens on `port` in ns (proto "t": TCP, "u": UDP); TestbedError when proc (the
    listener, its stderr a pipe) exits first or nothing listens within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not ns.run("ss", f"-Hl{proto}n", f"sport = :{port}", check=False).stdout.strip():
        if proc is not None and proc.poll() is not None:
            err = proc.communicate()[1]
            raise TestbedError(f"the listener on {ns.name}:{port} exited {proc.returncode}: "
                               f"{(err or b'').decode(errors='replace').strip()[-400:]}")  # fmt: skip
        if time.monotonic() > deadline:
            raise TestbedError(f"nothing listens on {ns.name}:{port} after {timeout_s:g} s")
        time.sleep(0.05)


def pin(lp: LivePath, gateway_cpu: int) -> None:
    """The flowpath processes (all their threads) onto gateway_cpu."""
    for pid in lp.pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(gateway_cpu), str(pid)], check=True, capture_output=True
        )


def rps(lp: LivePath, cpu: int | None) -> None:
    """RPS of every gateway interface to `cpu` (None: off, the receive work runs inline)."""
    mask = f"{1 << cpu:x}" if cpu is not None else "0"
    for ns, dev in lp.gateway_devs:
        ns.run("sh", "-c", f"echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus")


# Where each gateway's receive work runs. "rps": RPS moves it to the gateway's CPU: the kernel's
# whole forwarding, and for flowpath the packet socket's copy into its ring, which then competes
# with flowpath's own thread there (a flood the ring cannot take still costs that copy: receive
# livelock). "inline": it runs where the veth delivers, in the sender's softirq, as a NIC's DMA and
# interrupt would take it off the gateway's CPU.
PLACEMENTS = ("rps", "inline")


def default_cpus() -> tuple[int, int] | None:
    """(sender CPU, gateway CPU) on a machine with two CPUs or more, else None (the scheduler's)."""
    import os

    return (0, 1) if (os.cpu_count() or 1) >= 2 else None

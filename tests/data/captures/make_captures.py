"""Make the small captures beside this script (run as root: `python tests/data/captures/make_captures.py`).

No Linux counterpart. Files written by other tools, for tests/ports to read back:
  tcpdump_lo_us.pcap      tcpdump -w on lo in a private namespace while pinging 127.0.0.1 (µs magic)
  tcpdump_lo_ns.pcap      the same with --time-stamp-precision=nano (ns magic)
  tcpdump_lo_snap96.pcap  -s 96 with 300-byte pings: records cut at 96 bytes, orig_len kept
  scapy_us_be.pcap        Scapy wrpcap, big-endian, µs
  scapy_ns_le.pcap        Scapy wrpcap, little-endian, ns
  scapy_multi_if.pcapng   Scapy wrpcapng, packets sniffed on two interfaces (two IDBs with if_name)
`tcpdump_ping` is also used by the live test in tests/ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ping(8) is not installed everywhere: echo requests from a raw socket; the kernel answers them.
_PING = """
import socket, sys, time
count, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(count):
    body = bytes([8, 0, 0, 0, 0x12, 0x34, 0, seq]) + bytes(i & 0xFF for i in range(size))
    c = sum(int.from_bytes(body[i:i + 2].ljust(2, b"\\0"), "big") for i in range(0, len(body), 2))
    while c >> 16:
        c = (c & 0xFFFF) + (c >> 16)
    s.sendto(body[:2] + (~c & 0xFFFF).to_bytes(2, "big") + body[4:], ("127.0.0.1", 0))
    time.sleep(0.01)
"""


def tcpdump_ping(
    out: Path, nano: bool = False, snaplen: int = 262144, size: int = 56, count: int = 3
) -> None:
    """Capture `count` pings to 127.0.0.1 (requests and replies) on lo of a fresh, private namespace."""
    ns = f"fpcap_{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = ["ip", "netns", "exec", ns]
        subprocess.run(run + ["ip", "link", "set", "lo", "up"], check=True)
        cmd = run + [
            "tcpdump",
            "-i",
            "lo",
            "-U",
            "-Z",
            "root",
            "-n",
            "-s",
            str(snaplen),
            "-c",
            str(2 * count),
        ]
        if nano:
            cmd.append("--time-stamp-precision=nano")
        cmd += ["-w", str(out), "icmp"]
        dump = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert dump.stderr is not None
            dump.stderr.readline()  # "listening on lo ..." once the socket is bound
            subprocess.run(run + [sys.executable, "-c", _PING, str(count), str(size)], check=True)
            dump.wait(timeout=5)
        finally:
            if dump.poll() is None:
                dump.terminate()
                dump.wait()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def scapy_captures() -> None:
    from scapy.all import ICMP, IP, UDP, Ether, Raw, wrpcap, wrpcapng

    pkts = []
    for i in range(4):
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="198.51.100.7")
        p = p / (UDP(sport=1000 + i, dport=53) if i % 2 else ICMP(id=7, seq=i)) / Raw(b"x" * (10 * i))
        p.time = Decimal(f"1700000000.{123456 + i:06d}")
        pkts.append(p)
    wrpcap(str(HERE / "scapy_us_be.pcap"), pkts, endianness=">")
    for i, p in enumerate(pkts):
        p.time = Decimal(f"1700000001.{123456789 + i:09d}")
    wrpcap(str(HERE / "scapy_ns_le.pcap"), pkts, endianness="<", nano=True)
    for i, p in enumerate(pkts):
        p.time = Decimal(f"1700000002.{200 + i:06d}")
        p.sniffed_on = "eth0" if i % 2 else "wan1"
    wrpcapng(str(HERE / "scapy_multi_if.pcapng"), pkts)


def main() -> None:
    scapy_captures()
    if os.geteuid() == 0:
        tcpdump_ping(HERE / "tcpdump_lo_us.pcap")
        time.sleep(0.1)
        tcpdump_ping(HERE / "tcpdump_lo_ns.pcap", nano=True)
        tcpdump_ping(HERE / "tcpdump_lo_snap96.pcap", snaplen=96, size=300)


if __name__ == "__main__":
    main()

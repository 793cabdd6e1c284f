"""The four-box IPsec testbed (flowpath.testbed.sites) for the tests, and the traffic the tests push
through it: ping, TCP transfers with socat (or a paced sender), a capture with tcpdump, the gateways'
`ctl ip -s xfrm state` counters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowpath.ctl.client import ctl_call, ctl_request
from flowpath.testbed import sites
from flowpath.testbed.netns import Netns, require_netns

TOOLS = ("ping", "socat", "tcpdump", "ss")
DATA_SIZE = 10 << 20  # bytes each TCP transfer carries
SENDER = """\
import socket, sys, time
src, host, port, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
data = open(src, "rb").read()
s = socket.create_connection((host, port), timeout=30)
t0, chunk = time.monotonic(), 64 << 10
for off in range(0, len(data), chunk):
    s.sendall(data[off : off + chunk])
    ahead = (off + chunk) / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
s.shutdown(socket.SHUT_WR)
s.recv(1)  # until the receiver closed: everything was read
"""


def skip_reason() -> str | None:
    reason = require_netns()
    if reason:
        return reason
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"needs {', '.join(missing)}" if missing else None


def bring_up(**kw) -> sites.Sites:
    """A testbed with flowpath gateways under a prefix of this process, or a skip saying why not."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    tb = sites.Sites(f"fpt{os.getpid()}{kw.pop('tag', '')}", "flowpath", say=lambda _: None, **kw)
    tb.up()
    return tb


def ping(ns: Netns, dst: str, count: int = 3, deadline_s: int = 10) -> tuple[int, str]:
    """(replies, output) of `ping -c COUNT -w DEADLINE` (it stops after COUNT replies, or on an
    error such as an unresolved gateway)."""
    p = ns.run("ping", "-c", count, "-i", "0.2", "-w", deadline_s, dst, check=False, timeout=deadline_s + 5)
    m = re.search(r"(\d+) received", p.stdout)
    return (int(m.group(1)) if m else 0), p.stdout + p.stderr


def wait_listening(ns: Netns, port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ns.run("ss", "-Hlnt", f"sport = :{port}", check=False).stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} in {ns.name}")


def finish(procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{' '.join(map(str, p.args[4:]))} still running after {timeout_s} s"
            ) from None
    for p in procs:
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        assert p.returncode == 0, f"{' '.join(map(str, p.args[4:]))}: exit {p.returncode}: {err}"


def start_transfer(src: Netns, dst: Netns, dst_addr: str, data: Path, out: Path, port: int,
                   rate: float | None = None) -> list[subprocess.Popen]:  # fmt: skip
    """A socat on dst writes what arrives on TCP port to out; src sends data there (socat flat
    out, or paced at rate bytes/s). The two processes, for finish()."""
    server = dst.popen(
        "socat", "-u", f"TCP4-LISTEN:{port},reuseaddr", f"CREATE:{out}", stderr=subprocess.PIPE
    )
    wait_listening(dst, port)
    if rate is None:
        client = src.popen("socat", "-u", f"OPEN:{data}", f"TCP4:{dst_addr}:{port}", stderr=subprocess.PIPE)
    else:
        client = src.popen(sys.executable, "-c", SENDER, data, dst_addr, port, rate, stderr=subprocess.PIPE)
    return [client, server]


def transfer(src: Netns, dst: Netns, dst_addr: str, data: Path, out: Path, port: int, timeout_s: float = 60):
    finish(start_transfer(src, dst, dst_addr, data, out, port), timeout_s)


def ctl(tb: sites.Sites, gw: str, *argv: str) -> str:
    """`flowpath ctl ARGV` on a gateway; its output (AssertionError on a non-zero exit)."""
    r = ctl_call(tb.gateways[gw].ctl_path, ctl_request(list(argv)), timeout_s=30)
    assert r["rc"] == 0, f"ctl {' '.join(argv)} on {gw}: exit {r['rc']}: {r['err']}"
    return r["out"]


def sa_counters(tb: sites.Sites, gw: str) -> dict[int, tuple[int, int]]:
    """spi -> (bytes, packets) of `ip -s xfrm state`'s "lifetime current" on a gateway."""
    out, counters = ctl(tb, gw, "ip", "-s", "xfrm", "state"), {}
    for block in re.split(r"(?m)^(?=src )", out):
        spi = re.search(r"spi (0x[0-9a-f]+)", block)
        cur = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)", block)
        if spi and cur:
            counters[int(spi.group(1), 16)] = (int(cur.group(1)), int(cur.group(2)))
    return counters

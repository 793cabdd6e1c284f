"""The live tests' bench: flowpath.testbed.gateway's h1 -- gw -- h2 for pytest, and the traffic the
tests push through it (ping, socat file transfers, iperf3, a two-way UDP probe).

Offloads: the hosts' veths keep TX checksum offload and TSO on, as a real host's NIC would; a
gateway on AF_PACKET then receives partial checksums and GSO super-frames and must complete and cut
them itself (the kernel gateway does the same in its stack).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from flowpath.testbed.gateway import H2_V4, H2_V6, GatewayTopology
from flowpath.testbed.netns import Netns, require_netns

TOOLS = ("ping", "socat", "iperf3", "nft", "ss")
PROBE = Path(__file__).with_name("udp_probe.py")


def skip_reason(kind: str) -> str | None:
    """Why this kind of topology cannot run here, or None."""
    reason = require_netns()
    if reason:
        return reason
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if kind == "flowpath" and importlib.util.find_spec("flowpath.live") is None:
        return "flowpath run is not on this branch yet (no flowpath.live module)"
    return None


@contextmanager
def topology(kind: str, **kw):
    """GatewayTopology(kind) or a pytest skip saying why not; torn down also when the test fails."""
    reason = skip_reason(kind)
    if reason:
        pytest.skip(reason)
    with GatewayTopology(kind, **kw) as t:
        yield t


def h2_addr(family: int) -> str:
    return H2_V4 if family == 4 else H2_V6


def ping(ns: Netns, dst: str, count: int = 3, deadline_s: int = 5) -> tuple[int, int, str]:
    """(transmitted, received, output) of `ping -c COUNT -w DEADLINE`: it sends until COUNT replies
    came or the deadline passed, so transmitted > COUNT when replies were late."""
    p = ns.run("ping", "-c", count, "-i", "0.2", "-w", deadline_s, dst, check=False, timeout=deadline_s + 5)
    for line in p.stdout.splitlines():
        if "packets transmitted" in line:
            fields = line.split()
            return int(fields[0]), int(fields[3]), p.stdout + p.stderr
    return 0, 0, p.stdout + p.stderr


def wait_listening(ns: Netns, port: int, proto: str = "t", timeout_s: float = 10) -> None:
    """Until a socket listens (TCP, proto 't') or is bound (UDP, 'u') on port inside ns."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ns.run("ss", "-Hln" + proto, f"sport = :{port}", check=False).stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} in {ns.name}")


def _socat_tcp(family: int, port: int, listen: bool) -> str:
    if listen:
        return f"TCP{family}-LISTEN:{port},reuseaddr"
    host = H2_V4 if family == 4 else f"[{H2_V6}]"
    return f"TCP{family}:{host}:{port}"


def _finish(procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{' '.join(p.args[4:])} still running after {timeout_s} s") from None
    for p in procs:
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        assert p.returncode == 0, f"{' '.join(p.args[4:])}: exit {p.returncode}: {err}"


def tcp_upload(t: GatewayTopology, src: Path, dst: Path, family: int, port: int, timeout_s: float = 60):
    """h1 sends src over TCP to a socat on h2, which writes dst."""
    server = t.h2.popen(
        "socat", "-u", _socat_tcp(family, port, True), f"CREATE:{dst}", stderr=subprocess.PIPE
    )
    wait_listening(t.h2, port)
    client = t.h1.popen("socat", "-u", f"OPEN:{src}", _socat_tcp(family, port, False), stderr=subprocess.PIPE)
    _finish([client, server], timeout_s)


def tcp_download(t: GatewayTopology, src: Path, dst: Path, family: int, port: int, timeout_s: float = 60):
    """h1 connects to a socat on h2 that sends src; h1 writes what it reads to dst."""
    server = t.h2.popen("socat", "-u", f"OPEN:{src}", _socat_tcp(family, port, True), stderr=subprocess.PIPE)
    wait_listening(t.h2, port)
    client = t.h1.popen(
        "socat", "-u", _socat_tcp(family, port, False), f"CREATE:{dst}", stderr=subprocess.PIPE
    )
    _finish([client, server], timeout_s)


def iperf3(t: GatewayTopology, *client_args: str, family: int = 4, port: int = 5201, timeout_s: float = 30):
    """A one-off iperf3 server on h2, the client on h1 (-J); the client's JSON report."""
    server = t.h2.popen("iperf3", "-s", "-1", "-p", port, "-B", h2_addr(family))
    wait_listening(t.h2, port)
    p = t.h1.run(
        "iperf3", "-c", h2_addr(family), "-p", port, "-J", *client_args, check=False, timeout=timeout_s
    )
    report = json.loads(p.stdout) if p.stdout.strip() else {}
    assert p.returncode == 0 and "error" not in report, (
        f"iperf3 {' '.join(client_args)}: {p.stdout}{p.stderr}"
    )
    server.wait(5)
    return report


class UdpProbe:
    """Datagrams both ways over one UDP flow that h1 opens: h1 sends to h2 every interval_s, h2 sends
    to where h1's first datagram came from (the gateway's masquerade) every interval_s, each on its
    own clock, so one direction keeps going when the other is blocked. `result()` gives the
    CLOCK_MONOTONIC receive times on each side (the clock is the same in every namespace)."""

    def __init__(self, t: GatewayTopology, duration_s: float, family: int = 4, port: int = 7007,
                 interval_s: float = 0.01):  # fmt: skip
        args = (f"{time.monotonic() + duration_s:.6f}", str(interval_s))
        self.server = t.h2.popen(sys.executable, PROBE, "server", h2_addr(family), port, *args,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        wait_listening(t.h2, port, "u")
        self.client = t.h1.popen(sys.executable, PROBE, "client", h2_addr(family), port, *args,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.interval_s = interval_s

    def result(self, timeout_s: float = 30) -> tuple[list[float], list[float]]:
        """(times h2 received from h1, times h1 received from h2)."""
        out = []
        for p in (self.server, self.client):
            stdout, stderr = p.communicate(timeout=timeout_s)
            assert p.returncode == 0, f"udp_probe: exit {p.returncode}: {stderr.decode()}"
            out.append(json.loads(stdout)["recv"])
        return out[0], out[1]


def count_between(times: list[float], start: float, end: float) -> int:
    return sum(start <= x < end for x in times)

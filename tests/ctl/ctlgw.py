"""Shared by the tests/ctl tests: a Worker of the bundled example gateway with traffic forwarded through
it, a stand-in for the live loop's Gateway around it, a CtlServer serviced by poll(2) in a thread (as
the loop will), and `flowpath ctl` run in-process against it."""

from __future__ import annotations

import io
import select
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scapy.all import IP, UDP, Ether, Raw

from flowpath.cli import Environment, main
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.ctl.commands import ctl_dispatch
from flowpath.ctl.server import CtlServer
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GW_LAN, GW_WAN, H10, UPSTREAM = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:01:0a",
    "02:00:00:00:02:fe",
)
LAN0, WAN0 = 2, 3
T0 = 1_700_000_000 * 10**9
QUERY = (
    Ether(src=H10, dst=GW_LAN)
    / IP(src="192.168.1.10", dst="198.51.100.7")
    / UDP(sport=1000, dport=53)
    / Raw(b"q" * 20)
)
ANSWER = Ether(src=UPSTREAM, dst=GW_WAN) / IP(src="198.51.100.7", dst="203.0.113.1") / UDP(sport=53, dport=1000) / Raw(b"r" * 20)  # fmt: skip


class FakePort:
    """What the live loop's ports give `stats`: their own counters."""

    def __init__(self, name: str, ifindex: int, missed: int):
        self.name, self.ifindex, self.missed = name, ifindex, missed

    def counters(self) -> dict[str, int]:
        return {"rx_missed": self.missed}


@dataclass
class Gateway:
    """The attributes of flowpath.live's Gateway that the ctl commands read."""

    worker: Worker
    ports: dict = field(default_factory=dict)
    net_path: Path = EXAMPLES / "gateway.ip"
    rules_path: Path | None = EXAMPLES / "gateway.nft"
    started_ns: int = field(default_factory=time.monotonic_ns)

    def port_counters(self) -> dict[str, dict]:
        return {name: dict(port.counters()) for name, port in self.ports.items()}

    @property
    def cpus(self) -> list[Worker]:
        return [self.worker]


def poll(w: Worker, frames: list[tuple[int, object]], ts_ns: int) -> list[tuple[int, bytes, int]]:
    """One poll of [(ifindex, scapy frame)]; the frames it transmits."""
    b = PacketBatch(max(1, len(frames)))
    for ifx, f in frames:
        b.append(bytes(f), ifx, ts_ns)
    return w.poll(b).frames()


def example_gateway(net: str = "gateway.ip", rules: str = "gateway.nft") -> Gateway:
    """The example gateway with one UDP flow offloaded: query, answer, then three queries on the
    fast path."""
    w = Worker(
        parse_network((EXAMPLES / net).read_text(), net), parse_ruleset((EXAMPLES / rules).read_text(), rules)
    )
    assert len(poll(w, [(LAN0, QUERY)], T0)) == 1
    assert len(poll(w, [(WAN0, ANSWER)], T0 + 1000)) == 1
    assert len(poll(w, [(LAN0, QUERY)] * 3, T0 + 2000)) == 3
    assert w.stats.fastpath_packets == 3
    ports = {"lan0": FakePort("lan0", LAN0, 7), "wan0": FakePort("wan0", WAN0, 0)}
    return Gateway(w, ports)


@contextmanager
def serving(gw, **kw):
    """A CtlServer for gw at a fresh short path, serviced by poll(2) in a thread; yields the server."""
    d = Path(tempfile.mkdtemp(prefix="fpctl"))  # sun_path holds 108 bytes: pytest's tmp_path can be longer
    srv = CtlServer(d / "gw.sock", lambda req: ctl_dispatch(gw, req), **kw)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            p = select.poll()
            for fd, ev in srv.poll_events():
                p.register(fd, ev)
            for fd, ev in p.poll(20):
                srv.service(fd, ev)
            srv.expire()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        stop.set()
        t.join()
        srv.close()
        shutil.rmtree(d, ignore_errors=True)


def ctl(srv, *args: str) -> tuple[int, str, str]:
    """`flowpath ctl --ctl PATH ARGS...` in-process: (exit code, stdout, stderr)."""
    env = Environment(io.StringIO(), io.StringIO())
    rc = main(["ctl", "--ctl", str(srv.path), *args], env)
    return rc, env.stdout.getvalue(), env.stderr.getvalue()

"""The live gateway's loop (flowpath.live.gateway) on in-memory ports and a stand-in kernel: polls,
the idle clock's timers (neighbour resolution), transmit, SIGTERM with final counters, SIGHUP reload,
and the start-up checks of the network file against the kernel's interfaces. No root needed; the same
gateway on real AF_PACKET ports is tested in tests/live."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.all import ARP, IP, UDP, Ether

from flowpath.errors import ConfigError, UsageError
from flowpath.live.gateway import Gateway, RunOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KERNEL_MACS = {"lan0": "02:aa:00:00:01:01", "wan0": "02:aa:00:00:02:01"}
H10, UPSTREAM = "02:00:00:00:01:0a", "02:00:00:00:02:fe"
NETWORK = """\
link add lan0
link add wan0 mtu 1400
link set lan0 up
link set wan0 up
addr add 192.168.1.1/24 dev lan0
addr add 203.0.113.1/24 dev wan0
route add default via 203.0.113.254 dev wan0
"""


class MemoryPort:
    """A Port (flowpath.ports.base) over two in-memory queues; its descriptor turns readable when a
    frame is queued, as a ring's socket does."""

    def __init__(self, name: str, ifindex: int):
        self.name, self.ifindex = name, ifindex
        self.rxq: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self.closed = False

    def inject(self, frame: bytes) -> None:
        self.rxq.append(frame)
        self._w.send(b"x")

    def fileno(self) -> int:
        return self._r.fileno()

    def rx_burst(self, batch, now_ns: int) -> int:
        n = 0
        try:
            self._r.recv(4096)
        except BlockingIOError:
            pass
        while self.rxq and batch.n < batch.capacity:
            batch.append(self.rxq.popleft(), self.ifindex, now_ns)
            n += 1
        return n

    def tx_burst(self, batch, idx) -> int:
        self.sent.extend(batch.frame_bytes(int(i)) for i in idx)
        return len(idx)

    def tx_frame(self, frame: bytes) -> bool:
        self.sent.append(bytes(frame))
        return True

    def flush(self) -> None:
        pass

    def warm(self, batch) -> None:
        pass

    def counters(self) -> dict:
        return {"rx_missed": 0}

    def close(self) -> None:
        self.closed = True


class FakeKernel:
    """The kernel side: two interfaces without addresses (or with, when asked)."""

    def __init__(self, addresses=None):
        self.addresses = addresses or {}
        self.prepared, self.restored = [], []

    def kernel_link(self, name):
        mac = KERNEL_MACS.get(name)
        return None if mac is None else SimpleNamespace(mac=bytes.fromhex(mac.replace(":", "")), mtu=1500)

    def port_addresses(self, name):
        return self.addresses.get(name, [])

    def prepare_port(self, name):
        self.prepared.append(name)
        return name

    def restore_port(self, saved):
        self.restored.append(saved)


def gateway(tmp_path, network=NETWORK, kernel=None, warm=False, **kw):
    (tmp_path / "gw.ip").write_text(network)
    (tmp_path / "gw.nft").write_text((EXAMPLES / "gateway.nft").read_text())
    ports = {}

    def open_port(link, opts, gso=True):
        ports[link.name] = MemoryPort(link.name, link.ifindex)
        return ports[link.name]

    opts = RunOptions(tmp_path / "gw.ip", tmp_path / "gw.nft", ctl=tmp_path / "ctl.sock",
                      stats=tmp_path / "stats.json", **kw)  # fmt: skip
    gw = Gateway(opts, log=lambda line: None, kernel=kernel or FakeKernel(), open_port=open_port, warm=warm)
    return gw, ports


def wait_for(cond, timeout=120.0):  # a cold numba cache compiles the datapath first
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def drive(gw, script):
    """Run the gateway's loop in this (the main) thread while `script` runs in another, then SIGTERM."""
    errors = []

    def body():
        try:
            # signals before run() has its handlers would meet the default ones (SIGHUP: exit)
            assert gw.running.wait(60), "the loop did not start"
            script()
        except BaseException as e:  # reported after the loop stops
            errors.append(e)
        finally:
            if gw.running.is_set():
                os.kill(os.getpid(), signal.SIGTERM)
            else:  # never signal a process whose handlers are the default ones
                gw.stopping = True

    t = threading.Thread(target=body)
    t.start()
    try:
        stats = gw.run()
    finally:
        t.join()
        gw.close()
    if errors:
        raise errors[0]
    return stats


def test_ports_take_the_kernel_interfaces_mac_and_mtu_where_the_file_gives_none(tmp_path):
    gw, ports = gateway(tmp_path)
    net = gw.worker.net
    assert net.link_by_name("lan0").address == bytes.fromhex("02aa00000101")
    assert net.link_by_name("wan0").mtu == 1400  # the file's, not the kernel's 1500
    assert sorted(ports) == ["lan0", "wan0"]
    gw.close()


def test_resolves_next_hop_live_forwards_with_nat_and_stops_on_sigterm(tmp_path):
    kernel = FakeKernel()
    # warmed, as `flowpath run` is: a cold compile inside the loop would outlast the ARP retries
    gw, ports = gateway(tmp_path, kernel=kernel, warm=True)
    lan, wan = ports["lan0"], ports["wan0"]
    out = Ether(src=H10, dst=KERNEL_MACS["lan0"]) / IP(src="192.168.1.10", dst="198.51.100.7", ttl=64) / UDP(
        sport=4000, dport=53) / (b"q" * 32)  # fmt: skip

    def script():
        lan.inject(bytes(out))
        # the next hop is unknown: the packet waits behind an ARP request for 203.0.113.254
        assert wait_for(lambda: any(Ether(f).haslayer(ARP) for f in wan.sent))
        req = Ether(next(f for f in wan.sent if Ether(f).haslayer(ARP)))
        assert req[ARP].op == 1 and req[ARP].pdst == "203.0.113.254" and req[ARP].psrc == "203.0.113.1"
        reply = Ether(src=UPSTREAM, dst=KERNEL_MACS["wan0"]) / ARP(
            op=2, hwsrc=UPSTREAM, psrc="203.0.113.254", hwdst=KERNEL_MACS["wan0"], pdst="203.0.113.1")
        wan.inject(bytes(reply))
        assert wait_for(lambda: any(Ether(f).haslayer(UDP) for f in wan.sent))
        for _ in range(3):  # the same flow again: offloaded after the reply direction... and forwarded
            lan.inject(bytes(out))
        assert wait_for(lambda: sum(Ether(f).haslayer(UDP) for f in wan.sent) == 4)

    stats = drive(gw, script)
    udp = [Ether(f) for f in wan.sent if Ether(f).haslayer(UDP)]
    assert all(p[IP].src == "203.0.113.1" and p.dst == UPSTREAM and p[IP].ttl == 63 for p in udp)
    assert all(p.src == KERNEL_MACS["wan0"] for p in udp)
    assert stats["rx_packets"] == 5 and stats["forwarded_packets"] == 4 and stats["local_packets"] == 1
    assert stats["rx_packets"] == (stats["forwarded_packets"] + stats["dropped_packets"]
                                   + stats["local_packets"] + stats["held_packets"])  # fmt: skip
    import json

    assert json.loads((tmp_path / "stats.json").read_text())["rx_packets"] == 5
    assert all(p.closed for p in ports.values()) and sorted(kernel.restored) == ["lan0", "wan0"]


def test_sighup_reloads_and_a_bad_file_keeps_the_running_configuration(tmp_path):
    logs = []
    gw, ports = gateway(tmp_path)
    gw.log = logs.append
    lan = ports["lan0"]

    def script():
        (tmp_path / "gw.nft").write_text("table inet filter {\n  chain forward {\n    type filter hook forward\n")
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: any("reload refused" in line for line in logs))
        assert "gw.nft:4:1" in "\n".join(logs) or "gw.nft:3" in "\n".join(logs)
        (tmp_path / "gw.nft").write_text("table inet filter {\n  chain forward {\n    type filter hook forward "
                                         "priority 0; policy drop;\n  }\n}\n")  # fmt: skip
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: any(line.startswith("flowpath: reloaded") for line in logs))
        lan.inject(bytes(Ether(src=H10, dst=KERNEL_MACS["lan0"]) / IP(src="192.168.1.10", dst="198.51.100.7")
                         / UDP(sport=1, dport=2)))  # fmt: skip
        assert wait_for(lambda: gw.worker.stats.rx_packets == 1)

    stats = drive(gw, script)
    assert stats["drops"] == {"nf drop (forward)": 1} or sum(stats["drops"].values()) == 1
    assert not ports["wan0"].sent


def test_a_port_must_be_a_kernel_interface_without_addresses(tmp_path):
    with pytest.raises(ConfigError) as e:
        gateway(tmp_path, NETWORK.replace("link add wan0", "link add wan9"))
    assert (e.value.line, e.value.col) == (2, 10) and 'no interface "wan9"' in e.value.msg
    with pytest.raises(ConfigError) as e:
        gateway(tmp_path, kernel=FakeKernel({"wan0": ["10.9.9.9/24"]}))
    assert (e.value.line, e.value.col) == (2, 10) and "10.9.9.9/24" in e.value.msg
    with pytest.raises(ConfigError) as e:
        gateway(tmp_path, NETWORK + "link add t0 type veth peer name t1\n")
    assert e.value.line == 8 and "existing kernel interface" in e.value.msg
    with pytest.raises(UsageError):
        gateway(tmp_path, workers=0)


def test_warm_up_answers_what_hosts_first_ask():
    """The warm-up's questions are well-formed: each one gets its answer from the gateway."""
    from scapy.all import ICMPv6EchoReply, ICMPv6ND_NA

    from flowpath.bench import setup as S
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker
    from flowpath.live import warm
    from flowpath.packet.batch import PacketBatch

    net = S.NET + "addr add 2001:db8::1/64 dev lan0\n"
    w = Worker(parse_network(net, "<warm>"), parse_ruleset(S.RULES, "<warm>"))
    b = PacketBatch(4)
    for f in (warm._arp(1, S.CLIENT_MAC, S.CLIENT, warm.BCAST, 0x0A000001), warm._ns(S.CLIENT_MAC, S.GW_LAN),
              warm._echo4(S.CLIENT_MAC, S.GW_LAN), warm._echo6(S.CLIENT_MAC, S.GW_LAN)):  # fmt: skip
        b.append(f, S.LAN_IF, 10**9)
    out = [Ether(f) for _, f, _ in w.poll(b).frames()]
    assert [p[ARP].op for p in out if p.haslayer(ARP)] == [2]
    assert any(p.haslayer(ICMPv6ND_NA) for p in out) and any(p.haslayer(ICMPv6EchoReply) for p in out)
    assert any(p.haslayer(IP) and p[IP].proto == 1 for p in out) and len(out) == 4
    warm.warm_datapath()  # the whole warm-up runs

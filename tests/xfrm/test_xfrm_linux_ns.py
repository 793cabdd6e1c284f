"""flowpath ESP against Linux's own xfrm, in two network namespaces joined by a veth pair.

Namespace A plays flowpath's side (frames sent and captured on a packet socket), namespace B is a
Linux IPsec gateway configured with `ip xfrm state/policy add` (the same lines flowpath parses). A
UDP datagram encrypted by esp_output must reach a socket in B; B's reply, encrypted by Linux, must
decrypt in esp_input. Root only; skipped when namespaces, iproute2 or the kernel's AEAD are missing.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from flowpath.xfrm.config import xfrm_config_line
from flowpath.xfrm.esp import esp_input, esp_output
from flowpath.xfrm.state import Xfrm, xfrm_state_lookup

pytestmark = pytest.mark.root
NA, NB = f"fpx5a{os.getpid()}", f"fpx5b{os.getpid()}"
OA, OB = "198.18.5.1", "198.18.5.2"  # outer (veth) addresses
IA, IB = "10.51.0.1", "10.52.0.1"  # inner hosts
ALGS = {
    "gcm": ("rfc4106(gcm(aes))", "0x" + "0123456789abcdef" * 2 + "cafebabe"),
    "chacha": ("rfc7539esp(chacha20,poly1305)", "0x" + "00112233445566778899aabbccddeeff" * 2 + "01020304"),
}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    if sh("ip", "netns", "add", NA, check=False).returncode != 0:
        pytest.skip("network namespaces unavailable")
    try:
        sh("ip", "netns", "add", NB)
        sh("ip", "-n", NA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", NB)
        for ns, dev, addr in ((NA, "va", OA), (NB, "vb", OB)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", NB, "addr", "add", f"{IB}/32", "dev", "lo")
        sh("ip", "-n", NB, "route", "add", "10.51.0.0/24", "via", OA, "dev", "vb")
        sh(
            "ip",
            "netns",
            "exec",
            NB,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.vb.rp_filter=0",
        )
        yield
    finally:
        sh("ip", "netns", "del", NA, check=False)
        sh("ip", "netns", "del", NB, check=False)


def mac(ns: str, dev: str) -> str:
    return sh("ip", "-n", ns, "-br", "link", "show", dev).stdout.split()[2]


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{IB}", 5555)); s.settimeout(8)
data, peer = s.recvfrom(2048)
print(data.hex(), flush=True)
s.sendto(b"pong:" + data, peer)
"""

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("va", 0)); s.settimeout(0.5)
frame = bytes.fromhex(sys.argv[1])
end = time.time() + 8
while time.time() < end:
    s.send(frame)
    t = time.time() + 1
    while time.time() < t:
        try:
            f = s.recv(4096)
        except TimeoutError:
            break
        if len(f) > 34 and f[12:14] == b"\\x08\\x00" and f[23] == 50 and f[26:30] == socket.inet_aton("{OB}"):
            print(f.hex(), flush=True)
            sys.exit(0)
sys.exit(1)
"""


@pytest.mark.parametrize("alg", ["gcm", "chacha"])
@pytest.mark.parametrize("esn", [False, True], ids=["", "esn"])
def test_ping_pong_through_linux_xfrm(netns, alg, esn):
    name, key = ALGS[alg]
    extra = " replay-window 128 flag esn" if esn else " replay-window 32"
    lines = [
        f"xfrm state add src {OA} dst {OB} proto esp spi 0x501 reqid 1 mode tunnel aead '{name}' {key} 128{extra}",
        f"xfrm state add src {OB} dst {OA} proto esp spi 0x502 reqid 2 mode tunnel aead '{name}' {key} 128{extra}",
        f"xfrm policy add src 10.51.0.0/24 dst 10.52.0.0/24 dir in tmpl src {OA} dst {OB} proto esp reqid 1 mode tunnel",
        f"xfrm policy add src 10.52.0.0/24 dst 10.51.0.0/24 dir out tmpl src {OB} dst {OA} proto esp reqid 2 mode tunnel",
    ]
    for line in lines:
        r = sh("ip", "-n", NB, *shlex.split(line), check=False)
        if r.returncode != 0:
            pytest.skip(f"kernel refused: {line}: {r.stderr.strip()}")
    x = Xfrm()
    for n, line in enumerate(lines[:2], 1):
        xfrm_config_line(shlex.split(line), "t", n, list(range(1, 60)), x)
    out_sa = xfrm_state_lookup(x, OB, 0x501)
    in_sa = xfrm_state_lookup(x, OA, 0x502)
    payload = os.urandom(48)
    inner = raw(Ether(src=mac(NA, "va"), dst=mac(NB, "vb")) / IP(src=IA, dst=IB, ttl=64) / UDP(sport=4444, dport=5555)
                / payload)  # fmt: skip
    frame = esp_output(out_sa, inner, 14, 0, ttl=64)
    assert isinstance(frame, bytes)
    env = {**os.environ, "PYTHONPATH": ""}
    recv = subprocess.Popen(["ip", "netns", "exec", NB, sys.executable, "-c", textwrap.dedent(RECEIVER).format(IB=IB)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        send = subprocess.run(["ip", "netns", "exec", NA, sys.executable, "-c", SENDER.format(OB=OB), frame.hex()],
                              capture_output=True, text=True, timeout=20, env=env)  # fmt: skip
        got, err = recv.communicate(timeout=20)
    finally:
        recv.kill()
    assert got.strip() == payload.hex(), f"Linux did not deliver flowpath's ESP: {err}"
    assert send.returncode == 0, f"no ESP reply captured: {send.stderr}"
    reply = bytes.fromhex(send.stdout.strip())
    r = esp_input(in_sa, reply, 14, 0)
    assert isinstance(r, tuple), f"flowpath could not decrypt Linux's ESP: reason {r}"
    pkt = IP(r[0])
    assert (pkt.src, pkt.dst, pkt[UDP].dport) == (IB, IA, 4444)
    assert bytes(pkt[UDP].payload) == b"pong:" + payload
    assert ipaddress.ip_address(IP(reply[14:]).src) == ipaddress.ip_address(OB)

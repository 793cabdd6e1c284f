"""Oracle for MSS clamping: the TCP segment a Linux router forwards vs the one the evaluator rewrites (root).

Three namespaces A - R - C; R forwards with `tcp flags syn tcp option maxseg size set 1360` (mss.nft's rule,
nft_exthdr.c › nft_exthdr_tcp_set_eval). SYNs sent raw from A are captured raw on C. The TCP bytes must
equal ours, except the checksum when the MSS value sits at an odd offset: there Linux's incremental update
is wrong (documented as a Deviation in nft_exthdr.py) and ours must equal a full recompute instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import eval_rule, have_root_nft, load_fixture, make_pkt  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402

pytestmark = pytest.mark.root

RULE = "table inet m {\n chain f {\n type filter hook forward priority 0; policy accept;\n" \
       " tcp flags syn tcp option maxseg size set 1360\n }\n}\n"  # fmt: skip
CAPTURE = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))\n"
    "s.bind(('c0', 0)); s.settimeout(3)\n"
    "print('ready', flush=True)\n"
    "n = int(sys.argv[1])\n"
    "while n:\n"
    "    f = s.recv(4096)\n"
    "    if len(f) > 34 and f[23] == 6:\n"
    "        print(f.hex(), flush=True); n -= 1\n"
)
SEND = "import socket, sys\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('a0', 0))\n" \
       "for line in sys.stdin.read().split():\n    s.send(bytes.fromhex(line))\n"  # fmt: skip
OPTIONS = {
    "even": [("MSS", 1460), ("SAckOK", b"")],
    "odd": [("NOP", None), ("MSS", 1460), ("SAckOK", b"")],
    "larger_is_kept": [("MSS", 1200)],
}


def _sh(*args: str, **kw) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


@pytest.fixture
def router():
    if not have_root_nft():
        pytest.skip("needs root, ip and nft")
    a, r, c = (f"fpeval_{os.getpid()}_{x}" for x in "arc")
    try:
        for ns in (a, r, c):
            _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", a, "link", "add", "a0", "type", "veth", "peer", "name", "r0", "netns", r)
        _sh("ip", "-n", r, "link", "add", "r1", "type", "veth", "peer", "name", "c0", "netns", c)
        for ns, dev, addr in ((a, "a0", "10.1.0.1/24"), (r, "r0", "10.1.0.2/24"), (r, "r1", "10.2.0.2/24"),
                              (c, "c0", "10.2.0.1/24")):  # fmt: skip
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _sh("ip", "netns", "exec", r, "nft", "-f", "-", input=RULE)
        yield a, r, c
    finally:
        for ns in (a, r, c):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_forwarded_segment_matches_linux(router):
    a, r, c = router
    rmac = json.loads(_sh("ip", "-n", r, "-j", "link", "show", "r0"))[0]["address"]
    sent = {name: Ether(dst=rmac) / IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1000 + i, dport=80, flags="S",
                                                                             options=opts)
            for i, (name, opts) in enumerate(OPTIONS.items())}  # fmt: skip
    cap = subprocess.Popen(["ip", "netns", "exec", c, sys.executable, "-c", CAPTURE, str(len(sent))],
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert cap.stdout.readline().strip() == "ready"
        _sh(
            "ip",
            "netns",
            "exec",
            a,
            sys.executable,
            "-c",
            SEND,
            input="\n".join(raw(p).hex() for p in sent.values()),
        )
        got = {Ether(bytes.fromhex(line))[TCP].sport: Ether(bytes.fromhex(line))[TCP] for line in cap.stdout}
    finally:
        cap.kill()
        cap.wait()
    assert len(got) == len(sent)
    rt = load_fixture("mss.json")
    for name, p in sent.items():
        pkt = make_pkt(p)
        assert eval_rule(rt, "inet", "m", "f", 3, pkt) == C.NFT_CONTINUE
        ours, linux = Ether(pkt.skb.buf.tobytes())[TCP], got[p[TCP].sport]
        assert dict(ours.options)["MSS"] == dict(linux.options)["MSS"], name
        assert ours.chksum == _full_csum(pkt), name
        if name == "odd":
            assert raw(ours)[:16] == raw(linux)[:16] and raw(ours)[18:] == raw(linux)[18:]
            assert ours.chksum != linux.chksum  # Linux's checksum is wrong here; ours is the full recompute
        else:
            assert raw(ours) == raw(linux), name


def _full_csum(pkt) -> int:
    e = Ether(pkt.skb.buf.tobytes())
    del e[TCP].chksum
    return Ether(raw(e))[TCP].chksum

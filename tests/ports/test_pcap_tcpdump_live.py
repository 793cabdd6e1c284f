"""Live: tcpdump captures pings on lo in a private namespace; we read them as Scapy does.

No Linux counterpart (libpcap's savefile writer is the oracle).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from scapy.all import ICMP, Ether, rdpcap

from flowpath.ports.pcap import read_capture

MAKE = Path(__file__).resolve().parents[1] / "data" / "captures" / "make_captures.py"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("tcpdump") and shutil.which("ip")), reason="needs tcpdump and ip"),
]


def load_make():
    spec = importlib.util.spec_from_file_location("make_captures", MAKE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("nano", [False, True])
def test_tcpdump_capture_reads_as_scapy_reads_it(tmp_path, nano):
    path = tmp_path / "lo.pcap"
    load_make().tcpdump_ping(path, nano=nano, size=100, count=2)
    magic = path.read_bytes()[:4]
    assert magic in (
        (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") if nano else (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    )
    recs = list(read_capture(path))
    pkts = rdpcap(str(path))
    assert [(r.ts_ns, r.data, r.orig_len) for r in recs] == [
        (int(p.time * 10**9), p.original, p.wirelen) for p in pkts
    ]
    assert [Ether(r.data)[ICMP].type for r in recs] == [8, 0, 8, 0]  # echo request, reply
    assert all(len(r.data) == 14 + 20 + 8 + 100 for r in recs)
    ts = [r.ts_ns for r in recs]
    assert ts == sorted(ts) and ts[-1] - ts[0] < 10**10

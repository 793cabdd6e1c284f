"""`flowpath run --workers 2` between two hosts: PACKET_FANOUT steering feeds two worker threads.

Linux: net/packet/af_packet.c › packet_rcv_fanout (the ports' groups, ports/fanout.py's program);
net/core/dev.c › get_rps_cpu for the idea of one CPU per flow. The topology and its masquerading
ruleset are flowpath.testbed.gateway's; every connection's two directions must meet on one worker
(its conntrack entry and flowtable entry live there), or the bytes would not arrive intact.
"""

from __future__ import annotations

import json
import os

import pytest
from topology import h2_addr, ping, tcp_upload, topology

pytestmark = pytest.mark.root


def test_two_workers_forward_tcp_through_nat_and_ping(data_file, tmp_path):
    """Ping in both families, 20 MiB and ten smaller TCP uploads through the masquerade, byte for
    byte; at exit both workers have forwarded packets and their counts add up to the totals, every
    received packet with one fate."""
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(256 << 10))
    with topology("flowpath", run_args=["--workers", "2"]) as t:
        for family in (4, 6):
            tx, rx, out = ping(t.h1, h2_addr(family))
            assert rx == tx >= 3, out
        got = tmp_path / "up.bin"
        tcp_upload(t, data_file, got, 4, 5001)
        assert got.read_bytes() == data_file.read_bytes()
        for k in range(10):  # ten connections: both workers get some (each 1/2, by the client's port)
            got = tmp_path / f"small{k}.bin"
            tcp_upload(t, small, got, 4 if k % 2 else 6, 5100 + k)
            assert got.read_bytes() == small.read_bytes(), k
        live = t.gateway.stats()  # ctl stats --json with two workers
        assert live["stats"]["forwarded_packets"] > 0 and isinstance(live["flowtables"], dict), live
        rc, _ = t.gateway.terminate()
        assert rc == 0, t.gateway.log()
        s = json.loads(t.gateway.stats_path.read_text())
    per = s["workers"]
    assert len(per) == 2 and all(w["forwarded_packets"] > 0 for w in per), per
    for key in ("rx_packets", "forwarded_packets", "fastpath_packets", "dropped_packets"):
        assert sum(w[key] for w in per) == s[key], (key, per, s[key])
    fates = s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
    assert s["rx_packets"] == fates, s
    assert s["fastpath_packets"] > 0, s

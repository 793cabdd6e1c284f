"""`flowpath ctl ip xfrm` on a gateway forwarding through an offloaded IPsec flow: changes go through
the network file's parser, and the fast path follows them (examples/ipsec/west.ip, Scapy as east).

Linux: iproute2 ip/xfrm_state.c, ip/xfrm_policy.c; a deleted state's cached xfrm dsts fail
xfrm_dst_check, and nf_flow_offload_ip_hook tears the flow down."""

from __future__ import annotations

import re
import shlex

import pytest
from ctlgw import EXAMPLES, Gateway, poll, serving
from ctlgw import ctl as run_ctl
from scapy.all import IP, UDP, Ether, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.xfrm import evp

pytestmark = pytest.mark.skipif(not evp.evp_load(), reason="the compiled ESP path needs libcrypto")

IPSEC = EXAMPLES / "ipsec"
GW_LAN, GW_WAN, PEER, HOST = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:02:02",
    "02:00:00:00:01:05",
)
LAN0, WAN0, T0 = 2, 3, 1_700_000_000 * 10**9
OUT_SA = re.search(r"^xfrm state add src 192.0.2.1 dst 192.0.2.2 .*$", (IPSEC / "west.ip").read_text(), re.M)[
    0
]
KEY_IN = bytes.fromhex("c2bcc37e049df12cb16413db7bc52de3ddac4311")  # west.ip's SA 0x2002 (east -> west)
TO_EAST = (
    Ether(src=HOST, dst=GW_LAN)
    / IP(src="10.1.0.5", dst="10.2.0.7")
    / UDP(sport=1000, dport=2000)
    / Raw(b"w" * 32)
)


def from_east(seq: int) -> Ether:
    sa = SecurityAssociation(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=KEY_IN,
                             tunnel_header=IP(src="192.0.2.2", dst="192.0.2.1"))  # fmt: skip
    inner = IP(src="10.2.0.7", dst="10.1.0.5", ttl=64) / UDP(sport=2000, dport=1000) / Raw(b"e" * 32)
    return Ether(src=PEER, dst=GW_WAN) / sa.encrypt(inner, seq_num=seq)


def esp_spi(frames) -> list[int]:
    return [Ether(f)[ESP].spi for _, f, _ in frames if ESP in Ether(f)]


@pytest.fixture
def west():
    """west with the flow 10.1.0.5:1000 <-> 10.2.0.7:2000 offloaded (ESP out with SA 0x1001)."""
    w = Worker(parse_network((IPSEC / "west.ip").read_text(), "west.ip"),
               parse_ruleset((IPSEC / "gateway.nft").read_text(), "gateway.nft"))  # fmt: skip
    assert esp_spi(poll(w, [(LAN0, TO_EAST)], T0)) == [0x1001]
    assert len(poll(w, [(WAN0, from_east(1))], T0 + 1000)) == 1
    fast = w.stats.fastpath_packets
    assert esp_spi(poll(w, [(LAN0, TO_EAST)] * 2, T0 + 2000)) == [0x1001] * 2
    assert w.stats.fastpath_packets == fast + 2
    return Gateway(w, net_path=IPSEC / "west.ip", rules_path=IPSEC / "gateway.nft")


def test_deleting_the_sa_tears_its_flow_down_and_adding_it_back_restores_it(west):
    w = west.worker
    with serving(west) as srv:
        rc, out, err = run_ctl(srv, "ip", "xfrm", "state", "del", "dst", "192.0.2.2", "spi", "0x1001")
        assert (rc, err) == (0, "")
        listing = run_ctl(srv, "flowtable", "list")[1]
        assert "TEARDOWN" in listing and "xfrm-out:sa0" in listing
        assert "spi 0x00001001" not in run_ctl(srv, "ip", "xfrm", "state")[1]
    fast, slow = w.stats.fastpath_packets, w.stats.slowpath_packets
    assert poll(w, [(LAN0, TO_EAST)], T0 + 3000) == []  # the out policy finds no SA: dropped
    assert (w.stats.fastpath_packets, w.stats.slowpath_packets) == (fast, slow + 1)
    assert sum(w.stats.as_dict(w.ifname)["drops"].values()) >= 1
    with serving(west) as srv:
        rc, _, err = run_ctl(srv, "ip", *shlex.split(OUT_SA))  # the network file's line, over ctl
        assert (rc, err) == (0, "")
    assert [x.index for x in w.xfrm.states] == [1, 2] and len(w.xfrm.slots) == 3  # a new row, never row 0
    frames = poll(w, [(LAN0, TO_EAST)], T0 + 4000)
    assert esp_spi(frames) == [0x1001] and Ether(frames[0][1])[ESP].seq == 1  # the new SA's first packet


def test_a_policy_change_tears_every_flow_down(west):
    w = west.worker
    with serving(west) as srv:
        rc, _, err = run_ctl(srv, "ip", "xfrm", "policy", "deleteall", "dir", "out")
        assert (rc, err) == (0, "")
        assert "dir out" not in run_ctl(srv, "ip", "xfrm", "policy", "list")[1]
        assert "dir fwd" in run_ctl(srv, "ip", "xfrm", "policy", "list")[1]
    slow = w.stats.slowpath_packets
    frames = poll(w, [(LAN0, TO_EAST)], T0 + 3000)  # no out policy now: in clear, by the classic path
    assert esp_spi(frames) == [] and Ether(frames[0][1])[IP].dst == "10.2.0.7"
    assert w.stats.slowpath_packets == slow + 1


def test_a_bad_xfrm_line_is_rc_2_with_its_position_and_changes_nothing(west):
    w = west.worker
    states = list(w.xfrm.states)
    with serving(west) as srv:
        rc, out, err = run_ctl(srv, "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.9", "proto",
                               "esp", "spi", "0x77", "aead", "rfc4106(gcm(aes))", "0x1234", "128")  # fmt: skip
        assert rc == 2 and out == ""
        head, line, caret = err.splitlines()
        assert head.startswith("<ctl>:1:") and "needs a 160 or 288-bit key" in head
        assert (
            line
            == "ip xfrm state add src 192.0.2.1 dst 192.0.2.9 proto esp spi 0x77 aead 'rfc4106(gcm(aes))' 0x1234 128"
        )
        assert line[caret.index("^") :].startswith("0x1234") and caret.count("^") == len("0x1234")
        rc, _, err = run_ctl(srv, "ip", "xfrm", "state", "delete", "dst", "192.0.2.2", "spi", "0x99")
        assert (
            rc == 2
            and "No such process" in err
            and err.splitlines()[2].index("^") == err.splitlines()[1].index("0x99")
        )
        rc, _, err = run_ctl(srv, "ip", "xfrm", "state", "frob")
        assert rc == 2 and '"xfrm state frob" is unknown' in err
    assert w.xfrm.states == states

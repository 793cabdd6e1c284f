"""An IPsec gateway on two workers (flowpath/workers.py): RFC 9611 per-CPU SAs on the fast path, ESP
steered by SPI and handed to the flow's worker after decryption, and one shared SA used by both.

West runs on two workers with one outbound SA per CPU (`pcpu-num 0|1`, policy flag 0x4) besides the
fallback; east is one worker. Scapy decrypts every ESP packet west emits with the key of the SA whose
SPI it carries; the inner packets must be the ones sent.
"""

from __future__ import annotations

from collections import Counter

import pytest
from scapy.all import IP, UDP, Ether, raw
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.bench import ipsec as B
from flowpath.bench.scaling import SPI_PCPU, _relay, pcpu_east_net, pcpu_west_net, steer_frames
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.reason import Reason
from flowpath.packet.steer import spi_cpu
from flowpath.workers import Workers

FLOWS = 24


def _gateways(pcpu: bool):
    wnet = pcpu_west_net(2) if pcpu else B.gateway_net("west")
    enet = pcpu_east_net(2) if pcpu else B.gateway_net("east")
    west = Workers(parse_network(wnet, "<west>"), parse_ruleset(B.RULES, "<west.nft>"), n=2)
    east = Worker(parse_network(enet, "<east>"), parse_ruleset(B.RULES, "<east.nft>"))
    return west, east


def _decrypt(frame: bytes):
    """(SPI, inner IP packet) of an ESP frame west sent, with the key of the SA of its SPI."""
    p = Ether(frame)
    spi = p[ESP].spi
    sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(B.sa_key("gcm", spi)),
                             tunnel_header=IP(src=B.SIDES["west"][3], dst=B.SIDES["east"][3]))  # fmt: skip
    return spi, sa.decrypt(p[IP])


@pytest.mark.parametrize("pcpu", [True, False], ids=["pcpu", "shared-sa"])
def test_two_workers_encrypt_with_their_sa_and_hand_decrypted_replies_to_the_flow(pcpu):
    west, east = _gateways(pcpu)
    lan, wan = (west.net.link_by_name(n).ifindex for n in ("lan0", "wan0"))
    up, down = B.inner_frames(FLOWS, 128)
    owner = steer_frames(up, 2)
    assert set(owner) == {0, 1}  # both workers own flows

    # first packets (classic path): each worker picks its SA
    esp = [f for ifx, f in _relay(west, up, lan) if ifx == wan]
    assert len(esp) == FLOWS
    got = Counter()
    for f in esp:
        spi, inner = _decrypt(f)
        got[spi] += 1
        k = next(i for i, u in enumerate(up) if raw(Ether(u)[UDP]) == raw(inner[UDP]))
        want = SPI_PCPU + owner[k] if pcpu else B.SPI_WE
        assert spi == want
        assert inner[IP].ttl == B.INNER_TTL - 1 and inner[IP].src == B.SUNSET
    # replies: ESP of one SA, steered by SPI to one worker, decrypted there and handed to the flow's
    back = [f for ifx, f in _relay(east, [f for f in esp], wan) if ifx == lan]
    assert len(back) == FLOWS
    replies = [f for ifx, f in _relay(east, down, lan) if ifx == wan]
    owner_in = spi_cpu(B.SPI_EW, 2)
    handed = sum(1 for c in owner if c != owner_in)
    out = _relay(west, replies, wan)
    assert sorted(raw(Ether(f)[UDP]) for ifx, f in out if ifx == lan) == sorted(raw(Ether(d)[UDP]) for d in down)
    s = west.stats
    assert s.reasons[Reason.RPS_HANDOFF] == 0  # every handed packet reached its worker and its fate
    assert s.slowpath_packets >= FLOWS + handed
    # the replies offloaded the flows, each on the worker both its directions reach
    for c, w in enumerate(west.workers):
        entries = sum(len(ft) for ft, _ in w.flowtables.values())
        assert entries == owner.count(c)
    # established: the fast path encrypts with the same SAs, on each worker without the other
    esp2 = [f for ifx, f in _relay(west, up, lan) if ifx == wan]
    assert Counter(_decrypt(f)[0] for f in esp2) == got
    assert west.stats.fastpath_packets >= FLOWS
    # and the fast path's decryption hands over too, to the flow's worker's fast path
    replies2 = [f for ifx, f in _relay(east, down, lan) if ifx == wan]
    fast, slow = west.stats.fastpath_packets, west.stats.slowpath_packets
    out2 = _relay(west, replies2, wan)
    assert sorted(raw(Ether(f)[UDP]) for ifx, f in out2 if ifx == lan) == sorted(raw(Ether(d)[UDP]) for d in down)
    assert (west.stats.fastpath_packets - fast, west.stats.slowpath_packets - slow) == (FLOWS, 0)
    assert west.stats.reasons[Reason.RPS_HANDOFF] == 0
    st = west.stats.as_dict(west.ifname)
    assert st["rx_packets"] == st["forwarded_packets"] + st["dropped_packets"] + st["local_packets"] + st["held_packets"]
    west.close()


def test_shared_sa_sequence_numbers_stay_unique_across_workers():
    west, east = _gateways(pcpu=False)
    lan, wan = (west.net.link_by_name(n).ifindex for n in ("lan0", "wan0"))
    up, down = B.inner_frames(FLOWS, 128)
    esp = [f for ifx, f in _relay(west, up, lan) if ifx == wan]
    _relay(east, esp, wan)
    _relay(west, [f for ifx, f in _relay(east, down, lan) if ifx == wan], wan)
    esp = [f for ifx, f in _relay(west, up * 3, lan) if ifx == wan]
    seqs = [Ether(f)[ESP].seq for f in esp]
    assert len(seqs) == 3 * FLOWS and len(set(seqs)) == len(seqs)  # one SA, one sequence
    west.close()

"""nf_defrag's queues on their own: what Linux keeps, drops and builds, fragment by fragment.

Linux: net/ipv4/ip_fragment.c › ip_frag_queue, ip_frag_too_far, ip_frag_reasm; net/ipv4/inet_fragment.c
› inet_frag_find, inet_frag_queue_insert (runs of adjacent fragments; RFC 5722 with Errata 3089);
net/ipv6/netfilter/nf_conntrack_reasm.c › nf_ct_frag6_queue. The whole path is tests/datapath/test_defrag.py.
"""

import pytest
from ct_helpers import SEC, skb_of
from scapy.all import IP, UDP, IPv6, IPv6ExtHdrFragment, Raw, fragment

from flowpath.netfilter.constants import (
    NF_ACCEPT,
    NF_DROP,
    NF_INET_LOCAL_OUT,
    NF_INET_PRE_ROUTING,
    NF_IP_PRI_CONNTRACK_DEFRAG,
    NF_STOLEN,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
)
from flowpath.netfilter.hooks import ENTRY_CONNTRACK, ENTRY_DEFRAG, Netfilter
from flowpath.netfilter.nf_defrag import NfDefrag
from flowpath.packet.reason import Reason

PRE = NF_INET_PRE_ROUTING
C, S = "10.0.0.2", "192.168.1.9"
BODY = bytes(range(256)) * 13
QUEUED = (NF_STOLEN, Reason.IP_DEFRAG_QUEUED)


def frag4(off: int, n: int, more: bool, ident: int = 1, df: bool = False, tos: int = 0, src: str = C):
    flags = (1 if more else 0) | (2 if df else 0)
    return IP(src=src, dst=S, id=ident, proto=17, flags=flags, frag=off // 8, tos=tos) / Raw(
        BODY[off : off + n]
    )


def feed(d: NfDefrag, pkt, ts_ns: int = 0, hook: int = PRE):
    skb = skb_of(pkt, ts_ns)
    return d.nf_defrag(skb, hook), skb


def test_defrag_runs_first_where_conntrack_runs():
    """NF_IP_PRI_CONNTRACK_DEFRAG (-400) in PRE_ROUTING and LOCAL_OUT of both families, before
    conntrack; nowhere else."""
    nf = Netfilter(None, None, lambda *a: None, NfDefrag())
    for (nfproto, hook), entries in nf.entries.items():
        kinds = [e.kind for e in entries]
        if hook in (NF_INET_PRE_ROUTING, NF_INET_LOCAL_OUT):
            assert (
                kinds[:2] == [ENTRY_DEFRAG, ENTRY_CONNTRACK] and entries[0].prio == NF_IP_PRI_CONNTRACK_DEFRAG
            )
        else:
            assert ENTRY_DEFRAG not in kinds, (nfproto, hook)
    assert {NFPROTO_IPV4, NFPROTO_IPV6} == {p for p, _ in nf.entries}


def test_whole_datagram_carries_what_its_output_needs():
    """ip_frag_reasm: the first fragment's header, tot_len, DF only when the largest fragments all had
    it (IPSKB_FRAG_PMTU), frag_max_size the largest fragment, frag_list the others' data lengths;
    ignore_df set (nf_ct_ipv4_gather_frags). Not a fragment any more: conntrack tracks it by its ports."""
    d = NfDefrag()
    frags = [frag4(0, 600, True, df=True), frag4(600, 1200, True, df=True), frag4(1800, 80, False)]
    assert feed(d, frags[2])[0] == QUEUED and feed(d, frags[0])[0] == QUEUED
    v, skb = feed(d, frags[1])
    assert v == (NF_ACCEPT, None)
    whole = IP(skb.tobytes()[14:])
    assert (whole.len, int(whole.flags), whole.frag, whole.id) == (20 + 1880, 2, 0, 1)
    assert bytes(whole.payload) == BODY[:1880]
    assert (skb.frag_max_size, skb.frag_list, skb.frag_pmtu, skb.ignore_df) == (1220, (1200, 80), True, True)
    assert not skb.frag and (skb.sport, skb.dport) == (0x0001, 0x0203)  # the bytes at offset 0 of BODY
    assert not d.ipv4.queues and d.ipv4.mem == 0
    big_no_df = [frag4(0, 600, True, 2, df=True), frag4(600, 1200, True, 2), frag4(1800, 8, False, 2)]
    for f in big_no_df:
        v, skb = feed(d, f)
    assert v == (NF_ACCEPT, None) and int(IP(skb.tobytes()[14:]).flags) == 0 and not skb.frag_pmtu


def test_duplicate_inside_a_run_is_dropped_but_across_runs_is_an_overlap():
    """inet_frag_queue_insert: fragments received in order form one run, and anything inside a run is a
    duplicate (dropped, queue kept), even if it straddles two of them; received out of order they are
    separate runs, and the same fragment overlaps both: the datagram is dropped."""
    straddle = frag4(504, 1000, True)
    d = NfDefrag()
    feed(d, frag4(0, 1000, True))
    feed(d, frag4(1000, 1000, True))
    assert feed(d, straddle)[0] == (NF_STOLEN, Reason.DUP_FRAG)
    assert feed(d, frag4(2000, 1080, False))[0] == (NF_ACCEPT, None)
    d = NfDefrag()
    feed(d, frag4(1000, 1000, True))
    feed(d, frag4(0, 1000, True))
    assert feed(d, straddle)[0] == (NF_STOLEN, Reason.IP_FRAG_OVERLAP)
    # what it held dies with it: consumed in Linux, a drop with the killer's reason here
    assert d.killed == [Reason.IP_FRAG_OVERLAP] * 2 and not d.ipv4.queues and d.ipv4.mem == 0


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (frag4(8, 1992, False), "a last fragment ending before data already held"),
        (frag4(1000, 80, False), "a second last fragment with another end"),
        (frag4(2000, 1000, True), "data beyond the end the last fragment set"),
        (frag4(1000, 7, True), "a non-last fragment shorter than 8 bytes (end == offset once trimmed)"),
    ],
)
def test_ipv4_inconsistent_fragment_kills_the_queue(second, why):
    """ip_frag_queue › discard_qp: the fragment in hand is dropped, the queue killed (what it held
    dies with it: consumed in Linux, inet_frag_destroy; a drop with the same reason here)."""
    d = NfDefrag()
    assert feed(d, frag4(1000, 1080, False))[0] == QUEUED  # sets the end: 2080
    assert feed(d, second)[0] == (NF_STOLEN, Reason.IP_FRAG_INVALID), why
    assert d.killed == [Reason.IP_FRAG_INVALID] and not d.ipv4.queues


def test_ipv4_non_last_fragment_is_trimmed_to_8_bytes():
    """ip_frag_queue: a non-last fragment's end is rounded down to 8 bytes; its tail is not data."""
    d = NfDefrag()
    feed(d, frag4(0, 1003, True))  # 1000 bytes kept
    v, skb = feed(d, frag4(1000, 80, False))
    assert v == (NF_ACCEPT, None) and bytes(IP(skb.tobytes()[14:]).payload) == BODY[:1080]


def test_ecn_of_the_fragments():
    """ip_frag_ecn_table: CE with ECT fragments makes the datagram CE; CE with not-ECT drops it all."""
    d = NfDefrag()
    feed(d, frag4(0, 1000, True, tos=0x02))  # ECT(0)
    v, skb = feed(d, frag4(1000, 80, False, tos=0x03))  # CE
    assert v == (NF_ACCEPT, None) and IP(skb.tobytes()[14:]).tos == 0x03
    feed(d, frag4(0, 1000, True, ident=2, tos=0x00))  # not-ECT
    assert feed(d, frag4(1000, 80, False, ident=2, tos=0x03))[0] == (NF_STOLEN, Reason.IP_FRAG_INVALID)
    assert not d.ipv4.queues and d.ipv4.mem == 0


def test_datagram_over_65535_bytes_is_dropped():
    """ip_frag_reasm › out_oversize: the fragment that completes it and every one held are dropped."""
    d = NfDefrag()
    feed(d, frag4(0, 1000, True))
    last = IP(src=C, dst=S, id=1, proto=17, frag=65000 // 8) / Raw(b"x" * 600)
    assert feed(d, last)[0] == QUEUED  # a gap: not complete yet
    for off in range(1000, 65000, 1480):
        v, _ = feed(
            d, IP(src=C, dst=S, id=1, proto=17, flags=1, frag=off // 8) / Raw(b"y" * min(1480, 65000 - off))
        )
    assert v == (NF_STOLEN, Reason.IP_FRAG_INVALID)
    assert not d.ipv4.queues and d.ipv4.mem == 0


def test_more_than_ipfrag_max_dist_fragments_from_the_source_restart_the_queue():
    """ip_frag_too_far: the source's fragment count moved more than ipfrag_max_dist (64) since this
    queue's last fragment (64 others in between), and the queue starts over: its fragments dropped as
    FRAG_TOO_FAR, the timer re-armed."""
    d = NfDefrag()
    feed(d, frag4(0, 1000, True, ident=1), 0)
    for k in range(63):
        feed(d, frag4(0, 8, True, ident=100 + k), k)  # other datagrams of the same host
    assert feed(d, frag4(1000, 1000, True, ident=1), 100)[0] == QUEUED and not d.killed
    for k in range(64):
        feed(d, frag4(0, 8, True, ident=200 + k), 200 + k)
    assert feed(d, frag4(2000, 1080, False, ident=1), 5 * SEC)[0] == QUEUED  # not complete: restarted
    assert d.killed == [Reason.FRAG_TOO_FAR] * 2
    q = d.ipv4.queues[(0x0A000002, 0xC0A80109, 1, 17, 2)]
    assert q.expires_ns == 35 * SEC and q.meat == 1080
    feed(d, frag4(0, 8, True, ident=1, src="10.0.0.3"), 5 * SEC)  # another host: its own count
    assert d.peers == {0x0A000002: 1 + 63 + 1 + 64 + 1, 0x0A000003: 1}


def test_memory_above_the_high_threshold_refuses_every_fragment_until_expiry():
    """inet_frag_find: above high_thresh no fragment is queued, of a new datagram or a known one;
    memory comes back when queues expire."""
    d = NfDefrag(high_thresh=3000)
    for k in range(3):
        assert feed(d, frag4(0, 1000, True, ident=k))[0] == QUEUED
    assert d.ipv4.mem == 3 * 1034
    assert feed(d, frag4(1000, 80, False, ident=0))[0] == (NF_STOLEN, Reason.IP_FRAG_MEM)
    assert feed(d, frag4(0, 1000, True, ident=9))[0] == (NF_STOLEN, Reason.IP_FRAG_MEM)
    assert d.inet_frag_expire(30 * SEC)[0] == 3
    assert d.ipv4.mem == 0 and feed(d, frag4(0, 1000, True, ident=9), 30 * SEC)[0] == QUEUED


def test_timer_is_set_once_and_a_late_fragment_starts_a_new_queue():
    """The queue's timer starts with it and later fragments do not push it back; a fragment looking up
    a queue past its deadline starts a fresh one, and the old one is reported by the next expiry."""
    d = NfDefrag()
    feed(d, frag4(0, 1000, True), 0)
    feed(d, frag4(1000, 1000, True), 29 * SEC)
    held, heads = d.inet_frag_expire(29 * SEC)
    assert (held, heads) == (0, [])
    assert feed(d, frag4(2000, 1080, False), 30 * SEC)[0] == QUEUED  # not completing the old queue
    held, heads = d.inet_frag_expire(30 * SEC)
    assert held == 2 and len(heads) == 1 and IP(heads[0].tobytes()[14:]).frag == 0
    assert len(d.ipv4.queues) == 1  # the late fragment's own queue, due at 60 s
    assert d.inet_frag_expire(60 * SEC)[0] == 1 and not d.ipv4.queues


# -- IPv6: nf_ct_frag6_queue ----------------------------------------------------------------------------


def frag6(off: int, n: int, more: bool, ident: int = 5):
    fh = IPv6ExtHdrFragment(nh=17, id=ident, offset=off // 8, m=int(more))
    return IPv6(src="2001:db8:1::10", dst="2001:db8:2::7") / fh / Raw(BODY[off : off + n])


def test_ipv6_reassembly_removes_the_fragment_header():
    """nf_ct_frag6_reasm: the byte that named the fragment header names what followed it; payload
    length of the whole; frag_max_size is the largest fragment (40 + its payload length); the id kept."""
    d = NfDefrag()
    assert feed(d, frag6(600, 1200, True))[0] == QUEUED
    assert feed(d, frag6(0, 600, True))[0] == QUEUED
    v, skb = feed(d, frag6(1800, 1280, False))
    assert v == (NF_ACCEPT, None)
    whole = IPv6(skb.tobytes()[14:])
    assert (whole.nh, whole.plen, bytes(whole.payload)) == (17, 3080, BODY[:3080])
    assert (skb.frag_max_size, skb.frag_list, skb.frag_id, skb.ignore_df) == (
        40 + 1288,
        (1200, 1280),
        5,
        True,
    )


def test_ipv6_errors_drop_the_fragment_but_keep_the_queue():
    """Unlike IPv4, a last fragment with another end, or data past the end, only drops itself."""
    d = NfDefrag()
    feed(d, frag6(1000, 80, False))
    assert feed(d, frag6(1000, 72, False))[0] == (NF_DROP, Reason.IP_FRAG_INVALID)
    assert feed(d, frag6(2000, 8, True))[0] == (NF_DROP, Reason.IP_FRAG_INVALID)
    assert feed(d, frag6(0, 1000, True))[0] == (NF_ACCEPT, None) and not d.killed


def test_ipv6_non_last_fragment_off_8_bytes_kills_the_queue_and_goes_on():
    """nf_ct_frag6_queue returns -EPROTO: the queue is killed and the fragment itself goes on untouched
    (conntrack finds it INVALID; Linux does not send the parameter problem RFC 8200 asks for)."""
    d = NfDefrag()
    feed(d, frag6(0, 1000, True))
    v, skb = feed(d, frag6(1000, 1003, True))
    assert v == (NF_ACCEPT, None) and skb.frag and not d.ipv6.queues and d.ipv6.mem == 0
    assert d.killed == [Reason.IP_FRAG_INVALID]  # the fragment it held


def test_ipv6_overlap_drops_the_datagram():
    d = NfDefrag()
    feed(d, frag6(0, 1000, True))
    assert feed(d, frag6(992, 1000, True))[0] == (NF_DROP, Reason.IP_FRAG_OVERLAP)
    assert d.killed == [Reason.IP_FRAG_OVERLAP] and not d.ipv6.queues


def test_ipv6_queues_live_60_s_and_the_key_has_the_input_interface():
    d = NfDefrag()
    skb = skb_of(frag6(0, 1000, True), 0, iif=2)
    d.nf_defrag(skb, PRE)
    skb = skb_of(frag6(1000, 80, False), SEC, iif=3)  # another interface: another queue
    assert d.nf_defrag(skb, PRE) == QUEUED and len(d.ipv6.queues) == 2
    assert d.inet_frag_expire(59 * SEC)[0] == 0 and d.inet_frag_expire(60 * SEC)[0] == 1


def test_not_fragments_and_other_hooks_pass():
    d = NfDefrag()
    whole = IP(src=C, dst=S) / UDP(sport=1, dport=2) / Raw(b"x")
    assert feed(d, whole)[0] == (NF_ACCEPT, None)
    atomic = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(nh=17, id=3) / UDP() / Raw(b"x")
    v, skb = feed(d, atomic)  # offset 0, M 0: a queue of one, reassembled at once without the header
    assert v == (NF_ACCEPT, None) and IPv6(skb.tobytes()[14:]).nh == 17 and skb.l4proto == 17
    frags = fragment(IP(src=C, dst=S, id=4) / UDP() / Raw(BODY[:100]), 48)
    assert feed(d, frags[0], hook=NF_INET_LOCAL_OUT)[0] == QUEUED
    assert feed(d, frags[1], hook=PRE)[0] == QUEUED  # conntrack's IN and OUT users: separate queues
    assert len(d.ipv4.queues) == 2

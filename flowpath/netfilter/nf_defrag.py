"""Reassembly before conntrack: the defrag hook entry, its fragment queues and their timers.

Linux: net/ipv4/netfilter/nf_defrag_ipv4.c › ipv4_conntrack_defrag and net/ipv6/netfilter/
nf_defrag_ipv6_hooks.c › ipv6_defrag (NF_IP_PRI_CONNTRACK_DEFRAG, -400, in PRE_ROUTING and LOCAL_OUT);
net/ipv4/ip_fragment.c › ip_defrag, ip_frag_queue, ip_frag_too_far, ip_frag_reinit, ip_frag_reasm;
net/ipv6/netfilter/nf_conntrack_reasm.c › nf_ct_frag6_gather, find_prev_fhdr, nf_ct_frag6_queue,
nf_ct_frag6_reasm; net/ipv4/inet_fragment.c › inet_frag_find, inet_frag_queue_insert, inet_frag_kill.

A fragment the queue keeps is stolen: the hook answers NF_STOLEN with IP_DEFRAG_QUEUED. The fragment
that completes its datagram becomes the datagram (skb_morph) and goes on through the hook's later
entries (raw, conntrack, NAT), then routing, as one skb that remembers how to fragment it again
(SkBuff.frag_max_size, frag_list). An overlapping fragment kills its queue (RFC 5722; Linux since 4.19
for IPv4); one inside what a run of fragments already covers is a duplicate, dropped, the queue kept. Queues expire on packet time: the Worker's
GC calls flowpath.inet.ip_fragment.ip_expire, which takes what inet_frag_expire kills and sends the
ICMP time exceeded Linux's timers send (inet sends ICMP, netfilter does not import it).
Every received fragment ends with one disposition: a held one first counts IP_DEFRAG_QUEUED, then the
fate its queue meets: the datagram's reason when it completes (`merged` of them, besides the fragment
that completed it), the reason that killed its queue (`killed`: overlap, inconsistent fragments,
ip_frag_reinit's FRAG_TOO_FAR), or FRAG_REASM_TIMEOUT when its timer fires (counted by the expiry).
Deviation: Linux frees a killed queue's fragments as consumed (inet_frag_destroy) and counts only the
fragment that killed it; here they are drops with the killer's reason, so that the counters add up.

Deviation: memory is charged by frame length (Linux charges skb->truesize, about twice that for a
1500-byte frame, and the queue structs); a queue expires at the first GC run or fragment lookup after
its deadline, not at the deadline; conntrack zones and VRF (l3mdev) are not part of the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowpath.netfilter import constants as C
from flowpath.packet import layout as L
from flowpath.packet.csum import ip_fast_csum, ld16, ld32, st16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, skb_morph

NSEC_PER_SEC = 1_000_000_000
IPFRAG_HIGH_THRESH = 4 * 1024 * 1024  # net.ipv4.ipfrag_high_thresh
IPV6_FRAG_HIGH_THRESH = 4 * 1024 * 1024  # net.netfilter.nf_conntrack_frag6_high_thresh
IPFRAG_MAX_DIST = 64  # net.ipv4.ipfrag_max_dist
IPV6_MAXPLEN = 65535
IP_MAX_LEN = 65535
IP6_MF, IP6_OFFSET = 0x0001, 0xFFF8
Verdict = tuple[int, Reason | None]  # NF_ACCEPT / NF_STOLEN / NF_DROP, and the frame's reason

# include/net/inet_frag.h: queue flags and inet_frag_queue_insert's answers
INET_FRAG_FIRST_IN, INET_FRAG_LAST_IN, INET_FRAG_COMPLETE = 0x01, 0x02, 0x04
IPFRAG_OK, IPFRAG_DUP, IPFRAG_OVERLAP = 0, 1, 2
# include/net/ip.h › enum ip_defrag_users, include/net/ipv6_frag.h › enum ip6_defrag_users (zone 0)
IP_DEFRAG_CONNTRACK_IN, IP_DEFRAG_CONNTRACK_OUT = 2, 2 + 0x10000 + 1
IP6_DEFRAG_CONNTRACK_IN, IP6_DEFRAG_CONNTRACK_OUT = 1 + 0x10000 + 1, 1 + 2 * (0x10000 + 1)

# net/ipv4/inet_fragment.c › ip_frag_ecn_table, indexed by the OR of every fragment's 1 << ECN codepoint
# (bits: 1 not-ECT, 2 ECT(1), 4 ECT(0), 8 CE): the ECN bits ORed into the datagram (3: CE), or 0xFF for
# a not-ECT fragment mixed with ECN-capable ones, which drops it
IP_FRAG_ECN_TABLE = (0, 0, 0, 0xFF, 0, 0xFF, 0, 0xFF, 0, 0xFF, 3, 0xFF, 3, 0xFF, 3, 0xFF)

# ipv6_ext_hdr(): the headers find_prev_fhdr walks over (the mobility header is not one of them)
_NF_V6_EXT_HDRS = (L.IPPROTO_HOPOPTS, L.IPPROTO_ROUTING, L.IPPROTO_FRAGMENT, L.IPPROTO_AH, L.IPPROTO_NONE,
                   L.IPPROTO_DSTOPTS)  # fmt: skip


@dataclass(slots=True, eq=False)
class InetFrag:
    """One queued fragment: the skb, trimmed to its data, and where that data sits in the datagram
    (FRAG_CB(skb)->ip_defrag_offset .. end). dataoff: where its data starts in skb.buf."""

    skb: SkBuff
    offset: int
    end: int
    dataoff: int


@dataclass(slots=True, eq=False)
class InetFragQueue:
    """struct inet_frag_queue with struct ipq / struct frag_queue's fields.

    runs        rb_fragments: runs of adjacent fragments received in order, the runs in offset order
    len, meat   the datagram's data length once known, and the bytes received so far
    max_size    largest fragment (IPv4: its length; IPv6: its payload_len); max_df_size with DF (IPv4)
    nhoffset    IPv6: offset from the network header of the byte naming the fragment header
    """

    key: tuple
    expires_ns: int
    v6: bool = False
    runs: list[list[InetFrag]] = field(default_factory=list)
    flags: int = 0
    len: int = 0
    meat: int = 0
    max_size: int = 0
    max_df_size: int = 0
    ecn: int = 0
    iif: int = 0
    rid: int = 0
    nhoffset: int = 0
    mem: int = 0

    def frags(self) -> list[InetFrag]:
        return [f for run in self.runs for f in run]


class Fqdir:
    """struct fqdir: one family's queues (net->ipv4.fqdir, or IPv6 conntrack's nf_frag.fqdir), its
    timer length, memory and limit."""

    def __init__(self, timeout_ns: int, high_thresh: int, max_dist: int = 0):
        self.timeout_ns, self.high_thresh, self.max_dist = timeout_ns, high_thresh, max_dist
        self.mem = 0
        self.queues: dict[tuple, InetFragQueue] = {}


class NfDefrag:
    """The reassembly state of one network namespace (Net.defrag).

    ipfrag_time_ns        net.ipv4.ipfrag_time, IPv4 queues' lifetime
    frag6_timeout_ns      net.netfilter.nf_conntrack_frag6_timeout, IPv6's
    high_thresh, frag6_high_thresh   bytes held above which fragments are refused
    max_dist              net.ipv4.ipfrag_max_dist (0: off)
    """

    def __init__(self, ipfrag_time_ns: int = 30 * NSEC_PER_SEC, frag6_timeout_ns: int = 60 * NSEC_PER_SEC,
                 high_thresh: int = IPFRAG_HIGH_THRESH, frag6_high_thresh: int = IPV6_FRAG_HIGH_THRESH,
                 max_dist: int = IPFRAG_MAX_DIST):  # fmt: skip
        self.ipv4 = Fqdir(ipfrag_time_ns, high_thresh, max_dist)
        self.ipv6 = Fqdir(frag6_timeout_ns, frag6_high_thresh)
        self.peers: dict[int, int] = {}  # inet_peer's rid: IPv4 fragments received per source
        self.killed: list[Reason] = []  # the reasons of held fragments dropped by the packet in hand
        self.merged = 0  # held fragments the packet in hand completed a datagram with
        self.expired: list[InetFragQueue] = []  # past their deadline when a fragment looked them up

    # -- the hook entry ---------------------------------------------------------------------------
    def nf_defrag(self, skb: SkBuff, hooknum: int) -> Verdict:
        """The -400 entry of PRE_ROUTING and LOCAL_OUT: (NF_ACCEPT, None) to go on, with skb now the
        whole datagram when it completed one; NF_STOLEN (held, or dropped by IPv4's ip_defrag) or
        NF_DROP (IPv6) with the frame's reason."""
        if skb.ct is None and skb.ctinfo == C.IP_CT_UNTRACKED:
            return C.NF_ACCEPT, None  # skb->_nfct == IP_CT_UNTRACKED
        if skb.l3proto == L.ETH_P_IP:
            return self.ipv4_conntrack_defrag(skb, hooknum)
        if skb.l3proto == L.ETH_P_IPV6:
            return self.ipv6_defrag(skb, hooknum)
        return C.NF_ACCEPT, None

    def ipv4_conntrack_defrag(self, skb: SkBuff, hooknum: int) -> Verdict:
        """Gather IPv4 fragments; whatever ip_defrag does not hand back is stolen."""
        if not ld16(skb.buf, skb.nhoff + L.IPH.frag_off) & (L.IP_MF | L.IP_OFFSET):  # ip_is_fragment
            return C.NF_ACCEPT, None
        user = IP_DEFRAG_CONNTRACK_IN if hooknum == C.NF_INET_PRE_ROUTING else IP_DEFRAG_CONNTRACK_OUT
        reason = self.ip_defrag(skb, user)
        if reason is not None:
            return C.NF_STOLEN, reason
        skb.ignore_df = True  # nf_ct_ipv4_gather_frags
        return C.NF_ACCEPT, None

    def ipv6_defrag(self, skb: SkBuff, hooknum: int) -> Verdict:
        """Gather IPv6 fragments (nf_ct_frag6_gather): queued is stolen, an error drops the frame, and
        a fragment the queue will not take (no fragment header, jumbo, end not on 8 bytes) goes on."""
        if skb.ct is not None:
            return C.NF_ACCEPT, None  # previously seen (loopback)
        user = IP6_DEFRAG_CONNTRACK_IN if hooknum == C.NF_INET_PRE_ROUTING else IP6_DEFRAG_CONNTRACK_OUT
        return self.nf_ct_frag6_gather(skb, user)

    # -- IPv4: net/ipv4/ip_fragment.c --------------------------------------------------------------
    def ip_defrag(self, skb: SkBuff, user: int) -> Reason | None:
        """Queue an IPv4 fragment: None when it completed the datagram (skb is now that datagram),
        else the frame's reason (held, or dropped)."""
        b, nh = skb.buf, skb.nhoff
        key = (skb.saddr, skb.daddr, ld16(b, nh + L.IPH.id), int(b[nh + L.IPH.protocol]), user)
        q = self.inet_frag_find(self.ipv4, key, skb.ts_ns)
        if q is None:
            return Reason.IP_FRAG_MEM
        return self.ip_frag_queue(q, skb)

    def ip_frag_queue(self, q: InetFragQueue, skb: SkBuff) -> Reason | None:
        """Check the fragment against the datagram, insert it, reassemble when it was the last gap."""
        fqdir = self.ipv4
        if fqdir.max_dist and self.ip_frag_too_far(q, skb.saddr):
            self.ip_frag_reinit(q, skb.ts_ns)
        b, nh = skb.buf, skb.nhoff
        ecn = 1 << (int(b[nh + L.IPH.tos]) & 3)  # ip4_frag_ecn
        frag_off = ld16(b, nh + L.IPH.frag_off)
        offset, more, df = (frag_off & L.IP_OFFSET) << 3, frag_off & L.IP_MF, frag_off & L.IP_DF
        ihl = (int(b[nh]) & 0x0F) * 4
        end = offset + skb.len - nh - ihl
        if not more:
            # the final fragment: bits beyond its end, or a different end, mean corruption
            if end < q.len or (q.flags & INET_FRAG_LAST_IN and end != q.len):
                return self._discard_qp(q, fqdir, Reason.IP_FRAG_INVALID)
            q.flags |= INET_FRAG_LAST_IN
            q.len = end
        else:
            end &= ~7  # data in multiples of 8 bytes; the tail is trimmed
            if end > q.len:
                if q.flags & INET_FRAG_LAST_IN:
                    return self._discard_qp(q, fqdir, Reason.IP_FRAG_INVALID)
                q.len = end
        if end == offset:
            return self._discard_qp(q, fqdir, Reason.IP_FRAG_INVALID)
        skb.buf = b[: nh + ihl + end - offset]  # pskb_trim_rcsum
        frag = InetFrag(skb, offset, end, nh + ihl)
        err = self.inet_frag_queue_insert(q, frag)
        if err == IPFRAG_DUP:
            return Reason.DUP_FRAG
        if err == IPFRAG_OVERLAP:
            return self._discard_qp(q, fqdir, Reason.IP_FRAG_OVERLAP)
        q.iif = skb.iif
        q.meat += end - offset
        q.ecn |= ecn
        q.mem += skb.len
        fqdir.mem += skb.len
        if offset == 0:
            q.flags |= INET_FRAG_FIRST_IN
        fragsize = end - offset + ihl
        q.max_size = max(q.max_size, fragsize)
        if df:
            q.max_df_size = max(q.max_df_size, fragsize)
        if q.flags == INET_FRAG_FIRST_IN | INET_FRAG_LAST_IN and q.meat == q.len:
            return self.ip_frag_reasm(q, skb)
        return Reason.IP_DEFRAG_QUEUED

    def ip_frag_too_far(self, q: InetFragQueue, saddr: int) -> bool:
        """More than ipfrag_max_dist fragments from this source since this queue's last one."""
        start = q.rid
        end = self.peers.get(saddr, 0) + 1  # atomic_inc_return(&peer->rid)
        self.peers[saddr] = end
        q.rid = end
        return bool(q.runs) and end - start > self.ipv4.max_dist

    def ip_frag_reinit(self, q: InetFragQueue, now_ns: int) -> None:
        """Start the queue over: its fragments are dropped, its timer re-armed. (Linux's -ETIMEDOUT
        branch, a timer that already fired, cannot happen here: inet_frag_find retired such a queue.)"""
        self._frag_free(self.ipv4, q, Reason.FRAG_TOO_FAR)
        q.expires_ns = now_ns + self.ipv4.timeout_ns
        q.flags = q.len = q.meat = q.iif = q.ecn = 0

    def ip_frag_reasm(self, q: InetFragQueue, skb: SkBuff) -> Reason | None:
        """Build the datagram from the first fragment's header and every fragment's data into skb (the
        fragment in hand, as skb_morph makes it the head). A CE/not-ECT mix or more than 65535 bytes
        drops the whole datagram."""
        self.inet_frag_kill(self.ipv4, q)
        frags = q.frags()
        head = frags[0]
        ecn = IP_FRAG_ECN_TABLE[q.ecn]
        length = head.dataoff - head.skb.nhoff + q.len
        if ecn == 0xFF or length > IP_MAX_LEN:
            return self._reasm_fail(self.ipv4, q, skb)
        hb, nh = head.skb.buf, head.skb.nhoff
        buf = np.concatenate([hb[: head.dataoff]] + [f.skb.buf[f.dataoff :] for f in frags])
        pmtu = q.max_df_size == q.max_size  # DF only when the largest fragments all had it
        st16(buf, nh + L.IPH.tot_len, length)
        buf[nh + L.IPH.tos] |= ecn
        st16(buf, nh + L.IPH.frag_off, L.IP_DF if pmtu else 0)
        st16(buf, nh + L.IPH.check, 0)
        st16(buf, nh + L.IPH.check, ip_fast_csum(buf, nh, head.dataoff - nh))
        reason = self._reasm_done(q, skb, buf, nh)
        if reason is not None:
            return reason
        skb.frag_max_size = max(q.max_df_size, q.max_size)
        skb.frag_pmtu = pmtu
        return None

    # -- IPv6: net/ipv6/netfilter/nf_conntrack_reasm.c ----------------------------------------------
    def nf_ct_frag6_gather(self, skb: SkBuff, user: int) -> Verdict:
        b, nh = skb.buf, skb.nhoff
        if ld16(b, nh + L.IP6H.payload_len) == 0:
            return C.NF_ACCEPT, None  # a jumbo payload has no fragment header
        found = find_prev_fhdr(b, nh)
        if found is None:
            return C.NF_ACCEPT, None
        prevoff, fhoff = found
        key = (skb.saddr, skb.daddr, ld32(b, fhoff + L.FRAGH.identification), user, skb.iif)
        q = self.inet_frag_find(self.ipv6, key, skb.ts_ns)
        if q is None:
            return C.NF_DROP, Reason.IP_FRAG_MEM
        return self.nf_ct_frag6_queue(q, skb, fhoff, prevoff)

    def nf_ct_frag6_queue(self, q: InetFragQueue, skb: SkBuff, fhoff: int, prevoff: int) -> Verdict:
        """nf_ct_frag6_queue, its errors mapped as ipv6_defrag maps them: -EINPROGRESS stolen, -EPROTO
        (a non-final fragment whose end is not on 8 bytes: queue killed) goes on, others dropped."""
        fqdir = self.ipv6
        b, nh = skb.buf, skb.nhoff
        payload_len = ld16(b, nh + L.IP6H.payload_len)
        frag_off = ld16(b, fhoff + L.FRAGH.frag_off)
        offset = frag_off & IP6_OFFSET
        end = offset + payload_len - (fhoff + L.FRAGH.size - nh - L.IP6H.size)
        if end > IPV6_MAXPLEN:
            return C.NF_DROP, Reason.IP_FRAG_INVALID
        ecn = 1 << ((int(b[nh + 1]) >> 4) & 3)  # ip6_frag_ecn: the low bits of the traffic class
        if not frag_off & IP6_MF:
            if end < q.len or (q.flags & INET_FRAG_LAST_IN and end != q.len):
                return C.NF_DROP, Reason.IP_FRAG_INVALID
            q.flags |= INET_FRAG_LAST_IN
            q.len = end
        else:
            if end & 7:  # RFC 8200 §4.5 wants a parameter problem; Linux lets it through untouched
                self.inet_frag_kill(fqdir, q)
                self._frag_free(fqdir, q, Reason.IP_FRAG_INVALID)
                return C.NF_ACCEPT, None
            if end > q.len:
                if q.flags & INET_FRAG_LAST_IN:
                    return C.NF_DROP, Reason.IP_FRAG_INVALID
                q.len = end
        if end == offset:
            return C.NF_DROP, Reason.IP_FRAG_INVALID
        dataoff = fhoff + L.FRAGH.size
        skb.buf = b[: dataoff + end - offset]
        err = self.inet_frag_queue_insert(q, InetFrag(skb, offset, end, dataoff))
        if err == IPFRAG_DUP:
            return C.NF_STOLEN, Reason.DUP_FRAG  # "no error for duplicates, pretend they got queued"
        if err == IPFRAG_OVERLAP:
            self.inet_frag_kill(fqdir, q)
            self._frag_free(fqdir, q, Reason.IP_FRAG_OVERLAP)
            return C.NF_DROP, Reason.IP_FRAG_OVERLAP
        q.iif = skb.iif
        q.meat += end - offset
        q.ecn |= ecn
        q.max_size = max(q.max_size, payload_len)
        q.mem += skb.len
        fqdir.mem += skb.len
        if offset == 0:
            q.nhoffset = prevoff
            q.flags |= INET_FRAG_FIRST_IN
        if q.flags == INET_FRAG_FIRST_IN | INET_FRAG_LAST_IN and q.meat == q.len:
            reason = self.nf_ct_frag6_reasm(q, skb)
            return (C.NF_STOLEN, reason) if reason is not None else (C.NF_ACCEPT, None)
        return C.NF_STOLEN, Reason.IP_DEFRAG_QUEUED

    def nf_ct_frag6_reasm(self, q: InetFragQueue, skb: SkBuff) -> Reason | None:
        """The first fragment's headers without its fragment header (the byte that named it now names
        what followed it), then every fragment's data."""
        self.inet_frag_kill(self.ipv6, q)
        frags = q.frags()
        head = frags[0]
        hb, nh = head.skb.buf, head.skb.nhoff
        fhoff = head.dataoff - L.FRAGH.size
        ecn = IP_FRAG_ECN_TABLE[q.ecn]
        payload_len = fhoff - nh - L.IP6H.size + q.len
        if ecn == 0xFF or payload_len > IPV6_MAXPLEN:
            return self._reasm_fail(self.ipv6, q, skb)
        buf = np.concatenate([hb[:fhoff]] + [f.skb.buf[f.dataoff :] for f in frags])
        buf[nh + q.nhoffset] = hb[fhoff + L.FRAGH.nexthdr]
        st16(buf, nh + L.IP6H.payload_len, payload_len)
        buf[nh + 1] |= ecn << 4  # ipv6_change_dsfield(hdr, 0xff, ecn)
        frag_id = ld32(hb, fhoff + L.FRAGH.identification)
        reason = self._reasm_done(q, skb, buf, nh)
        if reason is not None:
            return reason
        skb.frag_max_size = L.IP6H.size + q.max_size
        skb.frag_id = frag_id
        skb.ignore_df = True
        return None

    # -- inet_fragment.c ---------------------------------------------------------------------------
    def inet_frag_find(self, fqdir: Fqdir, key: tuple, now_ns: int) -> InetFragQueue | None:
        """The queue of key, created with its timer when there is none; None above the memory limit
        (then Linux refuses every fragment, of a new datagram or not, until timers free memory)."""
        if not fqdir.high_thresh or fqdir.mem > fqdir.high_thresh:
            return None
        q = fqdir.queues.get(key)
        if q is not None and q.expires_ns <= now_ns:  # its timer has fired: ip_expire's, at the next GC
            self.inet_frag_kill(fqdir, q)
            self.expired.append(q)
            q = None
        if q is None:
            q = fqdir.queues[key] = InetFragQueue(key, now_ns + fqdir.timeout_ns, fqdir is self.ipv6)
        return q

    @staticmethod
    def inet_frag_queue_insert(q: InetFragQueue, frag: InetFrag) -> int:
        """Place a fragment among the runs: after the last one (appended to its run when adjacent), or
        in a gap. RFC 5722 (Errata 3089): an overlap drops the datagram; a fragment inside one run is a
        duplicate and only itself is dropped."""
        offset, end = frag.offset, frag.end
        if not q.runs:
            q.runs.append([frag])
            return IPFRAG_OK
        last = q.runs[-1][-1]
        if last.end < end:  # the common case: it goes at the end
            if offset < last.end:
                return IPFRAG_OVERLAP
            if offset == last.end:
                q.runs[-1].append(frag)
            else:
                q.runs.append([frag])
            return IPFRAG_OK
        for i, run in enumerate(q.runs):  # Linux searches its rb-tree of runs; same answers
            start, run_end = run[0].offset, run[-1].end
            if end <= start:
                q.runs.insert(i, [frag])
                return IPFRAG_OK
            if offset < run_end:
                return IPFRAG_DUP if offset >= start and end <= run_end else IPFRAG_OVERLAP
        return IPFRAG_OVERLAP  # not reached: the last run ends at or after `end`

    @staticmethod
    def inet_frag_kill(fqdir: Fqdir, q: InetFragQueue) -> None:
        """Unhash the queue: a later fragment of the same key starts a new one."""
        if not q.flags & INET_FRAG_COMPLETE:
            q.flags |= INET_FRAG_COMPLETE
            if fqdir.queues.get(q.key) is q:
                del fqdir.queues[q.key]

    def inet_frag_expire(self, now_ns: int) -> tuple[int, list[SkBuff]]:
        """Kill every queue whose timer has run out: how many fragments they held, and the first
        fragment of each queue it had come to (what ip_expire / ip6frag_expire_frag_queue quote in
        their time exceeded), in deadline order. Sending that ICMP is flowpath.inet.ip_fragment's."""
        due = self.expired + [q for q in self.ipv4.queues.values() if q.expires_ns <= now_ns]
        due += [q for q in self.ipv6.queues.values() if q.expires_ns <= now_ns]
        self.expired = []
        due.sort(key=lambda q: q.expires_ns)
        held, heads = 0, []
        for q in due:
            fqdir = self.ipv6 if q.v6 else self.ipv4
            self.inet_frag_kill(fqdir, q)
            frags = q.frags()
            held += len(frags)
            if q.flags & INET_FRAG_FIRST_IN and frags and frags[0].offset == 0:
                heads.append(frags[0].skb)
            fqdir.mem -= q.mem
            q.runs, q.mem = [], 0
        if due and self.peers:  # inet_peer entries live while a queue holds them
            live = {q.key[0] for q in self.ipv4.queues.values()}
            self.peers = {a: rid for a, rid in self.peers.items() if a in live}
        return held, heads

    # -- helpers ---------------------------------------------------------------------------------------
    def _discard_qp(self, q: InetFragQueue, fqdir: Fqdir, reason: Reason) -> Reason:
        """ip_frag_queue's discard_qp: kill the queue (what it held is consumed), drop the fragment
        in hand with `reason`."""
        self.inet_frag_kill(fqdir, q)
        self._frag_free(fqdir, q, reason)
        return reason

    def _frag_free(self, fqdir: Fqdir, q: InetFragQueue, reason: Reason, skb: SkBuff | None = None) -> None:
        """Free what the queue holds, each fragment a drop with `reason` (inet_frag_queue_flush; see
        the module docstring for the consumed ones); skb, when in the queue, is the fragment in hand,
        whose own path counts it."""
        self.killed += [reason] * sum(f.skb is not skb for f in q.frags())
        fqdir.mem -= q.mem
        q.runs, q.mem = [], 0

    def _reasm_fail(self, fqdir: Fqdir, q: InetFragQueue, skb: SkBuff) -> Reason:
        """The datagram cannot be built: the queue, the fragment in hand included, is freed; that
        fragment's own path ends in a drop."""
        self._frag_free(fqdir, q, Reason.IP_FRAG_INVALID, skb)
        return Reason.IP_FRAG_INVALID

    def _reasm_done(self, q: InetFragQueue, skb: SkBuff, buf: np.ndarray, nhoff: int) -> Reason | None:
        """skb becomes the datagram (frag_list keeps the fragments' geometry) and the queue's memory is
        released; a datagram whose headers do not parse is dropped with the receive path's reason."""
        frag_list = tuple(f.end - f.offset for f in q.frags()[1:])
        self.merged += len(q.frags()) - 1  # the others share the datagram's fate
        (self.ipv6 if q.v6 else self.ipv4).mem -= q.mem
        q.runs, q.mem = [], 0
        reason = skb_morph(skb, buf, nhoff)
        skb.frag_list = frag_list
        return reason


def find_prev_fhdr(b: np.ndarray, nh: int) -> tuple[int, int] | None:
    """The IPv6 fragment header: (offset from nh of the byte naming it, its offset in b), or None when
    the packet has none before its upper-layer header. Linux: nf_conntrack_reasm.c › find_prev_fhdr."""
    nexthdr, prev, start = int(b[nh + L.IP6H.nexthdr]), L.IP6H.nexthdr, nh + L.IP6H.size
    end = b.shape[0]
    while nexthdr != L.IPPROTO_FRAGMENT:
        if nexthdr not in _NF_V6_EXT_HDRS or nexthdr == L.IPPROTO_NONE or start + 2 > end:
            return None
        hdrlen = (int(b[start + 1]) + 2) * 4 if nexthdr == L.IPPROTO_AH else (int(b[start + 1]) + 1) * 8
        prev, nexthdr, start = start - nh, int(b[start]), start + hdrlen
    if start + L.FRAGH.size > end:
        return None
    return prev, start

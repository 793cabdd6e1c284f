"""The connection tracking table: lookup, creation, confirmation, expiry and listing.

Linux: net/netfilter/nf_conntrack_core.c (nf_conntrack_in, resolve_normal_ct, init_conntrack,
__nf_conntrack_confirm, nf_conntrack_tuple_taken, early_drop, gc_worker) and
nf_conntrack_standalone.c › ct_seq_show for the listing.
The storage (rows, key rows, hash index, the compiled lookup) is nf_conntrack_table.py's; this module
is the hook logic over it. A packet's new entry has a row but stays unconfirmed (on skb.ct, not in the
index) until nf_conntrack_confirm runs at the end of POSTROUTING / LOCAL_IN; when its packet's path
ends without that, nf_ct_release_unconfirmed frees the row, as Linux frees the entry with the skb.
All clocks are packet time (skb.ts_ns).

Fragments: nf_defrag (flowpath/netfilter/nf_defrag.py, priority -400) hands conntrack whole datagrams.
One that still gets here (an IPv6 fragment the reassembly would not queue) is what Linux makes of it:
a later fragment has no tuple (get_l4proto) and is INVALID; a first one fails its protocol's checks.
Deviation: clash resolution on confirm only adopts an identical entry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

import numpy as np

from flowpath.flowtable.key import K_PROTO, KEY_ROW
from flowpath.netfilter.conntrack_proto import (
    nf_conntrack_generic_packet,
    nf_conntrack_gre_packet,
    nf_conntrack_icmp_packet,
    nf_conntrack_icmpv4_error,
    nf_conntrack_icmpv6_error,
    nf_conntrack_udp_packet,
)
from flowpath.netfilter.conntrack_proto_tcp import nf_conntrack_tcp_packet, tcp_params
from flowpath.netfilter.conntrack_proto_tcp_window import TCP_CONNTRACK_NAMES, TcpConntrack
from flowpath.netfilter.conntrack_tuple import (
    NSEC_PER_SEC,
    NfConn,
    NfConnTuple,
    l3num,
    nf_ct_expires,
    nf_ct_invert_tuple,
    nf_ct_is_confirmed,
    nf_ct_key_tuple,
    nf_ct_refresh,
    nf_ct_tuple_words,
)
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IP_CT_ESTABLISHED,
    IP_CT_ESTABLISHED_REPLY,
    IP_CT_IS_REPLY,
    IP_CT_NEW,
    IP_CT_RELATED,
    IP_CT_UNTRACKED,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DYING,
    IPS_EXPECTED,
    IPS_HW_OFFLOAD,
    IPS_OFFLOAD,
    IPS_SEEN_REPLY,
    IPS_SRC_NAT_DONE,
    NF_ACCEPT,
    NF_DROP,
    NF_INET_PRE_ROUTING,
    NF_REPEAT,
    NFPROTO_IPV4,
)
from flowpath.netfilter.ct_layout import CT_PROTO, CT_STATUS, CT_TIMEOUT, TCP_STATE
from flowpath.netfilter.nf_conntrack_table import (
    CT_INITIAL_ROWS,
    CT_ROW_CONFIRMED,
    CT_ROW_UNCONFIRMED,
    NF_CT_NOT_FOUND,
    NfConntrackTable,
    ct_entry,
    nf_ct_find_expired_ed,
    nf_ct_pkt_key,
)
from flowpath.netfilter.nf_nat_core import (
    NR_EXPIRED,
    NR_WORDS,
    nat_range_words,
    nf_nat_bysource_add,
    nf_nat_bysource_del,
    nf_nat_bysource_new,
    nf_nat_setup_row,
)
from flowpath.packet import layout as L
from flowpath.packet.pages import commit_pages
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff

# libnetfilter_conntrack proto2str: the names `conntrack -L` prints
PROTO_NAMES = {L.IPPROTO_TCP: "tcp", L.IPPROTO_UDP: "udp", L.IPPROTO_ICMP: "icmp", L.IPPROTO_ICMPV6: "icmpv6",
               136: "udplite", L.IPPROTO_SCTP: "sctp", L.IPPROTO_GRE: "gre", 33: "dccp"}  # fmt: skip

Verdict = tuple[int, Reason | None]


def ctinfo2dir(ctinfo: int) -> int:
    """Linux: CTINFO2DIR."""
    return IP_CT_DIR_REPLY if ctinfo >= IP_CT_IS_REPLY else IP_CT_DIR_ORIGINAL


# the TCP states tcp_can_early_drop names (FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE), as a mask
_TCP_EARLY_DROP_STATES = sum(1 << s for s in (TcpConntrack.FIN_WAIT, TcpConntrack.CLOSE_WAIT,
                                              TcpConntrack.LAST_ACK, TcpConntrack.TIME_WAIT, TcpConntrack.CLOSE))  # fmt: skip


class Conntrack(NfConntrackTable):
    """The conntrack table of one network namespace (struct net's ct part).

    Confirmed entries are rows reachable by both tuples through the index (NfConntrackTable).
    `bys` lists the SNATed entries by original source (nf_nat_core.c › nf_nat_bysource;
    flowpath/netfilter/nf_nat_core.py). `prng` is the seeded PRNG state for
    NF_NAT_RANGE_PROTO_RANDOM*, so replays are deterministic; hash_seed seeds the index's hash (random
    when None).
    """

    def __init__(self, max_entries: int = 262144, seed: int = 0, hash_seed: int | None = None):
        super().__init__(min(CT_INITIAL_ROWS, max(2, max_entries)), hash_seed, max_entries)
        self.now_ns = 0
        self.max_entries = max_entries
        rows = self.hot.shape[0]
        self.bys = nf_nat_bysource_new(rows, rows)
        commit_pages(self.bys[0])  # its buckets are written at random, one new connection at a time
        self.prng = np.array([(seed * 0x9E3779B1 + 0x2545F491) & 0xFFFFFFFF or 1], np.int64)
        self._nr = np.zeros(NR_WORDS, np.int64)
        self._nat_scr = np.zeros((2, KEY_ROW), np.uint32)
        self.stat = {"found": 0, "invalid": 0, "insert": 0, "insert_failed": 0, "drop": 0, "early_drop": 0}
        # Called with a ct just before it leaves the table (the flowtable tears its flow down here).
        self.destroy_hooks: list[Callable[[NfConn], None]] = []
        # Several workers (flowpath/workers.py) share this table, one at a time: nr_cpus of them, and
        # this_cpu the one whose classic path runs now (smp_processor_id()); NAT picks ports whose
        # replies steer to it (nf_nat_core.py › _unique_tuple)
        self.this_cpu, self.nr_cpus = 0, 1
        self._k = np.zeros(KEY_ROW, np.uint32)  # the key of the tuple being looked up
        self._unconfirmed: list[int] = []  # rows made unconfirmed since the last release
        self.tcp_params = tcp_params()  # the TCP tracker's sysctls and timeouts (struct nf_tcp_net)
        v, key = self._views, self.key
        self._bys_add = ct_entry(nf_nat_bysource_add, (self.bys, key, 0, self.hash_seed))
        self._bys_del = ct_entry(nf_nat_bysource_del, (self.bys, key, 0, self.hash_seed))
        self._nat_setup = ct_entry(nf_nat_setup_row, (v, self.bys, 0, 0, self._nr, 1, self.prng, self._nat_scr, 0))

    def __len__(self) -> int:
        return self.nconfirmed

    def __iter__(self) -> Iterator[NfConn]:
        return iter([self.nf_ct_get(r) for r in self.confirmed_rows().tolist()])

    def peek(self) -> list[NfConn]:
        """The confirmed entries in insertion order, for a listing (`conntrack -L`), pinning no row:
        an entry's own view where Python holds one, else a view made for the listing and not kept.
        (A kept view marks its row, and the compiled lane leaves such a row to Python when it evicts
        it: after a listing of a full table, every eviction would be a round trip to Python.)"""
        conn = self._conn
        return [c if (c := conn[r]) is not None else NfConn(self, r) for r in self.confirmed_rows().tolist()]

    # --- rows and their Python views ----------------------------------------------------------------

    def nf_ct_get(self, r: int) -> NfConn:
        """The NfConn of row r (the same object while the entry lives)."""
        c = self._conn[r]
        if c is None:
            c = self._conn[r] = NfConn(self, r)
            self.viewed[r] = 1
        return c

    def nf_ct_get_entry(self, r: int, seq: int) -> NfConn | None:
        """The NfConn of the confirmed entry that row r held with sequence number seq, or None when
        the row holds another one now (a reference kept as (row, seq), as the flowtable's ct_row)."""
        if r < 0 or r >= self.state.shape[0] or self.state[r] != CT_ROW_CONFIRMED or self.seq[r] != seq:
            return None
        return self.nf_ct_get(r)

    def set_tuple(self, r: int, dir: int, t: NfConnTuple) -> None:
        """Write the key row of row r's direction dir (an unconfirmed entry's: NAT alters its reply)."""
        nf_ct_tuple_words(t, self.key[2 * r + dir])

    def get_tuple(self, r: int, dir: int) -> NfConnTuple:
        return nf_ct_key_tuple(self.key[2 * r + dir])

    def init_conntrack(self, tuple: NfConnTuple, repl: NfConnTuple, now_ns: int) -> NfConn:
        """A new unconfirmed entry on a row of its own (Linux: init_conntrack). It joins the index at
        nf_conntrack_confirm; a packet whose path ends first leaves it to nf_ct_release_unconfirmed."""
        r = self.row_alloc()
        self.set_tuple(r, IP_CT_DIR_ORIGINAL, tuple)
        self.set_tuple(r, IP_CT_DIR_REPLY, repl)
        self.hot[r, CT_TIMEOUT] = now_ns
        ct = self._conn[r] = NfConn(self, r, [tuple, repl])
        self.viewed[r] = 1
        self._unconfirmed.append(r)
        return ct

    def nf_ct_put_unconfirmed(self, ct: NfConn) -> None:
        """Free an unconfirmed entry no packet carries any more (Linux: the last nf_ct_put)."""
        r = ct.row
        if r >= 0 and self._conn[r] is ct and self.state[r] == CT_ROW_UNCONFIRMED:
            self.row_free(r)

    def nf_ct_release_unconfirmed(self) -> int:
        """A packet's path (and what it originated) has ended: free every entry still unconfirmed, as
        Linux frees one with the last skb that held it. Returns how many. No Linux counterpart as a
        sweep: flowpath/inet/dev.py calls it where a received packet's path ends."""
        if not self._unconfirmed:
            return 0
        n = 0
        for r in self._unconfirmed:
            if self.state[r] == CT_ROW_UNCONFIRMED:
                self.row_free(r)
                n += 1
        self._unconfirmed.clear()
        return n

    # --- lookup and removal -------------------------------------------------------------------------

    def _find(self, k: np.ndarray, now_ns: int) -> int:
        """nf_ct_find; an expired entry found is removed (nf_ct_gc_expired) and reported absent."""
        ed = self._find_e(self._views, k, now_ns)
        if ed < NF_CT_NOT_FOUND:
            self._kill_row(nf_ct_find_expired_ed(ed) >> 1)
            return NF_CT_NOT_FOUND
        return ed

    def nf_conntrack_find_get(self, tuple: NfConnTuple, now_ns: int) -> tuple[NfConn, int] | None:
        """(ct, dir) holding `tuple`, or None. An expired entry found on the way is removed, as
        ____nf_conntrack_find does with nf_ct_gc_expired."""
        ed = self._find(nf_ct_tuple_words(tuple, self._k), now_ns)
        return None if ed < 0 else (self.nf_ct_get(ed >> 1), ed & 1)

    def nf_conntrack_tuple_taken(self, tuple: NfConnTuple, ignored: NfConn | None) -> bool:
        """Linux: nf_conntrack_tuple_taken: does a confirmed entry other than `ignored` use `tuple`?
        An expired entry does not count and is removed (nf_ct_gc_expired)."""
        ed = self._find(nf_ct_tuple_words(tuple, self._k), self.now_ns)
        return ed >= 0 and (ignored is None or ignored.row != ed >> 1)

    def nf_ct_kill(self, ct: NfConn) -> bool:
        """Remove a confirmed entry from the table (nf_ct_delete); False if it was not there."""
        r = ct.row
        if r < 0 or self._conn[r] is not ct or self.state[r] != CT_ROW_CONFIRMED:
            return False
        self._kill_row(r)
        return True

    def _kill_row(self, r: int) -> None:
        for hook in self.destroy_hooks:
            hook(self.nf_ct_get(r))
        self.hot[r, CT_STATUS] |= IPS_DYING
        self.hash_remove(r)
        self._bys_del(self.bys, self.key, r, self.hash_seed)
        self.row_free(r)  # no local reference to its view here: row_free may drop it without a copy

    def _grow(self) -> None:
        super()._grow()
        head, link = self.bys
        if link.shape[0] < self.capacity:  # the by-source links follow the rows
            grown = np.zeros((self.capacity, 3), np.int64)
            commit_pages(grown[link.shape[0] :])
            grown[: link.shape[0]] = link
            self.bys = (head, grown)

    def nat_setup(self, r: int, maniptype: int, flags: int, min_addr: int, max_addr: int, min_proto: int,
                  max_proto: int) -> int:  # fmt: skip
        """Bind manip maniptype of unconfirmed row r within the range (nf_nat_core.py ›
        nf_nat_setup_row): NAT_OK or NAT_NO_PORTS. An expired entry in the way counts as free and
        is removed, as nf_conntrack_tuple_taken's lookup does (nf_ct_gc_expired)."""
        while True:
            nr = nat_range_words(flags, min_addr, max_addr, min_proto, max_proto, self._nr)
            res = self._nat_setup(self._views, self.bys, r, maniptype, nr, self.nr_cpus, self.prng,
                                  self._nat_scr, self.now_ns)  # fmt: skip
            if res >= 0:
                if nr[NR_EXPIRED] >= 0:
                    self._kill_row(int(nr[NR_EXPIRED]) >> 1)
                return int(res)
            self._kill_row(nf_ct_find_expired_ed(int(res)) >> 1)

    def gc(self, now_ns: int) -> int:
        """Remove expired entries; return how many. Offloaded entries belong to the flowtable, whose
        GC pins or releases their timeout (gc_worker skips IPS_OFFLOAD). With the table 95 % full or
        more, it also evicts what gc_worker_can_early_drop allows: unassured entries and TCP
        connections closing or closed (FIN_WAIT, LAST_ACK, TIME_WAIT, CLOSE, CLOSE_WAIT), counted
        in early_drop, so that a table filled by finished connections makes room.

        Linux: gc_worker walks the table in order and counts down as it evicts; so does this, over the
        rows in insertion order, vectorised: an entry is evicted when the count left after the
        expired and evicted entries before it is still at max95 or more.
        """
        max95 = self.max_entries // 100 * 95  # nf_conntrack_max95
        rows = self.confirmed_rows()
        st, tmo = self.hot[rows, CT_STATUS], self.hot[rows, CT_TIMEOUT]
        live = (st & IPS_OFFLOAD) == 0
        dead = live & (tmo - now_ns <= 0)
        dropped = np.zeros_like(dead)
        count = len(rows)
        if max95 and count >= max95:
            l4 = self.key[2 * rows, K_PROTO] & 0xFF
            tcp_state = self.hot[rows, CT_PROTO + TCP_STATE]
            closing = (l4 == L.IPPROTO_TCP) & (((_TCP_EARLY_DROP_STATES >> tcp_state) & 1) != 0)
            cand = live & ~dead & (((st & IPS_ASSURED) == 0) | closing)  # gc_worker_can_early_drop
            dead_before = np.cumsum(dead) - dead
            j = np.cumsum(cand) - 1  # candidates before this one: all evicted, if this one is
            dropped = cand & (count - dead_before - j >= max95)
        for r in rows[dead | dropped].tolist():
            self._kill_row(r)
        ndrop = int(np.count_nonzero(dropped))
        self.stat["early_drop"] += ndrop
        return int(np.count_nonzero(dead)) + ndrop

    def early_drop(self, k: np.ndarray, now_ns: int) -> bool:
        """Linux: early_drop: make room by evicting an unassured (or expired) entry found within
        NF_CT_EVICTION_RANGE buckets of the new tuple's (key k) home slot.
        Deviation: one entry goes, where Linux evicts every candidate of the first bucket with one."""
        r = self.early_drop_candidate(k, self.max_entries, now_ns)
        if r < 0:
            return False
        self._kill_row(r)
        self.stat["early_drop"] += 1
        return True

    # --- the hook -------------------------------------------------------------------------------------

    def nf_conntrack_in(self, skb: SkBuff, hooknum: int) -> Verdict:
        """Track one packet at PRE_ROUTING or LOCAL_OUT: set skb.ct and skb.ctinfo.

        Linux: nf_conntrack_core.c › nf_conntrack_in. INVALID packets are accepted with skb.ct None
        (the ruleset decides, `ct state invalid`); NF_DROP only when the table is full.
        """
        self.now_ns = skb.ts_ns  # packet time, for the expiry checks of lookups made on its behalf
        if skb.ct is not None or skb.ctinfo == IP_CT_UNTRACKED:
            return NF_ACCEPT, None  # already seen (LOCAL_OUT after a reroute) or `notrack`
        l3 = l3num(skb.l3proto)
        if not l3:
            return NF_ACCEPT, None
        skb.ctinfo = IP_CT_ESTABLISHED
        if skb.thoff < 0:  # a later fragment: get_l4proto finds no transport header
            self.stat["invalid"] += 1
            return NF_ACCEPT, None
        check_csum = hooknum == NF_INET_PRE_ROUTING
        if skb.l4proto in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6):
            if skb.l4proto == L.IPPROTO_ICMP:
                ret = nf_conntrack_icmpv4_error(self, skb, check_csum)
            else:
                ret = nf_conntrack_icmpv6_error(self, skb, check_csum)
            if ret <= 0:
                self.stat["invalid"] += 1
                return NF_ACCEPT, None
            if skb.ct is not None or skb.ctinfo == IP_CT_UNTRACKED:
                return NF_ACCEPT, None
        while True:
            verdict = self.resolve_normal_ct(skb, l3)
            if verdict is not None:
                return verdict
            ct = skb.ct
            if ct is None:
                self.stat["invalid"] += 1
                return NF_ACCEPT, None
            ret = self.nf_conntrack_handle_packet(ct, skb, check_csum)
            if ret > 0:
                break
            skb.ct, skb.ctinfo = None, IP_CT_ESTABLISHED
            self.nf_ct_put_unconfirmed(ct)  # a new entry its first packet could not open
            if ret == -NF_REPEAT:
                self.nf_ct_kill(ct)  # a SYN reopens a closed connection: start a fresh entry
                continue
            self.stat["invalid"] += 1
            if ret == NF_DROP:
                self.stat["drop"] += 1
                return NF_DROP, Reason.CT_INVALID
            return NF_ACCEPT, None
        if skb.ctinfo == IP_CT_ESTABLISHED_REPLY:
            ct.status |= IPS_SEEN_REPLY
        return NF_ACCEPT, None

    def resolve_normal_ct(self, skb: SkBuff, l3: int) -> Verdict | None:
        """Find or create the entry and set skb.ct/ctinfo; a verdict only when the packet must go.

        Linux: resolve_normal_ct (+ init_conntrack). skb.ct stays None when the packet has no usable
        tuple (INVALID).
        """
        k = self._k
        args = (k, skb.buf, skb.nhoff, skb.thoff, 4 if l3 == NFPROTO_IPV4 else 6, skb.l4proto)
        try:
            got = self._pkt_key(*args)
        except TypeError:  # a buffer of another layout (read-only, strided): the dispatcher takes it
            got = nf_ct_pkt_key(*args)
        if not got:
            return None
        ed = self._find_e(self._views, k, skb.ts_ns)
        if ed < NF_CT_NOT_FOUND:
            self._kill_row(nf_ct_find_expired_ed(ed) >> 1)  # nf_ct_gc_expired
            ed = NF_CT_NOT_FOUND
        if ed < 0:
            tuple = nf_ct_key_tuple(k)
            repl = nf_ct_invert_tuple(tuple)
            if repl is None:
                return None
            if self.nconfirmed >= self.max_entries and not self.early_drop(k, skb.ts_ns):
                self.stat["drop"] += 1
                return NF_DROP, Reason.CT_TABLE_FULL
            skb.ct = self.init_conntrack(tuple, repl, skb.ts_ns)
            skb.ctinfo = IP_CT_NEW
            return None
        self.stat["found"] += 1
        ct, dir = self.nf_ct_get(ed >> 1), ed & 1
        if dir == IP_CT_DIR_REPLY:
            ctinfo = IP_CT_ESTABLISHED_REPLY
        elif ct.status & IPS_SEEN_REPLY:
            ctinfo = IP_CT_ESTABLISHED  # once we've had two-way traffic, always ESTABLISHED
        elif ct.status & IPS_EXPECTED:
            ctinfo = IP_CT_RELATED
        else:
            ctinfo = IP_CT_NEW
        skb.ct, skb.ctinfo = ct, ctinfo
        return None

    @staticmethod
    def nf_conntrack_handle_packet(ct: NfConn, skb: SkBuff, check_csum: bool) -> int:
        """Dispatch to the protocol tracker (nf_conntrack_handle_packet); > 0 accepted, <= 0 not."""
        dir = ctinfo2dir(skb.ctinfo)
        p = ct.l4proto
        if p == L.IPPROTO_TCP:
            return nf_conntrack_tcp_packet(ct, skb, skb.thoff, dir, check_csum)
        if p == L.IPPROTO_UDP:
            return nf_conntrack_udp_packet(ct, skb, skb.thoff, dir, check_csum)
        if p in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6):
            return nf_conntrack_icmp_packet(ct, skb, dir)
        if p == L.IPPROTO_GRE:
            return nf_conntrack_gre_packet(ct, skb, dir)
        return nf_conntrack_generic_packet(ct, skb, dir)

    def nf_conntrack_confirm(self, skb: SkBuff) -> Verdict:
        """Insert the packet's new entry into the table (end of POSTROUTING / LOCAL_IN).

        Linux: __nf_conntrack_confirm: only the original direction confirms; a clash with an identical
        entry adopts it (nf_ct_resolve_clash), any other clash drops the packet.
        """
        ct = skb.ct
        if ct is None or nf_ct_is_confirmed(ct) or ctinfo2dir(skb.ctinfo) != IP_CT_DIR_ORIGINAL:
            return NF_ACCEPT, None
        if ct.status & IPS_DYING:
            return NF_DROP, Reason.CT_INVALID
        r = ct.row
        ed = self._confirm_check(self._views, r, skb.ts_ns)
        while ed < NF_CT_NOT_FOUND:  # expired but not yet collected: removed
            self._kill_row(nf_ct_find_expired_ed(ed) >> 1)
            ed = self._confirm_check(self._views, r, skb.ts_ns)
        if ed >= 0:
            o = ed >> 1
            same = np.array_equal(self.key[2 * o : 2 * o + 2], self.key[2 * r : 2 * r + 2])
            if ed & 1 == IP_CT_DIR_ORIGINAL and same:
                skb.ct = self.nf_ct_get(o)  # __nf_ct_resolve_clash: the loser's packet uses the winner
                self.nf_ct_put_unconfirmed(ct)
                return NF_ACCEPT, None
            self.stat["insert_failed"] += 1
            self.stat["drop"] += 1
            return NF_DROP, Reason.CT_INVALID
        ct.status |= IPS_CONFIRMED
        self.hash_insert(r)
        if ct.status & IPS_SRC_NAT_DONE:
            self._bys_add(self.bys, self.key, r, self.hash_seed)
        self.stat["insert"] += 1
        return NF_ACCEPT, None

    # --- listing ------------------------------------------------------------------------------------

    def listing(self, now_ns: int, acct: bool = False) -> str:
        """All entries in `conntrack -L` format, one per line (ct_seq_show's fields and order).

        acct=True adds `packets= bytes=` per direction, as with nf_conntrack_acct=1.
        """
        return "".join(ct_seq_show(ct, now_ns, acct) + "\n" for ct in self.peek())


def _addr_str(addr: int, l3proto: int) -> str:
    addr = int(addr)
    return str(ipaddress.IPv4Address(addr) if l3proto == NFPROTO_IPV4 else ipaddress.IPv6Address(addr))


def print_tuple(t: NfConnTuple) -> str:
    """Linux: nf_conntrack_standalone.c › print_tuple (IPv6 compressed, as conntrack -L prints)."""
    s = f"src={_addr_str(t.src, t.l3proto)} dst={_addr_str(t.dst, t.l3proto)} "
    if t.l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP):
        s += f"sport={t.sport} dport={t.dport} "
    elif t.is_icmp:
        s += f"type={t.type} code={t.code} id={t.sport} "
    elif t.l4proto == L.IPPROTO_GRE:
        s += f"srckey={t.sport:#x} dstkey={t.dport:#x} "
    return s


def ct_seq_show(ct: NfConn, now_ns: int, acct: bool = False) -> str:
    """One `conntrack -L` line. An offloaded entry shows neither timeout nor TCP state and says
    [OFFLOAD] (or [HW_OFFLOAD]) instead of [ASSURED], as ct_seq_show does."""
    p = ct.l4proto
    s = f"{PROTO_NAMES.get(p, 'unknown'):<8} {p} "
    offload = ct.status & (IPS_OFFLOAD | IPS_HW_OFFLOAD)
    if not offload:
        s += f"{nf_ct_expires(ct, now_ns) // NSEC_PER_SEC} "
        if p == L.IPPROTO_TCP and ct.proto is not None:
            s += f"{TCP_CONNTRACK_NAMES[ct.proto.state]} "
    s += print_tuple(ct.tuplehash[IP_CT_DIR_ORIGINAL])
    if acct:
        s += f"packets={ct.packets[0]} bytes={ct.bytes[0]} "
    if not ct.status & IPS_SEEN_REPLY:
        s += "[UNREPLIED] "
    s += print_tuple(ct.tuplehash[IP_CT_DIR_REPLY])
    if acct:
        s += f"packets={ct.packets[1]} bytes={ct.bytes[1]} "
    if ct.status & IPS_HW_OFFLOAD:
        s += "[HW_OFFLOAD] "
    elif ct.status & IPS_OFFLOAD:
        s += "[OFFLOAD] "
    elif ct.status & IPS_ASSURED:
        s += "[ASSURED] "
    return s + f"mark={ct.mark} use=1"


def ct_state_name(skb: SkBuff) -> str:
    """`ct state` as nft sees it: new, established, related, invalid or untracked (nft_ct.c)."""
    if skb.ct is None:
        return "untracked" if skb.ctinfo == IP_CT_UNTRACKED else "invalid"
    return {IP_CT_NEW: "new", IP_CT_RELATED: "related", IP_CT_RELATED + IP_CT_IS_REPLY: "related"}.get(
        skb.ctinfo, "established"
    )


__all__ = [
    "Conntrack",
    "NfConn",
    "NfConnTuple",
    "ct_seq_show",
    "ct_state_name",
    "ctinfo2dir",
    "nf_ct_invert_tuple",
    "nf_ct_refresh",
]

"""The connection tracking table: lookup, creation, confirmation, expiry and listing.

Linux: net/netfilter/nf_conntrack_core.c (nf_conntrack_in, resolve_normal_ct, init_conntrack,
__nf_conntrack_confirm, nf_conntrack_tuple_taken, early_drop, gc_worker) and
nf_conntrack_standalone.c › ct_seq_show for the listing.
A packet's new entry stays unconfirmed (only on skb.ct, not in the table) until nf_conntrack_confirm
runs at the end of POSTROUTING / LOCAL_IN; a dropped packet just forgets it, as Linux frees it.
All clocks are packet time (skb.ts_ns).

Fragments: nf_defrag (flowpath/netfilter/nf_defrag.py, priority -400) hands conntrack whole datagrams.
One that still gets here (an IPv6 fragment the reassembly would not queue) is what Linux makes of it:
a later fragment has no tuple (get_l4proto) and is INVALID; a first one fails its protocol's checks.
Deviation: when the table is full, early_drop looks at the 8 oldest entries (not a hash bucket) for an
expired or unassured one; clash resolution on confirm only adopts an identical entry.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterator

from flowpath.netfilter.conntrack_proto import (
    nf_conntrack_generic_packet,
    nf_conntrack_gre_packet,
    nf_conntrack_icmp_packet,
    nf_conntrack_icmpv4_error,
    nf_conntrack_icmpv6_error,
    nf_conntrack_udp_packet,
    nf_ct_get_tuple,
)
from flowpath.netfilter.conntrack_proto_tcp import (
    TCP_CONNTRACK_NAMES,
    nf_conntrack_tcp_packet,
    tcp_can_early_drop,
)
from flowpath.netfilter.conntrack_tuple import (
    NSEC_PER_SEC,
    NfConn,
    NfConnTuple,
    l3num,
    nf_ct_expires,
    nf_ct_invert_tuple,
    nf_ct_is_confirmed,
    nf_ct_is_expired,
    nf_ct_refresh,
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
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff

NF_CT_EVICTION_RANGE = 8  # nf_conntrack_core.c
# libnetfilter_conntrack proto2str: the names `conntrack -L` prints
PROTO_NAMES = {L.IPPROTO_TCP: "tcp", L.IPPROTO_UDP: "udp", L.IPPROTO_ICMP: "icmp", L.IPPROTO_ICMPV6: "icmpv6",
               136: "udplite", L.IPPROTO_SCTP: "sctp", L.IPPROTO_GRE: "gre", 33: "dccp"}  # fmt: skip

Verdict = tuple[int, Reason | None]


def ctinfo2dir(ctinfo: int) -> int:
    """Linux: CTINFO2DIR."""
    return IP_CT_DIR_REPLY if ctinfo >= IP_CT_IS_REPLY else IP_CT_DIR_ORIGINAL


def gc_worker_can_early_drop(ct: NfConn) -> bool:
    """Linux: nf_conntrack_core.c › gc_worker_can_early_drop (offloaded entries never get here)."""
    if not ct.status & IPS_ASSURED:
        return True
    return ct.l4proto == L.IPPROTO_TCP and tcp_can_early_drop(ct)


class Conntrack:
    """The conntrack table of one network namespace (struct net's ct part).

    Confirmed entries are reachable by both tuples: `_hash[tuple] = (ct, dir)`. `nat_bysource` maps an
    original source (l3, l4, addr, port) to the SNATed entries using it (nf_nat_core.c › nf_nat_bysource).
    `rng` is the seeded PRNG for NF_NAT_RANGE_PROTO_RANDOM*, so replays are deterministic.
    """

    def __init__(self, max_entries: int = 262144, seed: int = 0):
        self.now_ns = 0
        self.max_entries = max_entries
        self._hash: dict[NfConnTuple, tuple[NfConn, int]] = {}
        self._cts: dict[NfConn, None] = {}
        self.nat_bysource: dict[tuple, dict[NfConn, None]] = {}
        self.rng = random.Random(seed)
        self.stat = {"found": 0, "invalid": 0, "insert": 0, "insert_failed": 0, "drop": 0, "early_drop": 0}
        # Called with a ct just before it leaves the table (the flowtable tears its flow down here).
        self.destroy_hooks: list[Callable[[NfConn], None]] = []
        # Several workers (flowpath/workers.py) share this table, one at a time: nr_cpus of them, and
        # this_cpu the one whose classic path runs now (smp_processor_id()); NAT picks ports whose
        # replies steer to it (nat.py › nf_nat_steers_here)
        self.this_cpu, self.nr_cpus = 0, 1

    def __len__(self) -> int:
        return len(self._cts)

    def __iter__(self) -> Iterator[NfConn]:
        return iter(list(self._cts))

    # --- lookup and removal -------------------------------------------------------------------------

    def nf_conntrack_find_get(self, tuple: NfConnTuple, now_ns: int) -> tuple[NfConn, int] | None:
        """(ct, dir) holding `tuple`, or None. An expired entry found on the way is removed, as
        ____nf_conntrack_find does with nf_ct_gc_expired."""
        h = self._hash.get(tuple)
        if h is not None and nf_ct_is_expired(h[0], now_ns):
            self.nf_ct_kill(h[0])
            return None
        return h

    def nf_conntrack_tuple_taken(self, tuple: NfConnTuple, ignored: NfConn | None) -> bool:
        """Linux: nf_conntrack_tuple_taken: does a confirmed entry other than `ignored` use `tuple`?
        An expired entry does not count and is removed (nf_ct_gc_expired)."""
        h = self._hash.get(tuple)
        if h is not None and nf_ct_is_expired(h[0], self.now_ns):
            self.nf_ct_kill(h[0])
            return False
        return h is not None and h[0] is not ignored

    def nf_ct_kill(self, ct: NfConn) -> bool:
        """Remove a confirmed entry from the table (nf_ct_delete); False if it was not there."""
        if ct not in self._cts:
            return False
        for hook in self.destroy_hooks:
            hook(ct)
        ct.status |= IPS_DYING
        for t in ct.tuplehash:
            h = self._hash.get(t)
            if h is not None and h[0] is ct:
                del self._hash[t]
        del self._cts[ct]
        if ct.status & IPS_SRC_NAT_DONE:
            users = self.nat_bysource.get(_bysource_key(ct.tuplehash[IP_CT_DIR_ORIGINAL]))
            if users is not None:
                users.pop(ct, None)
                if not users:
                    del self.nat_bysource[_bysource_key(ct.tuplehash[IP_CT_DIR_ORIGINAL])]
        return True

    def gc(self, now_ns: int) -> int:
        """Remove expired entries; return how many. Offloaded entries belong to the flowtable, whose
        GC pins or releases their timeout (gc_worker skips IPS_OFFLOAD). With the table 95 % full or
        more, it also evicts what gc_worker_can_early_drop allows: unassured entries and TCP
        connections closing or closed (FIN_WAIT, LAST_ACK, TIME_WAIT, CLOSE, CLOSE_WAIT), counted
        in early_drop, so that a table filled by finished connections makes room."""
        max95 = self.max_entries // 100 * 95  # nf_conntrack_max95
        count, dead, dropped = len(self._cts), [], []
        for ct in self._cts:
            if ct.status & IPS_OFFLOAD:
                continue
            if nf_ct_is_expired(ct, now_ns):
                dead.append(ct)
                count -= 1
            elif max95 and count >= max95 and gc_worker_can_early_drop(ct):
                dropped.append(ct)
                count -= 1
        for ct in dead + dropped:
            self.nf_ct_kill(ct)
        self.stat["early_drop"] += len(dropped)
        return len(dead) + len(dropped)

    def early_drop(self, now_ns: int) -> bool:
        """Linux: early_drop: make room by evicting an unassured (or expired) entry."""
        for i, ct in enumerate(self._cts):
            if i >= NF_CT_EVICTION_RANGE:
                break
            if nf_ct_is_expired(ct, now_ns) or not ct.status & (IPS_ASSURED | IPS_OFFLOAD):
                self.nf_ct_kill(ct)
                self.stat["early_drop"] += 1
                return True
        return False

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
        tuple = nf_ct_get_tuple(skb.buf, skb.thoff, l3, skb.l4proto, skb.saddr, skb.daddr)
        if tuple is None:
            return None
        h = self.nf_conntrack_find_get(tuple, skb.ts_ns)
        if h is None:
            repl = nf_ct_invert_tuple(tuple)
            if repl is None:
                return None
            if len(self._cts) >= self.max_entries and not self.early_drop(skb.ts_ns):
                self.stat["drop"] += 1
                return NF_DROP, Reason.CT_TABLE_FULL
            skb.ct = NfConn(tuplehash=[tuple, repl], timeout_ns=skb.ts_ns, net=self)
            skb.ctinfo = IP_CT_NEW
            return None
        self.stat["found"] += 1
        ct, dir = h
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
        orig, repl = ct.tuplehash
        h = self._hash.get(orig) or self._hash.get(repl)
        if h is not None and not nf_ct_is_expired(h[0], skb.ts_ns):
            other = h[0]
            if h[1] == IP_CT_DIR_ORIGINAL and other.tuplehash == ct.tuplehash:
                skb.ct = other  # __nf_ct_resolve_clash: the loser's packet uses the winner
                return NF_ACCEPT, None
            self.stat["insert_failed"] += 1
            self.stat["drop"] += 1
            return NF_DROP, Reason.CT_INVALID
        for t in (orig, repl):
            old = self._hash.get(t)
            if old is not None:
                self.nf_ct_kill(old[0])  # expired but not yet collected
        ct.status |= IPS_CONFIRMED
        self._hash[orig] = (ct, IP_CT_DIR_ORIGINAL)
        self._hash[repl] = (ct, IP_CT_DIR_REPLY)
        self._cts[ct] = None
        if ct.status & IPS_SRC_NAT_DONE:
            self.nat_bysource.setdefault(_bysource_key(orig), {})[ct] = None
        self.stat["insert"] += 1
        return NF_ACCEPT, None

    # --- listing ------------------------------------------------------------------------------------

    def listing(self, now_ns: int, acct: bool = False) -> str:
        """All entries in `conntrack -L` format, one per line (ct_seq_show's fields and order).

        acct=True adds `packets= bytes=` per direction, as with nf_conntrack_acct=1.
        """
        return "".join(ct_seq_show(ct, now_ns, acct) + "\n" for ct in self._cts)


def _bysource_key(t: NfConnTuple) -> tuple:
    """Linux: hash_by_src / same_src: protocol, source address and source port (or ICMP id)."""
    return (t.l3proto, t.l4proto, t.src, t.sport)


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

"""net/netfilter/nf_flow_table_core.c: the flowtable owner (add, teardown, delete, gc, listing).

A flow is two entries, like Linux's two `tuplehash` objects in one `struct flow_offload`: entry
2*flow_id holds the ORIGINAL direction tuple and 2*flow_id + 1 the REPLY one, so the flow id (shared
by both directions) is `entry >> 1` and the direction `entry & 1`. Entries never move when the table
grows, so flow ids and the batch's `flow` column stay valid. Only this class adds or removes entries;
the compiled hook (flowtable/ip.py) writes runtime columns only: counters, timeout, CLOSING and
TEARDOWN.

Each entry remembers its next hop's neighbour (`nexthop`, cold: read only when a neighbour changes).
Deviation: Linux's FLOW_OFFLOAD_XMIT_NEIGH looks the neighbour up per packet (neigh_xmit), so a new
address applies at once and an unresolved one queues the packet; our hook writes the cached header of
every entry (as XMIT_DIRECT), so a neighbour's change is pushed into the entries when it happens
(flow_offload_neigh_update, as offloading drivers do on NETEVENT_NEIGH_UPDATE, e.g. mlx5's
en/rep/neigh.c › mlx5e_rep_neigh_update), and a neighbour that is no longer valid tears its flows
down (flow_offload_teardown_neigh): their packets go back to the classic path, which resolves it.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowpath.flowtable import key as K
from flowpath.flowtable.flow_add import (
    FLOW_ADD_EXISTS,
    FLOW_ADD_NO_FREE,
    FLOW_ADD_PROBE,
    FLOW_ADD_REBUILD,
    FT_CTR_WORDS,
    FT_FREE_TOP,
    FT_NEIGH_STALE,
    FT_NTOMB,
    FT_NUSED,
    FT_NXFRM,
    flow_offload_add_rows,
    flow_offload_del_rows,
    flow_offload_gc_dead,
)
from flowpath.flowtable.key import (
    FlowtableViews,
    flow_index_build,
    flow_offload_hash,
    flow_offload_probe,
)
from flowpath.packet.layout import ETH_P_8021AD, ETH_P_8021Q, IPPROTO_TCP
from flowpath.packet.pages import commit_pages, zeros_reserved

NF_FLOWTABLE_HW_OFFLOAD = 0x1  # include/uapi/linux/netfilter/nf_tables.h › enum nft_flowtable_flags
NF_FLOWTABLE_COUNTER = 0x2
FLOW_ADD_FULL = -1  # flow_offload_add results (Linux: -ENOMEM / -EEXIST from rhashtable_insert_fast)
TUNNEL_KEYS = ("perfect", "hash")  # Flowtable(tunnel_key=...): how an IPIP key holds the outer addresses
MAX_PROBES = 32
# nexthop uint32[cap, NH_ROW]: the neighbour an entry transmits to (family 0: none known)
NH_FAMILY, NH_IFINDEX, NH_ADDR, NH_ROW = 0, 1, 2, 6  # family 4|6, its ifindex, 4 address words
# Index slots per entry. A sparse index means short probe runs, so the compiled lookup's probe loop
# is predicted (a run past the home slot costs a branch miss) at 16 B/entry more: 4 against 2,
# one call over 2**20 frames, 1000 flows 27.1 -> 31.4 Mpps, 100000 flows 22.9 -> 24.9.
INDEX_SLOTS_PER_ENTRY = 4
RESERVE_MAX = 1 << 20  # entries a table reserves address space for (its default max_entries)


@dataclass(frozen=True, slots=True)
class FlowTuple:
    """struct flow_offload_tuple (key part). Addresses are ints (IPv4 32-bit, IPv6 128-bit),
    ports host-order ints, l3proto 4 or 6. encap: 0, or ESP input's SA index + 1.
    vlan: encap[] as ((proto, tci), ...) outer tag first, proto ETH_P_8021Q or ETH_P_8021AD, at most
    two; iifidx is then the physical device the tagged frames arrive on. tun: (saddr, daddr) of an
    IPIP outer header (tun.src_v4, tun.dst_v4: the tunnel's remote and local address), or None."""

    iifidx: int
    l3proto: int
    l4proto: int
    saddr: int
    daddr: int
    sport: int
    dport: int
    encap: int = 0
    vlan: tuple[tuple[int, int], ...] = ()
    tun: tuple[int, int] | None = None

    def words(self, tun_hash: bool = False) -> np.ndarray:
        """The key row (uint32[16], value word zero) in the layout of flowtable/key.py; tun_hash:
        the outer pair also hashed into K_ENCAP (tunnel_key="hash")."""
        if len(self.vlan) > K.NF_FLOW_TABLE_ENCAP_MAX:
            raise ValueError(f"at most {K.NF_FLOW_TABLE_ENCAP_MAX} VLAN tags, got {len(self.vlan)}")
        k = np.zeros(K.KEY_ROW, np.uint32)
        k[K.K_IIFIDX] = self.iifidx
        enc = len(self.vlan) << K.ENC_SHIFT
        tcis = [0, 0]
        for i, (proto, tci) in enumerate(self.vlan):
            enc |= (K.ENC_VLAN0_AD << i) if proto == ETH_P_8021AD else 0
            tcis[i] = tci & 0xFFFF
        k[K.K_VLAN] = K.vlan_word(tcis[0], tcis[1])
        k[K.K_ENCAP] = self.encap
        if self.tun is not None:
            enc |= K.ENC_TUN
            k[K.K_TUN_SADDR], k[K.K_TUN_DADDR] = self.tun
            if tun_hash:
                k[K.K_ENCAP] = K.tun_addr_hash(int(self.tun[0]), int(self.tun[1]))
        k[K.K_PROTO] = K.flow_proto(self.l3proto, self.l4proto) | enc
        k[K.K_SADDR : K.K_SADDR + 4] = _addr_words(self.saddr, self.l3proto)
        k[K.K_DADDR : K.K_DADDR + 4] = _addr_words(self.daddr, self.l3proto)
        k[K.K_PORTS] = K.ports_word(self.sport, self.dport)
        return k


@dataclass(frozen=True, slots=True)
class FlowRoute:
    """The per-direction part of struct flow_offload_route that the fast path caches.

    oifidx out.ifidx (the physical device: VLAN tags and an IPIP header are pushed from the reverse
    tuple's encapsulation, as nf_flow_encap_push does); mtu the L3 MTU (ip_dst_mtu_maybe_forward; into a
    tunnel: the outer route's MTU minus 20, the inner route's if smaller); h_source/h_dest 6-byte MACs
    (DIRECT xmit; for NEIGH the caller resolves the neighbour when it adds the flow; into a tunnel: the
    outer next hop's); xmit_type FLOW_OFFLOAD_XMIT_*.
    xfrm: with FLOW_OFFLOAD_XMIT_XFRM, the SA's index in the SAD (the route is then the SA's outer
    route and mtu its xfrm_state_mtu; Linux caches the xfrm dst bundle in tuple.dst_cache).
    neigh: the next hop's neighbour, (family, ifindex, address) as the neighbour table keys it, whose
    changes rewrite h_dest or tear the flow down; None: not followed (Linux reaches it through
    tuple.dst_cache's nexthop, rt_nexthop / rt6_nexthop).
    tun_ttl, tun_tos, tun_pmtudisc: the parms of the tunnel the direction leaves through (used when
    the reverse tuple has `tun`): ttl 0 inherits, tos with bit 0 set inherits (ip_tunnel_xmit).
    """

    oifidx: int
    mtu: int
    h_source: bytes
    h_dest: bytes
    xmit_type: int = K.FLOW_OFFLOAD_XMIT_DIRECT
    xfrm: int = -1
    neigh: tuple[int, int, int] | None = None
    tun_ttl: int = 0
    tun_tos: int = 1
    tun_pmtudisc: bool = True


def _addr_words(addr: int, l3proto: int) -> list[int]:
    if l3proto == 4:
        return [addr & 0xFFFFFFFF, 0, 0, 0]
    return [(addr >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0)]


def _nexthop_row(neigh: tuple[int, int, int] | None) -> list[int]:
    """A `nexthop` row (NH_*) for a neighbour key (family, ifindex, address); zeros for None."""
    if neigh is None:
        return [0] * NH_ROW
    family, ifindex, addr = neigh
    return [family, ifindex, *_addr_words(int(addr), family)]


def _mac_int(mac: bytes) -> int:
    if len(mac) != 6:
        raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
    return int.from_bytes(mac, "big")


def flow_entry_rows(cap: int, reserved: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """key uint32[cap, 16] and val int64[cap, 8] as the two halves of one ENTRY_SIZE-aligned row per
    entry (strided views of one buffer). reserved: over address space only (pages.zeros_reserved),
    nothing committed.

    Why: a hit reads its key line and its val line; side by side they share a page (one TLB miss,
    one DRAM row) and neither straddles a line (numpy's large buffers start 16 bytes into a page, so
    separate arrays' 64-byte rows each spanned two lines). 100000 flows, 2**20 packets, lookup
    stage: 70-80 -> 45-55 ns/pkt.
    """
    kb, vb = K.KEY_ROW * 4, K.VAL_ROW * 8
    raw = (zeros_reserved if reserved else np.zeros)(cap * K.ENTRY_SIZE + K.ENTRY_SIZE, np.uint8)
    if not reserved:
        commit_pages(raw)  # filled a new flow at a time, as the lane adds them (packet/pages.py)
    rows = raw[(-raw.ctypes.data) % K.ENTRY_SIZE :][: cap * K.ENTRY_SIZE].reshape(cap, K.ENTRY_SIZE)
    return rows[:, :kb].view(np.uint32), rows[:, kb : kb + vb].view(np.int64)


def _pow2(n: int) -> int:
    return 1 << max(1, int(n) - 1).bit_length()


class Flowtable:
    """One `flowtable` (nft `flowtable NAME { ... }`): entries, hash index, timeouts, counters.

    capacity and max_entries count direction entries (Linux's rhashtable counts tuplehash objects),
    so a flow takes two; both are rounded up to powers of two. The index has INDEX_SLOTS_PER_ENTRY
    slots per entry of capacity (load <= 0.25 without tombstones).
    """

    def __init__(
        self,
        name: str,
        capacity: int = 1024,
        max_entries: int = 1 << 20,
        flags: int = 0,
        counter: bool = False,
        timeout_tcp_ns: int | float = 30e9,
        timeout_udp_ns: int | float = 30e9,
        max_probes: int = MAX_PROBES,
        seed: int | None = None,
        tunnel_key: str = "perfect",
    ):
        if tunnel_key not in TUNNEL_KEYS:
            raise ValueError(f"tunnel_key must be one of {', '.join(TUNNEL_KEYS)}, not {tunnel_key!r}")
        self.name, self.flags = name, flags
        # "perfect": both outer addresses are key words (Linux 6.19); "hash": the v6 patch's hashed word
        self.tunnel_key, self.tun_hash = tunnel_key, int(tunnel_key == "hash")
        # Linux seeds the flowtable's jhash at random; so do we (pass seed for a reproducible table)
        self.seed = secrets.randbits(32) if seed is None else seed & 0xFFFFFFFF
        self.counter = bool(counter or flags & NF_FLOWTABLE_COUNTER)
        self.max_entries = _pow2(max(2, max_entries))
        self.timeout_tcp_ns, self.timeout_udp_ns = int(timeout_tcp_ns), int(timeout_udp_ns)
        self.max_probes = max_probes
        self.stat_full = 0  # FLOWTABLE_FULL: adds refused at max_entries
        cap = min(_pow2(max(2, capacity)), self.max_entries)
        # the row arrays are leading slices of buffers reserved for max_entries (up to RESERVE_MAX):
        # growing copies nothing (_grow). xfrm_sa: XMIT_XFRM entries' SA index (cold: read per bulk);
        # nexthop: NH_*, the next hop's neighbour (cold); free: flow ids, lowest on top
        self._bufs: tuple = ()
        try:
            self._reserve(min(self.max_entries, RESERVE_MAX))
        except (OSError, MemoryError):  # address space refused (vm.overcommit_memory=2, ulimit -v):
            self._reserve(cap)  # the rows in use only, copied as the table grows
        self._take_rows(0, cap)
        # neighbour key -> [entries in use through it, the h_dest they cache or None when they differ]:
        # a neighbour event about any other neighbour costs one dict lookup, not a scan. Counted again
        # from the arrays after the compiled lane added flows (ctr[FT_NEIGH_STALE]: _neigh_sync)
        self._neigh: dict[tuple[int, int, int], list] = {}
        self.index = np.zeros(INDEX_SLOTS_PER_ENTRY * cap, np.int64)
        self.ctr = np.zeros(FT_CTR_WORDS, np.int64)  # FT_*: entries in use, tombstones, free ids...
        # the conntrack reference given to flow_offload_add, by flow id; a flow the lane added has
        # None here and its conntrack row in ct_row, resolved by flow_ct through ct_resolve
        self._ct: list[object] = [None] * (cap // 2)
        self.ct_resolve: Callable[[int, int], object] | None = None  # (row, seq) -> the entry or None
        self.free[:] = np.arange(cap // 2 - 1, -1, -1)
        self.ctr[FT_FREE_TOP] = cap // 2
        self._gc_out = np.zeros(0, np.int64)  # gc's flow ids
        self._ent = (np.zeros((2, K.KEY_ROW), np.uint32), np.zeros((2, K.VAL_ROW), np.int64),
                     np.zeros((2, K.NAT6_ROW), np.uint8), np.zeros((2, NH_ROW), np.uint32),
                     np.zeros(2, np.int64), np.zeros(2, np.int64))  # fmt: skip
        self._set_views()

    # the counts live in ctr, which the compiled lane updates too
    nused = property(lambda self: int(self.ctr[FT_NUSED]), lambda self, v: self.ctr.__setitem__(FT_NUSED, v))
    ntomb = property(lambda self: int(self.ctr[FT_NTOMB]), lambda self, v: self.ctr.__setitem__(FT_NTOMB, v))
    nxfrm = property(lambda self: int(self.ctr[FT_NXFRM]), lambda self, v: self.ctr.__setitem__(FT_NXFRM, v))

    def set_tunnel_key(self, tunnel_key: str) -> None:
        """Key IPIP flows as tunnel_key says ("perfect" or "hash"; see key.py); only while the table
        holds no flow (its entries' hashes depend on it). `flowpath bench ipip --key` uses it."""
        if tunnel_key not in TUNNEL_KEYS:
            raise ValueError(f"tunnel_key must be one of {', '.join(TUNNEL_KEYS)}, not {tunnel_key!r}")
        if self.nused:
            raise ValueError("the tunnel key of a flowtable holding flows cannot change")
        self.tunnel_key, self.tun_hash = tunnel_key, int(tunnel_key == "hash")
        self._set_views()

    # ---- views for the compiled hook -------------------------------------------------------
    @property
    def views(self) -> FlowtableViews:
        """The arrays and scalars the compiled hook reads; replaced when the table grows."""
        return self._views

    def _set_views(self) -> None:
        self._views = FlowtableViews(self.index, self.key, self.val, self.nat6, self.index.shape[0] - 1,
                                     self.max_probes, self.timeout_tcp_ns, self.timeout_udp_ns, int(self.counter),
                                     self.seed, self.tun_hash)  # fmt: skip
        # the same as a plain tuple: what crosses into numba (typed in C; a NamedTuple is typed in Python)
        self.cols = tuple(self._views)
        # what flow_offload_add_rows takes (flow_add.py)
        self.fa = (self.index, self.key, self.val, self.nat6, self.used, self.xfrm_sa, self.nexthop, self.free,
                   self.ctr, self.ct_row)  # fmt: skip
        self.fp = np.array([self.max_probes, self.seed, self.tun_hash, self.timeout_tcp_ns, self.timeout_udp_ns],
                           np.int64)  # fmt: skip

    @property
    def capacity(self) -> int:
        return int(self.key.shape[0])

    def __len__(self) -> int:
        """Number of flows (two entries each)."""
        return self.nused // 2

    def entry_bytes(self) -> dict[str, float]:
        """Memory per direction entry, by array: the table's arrays over its entry capacity (a flow
        takes two entries). The Python side (one conntrack reference per flow) is not counted."""
        arrays = {"key": self.key, "val": self.val, "nat6": self.nat6, "index": self.index,
                  "used": self.used, "xfrm_sa": self.xfrm_sa, "nexthop": self.nexthop, "free": self.free,
                  "ct_row": self.ct_row, "ctr": self.ctr, "fp": self.fp, "gc_out": self._gc_out}  # fmt: skip
        return {name: a.nbytes / self.capacity for name, a in arrays.items()}

    # ---- growth and the index --------------------------------------------------------------
    _ROWS = ("key", "val", "nat6", "used", "xfrm_sa", "nexthop", "ct_row", "free")  # ct_row, free: per flow

    def _reserve(self, rows: int) -> None:
        """Buffers for `rows` entries of every row array (rows // 2 flows of ct_row and free), the
        rows in use copied over (a table growing past RESERVE_MAX)."""
        key, val = flow_entry_rows(rows, reserved=True)
        bufs = (key, val, zeros_reserved((rows, K.NAT6_ROW), np.uint8), zeros_reserved(rows, np.bool_),
                zeros_reserved(rows, np.int32), zeros_reserved((rows, NH_ROW), np.uint32),
                zeros_reserved((rows // 2, 2), np.int64), zeros_reserved(rows // 2, np.int64))  # fmt: skip
        had, self._bufs = bool(self._bufs), bufs
        if had:
            cap = self.capacity
            for b, name in zip(bufs, self._ROWS, strict=True):
                old = getattr(self, name)
                b[: old.shape[0]] = old
            self._take_rows(cap, cap)

    def _take_rows(self, cap: int, new: int) -> None:
        """Entries cap..new-1 added to those in use, their pages committed: the row arrays become
        their buffers' first new entries (new // 2 flows)."""
        for b, name in zip(self._bufs, self._ROWS, strict=True):
            per_flow = name in ("ct_row", "free")
            setattr(self, name, b[: new // 2 if per_flow else new])
        lo, hi = cap // 2, new // 2
        commit_pages(self.key[cap:new], self.val[cap:new], self.nat6[cap:new], self.used[cap:new],
                     self.nexthop[cap:new], self.free[lo:hi])  # fmt: skip
        self.xfrm_sa[cap:new] = -1
        self.ct_row[lo:hi] = -1

    def _grow(self) -> bool:
        cap = self.capacity
        if cap >= self.max_entries:
            return False
        new = cap * 2
        if new > self._bufs[3].shape[0]:  # past the reservation: copied once
            self._reserve(new)
        top = int(self.ctr[FT_FREE_TOP])  # the new ids go under the free ones, so those are taken first
        self._take_rows(cap, new)
        free = self.free
        free[cap // 2 : cap // 2 + top] = free[:top].copy()
        free[: cap // 2] = np.arange(new // 2 - 1, cap // 2 - 1, -1)
        self._ct.extend([None] * (cap // 2))
        self.ctr[FT_FREE_TOP] = top + cap // 2
        self._rebuild(max(self.index.shape[0], INDEX_SLOTS_PER_ENTRY * new))
        return True

    def reserve(self, flows: int) -> None:
        """Make room for `flows` more flows now (free ids, index slots below 3/4 full), growing the
        table up to max_entries: the compiled lane adds flows in the middle of a batch, where it
        cannot grow it (flow_add.py's FLOW_ADD_NO_FREE and FLOW_ADD_REBUILD make it punt)."""
        c = self.ctr
        while c[FT_FREE_TOP] < flows and self._grow():
            pass
        if (int(c[FT_NUSED]) + int(c[FT_NTOMB]) + 2 * flows) * 4 > self.index.shape[0] * 3:
            self._rebuild(self.index.shape[0])

    def _rebuild(self, icap: int) -> None:
        """Rebuild the index at icap slots (drops tombstones). Linear probing fills the same slots
        whatever the insertion order, so entries that fitted fit again; doubling is a safety net."""
        while True:
            index = np.zeros(icap, np.int64)
            commit_pages(index)  # written at random as flows come
            if flow_index_build(index, self.key, self.used, icap - 1, self.max_probes, self.seed,
                                self.tun_hash) == 0:  # fmt: skip
                break
            icap *= 2
        self.index, self.ntomb = index, 0
        self._set_views()

    # ---- flow_offload_add / teardown / del -------------------------------------------------
    def flow_offload_add(
        self,
        orig: FlowTuple,
        reply: FlowTuple,
        route_orig: FlowRoute,
        route_reply: FlowRoute,
        nat_flags: int,
        ct_ref: object,
        now_ns: int,
        ct_row: tuple[int, int] = (-1, -1),
    ) -> int:
        """Insert both direction tuples of a flow; return its flow id, FLOW_ADD_FULL (-1, counted
        in stat_full) or FLOW_ADD_EXISTS (-2, a tuple is already offloaded).

        Linux: nf_flow_table_core.c › flow_offload_alloc + flow_offload_route_init +
        flow_offload_add. nat_flags: F_SNAT | F_DNAT (from the conntrack IPS_SRC/DST_NAT bits).
        ct_row: the conntrack entry's row and seq (GC keeps an offloaded entry alive through them).
        The insertion is flow_add.py's, which the compiled lane calls too; here the table grows, or its
        index is rebuilt, when it says so.
        """
        for route in (route_orig, route_reply):
            if not 0 <= route.oifidx < 1 << 31 or not 0 <= route.mtu <= 0xFFFF:
                raise ValueError(f"oifidx {route.oifidx} or mtu {route.mtu} out of range")
        self._neigh_sync()
        tmo = self.timeout_tcp_ns if orig.l4proto == IPPROTO_TCP else self.timeout_udp_ns
        ent = self._ent
        for d, (t, other, route) in enumerate(((orig, reply, route_orig), (reply, orig, route_reply))):
            self._entry_rows(d, t, other, route, nat_flags & (K.F_SNAT | K.F_DNAT), now_ns + tmo)
        ent[5][:] = ct_row
        larger = False  # a larger index tried after a full probe run
        while True:
            fid = int(flow_offload_add_rows(self.fa, self.fp, ent))
            if fid >= 0 or fid == FLOW_ADD_EXISTS:
                break
            icap = self.index.shape[0]
            if fid == FLOW_ADD_NO_FREE and self._grow():
                continue
            if fid == FLOW_ADD_REBUILD:
                self._rebuild(icap if self.ntomb else 2 * icap)
                continue
            if fid == FLOW_ADD_PROBE and not larger and icap < 2 * INDEX_SLOTS_PER_ENTRY * self.capacity:
                # A full probe run at load <= 0.75 is bad luck, but over 10**5 adds it happens (runs
                # past 32 slots): try once with an index twice as large before refusing the flow.
                larger = True
                self._rebuild(2 * icap)
                continue
            self.stat_full += 1
            return FLOW_ADD_FULL
        if fid < 0:
            return fid
        for route in (route_orig, route_reply):
            if route.neigh is not None:
                self._neigh_hold(route.neigh, route.h_dest)
        self._ct[fid] = ct_ref
        return fid

    def _neigh_hold(self, neigh: tuple[int, int, int], h_dest: bytes) -> None:
        ref = self._neigh.setdefault(neigh, [0, h_dest])
        ref[0] += 1
        if ref[1] != h_dest:
            ref[1] = None  # entries disagree: the next update rewrites them all

    def _neigh_sync(self) -> None:
        """Count the entries' neighbours again from the arrays once the compiled lane added flows."""
        if not self.ctr[FT_NEIGH_STALE]:
            return
        self.ctr[FT_NEIGH_STALE] = 0
        self._neigh = {}
        es = np.flatnonzero(self.used & (self.nexthop[:, NH_FAMILY] != 0))
        rows, first, inv, counts = np.unique(self.nexthop[es], axis=0, return_index=True, return_inverse=True,
                                             return_counts=True)  # fmt: skip
        hd = self.val[es, K.V_H_DEST]
        agree = np.ones(rows.shape[0], np.bool_)  # do a neighbour's entries cache one h_dest?
        np.logical_and.at(agree, inv.ravel(), hd == hd[first][inv.ravel()])
        for g, row in enumerate(rows.tolist()):
            fam = row[NH_FAMILY]
            neigh = (fam, row[NH_IFINDEX], int(ipaddress.ip_address(_words_addr(np.array(row[NH_ADDR:]), fam))))
            self._neigh[neigh] = [int(counts[g]), int(hd[first[g]]).to_bytes(6, "big") if agree[g] else None]

    def _entry_rows(self, d, t, other, route, nat_flags, timeout_ns) -> None:
        """Direction d's rows for flow_offload_add_rows, in self._ent."""
        ek, ev, e6, nh, xs, _ = self._ent
        # NAT values come from the opposite direction's tuple, as nf_flow_snat_ip/dnat_ip read them
        ek[d] = t.words(self.tun_hash)
        # transmit pushes the reverse tuple's encapsulation (nf_flow_encap_push(skb, other_tuple))
        encap = bool(other.vlan) or other.tun is not None
        ek[d, K.V_FLAGS] = K.flags_word(nat_flags, d, route.xmit_type, encap, route.tun_ttl, route.tun_tos,
                                        route.tun_pmtudisc)  # fmt: skip
        xs[d] = route.xfrm if route.xmit_type == K.FLOW_OFFLOAD_XMIT_XFRM else -1
        nh[d] = _nexthop_row(route.neigh)
        v = ev[d]
        v[:] = 0
        v[K.V_TIMEOUT] = timeout_ns
        v[K.V_H_DEST], v[K.V_H_SOURCE] = _mac_int(route.h_dest), _mac_int(route.h_source)
        v[K.V_OUT] = K.out_word(route.oifidx, route.mtu)
        v[K.V_NAT_PORTS] = K.ports_word(other.dport, other.sport)
        e6[d] = 0
        if t.l3proto == 4:
            v[K.V_NAT_ADDRS] = K.nat_addrs_word(other.daddr, other.saddr)
        else:
            e6[d, :16] = np.frombuffer(other.daddr.to_bytes(16, "big"), np.uint8)
            e6[d, 16:] = np.frombuffer(other.saddr.to_bytes(16, "big"), np.uint8)

    def _hash(self, k: np.ndarray) -> int:
        return int(flow_offload_hash(k, 0, self.seed, self.tun_hash))

    def _probe(self, k: np.ndarray, h: int) -> int:
        return int(
            flow_offload_probe(self.index, self.key, self.index.shape[0] - 1, self.max_probes, k, 0, h,
                               self.tun_hash)
        )

    def flows_through_xfrm(self, sa: int) -> list[int]:
        """The flows that transmit through SA `sa` or receive through it (encap word sa + 1)."""
        through = (self.xfrm_sa == sa) | (self.used & (self.key[:, K.K_ENCAP] == K.encap_xfrm(sa)))
        return sorted({int(e) >> 1 for e in np.flatnonzero(through)})

    def flow_offload_teardown_xfrm(self, sa: int) -> int:
        """Tear down every flow through SA `sa` (flows_through_xfrm): the SA expired or was deleted
        (Linux's cached xfrm dst goes stale). The classic path then offloads the flow again with the
        SA that replaced it (a rekey). Returns how many flows."""
        fids = self.flows_through_xfrm(sa)
        for fid in fids:
            self.flow_offload_teardown(fid)
        return len(fids)

    def flow_offload_teardown(self, flow_id: int) -> None:
        """Mark a flow for removal: the fast path stops using it at once, gc() deletes it.

        Linux: nf_flow_table_core.c › flow_offload_teardown (the conntrack fixup is the caller's).
        """
        if self.used[2 * flow_id]:
            self.key[2 * flow_id : 2 * flow_id + 2, K.V_FLAGS] |= K.F_TEARDOWN

    def flow_offload_del(self, flow_id: int) -> object:
        """Remove both entries now; return the flow's conntrack reference.

        Linux: nf_flow_table_core.c › flow_offload_del (flow_add.py's flow_offload_del_rows).
        """
        self._neigh_sync()
        for e in (2 * flow_id, 2 * flow_id + 1):
            if self.used[e] and self.nexthop[e, NH_FAMILY]:
                self._neigh_put(e)
        ct, self._ct[flow_id] = self.flow_ct(flow_id), None
        flow_offload_del_rows(self.fa, self.fp, flow_id, 1)
        return ct

    def forget(self, flow_ids) -> None:
        """Drop the conntrack references of flows deleted by compiled code (nf_flow_table_ct.py's GC)."""
        for fid in flow_ids:
            self._ct[fid] = None

    def _neigh_put(self, e: int) -> None:
        row = self.nexthop[e]
        fam, words = int(row[NH_FAMILY]), row[NH_ADDR : NH_ADDR + 4]
        neigh = (fam, int(row[NH_IFINDEX]), int(ipaddress.ip_address(_words_addr(words, fam))))
        ref = self._neigh[neigh]
        ref[0] -= 1
        if not ref[0]:
            del self._neigh[neigh]

    # ---- neighbour events ---------------------------------------------------------------------
    def _neigh_entries(self, neigh: tuple[int, int, int]) -> np.ndarray:
        """The entries in use whose next hop is neigh (an ascending int64 array)."""
        return np.flatnonzero(self.used & (self.nexthop == _nexthop_row(neigh)).all(axis=1))

    def flow_offload_neigh_update(self, neigh: tuple[int, int, int], ha: bytes) -> int:
        """The neighbour neigh (family, ifindex, address) is valid with address ha: every entry through
        it caches ha as its h_dest from now on (the hook's next packet carries it; no teardown).
        Returns how many entries of live flows were rewritten (torn-down ones are, but not counted)."""
        self._neigh_sync()
        ref = self._neigh.get(neigh)
        if ref is None or ref[1] == ha:
            return 0
        es = self._neigh_entries(neigh)
        self.val[es, K.V_H_DEST] = _mac_int(ha)
        ref[1] = ha
        return int(np.count_nonzero((self.key[es, K.V_FLAGS] & K.F_TEARDOWN) == 0))

    def flow_offload_teardown_neigh(self, neigh: tuple[int, int, int]) -> list[int]:
        """The neighbour neigh failed or is gone: tear down every flow with an entry through it (the
        conntrack fixup is the caller's). Returns the flow ids torn down now (ascending); flows torn
        down before are left out."""
        self._neigh_sync()
        if neigh not in self._neigh:
            return []
        es = self._neigh_entries(neigh)
        fids = np.unique(es[(self.key[es, K.V_FLAGS] & K.F_TEARDOWN) == 0] >> 1)
        self.key[2 * fids, K.V_FLAGS] |= K.F_TEARDOWN  # flow_offload_teardown, for all of them at once
        self.key[2 * fids + 1, K.V_FLAGS] |= K.F_TEARDOWN
        return fids.tolist()

    def lookup(self, t: FlowTuple) -> int:
        """Entry index for a tuple, or -1; entries in teardown are hidden (flow_offload_lookup)."""
        k = t.words(self.tun_hash)
        e = self._probe(k, self._hash(k))
        if e >= 0 and self.key[e, K.V_FLAGS] & K.F_TEARDOWN:
            return -1
        return e

    def flow_ct(self, flow_id: int) -> object:
        """The conntrack reference given to flow_offload_add, or for a flow the compiled lane added,
        its conntrack entry (ct_resolve; None when the row holds another entry now)."""
        ct = self._ct[flow_id]
        if ct is None and self.ct_resolve is not None and self.ct_row[flow_id, 0] >= 0:
            ct = self._ct[flow_id] = self.ct_resolve(int(self.ct_row[flow_id, 0]), int(self.ct_row[flow_id, 1]))
        return ct

    # ---- gc ---------------------------------------------------------------------------------
    def gc(self, now_ns: int, on_del: Callable[[int, object, int], None] | None = None) -> list[int]:
        """Delete expired and torn-down flows; return their flow ids (ascending).

        Linux: nf_flow_table_core.c › nf_flow_offload_gc_step: expired (timeout - now <= 0) ->
        teardown -> flow_offload_del. The timeout is per flow in Linux and per direction here; a
        flow expires when both directions have. on_del(flow_id, ct_ref, flags) runs before each
        deletion, so the caller can fix up conntrack (flow_offload_fixup_ct) with the CLOSING bit.
        """
        ids = self.gc_dead(now_ns).tolist()
        for fid in ids:
            if on_del is not None:
                on_del(fid, self.flow_ct(fid), int(self.key[2 * fid, K.V_FLAGS]))
            self.flow_offload_del(fid)
        return ids

    def gc_dead(self, now_ns: int) -> np.ndarray:
        """The flows gc deletes now (expired or torn down), marked TEARDOWN: flow ids, ascending."""
        out = self.gc_scratch()
        return out[: flow_offload_gc_dead(self.fa, int(now_ns), out)]

    def gc_scratch(self) -> np.ndarray:
        """Room for every flow id (what the compiled GC writes its deletions to)."""
        if self._gc_out.shape[0] < self.capacity // 2:
            self._gc_out = np.zeros(self.capacity // 2, np.int64)
        return self._gc_out

    def _flow_timeouts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per flow: the later of its two directions' timeouts, and whether the flow is in use."""
        n = self.capacity // 2
        return self.val[:, K.V_TIMEOUT].reshape(n, 2).max(axis=1), self.used.reshape(n, 2)[:, 0]

    def next_expiry_ns(self) -> int | None:
        """The earliest time a flow in use expires (gc deletes it at the first run at or after it)."""
        tmo, live = self._flow_timeouts()
        return int(tmo[live].min()) if live.any() else None

    # ---- listing ----------------------------------------------------------------------------
    def entries(self) -> list[dict]:
        """One dict per direction entry in use, in entry order."""
        out = []
        for e in np.flatnonzero(self.used):
            e = int(e)
            k, v = self.key[e], self.val[e]
            proto, ports, xmit = int(k[K.K_PROTO]), int(k[K.K_PORTS]), int(k[K.V_XMIT])
            l3, l4 = K.proto_l3(proto), K.proto_l4(proto)
            out.append({
                "entry": e, "flow_id": e >> 1, "dir": K.xmit_dir(xmit), "iifidx": int(k[K.K_IIFIDX]),
                "l3proto": l3, "l4proto": l4,
                "saddr": _words_addr(k[K.K_SADDR : K.K_SADDR + 4], l3),
                "daddr": _words_addr(k[K.K_DADDR : K.K_DADDR + 4], l3),
                "sport": K.ports_src(ports), "dport": K.ports_dst(ports),
                "encap": int(k[K.K_ENCAP]), "flags": int(k[K.V_FLAGS]), "xmit_type": K.xmit_type(xmit),
                "vlan": _vlan_tags(proto, int(k[K.K_VLAN])),
                "tun": (_words_addr(k[K.K_TUN_SADDR : K.K_TUN_SADDR + 1], 4),
                        _words_addr(k[K.K_TUN_DADDR : K.K_TUN_DADDR + 1], 4)) if K.encap_has_tun(proto) else None,
                "xmit_encap": bool(K.xmit_has_encap(xmit)),
                "oifidx": int(K.out_ifidx(int(v[K.V_OUT]))), "mtu": int(K.out_mtu(int(v[K.V_OUT]))),
                "h_source": int(v[K.V_H_SOURCE]).to_bytes(6, "big"),
                "h_dest": int(v[K.V_H_DEST]).to_bytes(6, "big"),
                "packets": int(v[K.V_PACKETS]), "bytes": int(v[K.V_BYTES]),
                "timeout_ns": int(v[K.V_TIMEOUT]), "xfrm": int(self.xfrm_sa[e]),
                "nexthop": _nexthop_str(self.nexthop[e]),
            })  # fmt: skip
        return out

    def listing(self, now_ns: int = 0, ifname: Callable[[int], str] | None = None) -> str:
        """A readable `flowtable list`: one line per direction, expiry in seconds from now_ns."""
        name = ifname or (lambda i: f"if{i}")
        rows = [f"flowtable {self.name}: {len(self)} flows, {self.nused} entries, capacity {self.capacity}"]
        hdr = f"{'id':>6} {'dir':<5} {'proto':<5} {'tuple':<58} {'out':<8} {'nat':<9} {'packets':>9} {'bytes':>11} expires"
        rows.append(hdr)
        for d in self.entries():
            fam = "ip" if d["l3proto"] == 4 else "ip6"
            proto = {6: "tcp", 17: "udp"}.get(d["l4proto"], str(d["l4proto"]))
            tup = f"{_fmt_ep(d['saddr'], d['sport'])} > {_fmt_ep(d['daddr'], d['dport'])}"
            nat = "+".join(s for s, f in (("snat", K.F_SNAT), ("dnat", K.F_DNAT)) if d["flags"] & f) or "-"
            state = [s for s, f in (("CLOSING", K.F_CLOSING), ("TEARDOWN", K.F_TEARDOWN)) if d["flags"] & f]
            if d["xfrm"] >= 0:  # XMIT_XFRM: encrypted with this SA (its SAD index)
                state.append(f"xfrm-out:sa{d['xfrm']}")
            if d["encap"] and d["tun"] is None:  # only matched by packets ESP input decrypted with this SA
                state.append(f"xfrm-in:sa{K.encap_sa(d['encap'])}")
            if d["vlan"]:  # only matched by frames with these tags (outer first)
                state.append("vlan:" + ".".join(str(tci & 0xFFF) for _, tci in d["vlan"]))
            if d["tun"] is not None:  # only matched inside this IPIP outer pair (remote > local)
                state.append(f"ipip:{d['tun'][0]}>{d['tun'][1]}")
            exp = (d["timeout_ns"] - now_ns) / 1e9
            rows.append(
                f"{d['flow_id']:>6} {('orig', 'reply')[d['dir']]:<5} {fam + '/' + proto:<9.9} {tup:<54} "
                f"{name(d['oifidx']):<8} {nat:<9} {d['packets']:>9} {d['bytes']:>11} {exp:.1f}s"
                + (" " + ",".join(state) if state else "")
            )
        return "\n".join(rows)


def _vlan_tags(proto: int, w: int) -> list[tuple[int, int]]:
    """encap[] of a key as [(ETH_P_8021Q or ETH_P_8021AD, tci), ...], outer tag first."""
    return [(ETH_P_8021AD if K.encap_vlan_ad(proto, i) else ETH_P_8021Q, int(K.vlan_tci(w, i)))
            for i in range(K.encap_vlan_num(proto))]  # fmt: skip


def _words_addr(w: np.ndarray, l3proto: int) -> str:
    if l3proto == 4:
        return str(ipaddress.IPv4Address(int(w[0])))
    return str(ipaddress.IPv6Address(sum(int(x) << s for x, s in zip(w, (96, 64, 32, 0), strict=True))))


def _nexthop_str(row: np.ndarray) -> str | None:
    """The next hop's address as text, or None when the entry follows no neighbour."""
    fam = int(row[NH_FAMILY])
    return _words_addr(row[NH_ADDR : NH_ADDR + 4], fam) if fam else None


def _fmt_ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

"""The compiled classic lane's Python side: the tables it reads, as arrays, and its scratch.

No Linux counterpart (flowpath/inet/classic_lane.py runs the lane). One ClassicLane per Worker: it
gathers the namespace's views (conntrack rows and index, the nft programs and hook entries, FIB,
links, neighbours), runs classic_lane_batch over a poll's classic-path packets and tells the Worker
which ones it finished and which it left to the Python path.
"""

from __future__ import annotations

import numpy as np

from flowpath.flowtable.core import Flowtable
from flowpath.flowtable.hook import jit_entry
from flowpath.flowtable.key import KEY_ROW
from flowpath.inet.classic_lane import classic_lane_batch
from flowpath.inet.classic_lane_prefetch import PF_RING_WORDS
from flowpath.inet.classic_lane_state import (
    CFG_BATCH,
    CFG_EVICT_OK,
    CFG_EVICT_SLOTS,
    CFG_MAX_ENTRIES,
    CFG_NEW_OK,
    CFG_NEXT_GC_NS,
    CFG_NR_CPUS,
    CFG_WORDS,
    CNT_CT_DROP,
    CNT_DONE,
    CNT_EARLY_DROP,
    CNT_FOUND,
    CNT_INSERT,
    CNT_LAST_TS,
    CNT_OFFLOADED,
    CNT_PUNTED,
    CNT_RESUME,
    CNT_SENT,
    CNT_WORDS,
    CNT_YIELD,
    CNT_ZOMBIES,
    ENTRY_CHAIN,
    LANE_OK,
    MAX_ENTRIES,
    MAX_NAT_CHAINS,
    PS_SIZE,
    SNAP_BYTES,
    YIELD_INDEX_PROBE,
    YIELD_ROWS,
)
from flowpath.netfilter import constants as C
from flowpath.netfilter.ct_layout import CT_HOT_ROW
from flowpath.netfilter.netdev import has_netdev_chains
from flowpath.netfilter.nf_conntrack_table import CTR_FREE_TOP
from flowpath.netfilter.nf_nat_core import NR_WORDS
from flowpath.netfilter.nft_set_hash import UNDO_MAX, UNDO_W
from flowpath.netfilter.nft_vm import NFT_JUMP_STACK_SIZE, NFT_REG_FILE, OUT_SIZE, PM_SIZE
from flowpath.packet.reason import N_LANE_PUNTS

_NFPROTOS = (C.NFPROTO_IPV4, C.NFPROTO_IPV6)
_HOOKS = (C.NF_INET_PRE_ROUTING, C.NF_INET_FORWARD, C.NF_INET_POST_ROUTING)


def lane_hook_entries(nf, chain_id) -> tuple[np.ndarray, ...] | None:
    """hooks.py's entries of PREROUTING, FORWARD and POSTROUTING as arrays: hookv int64[2, 5,
    MAX_ENTRIES, 2] (kind, VM chain id) and hookn int64[2, 5], and the NAT entry's nat chains,
    natv int64[2, 5, MAX_NAT_CHAINS] (VM chain ids) and natn int64[2, 5]. A chain without a program
    gets -1 (the VM punts it). None when a hook has more entries than the lane holds."""
    hookv = np.zeros((2, 5, MAX_ENTRIES, 2), np.int64)
    hookn = np.zeros((2, 5), np.int64)
    natv = np.zeros((2, 5, MAX_NAT_CHAINS), np.int64)
    natn = np.zeros((2, 5), np.int64)
    for p, nfproto in enumerate(_NFPROTOS):
        for hook in _HOOKS:
            ents = nf.entries[nfproto, hook]
            nat = nf.nat_chains.get((nfproto, hook), ())
            if len(ents) > MAX_ENTRIES or len(nat) > MAX_NAT_CHAINS:
                return None
            hookn[p, hook] = len(ents)
            for e, ent in enumerate(ents):
                hookv[p, hook, e, 0] = ent.kind
                hookv[p, hook, e, 1] = chain_id(ent.chain) if ent.kind == ENTRY_CHAIN else -1
            natn[p, hook] = len(nat)
            for j, chain in enumerate(nat):
                natv[p, hook, j] = chain_id(chain)
    return hookv, hookn, natv, natn


class ClassicLane:
    """One worker's lane: scratch, the per-batch taint marks and the cached views of `net`."""

    def __init__(self) -> None:
        self.scr = (
            np.zeros(KEY_ROW, np.uint32),  # the packet's conntrack key
            np.zeros(SNAP_BYTES, np.uint8),  # its header bytes, restored on a punt
            np.zeros(CT_HOT_ROW, np.int64),  # its conntrack row, restored on a punt
            np.zeros(PM_SIZE, np.int64),  # the VM's pktmeta
            np.zeros(OUT_SIZE, np.int64),  # the VM's out
            np.zeros(16, np.uint8),  # a NAT target address
            np.zeros(OUT_SIZE, np.int64),  # counter hits kept until the packet is done
            np.zeros(NFT_REG_FILE, np.uint8),  # the VM's registers
            np.zeros(NFT_JUMP_STACK_SIZE, np.int64),  # and jump stack
            np.zeros(PS_SIZE, np.int64),  # the per-packet state
            np.zeros(CNT_WORDS, np.int64),  # counts (classic_lane.CNT_*)
            np.zeros(NR_WORDS, np.int64),  # a NAT range (nf_nat_core.py)
            np.zeros((2, KEY_ROW), np.uint32),  # NAT's candidate tuples
            np.zeros((UNDO_MAX + 1, UNDO_W), np.int64),  # the VM's writes to sets and limits, undone on a punt
            np.zeros(PF_RING_WORDS, np.int64),  # the prefetch stages' hashes and victims (classic_lane_prefetch.py)
        )
        self.cfg = np.zeros(CFG_WORDS, np.int64)
        self._taint = np.zeros(0, np.int64)
        self._gen = np.zeros(1, np.int64)  # the batch's taint generation (ct[4])
        self._args: list | None = None  # classic_lane_batch's arguments, while _stamp holds
        self._stamp: tuple | None = None
        self._ents_key = None
        self._ents = None
        self._usable = False
        self._ft_key: tuple = (None, None)  # (net.flowtables, the VM) _ft was found for
        self._ft = None  # (VM flowtable id, Flowtable) of the lane's flow adds, None: none
        self._vm = None
        self._entry = None
        self._masq_key = None
        self._masq = np.zeros(1, np.int64)
        self._out = np.zeros((2, 256), np.int64)
        self._zomb = np.zeros(256, np.int64)
        # flow add: the rows the lane builds (flow_add.py's `ent`), and a stand-in table when the
        # worker has no flowtable the lane can offload into (the kernel's types stay the same)
        self._no_ft = Flowtable("", capacity=2)
        self._fent = tuple(np.zeros_like(a) for a in self._no_ft._ent)

    def usable(self, net, batch_n: int) -> bool:
        """Can the lane run on this poll? Not with IPsec (the policy checks are Python's), nor with netdev
        chains (ingress and egress hooks, fwd and dup are Python's: it steps aside for the whole
        ruleset, so that it never has a hook to run)."""
        if net.xfrm is not None:
            return False
        self._entries(net)
        return self._usable

    @staticmethod
    def _new_ok(ct, batch_n: int) -> int:
        """May the lane open connections in this poll? With one worker (several: NAT's port choice
        follows steering the lane does not run under). Rows for the batch's new entries are made
        ready here (the table grows by rows only: the index is sized by confirmed entries, so this is
        not visible). When the index must be rebuilt, the lane stops at that packet (LANE_YIELD)
        and run() rebuilds it, as hash_insert would at that very packet, then resumes."""
        if ct.nr_cpus > 1:
            return 0
        if ct.ctr[CTR_FREE_TOP] < batch_n:
            # at the limit each new entry takes an evicted one's row: no rows past nf_conntrack_max
            need = min(batch_n, max(0, ct.max_entries - ct.nconfirmed))
            while ct.ctr[CTR_FREE_TOP] < need:
                ct._grow()
        return 1

    def _masq4(self, net) -> np.ndarray:
        """The IPv4 address masquerade picks on each device whatever the next hop, -1 where it
        depends on it (or there is none: the Python path decides)."""
        dev = net.dev
        key = (dev.link_genid, dev.dev_addr_genid, id(dev))
        if key != self._masq_key:
            n = dev.link_views()[0].shape[0]
            m = np.full(max(n, 1), -1, np.int64)
            for ifx in net.links:
                a = dev.masq_addr4_any_dst(ifx) if ifx < n else None
                if a is not None:
                    m[ifx] = a
            self._masq, self._masq_key = m, key
        return self._masq

    def _flowtable(self, net, n: int) -> tuple:
        """(VM flowtable id, (fa, fp, ent)): the flowtable `flow add` offloads into in the lane, the
        worker's only one, with room made for the n packets' flows; id -1 (every `flow add` punted)
        when it has several or none."""
        fts = net.flowtables
        if fts is not self._ft_key[0] or self._vm is not self._ft_key[1]:
            self._ft_key, self._ft = (fts, self._vm), None
            if len(fts) == 1:
                (name, (ft, _)), = fts.items()
                if name in self._vm.ft_names:
                    self._ft = (self._vm.ft_names.index(name), ft)
        if self._ft is None:
            return -1, (self._no_ft.fa, self._no_ft.fp, self._fent)
        ftid, ft = self._ft
        ft.reserve(n)
        return ftid, (ft.fa, ft.fp, self._fent)

    def _entries(self, net):
        """The hook entries and the nft programs, built again when the ruleset or the links change
        (and whether the ruleset leaves the lane usable: usable())."""
        key = (id(net.nf), id(net.nft), net.dev.link_genid)
        if key != self._ents_key:
            vm = net.nft.vm if net.nft is not None else None
            if vm is None:
                vm = _empty_vm()
            else:  # the lane names devices by ifindex (rows of the VM's names table)
                vm.set_ifnames({lk.name: ifx for ifx, lk in net.links.items()})
            self._vm = vm
            self._ents = lane_hook_entries(net.nf, lambda c: vm.chain_id.get(id(c), -1))
            self._usable = self._ents is not None and not has_netdev_chains(net.nft)  # netdev: nf_dup_netdev.py
            self._ents_key = key
        return self._ents

    def run(self, net, batch, idx: np.ndarray, next_gc_ns: int, offload: bool, stats):
        """classic_lane_batch over batch's packets idx (int64, in order), counted into stats (a
        Worker's Stats); returns (punted, sent, last_ts): the packets it left to the Python path and
        those it transmitted (int64 batch indexes, in order), and the time of the last one it
        finished (-1: none)."""
        ct, n = net.conntrack, idx.shape[0]
        new_ok = self._new_ok(ct, n)
        ftid, fo = self._flowtable(net, n)
        # the arguments are built again only when a table they view moved (grew, was rebuilt) or the
        # batch, the ruleset, the counters or a setting changed: per poll, Python's work is this check
        views = self._views(net, batch, stats, fo)
        words = (ftid, offload, ct.nr_cpus, ct.max_entries, bool(ct.destroy_hooks), net.uses_rt)
        old = self._stamp  # (views, words, their ids): held, so that no id is reused while compared
        if old is None or words != old[1] or n > self._out.shape[1] or tuple(map(id, views)) != old[2]:
            self._arguments(net, batch, n, stats, fo, (views, words))
        cfg, cnt, args = self.cfg, self.scr[10], self._args
        cfg[CFG_NEW_OK], cfg[CFG_NEXT_GC_NS], cfg[CFG_BATCH] = new_ok, next_gc_ns, 1
        start = 0
        while True:
            args[1] = idx[start:]
            self._entry(*args)
            resume = int(cnt[CNT_RESUME])
            if not resume:
                break
            start += resume - 1  # that packet runs again once Python has made room
            self._make_room(ct, int(cnt[CNT_YIELD]))
            self._arguments(net, batch, n, stats, fo, (self._views(net, batch, stats, fo), words))
            args = self._args
        c = cnt.tolist()
        done, sent = c[CNT_DONE], c[CNT_SENT]
        stats.lane_packets += done
        stats.slowpath_packets += done
        stats.tx_packets += sent
        stats.tx_bursts += sent
        stats.flows_offloaded += c[CNT_OFFLOADED]
        if c[CNT_FOUND] or c[CNT_INSERT] or c[CNT_EARLY_DROP] or c[CNT_CT_DROP]:
            st = ct.stat
            st["found"] += c[CNT_FOUND]
            st["insert"] += c[CNT_INSERT]
            st["early_drop"] += c[CNT_EARLY_DROP]
            st["drop"] += c[CNT_CT_DROP]
        self._free_zombies(ct)
        out = self._out
        return out[0, : c[CNT_PUNTED]], out[1, :sent], c[CNT_LAST_TS] if done else -1

    def _views(self, net, batch, stats, fo: tuple) -> tuple:
        """The tables classic_lane_batch's arguments view (run's stamp compares them by identity)."""
        ct, dev = net.conntrack, net.dev
        return (batch.cols, stats.cols, ct.views(), ct.rowv(), ct.bys, fo[0], fo[1], dev.fib_views(),
                dev.link_views()[0], dev.neigh_views(), self._masq4(net), self._ents, self._vm.progs, ct.tcp_params,
                ct.prng)  # fmt: skip

    def _free_zombies(self, ct) -> None:
        """The rows the lane evicted under a Python view (CNT_ZOMBIES), freed: each view keeps a copy."""
        cnt = self.scr[10]
        if not cnt[CNT_ZOMBIES]:  # every poll: nothing to do, almost always
            return
        for v in self._zomb[: cnt[CNT_ZOMBIES]].tolist():
            ct.row_free(v)
        cnt[CNT_ZOMBIES] = 0

    def _make_room(self, ct, why: int) -> None:
        """What the lane stopped for (a LANE_YIELD; why is CNT_YIELD's word), done as the Python path
        would at that packet: the index rebuilt, larger after a probe run found no slot
        (hash_insert); the evicted rows Python's views held freed, the table grown if still no row is
        free (init_conntrack's allocation)."""
        self._free_zombies(ct)
        if why == YIELD_INDEX_PROBE:
            ct.index_grow()
        elif why == YIELD_ROWS and ct.ctr[CTR_FREE_TOP] == 0:
            ct._grow()
        ct.index_make_room()

    def _arguments(self, net, batch, n: int, stats, fo: tuple, stamp: tuple) -> None:
        """classic_lane_batch's arguments (idx aside) and the words of cfg that follow the tables, for
        the state stamp describes (run's (views, words)); its entry point resolved on the first call."""
        ct = net.conntrack
        (_, _, _, _, _, _, _, fv, lk, nv, masq, _, progs, _, _), (ftid, offload, nr_cpus, max_entries, hooks, uses_rt) = stamp
        cfg = self.cfg
        cfg[CFG_NR_CPUS] = nr_cpus
        cfg[CFG_MAX_ENTRIES] = max_entries
        cfg[CFG_EVICT_OK] = not hooks
        cfg[CFG_EVICT_SLOTS] = ct.early_drop_slots(max_entries)  # the index's size now
        if self._taint.shape[0] < ct.capacity:
            self._taint = np.zeros(ct.capacity, np.int64)
        if self._out.shape[1] < n:
            self._out = np.zeros((2, n), np.int64)
            self._zomb = np.zeros(n, np.int64)
        nftt = (progs, int(offload), ftid, fo, fv)  # fv: what the VM's `fib` looks up in
        rtv = (fv, lk, nv, int(uses_rt), masq)
        b = batch
        pk = (b.data, b.head, b.len, b.iif, b.oif, b.verdict, b.ts_ns, b.gso, b.encap)
        cnt = self.scr[10]
        acct = (stats.reasons, stats.ifc, stats.lane_punts, cnt)
        ctt = (ct.views(), ct.hot, ct.key, self._taint, self._gen, ct.tcp_params, ct.rowv(), ct.bys, ct.prng, cfg, cnt,
               self._zomb)  # fmt: skip
        self._args = args = [pk, np.zeros(0, np.int64), self._out, self._ents, nftt, ctt, rtv, cfg, self.scr, acct]
        if self._entry is None:  # every argument keeps its type from poll to poll (see jit_entry)
            self._entry = jit_entry(classic_lane_batch, tuple(args))
        self._stamp = (*stamp, tuple(map(id, stamp[0])))


_EMPTY = []


def _empty_vm():
    """The programs of an empty ruleset: what the lane runs without one (no chain is ever entered)."""
    if not _EMPTY:
        from flowpath.netfilter.nf_tables import NftRuntime

        _EMPTY.append(NftRuntime.from_json({"nftables": []}).vm)
    return _EMPTY[0]


__all__ = ["LANE_OK", "N_LANE_PUNTS", "ClassicLane", "lane_hook_entries"]

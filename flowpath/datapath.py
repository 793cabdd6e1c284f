"""Worker: one CPU's datapath — early ingress (the flowtable), the slow path, and transmit.

No Linux counterpart as a whole (it plays the part of a NAPI poll loop plus netif_receive_skb_list,
over softnet_data: what is per CPU). A batch goes through the compiled flowtable hook first; what it
does not forward goes, packet by packet and in order, through the classic path (flowpath.inet.dev) on
the namespace's state (`net`, flowpath.netns.Net), which returns what to transmit and what the Worker
must do (offload a connection, add a tunnel tuple) on an OutputQueue. Transmitted frames are handed
back per batch, in packet order, to the caller (a port).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.counters import Stats, account_batch
from flowpath.flowtable import Flowtable, FlowTuple, nf_flow_offload_hook
from flowpath.flowtable.hook import OffloadScratch, _nf_flow_offload_hook
from flowpath.flowtable.key import V_FLAGS, V_TIMEOUT
from flowpath.flowtable.xfrm import (
    IPDEFTTL,
    XFRM_PENDING,
    XfrmInputTable,
    XfrmScratch,
    nf_flow_xfrm_first_slow,
    nf_flow_xfrm_flush,
    nf_flow_xfrm_input,
    nf_flow_xfrm_output,
    nf_flow_xfrm_park,
)
from flowpath.inet.dev import netif_receive_skb, xfrm_rcv_decrypted
from flowpath.inet.ip_fragment import ip_expire
from flowpath.inet.output_queue import OutputQueue
from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_flow_offload import (
    flow_offload_fixup_ct,
    nf_flow_table_extend_ct_timeout,
    nft_flow_offload_eval,
)
from flowpath.netns import Net
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import IS_SLOW, Reason
from flowpath.packet.skb import SkBuff, frame_array
from flowpath.xfrm.listing import xfrm_policy_list, xfrm_state_list
from flowpath.xfrm.state import xfrm_state_check_expire, xfrm_state_ctx, xfrm_timer

_FF, _SLOW_NO_ENTRY = int(Reason.FLOW_FORWARD), int(Reason.SLOW_NO_ENTRY)
_PARKED = 255  # not a Reason: a packet held back while another flowtable's devices are looked up
_NO_TUNNELS = XfrmInputTable(capacity=1, seed=0).cols  # an empty tunnel table: no ESP input
GC_INTERVAL_NS = 1_000_000_000  # nf_flow_offload_work_gc runs every HZ


@njit(cache=True, nogil=True)
def flow_park_foreign(verdict, iif, n, dev_ok, from_v, to_v):
    """Move packets whose verdict is from_v and whose input device is not in dev_ok to to_v.

    No Linux counterpart (Linux registers the flowtable hook on its devices only).
    verdict uint8[n]; iif int32[n]; dev_ok bool[max_ifindex + 1]. Returns how many moved.
    """
    moved = 0
    for i in range(n):
        if verdict[i] == from_v:
            x = iif[i]
            if x < 0 or x >= dev_ok.shape[0] or not dev_ok[x]:
                verdict[i] = to_v
                moved += 1
    return moved


@njit(cache=True, nogil=True, _nrt=False)
def _early_ingress_kernel(data, head, length, iif, oif, verdict, flow, encap, n, now_ns, index, key, val, nat6, mask,
                          max_probes, timeout_tcp_ns, timeout_udp_ns, counter, seed, pkey, phash, group,
                          group_start, group_count, order, gfirst, gtab, hdr, bulk, dev_ok, reasons, ifc):  # fmt: skip
    """One flowtable's early ingress over a batch: packets of other devices go slow, the hook runs,
    the batch is counted. Returns (forwarded, slow, ngroups, hits). No Linux counterpart.
    What changes from poll to poll comes first (the batch's columns, n, now_ns); the rest is the
    Worker's cached tuple (Worker._hook_args)."""
    flow_park_foreign(verdict, iif, n, dev_ok, _FF, _SLOW_NO_ENTRY)
    fwd, slow, ng = _nf_flow_offload_hook(data, head, length, iif, oif, verdict, flow, encap, n, index, key, val, nat6,
                                          mask, max_probes, timeout_tcp_ns, timeout_udp_ns, counter, seed, pkey,
                                          phash, group, group_start, group_count, order, gfirst, gtab, hdr, now_ns,
                                          bulk)  # fmt: skip
    hits = account_batch(verdict, iif, oif, length, n, reasons, ifc)
    return fwd, slow, ng, hits


@njit(cache=True, nogil=True)
def _early_ingress_xfrm_kernel(data, head, length, iif, oif, verdict, flow, encap, n, now_ns, index, key, val, nat6,
                               mask, max_probes, timeout_tcp_ns, timeout_udp_ns, counter, seed, pkey, phash, group,
                               group_start, group_count, order, gfirst, gtab, hdr, bulk, dev_ok, reasons, ifc,
                               xfrm_sa, tcols, ttl, psa, idx, nhoff, kr, scr, sa_bulks, xin_on, xin):  # fmt: skip
    """_early_ingress_kernel for a flowtable with XMIT_XFRM entries: ESP input when xin_on (xin: the
    tunnel table's cols), the hook, ESP output of the XMIT_XFRM hits before the first slow-path packet,
    parking of those after it (flowtable/xfrm.py), then the counters; one crossing into numba.
    Returns (forwarded, slow, ngroups, hits, refused by ESP output, parked)."""
    if xin_on:
        nf_flow_xfrm_input(data, head, length, iif, verdict, encap, n, xin[0], xin[1], xin[2], xin[3], xin[4], xin[5],
                           tcols, bulk, psa, idx, nhoff, kr, scr, sa_bulks)  # fmt: skip
    flow_park_foreign(verdict, iif, n, dev_ok, _FF, _SLOW_NO_ENTRY)
    fwd, slow, ng = _nf_flow_offload_hook(data, head, length, iif, oif, verdict, flow, encap, n, index, key, val, nat6,
                                          mask, max_probes, timeout_tcp_ns, timeout_udp_ns, counter, seed, pkey,
                                          phash, group, group_start, group_count, order, gfirst, gtab, hdr, now_ns,
                                          bulk)  # fmt: skip
    bad = parked = 0
    if fwd:
        cut = nf_flow_xfrm_first_slow(verdict, n)
        bad = nf_flow_xfrm_output(data, head, length, iif, verdict, flow, 0, cut, _FF, dev_ok, key, xfrm_sa, tcols,
                                  ttl, bulk, psa, idx, nhoff, scr, sa_bulks)  # fmt: skip
        parked = nf_flow_xfrm_park(verdict, flow, cut, n, key)
    hits = account_batch(verdict, iif, oif, length, n, reasons, ifc)
    return fwd, slow, ng, hits, bad, parked


class TxList:
    """What one poll transmits. Fast-path hits stay in the batch's slots (one burst per bulk group);
    slow-path frames are bytes. `frames()` gives (ifindex, frame, ts_ns) in arrival order, which keeps
    every flow's order on every interface.

    batch  the polled batch
    hits   int32 arrays of packet indices, in group order
    slow   (packet index, seq, ifindex, frame) of the classic path's transmits

    No Linux counterpart (a poll's xmit lists). A plain class with slots: one is made per poll.
    """

    __slots__ = ("batch", "hits", "slow")

    def __init__(self, batch: PacketBatch):
        self.batch, self.hits, self.slow = batch, [], []

    def frames(self) -> list[tuple[int, bytes, int]]:
        b = self.batch
        out = [(int(i), 0, int(b.oif[i]), None) for h in self.hits for i in h] + self.slow
        out.sort(key=lambda r: (r[0], r[1]))
        return [(ifx, f if f is not None else b.frame_bytes(i), int(b.ts_ns[i])) for i, _, ifx, f in out]


class Worker:
    """One CPU (softnet_data): its batches, scratch, flowtable fast path and counters, over the
    namespace's state.

    net        flowpath.net Network (links, addresses, FIB, neighbours; xfrm from the network file)
    ruleset    flowpath.config.nft Ruleset or None
    flowtable  False: every packet takes the classic path (`replay --no-flowtable`)
    bulk       False: one transmit per packet (`--no-bulk`)
    sysctl     net.netfilter.* overrides (flowpath.netns.SYSCTL_DEFAULTS)
    """

    def __init__(
        self,
        net,
        ruleset=None,
        *,
        flowtable: bool = True,
        bulk: bool = True,
        sysctl: dict[str, int] | None = None,
    ):
        self.net = Net(net, ruleset, flowtable=flowtable, sysctl=sysctl)
        self.xfrm = self.net.xfrm
        self.conntrack = self.net.conntrack
        self.flowtables = self.net.flowtables
        self.bulk = bulk
        self.stats = Stats(max(net.links) if net.links else 0)
        self.now_ns = 0
        self._next_gc_ns = 0
        nif = max(net.links) + 1 if net.links else 1
        self._no_devs, self._any_devs = np.zeros(nif, np.bool_), np.zeros(nif, np.bool_)
        self._ft_list = []
        for ft, ifindexes in self.flowtables.values():
            dev_ok = np.zeros(nif, np.bool_)
            dev_ok[list(ifindexes)] = True
            self._any_devs |= dev_ok
            self._ft_list.append((ft, dev_ok))
        # IPsec on the fast path (flowtable/xfrm.py): tunnel tuples, scratch, per-SA bulk counts
        self._xin = XfrmInputTable() if self.xfrm is not None and self.flowtables else None
        self._xscratch: dict[int, XfrmScratch] = {}
        self._sa_bulks = np.zeros(0, np.int64)
        self._xfrm_parked: list = []  # (flowtable, dev_ok) with XMIT_XFRM hits parked in this poll
        self._offload_scratch: dict[int, OffloadScratch] = {}  # by batch capacity: one warm scratch
        self._hook_cache: dict[int, tuple] = {}  # id(flowtable) -> (views, capacity, scratch, args)
        self._q = OutputQueue()  # the classic path's output for the packet in hand

    def ifname(self, ifindex: int) -> str:
        return self.net.ifname(ifindex)

    def flow_offload(self, skb: SkBuff, flowtable: str) -> None:
        """`flow add @ft` accepted this packet and it was transmitted: offload its connection."""
        entry = self.flowtables.get(flowtable)
        if entry is not None and nft_flow_offload_eval(self.net, skb, entry[0]) >= 0:
            self.stats.flows_offloaded += 1

    def xfrm_listing(self) -> str:
        """`ip -s xfrm state` then `ip -s xfrm policy`, with the SAs' counters (empty without xfrm)."""
        if self.xfrm is None:
            return ""
        return xfrm_state_list(self.xfrm, stats=True) + xfrm_policy_list(self.xfrm, stats=True)

    def flowtable_listing(self) -> str:
        """What `flowpath ctl flowtable list` will print: every flowtable's entries."""
        return "\n".join(ft.listing(self.now_ns, self.ifname) for ft, _ in self.flowtables.values())

    def xfrm_input_offload(self, skb: SkBuff, x) -> None:
        """The classic path decrypted skb (the outer packet) with SA x: later ESP of that SA on this
        device is decrypted at early ingress (flowtable/xfrm.py). Only untagged frames on flowtable
        devices, and only with the compiled ESP kernels (EVP contexts)."""
        if self._xin is None or skb.vlan >= 0 or skb.meta.get("sp") or not self._any_devs[skb.iif]:
            return
        if not xfrm_state_ctx(self.xfrm, x)[1]:
            return
        l3 = 6 if skb.l3proto == L.ETH_P_IPV6 else 4
        udp = skb.l4proto == L.IPPROTO_UDP
        t = FlowTuple(skb.iif, l3, skb.l4proto, skb.saddr, skb.daddr, skb.sport if udp else 0,
                      skb.dport if udp else 0, x.spi)  # fmt: skip
        self._xin.add(t, x.index)

    def _xfrm_scratch(self, capacity: int) -> XfrmScratch:
        xs = self._xscratch.get(capacity)
        if xs is None:
            xs = self._xscratch[capacity] = XfrmScratch(capacity)
        nsa = self.xfrm.tab.spi.shape[0] + 1  # + the "some SA is flagged" slot
        if self._sa_bulks.shape[0] != nsa:
            self._sa_bulks = np.zeros(nsa, np.int64)
        return xs

    def _xfrm_input(self, batch: PacketBatch) -> None:
        """ESP to the tunnel tuples: decrypted in bulks per SA before the flowtable lookup."""
        xs, xin = self._xfrm_scratch(batch.capacity), self._xin
        nf_flow_xfrm_input(batch.data, batch.head, batch.len, batch.iif, batch.verdict, batch.encap, batch.n,
                           xin.index, xin.key, xin.sa, xin.seed, xin.ports, xin.devs, self.xfrm.cols, self.bulk, xs.psa,
                           xs.idx, xs.nhoff, xs.kr, xs.scr, self._sa_bulks)  # fmt: skip
        self._xfrm_expire()

    def _xfrm_flush(self, batch: PacketBatch, lo: int, hi: int) -> None:
        """Encrypt and count the parked XMIT_XFRM hits lo..hi-1 (between two slow-path packets)."""
        xs, st = self._xfrm_scratch(batch.capacity), self.stats
        for ft, dev_ok in self._xfrm_parked:
            hits = nf_flow_xfrm_flush(batch.data, batch.head, batch.len, batch.iif, batch.oif, batch.verdict,
                                      batch.flow, lo, hi, dev_ok, ft.key, ft.xfrm_sa, self.xfrm.cols, IPDEFTTL,
                                      self.bulk, xs.psa, xs.idx, xs.nhoff, xs.scr, self._sa_bulks, st.reasons,
                                      st.ifc)  # fmt: skip
            st.fastpath_packets += hits
            st.tx_packets += hits
        self._xfrm_expire()

    def _xfrm_expire(self) -> None:
        """Lifetime checks of the SAs whose bulk crossed a limit (xfrm_state_wants_check); flows through
        a dead SA are torn down."""
        bulks = self._sa_bulks
        if not bulks[-1]:
            return
        bulks[-1] = 0
        for sa in np.flatnonzero(bulks):
            bulks[sa] = 0
            if not xfrm_state_check_expire(self.xfrm, self.xfrm.states[int(sa)], self.now_ns):
                for ft, _ in self._ft_list:
                    if ft.nused:
                        ft.flow_offload_teardown_xfrm(int(sa))

    def slow_path(self, buf, iif: int, ts_ns: int, sa: int = -1) -> Reason:
        """One frame through the classic path (flowpath.inet.dev); sa >= 0: decrypted by the fast
        path's ESP input with that SA. Counts the frame's reason, leaves its transmits in
        self._q.frames and carries out its requests (tunnel tuples, then offloads)."""
        q, st = self._q, self.stats
        q.frames.clear()
        if sa >= 0:
            reason = xfrm_rcv_decrypted(self.net, q, buf, iif, ts_ns, self.xfrm.states[sa])
        else:
            reason = netif_receive_skb(self.net, q, buf, iif, ts_ns)
        st.count(reason)
        for r in q.generated:  # an originated packet that could not be sent
            st.count(r)
        q.generated.clear()
        for skb, x in q.xfrm_in:
            self.xfrm_input_offload(skb, x)
        q.xfrm_in.clear()
        for skb, name in q.offload:
            self.flow_offload(skb, name)
        q.offload.clear()
        return reason

    # -- the datapath -----------------------------------------------------------------------------
    def rx_batch(self, batch: PacketBatch) -> list[tuple[int, bytes, int]]:
        """Process a batch; return the frames to transmit as (ifindex, frame, ts_ns), in order."""
        return self.poll(batch).frames()

    def poll(self, batch: PacketBatch) -> TxList:
        """Process a batch: the compiled flowtable hook over all of it, then the classic path for what
        it sent up, one packet at a time, in order. Hits stay in their slots (see TxList)."""
        n = batch.n
        tx = TxList(batch)
        if n == 0:
            return tx
        self.now_ns = int(batch.ts_ns[0])
        self._maybe_gc()
        verdict = batch.verdict
        st = self.stats
        xin = self._xin is not None and self._xin.count > 0
        one = len(self._ft_list) == 1
        if xin and not (one and self._ft_list[0][0].nxfrm):
            self._xfrm_input(batch)
        if one:
            hits = self._early_ingress_one(batch, tx, xin)
        else:
            if self.flowtables:
                self._early_ingress(batch, tx)
            else:
                verdict[:n][verdict[:n] == Reason.FLOW_FORWARD] = Reason.SLOW_NO_ENTRY
            hits = account_batch(verdict, batch.iif, batch.oif, batch.len, n, st.reasons, st.ifc)
        st.fastpath_packets += hits
        st.tx_packets += hits
        st.rx_packets += n
        slow = np.flatnonzero(IS_SLOW[verdict[:n]]) if hits < n else ()
        if self._xfrm_parked:
            parked, lo = np.flatnonzero(verdict[:n] == XFRM_PENDING), 0
        for i in slow:
            i = int(i)
            if self._xfrm_parked:
                self._xfrm_flush(batch, lo, i)
                lo = i + 1
            self.now_ns = int(batch.ts_ns[i])
            self._maybe_gc()
            st.slowpath_packets += 1
            self.slow_path(frame_array(batch.frame(i)), int(batch.iif[i]), self.now_ns, int(batch.encap[i]) - 1)
            frames = self._q.frames
            for k, (ifx, f) in enumerate(frames):
                tx.slow.append((i, k, ifx, f))
                st.tx(ifx, len(f))
            st.tx_bursts += len(frames)
        if self._xfrm_parked:
            self._xfrm_flush(batch, lo, n)
            tx.hits.append(parked[verdict[parked] == _FF])
            self._xfrm_parked = []
        st.icmp_ratelimited = self.net.icmp.ratelimited
        return tx

    def _early_ingress_one(self, batch: PacketBatch, tx: TxList, xin_done: bool) -> int:
        """The common case, one flowtable: device filter, hook and counters in one compiled call (each
        call into numba costs microseconds of argument checks, a large share of a 256-packet batch).
        xin_done: ESP input is left to this call (the flowtable has XMIT_XFRM entries)."""
        ft, dev_ok = self._ft_list[0]
        sc, args = self._hook_args(ft, dev_ok, batch.capacity)
        if ft.nxfrm:
            xs = self._xfrm_scratch(batch.capacity)
            fwd, slow, ng, hits, bad, parked = _early_ingress_xfrm_kernel(
                *batch.cols, batch.n, self.now_ns, *args, ft.xfrm_sa, self.xfrm.cols, IPDEFTTL, xs.psa, xs.idx,
                xs.nhoff, xs.kr, xs.scr, self._sa_bulks, xin_done, self._xin.cols if xin_done else _NO_TUNNELS)  # fmt: skip
            self._xfrm_expire()
            if parked:
                self._xfrm_parked.append((ft, dev_ok))
        else:
            fwd, slow, ng, hits = _early_ingress_kernel(*batch.cols, batch.n, self.now_ns, *args)
            bad = parked = 0
        if fwd:
            order = sc.order[:fwd]
            tx.hits.append(order[batch.verdict[order] == _FF] if bad or parked else order.copy())
            self.stats.tx_bursts += ng
        if slow:
            self._teardown_fixups(batch, ft)
        return hits

    def _hook_args(self, ft: Flowtable, dev_ok: np.ndarray, capacity: int) -> tuple[OffloadScratch, tuple]:
        """The hook's scratch for batches of this capacity and the kernel arguments that stay the same
        from poll to poll (rebuilt when the flowtable's views change, i.e. when it grows). Building
        them once saves a large share of a 256-packet poll's Python time."""
        c = self._hook_cache.get(id(ft))
        if c is None or c[0] is not ft.views or c[1] != capacity:
            sc = self._offload_scratch.get(capacity)
            if sc is None:
                sc = self._offload_scratch[capacity] = OffloadScratch.alloc(capacity)
            st = self.stats
            c = self._hook_cache[id(ft)] = (ft.views, capacity, sc,
                                            (*ft.views, *sc, self.bulk, dev_ok, st.reasons, st.ifc))  # fmt: skip
        return c[2], c[3]

    def _teardown_fixups(self, batch: PacketBatch, ft) -> None:
        for i in np.flatnonzero(batch.verdict[: batch.n] == Reason.SLOW_TCP_STATE):  # SYN on a CLOSING flow
            fid = int(batch.flow[i]) >> 1
            self._fixup(ft, fid, ft.flow_ct(fid))

    def _early_ingress(self, batch: PacketBatch, tx: TxList) -> None:
        """The compiled flowtable hook over the batch, per flowtable, for packets of its devices."""
        n, verdict, iif = batch.n, batch.verdict, batch.iif
        flow_park_foreign(verdict, iif, n, self._any_devs, _FF, _SLOW_NO_ENTRY)  # on no flowtable's device
        for ft, dev_ok in self._ft_list:
            parked = flow_park_foreign(verdict, iif, n, dev_ok, _FF, _PARKED)
            res = nf_flow_offload_hook(batch, ft, self.now_ns, self.bulk)
            xpark = nf_flow_xfrm_park(verdict, batch.flow, 0, n, ft.key) if ft.nxfrm and res.forwarded else 0
            if xpark:  # all of them: the slow loop encrypts them in batch order (poll)
                self._xfrm_parked.append((ft, dev_ok))
            if parked:
                flow_park_foreign(verdict, iif, n, self._no_devs, _PARKED, _FF)  # every device: all back
            if res.forwarded:
                order = res.order[: res.forwarded]
                tx.hits.append(order[verdict[order] == _FF] if xpark else order.copy())
                self.stats.tx_bursts += res.ngroups
            if res.slow:
                self._teardown_fixups(batch, ft)

    @property
    def next_gc_ns(self) -> int:
        """Packet time of the next GC run; ports end a poll batch there."""
        return self._next_gc_ns

    def _maybe_gc(self) -> None:
        if self.now_ns < self._next_gc_ns:
            return
        self._next_gc_ns = self.now_ns + GC_INTERVAL_NS
        self.conntrack.gc(self.now_ns)
        # nf_defrag's timers; their ICMP waits on the classic path's queue (inet/ip_fragment.py)
        self.stats.reasons[Reason.FRAG_REASM_TIMEOUT] += ip_expire(self.net, self._q, self.now_ns)
        if self.xfrm is not None:
            self._xfrm_gc()
        for ft, _ in self.flowtables.values():
            gone = ft.gc(self.now_ns, lambda fid, ct, flags, ft=ft: self._fixup(ft, fid, ct))
            self.stats.flows_expired += len(gone)
            for fid in np.flatnonzero(ft.used[0::2]):  # nf_flow_offload_gc_step on the survivors
                nf_flow_table_extend_ct_timeout(ft.flow_ct(int(fid)), self.now_ns)

    def _xfrm_gc(self) -> None:
        """The SAs' lifetime timers (xfrm_timer_handler), then teardown of flows through dead SAs."""
        xfrm_timer(self.xfrm, self.now_ns)
        dead = np.flatnonzero(self.xfrm.tab.dead[: len(self.xfrm.states)])
        for ft, _ in self._ft_list:
            if ft.nused:
                for sa in dead:
                    ft.flow_offload_teardown_xfrm(int(sa))

    def _fixup(self, ft, fid: int, ct) -> None:
        """flow_offload_teardown's conntrack fixup, once per flow (at teardown or at GC)."""
        if ct is None or not ct.status & C.IPS_OFFLOAD:
            return
        expired = int(ft.val[2 * fid : 2 * fid + 2, V_TIMEOUT].max()) - self.now_ns <= 0
        tmo = ft.timeout_tcp_ns if ct.l4proto == L.IPPROTO_TCP else ft.timeout_udp_ns
        flow_offload_fixup_ct(ct, int(ft.key[2 * fid, V_FLAGS]), self.now_ns, expired, tmo)

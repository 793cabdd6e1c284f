"""Worker: one CPU's datapath — early ingress (the flowtable), the slow path, and transmit.

No Linux counterpart as a whole (it plays the part of a NAPI poll loop plus netif_receive_skb_list,
over softnet_data: what is per CPU). A batch goes through the compiled flowtable hook first; what it
does not forward goes, packet by packet and in order, through the classic path (flowpath.inet.dev) on
the namespace's state (`net`, flowpath.netns.Net), which returns what to transmit and what the Worker
must do (offload a connection, add a tunnel tuple) on an OutputQueue. Transmitted frames are handed
back per batch, in packet order, to the caller (a port).
"""

from __future__ import annotations

import collections
import contextlib
from typing import Callable, TypeVar

import numpy as np

from flowpath.flowtable import FlowTuple
from flowpath.flowtable.ingress import EarlyIngress
from flowpath.flowtable.key import V_FLAGS, V_TIMEOUT, encap_sa, encap_xfrm
from flowpath.flowtable.xfrm import XFRM_PENDING
from flowpath.inet.classic_lane_views import ClassicLane
from flowpath.inet.dev import local_out_flush, netif_receive_skb, xfrm_rcv_decrypted
from flowpath.inet.ip_fragment import ip_expire
from flowpath.inet.neigh_output import neigh_timers
from flowpath.inet.nf_dup_netdev import egress_devs, nf_hook_egress_hits
from flowpath.inet.output_queue import OutputQueue
from flowpath.netfilter import constants as C
from flowpath.netfilter.nf_flow_table_ct import (
    nf_flow_table_extend_ct_rows,
    nf_flow_table_extend_due,
    nf_flow_table_gc,
)
from flowpath.netfilter.nft_flow_offload import (
    flow_offload_fixup_ct,
    nf_flow_table_netevent,
    nft_flow_offload_eval,
)
from flowpath.netns import Net
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.counters import Stats
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array
from flowpath.packet.steer import flow_steer_frame
from flowpath.ports.gso import skb_gso_segment
from flowpath.xfrm.listing import xfrm_monitor, xfrm_policy_list, xfrm_state_list
from flowpath.xfrm.state import Xfrm, xfrm_state_ctx, xfrm_timer

_FF = int(Reason.FLOW_FORWARD)
T = TypeVar("T")
GC_INTERVAL_NS = 1_000_000_000  # nf_flow_offload_work_gc runs every HZ


class TxList:
    """What one poll transmits. Fast-path hits stay in the batch's slots (one burst per bulk group);
    slow-path frames are bytes. `frames()` gives (ifindex, frame, ts_ns) in arrival order, which keeps
    every flow's order on every interface.

    batch  the polled batch
    hits   int32 arrays of packet indices, in group order
    slow   (packet index, seq, ifindex, frame, ts_ns) of the classic path's transmits

    No Linux counterpart (a poll's xmit lists). A plain class with slots: one is made per poll.
    """

    __slots__ = ("batch", "hits", "slow", "torn", "slow_work", "nslow")

    def __init__(self, batch: PacketBatch):
        self.batch, self.hits, self.slow = batch, [], []
        self.torn, self.slow_work, self.nslow = [], False, 0  # rx_fast's leftovers for rx_slow (batch.slow_idx)

    def rows(self) -> list[tuple[int, int, int, bytes | None, int]]:
        """Every transmit as (packet index, seq, ifindex, frame or None for a hit in its slot, ts_ns),
        in arrival order."""
        b = self.batch
        out = [(int(i), 0, int(b.oif[i]), None, 0) for h in self.hits for i in h] + self.slow
        out.sort(key=lambda r: (r[0], r[1]))
        return out

    def frames(self) -> list[tuple[int, bytes, int]]:
        b = self.batch
        return [(ifx, b.frame_bytes(i), int(b.ts_ns[i])) if f is None else (ifx, f, ts) for i, _, ifx, f, ts in self.rows()]


class Worker:
    """One CPU (softnet_data): its batches, scratch, flowtable fast path and counters, over the
    namespace's state.

    net        flowpath.net Network (links, addresses, FIB, neighbours; xfrm from the network file)
    ruleset    flowpath.config.nft Ruleset or None
    flowtable  False: every packet takes the classic path (`replay --no-flowtable`)
    bulk       False: one transmit per packet (`--no-bulk`)
    sysctl     net.netfilter.* overrides (flowpath.netns.SYSCTL_DEFAULTS)
    view       run on this worker's view of a namespace another Worker built (Net.for_cpu; the
               multi-worker group, flowpath/workers.py) instead of building one from net and ruleset
    classic_lane  False: every classic-path packet takes the Python path (the compiled lane's oracle)
    """

    def __init__(
        self,
        net,
        ruleset=None,
        *,
        flowtable: bool = True,
        bulk: bool = True,
        sysctl: dict[str, int] | None = None,
        view: Net | None = None,
        classic_lane: bool = True,
    ):
        self._flowtable, self._sysctl = flowtable, sysctl
        self.lane = ClassicLane() if classic_lane else None  # the compiled classic path's common case
        self.bulk = bulk
        self.stats = Stats(max(net.links) if net.links else 0)
        self.now_ns = 0
        self._next_gc_ns = 0
        self.net: Net | None = None
        self.xfrm, self._sa_torn = None, np.zeros(0, np.bool_)
        # with several workers (flowpath/workers.py): the lock of what they share (the classic path's
        # state, the GC of the shared tables), whether this one runs those timers (the first does),
        # packets other workers handed to this one (input_pkt_queue) and work they left for it
        # (changes to its flowtables, which only its own thread touches)
        self.smp_lock = contextlib.nullcontext()
        self.shared_timers = True
        self.backlog: collections.deque = collections.deque()
        self._backlog_slow: collections.deque = collections.deque()  # handed packets for the classic path
        self._handoff_batch: PacketBatch | None = None
        self.deferred: collections.deque = collections.deque()
        self.handoff_out: list = []  # (cpu, frame, iif, sa, ts_ns) this worker handed over
        self._q = OutputQueue()  # the classic path's output for the packet in hand
        self._timer_q = OutputQueue()  # what the GC's timers send (neighbour requests and errors)
        self._attach(view if view is not None else Net(net, ruleset, flowtable=flowtable, sysctl=sysctl))

    def _attach(self, net: Net) -> None:
        """Run on `net`: its flowtables' hooks (ESP input's tunnel tuples included) at early ingress."""
        if net.xfrm is not self.xfrm:
            self._sa_torn = np.zeros(0, np.bool_)  # SAs of this xfrm whose flows went down when they died
        old, self.net = self.net, net
        if net.nft is not None and self.now_ns:  # a ruleset loaded while running: its element timeouts
            net.nft.start_clock(self.now_ns)  # start now (before any packet: with the first one, nf_tables.py)
        self.xfrm = net.xfrm
        self.conntrack = net.conntrack
        self.flowtables = net.flowtables
        links = net.dev.links
        nif = max(links) + 1 if links else 1
        self.stats.grow(nif - 1)
        fts = []
        for ft, ifindexes in self.flowtables.values():
            dev_ok = np.zeros(nif, np.bool_)
            dev_ok[list(ifindexes)] = True
            fts.append((ft, dev_ok))
        self.ingress = EarlyIngress(fts, nif, self.xfrm, self.stats, self.bulk)
        self._egress = egress_devs(net, nif)  # None: no egress chain, the hits go as they are
        # the entries cache next hop addresses: hear of the neighbours' changes (only this net's)
        if old is not None:
            old.neigh.unregister_netevent_notifier(self._netevent)
        if self.flowtables:
            net.neigh.register_netevent_notifier(self._netevent)

    def reload(self, dev, ruleset=None) -> None:
        """Run on a new network model and ruleset (`flowpath run`'s SIGHUP, `ctl nft -f`), atomically:
        the new state is built first, so an error leaves the old one running. Conntrack is kept; every
        offloaded flow is torn down with its conntrack fixup, so its next packet takes the classic path
        under the new rules (as Linux, where `nft -f` deletes and re-creates the flowtable). What the
        new network file says replaces the rest: neighbours learnt since start are resolved again, and
        SAs start over from the file (an IKE daemon rekeys through `ctl ip xfrm` instead)."""
        new = Net(dev, ruleset, flowtable=self._flowtable, sysctl=self._sysctl, conntrack=self.conntrack)
        self.flowtable_flush()
        self._attach(new)

    def flowtable_flush(self) -> int:
        """Tear every offloaded flow down (nf_flow_table_free's cleanup); how many there were."""
        n = 0
        for ft, _ in self.flowtables.values():
            for fid in np.flatnonzero(ft.used[0::2]):
                ft.flow_offload_teardown(int(fid))
            n += nf_flow_table_gc(ft, self.conntrack, self.now_ns)
        return n

    def ifname(self, ifindex: int) -> str:
        return self.net.ifname(ifindex)

    def stopped(self) -> contextlib.AbstractContextManager:
        """A context in which this worker does not run: any moment between two polls of its one
        thread (flowpath.workers.Workers.stopped stops several)."""
        return contextlib.nullcontext()

    def flow_offload(self, skb: SkBuff, flowtable: str) -> None:
        """`flow add @ft` accepted this packet and it was transmitted: offload its connection."""
        entry = self.flowtables.get(flowtable)
        if entry is not None and nft_flow_offload_eval(self.net, skb, entry[0]) >= 0:
            self.stats.flows_offloaded += 1

    def xfrm_listing(self) -> str:
        """`ip -s xfrm state` then `ip -s xfrm policy`, with the SAs' counters, then the ACQUIREs
        raised since start as `ip xfrm monitor` printed them (empty without xfrm)."""
        if self.xfrm is None:
            return ""
        x = self.xfrm
        return xfrm_state_list(x, stats=True) + xfrm_policy_list(x, stats=True) + xfrm_monitor(x)

    def flowtable_listing(self) -> str:
        """What `flowpath ctl flowtable list` will print: every flowtable's entries."""
        return "\n".join(ft.listing(self.now_ns, self.ifname) for ft, _ in self.flowtables.values())

    def xfrm_input_offload(self, skb: SkBuff, x) -> None:
        """The classic path decrypted skb (the outer packet) with SA x: later ESP of that SA on this
        device is decrypted at early ingress (flowtable/xfrm.py). Only untagged frames on flowtable
        devices, and only with the compiled ESP kernels (EVP contexts)."""
        xin = self.ingress.xin
        if xin is None or skb.vlan >= 0 or skb.meta.get("sp") or not self.ingress.any_devs[skb.iif]:
            return
        if not xfrm_state_ctx(self.xfrm, x)[1]:
            return
        l3 = 6 if skb.l3proto == L.ETH_P_IPV6 else 4
        udp = skb.l4proto == L.IPPROTO_UDP
        t = FlowTuple(skb.iif, l3, skb.l4proto, skb.saddr, skb.daddr, skb.sport if udp else 0,
                      skb.dport if udp else 0, x.spi)  # fmt: skip
        xin.add(t, x.index)

    def _xfrm_flush(self, batch: PacketBatch, lo: int, hi: int) -> None:
        """Encrypt and count the parked XMIT_XFRM hits lo..hi-1 (between two slow-path packets)."""
        hits = self.ingress.flush(batch, lo, hi, self.now_ns)
        self.stats.fastpath_packets += hits
        self.stats.tx_packets += hits

    def slow_path(self, buf, iif: int, ts_ns: int, sa: int = -1) -> Reason:
        """One frame through the classic path (flowpath.inet.dev); sa >= 0: decrypted by the fast
        path's ESP input with that SA. Counts the frame's reason, leaves its transmits in
        self._q.frames and carries out its requests (tunnel tuples, then offloads)."""
        q, st = self._q, self.stats
        q.frames.clear()
        if sa >= 0:
            reason = xfrm_rcv_decrypted(self.net, q, buf, iif, ts_ns, self.xfrm.slots[sa])
        else:
            reason = netif_receive_skb(self.net, q, buf, iif, ts_ns)
        st.count(reason)
        self._account(q)
        for skb, x in q.xfrm_in:
            self.xfrm_input_offload(skb, x)
        q.xfrm_in.clear()
        for skb, name in q.offload:
            self.flow_offload(skb, name)
        q.offload.clear()
        if q.handoff:
            self.handoff_out += q.handoff
            q.handoff.clear()
        return reason

    def _account(self, q: OutputQueue) -> None:
        """Count what a path or a timer originated, and the fates it decided for held packets."""
        st = self.stats
        st.generated_packets += q.generated
        for r in q.generated_drops:  # an originated packet that could not be sent
            st.generated_drops[r] += 1
        q.generated, q.generated_drops = 0, []
        for r, held in q.held:  # packets held earlier (fragments, a neighbour's queue), decided now
            st.resolve_held(r, 1, held)
        q.held.clear()

    def _timer_frames(self, tx: TxList, i: int) -> None:
        """The frames the GC's timers sent, before packet i of the poll (in its TxList order)."""
        frames = self._take_timer_frames()
        for k, (ifx, f) in enumerate(frames):
            tx.slow.append((i, k - len(frames), ifx, f, self.now_ns))

    def _take_timer_frames(self) -> list[tuple[int, bytes]]:
        """What the GC's timers sent since the last call, counted as transmitted."""
        frames = self._timer_q.frames
        for ifx, f in frames:
            self.stats.tx(ifx, len(f))
        self.stats.tx_bursts += len(frames)
        self._timer_q.frames = []
        return frames

    def timers(self, now_ns: int) -> list[tuple[int, bytes]]:
        """The clock of an idle link: run the GC when it is due at now_ns (as a poll at that time
        would) and return the (ifindex, frame) its timers sent (ARP requests again, ICMP errors)."""
        if now_ns < self._next_gc_ns:
            return []
        self.now_ns = now_ns
        self._maybe_gc()
        return self._take_timer_frames()

    # -- the datapath -----------------------------------------------------------------------------
    def rx_batch(self, batch: PacketBatch) -> list[tuple[int, bytes, int]]:
        """Process a batch; return the frames to transmit as (ifindex, frame, ts_ns), in order."""
        return self.poll(batch).frames()

    def drain(self) -> list[tuple[int, bytes, int]]:
        """What the packets still handed to this worker transmit (the end of a replay)."""
        return self.rx_slow(TxList(PacketBatch(1, slot=256))).frames() if self.handing_over else []

    @property
    def handing_over(self) -> bool:
        """Has this worker packets handed to it that it has not processed yet?"""
        return bool(self.backlog or self._backlog_slow)

    def poll(self, batch: PacketBatch) -> TxList:
        """Process a batch: the compiled flowtable hook over all of it, then the classic path for what
        it sent up, one packet at a time, in order. Hits stay in their slots (see TxList)."""
        tx = self.rx_fast(batch)
        if tx.slow_work or self.handing_over or self.deferred:
            self.rx_slow(tx)
        return tx

    def rx_fast(self, batch: PacketBatch) -> TxList:
        """The first half of a poll: the GC when it is due (under smp_lock), the packets other workers
        handed to this one, then the compiled flowtable hook over the batch. Touches nothing another
        worker's fast path touches, so workers run it at the same time. rx_slow does the rest."""
        n = batch.n
        tx = TxList(batch)
        if n:
            self.now_ns = int(batch.ts_ns[0])
            nft = self.net.nft
            if nft is not None and nft.elem_clock.sets:  # declared element timeouts start with the first
                nft.start_clock(self.now_ns)  # packet (whichever path, the lane's VM included, looks them up)
            if self.now_ns >= self._next_gc_ns:
                with self.smp_lock:
                    self._maybe_gc()
                    self._timer_frames(tx, 0)
        if self.backlog:
            self._backlog_fast(tx)
        if n == 0:
            tx.slow_work = bool(self._backlog_slow)
            return tx
        st = self.stats
        hits, bursts, torn, tx.nslow = self.ingress.run(batch, self.now_ns, tx.hits)
        st.tx_bursts += bursts
        st.fastpath_packets += hits
        st.tx_packets += hits
        st.rx_packets += n
        if self._egress is not None:
            self._egress_hits(tx, 0)
        tx.torn = torn
        tx.slow_work = bool(torn) or hits < n or bool(self.ingress.parked) or bool(self._backlog_slow)
        return tx

    def rx_slow(self, tx: TxList) -> TxList:
        """The second half of a poll: the classic path for what the hook sent up, in packet order,
        and the ESP hits parked behind them; first what other workers left for this one. With
        several workers it runs under their shared lock, one worker at a time."""
        while self.deferred:
            self.deferred.popleft()()
        if self.backlog:
            self._backlog_fast(tx)
        if self._backlog_slow:
            self._process_backlog(tx)
        batch = tx.batch
        n = batch.n
        if not tx.slow_work:
            return tx
        st = self.stats
        for ft, fid in tx.torn:  # SYN on a CLOSING flow: flow_offload_teardown's conntrack fixup
            self._fixup(ft, fid, ft.flow_ct(fid))
        verdict = batch.verdict
        slow = batch.slow_idx[: tx.nslow]
        xfrm_parked = self.ingress.parked
        if self.lane is not None and slow.size and not xfrm_parked and self.lane.usable(self.net, n):
            slow = self._classic_lane(tx, slow)
        if xfrm_parked:
            parked, lo = np.flatnonzero(verdict[:n] == XFRM_PENDING), 0
        for i in slow:
            i = int(i)
            if xfrm_parked:
                self._xfrm_flush(batch, lo, i)
                lo = i + 1
            self.now_ns = int(batch.ts_ns[i])
            self._maybe_gc()
            self._timer_frames(tx, i)
            if batch.gso[i]:
                self._slow_path_gso(tx, batch, i)
                continue
            sa = encap_sa(int(batch.encap[i]))
            if sa >= 0 and self._steer_away(batch.frame(i), int(batch.iif[i]), sa):
                continue  # decrypted here, its flow steers to another worker: handed over
            st.slowpath_packets += 1
            self.slow_path(frame_array(batch.frame(i)), int(batch.iif[i]), self.now_ns, sa)
            self._slow_frames(tx, i, 0)
        if xfrm_parked:
            self._xfrm_flush(batch, lo, n)
            tx.hits.append(parked[verdict[parked] == _FF])
            xfrm_parked.clear()
            if self._egress is not None:
                self._egress_hits(tx, len(tx.hits) - 1)
        st.icmp_ratelimited = self.net.icmp.ratelimited
        return tx

    def _classic_lane(self, tx: TxList, slow: np.ndarray) -> np.ndarray:
        """The compiled classic lane over the poll's classic-path packets (flowpath/inet/
        classic_lane.py), which counts what it finishes: what it forwarded goes out of its slot
        like a hit; returns the packets it left to the Python path, in order."""
        punted, sent, last_ts = self.lane.run(self.net, tx.batch, slow, self._next_gc_ns, bool(self.flowtables),
                                              self.stats)  # fmt: skip
        if sent.size:
            tx.hits.append(sent.astype(np.int32))
        if last_ts > self.now_ns:
            self.now_ns = last_ts
        return punted

    def _egress_hits(self, tx: TxList, first: int) -> None:
        """The hits tx.hits[first:] through the egress chains of their devices (flowpath.inet.
        nf_dup_netdev.nf_hook_egress_hits), under the shared lock: the chains' state is the
        namespace's."""
        with self.smp_lock:
            for k in range(first, len(tx.hits)):
                tx.hits[k] = nf_hook_egress_hits(self.net, self._q, tx.batch, tx.hits[k], self._egress, self.stats, tx.slow)
            self._account(self._q)

    def _slow_frames(self, tx: TxList, i: int, k: int) -> int:
        """Queue what the classic path transmitted for packet i (from sequence k); the next k."""
        st = self.stats
        frames = self._q.frames
        for ifx, f in frames:
            tx.slow.append((i, k, ifx, f, self.now_ns))
            st.tx(ifx, len(f))
            k += 1
        st.tx_bursts += len(frames)
        return k

    # -- several workers: packets handed over after decryption ------------------------------------
    def _steer_away(self, frame, iif: int, sa: int) -> bool:
        """A packet the fast path's ESP input decrypted with SA sa: when its inner flow steers to
        another worker, hand it there (RPS_HANDOFF, resolved by the receiving worker) and say so."""
        nr = self.conntrack.nr_cpus
        if nr <= 1:
            return False
        b = np.asarray(frame)
        cpu = int(flow_steer_frame(b, 0, b.shape[0], nr))
        if cpu == self.net.cpu:
            return False
        self.handoff_out.append((cpu, bytes(b), iif, sa, self.now_ns))
        self.stats.count(Reason.RPS_HANDOFF)
        return True

    def _backlog_fast(self, tx: TxList) -> None:
        """The packets other workers handed to this one (decrypted ESP whose inner flow steers here):
        its flowtables first, as its own ESP input's packets (the SA in the key's encap word), ahead
        of this poll's packets; their hits are transmitted as copies (tx.slow, before packet 0), the
        others wait for rx_slow (_process_backlog). Each takes its final reason here, in place of the
        RPS_HANDOFF its first worker counted, and is not counted in rx again (its first worker did).
        Linux: process_backlog (RPS's input_pkt_queue)."""
        b = self._handoff_batch
        if b is None:  # the size of the worker's polls: the flowtable hook is set up for one size
            b = self._handoff_batch = PacketBatch(max(tx.batch.capacity, 1) if tx.batch.n else 256)
        st, k = self.stats, len(tx.slow) - (1 << 40)
        while self.backlog:
            b.clear()
            items = []
            while self.backlog and b.n < b.capacity:
                frame, iif, sa, ts_ns = item = self.backlog.popleft()
                if len(frame) > b.max_frame:  # a GSO-sized frame: the classic path takes it
                    self._backlog_slow.append(item)
                    continue
                b.encap[b.append(frame, iif, ts_ns)] = encap_xfrm(sa)
                items.append(item)
            if not b.n:
                continue
            self.now_ns = max(self.now_ns, int(b.ts_ns[: b.n].max()))
            bt = TxList(b)
            hits, bursts, torn, nslow = self.ingress.run(b, self.now_ns, bt.hits, received=True)
            if self.ingress.parked:  # a decrypted packet that leaves through another SA: encrypted now
                hits += self.ingress.flush(b, 0, b.n, self.now_ns)
                bt.hits.append(np.flatnonzero(b.verdict[: b.n] == _FF).astype(np.int32))
                self.ingress.parked.clear()
            for ft, fid in torn:  # SYN on a CLOSING flow: its fixup under the shared lock, in rx_slow
                self.deferred.append(lambda ft=ft, fid=fid: self._fixup(ft, fid, ft.flow_ct(fid)))
            st.tx_bursts += bursts
            st.fastpath_packets += hits
            st.tx_packets += hits
            st.reasons[Reason.RPS_HANDOFF] -= hits
            if self._egress is not None:
                self._egress_hits(bt, 0)
            for i, _, ifx, f, ts_ns in bt.rows():
                tx.slow.append((-1, k, ifx, b.frame_bytes(i), int(b.ts_ns[i])) if f is None else (-1, k, ifx, f, ts_ns))
                k += 1
            for i in b.slow_idx[:nslow].tolist():
                self._backlog_slow.append(items[i])

    def _process_backlog(self, tx: TxList) -> None:
        """The handed packets the fast path did not forward, through the classic path (see
        _backlog_fast), before this poll's packets."""
        st = self.stats
        k = -(1 << 39)  # after the backlog's hits, before the poll's packets and its timers' frames
        while self._backlog_slow:
            frame, iif, sa, ts_ns = self._backlog_slow.popleft()
            self.now_ns = max(self.now_ns, ts_ns)
            st.slowpath_packets += 1
            st.reasons[Reason.RPS_HANDOFF] -= 1
            self.slow_path(frame_array(frame), iif, self.now_ns, sa)
            k = self._slow_frames(tx, -1, k)

    def _slow_path_gso(self, tx: TxList, batch: PacketBatch, i: int) -> None:
        """A GSO super-packet (batch.gso[i]) the fast path did not forward: segmented first (the
        classic path handles ordinary packets only), each segment then through the classic path.
        Counting: the super-packet was counted as one received packet (one skb, as Linux's
        interface and flow counters count it); from here on it counts as its segments, rx included
        (rx += segments - 1, on its input interface too), so that rx = forwarded + dropped + local
        + held holds. Linux: validate_xmit_skb's software GSO, here before the stack."""
        st, iif = self.stats, int(batch.iif[i])
        segs = skb_gso_segment(batch.frame(i), int(batch.gso[i]))
        if not segs:
            st.count(Reason.SKB_GSO_SEG)
            return
        st.rx_packets += len(segs) - 1
        st.rx_extra(iif, len(segs) - 1, sum(len(s) for s in segs) - int(batch.len[i]))
        k = 0
        for seg in segs:
            st.slowpath_packets += 1
            self.slow_path(seg, iif, self.now_ns, -1)
            k = self._slow_frames(tx, i, k)

    @property
    def next_gc_ns(self) -> int:
        """Packet time of the next GC run; ports end a poll batch there."""
        return self._next_gc_ns

    def _maybe_gc(self) -> None:
        """GC as if it had run every second of packet time: across a gap in the capture (or an idle
        link), the runs in which a flow expired, or an offloaded entry had to be pinned again lest it
        time out, happen first, at their own times, so the conntrack timeouts handed back at teardown
        count from there and not from the late packet."""
        now = self.now_ns
        if now < self._next_gc_ns:
            return
        t = self._next_gc_ns
        ct = self.conntrack
        while t:
            due = [e for e in (ft.next_expiry_ns() for ft, _ in self.flowtables.values()) if e is not None]
            due += [nf_flow_table_extend_due(ct.hot, ct.state, ct.seq, ft.used, ft.ct_row, now)
                    for ft, _ in self.flowtables.values() if ft.nused]  # fmt: skip
            if not due or min(due) >= now:
                break
            t = max(t, t + -(-(min(due) - t) // GC_INTERVAL_NS) * GC_INTERVAL_NS)  # first run at or after it
            if t >= now:
                break
            self.now_ns = t
            self._gc()
            t += GC_INTERVAL_NS
        self.now_ns = now
        self._gc()
        self._next_gc_ns = now + GC_INTERVAL_NS

    def _gc(self) -> None:
        """One GC run at self.now_ns: conntrack, the SAs' timers, then every flowtable. With several
        workers, the shared tables' timers run on the first one only (shared_timers); each runs its
        own flowtables'."""
        if self.shared_timers:
            self.conntrack.gc(self.now_ns)
            tq = self._timer_q  # what timers send leaves ahead of the packet that ran this GC
            tq.now_ns = self.now_ns
            # nf_defrag's timers: the expired queues' fragments are drops, some get time exceeded
            self.stats.resolve_held(Reason.FRAG_REASM_TIMEOUT, ip_expire(self.net, tq, self.now_ns))
            # the neighbours' timers: requests again, or failure with its drops and errors
            neigh_timers(self.net, tq, self.now_ns)
            local_out_flush(self.net, tq)
            self.conntrack.nf_ct_release_unconfirmed()  # the timers' packets' entries not confirmed
            self._account(tq)
            if self.xfrm is not None:
                xfrm_timer(self.xfrm, self.now_ns)  # the SAs' lifetimes (xfrm_timer_handler)
        if self.xfrm is not None:
            self._xfrm_teardown_dead()
        for ft, _ in self.flowtables.values():
            self.stats.flows_expired += nf_flow_table_gc(ft, self.conntrack, self.now_ns)  # fixups included
            ct = self.conntrack  # nf_flow_offload_gc_step on the survivors
            nf_flow_table_extend_ct_rows(ct.hot, ct.key, ct.state, ct.seq, ft.used, ft.ct_row, self.now_ns)

    def _xfrm_teardown_dead(self) -> None:
        """Tear down the flows through SAs that died (expired or deleted) since the last call: no flow
        is offloaded through a dead SA afterwards (xfrm_state_find and xfrm_state_lookup skip it)."""
        n = len(self.xfrm.slots)
        if self._sa_torn.shape[0] < n:
            self._sa_torn = np.concatenate([self._sa_torn, np.zeros(n - self._sa_torn.shape[0], np.bool_)])
        died = np.flatnonzero((self.xfrm.tab.dead[:n] != 0) & ~self._sa_torn[:n])
        self._sa_torn[died] = True
        for ft, _ in self.flowtables.values():
            for sa in died if ft.nused else ():
                for fid in ft.flows_through_xfrm(int(sa)):
                    self._teardown(ft, fid)

    def _teardown(self, ft, fid: int) -> None:
        """Linux: nf_flow_table_core.c › flow_offload_teardown: off the fast path, conntrack fixed up."""
        ft.flow_offload_teardown(fid)
        self._fixup(ft, fid, ft.flow_ct(fid))

    # -- the control plane, between two polls (flowpath ctl, a reload) ----------------------------
    def nft_replace(self, ruleset) -> None:
        """`nft -f` on the running gateway: the new ruleset replaces the old one whole, or not at all.

        Linux: nf_tables_api.c › nf_tables_commit. The new runtime, hooks and flowtables are built and
        checked first (a ConfigError or UsageError leaves everything as it was). Then every flow of the
        old flowtables gets flow_offload_teardown's conntrack fixup, as when `nft -f` deletes a
        flowtable (nf_flow_table_free -> nf_flow_table_gc_cleanup), and the new ones take over, empty.
        Conntrack is kept: each connection's next packet takes the classic path, where the new
        ruleset decides (and `flow add` offloads it again). ESP input's tunnel tuples go with the old
        flowtables and are learnt again from the classic path's next decrypt. Unlike reload, the
        network model, the reassembly queues and the SAs stay as they are.
        """
        built = self.net.nft_build(ruleset)
        self.flowtable_flush()
        self.net.nft_swap(built)
        self._attach(self.net)

    def xfrm_modify(self, change: Callable[[Xfrm], T]) -> T:
        """Run `change(xfrm)` (an `ip xfrm` command) on the SAD and SPD between two polls and keep the
        fast path consistent with them; return what it returns. An xfrm context is made first when
        the network file had none.

        Flows through SAs that died are torn down (Linux: the xfrm dsts cached on a deleted state
        fail xfrm_dst_check, and nf_flow_offload_ip_hook tears the flow down on its next packet). After
        any change of the SPD every flow is torn down, so that the classic path's xfrm_lookup decides
        again (Linux: a policy change bumps the policy genid, which fails the same check).
        Deviation: Linux keeps flows routed without xfrm when the SPD changes; flowpath tears them down
        too, so that a new policy applies at once to connections offloaded in clear before it.
        The SA columns are the kernels' own (a grown table is picked up at the next poll), and an SA's
        row is never reused (see Xfrm), so nothing compiled is left pointing at a stranger.
        """
        if self.xfrm is None:
            self.net.xfrm = self.net.dev.xfrm = Xfrm()
            self.net.xfrm.sysctl_acq_expires = self.net.sysctl["net.core.xfrm_acq_expires"]
            self._attach(self.net)  # early ingress with ESP input's tunnel tuples
        policies = list(self.xfrm.policies)
        try:
            return change(self.xfrm)
        finally:
            self.xfrm_sync(policies)

    def xfrm_sync(self, policies: list) -> None:
        """After an `ip xfrm` command: flows through SAs that died are torn down, and every flow when
        the SPD is no longer `policies` (see xfrm_modify)."""
        self._xfrm_teardown_dead()
        now = self.xfrm.policies
        if len(now) != len(policies) or any(a is not b for a, b in zip(now, policies, strict=True)):
            for ft, _ in self.flowtables.values():
                for fid in np.flatnonzero(ft.used[0::2]):
                    self._teardown(ft, int(fid))

    def _netevent(self, event: int, n) -> None:
        """A neighbour changed (a reply, a timer, `neigh replace|del`, a link going down): every
        flowtable's entries through it take its new address, or their flows are torn down with
        the conntrack fixup, at self.now_ns (the packet or GC run that caused it). Linux: a netevent
        notifier (net/core/netevent.c); see flowpath.flowtable.core for why one is needed here.
        Raised by another worker's classic path, it waits for this worker's next rx_slow: only this
        worker's thread touches its flowtables (Linux defers the same work to nf_flow_offload_work)."""
        if self.conntrack.nr_cpus > 1 and self.conntrack.this_cpu != self.net.cpu:
            self.deferred.append(lambda: self._netevent_apply(event, n))
            return
        self._netevent_apply(event, n)

    def _netevent_apply(self, event: int, n) -> None:
        for ft, _ in self.flowtables.values():
            updated, torn = nf_flow_table_netevent(ft, event, n)
            self.stats.flow_entries_neigh_updated += updated
            self.stats.flows_neigh_teardown += len(torn)
            for fid in torn:
                self._fixup(ft, fid, ft.flow_ct(fid))

    def _fixup(self, ft, fid: int, ct) -> None:
        """flow_offload_teardown's conntrack fixup, once per flow (at teardown or at GC)."""
        if ct is None or not ct.status & C.IPS_OFFLOAD:
            return
        expired = int(ft.val[2 * fid : 2 * fid + 2, V_TIMEOUT].max()) - self.now_ns <= 0
        tmo = ft.timeout_tcp_ns if ct.l4proto == L.IPPROTO_TCP else ft.timeout_udp_ns
        flow_offload_fixup_ct(ct, int(ft.key[2 * fid, V_FLAGS]), self.now_ns, expired, tmo)

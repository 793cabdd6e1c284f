"""Several workers over one namespace: `--workers N` for run, replay and the benches.

No Linux counterpart as one object (Linux runs one NAPI softirq per CPU over shared state). The
design, and why:

- **Steering** (flowpath/packet/steer.py): one fixed symmetric hash names each packet's worker: RSS
  or PACKET_FANOUT_CBPF live, the same function in replay and the benches. Both directions of a
  connection steer alike; NAT picks the port (or ICMP id) of a new mapping so that its replies
  steer to the worker that created it (netfilter/nat.py › nf_nat_steers_here, as VPP's NAT44-ED gives
  each worker its own ports). ESP steers by SPI, so one worker owns each inbound SA, its replay
  window and its counters; after decryption, a packet whose inner flow belongs to another worker is
  handed to it (RPS_HANDOFF, the backlog: Linux's RPS input_pkt_queue).
- **Per worker** (a flowpath.datapath.Worker): its flowtables (Net.for_cpu: each connection's entry
  lives on the worker both its directions reach, so the compiled fast path meets no other writer and
  takes no lock), batches, scratch, ESP input's tunnel tuples and counters (summed on read).
- **Shared**, one worker at a time under `lock` (the classic path runs in Python, which serialises it
  anyway): links, FIB, neighbours, conntrack, reassembly, nft state, the SAD/SPD and the GC of those
  tables (the first worker runs it). A worker's fast path runs without the lock.
- **SAs**: a per-CPU SA (`pcpu-num C`, RFC 9611) is used by worker C alone. An SA without one (the
  fallback, or a gateway without per-CPU SAs) may be used by every worker: its sequence numbers and
  lifetimes are guarded by `xfrm_lock`, which a worker whose flowtables send through such an SA takes
  for its fast path, and the classic path holds - as x->lock serialises Linux's CPUs on one SA. That
  contention is what `bench scaling`'s esp-shared-sa mode shows.

Lock order: a worker's fast_lock, then `lock`, then `xfrm_lock` (control-plane commands take every
fast_lock first, so nothing runs while they change a flowtable).
"""

from __future__ import annotations

import heapq
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext

import numpy as np

from flowpath.datapath import TxList, Worker
from flowpath.packet.batch import PacketBatch
from flowpath.packet.counters import Stats
from flowpath.packet.steer import flow_steer_batch


class Workers:
    """N Workers over one namespace (see the module docstring).

    dev, ruleset, flowtable, bulk, sysctl  as for Worker
    n      number of workers (worker c is CPU c: `net.cpu`, per-CPU SAs, steering)
    pin    pin worker c's thread to CPU c (when there are that many CPUs)
    """

    def __init__(self, dev, ruleset=None, *, n: int, flowtable: bool = True, bulk: bool = True,
                 sysctl: dict[str, int] | None = None, pin: bool = True, classic_lane: bool = True):  # fmt: skip
        if n < 1:
            raise ValueError("at least one worker")
        kw = {"flowtable": flowtable, "bulk": bulk, "sysctl": sysctl, "classic_lane": classic_lane}
        first = Worker(dev, ruleset, **kw)
        self.workers = [first] + [
            Worker(dev, ruleset, **kw, view=first.net.for_cpu(c))
            for c in range(1, n)
        ]
        self.n = n
        self.conntrack = first.conntrack
        self.conntrack.nr_cpus = n
        # RLocks: a worker's GC (under `lock`) may run inside its rx_slow, and a control command run
        # with the workers stopped may stop them again (nft -f inside ctl's dispatch)
        self.lock = threading.RLock()
        self.xfrm_lock = threading.RLock()
        self.fast_locks = [threading.RLock() for _ in range(n)]
        for w in self.workers:
            w.smp_lock = self.lock
            w.shared_timers = w is first
        self._shared_key = [None] * n
        self._shared = [False] * n
        self._wake: list[int | None] = [None] * n
        self.pin = pin and n <= len(os.sched_getaffinity(0))
        self._pool: ThreadPoolExecutor | None = None
        self._sub: dict[tuple, list[PacketBatch]] = {}
        self._cpu = np.zeros(0, np.int64)

    # -- one worker's poll, from its own thread (run, bench) ---------------------------------------
    def poll(self, c: int, batch: PacketBatch) -> TxList:
        """Worker c's poll: the fast path under its own fast_lock (and xfrm_lock when its flows use
        an SA other workers may use), then the classic path, the GC and the backlog under `lock`.
        Packets it hands to other workers go to their backlogs (and wake them: wake_fd)."""
        w = self.workers[c]
        with self.fast_locks[c]:
            tx = self._rx_fast(w, batch, self._uses_shared_sa(c))
        if tx.slow_work or w.handing_over or w.deferred:
            with self.lock, self.xfrm_lock:
                self.conntrack.this_cpu = c
                w.rx_slow(tx)
                self._hand_over(w)
        return tx

    def _rx_fast(self, w: Worker, batch: PacketBatch, shared_sa: bool) -> TxList:
        """w's fast path; with its GC first, under `lock` and xfrm_lock, when one is due (once a
        second: the GC touches what the workers share, w being this_cpu for it)."""
        if batch.n and int(batch.ts_ns[0]) >= w.next_gc_ns:
            with self.lock, self.xfrm_lock:
                self.conntrack.this_cpu = w.net.cpu
                return w.rx_fast(batch)
        with self.xfrm_lock if shared_sa else nullcontext():
            return w.rx_fast(batch)

    def timers(self, c: int, now_ns: int) -> list[tuple[int, bytes]]:
        """Worker c's clock when idle (Worker.timers), under the locks its GC takes in a poll."""
        with self.fast_locks[c], self.lock, self.xfrm_lock:
            self.conntrack.this_cpu = c
            return self.workers[c].timers(now_ns)

    def _hand_over(self, w: Worker) -> None:
        """Move what w handed over into the target workers' backlogs (under `lock`)."""
        for cpu, frame, iif, sa, ts_ns in w.handoff_out:
            self.workers[cpu].backlog.append((frame, iif, sa, ts_ns))
            fd = self._wake[cpu]
            if fd is not None:
                os.eventfd_write(fd, 1)
        w.handoff_out.clear()

    def wake_fd(self, c: int) -> int:
        """An eventfd that becomes readable when another worker hands worker c a packet: a live
        worker sleeping in poll(2) on its rings must poll again (Linux: the IPI of RPS)."""
        if self._wake[c] is None:
            self._wake[c] = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return self._wake[c]

    def _uses_shared_sa(self, c: int) -> bool:
        """Do worker c's flowtables send through an SA that is not pinned to CPU c? (Recomputed only
        when its XMIT_XFRM entries change in number.)"""
        w = self.workers[c]
        if w.xfrm is None:
            return False
        key = tuple((ft.nxfrm, len(ft)) for ft, _ in w.flowtables.values())
        if key != self._shared_key[c]:
            self._shared_key[c] = key
            sas = set()
            for ft, _ in w.flowtables.values():
                if ft.nxfrm:
                    sas.update(int(sa) for sa in np.unique(ft.xfrm_sa[ft.xfrm_sa >= 0]))
            self._shared[c] = any(w.xfrm.slots[sa].pcpu_num != c for sa in sas)
        return self._shared[c]

    def thread_init(self, c: int) -> None:
        """Pin the calling thread to CPU c (worker c's thread), when pinning."""
        if self.pin:
            os.sched_setaffinity(0, {c})

    # -- replay: one captured batch steered over the workers, deterministically ---------------------
    def rx_batch(self, batch: PacketBatch) -> list[tuple[int, bytes, int]]:
        """Steer the batch's packets to their workers, run every worker's fast path (in parallel
        unless some worker's flows use a shared SA, whose sequence numbers must come out the same
        every run, or a GC is due), then each one's classic path in worker order, and return what all
        transmitted as (ifindex, frame, ts_ns), each worker's in its order, merged by time."""
        subs = self._steer(batch)
        shared = [self._uses_shared_sa(c) for c in range(self.n)]
        gc = any(b.n and int(b.ts_ns[0]) >= w.next_gc_ns for w, b in zip(self.workers, subs, strict=True))
        if self.n > 1 and not any(shared) and not gc:  # a GC run touches shared state: in worker order
            txs = list(self._executor().map(lambda c: self._rx_fast(self.workers[c], subs[c], False), range(self.n)))
        else:
            txs = [self._rx_fast(self.workers[c], subs[c], shared[c]) for c in range(self.n)]
        with self.lock, self.xfrm_lock:
            for c, (w, tx) in enumerate(zip(self.workers, txs, strict=True)):
                self.conntrack.this_cpu = c
                if tx.slow_work or w.handing_over or w.deferred:
                    w.rx_slow(tx)
                self._hand_over(w)
        return list(heapq.merge(*(tx.frames() for tx in txs), key=lambda r: r[2]))

    def drain(self) -> list[tuple[int, bytes, int]]:
        """Polls without new packets until no worker has a packet handed to it (the end of a replay)."""
        out = []
        while any(w.handing_over for w in self.workers):
            with self.lock, self.xfrm_lock:
                for c, w in enumerate(self.workers):
                    if w.handing_over:
                        self.conntrack.this_cpu = c
                        out += w.rx_slow(TxList(PacketBatch(1, slot=256))).frames()
                        self._hand_over(w)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        """The threads replay's fast paths run on, one per worker, pinned to distinct CPUs."""
        if self._pool is None:
            cpus = iter(range(self.n))
            init = (lambda: os.sched_setaffinity(0, {next(cpus)})) if self.pin else None
            self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="flowpath-worker", initializer=init)
        return self._pool

    def _sub_batches(self, batch: PacketBatch) -> list[PacketBatch]:
        key = (batch.capacity, batch.slot, batch.headroom)
        subs = self._sub.get(key)
        if subs is None:
            subs = self._sub[key] = [PacketBatch(batch.capacity, batch.slot, batch.headroom) for _ in range(self.n)]
        return subs

    def _steer(self, batch: PacketBatch) -> list[PacketBatch]:
        """Copy each packet of batch into its worker's sub-batch, in order (flowpath.packet.steer)."""
        n, subs = batch.n, self._sub_batches(batch)
        if self._cpu.shape[0] < batch.capacity:
            self._cpu = np.zeros(batch.capacity, np.int64)
        cpu = self._cpu[:n]
        flow_steer_batch(batch.data, batch.head, batch.len, n, self.n, cpu)
        for c, s in enumerate(subs):
            idx = np.flatnonzero(cpu == c)
            k = idx.shape[0]
            s.n = k
            if not k:
                continue
            s.data[:k] = batch.data[idx]
            for name in ("head", "len", "iif", "ts_ns", "gso"):
                getattr(s, name)[:k] = getattr(batch, name)[idx]
            s.oif[:k], s.verdict[:k], s.flow[:k], s.encap[:k] = 0, 0, -1, 0
        return subs

    # -- what replay, ctl and the benches read ------------------------------------------------------
    @property
    def stats(self) -> Stats:
        """The workers' counters, summed."""
        return Stats.merged([w.stats for w in self.workers])

    @property
    def next_gc_ns(self) -> int:
        return min(w.next_gc_ns for w in self.workers)

    @property
    def now_ns(self) -> int:
        return max(w.now_ns for w in self.workers)

    @property
    def net(self):
        return self.workers[0].net

    @property
    def xfrm(self):
        return self.workers[0].xfrm

    def ifname(self, ifindex: int) -> str:
        return self.workers[0].ifname(ifindex)

    def flowtable_listing(self) -> str:
        """Every worker's flowtable entries, each under a `# worker C` line."""
        return "\n".join(f"# worker {c}\n{w.flowtable_listing()}" for c, w in enumerate(self.workers))

    def xfrm_listing(self) -> str:
        return self.workers[0].xfrm_listing()

    def stopped(self):
        """A context in which no worker runs (every fast_lock, then `lock` and xfrm_lock): for the
        control plane (a `flowpath ctl` command, a reload), which reads and changes what the workers
        share and every worker's flowtables."""
        stack = ExitStack()
        for lk in self.fast_locks:
            stack.enter_context(lk)
        stack.enter_context(self.lock)
        stack.enter_context(self.xfrm_lock)
        return stack

    def nft_replace(self, ruleset) -> None:
        """`nft -f` on every worker at once (Worker.nft_replace), with the workers stopped."""
        with self.stopped():
            first = self.workers[0]
            built = first.net.nft_build(ruleset)
            for w in self.workers:
                w.flowtable_flush()
            for c, w in enumerate(self.workers):
                w.net.nft_swap(built, own_flowtables=c > 0)
                w._attach(w.net)

    def reload(self, dev, ruleset=None) -> None:
        """Worker.reload for every worker at once, with the workers stopped: the new namespace is built
        first (an error leaves the old one running), conntrack kept, every offloaded flow torn down."""
        from flowpath.netns import Net

        with self.stopped():
            first = self.workers[0]
            new = Net(dev, ruleset, flowtable=first._flowtable, sysctl=first._sysctl, conntrack=self.conntrack)
            views = [new] + [new.for_cpu(c) for c in range(1, self.n)]
            for w, view in zip(self.workers, views, strict=True):
                w.flowtable_flush()
                w._attach(view)
            self._shared_key = [None] * self.n

    def xfrm_modify(self, change):
        """An `ip xfrm` command (Worker.xfrm_modify) with the workers stopped; every worker's fast
        path is made consistent with the new SAD/SPD."""
        with self.stopped():
            first = self.workers[0]
            policies = list(first.xfrm.policies) if first.xfrm is not None else []
            try:
                return first.xfrm_modify(change)
            finally:
                for w in self.workers[1:]:
                    if w.xfrm is not first.xfrm:  # the first worker made the context: every view shares it
                        w.net.xfrm = first.xfrm
                        w._attach(w.net)
                    w.xfrm_sync(policies)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for c, fd in enumerate(self._wake):
            if fd is not None:
                os.close(fd)
                self._wake[c] = None

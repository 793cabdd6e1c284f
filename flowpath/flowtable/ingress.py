"""include/linux/netfilter_netdev.h › nf_hook_ingress: the flowtable hooks a poll runs at early ingress.

Linux registers the flowtable's ingress hook on each of its devices (nft_register_flowtable_net_hooks)
and __netif_receive_skb_core runs it (nf_hook_ingress) before the stack sees the packet. Here a poll
runs it over the whole batch, one compiled call per flowtable: packets of other devices are set
aside, ESP to a known tunnel tuple is decrypted (xfrm.py), nf_flow_offload_ip_hook forwards the hits
(hook.py), XMIT_XFRM hits are encrypted or parked until the slow packets before them have gone, and
the batch is counted.

The hook runs on the ports (physical devices) a flowtable lists: VLAN tags and IPIP outer headers are
part of the key there (flowtable/ip.py), as when Linux's flowtable lists the real device.
Deviation: a VLAN device listed without its physical device accelerates nothing (Linux hooks the VLAN
device itself, after vlan_do_receive, and keys its flows on it); list the physical device, as
Documentation/networking/nf_flowtable.rst advises.

`nf_hook_ingress` and `nf_hook_ingress_xfrm` are thin wrappers around one inlined body, specialised
at compile time by its `xfrm` argument (None: the ESP steps are not compiled in, as VPP specialises
ip4_rewrite_inline by constant flags) and per call by the bits of `flags`. `EarlyIngress` (no Linux
counterpart) is the Python side a Worker calls once per poll: it builds each flowtable's arguments
once, as plain tuples, and resolves the compiled entry point for them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.core import Flowtable
from flowpath.flowtable.hook import OffloadScratch, _nf_flow_offload_hook, jit_entry
from flowpath.flowtable.xfrm import (
    XfrmInputTable,
    XfrmScratch,
    nf_flow_xfrm_first_slow,
    nf_flow_xfrm_flush,
    nf_flow_xfrm_input,
    nf_flow_xfrm_output,
    nf_flow_xfrm_park,
)
from flowpath.packet.batch import PacketBatch
from flowpath.packet.counters import Stats, account_batch, account_rx, batch_slow
from flowpath.packet.reason import Reason
from flowpath.xfrm.state import xfrm_state_check_expire

FLOW_FORWARD, SLOW_NO_ENTRY, SLOW_TCP_STATE = (int(Reason.FLOW_FORWARD), int(Reason.SLOW_NO_ENTRY),
                                               int(Reason.SLOW_TCP_STATE))  # fmt: skip
PARKED = 255  # not a Reason: a packet held back while another flowtable's devices are looked up

# flags: what one call of the driver does
ING_BULK = 1  # transmit groups by link-layer header (else one per hit: `--no-bulk`)
ING_XFRM_IN = 2  # ESP input first (the worker has tunnel tuples)
ING_XFRM_OUT = 4  # the flowtable has XMIT_XFRM entries: encrypt or park its ESP hits
ING_SHARED = 8  # one of several flowtables: other devices' packets wait (PARKED) instead of going slow
ING_COUNT = 16  # count the batch afterwards (the last flowtable of the poll)
ING_RX_EARLY = 32  # count rx first, with the lengths as received (the poll has ESP to do: the first flowtable)
ING_RX_COUNTED = 64  # ... and the batch's count leaves rx out


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


@njit(cache=True, nogil=True, inline="always")
def _nf_hook_ingress(cols, n, now_ns, ft, sc, devs, acct, flags, xfrm):
    """One flowtable over packets 0..n-1 (the steps in the module docstring). See nf_hook_ingress
    for the arguments; xfrm is None or nf_hook_ingress_xfrm's. Returns (forwarded, slow, ngroups,
    hits counted, refused by ESP output, XMIT_XFRM hits parked)."""
    verdict, iif = cols[5], cols[3]
    dev_ok, any_dev = devs
    bulk = (flags & ING_BULK) != 0
    if flags & ING_RX_EARLY:  # ESP input and output change lengths: rx counts what was received
        account_rx(iif, cols[2], n, acct[1])
    if xfrm is not None and flags & ING_XFRM_IN:
        nf_flow_xfrm_input(cols, n, xfrm[3], xfrm[1], bulk, xfrm[2])
    flow_park_foreign(verdict, iif, n, any_dev, FLOW_FORWARD, SLOW_NO_ENTRY)  # on no flowtable's device
    shared = (flags & ING_SHARED) != 0
    waiting = flow_park_foreign(verdict, iif, n, dev_ok, FLOW_FORWARD, PARKED) if shared else 0
    fwd, slow, ng = _nf_flow_offload_hook(cols, n, ft, sc, now_ns, bulk)
    bad = parked = 0
    if xfrm is not None and flags & ING_XFRM_OUT and fwd:
        # ESP hits before the batch's first slow packet leave now; those after it wait for it (with
        # several flowtables the first slow packet is known only after the last one: all wait)
        cut = 0 if shared else nf_flow_xfrm_first_slow(verdict, n)
        bad = nf_flow_xfrm_output(cols, 0, cut, FLOW_FORWARD, dev_ok, xfrm[0], xfrm[1], bulk, xfrm[2])
        parked = nf_flow_xfrm_park(verdict, cols[6], cut, n, xfrm[0][0])
    if waiting:
        for i in range(n):
            if verdict[i] == PARKED:
                verdict[i] = FLOW_FORWARD
    rx = (flags & ING_RX_COUNTED) == 0
    hits = account_batch(verdict, iif, cols[4], cols[2], n, acct[0], acct[1], rx) if flags & ING_COUNT else 0
    return fwd, slow, ng, hits, bad, parked


# The driver's arguments are tuples: a PacketBatch's cols, Flowtable.cols, an OffloadScratch, (dev_ok,
# any_dev) and Stats.cols. Without NRT (see ip.py › nf_flow_offload_ip_batch); the ESP steps allocate
# array views per bulk, so the xfrm form keeps it.
@njit(cache=True, nogil=True, _nrt=False)
def nf_hook_ingress(cols, n, now_ns, ft, sc, devs, acct, flags):
    """Early ingress of one flowtable with no ESP to do.

    cols   PacketBatch.cols (data, head, len, iif, oif, verdict, flow, encap) of the polled batch
    n, now_ns  packets in the batch, packet time
    ft     Flowtable.cols; sc OffloadScratch as a plain tuple (hook.py)
    devs   (dev_ok, any_dev) bool[max_ifindex + 1]: this flowtable's devices, every flowtable's
    acct   Stats.cols (reasons int64[N_REASONS], ifc int64[max_ifindex + 1, 4])
    flags  ING_* bits
    Returns (forwarded, slow, ngroups, hits counted, 0, 0).
    """
    return _nf_hook_ingress(cols, n, now_ns, ft, sc, devs, acct, flags, None)


@njit(cache=True, nogil=True)
def nf_hook_ingress_xfrm(cols, n, now_ns, ft, sc, devs, acct, xfrm, flags):
    """nf_hook_ingress with the ESP steps: xfrm = (fx, tcols, xs, tun), fx (key, xfrm_sa) the
    flowtable's, tcols Xfrm.cols, xs XfrmScratch.cols, tun XfrmInputTable.cols (flowtable/xfrm.py).
    Returns (forwarded, slow, ngroups, hits counted, refused by ESP output, parked)."""
    return _nf_hook_ingress(cols, n, now_ns, ft, sc, devs, acct, flags, xfrm)


class _Lane:
    """One flowtable's driver call: the flags that do not change from poll to poll, and the arguments
    built once (again when the table grows, the SAD or the tunnel tuples change, or a batch of another
    capacity comes). No Linux counterpart."""

    __slots__ = ("ft", "dev_ok", "flags", "call", "args", "order", "cols", "capacity", "xfrm", "tcols", "tun")

    def __init__(self, ft: Flowtable, dev_ok: np.ndarray, flags: int):
        self.ft, self.dev_ok, self.flags = ft, dev_ok, flags
        self.call = self.args = self.order = self.cols = self.tcols = self.tun = None
        self.capacity = self.xfrm = -1


class EarlyIngress:
    """A Worker's early ingress: its flowtables (each with its devices), the tunnel tuples of ESP
    input, and the scratch of both. `run` once per poll; `flush` encrypts parked ESP hits between the
    slow path's packets. No Linux counterpart (Linux runs one hook per packet and device).

    flowtables  [(Flowtable, dev_ok bool[max_ifindex + 1])], in nft order; none: every packet slow
    xfrm        the SAD/SPD (flowpath.xfrm.state.Xfrm) or None
    stats       the Worker's counters; bulk False: one transmit group per hit
    """

    def __init__(self, flowtables: list, nif: int, xfrm, stats: Stats, bulk: bool):
        self.any_devs = np.zeros(nif, np.bool_)
        for _, dev_ok in flowtables:
            self.any_devs |= dev_ok
        # no flowtable: one stand-in on no device, so that the same driver sends every packet slow
        # and counts the batch
        fts = flowtables or [(Flowtable("", capacity=2), np.zeros(nif, np.bool_))]
        base = (ING_BULK if bulk else 0) | (ING_SHARED if len(fts) > 1 else 0)
        self.lanes = [_Lane(ft, dev_ok, base | (ING_COUNT if k == len(fts) - 1 else 0))
                      for k, (ft, dev_ok) in enumerate(fts)]  # fmt: skip
        self.xfrm, self.stats, self.bulk = xfrm, stats, bool(bulk)
        self.xin = XfrmInputTable() if xfrm is not None and flowtables else None
        self.parked: list = []  # (flowtable, dev_ok) with XMIT_XFRM hits parked in this poll
        self._scratch: dict[int, OffloadScratch] = {}  # by batch capacity: one warm scratch
        self._xscratch: dict[int, XfrmScratch] = {}
        self._sa_bulks = np.zeros(0, np.int64)
        self._now_ns = 0
        self._batch_slow = None  # batch_slow's entry point (hook.jit_entry)

    # ---- the poll -------------------------------------------------------------------------------
    def run(self, batch: PacketBatch, now_ns: int, hits: list, received: bool = False) -> tuple[int, int, list, int]:
        """The flowtables over the batch; append each one's transmit order (int32 packet indices,
        group by group) to hits. Returns (hits counted, transmit groups, torn, slow): torn lists the
        (flowtable, flow id) of SYNs on CLOSING flows, whose conntrack the caller fixes up; the
        classic path's packets are batch.slow_idx[:slow], in order.
        received: the batch's packets were counted in rx already (another worker received them)."""
        self._now_ns = now_ns
        n, cols, verdict = batch.n, batch.cols, batch.verdict
        xin = ING_XFRM_IN if self.xin is not None and self.xin.count else 0  # on the first flowtable
        counted = groups = 0
        torn = []
        rx = ING_RX_EARLY | ING_RX_COUNTED if xin or any(lane.ft.nxfrm for lane in self.lanes) else 0
        if received:
            rx = ING_RX_COUNTED
        for lane in self.lanes:
            ft = lane.ft
            flags = lane.flags | xin | rx | (ING_XFRM_OUT if ft.nxfrm else 0)
            rx &= ~ING_RX_EARLY  # on the first flowtable only
            xin = 0
            x = flags & (ING_XFRM_IN | ING_XFRM_OUT)
            if not (lane.cols is ft.cols and lane.capacity == batch.capacity and lane.xfrm == x
                    and (not x or (lane.tcols is self.xfrm.cols and lane.tun is self.xin.index))):  # fmt: skip
                self._prepare(lane, batch, flags)
            fwd, slow, ng, c, bad, parked = lane.call(cols, n, now_ns, *lane.args, flags)
            counted += c
            if x:
                self._xfrm_expire()
            if parked:
                self.parked.append((ft, lane.dev_ok))
            if fwd:
                order = lane.order[:fwd]
                hits.append(order[verdict[order] == FLOW_FORWARD] if bad or parked else order.copy())
                groups += ng
        if self._batch_slow is None:
            self._batch_slow = jit_entry(batch_slow, (verdict, n, SLOW_TCP_STATE, batch.slow_idx))
        nslow, ntorn = self._batch_slow(verdict, n, SLOW_TCP_STATE, batch.slow_idx)
        if ntorn:
            torn = self._torn(batch, nslow)
        return counted, groups, torn, nslow

    def _torn(self, batch: PacketBatch, nslow: int) -> list:
        """(flowtable, flow id) of each SYN a flowtable sent up from a CLOSING flow: the first
        flowtable on the packet's device looked it up (the others' packets wait for theirs)."""
        out = []
        for i in batch.slow_idx[:nslow].tolist():
            if batch.verdict[i] == SLOW_TCP_STATE:
                x = int(batch.iif[i])
                ft = next(lane.ft for lane in self.lanes if 0 <= x < lane.dev_ok.shape[0] and lane.dev_ok[x])
                out.append((ft, int(batch.flow[i]) >> 1))
        return out

    def _prepare(self, lane: _Lane, batch: PacketBatch, flags: int) -> None:
        """Build lane's arguments for this batch's capacity and flags, and resolve the driver for them."""
        ft, x = lane.ft, flags & (ING_XFRM_IN | ING_XFRM_OUT)
        sc = self._scratch.get(batch.capacity)
        if sc is None:
            sc = self._scratch[batch.capacity] = OffloadScratch.alloc(batch.capacity)
        args = (ft.cols, tuple(sc), (lane.dev_ok, self.any_devs), self.stats.cols)
        kernel = nf_hook_ingress
        if x:
            tun = self.xin.cols
            args += (((ft.key, ft.xfrm_sa), self.xfrm.cols, self._xfrm_scratch(batch.capacity), tun),)
            kernel = nf_hook_ingress_xfrm
            lane.tcols, lane.tun = self.xfrm.cols, tun[0]
        lane.call = jit_entry(kernel, (batch.cols, batch.n, self._now_ns, *args, flags))
        lane.args, lane.order = args, sc.order
        lane.cols, lane.capacity, lane.xfrm = ft.cols, batch.capacity, x

    # ---- ESP hits parked until the slow packets before them have gone ------------------------------
    def flush(self, batch: PacketBatch, lo: int, hi: int, now_ns: int) -> int:
        """Encrypt and count the parked XMIT_XFRM hits lo..hi-1; returns how many were transmitted."""
        self._now_ns = now_ns
        xs, sent = self._xfrm_scratch(batch.capacity), 0
        for ft, dev_ok in self.parked:
            sent += nf_flow_xfrm_flush(batch.cols, lo, hi, dev_ok, (ft.key, ft.xfrm_sa), self.xfrm.cols,
                                       self.bulk, xs, self.stats.cols)  # fmt: skip
        self._xfrm_expire()
        return sent

    def _xfrm_scratch(self, capacity: int) -> tuple:
        xs = self._xscratch.get(capacity)
        if xs is None:
            xs = self._xscratch[capacity] = XfrmScratch(capacity)
        nsa = self.xfrm.tab.spi.shape[0] + 1  # + the "some SA is flagged" slot
        if self._sa_bulks.shape[0] != nsa:
            self._sa_bulks = np.zeros(nsa, np.int64)
        return xs.cols(self._sa_bulks)

    def _xfrm_expire(self) -> None:
        """Lifetime checks of the SAs whose bulk crossed a limit (xfrm_state_wants_check); flows through
        a dead SA are torn down."""
        bulks = self._sa_bulks
        if not bulks.shape[0] or not bulks[-1]:
            return
        bulks[-1] = 0
        for sa in np.flatnonzero(bulks):
            bulks[sa] = 0
            if not xfrm_state_check_expire(self.xfrm, self.xfrm.slots[int(sa)], self._now_ns):
                for lane in self.lanes:
                    if lane.ft.nused:
                        lane.ft.flow_offload_teardown_xfrm(int(sa))

"""Per-Worker counters: reasons and per-interface packets/bytes as int64 arrays, merged when read.

No Linux counterpart as such (Linux: per-CPU netdev stats and the drop-reason tracepoint; VPP: per-node
error counters flushed once per frame). The fast path's share is counted by one compiled call per batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.packet.reason import (
    IS_SLOW,
    LANE_PUNT_NAMES,
    N_LANE_PUNTS,
    N_REASONS,
    REASON_KIND,
    Reason,
    reason_label,
)

_IS_SLOW = IS_SLOW  # a global array: numba freezes it into the kernel
RX_PACKETS, RX_BYTES, TX_PACKETS, TX_BYTES = range(4)


@njit(cache=True, nogil=True)
def account_rx(iif, length, n, ifc):
    """rx packets and bytes per input interface for packets 0..n-1, as received: a poll whose stages
    change lengths before account_batch runs (ESP input decrypts, ESP output encrypts) counts them
    first. Same arguments as account_batch. Its loop is account_batch's rx half written out: an
    inlined helper returning the run for both measured 10-40 % slower in account_batch."""
    rx_if, rx_p, rx_b = np.int64(-1), 0, 0
    for i in range(n):
        x = np.int64(iif[i])
        if x != rx_if:
            _ifc_add(ifc, rx_if, RX_PACKETS, rx_p, rx_b)
            rx_if, rx_p, rx_b = x, 0, 0
        rx_p += 1
        rx_b += np.int64(length[i])
    _ifc_add(ifc, rx_if, RX_PACKETS, rx_p, rx_b)


@njit(cache=True, nogil=True)
def account_batch(verdict, iif, oif, length, n, reasons, ifc, rx):
    """Count a batch after the fast path: rx per interface for every packet (unless rx is False:
    account_rx counted them already); for hits (verdict 0) the reason and tx per output interface;
    the reason of drops decided before the slow path (PKT_TOO_BIG at append, ESP input/output
    failures on the fast path).

    verdict uint8[n]; iif, oif int32[n]; length uint16[n]; reasons int64[N_REASONS];
    ifc int64[max_ifindex + 1, 4] (rx packets, rx bytes, tx packets, tx bytes).
    Returns the number of hits. Slow-path packets are counted by the slow path itself.
    """
    # A poll's packets mostly share their input and output interface: counts of a run of equal
    # interfaces are kept in registers and added to ifc when the interface changes (an update of
    # ifc per packet is a chain of stores and reloads of the same words).
    hits = 0
    rx_if, rx_p, rx_b = np.int64(-1), 0, 0
    tx_if, tx_p, tx_b = np.int64(-1), 0, 0
    for i in range(n):
        if rx:  # one loop with the tx side: the arrays are read once
            x = np.int64(iif[i])
            if x != rx_if:
                _ifc_add(ifc, rx_if, RX_PACKETS, rx_p, rx_b)
                rx_if, rx_p, rx_b = x, 0, 0
            rx_p += 1
            rx_b += np.int64(length[i])  # int64: uint16 sums would wrap with the JIT off
        v = verdict[i]
        if v == 0:
            hits += 1
            o = np.int64(oif[i])
            if o != tx_if:
                _ifc_add(ifc, tx_if, TX_PACKETS, tx_p, tx_b)
                tx_if, tx_p, tx_b = o, 0, 0
            tx_p += 1
            tx_b += np.int64(length[i])
        elif v < N_REASONS and not _IS_SLOW[v]:  # a drop (not a stage's marker verdict)
            reasons[v] += 1
    _ifc_add(ifc, rx_if, RX_PACKETS, rx_p, rx_b)
    _ifc_add(ifc, tx_if, TX_PACKETS, tx_p, tx_b)
    reasons[0] += hits
    return hits


@njit(cache=True, nogil=True)
def batch_slow(verdict, n, torn_v, out):
    """The packets 0..n-1 the classic path takes (verdict IS_SLOW), in order, into out; returns (how
    many, how many of them have verdict torn_v). One call in place of numpy's several per poll. No
    Linux counterpart."""
    m = t = 0
    for i in range(n):
        v = verdict[i]
        if _IS_SLOW[v]:
            out[m] = i
            m += 1
            t += v == torn_v
    return m, t


@njit(cache=True, nogil=True, inline="always")
def _ifc_add(ifc, x, col, packets, nbytes):
    # interfaces outside the table (a packet of an unknown ifindex) are not counted
    if 0 <= x < ifc.shape[0]:
        ifc[x, col] += packets
        ifc[x, col + 1] += nbytes


class Stats:
    """One Worker's counters; `as_dict(ifname)` is what `replay --stats` writes."""

    def __init__(self, max_ifindex: int):
        self.reasons = np.zeros(N_REASONS, np.int64)
        self.ifc = np.zeros((max_ifindex + 1, 4), np.int64)
        self.cols = (self.reasons, self.ifc)  # what the compiled stages count into (`acct`)
        self.rx_packets = self.tx_packets = self.fastpath_packets = self.slowpath_packets = 0
        self.flows_offloaded = self.flows_expired = self.icmp_ratelimited = self.tx_bursts = 0
        # neighbour events: entries given the next hop's new address, flows torn down with their next hop
        self.flow_entries_neigh_updated = self.flows_neigh_teardown = 0
        self.generated_packets = 0  # what the gateway originates (ICMP, echo replies, resets, ARP)
        self.generated_drops = np.zeros(N_REASONS, np.int64)  # ... and could not send, by reason
        # the classic path's packets the compiled lane finished, and why it left the others to Python
        self.lane_packets = 0
        self.lane_punts = np.zeros(N_LANE_PUNTS, np.int64)

    @classmethod
    def merged(cls, parts: list[Stats]) -> Stats:
        """Several workers' counters summed (the ICMP rate limiter's count is the namespace's, shared:
        its largest reading)."""
        out = cls(max(p.ifc.shape[0] for p in parts) - 1)
        for p in parts:
            for name, v in vars(p).items():
                if name in ("cols", "ifc"):
                    continue
                if name == "icmp_ratelimited":
                    out.icmp_ratelimited = max(out.icmp_ratelimited, v)
                elif isinstance(v, np.ndarray):
                    getattr(out, name)[: v.shape[0]] += v
                else:
                    setattr(out, name, getattr(out, name) + v)
            out.ifc[: p.ifc.shape[0]] += p.ifc
        return out

    def grow(self, max_ifindex: int) -> None:
        """Room for interfaces up to max_ifindex (a reload that adds links); the counts stay."""
        if max_ifindex >= self.ifc.shape[0]:
            ifc = np.zeros((max_ifindex + 1, 4), np.int64)
            ifc[: self.ifc.shape[0]] = self.ifc
            self.ifc = ifc
            self.cols = (self.reasons, self.ifc)

    def count(self, reason: int) -> None:
        self.reasons[reason] += 1

    def resolve_held(self, reason: int, packets: int = 1, held: int = Reason.IP_DEFRAG_QUEUED) -> None:
        """Packets counted `held` when held take their final reason: IP_DEFRAG_QUEUED (a fragment
        waiting for its datagram) the datagram's or the drop of their queue; NEIGH_QUEUED (waiting for
        the next hop's address) TX or the neighbour's failure."""
        self.reasons[held] -= packets
        self.reasons[reason] += packets

    def rx_extra(self, ifindex: int, packets: int, nbytes: int) -> None:
        """Received packets counted after the batch was (a super-packet's segments beyond the one
        it counted as)."""
        if 0 <= ifindex < self.ifc.shape[0]:
            self.ifc[ifindex, RX_PACKETS] += packets
            self.ifc[ifindex, RX_BYTES] += nbytes

    def tx(self, ifindex: int, nbytes: int) -> None:
        if 0 <= ifindex < self.ifc.shape[0]:
            self.ifc[ifindex, TX_PACKETS] += 1
            self.ifc[ifindex, TX_BYTES] += nbytes
        self.tx_packets += 1

    def as_dict(self, ifname) -> dict:
        drops = {
            reason_label(r): int(c) for r, c in enumerate(self.reasons) if c and REASON_KIND[r] == "drop"
        }
        ifaces = {}
        for x in np.flatnonzero(self.ifc.any(axis=1)):
            c = self.ifc[x]
            ifaces[ifname(int(x)) or f"if{x}"] = {
                "rx_packets": int(c[RX_PACKETS]), "rx_bytes": int(c[RX_BYTES]),
                "tx_packets": int(c[TX_PACKETS]), "tx_bytes": int(c[TX_BYTES]),
            }  # fmt: skip
        # every received packet's one final disposition: rx = forwarded + dropped + local + held
        # (held: fragments still waiting for their datagram, packets waiting for their next hop's
        # address, when the counters are read)
        forwarded = int(self.reasons[Reason.FLOW_FORWARD] + self.reasons[Reason.TX])
        return {
            "rx_packets": self.rx_packets,
            "forwarded_packets": forwarded,
            "dropped_packets": sum(drops.values()),
            "local_packets": int(self.reasons[Reason.LOCAL_IN]),
            "held_packets": int(self.reasons[Reason.IP_DEFRAG_QUEUED] + self.reasons[Reason.NEIGH_QUEUED]
                                + self.reasons[Reason.RPS_HANDOFF]),
            "generated_packets": self.generated_packets,
            "generated_dropped": {reason_label(r): int(c) for r, c in enumerate(self.generated_drops) if c},
            "tx_packets": self.tx_packets,
            "drops": drops,
            "fastpath_packets": self.fastpath_packets,
            "slowpath_packets": self.slowpath_packets,
            "classic_lane": {
                "packets": self.lane_packets,
                "punted": {LANE_PUNT_NAMES[p]: int(c) for p, c in enumerate(self.lane_punts) if c},
            },
            "flows_offloaded": self.flows_offloaded,
            "flows_expired": self.flows_expired,
            "flow_entries_neigh_updated": self.flow_entries_neigh_updated,
            "flows_neigh_teardown": self.flows_neigh_teardown,
            "icmp_ratelimited": self.icmp_ratelimited,
            "tx_bursts": self.tx_bursts,
            "reasons": {reason_label(r): int(c) for r, c in enumerate(self.reasons) if c},
            "interfaces": dict(sorted(ifaces.items())),
        }

"""Worker: one CPU's datapath — early ingress (the flowtable), the slow path, and transmit.

No Linux counterpart as a whole (it plays the part of a NAPI poll loop plus netif_receive_skb_list).
A batch goes through the compiled flowtable hook first; what it does not forward goes, packet by packet
and in order, through the classic path (flowpath.inet). Transmitted frames are handed back per batch,
in packet order, to the caller (a port).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from flowpath.inet.arp import arp_rcv
from flowpath.inet.icmp import IcmpSender
from flowpath.inet.ip_input import ip_local_out, ip_rcv_finish
from flowpath.inet.ip_output import eth_header, family_of
from flowpath.net.fib import RouteType
from flowpath.netfilter import constants as C
from flowpath.netfilter.hooks import Netfilter, NfHookResult, NfHookState
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import REASON_KIND, Reason, reason_label
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

_BCAST = b"\xff" * 6
GC_INTERVAL_NS = 1_000_000_000  # nf_flow_offload_work_gc runs every HZ


@dataclass
class IfStats:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0


@dataclass
class Stats:
    """Counters of one Worker; `as_dict` is what `replay --stats` writes."""

    rx_packets: int = 0
    tx_packets: int = 0
    fastpath_packets: int = 0
    slowpath_packets: int = 0
    flows_offloaded: int = 0
    flows_expired: int = 0
    icmp_ratelimited: int = 0
    reasons: Counter = field(default_factory=Counter)
    ifaces: dict[str, IfStats] = field(default_factory=dict)

    def iface(self, name: str) -> IfStats:
        s = self.ifaces.get(name)
        if s is None:
            s = self.ifaces[name] = IfStats()
        return s

    def as_dict(self) -> dict:
        drops = {reason_label(r): n for r, n in sorted(self.reasons.items()) if REASON_KIND[r] == "drop"}
        return {
            "rx_packets": self.rx_packets,
            "tx_packets": self.tx_packets,
            "drops": drops,
            "dropped_packets": sum(drops.values()),
            "local_packets": self.reasons.get(Reason.LOCAL_IN, 0),
            "fastpath_packets": self.fastpath_packets,
            "slowpath_packets": self.slowpath_packets,
            "flows_offloaded": self.flows_offloaded,
            "flows_expired": self.flows_expired,
            "icmp_ratelimited": self.icmp_ratelimited,
            "interfaces": {k: vars(v) for k, v in sorted(self.ifaces.items())},
        }


class Worker:
    """One CPU: its conntrack view, hooks, flowtable shard and counters.

    net        flowpath.net Network (links, addresses, FIB, neighbours)
    ruleset    flowpath.config.nft Ruleset or None
    flowtable  False: every packet takes the classic path (`replay --no-flowtable`)
    bulk       False: one transmit per packet (`--no-bulk`)
    """

    def __init__(self, net, ruleset=None, *, flowtable: bool = True, bulk: bool = True):
        from flowpath.netfilter.conntrack import Conntrack

        self.net = net
        self.runtime = None
        if ruleset is not None:
            from flowpath.netfilter.nf_tables import NftRuntime

            self.runtime = NftRuntime.from_json(ruleset.to_json())
        self.conntrack = Conntrack()
        self.netfilter = Netfilter(self.runtime, self.conntrack, self._masq_addr)
        self.icmp = IcmpSender()
        self.use_flowtable, self.bulk = flowtable, bulk
        self.stats = Stats()
        self.now_ns = 0
        self._next_gc_ns = 0
        self._tx: list[tuple[int, bytes, int]] = []
        self._vlans = {(lk.parent, lk.vlan_id): lk for lk in net.links.values() if lk.kind == "vlan"}

    # -- helpers the inet steps call -------------------------------------------------------------
    def ifname(self, ifindex: int) -> str:
        link = self.net.links.get(ifindex)
        return link.name if link is not None else ""

    def link_header(self, link, dst_mac: bytes, proto: int) -> bytes:
        return eth_header(dst_mac, link.address, proto, link.vlan_id if link.kind == "vlan" else None)

    def xmit(self, link, frame: bytes) -> None:
        """dev_queue_xmit: a VLAN device transmits through its parent."""
        phys = self.net.links[link.parent] if link.kind == "vlan" else link
        self._tx.append((phys.ifindex, frame, self.now_ns))

    def _masq_addr(self, nfproto: int, ifindex: int, daddr: int) -> int | None:
        return self.net.inet_select_addr(ifindex, 6 if nfproto == C.NFPROTO_IPV6 else 4, daddr)

    def icmp_error(self, skb: SkBuff, type_: int, code: int, info: int, local: bool = False) -> None:
        """icmp_send / icmp6_send: the source is the address the route back to the sender selects."""
        family = family_of(skb)
        if local:
            saddr = skb.daddr
        else:
            back = self.net.fib_lookup(family, skb.saddr)
            if back is None or back.type != RouteType.UNICAST:
                return
            saddr = back.prefsrc or self.net.inet_select_addr(back.oif, family, skb.saddr)
            if saddr is None:
                return
        send = self.icmp.icmp6_send if family == 6 else self.icmp.icmp_send
        msg = send(skb, type_, code, info, saddr)
        if msg is not None:
            msg.ts_ns = skb.ts_ns
            r = ip_local_out(self, msg)
            if r != Reason.TX:
                self.stats.reasons[r] += 1

    def nf_drop(self, skb: SkBuff, res: NfHookResult, state: NfHookState) -> Reason:
        """A hook said drop; a `reject` statement also sends its error (nft_reject_inet_eval)."""
        if res.reject is not None:
            from flowpath.netfilter.nf_reject import nf_send_reject

            nf_send_reject(self, skb, res.reject, state)
        return res.reason or Reason.NETFILTER_DROP

    def flow_offload(self, skb: SkBuff, fib, flowtable: str) -> None:
        """`flow add @ft` accepted this packet and it was transmitted (integrated with the flowtable)."""
        return None

    # -- the datapath -----------------------------------------------------------------------------
    def rx_batch(self, batch: PacketBatch) -> list[tuple[int, bytes, int]]:
        """Process a batch; return the frames to transmit as (ifindex, frame, ts_ns), in order."""
        self._tx = []
        for i in range(batch.n):
            self.now_ns = int(batch.ts_ns[i])
            self._maybe_gc()
            reason = Reason(int(batch.verdict[i]))
            link = self.net.links.get(int(batch.iif[i]))
            if link is not None:
                s = self.stats.iface(link.name)
                s.rx_packets += 1
                s.rx_bytes += int(batch.len[i])
            self.stats.rx_packets += 1
            if reason == Reason.FLOW_FORWARD:
                self.stats.slowpath_packets += 1
                reason = self.slow_path(frame_array(batch.frame(i)), int(batch.iif[i]), self.now_ns)
            self.stats.reasons[reason] += 1
        out, self._tx = self._tx, []
        for ifindex, frame, _ in out:
            s = self.stats.iface(self.ifname(ifindex))
            s.tx_packets += 1
            s.tx_bytes += len(frame)
        self.stats.tx_packets += len(out)
        self.stats.icmp_ratelimited = self.icmp.ratelimited
        return out

    def _maybe_gc(self) -> None:
        if self.now_ns >= self._next_gc_ns:
            self.conntrack.gc(self.now_ns)
            self._next_gc_ns = self.now_ns + GC_INTERVAL_NS

    def slow_path(self, buf, iif: int, ts_ns: int) -> Reason:
        """netif_receive_skb for one frame: L2 checks, then ARP or the IP receive path."""
        link = self.net.links.get(iif)
        if link is None:
            return Reason.NO_LINK
        if not link.up:
            return Reason.LINK_DOWN
        skb = skb_parse(buf, iif, ts_ns)
        if isinstance(skb, Reason):
            return skb
        dst = skb.buf[0:6].tobytes()
        if dst != link.address and dst != _BCAST and not dst[0] & 1:
            return Reason.MAC_MISMATCH  # PACKET_OTHERHOST
        if skb.vlan >= 0:
            sub = self._vlans.get((iif, skb.vlan))
            if sub is None or not sub.up:
                return Reason.VLAN_UNKNOWN
            skb.iif = sub.ifindex
        if skb.l3proto == L.ETH_P_ARP:
            return arp_rcv(self, skb)
        if skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6):
            return Reason.UNHANDLED_PROTO
        return ip_rcv_finish(self, skb)

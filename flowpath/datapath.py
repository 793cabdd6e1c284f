"""Worker: one CPU's datapath — early ingress (the flowtable), the slow path, and transmit.

No Linux counterpart as a whole (it plays the part of a NAPI poll loop plus netif_receive_skb_list).
A batch goes through the compiled flowtable hook first; what it does not forward goes, packet by packet
and in order, through the classic path (flowpath.inet). Transmitted frames are handed back per batch,
in packet order, to the caller (a port).
"""

from __future__ import annotations

import json

import numpy as np

from flowpath.errors import UsageError
from flowpath.flowtable import NF_FLOWTABLE_COUNTER, Flowtable, FlowTuple
from flowpath.flowtable.ingress import EarlyIngress
from flowpath.flowtable.key import V_FLAGS, V_TIMEOUT
from flowpath.flowtable.xfrm import XFRM_PENDING
from flowpath.inet.arp import arp_rcv
from flowpath.inet.icmp import IcmpSender
from flowpath.inet.ip_input import ip_local_out, ip_rcv_finish
from flowpath.inet.ip_output import eth_header, family_of
from flowpath.net.fib import RouteType
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.hooks import Netfilter, NfHookResult, NfHookState
from flowpath.netfilter.nf_reject import nf_send_reject
from flowpath.netfilter.nf_tables import NftRuntime
from flowpath.netfilter.nft_flow_offload import (
    flow_offload_fixup_ct,
    nf_flow_table_extend_ct_timeout,
    nft_flow_offload_eval,
)
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.counters import Stats
from flowpath.packet.reason import IS_SLOW, Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

_BCAST = b"\xff" * 6
_FF = int(Reason.FLOW_FORWARD)
GC_INTERVAL_NS = 1_000_000_000  # nf_flow_offload_work_gc runs every HZ
NSEC_PER_SEC = 1_000_000_000
SYSCTL_DEFAULTS = {  # net.netfilter.* (seconds), as Linux
    "net.netfilter.nf_flowtable_tcp_timeout": 30,
    "net.netfilter.nf_flowtable_udp_timeout": 30,
}


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
    """One CPU: its conntrack view, hooks, flowtable shard and counters.

    net        flowpath.net Network (links, addresses, FIB, neighbours)
    ruleset    flowpath.config.nft Ruleset or None
    flowtable  False: every packet takes the classic path (`replay --no-flowtable`)
    bulk       False: one transmit per packet (`--no-bulk`)
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
        self.net = net
        self.xfrm = getattr(net, "xfrm", None)  # SAD + SPD from `xfrm ...` lines of the network file
        self.runtime = None
        self.sysctl = dict(SYSCTL_DEFAULTS)
        for k, v in (sysctl or {}).items():
            if k not in SYSCTL_DEFAULTS:
                raise UsageError(f"unknown sysctl {k!r}; known: {', '.join(SYSCTL_DEFAULTS)}")
            self.sysctl[k] = int(v)
        rs_json = ruleset.to_json() if ruleset is not None else {"nftables": []}
        if ruleset is not None:
            self.runtime = NftRuntime.from_json(rs_json)
        self.flowtables = self._flowtables(rs_json) if flowtable else {}
        self._uses_rt = '{"rt": ' in json.dumps(rs_json)
        self.conntrack = Conntrack()
        self.netfilter = Netfilter(self.runtime, self.conntrack, self._masq_addr)
        self.icmp = IcmpSender()
        self.bulk = bulk
        self.stats = Stats(max(net.links) if net.links else 0)
        self.now_ns = 0
        self._next_gc_ns = 0
        self._tx: list[tuple[int, bytes, int]] = []
        nif = max(net.links) + 1 if net.links else 1
        fts = []
        for ft, ifindexes in self.flowtables.values():
            dev_ok = np.zeros(nif, np.bool_)
            dev_ok[list(ifindexes)] = True
            fts.append((ft, dev_ok))
        self._vlans = {(lk.parent, lk.vlan_id): lk for lk in net.links.values() if lk.kind == "vlan"}
        # the flowtable hooks, ESP input's tunnel tuples included (flowtable/ingress.py)
        self.ingress = EarlyIngress(fts, nif, self.xfrm, self.stats, bulk)
        self._xin, self._any_devs = self.ingress.xin, self.ingress.any_devs

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

    def rt_mtu(self, skb: SkBuff, fib) -> int:
        """nft_rt's TCPMSS view: the smaller of the route's MTU and the route back's (get_tcpmss).
        Only rulesets with an `rt` expression read it, so the others skip the second lookup."""
        if not self._uses_rt:
            return fib.mtu
        back = self.net.fib_lookup(family_of(skb), skb.saddr)
        return min(fib.mtu, back.mtu) if back is not None and back.type == RouteType.UNICAST else fib.mtu

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
                self.stats.count(r)

    def nf_drop(self, skb: SkBuff, res: NfHookResult, state: NfHookState) -> Reason:
        """A hook said drop; a `reject` statement also sends its error (nft_reject_inet_eval)."""
        if res.reject is not None:
            nf_send_reject(self, skb, res.reject, state)
        return res.reason or Reason.NETFILTER_DROP

    def flow_offload(self, skb: SkBuff, fib, flowtable: str) -> None:
        """`flow add @ft` accepted this packet and it was transmitted: offload its connection."""
        entry = self.flowtables.get(flowtable)
        if entry is not None and nft_flow_offload_eval(self, skb, entry[0]) >= 0:
            self.stats.flows_offloaded += 1

    def _flowtables(self, rs_json: dict) -> dict:
        """One Flowtable per nft flowtable: name -> (Flowtable, ifindex set of its devices)."""
        out = {}
        for obj in rs_json.get("nftables", []):
            ft = obj.get("flowtable")
            if ft is None or ft["name"] in out:
                continue
            flags = ft.get("flags", [])
            flags = [flags] if isinstance(flags, str) else flags
            devs = ft.get("dev", [])
            devs = [devs] if isinstance(devs, str) else devs
            ifindexes = set()
            for name in devs:
                try:
                    ifindexes.add(self.net.link_by_name(name).ifindex)
                except KeyError:
                    raise UsageError(
                        f"flowtable {ft['name']}: device {name!r} is not in the network file"
                    ) from None
            table = Flowtable(
                ft["name"],
                flags=NF_FLOWTABLE_COUNTER if "counter" in flags else 0,
                timeout_tcp_ns=self.sysctl["net.netfilter.nf_flowtable_tcp_timeout"] * NSEC_PER_SEC,
                timeout_udp_ns=self.sysctl["net.netfilter.nf_flowtable_udp_timeout"] * NSEC_PER_SEC,
            )
            out[ft["name"]] = (table, ifindexes)
        return out

    def xfrm_listing(self) -> str:
        """`ip -s xfrm state` then `ip -s xfrm policy`, with the SAs' counters (empty without xfrm)."""
        if self.xfrm is None:
            return ""
        from flowpath.xfrm.listing import xfrm_policy_list, xfrm_state_list

        return xfrm_state_list(self.xfrm, stats=True) + xfrm_policy_list(self.xfrm, stats=True)

    def flowtable_listing(self) -> str:
        """What `flowpath ctl flowtable list` will print: every flowtable's entries."""
        return "\n".join(ft.listing(self.now_ns, self.ifname) for ft, _ in self.flowtables.values())

    def xfrm_input_offload(self, skb: SkBuff, x) -> None:
        """The classic path decrypted skb (the outer packet) with SA x: later ESP of that SA on this
        device is decrypted at early ingress (flowtable/xfrm.py). Only untagged frames on flowtable
        devices, and only with the compiled ESP kernels (EVP contexts)."""
        from flowpath.xfrm.state import xfrm_state_ctx

        if self._xin is None or skb.vlan >= 0 or skb.meta.get("sp") or not self._any_devs[skb.iif]:
            return
        if not xfrm_state_ctx(self.xfrm, x)[1]:
            return
        l3 = 6 if skb.l3proto == L.ETH_P_IPV6 else 4
        udp = skb.l4proto == L.IPPROTO_UDP
        t = FlowTuple(skb.iif, l3, skb.l4proto, skb.saddr, skb.daddr, skb.sport if udp else 0,
                      skb.dport if udp else 0, x.spi)  # fmt: skip
        self._xin.add(t, x.index)

    def _xfrm_flush(self, batch: PacketBatch, lo: int, hi: int) -> None:
        """Encrypt and count the parked XMIT_XFRM hits lo..hi-1 (between two slow-path packets)."""
        hits = self.ingress.flush(batch, lo, hi, self.now_ns)
        self.stats.fastpath_packets += hits
        self.stats.tx_packets += hits

    def slow_path_decrypted(self, buf, iif: int, ts_ns: int, x) -> Reason:
        """A packet the fast path decrypted with SA x but did not forward: received again with its
        secpath, as xfrm_input does (the classic path's xfrm4_rcv after esp_input)."""
        skb = skb_parse(buf, iif, ts_ns)
        if isinstance(skb, Reason):
            return skb
        skb.meta["sp"] = [x]
        return ip_rcv_finish(self, skb)

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
        hits, bursts, torn = self.ingress.run(batch, self.now_ns, tx.hits)
        st.tx_bursts += bursts
        for ft, fid in torn:  # SYN on a CLOSING flow: flow_offload_teardown's conntrack fixup
            self._fixup(ft, fid, ft.flow_ct(fid))
        st.fastpath_packets += hits
        st.tx_packets += hits
        st.rx_packets += n
        slow = np.flatnonzero(IS_SLOW[verdict[:n]]) if hits < n else ()
        xfrm_parked = self.ingress.parked
        if xfrm_parked:
            parked, lo = np.flatnonzero(verdict[:n] == XFRM_PENDING), 0
        for i in slow:
            i = int(i)
            if xfrm_parked:
                self._xfrm_flush(batch, lo, i)
                lo = i + 1
            self.now_ns = int(batch.ts_ns[i])
            self._maybe_gc()
            st.slowpath_packets += 1
            self._tx = []
            sa = int(batch.encap[i]) - 1
            if sa >= 0:  # decrypted by the fast path's ESP input
                reason = self.slow_path_decrypted(frame_array(batch.frame(i)), int(batch.iif[i]), self.now_ns,
                                                  self.xfrm.states[sa])  # fmt: skip
            else:
                reason = self.slow_path(frame_array(batch.frame(i)), int(batch.iif[i]), self.now_ns)
            st.count(reason)
            for k, (ifx, f, _) in enumerate(self._tx):
                tx.slow.append((i, k, ifx, f))
                st.tx(ifx, len(f))
            st.tx_bursts += len(self._tx)
        if xfrm_parked:
            self._xfrm_flush(batch, lo, n)
            tx.hits.append(parked[verdict[parked] == _FF])
            xfrm_parked.clear()
        st.icmp_ratelimited = self.icmp.ratelimited
        self._tx = []
        return tx

    @property
    def next_gc_ns(self) -> int:
        """Packet time of the next GC run; ports end a poll batch there."""
        return self._next_gc_ns

    def _maybe_gc(self) -> None:
        if self.now_ns < self._next_gc_ns:
            return
        self._next_gc_ns = self.now_ns + GC_INTERVAL_NS
        self.conntrack.gc(self.now_ns)
        if self.xfrm is not None:
            self._xfrm_gc()
        for ft, _ in self.flowtables.values():
            gone = ft.gc(self.now_ns, lambda fid, ct, flags, ft=ft: self._fixup(ft, fid, ct))
            self.stats.flows_expired += len(gone)
            for fid in np.flatnonzero(ft.used[0::2]):  # nf_flow_offload_gc_step on the survivors
                nf_flow_table_extend_ct_timeout(ft.flow_ct(int(fid)), self.now_ns)

    def _xfrm_gc(self) -> None:
        """The SAs' lifetime timers (xfrm_timer_handler), then teardown of flows through dead SAs."""
        from flowpath.xfrm.state import xfrm_timer

        xfrm_timer(self.xfrm, self.now_ns)
        dead = np.flatnonzero(self.xfrm.tab.dead[: len(self.xfrm.states)])
        for ft, _ in self.flowtables.values():
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

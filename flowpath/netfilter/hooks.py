"""Netfilter hooks: the ordered entries each hook runs, and the walk over them.

Linux: net/netfilter/core.c › nf_hook_slow, nf_hook_entries_grow (entries sorted by priority);
net/ipv4/netfilter/nf_defrag_ipv4.c, net/ipv6/netfilter/nf_defrag_ipv6_hooks.c (defrag at
NF_IP_PRI_CONNTRACK_DEFRAG wherever conntrack runs, which needs it);
net/netfilter/nf_conntrack_proto.c (ipv4_conntrack_in at NF_IP_PRI_CONNTRACK, confirm at ..._CONFIRM);
net/netfilter/nf_nat_proto.c (nf_nat_ipv4_ops: DNAT at PRE_ROUTING/LOCAL_OUT -100, SNAT at POST_ROUTING/
LOCAL_IN +100, registered for a family as soon as any nat chain of it exists; the NAT core then walks that
hook's nat chains in priority order until one binds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flowpath.netfilter import constants as C
from flowpath.netfilter.nat import nf_nat_inet_fn
from flowpath.netfilter.nf_tables import NftPktinfo
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff

ENTRY_CHAIN, ENTRY_CONNTRACK, ENTRY_NAT, ENTRY_CONFIRM, ENTRY_DEFRAG = range(5)
_CT_HOOKS = (C.NF_INET_PRE_ROUTING, C.NF_INET_LOCAL_OUT)
_CONFIRM_HOOKS = (C.NF_INET_POST_ROUTING, C.NF_INET_LOCAL_IN)
_NAT_PRIO = {C.NF_INET_PRE_ROUTING: C.NF_IP_PRI_NAT_DST, C.NF_INET_LOCAL_OUT: C.NF_IP_PRI_NAT_DST,
             C.NF_INET_POST_ROUTING: C.NF_IP_PRI_NAT_SRC, C.NF_INET_LOCAL_IN: C.NF_IP_PRI_NAT_SRC}  # fmt: skip


@dataclass(slots=True)
class NfHookEntry:
    prio: int
    kind: int
    chain: object = None


@dataclass(slots=True)
class NfHookState:
    """struct nf_hook_state: where the packet is and through which devices."""

    hooknum: int
    nfproto: int
    in_ifindex: int = 0
    in_name: str = ""
    out_ifindex: int = 0
    out_name: str = ""
    mtu: int = 0  # what `rt mtu` reads: the route MTU once the packet is routed
    net: object = None  # the namespace: what `fib` looks up
    xfrm: object = None  # skb_dst(skb)->xfrm: the SA the route encrypts with (FORWARD, OUTPUT, POSTROUTING)


@dataclass(slots=True)
class NfHookResult:
    verdict: int
    reason: Reason | None = None
    reject: tuple | None = None  # (kind, code) of a `reject` statement
    flow_add: str | None = None  # flowtable named by `flow add @ft` in this hook


class Netfilter:
    """The hook entries of one network namespace, built once from the ruleset.

    runtime     an NftRuntime (flowpath.netfilter.nf_tables) or None for an empty ruleset
    conntrack   a Conntrack (flowpath.netfilter.conntrack)
    masq_addr   callable(nfproto, out_ifindex, daddr) -> the address masquerade maps to, or None
    defrag      an NfDefrag (flowpath.netfilter.nf_defrag): the reassembly before conntrack
    """

    def __init__(self, runtime, conntrack, masq_addr: Callable[[int, int, int], int | None], defrag):
        self.runtime, self.conntrack, self.masq_addr, self.defrag = runtime, conntrack, masq_addr, defrag
        self.entries: dict[tuple[int, int], list[NfHookEntry]] = {}
        self.nat_chains: dict[tuple[int, int], list] = {}
        for nfproto in (C.NFPROTO_IPV4, C.NFPROTO_IPV6):
            for hooknum in (C.NF_INET_PRE_ROUTING, C.NF_INET_LOCAL_IN, C.NF_INET_FORWARD,
                            C.NF_INET_LOCAL_OUT, C.NF_INET_POST_ROUTING):  # fmt: skip
                self.entries[nfproto, hooknum] = self._build(nfproto, hooknum)

    def _build(self, nfproto: int, hooknum: int) -> list[NfHookEntry]:
        chains = list(self.runtime.base_chains(nfproto, hooknum)) if self.runtime else []
        nat = [c for c in chains if c.type == "nat"]
        out = [NfHookEntry(c.prio, ENTRY_CHAIN, c) for c in chains if c.type != "nat"]
        if hooknum in _CT_HOOKS:
            out.append(NfHookEntry(C.NF_IP_PRI_CONNTRACK_DEFRAG, ENTRY_DEFRAG))
            out.append(NfHookEntry(C.NF_IP_PRI_CONNTRACK, ENTRY_CONNTRACK))
        if hooknum in _NAT_PRIO and self._family_has_nat(nfproto):
            self.nat_chains[nfproto, hooknum] = nat
            out.append(NfHookEntry(_NAT_PRIO[hooknum], ENTRY_NAT))
        if hooknum in _CONFIRM_HOOKS:
            out.append(NfHookEntry(C.NF_IP_PRI_CONNTRACK_CONFIRM, ENTRY_CONFIRM))
        out.sort(key=lambda e: e.prio)  # stable: equal priorities keep registration order
        return out

    def _family_has_nat(self, nfproto: int) -> bool:
        if not self.runtime:
            return False
        return any(c.type == "nat" for h in _NAT_PRIO for c in self.runtime.base_chains(nfproto, h))

    def nf_hook(self, skb: SkBuff, state: NfHookState) -> NfHookResult:
        """Run every entry of the hook in priority order; stop at the first drop, or at a fragment
        defrag keeps (NF_STOLEN: held, or dropped by IPv4 reassembly) (nf_hook_slow)."""
        res = NfHookResult(C.NF_ACCEPT)
        for e in self.entries[state.nfproto, state.hooknum]:
            if e.kind == ENTRY_DEFRAG:
                v, reason = self.defrag.nf_defrag(skb, state.hooknum)
                if v != C.NF_ACCEPT:
                    return NfHookResult(v, reason)
            elif e.kind == ENTRY_CHAIN:
                pkt = self._pktinfo(skb, state)
                v = self.runtime.nft_do_chain(e.chain, pkt)
                if pkt.flow_add:
                    res.flow_add = pkt.flow_add
                if v == C.NF_DROP:
                    return NfHookResult(C.NF_DROP, pkt.reason or Reason.NETFILTER_DROP, pkt.reject)
            elif e.kind == ENTRY_CONNTRACK:
                v, reason = self.conntrack.nf_conntrack_in(skb, state.hooknum)
                if v == C.NF_DROP:
                    return NfHookResult(C.NF_DROP, reason or Reason.CT_INVALID)
            elif e.kind == ENTRY_NAT:
                v = self._nat(skb, state)
                if v == C.NF_DROP:  # an NfVerdict: the int plus its reason
                    return NfHookResult(C.NF_DROP, getattr(v, "reason", None) or Reason.NAT_NO_PORTS)
            else:
                self.conntrack.nf_conntrack_confirm(skb)
        return res

    def _pktinfo(self, skb: SkBuff, state: NfHookState):
        return NftPktinfo(skb=skb, hooknum=state.hooknum, nfproto=state.nfproto, iifname=state.in_name,
                          oifname=state.out_name, iif=state.in_ifindex, oif=state.out_ifindex,
                          mtu=state.mtu, net=state.net, xfrm=state.xfrm)  # fmt: skip

    def _nat(self, skb: SkBuff, state: NfHookState) -> int:
        chains = self.nat_chains.get((state.nfproto, state.hooknum), ())

        def do_chain(skb_: SkBuff):
            for chain in chains:
                pkt = self._pktinfo(skb_, state)
                if self.runtime.nft_do_chain(chain, pkt) == C.NF_DROP:
                    return C.NF_DROP
                if pkt.nat is not None:
                    if pkt.nat.masquerade or pkt.nat.redirect:
                        ifindex = state.out_ifindex if pkt.nat.masquerade else state.in_ifindex
                        addr = self.masq_addr(state.nfproto, ifindex, skb_.daddr)
                        if addr is None:
                            return C.NF_DROP  # nf_nat_masquerade_ipv4: no address on the device
                        pkt.nat.range.min_addr = pkt.nat.range.max_addr = addr
                        pkt.nat.range.flags |= 1  # NF_NAT_RANGE_MAP_IPS
                    return pkt.nat
            return None

        return nf_nat_inet_fn(self.conntrack, skb, state.hooknum, do_chain)

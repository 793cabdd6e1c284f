"""The netdev family's ingress hook: a received frame through the device's base chains, before the stack.

Linux: include/linux/netfilter_netdev.h › nf_hook_ingress (run by net/core/dev.c ›
__netif_receive_skb_core after skb_vlan_untag and before the frame is handed to its protocol, once per
device the frame climbs), net/netfilter/nft_chain_filter.c › nft_do_chain_netdev, and
net/netfilter/core.c › nf_hook_slow (chains in priority order, the first drop ends the hook).

What flowpath does not run is refused when the ruleset is loaded (netdev_check): egress chains (the
runtime has no such hook), `reject` in a netdev chain (nothing here sends it), and an ingress chain that
would run before a flowtable of the same device (the fast path forwards the flowtable's packets without
it; one at a higher priority runs after the flowtable, as in Linux, and sees what the flowtable does
not take).
"""

from __future__ import annotations

from flowpath.config.nft.ir import Ruleset, json_names
from flowpath.netfilter import constants as C
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


def nf_hook_ingress(nft: NftRuntime | None, skb: SkBuff, ifname: str) -> Reason | None:
    """The ingress chains of device `ifname`; a drop Reason, or None when the frame goes on."""
    if nft is None:
        return None
    chains = nft.base_chains(C.NFPROTO_NETDEV, C.NF_NETDEV_INGRESS, ifname)
    if not chains:
        return None
    pkt = NftPktinfo(
        skb=skb, hooknum=C.NF_NETDEV_INGRESS, nfproto=C.NFPROTO_NETDEV, iifname=ifname, iif=skb.iif
    )
    for chain in chains:
        if nft_do_chain(chain, pkt) == C.NF_DROP:
            return pkt.reason or Reason.NETFILTER_DROP
    return None


def has_ingress_chains(nft: NftRuntime | None) -> bool:
    return nft is not None and bool(nft.base_chains(C.NFPROTO_NETDEV, C.NF_NETDEV_INGRESS))


def netdev_check(rs: Ruleset) -> None:
    """Raise ConfigError, at the chain or rule, for a netdev chain the datapath cannot run as Linux
    would (module docstring)."""
    for t in rs.tables:
        if t.family != "netdev":
            continue
        for c in t.chains.values():
            where = f"chain netdev {t.name} {c.name}"
            if c.hook == "egress":
                raise rs.error(c.loc, f"{where}: flowpath does not run netdev egress chains")
            if c.hook is None:
                continue
            devs = set(json_names(c.dev))
            for tt in rs.tables:
                for ft in tt.flowtables.values():
                    shared = set(ft.devices) & devs if devs else set(ft.devices)
                    if shared and (c.prio or 0) <= (ft.prio or 0):
                        raise rs.error(c.loc, f"{where}: runs before flowtable {ft.name} on "
                                       f"{', '.join(sorted(shared))}, which forwards without it: give it a "
                                       "priority above the flowtable's")  # fmt: skip
            for r in c.rules:
                if any("reject" in x for x in r.expr):
                    raise rs.error(r.loc, f"{where}: flowpath does not send a netdev chain's reject")

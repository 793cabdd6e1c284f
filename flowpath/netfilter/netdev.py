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

from flowpath.errors import ConfigError
from flowpath.netfilter import constants as C
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, _names, nft_do_chain
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


def netdev_check(rs_json: dict, path: str) -> None:
    """Raise ConfigError for a netdev chain the datapath cannot run as Linux would (module docstring)."""
    items = [
        next(iter(i.items())) for i in rs_json.get("nftables", []) if isinstance(i, dict) and len(i) == 1
    ]
    chains = {(o["table"], o["name"]): o for k, o in items if k == "chain" and o.get("family") == "netdev"}
    flowtables = [o for k, o in items if k == "flowtable"]
    for (table, name), c in chains.items():
        where = f"netdev {table} {name}"
        if c.get("hook") == "egress":
            raise ConfigError(path, 0, 0, f"chain {where}: flowpath does not run netdev egress chains")
        if "hook" not in c:
            continue
        devs = _names(c.get("dev"))
        for ft in flowtables:
            shared = set(_names(ft.get("dev"))) & set(devs) if devs else set(_names(ft.get("dev")))
            if shared and int(c.get("prio", 0)) <= int(ft.get("prio", 0)):
                raise ConfigError(path, 0, 0, f"chain {where}: runs before flowtable {ft['name']} on "
                                  f"{', '.join(sorted(shared))}, which forwards without it: give it a "
                                  "priority above the flowtable's")  # fmt: skip
    for k, o in items:
        if k == "rule" and o.get("family") == "netdev" and any("reject" in s for s in o.get("expr", [])):
            raise ConfigError(path, 0, 0, f"rule netdev {o['table']} {o['chain']}: flowpath does not send "
                              "a netdev chain's reject")  # fmt: skip

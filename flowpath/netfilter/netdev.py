"""The netdev family's hooks: a frame through a device's base chains, at ingress and at egress.

Linux: include/linux/netfilter_netdev.h › nf_hook_ingress (run by net/core/dev.c ›
__netif_receive_skb_core after skb_vlan_untag and before the frame is handed to its protocol, once per
device the frame climbs) and nf_hook_egress (run by __dev_queue_xmit before the qdisc, once per device
the frame goes down: a VLAN device, then its real device), net/netfilter/nft_chain_filter.c ›
nft_do_chain_netdev, and net/netfilter/core.c › nf_hook_slow (chains in priority order, the first drop
ends the hook). flowpath.inet.nf_dup_netdev runs these where the stack meets them, and carries out the
transmits of fwd and dup (nft_fwd_netdev.py): egress chains see the classic path's frames, the
flowtable's hits (after its rewrite) and the frames the gateway originates (ARP, neighbour discovery,
ICMP errors); the compiled classic lane steps aside for a ruleset with netdev chains.

What flowpath does not run is refused when the ruleset is loaded (netdev_check): `reject` in a netdev
chain (nothing here sends it), an ingress chain that would run before a flowtable of the same device
(the fast path forwards the flowtable's packets without it; one at a higher priority runs after the
flowtable, as in Linux, and sees what the flowtable does not take), and, as nft does, a fwd or dup to a
device that does not exist.
"""

from __future__ import annotations

from typing import Container

from flowpath.config.nft.ir import Ruleset, json_names
from flowpath.netfilter import constants as C
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


def nf_hook_netdev(nft: NftRuntime, hooknum: int, skb: SkBuff, link) -> tuple[int, Reason | None, list]:
    """The base chains of `hooknum` on device `link`, in priority order (nf_hook_slow): NF_ACCEPT when
    the frame goes on, NF_DROP with its Reason, NF_STOLEN when a `fwd` took it; and the transmits the
    chains' fwd and dup asked for, in order (flowpath.inet.nf_dup_netdev carries them out). At
    ingress the device is the input one, at egress the output one (nf_hook_egress: no input device)."""
    chains = nft.base_chains(C.NFPROTO_NETDEV, hooknum, link.name)
    if not chains:
        return C.NF_ACCEPT, None, []
    if hooknum == C.NF_NETDEV_INGRESS:
        dev = {"iifname": link.name, "iif": link.ifindex}
    else:
        dev = {"oifname": link.name, "oif": link.ifindex}
    pkt = NftPktinfo(skb=skb, hooknum=hooknum, nfproto=C.NFPROTO_NETDEV, **dev)
    for chain in chains:
        v = nft_do_chain(chain, pkt)
        if v == C.NF_DROP:
            return v, pkt.reason or Reason.NETFILTER_DROP, pkt.xmit or []
        if v == C.NF_STOLEN:
            return v, None, pkt.xmit or []
    return C.NF_ACCEPT, None, pkt.xmit or []


def has_netdev_chains(nft: NftRuntime | None) -> bool:
    """Has the ruleset an ingress or egress chain (the compiled classic lane runs neither)?"""
    return nft is not None and any(nft.has_hook(C.NFPROTO_NETDEV, h) for h in (C.NF_NETDEV_INGRESS, C.NF_NETDEV_EGRESS))


def netdev_check(rs: Ruleset, known: Container[str]) -> None:
    """Raise ConfigError, at the chain or rule, for a netdev chain the datapath cannot run as Linux
    would (module docstring), and for a fwd or dup to a device not in `known` (the network's link
    names): nft resolves the name to an ifindex when it loads the rule (src/datatype.c ›
    ifindex_type_parse: "Interface does not exist")."""
    for t in rs.tables:
        if t.family != "netdev":
            continue
        for c in t.chains.values():
            where = f"chain netdev {t.name} {c.name}"
            for r in c.rules:
                if any(name not in known for x in r.expr for name in _fwd_dup_devices(x)):
                    raise rs.error(r.loc, "Interface does not exist")
            if c.hook != "ingress":
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


def _fwd_dup_devices(stmt: object) -> list[str]:
    """The device names a fwd or dup statement may send to (a constant, or an anonymous map's values)."""
    if not isinstance(stmt, dict) or not ({"fwd", "dup"} & stmt.keys()):
        return []
    kind, arg = next(iter(stmt.items()))
    dev = arg.get("dev") if kind == "fwd" else arg.get("addr")
    if isinstance(dev, str):
        return [dev]
    data = dev.get("map", {}).get("data") if isinstance(dev, dict) else None
    if isinstance(data, dict) and isinstance(data.get("set"), list):
        return [e[1] for e in data["set"] if isinstance(e, list) and len(e) == 2 and isinstance(e[1], str)]
    return []

"""struct net: one network namespace's state, passed down to every classic-path step as `net`.

Linux: include/net/net_namespace.h › struct net (netns_ipv4: FIB, neighbours, sysctls; netns_nftables;
netns_ct: conntrack; netns_xfrm: SAD/SPD). What is per CPU (batches, scratch, counters, the output of
a poll) is the Worker's (flowpath.datapath), one layer up: nothing below it imports the Worker.
"""

from __future__ import annotations

import copy
import json
from typing import NamedTuple

from flowpath.errors import ConfigError, UsageError
from flowpath.flowtable import NF_FLOWTABLE_COUNTER, Flowtable
from flowpath.inet.icmp import IcmpSender
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.hooks import Netfilter
from flowpath.netfilter.netdev import netdev_check
from flowpath.netfilter.nf_defrag import NfDefrag
from flowpath.netfilter.nf_tables import NftRuntime

NSEC_PER_SEC = 1_000_000_000
SYSCTL_DEFAULTS = {  # timeouts (seconds) and sizes, as Linux
    "net.netfilter.nf_flowtable_tcp_timeout": 30,
    "net.netfilter.nf_flowtable_udp_timeout": 30,
    "net.ipv4.ipfrag_time": 30,
    "net.netfilter.nf_conntrack_frag6_timeout": 60,
    "net.core.xfrm_acq_expires": 30,  # a larval state's life: one ACQUIRE per template and CPU in it
    # conntrack's limit in entries (nf_conntrack_core.c › nf_conntrack_max); Linux sizes it from the
    # memory at boot, 262144 on a 64-bit machine with several GiB
    "net.netfilter.nf_conntrack_max": 262144,
}


class NftBuild(NamedTuple):
    """What Net.nft_build makes of a ruleset: nft (NftRuntime or None), uses_rt, nf (Netfilter),
    flowtables (name -> (Flowtable, ifindex set)), rs_json (the ruleset as nft JSON: each worker's
    view builds its own flowtables from it)."""

    nft: object
    uses_rt: bool
    nf: Netfilter
    flowtables: dict
    rs_json: dict


def _at_rule(ruleset, e: ConfigError) -> ConfigError:
    """A rule the runtime cannot build, reported at the rule in the ruleset's file (its line and column)."""
    family, table, chain, handle = getattr(e, "rule", (None,) * 4)
    t = ruleset.table(family, table) if family is not None else None
    c = t.chains.get(chain) if t is not None else None
    rule = next((r for r in c.rules if r.handle == handle), None) if c is not None else None
    if rule is None or rule.loc is None:
        return e
    return ruleset.error(rule.loc, e.msg)


class Net:
    """Links, addresses, FIB and neighbours (`dev`, a flowpath.net Network, whose per-packet lookups
    are exposed here by name), the netfilter hooks, the reassembly queues before conntrack (`defrag`)
    and conntrack, the xfrm SAD/SPD, the ICMP sender's state and the nft flowtables.

    dev        flowpath.net Network, from the network file
    ruleset    flowpath.config.nft Ruleset or None
    flowtable  False: no flowtables are built (`replay --no-flowtable`: every packet takes the classic path)
               now or by a later nft_build
    sysctl     overrides of SYSCTL_DEFAULTS (seconds, or entries for nf_conntrack_max)
    conntrack  the table to keep (a reload: Worker.reload); a new one when None
    """

    def __init__(self, dev, ruleset=None, *, flowtable: bool = True, sysctl: dict[str, int] | None = None,
                 conntrack: Conntrack | None = None):  # fmt: skip
        self.dev = dev
        # the lookups the classic path makes per packet, bound once
        self.links = dev.links
        self.fib_lookup, self.neigh_lookup, self.is_local = dev.fib_lookup, dev.neigh_lookup, dev.is_local
        # the compiled classic path's views of them (flowpath.net.fib_table, neigh_table, link)
        self.fib_views, self.neigh_views, self.link_views = dev.fib_views, dev.neigh_views, dev.link_views
        self.neigh = (
            dev.neigh
        )  # arp_tbl and nd_tbl: resolution's entries and queues (flowpath.inet.neigh_output)
        self.addrs, self.inet_select_addr, self.link_by_name = (
            dev.addrs,
            dev.inet_select_addr,
            dev.link_by_name,
        )
        self.xfrm = getattr(dev, "xfrm", None)  # SAD + SPD from `xfrm ...` lines of the network file
        self.sysctl = dict(SYSCTL_DEFAULTS)
        for k, v in (sysctl or {}).items():
            if k not in SYSCTL_DEFAULTS:
                raise UsageError(f"unknown sysctl {k!r}; known: {', '.join(SYSCTL_DEFAULTS)}")
            self.sysctl[k] = int(v)
        if self.xfrm is not None:
            self.xfrm.sysctl_acq_expires = self.sysctl["net.core.xfrm_acq_expires"]
        self.flowtable = flowtable
        self.cpu = 0  # the worker (CPU) this view of the namespace runs on (for_cpu)
        self.conntrack = conntrack if conntrack is not None else Conntrack()  # kept across a reload
        self.conntrack.max_entries = self.sysctl["net.netfilter.nf_conntrack_max"]
        self.defrag = NfDefrag(self.sysctl["net.ipv4.ipfrag_time"] * NSEC_PER_SEC,
                               self.sysctl["net.netfilter.nf_conntrack_frag6_timeout"] * NSEC_PER_SEC)  # fmt: skip
        self.icmp = IcmpSender()
        self.nft_swap(self.nft_build(ruleset))
        # vlan_find_dev's key: the lower device, the TPID and the VID (a QinQ VLAN's lower device is one)
        self.vlans = {(lk.parent, lk.vlan_proto, lk.vlan_id): lk for lk in dev.links.values() if lk.kind == "vlan"}

    def nft_build(self, ruleset) -> NftBuild:
        """Everything a ruleset makes of this namespace, built beside the one in use: the nft runtime,
        the hooks over it (conntrack and defrag stay this namespace's) and empty flowtables. Raises
        ConfigError or UsageError (a flowtable device the network file lacks) and changes nothing.

        Linux: nf_tables_api.c builds a transaction's objects before nf_tables_commit makes them live.
        """
        if ruleset is not None and self.flowtable:  # a device the network file lacks: file:line:col
            ruleset.check_flowtable_devices({lk.name for lk in self.dev.links.values()})
        rs_json = ruleset.to_json() if ruleset is not None else {"nftables": []}
        if ruleset is not None:
            netdev_check(ruleset, {lk.name for lk in self.dev.links.values()})
        try:
            nft = NftRuntime.from_json(rs_json) if ruleset is not None else None
        except ConfigError as e:
            raise _at_rule(ruleset, e) from None
        uses_rt = '{"rt": ' in json.dumps(rs_json)  # only then does FORWARD need the route back's MTU
        nf = Netfilter(nft, self.conntrack, self._masq_addr, self.defrag)
        flowtables = self._flowtables(rs_json, nft) if self.flowtable else {}
        return NftBuild(nft, uses_rt, nf, flowtables, rs_json)

    def nft_swap(self, built: NftBuild, own_flowtables: bool = False) -> None:
        """Make a built ruleset the one the classic path runs (nf_tables_commit); own_flowtables: a
        worker's view (for_cpu) builds its own from it instead of taking the built ones."""
        self.nft, self.uses_rt, self.nf, self.flowtables, self.rs_json = built
        if own_flowtables:
            self.flowtables = self._flowtables(self.rs_json, self.nft) if self.flowtable else {}

    def for_cpu(self, cpu: int) -> Net:
        """Worker cpu's view of this namespace: everything shared (links, FIB, neighbours, conntrack,
        reassembly, the SAD/SPD, the nft runtime) but its own, empty flowtables, built from the same
        ruleset. Linux shares one flowtable between CPUs under RCU; here each worker owns the entries
        of the connections steered to it (flowpath/workers.py), so its compiled fast path never meets
        another writer."""
        view = copy.copy(self)
        view.cpu = cpu
        view.flowtables = view._flowtables(view.rs_json, view.nft) if self.flowtable else {}
        return view

    def ifname(self, ifindex: int) -> str:
        link = self.links.get(ifindex)
        return link.name if link is not None else ""

    def _masq_addr(self, nfproto: int, ifindex: int, daddr: int) -> int | None:
        return self.inet_select_addr(ifindex, 6 if nfproto == C.NFPROTO_IPV6 else 4, daddr)

    def _flowtables(self, rs_json: dict, nft) -> dict:
        """One Flowtable per nft flowtable: name -> (Flowtable, ifindex set of its devices)."""
        out = {}
        dormant = nft.dormant if nft is not None else set()
        for obj in rs_json.get("nftables", []):
            ft = obj.get("flowtable")
            if ft is None or ft["name"] in out or (ft["family"], ft["table"]) in dormant:
                continue
            flags = ft.get("flags", [])
            flags = [flags] if isinstance(flags, str) else flags
            devs = ft.get("dev", [])
            devs = [devs] if isinstance(devs, str) else devs
            ifindexes = set()
            for name in devs:
                try:
                    ifindexes.add(self.link_by_name(name).ifindex)
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
            table.ct_resolve = self.conntrack.nf_ct_get_entry  # the entries of flows the lane offloaded
            out[ft["name"]] = (table, ifindexes)
        return out

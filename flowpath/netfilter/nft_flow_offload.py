"""Offloading a flow once `flow add @ft` accepted it, and handing it back to conntrack at teardown.

Linux: net/netfilter/nft_flow_offload.c › nft_flow_offload_eval, nft_flow_route (both directions
routed when the flow is added); net/netfilter/nf_flow_table_core.c › flow_offload_add (conntrack pinned
for a day, TCP made liberal: flowpath/netfilter/nf_flow_table_ct.py, the compiled classic lane's too),
flow_offload_fixup_ct (state and timeout given back on teardown).
The rule statement itself (flowpath.netfilter.nft_stmt) checks the conntrack conditions; this module
does what nft_flow_offload_eval does after them. nf_flow_table_netevent keeps the entries' cached next
hop addresses in step with the neighbour table (see flowpath.flowtable.core: we cache what Linux's
FLOW_OFFLOAD_XMIT_NEIGH looks up per packet).
"""

from __future__ import annotations

import ipaddress

from flowpath.flowtable import (
    F_DNAT,
    F_SNAT,
    FLOW_OFFLOAD_XMIT_XFRM,
    FlowRoute,
    Flowtable,
    FlowTuple,
)
from flowpath.flowtable.key import encap_xfrm
from flowpath.net.fib import RouteType
from flowpath.net.neighbour import NETEVENT_NEIGH_UPDATE, NUD_VALID, Neighbour
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack import ctinfo2dir
from flowpath.netfilter.conntrack_tuple import nf_ct_tuple_cpu
from flowpath.netfilter.nf_flow_table_ct import flow_offload_ct_pin, flow_offload_fixup_row
from flowpath.packet import layout as L
from flowpath.packet.skb import SkBuff
from flowpath.xfrm.esp import xfrm_state_mtu
from flowpath.xfrm.policy import (
    XFRM_POLICY_BLOCK,
    XFRM_POLICY_FWD,
    XFRM_POLICY_OUT,
    xfrm_lookup,
    xfrm_policy_allows,
    xfrm_state_ok,
)
from flowpath.xfrm.state import AF_INET, AF_INET6, xfrm_state_ctx, xfrm_state_find

_L3 = {C.NFPROTO_IPV4: 4, C.NFPROTO_IPV6: 6, 4: 4, 6: 6}
# nft_flow_offload_eval's results besides a flow id (>= 0) and Flowtable.flow_offload_add's
# FLOW_ADD_FULL / FLOW_ADD_EXISTS: why the connection stays on the classic path
FLOW_OFFLOAD_CT_BUSY = -3  # no conntrack entry, or it is offloaded already (IPS_OFFLOAD set)
FLOW_OFFLOAD_NO_ROUTE = -4  # a direction has no unicast route or no resolved neighbour
FLOW_OFFLOAD_VLAN = -5  # an IPsec direction leaves or arrives through a VLAN device
FLOW_OFFLOAD_XFRM = -6  # the IPsec policies or SAs cannot be cached (nft_flow_xfrm said no)
FLOW_OFFLOAD_STEER = -7  # several workers: a direction steers to another worker than this one


def nft_flow_route(net, ct, d: int) -> tuple[FlowRoute, int, tuple, tuple | None] | None:
    """Route direction d: towards the other direction's source (its pre-NAT source is where replies
    go). Returns (route, oif, VLAN tags, tunnel pair) as _neigh_route, or None when the route or the
    neighbour is missing."""
    t_other = ct.tuplehash[1 - d]
    family = _L3[t_other.l3proto]
    return _neigh_route(net, family, t_other.src, None)


def dev_fill_forward_path(net, ifindex: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The physical device under ifindex and the VLAN tags its frames carry there, outer first:
    (ifindex, ((proto, tci), ...)).

    Linux: net/core/dev.c › dev_fill_forward_path, each VLAN device's vlan_dev_fill_forward_path
    adding DEV_PATH_VLAN {id, proto} until the real device (nft_dev_path_info fills encap[] from
    them). A VLAN's priority bits are not part of the id (tci = VID).
    """
    tags = []
    link = net.links[ifindex]
    while link.kind == "vlan":
        tags.append((getattr(link, "vlan_proto", L.ETH_P_8021Q), link.vlan_id))
        link = net.links[link.parent]
    return link.ifindex, tuple(reversed(tags))


def _neigh_route(net, family: int, daddr: int, x) -> tuple[FlowRoute, int, tuple, tuple | None] | None:
    """The cached route to daddr: oif, MTU and MACs of the next hop (DIRECT xmit), the VLAN tags of the
    out device and, through an ipip device, the tunnel's outer pair as the reverse tuple sees it
    (remote, local): the reverse direction's encap[] and tun; with an SA x, the outer route to the
    SA's peer, its xfrm_state_mtu and XMIT_XFRM. None when something cannot be cached."""
    fib = net.fib_lookup(family, daddr)
    if fib is None or fib.type != RouteType.UNICAST:
        return None
    dev = net.links[fib.oif]
    if dev.tunnel is not None:
        if x is not None or family != 4:
            return None  # one level: no ESP around the tunnel; ipip carries IPv4 only
        return _tunnel_route(net, fib, dev)
    nexthop = fib.gateway if fib.gateway is not None else daddr
    mac = net.neigh_lookup(family, nexthop, fib.oif)
    if mac is None:
        return None  # Deviation: only DIRECT xmit (cached MACs); Linux may use XMIT_NEIGH here
    phys, tags = dev_fill_forward_path(net, fib.oif)
    link = net.links[phys]
    neigh = (family, fib.oif, int(nexthop))  # the neighbour table's key: its events find the entry
    if x is None:
        route = FlowRoute(oifidx=phys, mtu=fib.mtu, h_source=link.address, h_dest=mac, neigh=neigh)
        return route, fib.oif, tags, None
    return FlowRoute(oifidx=phys, mtu=xfrm_state_mtu(x, fib.mtu), h_source=link.address, h_dest=mac,
                     xmit_type=FLOW_OFFLOAD_XMIT_XFRM, xfrm=x.index, neigh=neigh), fib.oif, tags, None  # fmt: skip


def _tunnel_route(net, fib, dev) -> tuple[FlowRoute, int, tuple, tuple] | None:
    """The route of a direction that leaves through ipip device dev (inner route fib): out through the
    physical device of the outer route to the tunnel's remote, to that route's next hop, with the
    tunnel's parms for the outer header (flowpath/inet/ip_tunnel.py › ip_tunnel_xmit builds the same).

    Linux: ipip.c › ipip_fill_forward_path (DEV_PATH_TUN: ip_route_output to the remote, then the path
    continues on its device), nft_dev_forward_path. mtu: the inner route's, or less when the tunnel's
    (tnl_update_pmtu: with pmtudisc the outer route's minus 20, else the device's) is: a larger packet
    takes the classic path, which fragments or answers it.
    """
    t = dev.tunnel
    if t.family != 4 or 4 not in t.protocols or not t.remote:
        # Linux 6.19 offloads IPIP only (ip6tnl has no ndo_fill_forward_path): ip6tnl flows stay on the
        # classic path; an NBMA tunnel has no fixed remote
        return None
    rt = net.fib_lookup(4, t.remote)
    if rt is None or rt.type != RouteType.UNICAST or net.links[rt.oif].tunnel is not None:
        return None
    nexthop = rt.gateway if rt.gateway is not None else t.remote
    mac = net.neigh_lookup(4, nexthop, rt.oif)
    local = t.local or rt.prefsrc
    if mac is None or not local:
        return None
    phys, tags = dev_fill_forward_path(net, rt.oif)
    mtu = min(fib.mtu, rt.mtu - t.hlen if t.pmtudisc else dev.mtu)
    route = FlowRoute(oifidx=phys, mtu=mtu, h_source=net.links[phys].address, h_dest=mac, neigh=(4, rt.oif, int(nexthop)),
                      tun_ttl=t.ttl, tun_tos=t.tos, tun_pmtudisc=t.pmtudisc)  # fmt: skip
    return route, fib.oif, tags, (int(t.remote), int(local))


def nft_flow_xfrm(net, ct, d: int, sp: list | None):
    """The IPsec part of direction d's offload: (outbound SA or None, encap word), or None when the
    flow must stay on the classic path.

    The selector is direction d's packet between PREROUTING and POSTROUTING (after DNAT, before SNAT),
    where ip_forward checks the fwd policy and xfrm4_route_forward looks up the out policy. encap: 0
    for plaintext, SA index + 1 when d arrives through that SA (sp: the secpath of the packet that
    triggered the offload when it is of direction d; else the SA a fwd policy template names).
    Linux: nft_flow_offload.c › nft_xmit_type (dst_xfrm -> FLOW_OFFLOAD_XMIT_XFRM); the input side has
    no mainline counterpart (flowpath/flowtable/xfrm.py).
    """
    xfrm = net.xfrm
    if xfrm is None:
        return None, 0
    t, t_other = ct.tuplehash[d], ct.tuplehash[1 - d]
    v6 = _L3[t.l3proto] == 6
    addr = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    sel = (AF_INET6 if v6 else AF_INET, addr(int(t.src)), addr(int(t_other.src)), t.l4proto, t.sport, t_other.sport)
    pol = xfrm_lookup(xfrm, *sel, XFRM_POLICY_FWD, count=False)
    if sp is None:  # the other direction: the SA its fwd policy's template names, if any
        cands = [[]] + [[x] for x in xfrm.states if pol is not None and pol.tmpls and not xfrm.tab.dead[x.index]
                        and xfrm_state_ok(pol.tmpls[0], x)]  # fmt: skip
        sp = next((c for c in cands if xfrm_policy_allows(pol, c)), None)
        if sp is None:
            return None
    if len(sp) > 1 or not xfrm_policy_allows(pol, sp):
        return None  # nested SAs stay on the classic path
    if sp and not xfrm_state_ctx(xfrm, sp[0])[1]:
        return None  # no compiled ESP (libcrypto not loadable): the classic path decrypts
    encap = encap_xfrm(sp[0].index) if sp else 0
    out = xfrm_lookup(xfrm, *sel, XFRM_POLICY_OUT, count=False)
    if out is None:
        return None, encap
    if out.action == XFRM_POLICY_BLOCK or len(out.tmpls) != 1:
        return None
    # the SA this CPU's classic path encrypts with (per-CPU SAs: its own); a query, no ACQUIRE
    x = xfrm_state_find(xfrm, out.tmpls[0], pol=out, cpu=net.cpu, acquire=False)
    if x is None or not xfrm_state_ctx(xfrm, x)[0]:
        return None
    return x, encap


def nf_flow_steers_here(net, ct) -> bool:
    """Do both directions of ct steer to this worker (net.cpu)? Its flowtable entry is only hit by
    the packets that reach this worker (each worker owns its flowtables: flowpath/netns.py › for_cpu),
    so a connection whose directions part (a DNAT without a port choice, a reassembled datagram's
    connection) stays on the classic path, which every worker shares. No Linux counterpart."""
    n = ct.net.nr_cpus
    if n <= 1:
        return True
    return all(nf_ct_tuple_cpu(ct.tuplehash[d], n) == net.cpu for d in (C.IP_CT_DIR_ORIGINAL, C.IP_CT_DIR_REPLY))


def nft_flow_offload_eval(net, skb: SkBuff, ft: Flowtable) -> int:
    """Add both directions of skb's connection to `ft`; return the flow id, or a negative result
    (FLOW_OFFLOAD_*, FLOW_ADD_*)."""
    ct = skb.ct
    if ct is None or ct.status & C.IPS_OFFLOAD:  # test_and_set_bit(IPS_OFFLOAD_BIT)
        return FLOW_OFFLOAD_CT_BUSY
    if not nf_flow_steers_here(net, ct):
        return FLOW_OFFLOAD_STEER
    sp, d_skb = skb.meta.get("sp", []), ctinfo2dir(skb.ctinfo)
    ipsec = [
        nft_flow_xfrm(net, ct, d, sp if d == d_skb else None) for d in (C.IP_CT_DIR_ORIGINAL, C.IP_CT_DIR_REPLY)
    ]
    if None in ipsec:
        return FLOW_OFFLOAD_XFRM
    routes = []
    for d, (x, _) in enumerate(ipsec):
        if x is None:
            routes.append(nft_flow_route(net, ct, d))
        else:
            routes.append(_neigh_route(net, 6 if x.daddr.version == 6 else 4, int(x.daddr), x))
    if None in routes:
        return FLOW_OFFLOAD_NO_ROUTE
    if any(r[2] and x is not None for (x, _), r in zip(ipsec, routes, strict=True)):
        return FLOW_OFFLOAD_VLAN  # Deviation: ESP input and output take untagged frames only
    if any(r[3] is not None and enc for (_, enc), r in zip(ipsec, reversed(routes), strict=True)):
        return FLOW_OFFLOAD_XFRM  # one level: a direction decrypted by ESP input does not come out of IPIP
    tuples = []
    for d in (C.IP_CT_DIR_ORIGINAL, C.IP_CT_DIR_REPLY):
        t = ct.tuplehash[d]
        # a direction enters where the other one leaves (symmetric routing): on that physical device,
        # with that VLAN device's tags and inside that tunnel's outer header (nft_flow_route's reverse
        # route fills the tuple's encap[] and tun)
        r_other = routes[1 - d]
        tuples.append(FlowTuple(r_other[0].oifidx, _L3[t.l3proto], t.l4proto, t.src, t.dst, t.sport, t.dport,
                                ipsec[d][1], vlan=r_other[2], tun=r_other[3]))  # fmt: skip
    nat = (F_SNAT if ct.status & C.IPS_SRC_NAT else 0) | (F_DNAT if ct.status & C.IPS_DST_NAT else 0)
    tab = ct.net
    fid = ft.flow_offload_add(tuples[0], tuples[1], routes[0][0], routes[1][0], nat, ct, skb.ts_ns,
                              (ct.row, int(tab.seq[ct.row])))  # fmt: skip
    if fid < 0:
        return fid
    flow_offload_ct_pin(tab.hot, tab.key, ct.row, skb.ts_ns)
    return fid


def nf_flow_table_netevent(ft: Flowtable, event: int, n: Neighbour) -> tuple[int, list[int]]:
    """A netevent notifier's work for one flowtable: n changed. Valid and alive (NUD_VALID, not dead:
    mlx5e_rep_neigh_update's neigh_connected), its address is rewritten into the entries through it;
    otherwise (FAILED, deleted, its link down) their flows are torn down, so their next packets take
    the classic path and resolve n again. Returns (entries rewritten, flow ids torn down now); the
    conntrack fixup of those flows is the caller's (flow_offload_teardown's)."""
    if event != NETEVENT_NEIGH_UPDATE:
        return 0, []
    neigh = (n.family, n.ifindex, int(n.primary_key))
    if n.nud_state & NUD_VALID and not n.dead:
        return ft.flow_offload_neigh_update(neigh, n.ha), []
    return 0, ft.flow_offload_teardown_neigh(neigh)


def flow_offload_fixup_ct(ct, flags: int, now_ns: int, expired: bool, offload_timeout_ns: int) -> None:
    """Give a torn-down flow back to conntrack (nf_flow_table_ct.py › flow_offload_fixup_row, which
    the compiled GC runs on the rows): TCP state (CLOSE after a FIN/RST), liberal window restarted,
    and a timeout that only shortens."""
    flow_offload_fixup_row(ct.hot_row, ct.l4proto, flags, now_ns, expired, offload_timeout_ns, ct.net.tcp_params)

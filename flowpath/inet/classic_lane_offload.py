"""`flow add @ft` in the compiled classic lane: a transmitted packet's connection offloaded without
the Python path.

Linux: net/netfilter/nft_flow_offload.c › nft_flow_offload_eval and nft_flow_route (each direction
routed towards the other direction's source), nf_flow_table_core.c › flow_offload_alloc /
flow_offload_route_init / flow_offload_add. The Python path's version is
flowpath/netfilter/nft_flow_offload.py; the lane does the common case the same way and leaves the
rest to it, the packet punted (PUNT_OFFLOAD) with nothing changed: several workers, a direction
routed through a tunnel, a VLAN or a device that is down, a next hop without a valid neighbour, a
table at its max_entries (classic_lane_views.py makes room for a batch's flows before it runs). The
lane runs without IPsec (its policies and SAs are the Python path's), so no direction goes through
an SA here.

The new rows are built from the conntrack entry's key rows, which are in the flowtable's key layout
(zone 0 in K_IIFIDX): each direction's key is its conntrack tuple arriving where the other direction
leaves, and its NAT values are the other direction's tuple inverted (nf_flow_snat_ip/dnat_ip).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.flow_add import (
    FLOW_ADD_EXISTS,
    FP_TIMEOUT_TCP,
    FP_TIMEOUT_UDP,
    FT_NEIGH_STALE,
    flow_offload_add_rows,
)
from flowpath.flowtable.key import (
    F_DNAT,
    F_SNAT,
    FLOW_OFFLOAD_XMIT_DIRECT,
    K_DADDR,
    K_IIFIDX,
    K_PORTS,
    K_PROTO,
    K_SADDR,
    V_FLAGS,
    V_H_DEST,
    V_H_SOURCE,
    V_NAT_ADDRS,
    V_NAT_PORTS,
    V_OUT,
    V_TIMEOUT,
    flags_word,
    nat_addrs_word,
    out_word,
    ports_dst,
    ports_src,
    proto_l4,
)
from flowpath.net.fib import RTN_UNICAST
from flowpath.net.fib_table import (
    RT_FLAGS,
    RT_GW,
    RT_OIF,
    RT_TYPE,
    RTF_GATEWAY,
    fib_lookup4,
    fib_lookup6,
    fib_result_mtu,
)
from flowpath.net.link import LK_ADDR, link_lane_ok
from flowpath.net.neigh_table import NB_LLADDR, NB_STATE, neigh_lookup
from flowpath.net.neighbour import NUD_VALID
from flowpath.netfilter import constants as C
from flowpath.netfilter.ct_layout import CT_STATUS
from flowpath.netfilter.nf_flow_table_ct import flow_offload_ct_pin
from flowpath.packet import layout as L

OFFLOAD_DONE, OFFLOAD_EXISTS, OFFLOAD_PUNT = 0, 1, 2
_FLOW_WORDS = K_PORTS + 1  # the key words a conntrack tuple fills; the encapsulation words stay 0


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _addr_bytes(key, row, off, out, o):
    """The address key[row, off : off + 4] (wire-order words) as 16 bytes at out[o:]."""
    for w in range(4):
        v = np.int64(key[row, off + w])
        for b in range(4):
            out[o + 4 * w + b] = (v >> (24 - 8 * b)) & 0xFF


@njit(cache=True, nogil=True, _nrt=False)  # not inlined: kept out of the established path
def lane_flow_offload(r, l3, now_ns, ct, rtv, fo, this_dir, this_rt, this_n):
    """nft_flow_offload_eval for conntrack row r's connection (l3 4|6), whose packet (direction this_dir,
    routed by route row this_rt to neighbour row this_n) is transmitted now: OFFLOAD_DONE (both
    directions in the flowtable, the entry pinned), OFFLOAD_EXISTS (a tuple is offloaded already:
    nothing to do, as the Python path), or OFFLOAD_PUNT with nothing changed. fo: (fa, fp, ent) as
    flow_add.py takes them. As nft_flow_route, the packet's own direction keeps its route (this_dst)
    and only the other one is looked up."""
    hot, key, rowv = ct[1], ct[2], ct[6]
    fv, lk, nb = rtv[0], rtv[1], rtv[2][2]
    fa, fp, ent = fo
    ek, ev, e6, nh, xs, cref = ent
    rt = fv[0][3] if l3 == 4 else fv[1][5]
    for d in range(2):
        o = 2 * r + 1 - d  # nft_flow_route: towards the other direction's source
        if d == this_dir:
            x = this_rt
        elif l3 == 4:
            x = fib_lookup4(fv, key[o, K_SADDR])
        else:
            x = fib_lookup6(fv, key[o, K_SADDR], key[o, K_SADDR + 1], key[o, K_SADDR + 2], key[o, K_SADDR + 3])
        if x < 0 or rt[x, RT_TYPE] != RTN_UNICAST:
            return OFFLOAD_PUNT
        oif = rt[x, RT_OIF]
        if oif >= lk.shape[0] or not link_lane_ok(lk, oif):
            return OFFLOAD_PUNT  # a tunnel, a VLAN (dev_fill_forward_path), or down
        mtu = fib_result_mtu(rt, x, lk)
        if mtu > 0xFFFF:
            return OFFLOAD_PUNT
        nh[d, 0], nh[d, 1] = l3, oif
        for w in range(4):
            if rt[x, RT_FLAGS] & RTF_GATEWAY:
                nh[d, 2 + w] = rt[x, RT_GW + w] if l3 == 6 or w == 0 else 0
            else:
                nh[d, 2 + w] = key[o, K_SADDR + w]
        n = this_n if d == this_dir else neigh_lookup(rtv[2], l3, oif, nh[d, 2], nh[d, 3], nh[d, 4], nh[d, 5])
        if n < 0 or not nb[n, NB_STATE] & NUD_VALID:
            return OFFLOAD_PUNT  # Deviation as the Python path's: only DIRECT xmit, a resolved neighbour
        e = 2 * r + d
        for j in range(ek.shape[1]):
            ek[d, j] = key[e, j] if j < _FLOW_WORDS else 0
        v = ev[d]
        for j in range(v.shape[0]):
            v[j] = 0
        for j in range(e6.shape[1]):
            e6[d, j] = 0
        tcp = proto_l4(key[e, K_PROTO]) == L.IPPROTO_TCP
        v[V_TIMEOUT] = now_ns + (fp[FP_TIMEOUT_TCP] if tcp else fp[FP_TIMEOUT_UDP])
        v[V_H_DEST], v[V_H_SOURCE] = nb[n, NB_LLADDR], lk[oif, LK_ADDR]
        v[V_OUT] = out_word(np.int64(oif), mtu)
        ports = np.int64(key[o, K_PORTS])
        v[V_NAT_PORTS] = (ports_dst(ports) << 16) | ports_src(ports)
        if l3 == 4:
            v[V_NAT_ADDRS] = nat_addrs_word(key[o, K_DADDR], key[o, K_SADDR])
        else:
            _addr_bytes(key, o, K_DADDR, e6[d], 0)
            _addr_bytes(key, o, K_SADDR, e6[d], 16)
        xs[d] = -1
    status = hot[r, CT_STATUS]
    nat = (F_SNAT if status & C.IPS_SRC_NAT else 0) | (F_DNAT if status & C.IPS_DST_NAT else 0)
    for d in range(2):
        ek[d, K_IIFIDX] = nh[1 - d, 1]  # a direction arrives where the other one leaves
        ek[d, V_FLAGS] = flags_word(nat, d, FLOW_OFFLOAD_XMIT_DIRECT, False, 0, 1, False)
    cref[0], cref[1] = r, rowv[1][r]
    fid = flow_offload_add_rows(fa, fp, ent)
    if fid == FLOW_ADD_EXISTS:
        return OFFLOAD_EXISTS
    if fid < 0:
        return OFFLOAD_PUNT
    flow_offload_ct_pin(hot, key, r, now_ns)
    fa[8][FT_NEIGH_STALE] = 1  # the owner counts the entries' neighbours again when it needs them
    return OFFLOAD_DONE

"""A new connection in the compiled classic lane: its entry (with early_drop's eviction at the limit),
its NAT binding and its confirmation. Compiled apart from the established path's kernel (not
inlined), so that it does not weigh on it.

Linux: net/netfilter/nf_conntrack_core.c › init_conntrack, early_drop, __nf_conntrack_confirm;
nf_nat_core.c › nf_nat_inet_fn's binding (nf_nat_setup_info over flowpath/netfilter/nf_nat_core.py).
The Python path's counterparts are flowpath/netfilter/conntrack.py and nat.py; the row functions
they share are nf_conntrack_table.py's and nf_nat_core.py's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.key import K_DADDR, K_ENCAP, K_PORTS, K_SADDR, ports_dst, ports_src, record_entry
from flowpath.inet.classic_lane_nft import lane_chain
from flowpath.inet.classic_lane_state import (
    CFG_EVICT_OK,
    CFG_EVICT_SLOTS,
    CFG_MAX_ENTRIES,
    CNT_EARLY_DROP,
    CNT_YIELD,
    CNT_ZOMBIES,
    DROP_BASE,
    LANE_OK,
    LANE_YIELD,
    PS_INSERT,
    PS_L3,
    PS_L4,
    PS_NEW,
    PS_NOW,
    PS_NR_CPUS,
    PS_OIF,
    YIELD_INDEX_PROBE,
    YIELD_INDEX_ROOM,
    YIELD_ROWS,
    lane_fill,
)
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack_proto_icmp import (
    icmp_invert_type,
)
from flowpath.netfilter.ct_layout import CT_STATUS, CT_TIMEOUT
from flowpath.netfilter.nf_conntrack_table import (
    NF_CT_NOT_FOUND,
    nf_ct_confirm_check,
    nf_ct_early_drop_slot,
    nf_ct_index_has_room,
    nf_ct_row_alloc,
    nf_ct_row_confirm,
    nf_ct_row_free,
    nf_ct_row_unlink,
)
from flowpath.netfilter.nf_nat_core import (
    NAT_NO_PORTS,
    NR_EXPIRED,
    NR_FLAGS,
    NR_MAX,
    NR_MIN,
    NR_PMAX,
    NR_PMIN,
    nf_nat_bysource_add,
    nf_nat_bysource_del,
    nf_nat_setup_row,
)
from flowpath.netfilter.nft_vm import (
    NAT_DNAT,
    NAT_MASQUERADE,
    NAT_SNAT,
    OUT_NAT,
    OUT_NAT_FLAGS,
    OUT_NAT_MANIP,
    OUT_NAT_MAXADDR,
    OUT_NAT_MAXPROTO,
    OUT_NAT_MINADDR,
    OUT_NAT_MINPROTO,
)
from flowpath.packet import layout as L
from flowpath.packet.reason import (
    PUNT_CT_STATE,
    PUNT_NAT,
    PUNT_NO_CT,
    Reason,
)

_NO_PORTS = int(Reason.NAT_NO_PORTS)
_ICMP, _ICMPV6 = L.IPPROTO_ICMP, L.IPPROTO_ICMPV6


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_evict(slot, ct):
    """early_drop's eviction of the row whose record its scan found at index slot (Conntrack._kill_row
    without destroy hooks): out of the index and NAT's by-source list, freed; counted in early_drop.
    A row a Python view (NfConn) holds is left DYING in ct[11] for Python to free after the batch
    (the view keeps a copy of it). Kept even if the packet is punted later: the Python path, run
    then, finds the room it would have made itself."""
    ctv, hot, key, rowv, bys, cnt = ct[0], ct[1], ct[2], ct[6], ct[7], ct[10]
    v = record_entry(ctv[0][slot]) >> 1
    hot[v, CT_STATUS] |= C.IPS_DYING
    nf_ct_row_unlink(ctv, rowv, v, slot)
    nf_nat_bysource_del(bys, key, v, ctv[5])
    if rowv[4][v]:
        ct[11][cnt[CNT_ZOMBIES]] = v
        cnt[CNT_ZOMBIES] += 1
    else:
        nf_ct_row_free(rowv, hot, key, v)
    cnt[CNT_EARLY_DROP] += 1


@njit(cache=True, nogil=True, _nrt=False)  # not inlined: kept out of the established path
def lane_ct_new(k, ps, ct):
    """resolve_normal_ct's new entry for a TCP, UDP or ICMP packet: an ICMP type without a reply
    type has no inverse and no entry (-3: punt); with the table full, early_drop's eviction first
    (or -2: no room, the packet is dropped); then init_conntrack: a row off the free stack with the
    tuple k and its inverse (nf_ct_invert_tuple: the reply type for ICMP), unconfirmed (ps[PS_NEW])
    until POSTROUTING confirms it; a punt frees it. Returns the row, -1 (punt), or -4 when no row is
    free (LANE_YIELD: Python frees the rows it held that the eviction left, and the packet runs again,
    its eviction done)."""
    hot, key, rowv, cfg = ct[1], ct[2], ct[6], ct[9]
    ctr = rowv[3]
    icmp = ps[PS_L4] == _ICMP or ps[PS_L4] == _ICMPV6
    inv = icmp_invert_type(ps[PS_L4], np.int64(k[K_ENCAP]) >> 8) if icmp else 0
    if inv < 0:
        return -3
    if ctr[0] >= cfg[CFG_MAX_ENTRIES]:  # CTR_NCONFIRMED
        slot = nf_ct_early_drop_slot(ct[0], k, cfg[CFG_EVICT_SLOTS], ps[PS_NOW])
        if slot < 0:
            return -2
        if not cfg[CFG_EVICT_OK]:
            return -1  # destroy hooks: Python evicts
        lane_evict(slot, ct)
    r = nf_ct_row_alloc(rowv)
    if r < 0:  # the row evicted is one a Python view holds, freed only by Python (CNT_ZOMBIES)
        ct[10][CNT_YIELD] = YIELD_ROWS
        return -4
    o, p = 2 * r, 2 * r + 1
    for j in range(k.shape[0]):
        key[o, j] = k[j]
        key[p, j] = k[j]
    for w in range(4):
        key[p, K_SADDR + w] = k[K_DADDR + w]
        key[p, K_DADDR + w] = k[K_SADDR + w]
    ports = np.int64(k[K_PORTS])
    key[p, K_PORTS] = (ports_dst(ports) << 16) | ports_src(ports)
    if icmp:  # icmp_invert_tuple: the id stays, the type becomes its reply's
        key[p, K_ENCAP] = (inv << 8) | (np.int64(k[K_ENCAP]) & 0xFF)
    hot[r, CT_TIMEOUT] = ps[PS_NOW]
    ps[PS_NEW] = r
    return r


@njit(cache=True, nogil=True, _nrt=False)  # not inlined: kept out of the established path
def lane_nat_bind(f, hook, mtype, ps, ents, nft, ct, rtv, scr):
    """nf_nat_inet_fn for a new connection: the hook's nat chains until one binds (nft_nat_eval),
    else the null binding, then nf_nat_setup_row (nf_nat_core.py). LANE_OK, a punt (redirect,
    masquerade the lane has no address for, an expired entry in the way), or DROP_BASE - reason (a
    nat chain's drop, no free port)."""
    natv, natn = ents[2], ents[3]
    out, nr = scr[4], scr[11]
    nfp = 0 if ps[PS_L3] == 4 else 1
    kind = 0
    for j in range(natn[nfp, hook]):
        r = lane_chain(f, natv[nfp, hook, j], hook, ps, nft, ct, scr, True)
        if r != LANE_OK:
            return r
        kind = out[OUT_NAT]
        if kind:
            break
    row = ps[PS_NEW]
    key = ct[2]
    if kind == 0:  # nf_nat_alloc_null_binding: the current address
        off = K_DADDR if mtype == C.NF_NAT_MANIP_SRC else K_SADDR
        lane_fill(nr, 0)
        nr[NR_FLAGS] = 1  # NF_NAT_RANGE_MAP_IPS
        if ps[PS_L3] == 4:
            nr[NR_MIN + 3] = nr[NR_MAX + 3] = key[2 * row + 1, off]
        else:
            for w in range(4):
                nr[NR_MIN + w] = nr[NR_MAX + w] = key[2 * row + 1, off + w]
    elif (kind != NAT_SNAT and kind != NAT_DNAT and kind != NAT_MASQUERADE) or out[OUT_NAT_MANIP] != mtype:
        return PUNT_NAT  # redirect (the input device's address)
    else:
        nr[NR_FLAGS], nr[NR_PMIN], nr[NR_PMAX] = out[OUT_NAT_FLAGS], out[OUT_NAT_MINPROTO], out[OUT_NAT_MAXPROTO]
        for w in range(4):
            nr[NR_MIN + w], nr[NR_MAX + w] = out[OUT_NAT_MINADDR + w], out[OUT_NAT_MAXADDR + w]
        if kind == NAT_MASQUERADE:  # nf_nat_masquerade_ipv4: the output device's address
            masq = rtv[4]
            a = masq[ps[PS_OIF]] if ps[PS_L3] == 4 and ps[PS_OIF] < masq.shape[0] else -1
            if a < 0:
                return PUNT_NAT
            nr[NR_FLAGS] |= 1  # NF_NAT_RANGE_MAP_IPS
            for w in range(3):
                nr[NR_MIN + w] = nr[NR_MAX + w] = 0
            nr[NR_MIN + 3] = nr[NR_MAX + 3] = a
    nr[NR_EXPIRED] = -1
    res = nf_nat_setup_row(ct[0], ct[7], row, mtype, nr, ps[PS_NR_CPUS], ct[8], scr[12], ps[PS_NOW])
    if res < 0 or nr[NR_EXPIRED] >= 0:
        return PUNT_NO_CT  # an expired entry in the way: the Python path removes it
    if res == NAT_NO_PORTS:
        return DROP_BASE - _NO_PORTS
    return LANE_OK


@njit(cache=True, nogil=True, _nrt=False)  # not inlined: kept out of the established path
def lane_confirm(ps, ct):
    """__nf_conntrack_confirm for the connection this packet opened: into the index, and into NAT's
    by-source list when source-NATed. A clash (or an expired entry in the way) is the Python
    path's: punted. An index without room, or with no slot within a tuple's probe run, is Python's
    to rebuild: LANE_YIELD, and the packet runs again."""
    ctv, hot, key, rowv, bys = ct[0], ct[1], ct[2], ct[6], ct[7]
    r = ps[PS_NEW]
    ctr = rowv[3]
    if not nf_ct_index_has_room(ctr[0], ctr[1], ctv[0].shape[0], 1):  # CTR_NCONFIRMED, CTR_NTOMB
        ct[10][CNT_YIELD] = YIELD_INDEX_ROOM  # Python rebuilds the index, as hash_insert would here
        return LANE_YIELD
    if hot[r, CT_STATUS] & C.IPS_DYING or nf_ct_confirm_check(ctv, r, ps[PS_NOW]) != NF_CT_NOT_FOUND:
        return PUNT_CT_STATE
    hot[r, CT_STATUS] |= C.IPS_CONFIRMED
    if nf_ct_row_confirm(ctv, rowv, r) < 0:  # a probe run full: rebuilt larger, as hash_insert does
        nf_ct_row_unlink(ctv, rowv, r, -1)
        hot[r, CT_STATUS] &= ~C.IPS_CONFIRMED
        ct[10][CNT_YIELD] = YIELD_INDEX_PROBE
        return LANE_YIELD
    if hot[r, CT_STATUS] & C.IPS_SRC_NAT_DONE:
        nf_nat_bysource_add(bys, key, r, ctv[5])
    ps[PS_NEW], ps[PS_INSERT] = -1, 1
    return LANE_OK

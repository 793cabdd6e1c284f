"""A base chain through the nft VM for the compiled classic lane (nft_do_chain at a hook), with what
the lane must see of its outcome: a NAT statement, a ct mark written, `flow add`, counters kept
until the packet is done.

Linux: net/netfilter/nf_tables_core.c › nft_do_chain, as the lane's hooks call it (flowpath/inet/
classic_lane.py); the VM is flowpath/netfilter/nft_vm.py, which the Python path runs too.
"""

from __future__ import annotations

from numba import njit

from flowpath.inet.classic_lane_state import (
    DROP_BASE,
    LANE_OK,
    PS_CTINFO,
    PS_ED,
    PS_END,
    PS_FLOW,
    PS_IIF,
    PS_L3,
    PS_L4,
    PS_MARK,
    PS_NACC,
    PS_NOW,
    PS_OIF,
    PS_RTMTU,
    PS_THOFF,
    lane_fill,
)
from flowpath.netfilter import constants as C
from flowpath.netfilter.ct_layout import CT_MARK, CT_PROTO, CT_STATUS, TCP_STATE
from flowpath.netfilter.nft_vm import (
    NFT_PUNT,
    OUT_CNT,
    OUT_FLOW,
    OUT_NAT,
    OUT_NCNT,
    PM_BUFLEN,
    PM_CT,
    PM_CTDIR,
    PM_CTMARK,
    PM_CTSTATE,
    PM_CTSTATUS,
    PM_CTTCPSTATE,
    PM_FIB,
    PM_FIB_OK,
    PM_HOOK,
    PM_IIF,
    PM_IIFNAME,
    PM_L3PROTO,
    PM_L4PROTO,
    PM_LEN,
    PM_MARK,
    PM_NFPROTO,
    PM_NHOFF,
    PM_NOW,
    PM_OIF,
    PM_OIFNAME,
    PM_RTMTU,
    PM_THOFF,
    PM_WRITES,
    PM_WROTE_CTMARK,
    nf_ct_state_bit,
    nft_vm_run_regs,
)
from flowpath.packet import layout as L
from flowpath.packet.reason import (
    PUNT_NFT,
    PUNT_OFFLOAD,
    Reason,
)

_NF_DROP = int(Reason.NETFILTER_DROP)
_TCP = L.IPPROTO_TCP


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_chain(f, chain, hook, ps, nft, ct, scr, nat_ok):
    """A base chain through the VM (nft_do_chain); LANE_OK (accept), PUNT_NFT, PUNT_OFFLOAD or
    DROP_BASE - reason. Counter hits are kept in scr's acc until the packet is done. nat_ok: a nat
    chain, whose NAT statement is left in scr's out for the caller."""
    progs = nft[0]
    pm, out, acc, regs, stack = scr[3], scr[4], scr[6], scr[7], scr[8]
    ed = ps[PS_ED]
    lane_fill(pm, 0)  # PM_SECPATH 0 too: decrypted packets (encap) are never the lane's (classic_lane.py)
    pm[PM_FIB] = PM_FIB_OK  # the lane's input devices are never loopback (link_lane_ok)
    pm[PM_HOOK], pm[PM_NFPROTO] = hook, C.NFPROTO_IPV4 if ps[PS_L3] == 4 else C.NFPROTO_IPV6
    pm[PM_L3PROTO] = L.ETH_P_IP if ps[PS_L3] == 4 else L.ETH_P_IPV6
    pm[PM_L4PROTO], pm[PM_NHOFF], pm[PM_THOFF] = ps[PS_L4], L.ETH_HLEN, ps[PS_THOFF]
    pm[PM_LEN], pm[PM_BUFLEN] = ps[PS_END] - L.ETH_HLEN, ps[PS_END]
    pm[PM_IIF], pm[PM_OIF] = ps[PS_IIF], ps[PS_OIF]
    pm[PM_IIFNAME] = ps[PS_IIF] if hook != C.NF_INET_LOCAL_OUT else -1
    pm[PM_OIFNAME] = ps[PS_OIF] if ps[PS_OIF] else -1
    pm[PM_MARK], pm[PM_RTMTU], pm[PM_NOW] = ps[PS_MARK], ps[PS_RTMTU], ps[PS_NOW]
    pm[PM_CTSTATE] = nf_ct_state_bit(ed >= 0, ps[PS_CTINFO])
    pm[PM_CTTCPSTATE] = -1
    if ed >= 0:
        hot = ct[1]
        pm[PM_CT], pm[PM_CTDIR] = 1, ed & 1
        pm[PM_CTSTATUS], pm[PM_CTMARK] = hot[ed >> 1, CT_STATUS], hot[ed >> 1, CT_MARK]
        pm[PM_CTTCPSTATE] = hot[ed >> 1, CT_PROTO + TCP_STATE] if ps[PS_L4] == _TCP else -1
    v = nft_vm_run_regs(progs, chain, f, pm, out, regs, stack, nft[4], scr[13])  # scr[13]: undone on a punt
    if v == NFT_PUNT or pm[PM_WRITES] & PM_WROTE_CTMARK or (out[OUT_NAT] and not nat_ok):
        return PUNT_NFT  # a ct mark written, or a NAT statement outside the NAT hook
    if out[OUT_FLOW] >= 0 and nft[1] and not (ed >= 0 and ct[1][ed >> 1, CT_STATUS] & C.IPS_OFFLOAD):
        if out[OUT_FLOW] != nft[2]:
            return PUNT_OFFLOAD  # a flowtable the lane does not hold: the Python path offloads
        ps[PS_FLOW] = 1
    ps[PS_MARK] = pm[PM_MARK]
    for j in range(out[OUT_NCNT]):  # kept for nft_vm_commit once the packet is done
        acc[OUT_CNT + ps[PS_NACC]] = out[OUT_CNT + j]
        ps[PS_NACC] += 1
    if v == C.NF_DROP:
        return DROP_BASE - _NF_DROP
    return LANE_OK

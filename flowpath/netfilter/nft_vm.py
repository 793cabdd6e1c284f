"""The nf_tables register machine: compiled chain programs run over one packet.

Linux: net/netfilter/nf_tables_core.c › nft_do_chain (rules in order, jump stack, policy) with the
expressions it calls inline: nft_cmp_fast_eval / nft_cmp_eval, nft_payload_eval, nft_meta_get_eval,
nft_ct_get_eval, nft_bitwise_eval, nft_byteorder_eval, nft_range_eval, nft_lookup_eval,
nft_immediate_eval; and the statements nft_counter_eval, nft_quota_eval, nft_meta_set_eval, nft_ct_set_eval,
nft_nat_eval, nft_flow_offload_eval, nft_limit_eval and nft_dynset_eval (nft_set_hash.py: meters and sets the
rules update, looked up by nft_rhash_lookup). struct nft_regs is `regs`: 16 data registers of 16 bytes (one
uint8[256] file addressed by byte offset, so a concatenation spans registers as in nft).

Byte order in registers is nft's: payload loads are big-endian, meta/ct words (mark, iif, len, ct state,
status, mark) are host order (little-endian here), `meta protocol` keeps the wire's __be16. The compiler
(nft_compile.py) emits a byteorder step before an ordered compare, a range or a set lookup on a
host-order value, as nft does.

The program (`progs`, a plain tuple made by nft_compile.py › compile_chains):
    code     int64[n, STRIDE]     instructions: opcode then operands
    chains   int64[nchains, 2]    CH_START pc, CH_POLICY (NF_ACCEPT/NF_DROP; regular chains: NF_ACCEPT)
    consts   uint8[m]             cmp/range/bitwise data
    sets     int64[nsets, SET_COLS]  set descriptors (S_*)
    setkeys  uint8[k]             set keys: exact keys sorted, interval starts then ends, scan lo/hi pairs
    setelem  int64[e]             per element: its row in `data`, -1 for a plain set
    setcomp  int64[c, 2]          per scan component: offset and length in the key
    data     int64[d, DATA_COLS]  map data: verdict (D_CODE, D_CHAIN), NAT bounds (D_*) or a mark (D_VALUE)
    counters int64[ncnt, 2]       packets, bytes: the rule counters the listing reads, and each quota's
                                  consumed bytes (nft_objref.NftQuota)
    dyn      (dsets, dslot, dkey, limits): the sets the packet path updates and the limits' buckets
                                  (nft_set_hash.py; replaced when a set's table grows)
    ifnames  uint8[nifs, 16]      interface names, NUL-padded; pktmeta PM_IIFNAME/PM_OIFNAME pick rows

A run also takes the FIB's views (`fv`, net.fib_views(): flowpath/net/fib_table.py) for `fib`
(OP_FIB, nft_fib.py › fib_oif_eval, fib_type_eval); pktmeta's PM_FIB says whether they may be used.

A run never writes anything but `pktmeta` (mark writes), `out`, its scratch and `dyn` (limits, set
updates: logged in `undo` first, nft_set_hash.nft_dyn_undo), so a caller that decides to punt a packet after
its chains ran leaves no trace once it undoes; `nft_vm_commit` applies the counter hits recorded in `out`. NFT_PUNT means "this program cannot decide: run the chain with the Python evaluator".
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.netfilter.constants import (
    IP_CT_IS_REPLY,
    IP_CT_UNTRACKED,
    IPS_ASSURED,
    IPS_CONFIRMED,
    NF_ACCEPT,
    NF_DROP,
    NF_INET_PRE_ROUTING,
    NFT_BREAK,
    NFT_CONTINUE,
    NFT_GOTO,
    NFT_JUMP,
    NFT_RETURN,
)
from flowpath.netfilter.nft_exthdr_find import ipv6_find_hdr, tcpopt_find
from flowpath.netfilter.nft_fib import fib_oif_eval, fib_type_eval
from flowpath.netfilter.nft_set_hash import (
    DYN_BREAK,
    DYN_DELETED,
    UNDO_MAX,
    UNDO_W,
    nft_dyn_undo,
    nft_dynset_eval,
    nft_limit_run,
    nft_rhash_lookup,
)

NFT_PUNT = -16  # no Linux counterpart: "evaluate this chain with the Python evaluator"
NFT_JUMP_STACK_SIZE = 16  # include/net/netfilter/nf_tables.h
NFT_REG_FILE = 256  # 16 x 16-byte registers
STRIDE = 8
PROG_DYN = 9  # dyn's place in progs

# pktmeta: the per-packet inputs (and mark outputs) of a run; int64[PM_SIZE]
PM_HOOK, PM_NFPROTO, PM_L3PROTO, PM_L4PROTO, PM_NHOFF, PM_THOFF, PM_LEN, PM_BUFLEN = range(8)
PM_IIF, PM_OIF, PM_IIFNAME, PM_OIFNAME = 8, 9, 10, 11  # *NAME: row of `ifnames`, -1: no device ("")
PM_CT, PM_CTSTATE, PM_CTDIR, PM_CTSTATUS, PM_CTMARK, PM_CTTCPSTATE = 12, 13, 14, 15, 16, 17
PM_MARK, PM_RTMTU, PM_WRITES, PM_CTINFO = 18, 19, 20, 21  # PM_CTINFO: only nft_vm_do_chain reads it
PM_SECPATH = 22  # 1: decrypted by an SA of this host (skb has a secpath)
PM_FIB = 23  # PM_FIB_* bits: the run's FIB views may be used (0: OP_FIB punts), input device is loopback
PM_FIB_OK, PM_FIB_LOOPBACK = 1, 2
PM_NOW = 24  # the packet's time (ns): limits and set element timeouts
PM_SIZE = 25
PM_WROTE_MARK, PM_WROTE_CTMARK = 1, 2  # PM_WRITES bits: which marks the caller must store
# out: what the statements asked for; int64[OUT_SIZE]
OUT_FLOW, OUT_NAT, OUT_NAT_MANIP, OUT_NAT_FLAGS = 0, 1, 2, 3  # OUT_FLOW: flowtable id, -1: none
OUT_NAT_MINADDR, OUT_NAT_MAXADDR, OUT_NAT_MINPROTO, OUT_NAT_MAXPROTO = (
    4,
    8,
    12,
    13,
)  # addrs: 4 words, MSW first
OUT_LEN, OUT_NCNT, OUT_CNT = 14, 15, 16  # skb->len for the counters, then the counter rows hit
OUT_MAXCNT = 48
OUT_SIZE = OUT_CNT + OUT_MAXCNT
NAT_SNAT, NAT_DNAT, NAT_MASQUERADE, NAT_REDIRECT = 1, 2, 3, 4  # OUT_NAT (0: no NAT statement ran)

# opcodes; operands follow in code[pc, 1:]
OP_RULE = 1  # next rule's pc
OP_PAYLOAD = 2  # dreg, base, l3proto (0: any), l4proto (-1: any), offset, len
OP_META = 3  # dreg, key
OP_CT = 4  # dreg, key
OP_BITWISE = 5  # dreg, sreg, len, mask const, xor const
OP_RSHIFT = 6  # reg, len (<= 8), shift, host order (0/1), left (0/1): nft_bitwise's shifts
OP_BYTEORDER = 7  # reg, len: host order to big-endian
OP_CMP = 8  # cmp op, sreg, len, const
OP_RANGE = 9  # invert, sreg, len, lo const, hi const
OP_LOOKUP = 10  # sreg, set, invert
OP_VMAP = 11  # sreg, set
OP_MAP = 12  # sreg, set, slot (0 address map, 1 port map, 2 a 32-bit value into the sreg, host order)
OP_IMM = 13  # verdict code, chain
OP_COUNTER = 14  # counter row, or (from register 1) the register holding it (host order: an object map's)
OP_MARK_SET = 15  # target (0 meta, 1 ct), from register (0/1), value or sreg, len, host order (0/1)
OP_NFPROTO_GUARD = 16  # nfproto, pc to skip to when the packet's differs
OP_NAT = 17  # kind NAT_*, immediate data row, maniptype, uses address map, uses port map
OP_FLOW_ADD = 18  # flowtable id, TCP established state
OP_PUNT = 19
OP_END = 20  # end of a chain: return to the caller chain, or the base chain's policy
OP_FIB = 21  # dreg, result FIB_*, daddr (0/1), device FIB_DEV_*
OP_QUOTA = 22  # counter row of its consumed bytes, quota in bytes, NFT_QUOTA_F_INV (0/1)
OP_LIMIT = 23  # row in dyn's limits, or (from register 1) the register holding it, as OP_COUNTER
OP_DYNSET = 24  # sreg, set (row of dyn's dsets), op, timeout ns, element limit row (-1), element counter
OP_DYNLOOKUP = 25  # sreg, set (row of dyn's dsets), invert
OP_EXTHDR = 26  # dreg, TCP option (1) or IPv6 header (0), its kind/type, first byte, bytes, present (0/1)

CMP_EQ, CMP_NEQ, CMP_LT, CMP_GT, CMP_LTE, CMP_GTE, CMP_TRUE, CMP_FALSE = range(8)  # TRUE/FALSE: out of width
BASE_LL, BASE_NH, BASE_TH = 0, 1, 2
META_L4PROTO, META_NFPROTO, META_PROTOCOL, META_IIFNAME, META_OIFNAME, META_IIF, META_OIF = range(7)
META_MARK, META_LEN, META_PKTTYPE, META_RT_TCPMSS, META_SECPATH = 7, 8, 9, 10, 11
CTK_STATE, CTK_DIRECTION, CTK_STATUS, CTK_MARK = range(4)
CH_START, CH_POLICY = 0, 1
FIB_OIF, FIB_PRESENT, FIB_TYPE = 0, 1, 2  # OP_FIB: the ifindex (host order, 4 bytes), whether there is one,
# or the address type (RTN_*, host order, 4 bytes)
FIB_DEV_NONE, FIB_DEV_IIF, FIB_DEV_OIF = 0, 1, 2  # the device the route must go through (`. iif`, `. oif`)
S_KLEN, S_EXACT_N, S_EXACT_OFF, S_EXACT_ELEM, S_IVAL_N, S_IVAL_OFF, S_IVAL_ELEM = range(7)
S_SCAN_N, S_SCAN_OFF, S_SCAN_ELEM, S_COMP_N, S_COMP_OFF = 7, 8, 9, 10, 11
S_CATCHALL = 12  # the `*` element's index, -1: none
SET_COLS = 13
D_CODE, D_CHAIN = 0, 1  # verdict map data
D_VALUE = 0  # a data map's value (a mark)
D_FLAGS, D_PARTS, D_AMIN, D_AMAX, D_PMIN, D_PMAX = 0, 1, 2, 6, 10, 11  # NAT data; D_PARTS: 1 addr, 2 ports
DATA_COLS = 12

_NO_OFFLOAD = (1 << 6) | (1 << 12) | (1 << 14)  # IPS_SEQ_ADJUST | IPS_NAT_CLASH | IPS_OFFLOAD
_ETH_P_IP, _ETH_P_IPV6 = 0x0800, 0x86DD
_IPPROTO_TCP, _IPPROTO_UDP, _TCP_FLAGS_OFF, _TCP_FIN_RST = 6, 17, 13, 0x05
TCP_MSS_DEFAULT = 536


@njit(cache=True, nogil=True)
def nf_ct_state_bit(has_ct, ctinfo):
    """NF_CT_STATE_BIT(ctinfo) as nft_ct_get_eval computes `ct state` (nft_ct.c): untracked, invalid."""
    if ctinfo == IP_CT_UNTRACKED:
        return 64  # NF_CT_STATE_UNTRACKED_BIT
    if not has_ct:
        return 1  # NF_CT_STATE_INVALID_BIT
    return 1 << (ctinfo % IP_CT_IS_REPLY + 1)


@njit(cache=True, nogil=True)
def _memcmp(a, aoff, b, boff, n):
    for i in range(n):
        x, y = a[aoff + i], b[boff + i]
        if x != y:
            return -1 if x < y else 1
    return 0


@njit(cache=True, nogil=True)
def _store_host(regs, d, v, n):
    for i in range(n):
        regs[d + i] = (v >> (8 * i)) & 0xFF


@njit(cache=True, nogil=True)
def _store_be(regs, d, v, n):
    for i in range(n):
        regs[d + n - 1 - i] = (v >> (8 * i)) & 0xFF


@njit(cache=True, nogil=True)
def _load_int(regs, s, n, host):
    v = 0
    for i in range(n):
        if host:
            v |= np.int64(regs[s + i]) << (8 * i)
        else:
            v = (v << 8) | np.int64(regs[s + i])
    return v


@njit(cache=True, nogil=True)
def _pad(regs, d, n):
    for i in range(n, (n + 3) & ~3):  # nft_payload_eval zeroes the register's last 32-bit word
        regs[d + i] = 0


@njit(cache=True, nogil=True)
def _load_bytes(buf, buflen, o, n, regs, d):
    """n bytes of the frame from o (-1: none) into register d, padded (nft_payload_eval's copy);
    False: they are not all there (NFT_BREAK)."""
    if o < 0 or o + n > buflen:
        return False
    for i in range(n):
        regs[d + i] = buf[o + i]
    _pad(regs, d, n)
    return True


@njit(cache=True, nogil=True)
def _payload(buf, buflen, pm, base, l3, l4, off, n, regs, d):
    """nft_payload_eval with the protocol dependencies nft puts in front; False: NFT_BREAK."""
    o = 0
    if base == BASE_TH:
        if (l3 != 0 and pm[PM_L3PROTO] != l3) or (l4 >= 0 and pm[PM_L4PROTO] != l4):
            return False
        o = pm[PM_THOFF]  # -1: a later fragment (pkt->fragoff)
    elif base == BASE_NH:
        if l3 != 0 and pm[PM_L3PROTO] != l3:
            return False
        o = pm[PM_NHOFF]
    return _load_bytes(buf, buflen, o + off if o >= 0 else -1, n, regs, d)


@njit(cache=True, nogil=True)
def _exthdr(buf, buflen, pm, tcp, typ, first, n, present, regs, d):
    """nft_exthdr_tcp_eval / nft_exthdr_ipv6_eval (nft_exthdr.py's loads); False: NFT_BREAK."""
    if tcp:
        o = tcpopt_find(buf, buflen, pm[PM_L4PROTO], pm[PM_THOFF], typ, 1 if present else first + n)
    elif pm[PM_L3PROTO] != _ETH_P_IPV6:
        return False
    else:
        o = ipv6_find_hdr(buf, buflen, pm[PM_NHOFF], typ)
    if present:  # NFT_EXTHDR_F_PRESENT: nft_reg_store8
        regs[d] = 1 if o >= 0 else 0
        _pad(regs, d, 1)
        return True
    return _load_bytes(buf, buflen, o + first if o >= 0 else -1, n, regs, d)


@njit(cache=True, nogil=True)
def _meta(buf, pm, key, regs, d, ifnames):
    """nft_meta_get_eval; False: NFT_BREAK."""
    if key == META_L4PROTO:
        if pm[PM_L4PROTO] < 0:
            return False  # NFT_PKTINFO_L4PROTO not set
        regs[d] = pm[PM_L4PROTO]
        _pad(regs, d, 1)
    elif key == META_NFPROTO:
        regs[d] = pm[PM_NFPROTO]
        _pad(regs, d, 1)
    elif key == META_PROTOCOL:  # skb->protocol is a __be16
        regs[d], regs[d + 1], regs[d + 2], regs[d + 3] = (
            (pm[PM_L3PROTO] >> 8) & 0xFF,
            pm[PM_L3PROTO] & 0xFF,
            0,
            0,
        )
    elif key == META_IIFNAME or key == META_OIFNAME:
        row = pm[PM_IIFNAME] if key == META_IIFNAME else pm[PM_OIFNAME]
        for i in range(16):  # no device: "" (nft_meta_store_ifname)
            regs[d + i] = ifnames[row, i] if 0 <= row < ifnames.shape[0] else 0
    elif key == META_PKTTYPE:  # eth_type_trans from the destination MAC
        t = 0
        if buf[0] & 1:
            t = 1 if buf[0] & buf[1] & buf[2] & buf[3] & buf[4] & buf[5] == 0xFF else 2
        regs[d] = t
        _pad(regs, d, 1)
    elif key == META_SECPATH:  # nft_meta.c › NFT_META_SECPATH: secpath_exists
        regs[d] = 1 if pm[PM_SECPATH] else 0
        _pad(regs, d, 1)
    elif key == META_RT_TCPMSS:  # nft_rt.c › get_tcpmss; PM_RTMTU 0: no route
        mtu = pm[PM_RTMTU]
        if mtu == 0:
            return False
        minlen = (40 if pm[PM_NFPROTO] == 10 else 20) + 20
        _store_host(regs, d, TCP_MSS_DEFAULT if mtu <= minlen or mtu > 0xFFFF else mtu - minlen, 4)
    else:
        v = pm[PM_IIF]
        if key == META_OIF:
            v = pm[PM_OIF]
        elif key == META_MARK:
            v = pm[PM_MARK]
        elif key == META_LEN:
            v = pm[PM_LEN]
        _store_host(regs, d, v, 4)
    return True


@njit(cache=True, nogil=True)
def _ct(pm, key, regs, d):
    """nft_ct_get_eval; False: NFT_BREAK (no conntrack entry; `ct state` always answers)."""
    if key == CTK_STATE:
        _store_host(regs, d, pm[PM_CTSTATE], 4)
        return True
    if pm[PM_CT] == 0:
        return False
    if key == CTK_DIRECTION:
        regs[d] = pm[PM_CTDIR]
        _pad(regs, d, 1)
    else:
        _store_host(regs, d, pm[PM_CTSTATUS] if key == CTK_STATUS else pm[PM_CTMARK], 4)
    return True


@njit(cache=True, nogil=True)
def _cmp(op, r):
    if op == CMP_EQ:
        return r == 0
    if op == CMP_NEQ:
        return r != 0
    if op == CMP_LT:
        return r < 0
    if op == CMP_GT:
        return r > 0
    if op == CMP_LTE:
        return r <= 0
    if op == CMP_GTE:
        return r >= 0
    return op == CMP_TRUE


@njit(cache=True, nogil=True)
def nft_set_find(sets, setkeys, setcomp, s, regs, r):
    """nft_lookup_eval's backend: the element index of the key at regs[r], or -1.

    Linux: nft_set_hash.c (exact keys; here sorted and bisected), nft_set_rbtree.c (intervals: the one
    with the greatest start <= key that covers it), nft_set_pipapo.c (per-component bounds, scanned),
    then the catch-all element.
    """
    klen = sets[s, S_KLEN]
    lo, hi, base = 0, sets[s, S_EXACT_N], sets[s, S_EXACT_OFF]
    while lo < hi:
        mid = (lo + hi) >> 1
        c = _memcmp(setkeys, base + mid * klen, regs, r, klen)
        if c == 0:
            return sets[s, S_EXACT_ELEM] + mid
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    n, base = sets[s, S_IVAL_N], sets[s, S_IVAL_OFF]
    lo, hi = 0, n
    while lo < hi:  # bisect_right over the starts
        mid = (lo + hi) >> 1
        if _memcmp(regs, r, setkeys, base + mid * klen, klen) < 0:
            hi = mid
        else:
            lo = mid + 1
    i = lo - 1
    while i >= 0:  # overlapping intervals (user JSON only): scan back over starts <= key
        if _memcmp(regs, r, setkeys, base + (n + i) * klen, klen) <= 0:
            return sets[s, S_IVAL_ELEM] + i
        i -= 1
    base, ncomp, comp = sets[s, S_SCAN_OFF], sets[s, S_COMP_N], sets[s, S_COMP_OFF]
    for e in range(sets[s, S_SCAN_N]):
        lo_off = base + e * 2 * klen
        ok = True
        for c in range(ncomp):
            o, ln = setcomp[comp + c, 0], setcomp[comp + c, 1]
            if (
                _memcmp(regs, r + o, setkeys, lo_off + o, ln) < 0
                or _memcmp(regs, r + o, setkeys, lo_off + klen + o, ln) > 0
            ):
                ok = False
                break
        if ok:
            return sets[s, S_SCAN_ELEM] + e
    return sets[s, S_CATCHALL]  # nft_set_catchall_lookup


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def _fib(buf, buflen, pm, fv, result, use_daddr, devkind):
    """nft_fib_eval's lookup for OP_FIB: the route's device (nft_fib.py › fib_oif_eval) or the address
    type (fib_type_eval), -1 for NFT_BREAK (not IP), -2 to punt (no FIB views given; an IPv6 type on a
    device, which nf_ipv6_chk_addr answers from the device's addresses)."""
    if not pm[PM_FIB] & PM_FIB_OK:
        return -2
    nh, l3 = pm[PM_NHOFF], pm[PM_L3PROTO]
    if l3 == _ETH_P_IP:
        if nh < 0 or nh + 20 > buflen:
            return -1
        s0, d0 = _load_int(buf, nh + 12, 4, False), _load_int(buf, nh + 16, 4, False)
        s1 = s2 = s3 = d1 = d2 = d3 = 0
        family = 4
    elif l3 == _ETH_P_IPV6:
        if nh < 0 or nh + 40 > buflen:
            return -1
        s0, s1 = _load_int(buf, nh + 8, 4, False), _load_int(buf, nh + 12, 4, False)
        s2, s3 = _load_int(buf, nh + 16, 4, False), _load_int(buf, nh + 20, 4, False)
        d0, d1 = _load_int(buf, nh + 24, 4, False), _load_int(buf, nh + 28, 4, False)
        d2, d3 = _load_int(buf, nh + 32, 4, False), _load_int(buf, nh + 36, 4, False)
        family = 6
    else:
        return -1  # skb_header_pointer on a non-IP packet (inet/netdev family): NFT_BREAK
    iif, oif = pm[PM_IIF], pm[PM_OIF]
    dev = iif if devkind == FIB_DEV_IIF else (oif if devkind == FIB_DEV_OIF else 0)
    if result == FIB_TYPE:
        if family == 6 and dev:
            return -2
        if use_daddr:
            return fib_type_eval(fv, family, d0, d1, d2, d3, dev)
        return fib_type_eval(fv, family, s0, s1, s2, s3, dev)
    lo_pre = 1 if pm[PM_HOOK] == NF_INET_PRE_ROUTING and pm[PM_FIB] & PM_FIB_LOOPBACK else 0
    if use_daddr:
        return fib_oif_eval(fv, family, d0, d1, d2, d3, s0, d0, dev, iif, oif, lo_pre)
    return fib_oif_eval(fv, family, s0, s1, s2, s3, s0, d0, dev, iif, oif, lo_pre)


@njit(cache=True, nogil=True)
def _flow_offload_ok(buf, buflen, pm, established):
    """nft_flow_offload_eval's checks on this packet and its ct (the routes are the datapath's)."""
    if pm[PM_CT] == 0 or pm[PM_CTSTATE] == 64 or pm[PM_THOFF] < 0:
        return False
    status = pm[PM_CTSTATUS]
    if pm[PM_L4PROTO] == _IPPROTO_TCP:
        f = pm[PM_THOFF] + _TCP_FLAGS_OFF
        if f >= buflen or buf[f] & _TCP_FIN_RST or not status & IPS_ASSURED:
            return False
        if pm[PM_CTTCPSTATE] >= 0 and pm[PM_CTTCPSTATE] != established:
            return False  # nf_conntrack_tcp_established; -1: the entry has no TCP state to ask
    elif pm[PM_L4PROTO] != _IPPROTO_UDP:
        return False  # Deviation: GRE flows are not offloaded
    if status & _NO_OFFLOAD or not status & IPS_CONFIRMED:
        return False
    return not (pm[PM_L3PROTO] == _ETH_P_IP and pm[PM_THOFF] - pm[PM_NHOFF] != 20)  # IPv4 options


@njit(cache=True, nogil=True)
def _nat(out, data, kind, row, maniptype, addr_row, port_row):
    """nft_nat_eval: the range a NAT statement asks for, into out (NF_NAT_RANGE_* flags as nft_nat.c)."""
    out[OUT_NAT] = kind
    out[OUT_NAT_FLAGS] = data[row, D_FLAGS]
    for i in range(4):
        out[OUT_NAT_MINADDR + i] = data[row, D_AMIN + i]
        out[OUT_NAT_MAXADDR + i] = data[row, D_AMAX + i]
    out[OUT_NAT_MINPROTO], out[OUT_NAT_MAXPROTO] = data[row, D_PMIN], data[row, D_PMAX]
    if addr_row >= 0:
        for i in range(4):
            out[OUT_NAT_MINADDR + i] = data[addr_row, D_AMIN + i]
            out[OUT_NAT_MAXADDR + i] = data[addr_row, D_AMAX + i]
        if data[addr_row, D_PARTS] & 2:  # address . port data
            out[OUT_NAT_MINPROTO], out[OUT_NAT_MAXPROTO] = data[addr_row, D_PMIN], data[addr_row, D_PMAX]
            out[OUT_NAT_FLAGS] |= 2  # NF_NAT_RANGE_PROTO_SPECIFIED
    if port_row >= 0:
        out[OUT_NAT_MINPROTO], out[OUT_NAT_MAXPROTO] = data[port_row, D_PMIN], data[port_row, D_PMAX]
    out[OUT_NAT_MANIP] = maniptype


@njit(cache=True, nogil=True)
def _overquota(counters, out, row, n, quota):
    """nft_quota.c › nft_overquota: consumed + skb->len > quota, with this run's earlier hits of the
    same quota (committed only after the run) counted in."""
    consumed = counters[row, 1] + out[OUT_LEN]
    for i in range(n):
        if out[OUT_CNT + i] == row:
            consumed += out[OUT_LEN]
    return consumed > quota


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nft_vm_run_regs(progs, chain_id, buf, pm, out, regs, stack, fv, undo):
    """nft_do_chain over a compiled program, with the caller's scratch (lets a batch loop reuse it).

    progs     the plain tuple of nft_compile.py (see the module docstring)
    chain_id  int: the chain to run (its row in progs' chains)
    buf       uint8[>= PM_BUFLEN] the frame, Ethernet header first
    pm        int64[PM_SIZE] pktmeta (PM_MARK, PM_CTMARK, PM_WRITES written by mark statements)
    out       int64[OUT_SIZE] out: flowtable, NAT request, counter hits (cleared here)
    regs      uint8[NFT_REG_FILE] scratch registers; stack int64[NFT_JUMP_STACK_SIZE] scratch
    fv        the FIB views `fib` looks routes up in (net.fib_views(); read only when PM_FIB allows)
    undo      int64[UNDO_MAX + 1, UNDO_W] the log of dyn's writes (nft_set_hash.py), appended to
    Returns NF_ACCEPT, NF_DROP or NFT_PUNT (the caller undoes).
    """
    code, chains, consts, sets, setkeys, setelem, setcomp, data, counters, dyn, ifnames = progs  # PROG_DYN: 9
    out[:] = 0
    out[OUT_FLOW] = -1
    out[OUT_LEN] = pm[PM_LEN]
    buflen = min(pm[PM_BUFLEN], buf.shape[0])
    pc = chains[chain_id, CH_START]
    next_rule, sp, map_addr, map_port = pc, 0, -1, -1
    while True:
        op = code[pc, 0]
        a, b, c = code[pc, 1], code[pc, 2], code[pc, 3]
        verdict, target = NFT_CONTINUE, 0
        if op == OP_RULE:
            next_rule = a
        elif op == OP_PAYLOAD:
            if not _payload(buf, buflen, pm, b, c, code[pc, 4], code[pc, 5], code[pc, 6], regs, a):
                verdict = NFT_BREAK
        elif op == OP_META:
            if not _meta(buf, pm, b, regs, a, ifnames):
                verdict = NFT_BREAK
        elif op == OP_CT:
            if not _ct(pm, b, regs, a):
                verdict = NFT_BREAK
        elif op == OP_EXTHDR:
            if not _exthdr(buf, buflen, pm, b, c, code[pc, 4], code[pc, 5], code[pc, 6], regs, a):
                verdict = NFT_BREAK
        elif op == OP_FIB:  # nft_fib_store_result: the ifindex, or NFTA_FIB_F_PRESENT's 0/1
            o = _fib(buf, buflen, pm, fv, b, c, code[pc, 4])
            if o == -2:
                return NFT_PUNT
            if o < 0:
                verdict = NFT_BREAK
            elif b == FIB_PRESENT:
                regs[a] = 1 if o else 0
                _pad(regs, a, 1)
            else:
                _store_host(regs, a, o, 4)
        elif op == OP_CMP:
            if not _cmp(a, _memcmp(regs, b, consts, code[pc, 4], c)):
                verdict = NFT_BREAK
        elif op == OP_BITWISE:  # dreg = (sreg & mask) ^ xor
            m, x = code[pc, 4], code[pc, 5]
            for i in range(c):
                regs[a + i] = (regs[b + i] & consts[m + i]) ^ consts[x + i]
        elif op == OP_RSHIFT:
            v = _load_int(regs, a, b, code[pc, 4] != 0)
            v = v << c if code[pc, 5] else v >> c
            if code[pc, 4]:
                _store_host(regs, a, v, b)
            else:
                _store_be(regs, a, v, b)
        elif op == OP_BYTEORDER:
            for i in range(b // 2):
                regs[a + i], regs[a + b - 1 - i] = regs[a + b - 1 - i], regs[a + i]
        elif op == OP_RANGE:
            inside = (
                _memcmp(regs, b, consts, code[pc, 4], c) >= 0
                and _memcmp(regs, b, consts, code[pc, 5], c) <= 0
            )
            if inside == (a != 0):
                verdict = NFT_BREAK
        elif op == OP_LOOKUP:
            if (nft_set_find(sets, setkeys, setcomp, b, regs, a) >= 0) == (c != 0):
                verdict = NFT_BREAK
        elif op == OP_VMAP or op == OP_MAP:
            e = nft_set_find(sets, setkeys, setcomp, b, regs, a)
            if e < 0:
                verdict = NFT_BREAK
            elif op == OP_VMAP:
                verdict, target = data[setelem[e], D_CODE], data[setelem[e], D_CHAIN]
            elif c == 0:
                map_addr = setelem[e]
            elif c == 1:
                map_port = setelem[e]
            else:  # nft_lookup_eval's dreg: `meta mark set ip saddr map { ... }`
                _store_host(regs, a, data[setelem[e], D_VALUE], 4)
        elif op == OP_IMM:
            verdict, target = a, b
        elif op == OP_COUNTER:
            n = out[OUT_NCNT]
            if n >= OUT_MAXCNT:
                return NFT_PUNT  # more counters than out records: let the Python evaluator count them
            out[OUT_CNT + n] = _load_int(regs, a, 4, True) if b else a
            out[OUT_NCNT] = n + 1
        elif op == OP_QUOTA:
            n = out[OUT_NCNT]
            if n >= OUT_MAXCNT:
                return NFT_PUNT
            if _overquota(counters, out, a, n, b) != (c != 0):
                verdict = NFT_BREAK
            out[OUT_CNT + n] = a
            out[OUT_NCNT] = n + 1
        elif op == OP_LIMIT:
            o = nft_limit_run(dyn[3], _load_int(regs, a, 4, True) if b else a, pm[PM_NOW], out[OUT_LEN], undo)
            if o < 0:
                return NFT_PUNT
            if o:
                verdict = NFT_BREAK
        elif op == OP_DYNSET:
            o = nft_dynset_eval(dyn, b, regs, a, c, code[pc, 4], code[pc, 5], code[pc, 6], pm[PM_NOW], out[OUT_LEN],
                                undo)  # fmt: skip
            if o == DYN_BREAK:
                verdict = NFT_BREAK
            elif o < 0 and o != DYN_DELETED:  # DYN_GROW, DYN_PUNT: the Python evaluator grows the table
                return NFT_PUNT
        elif op == OP_DYNLOOKUP:
            if (nft_rhash_lookup(dyn[0], dyn[1], dyn[2], b, regs, a, pm[PM_NOW]) >= 0) == (c != 0):
                verdict = NFT_BREAK
        elif op == OP_MARK_SET:
            v = _load_int(regs, c, code[pc, 4], code[pc, 5] != 0) if b else c
            v &= 0xFFFFFFFF
            if a == 0:
                pm[PM_MARK] = v
                pm[PM_WRITES] |= PM_WROTE_MARK
            elif pm[PM_CT] != 0:  # nft_ct_set_eval: no conntrack, nothing to mark
                pm[PM_CTMARK] = v
                pm[PM_WRITES] |= PM_WROTE_CTMARK
        elif op == OP_NFPROTO_GUARD:
            if pm[PM_NFPROTO] != a:  # nft_nat_inet_eval: a statement for the other family does nothing
                pc = b
                continue
        elif op == OP_NAT:
            _nat(out, data, a, b, c, map_addr if code[pc, 4] else -1, map_port if code[pc, 5] else -1)
            return NF_ACCEPT
        elif op == OP_FLOW_ADD:
            if _flow_offload_ok(buf, buflen, pm, b):
                out[OUT_FLOW] = a
            else:
                verdict = NFT_BREAK
        elif op == OP_END:
            verdict = NFT_RETURN
        else:  # OP_PUNT, or anything this VM does not know
            return NFT_PUNT
        # ---- the verdict: nft_do_chain's switch ----
        if verdict == NFT_CONTINUE:
            pc += 1
        elif verdict == NFT_BREAK:
            pc = next_rule
        elif verdict == NF_ACCEPT or verdict == NF_DROP:
            return verdict
        elif verdict == NFT_JUMP:
            if sp >= NFT_JUMP_STACK_SIZE:
                return NF_DROP  # nft_jumpstack_push: WARN_ON_ONCE, NF_DROP
            stack[sp] = next_rule
            sp += 1
            pc = chains[target, CH_START]
        elif verdict == NFT_GOTO:
            pc = chains[target, CH_START]
        elif verdict == NFT_RETURN:
            if sp == 0:
                return chains[chain_id, CH_POLICY]
            sp -= 1
            pc = stack[sp]
        else:
            return NFT_PUNT  # a verdict the VM does not implement (queue...)


@njit(cache=True, nogil=True)
def nft_vm_run(progs, chain_id, buf, pm, out, fv):
    """nft_do_chain for one packet: NF_ACCEPT, NF_DROP or NFT_PUNT (see nft_vm_run_regs; undone)."""
    regs = np.zeros(NFT_REG_FILE, np.uint8)
    stack = np.zeros(NFT_JUMP_STACK_SIZE, np.int64)
    undo = np.zeros((UNDO_MAX + 1, UNDO_W), np.int64)
    v = nft_vm_run_regs(progs, chain_id, buf, pm, out, regs, stack, fv, undo)
    if v == NFT_PUNT:
        nft_dyn_undo(progs[PROG_DYN], undo)
    return v


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nft_vm_commit(progs, out):
    """Apply a run's counter hits (nft_counter_eval: packets + 1, bytes + skb->len); returns the hits."""
    counters = progs[8]
    n = out[OUT_NCNT]
    for i in range(n):
        row = out[OUT_CNT + i]
        counters[row, 0] += 1
        counters[row, 1] += out[OUT_LEN]
    return n


@njit(cache=True, nogil=True)
def nft_vm_do_chain(progs, chain_id, buf, pm, out, fv):
    """The Python classic path's entry, one dispatch per chain: PM_CTSTATE from PM_CT and PM_CTINFO, the
    run, and the commit when the run decided. Returns NF_ACCEPT, NF_DROP or NFT_PUNT (nothing committed)."""
    pm[PM_CTSTATE] = nf_ct_state_bit(pm[PM_CT] != 0, pm[PM_CTINFO])
    v = nft_vm_run(progs, chain_id, buf, pm, out, fv)
    if v != NFT_PUNT:
        nft_vm_commit(progs, out)
    return v

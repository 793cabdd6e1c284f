"""NAT binding over the conntrack table's rows, compiled: get_unique_tuple and what it calls, and the
by-source list find_appropriate_src walks.

Linux: net/netfilter/nf_nat_core.c (nf_nat_setup_info's tuple choice: get_unique_tuple,
find_appropriate_src, same_src, nf_in_range, find_best_ips_proto, nf_nat_l4proto_unique_tuple,
nf_nat_used_tuple, the nf_nat_bysource hash) and nft_nat.c › nft_nat_setup_netmap.
The Python NAT hook (nat.py › nf_nat_setup_info) and the compiled classic lane
(flowpath/inet/classic_lane.py) both bind with nf_nat_setup_row: one implementation.

Tuples are key rows (flowpath/flowtable/key.py). A binding changes the unconfirmed entry's reply row,
whose inverse is the tuple Linux's functions pass around: after a SRC manip the original direction's
source is the reply's destination and its port the reply's destination port; after a DST manip its
destination is the reply's source and its port the reply's source port; an ICMP echo id is both
halves of K_PORTS. So each candidate is built as the reply it would give, and "is it used?"
(nf_nat_used_tuple) is one lookup of that reply in the index.

The range nr (int64[NR_WORDS]) is struct nf_nat_range2: flags, the min and max address as four
big-endian 32-bit words each (an IPv4 address in the last), the min and max port.

Deviations: the port search starts at the packet's own port and walks up, and a later round starts at
a hash of the original tuple, so replays are deterministic; NF_NAT_RANGE_PROTO_RANDOM(_FULLY) offsets
come from the table's seeded PRNG (prng, xorshift32). find_best_ips_proto hashes with flow_mix, not
jhash; in an IPv6 range wider than 2^62 addresses only the low 62 bits of the offset vary. The
by-source list is walked oldest first (Linux's hlist gives the newest first).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.key import K_DADDR, K_ENCAP, K_PORTS, K_PROTO, K_SADDR, KEY_ROW
from flowpath.netfilter.constants import (
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    NF_NAT_MANIP_SRC,
)
from flowpath.netfilter.ct_layout import CT_STATUS
from flowpath.netfilter.nat_range import (
    NF_NAT_RANGE_MAP_IPS,
    NF_NAT_RANGE_NETMAP,
    NF_NAT_RANGE_PERSISTENT,
    NF_NAT_RANGE_PROTO_OFFSET,
    NF_NAT_RANGE_PROTO_RANDOM,
    NF_NAT_RANGE_PROTO_RANDOM_FULLY,
    NF_NAT_RANGE_PROTO_SPECIFIED,
)
from flowpath.netfilter.nf_conntrack_table import NF_CT_NOT_FOUND, nf_ct_find, nf_ct_find_expired_ed
from flowpath.packet.layout import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from flowpath.packet.steer import flow_hash_words, flow_mix, port_word

NR_FLAGS, NR_MIN, NR_MAX, NR_PMIN, NR_PMAX = 0, 1, 5, 9, 10
NR_EXPIRED = 11  # out: the expired entry (ed) the binding found in its way and counted free, else -1
NR_WORDS = 12
NAT_OK, NAT_NO_PORTS = 0, 1  # nf_nat_setup_row's results; <= -2: an expired entry in the way (nf_ct_find's)
NF_NAT_MAX_ATTEMPTS = 128  # nf_nat_core.c: bound the port search per packet
_RANDOM_ALL = NF_NAT_RANGE_PROTO_RANDOM | NF_NAT_RANGE_PROTO_RANDOM_FULLY
_M32 = 0xFFFFFFFF


def nat_range_words(flags: int, min_addr: int, max_addr: int, min_proto: int, max_proto: int, out=None):
    """An nf_nat_range2 as the int64[NR_WORDS] nr the compiled binding reads."""
    nr = np.zeros(NR_WORDS, np.int64) if out is None else out
    nr[NR_FLAGS], nr[NR_PMIN], nr[NR_PMAX], nr[NR_EXPIRED] = flags, min_proto, max_proto, -1
    for w in range(4):
        nr[NR_MIN + w] = (min_addr >> (96 - 32 * w)) & _M32
        nr[NR_MAX + w] = (max_addr >> (96 - 32 * w)) & _M32
    return nr


# ---- the by-source list: bys = (head int64[nb, 2]: first, last row + 1 of a bucket (0: none),
#      link int64[rows, 3]: next row + 1, previous row + 1, linked) --------------------------------
def nf_nat_bysource_new(nbuckets: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty by-source lists: nbuckets (a power of two) buckets over rows rows."""
    return np.zeros((nbuckets, 2), np.int64), np.zeros((rows, 3), np.int64)


@njit(cache=True, nogil=True, inline="always")
def _src_hash(proto, a0, a1, a2, a3, sport, seed):
    """Linux: hash_by_src: the protocol, source address and source port (or ICMP id)."""
    h = flow_mix((seed ^ proto) & _M32)
    h = flow_mix((h ^ a0) & _M32)
    h = flow_mix((h ^ a1) & _M32)
    h = flow_mix((h ^ a2) & _M32)
    h = flow_mix((h ^ a3) & _M32)
    return flow_mix((h ^ (sport << 7)) & _M32)


@njit(cache=True, nogil=True, inline="always")
def nat_src_bucket(head, proto, a0, a1, a2, a3, sport, seed):
    """The by-source bucket of a source: its protocol word, address words and port (or ICMP id)."""
    return _src_hash(proto, a0, a1, a2, a3, sport, seed) & (head.shape[0] - 1)


@njit(cache=True, nogil=True, inline="always")
def nf_nat_bysource_bucket(head, key, ed, seed):
    """The bucket of the ORIGINAL tuple in key row ed."""
    return nat_src_bucket(head, np.int64(key[ed, K_PROTO]), np.int64(key[ed, K_SADDR]), np.int64(key[ed, K_SADDR + 1]),
                          np.int64(key[ed, K_SADDR + 2]), np.int64(key[ed, K_SADDR + 3]),
                          np.int64(key[ed, K_PORTS]) >> 16, seed)  # fmt: skip


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nf_nat_bysource_add(bys, key, r, seed):
    """Row r (a SRC-NATed entry being confirmed) at the tail of its source's bucket."""
    head, link = bys
    if link[r, 2]:
        return
    b = nf_nat_bysource_bucket(head, key, 2 * r, seed)
    last = head[b, 1]
    link[r, 0], link[r, 1], link[r, 2] = 0, last, 1
    if last:
        link[last - 1, 0] = r + 1
    else:
        head[b, 0] = r + 1
    head[b, 1] = r + 1


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nf_nat_bysource_del(bys, key, r, seed):
    """Row r out of its bucket (before its key rows are cleared); nothing when it is not in one."""
    head, link = bys
    if not link[r, 2]:
        return
    b = nf_nat_bysource_bucket(head, key, 2 * r, seed)
    nxt, prv = link[r, 0], link[r, 1]
    if prv:
        link[prv - 1, 0] = nxt
    else:
        head[b, 0] = nxt
    if nxt:
        link[nxt - 1, 1] = prv
    else:
        head[b, 1] = prv
    link[r, 0], link[r, 1], link[r, 2] = 0, 0, 0


# ---- the tuple's fields, on a reply-form candidate c (uint32[16]) ----------------------------------
@njit(cache=True, nogil=True, inline="always")
def _addr_off(mt):
    """Where c holds the address a manip of type mt changes."""
    return K_DADDR if mt == NF_NAT_MANIP_SRC else K_SADDR


@njit(cache=True, nogil=True, inline="always")
def _port_get(c, mt, icmp):
    """The port (or ICMP id) a manip of type mt changes (nat.py's _manip_port, on the reply)."""
    p = np.int64(c[K_PORTS])
    if icmp or mt == NF_NAT_MANIP_SRC:
        return p & 0xFFFF
    return p >> 16


@njit(cache=True, nogil=True, inline="always")
def _port_set(c, mt, icmp, port):
    p = np.int64(c[K_PORTS])
    if icmp:
        c[K_PORTS] = (port << 16) | port
    elif mt == NF_NAT_MANIP_SRC:
        c[K_PORTS] = (p & 0xFFFF0000) | port
    else:
        c[K_PORTS] = (port << 16) | (p & 0xFFFF)


@njit(cache=True, nogil=True, inline="always")
def _nr_word(nr, base, l3, w):
    """Word w of the range address at nr[base : base + 4], in the key's layout (IPv4 in word 0)."""
    if l3 == 4:
        return nr[base + 3] if w == 0 else 0
    return nr[base + w]


@njit(cache=True, nogil=True, inline="always")
def _addr_cmp(c, off, nr, base, l3):
    """-1, 0, 1 as the address c[off : off + 4] is below, equal to or above the range's one."""
    for w in range(4):
        a, b = np.int64(c[off + w]), _nr_word(nr, base, l3, w)
        if a != b:
            return -1 if a < b else 1
    return 0


@njit(cache=True, nogil=True, inline="always")
def _l4proto_in_range(c, mt, nr, has_ports, icmp):
    """Linux: nf_nat_l4proto_in_range."""
    if not has_ports:
        return True
    p = _port_get(c, mt, icmp)
    return nr[NR_PMIN] <= p <= nr[NR_PMAX]


@njit(cache=True, nogil=True, inline="always")
def _nf_in_range(c, nr, l3, has_ports, icmp):
    """Linux: nf_in_range: is the tuple's source inside the range (source NAT only)?"""
    f = nr[NR_FLAGS]
    if f & NF_NAT_RANGE_MAP_IPS:
        if _addr_cmp(c, K_DADDR, nr, NR_MIN, l3) < 0 or _addr_cmp(c, K_DADDR, nr, NR_MAX, l3) > 0:
            return False
    if not f & NF_NAT_RANGE_PROTO_SPECIFIED:
        return True
    return _l4proto_in_range(c, NF_NAT_MANIP_SRC, nr, has_ports, icmp)


@njit(cache=True, nogil=True, inline="always")
def _used(views, c, now_ns, nr):
    """Linux: nf_nat_used_tuple: 1 when a live entry holds the reply c, 0 when none. An expired one
    is free, as nf_conntrack_tuple_taken's nf_ct_gc_expired makes it: the first is noted in
    nr[NR_EXPIRED] for the owner to remove once the binding is made; another gives nf_ct_find's
    <= -2 (nothing is bound: the owner removes it and asks again)."""
    ed = nf_ct_find(views, c, now_ns)
    if ed >= 0:
        return 1
    if ed == NF_CT_NOT_FOUND:
        return 0
    e = nf_ct_find_expired_ed(ed)
    if nr[NR_EXPIRED] < 0:
        nr[NR_EXPIRED] = e
    if (nr[NR_EXPIRED] >> 1) == (e >> 1):
        return 0
    return ed


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nf_ct_key_cpu(c, nr_cpus):
    """The worker a packet with the tuple of key row c (either direction) steers to: the symmetric
    hash of flowpath/packet/steer.py over the key's fields (nf_ct_tuple_cpu's)."""
    if nr_cpus <= 1:
        return 0
    w = np.int64(c[K_PROTO])
    l4 = w & 0xFF
    s = np.int64(c[K_SADDR]) ^ np.int64(c[K_SADDR + 1]) ^ np.int64(c[K_SADDR + 2]) ^ np.int64(c[K_SADDR + 3])
    d = np.int64(c[K_DADDR]) ^ np.int64(c[K_DADDR + 1]) ^ np.int64(c[K_DADDR + 2]) ^ np.int64(c[K_DADDR + 3])
    ports = np.int64(c[K_PORTS])
    p = port_word(l4, ports >> 16, ports & 0xFFFF, np.int64(c[K_ENCAP]) >> 8)
    return flow_hash_words(s, d, l4, p) % nr_cpus


@njit(cache=True, nogil=True, inline="always")
def _prng16(prng):
    """The next 16 random bits of the table's seeded xorshift32 (get_random_u16's role)."""
    x = prng[0]
    x ^= (x << 13) & _M32
    x ^= x >> 17
    x ^= (x << 5) & _M32
    prng[0] = x
    return x & 0xFFFF


# ---- get_unique_tuple's steps --------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _find_appropriate_src(views, bys, c, r, nr, l3, has_ports, icmp, out):
    """Linux: find_appropriate_src: the mapping an entry with the same source got (same_src), into out
    when it is within the range. c is the current reply; out a scratch row."""
    key, seed = views[1], views[5]
    head, link = bys
    sport = _port_get(c, NF_NAT_MANIP_SRC, icmp)
    b = nat_src_bucket(head, np.int64(c[K_PROTO]), np.int64(c[K_DADDR]), np.int64(c[K_DADDR + 1]),
                       np.int64(c[K_DADDR + 2]), np.int64(c[K_DADDR + 3]), sport, seed)  # fmt: skip
    e = head[b, 0]
    while e:
        o = e - 1
        e = link[o, 0]
        oe = 2 * o
        same = o != r and key[oe, K_PROTO] == c[K_PROTO] and (np.int64(key[oe, K_PORTS]) >> 16) == sport
        for w in range(4):
            same = same and key[oe, K_SADDR + w] == c[K_DADDR + w]
        if not same:
            continue
        for j in range(KEY_ROW):
            out[j] = c[j]
        for w in range(4):  # the other's mapped source: its reply's destination and port
            out[K_DADDR + w] = key[oe + 1, K_DADDR + w]
        if has_ports:
            _port_set(out, NF_NAT_MANIP_SRC, icmp, _port_get(key[oe + 1], NF_NAT_MANIP_SRC, icmp))
        if _nf_in_range(out, nr, l3, has_ports, icmp):
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _find_best_ips_proto(c, nr, mt, l3):
    """Linux: find_best_ips_proto: the address in the range, by a hash of the addresses so that a
    client keeps its address (of the source alone with NF_NAT_RANGE_PERSISTENT)."""
    f = nr[NR_FLAGS]
    if not f & NF_NAT_RANGE_MAP_IPS:
        return
    off = _addr_off(mt)
    same = True
    for w in range(4):
        same = same and nr[NR_MIN + w] == nr[NR_MAX + w]
    if not same:
        h = np.int64(0x5BD1E995)
        for w in range(4):  # the original direction's source (the reply's destination), then its destination
            h = flow_mix((h ^ np.int64(c[K_DADDR + w])) & _M32)
        if not f & NF_NAT_RANGE_PERSISTENT:
            for w in range(4):
                h = flow_mix((h ^ np.int64(c[K_SADDR + w])) & _M32)
        j = ((h & 0x3FFFFFFF) << 32) | flow_mix((h ^ 0x27D4EB2F) & _M32)  # 62 bits
        d0, d1, d2, d3 = np.int64(0), np.int64(0), np.int64(0), np.int64(0)  # max - min, word by word
        borrow = np.int64(0)
        for w in range(3, -1, -1):
            v = nr[NR_MAX + w] - nr[NR_MIN + w] - borrow
            borrow = 1 if v < 0 else 0
            v &= _M32
            if w == 3:
                d3 = v
            elif w == 2:
                d2 = v
            elif w == 1:
                d1 = v
            else:
                d0 = v
        if d0 == 0 and d1 == 0 and d2 < (1 << 30):
            j %= ((d2 << 32) | d3) + 1
        carry = j & _M32  # min + j, from the low word up
        hi = j >> 32
        for w in range(3, -1, -1):
            v = nr[NR_MIN + w] + carry
            nr[NR_MIN + w] = v & _M32
            carry = (v >> 32) + hi
            hi = 0
    for w in range(4):
        c[off + w] = _nr_word(nr, NR_MIN, l3, w)


@njit(cache=True, nogil=True, inline="always")
def _unique_tuple(views, r, c, nr, mt, icmp, nr_cpus, prng, now_ns):
    """Linux: nf_nat_l4proto_unique_tuple: search the port (or ICMP id) range for a reply nobody
    holds; with several workers the first free one that keeps the connection's worker, else the
    first free one (nat.py › nf_nat_steers_here). NAT_OK with c set, NAT_NO_PORTS, or <= -2."""
    key = views[1]
    f = nr[NR_FLAGS]
    port = _port_get(c, mt, icmp)
    if icmp:
        if f & NF_NAT_RANGE_PROTO_SPECIFIED:
            lo, size = nr[NR_PMIN], nr[NR_PMAX] - nr[NR_PMIN] + 1
        else:
            lo, size = np.int64(0), np.int64(65536)
    elif not f & NF_NAT_RANGE_PROTO_SPECIFIED:
        if mt != NF_NAT_MANIP_SRC:
            return NAT_OK  # destination ports are never changed unless a range asks for it
        if port < 512:
            lo, size = np.int64(1), np.int64(511)  # loose convention: below 512 for credential passing
        elif port < 1024:
            lo, size = np.int64(600), np.int64(1023 - 600 + 1)
        else:
            lo, size = np.int64(1024), np.int64(65535 - 1024 + 1)
    else:
        lo, hi = min(nr[NR_PMIN], nr[NR_PMAX]), max(nr[NR_PMIN], nr[NR_PMAX])
        size = hi - lo + 1
    random_all = f & _RANDOM_ALL
    if random_all:
        off = _prng16(prng)
    elif mt != NF_NAT_MANIP_SRC:
        off = np.int64(0)
    else:
        off = port - lo
    my_cpu = nf_ct_key_cpu(key[2 * r], nr_cpus)
    attempts = min(size, NF_NAT_MAX_ATTEMPTS)
    while True:
        first_free = np.int64(-1)
        for _ in range(attempts):
            p = lo + off % size
            off += 1
            _port_set(c, mt, icmp, p)
            u = _used(views, c, now_ns, nr)
            if u < 0:
                return u
            if u == 0:
                if nf_ct_key_cpu(c, nr_cpus) == my_cpu:
                    return NAT_OK
                if first_free < 0:
                    first_free = p
        if first_free >= 0:
            _port_set(c, mt, icmp, first_free)
            return NAT_OK
        if attempts >= size or attempts < 16:
            return NAT_NO_PORTS
        attempts //= 2
        if random_all:
            off = _prng16(prng)
        else:  # a hash of the original tuple and the round: a crowd sharing one port spreads out
            h = flow_mix(attempts)
            for j in range(KEY_ROW):
                h = flow_mix((h ^ np.int64(key[2 * r, j])) & _M32)
            off = h


@njit(cache=True, nogil=True, inline="always")
def _get_unique_tuple(views, bys, r, scr, nr, mt, l3, has_ports, icmp, nr_cpus, prng, now_ns):
    """Linux: get_unique_tuple: keep what we can (the same source mapping, the same port), else
    search. scr[0] holds the current reply and ends as the chosen one; scr[1] is scratch."""
    c, alt = scr[0], scr[1]
    f = nr[NR_FLAGS]
    random_all = f & _RANDOM_ALL
    if mt == NF_NAT_MANIP_SRC and not random_all:
        if _nf_in_range(c, nr, l3, has_ports, icmp):
            u = _used(views, c, now_ns, nr)
            if u <= 0:
                return u if u < 0 else NAT_OK
        elif _find_appropriate_src(views, bys, c, r, nr, l3, has_ports, icmp, alt):
            u = _used(views, alt, now_ns, nr)
            if u < 0:
                return u
            if u == 0:
                for j in range(KEY_ROW):
                    c[j] = alt[j]
                return NAT_OK
    _find_best_ips_proto(c, nr, mt, l3)
    if not random_all:
        if f & NF_NAT_RANGE_PROTO_SPECIFIED:
            if not f & NF_NAT_RANGE_PROTO_OFFSET and _l4proto_in_range(c, mt, nr, has_ports, icmp):
                if nr[NR_PMIN] == nr[NR_PMAX]:
                    return NAT_OK
                u = _used(views, c, now_ns, nr)
                if u <= 0:
                    return u if u < 0 else NAT_OK
        else:
            u = _used(views, c, now_ns, nr)
            if u <= 0:
                return u if u < 0 else NAT_OK
    if not has_ports:
        return NAT_OK
    return _unique_tuple(views, r, c, nr, mt, icmp, nr_cpus, prng, now_ns)


@njit(cache=True, nogil=True, inline="always")
def _setup_netmap(c, nr, mt, l3):
    """Linux: nft_nat_setup_netmap: keep the address's host part, take the network part from the
    range (min and max become that one address)."""
    off = _addr_off(mt)
    for w in range(4):
        if l3 == 4:
            a = np.int64(c[off]) if w == 3 else 0
        else:
            a = np.int64(c[off + w])
        netmask = ~(nr[NR_MIN + w] ^ nr[NR_MAX + w]) & _M32
        v = (a & ~netmask & _M32) | (nr[NR_MIN + w] & netmask)
        nr[NR_MIN + w] = nr[NR_MAX + w] = v


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nf_nat_setup_row(views, bys, r, mt, nr, nr_cpus, prng, scr, now_ns):
    """Linux: nf_nat_setup_info for row r, an unconfirmed entry whose manip mt is not bound yet:
    choose the tuple (get_unique_tuple) within the range nr (int64[NR_WORDS], altered: netmap and
    address choice write into it), alter the reply row (nf_conntrack_alter_reply) and set the status
    bits. scr: uint32[2, 16] scratch. Returns NAT_OK, NAT_NO_PORTS (nothing changed but the PRNG), or
    a second expired entry's <= -2 (nothing changed: the owner removes it and calls again). The first
    expired entry met is left in nr[NR_EXPIRED] (-1 before the call): the owner removes it after."""
    key, hot = views[1], views[2]
    er = 2 * r + 1
    c = scr[0]
    for j in range(KEY_ROW):
        c[j] = key[er, j]
    w = np.int64(c[K_PROTO])
    l3, l4 = (w >> 8) & 0xF, w & 0xFF
    icmp = l4 == IPPROTO_ICMP or l4 == IPPROTO_ICMPV6
    has_ports = icmp or l4 == IPPROTO_TCP or l4 == IPPROTO_UDP
    if nr[NR_FLAGS] & NF_NAT_RANGE_NETMAP and nr[NR_FLAGS] & NF_NAT_RANGE_MAP_IPS:
        _setup_netmap(c, nr, mt, l3)
    p0, x0 = prng[0], nr[NR_EXPIRED]
    res = _get_unique_tuple(views, bys, r, scr, nr, mt, l3, has_ports, icmp, nr_cpus, prng, now_ns)
    if res < 0:
        prng[0], nr[NR_EXPIRED] = p0, x0
        return res
    if res != NAT_OK:
        return res
    changed = False
    for j in range(KEY_ROW):
        changed = changed or key[er, j] != c[j]
    if changed:
        for j in range(KEY_ROW):
            key[er, j] = c[j]
        hot[r, CT_STATUS] |= IPS_SRC_NAT if mt == NF_NAT_MANIP_SRC else IPS_DST_NAT
    hot[r, CT_STATUS] |= IPS_SRC_NAT_DONE if mt == NF_NAT_MANIP_SRC else IPS_DST_NAT_DONE
    return NAT_OK

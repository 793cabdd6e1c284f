"""include/net/netfilter/nf_flow_table.h: the entry layout, the tuple hash and the index probe.

`struct flow_offload_tuple` puts the key first and closes it with `struct {} __hash`; here one entry is
one 64-byte row of `key` (uint32[cap, 16]): words 0..14 are the key (what the hash and the compare
cover, `KEY`), word 15 the hot value word a hit needs first (flags, dir, xmit type, tunnel parms). A
second 64-byte row of `val` (int64[cap, 8]) holds the timeout, the counters, the IPv4 NAT values, the
cached MACs and the output (oifidx, mtu), so a hit touches two cache lines of its entry and one 8-byte
probe record. The two rows of an entry are the halves of one ENTRY_SIZE-aligned 128-byte block (`key`
and `val` are strided views of one buffer, core.py › flow_entry_rows): both lines sit in one page and
one DRAM row, and neither straddles a line boundary.
(The feasibility prototype measured one line per entry plus 16-byte probe records at about 2x a
plain SoA table with 65536 flows; our key is 60 bytes, not 13, so the value spills to a second line.)

The key has Linux's encapsulation members: `encap[2]` (VLAN tags, outer first: their TCIs in K_VLAN,
how many and which TPID in the K_PROTO word) and, since 6.19, `tun` (the outer IPv4 addresses of an
IPIP packet: K_TUN_SADDR, K_TUN_DADDR). Why the entry stays 128 bytes with three more key words: the
four hot words shrank to one (flags, dir and xmit type always fitted in one word; oifidx and mtu
moved into the val row, which the hit reads anyway, and the IPv4 NAT addresses share one val word),
and the transmit side of an encapsulated flow keeps no copy of its tags or outer addresses: as Linux
(nf_flow_encap_push, nf_flow_tunnel_ipip_push), it pushes the encapsulation of the *reverse* tuple,
entry e ^ 1, the adjacent 128-byte block, read only by entries with XMIT_ENCAP set.
With `tunnel_key="hash"` (the v6 patch's design, kept so that the review debate can be measured) the
outer pair is folded into the K_ENCAP word (tun_addr_hash) and K_TUN_* stay out of the hash and the
compare; they still hold the addresses, for the reverse direction's transmit and for listings.

Values are stored in wire order as the big-endian loads in `packet.csum` return them (`ld32`), so
the hit path compares and rewrites without byte swaps. IPv4 addresses sit in the first of four words.

The scalar helpers here (`flow_offload_hash`, `flow_offload_probe`) are @njit and serve both the
compiled hook and the Python owner (`core.Flowtable`): one hash, one probe, two callers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from flowpath.packet.jhash import JHASH_INITVAL, jhash_final

# struct flow_offload_tuple, key part (uint32 words of `key`)
K_IIFIDX = 0  # int iifidx: the physical device (a VLAN's tags are in encap[], as Linux)
K_PROTO = 1  # l3proto << 8 | l4proto | the encapsulation bits ENC_* (l3proto 4 or 6; Linux stores AF_INET/6)
K_SADDR = 2  # 4 words: src_v6, or src_v4 in word 0 and zeros after
K_DADDR = 6  # 4 words
K_PORTS = 10  # src_port << 16 | dst_port
K_ENCAP = 11  # 0, ESP input's SA index + 1 (flowtable/xfrm.py), or tunnel_key="hash"'s outer-pair hash
K_VLAN = 12  # encap[0].id << 16 | encap[1].id: the VLAN TCIs, outer tag first (0 when absent)
K_TUN_SADDR = 13  # tun.src_v4: the outer source of an IPIP packet (the tunnel's remote)
K_TUN_DADDR = 14  # tun.dst_v4: its outer destination (the tunnel's local address)
FLOW_KEY_WORDS = 15
KEY = ("iifidx", "proto", "saddr", "daddr", "ports", "encap", "vlan", "tun_saddr", "tun_daddr")
# ---- __hash ----: the hot value word of `key`
V_FLAGS = 15  # enum nf_flow_flags bits | dir | xmit_type | XMIT_ENCAP | tunnel parms (flags_word)
V_XMIT = V_FLAGS  # the same word: dir, xmit type and out-encapsulation are read with the flags
KEY_ROW = 16

# K_PROTO's encapsulation bits (encap_num, encap[i].proto, tun_num in Linux's tuple)
ENC_SHIFT = 16
ENC_VLAN_NUM = 3 << 16  # encap_num: VLAN tags, 0..2 (NF_FLOW_TABLE_ENCAP_MAX)
ENC_VLAN0_AD = 1 << 18  # encap[0].proto is ETH_P_8021AD (else ETH_P_8021Q)
ENC_VLAN1_AD = 1 << 19  # encap[1].proto is ETH_P_8021AD
ENC_TUN = 1 << 20  # tun_num: an IPIP outer header (IPPROTO_IPIP over IPv4)
NF_FLOW_TABLE_ENCAP_MAX = 2

# `val` (int64[cap, 8])
V_TIMEOUT = 0  # absolute expiry, ns of packet time (flow->timeout)
V_PACKETS = 1  # per-direction counters (nf_conn_acct, with the flowtable `counter` flag)
V_BYTES = 2
V_NAT_ADDRS = 3  # IPv4 new saddr << 32 | new daddr: the opposite tuple's daddr, saddr (nf_flow_snat_ip)
V_NAT_PORTS = 4  # new sport << 16 | new dport: the opposite tuple's dport, sport
V_H_DEST = 5  # out.h_dest as a 48-bit big-endian int
V_H_SOURCE = 6  # out.h_source
V_OUT = 7  # out.ifidx << 32 | tuple.mtu (L3; for a tunnel flow the outer route's MTU minus 20)
VAL_ROW = 8

ENTRY_SIZE = 128  # bytes per entry: its key row, then its val row, in one aligned 128-byte block
assert ENTRY_SIZE >= KEY_ROW * 4 + VAL_ROW * 8 and ENTRY_SIZE % 64 == 0

NAT6_ROW = 32  # nat6 uint8[cap, 32]: IPv6 new saddr (0..15) and new daddr (16..31), cold

# enum nf_flow_flags (bit numbers, as Linux) and their masks
NF_FLOW_SNAT = 0
NF_FLOW_DNAT = 1
NF_FLOW_CLOSING = 2
NF_FLOW_TEARDOWN = 3
F_SNAT = 1 << NF_FLOW_SNAT
F_DNAT = 1 << NF_FLOW_DNAT
F_CLOSING = 1 << NF_FLOW_CLOSING
F_TEARDOWN = 1 << NF_FLOW_TEARDOWN

# enum flow_offload_tuple_dir, enum flow_offload_xmit_type
FLOW_OFFLOAD_DIR_ORIGINAL = 0
FLOW_OFFLOAD_DIR_REPLY = 1
FLOW_OFFLOAD_XMIT_UNSPEC = 0
FLOW_OFFLOAD_XMIT_NEIGH = 1
FLOW_OFFLOAD_XMIT_XFRM = 2
FLOW_OFFLOAD_XMIT_DIRECT = 3
# V_FLAGS layout above the nf_flow_flags bits (0-3)
X_DIR_SHIFT = 4  # dir: bit 4
X_TYPE_SHIFT = 5  # xmit_type: bits 5-7
XMIT_ENCAP = 1 << 8  # push the reverse tuple's encapsulation (VLAN tags, IPIP header) on transmit
XMIT_TUN_DF = 1 << 9  # the tunnel's pmtudisc: the outer header gets DF
X_TTL_SHIFT = 16  # the tunnel's ttl (0: inherit the inner one), bits 16-23
X_TOS_SHIFT = 24  # the tunnel's tos (1: inherit the inner one, as Linux's "tos inherit"), bits 24-31

# index records: int64 = (tag << 32) | (entry + 1); tag = 31 bits of the hash
IDX_EMPTY = 0
IDX_TOMBSTONE = -1

HZ_NS = 1_000_000_000  # flow_offload_refresh writes only when the timeout moves by more than HZ


# ---- packed words: each is built and taken apart here only (kernels, owner and listing alike) ----
@njit(cache=True, nogil=True, inline="always")
def flow_proto(l3proto, l4proto):
    """The K_PROTO word of an unencapsulated tuple: l3proto (4 or 6) << 8 | l4proto."""
    return (l3proto << 8) | l4proto


@njit(cache=True, nogil=True, inline="always")
def proto_l3(w):
    """l3proto (4 or 6) of a K_PROTO word."""
    return (w >> 8) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def proto_l4(w):
    """l4proto of a K_PROTO word."""
    return w & 0xFF


@njit(cache=True, nogil=True, inline="always")
def proto_encap(w):
    """The ENC_* bits of a K_PROTO word (0: no encapsulation)."""
    return w & (ENC_VLAN_NUM | ENC_VLAN0_AD | ENC_VLAN1_AD | ENC_TUN)


@njit(cache=True, nogil=True, inline="always")
def encap_vlan_num(w):
    """encap_num: the VLAN tags (0..2) of a K_PROTO word."""
    return (w & ENC_VLAN_NUM) >> ENC_SHIFT


@njit(cache=True, nogil=True, inline="always")
def encap_vlan_ad(w, i):
    """True when tag i (0: outer) of a K_PROTO word is 802.1ad (TPID 0x88a8), else 802.1Q."""
    return (w & (ENC_VLAN0_AD << i)) != 0


@njit(cache=True, nogil=True, inline="always")
def encap_has_tun(w):
    """tun_num: True when a K_PROTO word has an IPIP outer header."""
    return (w & ENC_TUN) != 0


@njit(cache=True, nogil=True, inline="always")
def encap_hlen(w):
    """Bytes of encapsulation between the Ethernet header and the inner IP header of a packet whose
    key has K_PROTO word w: 4 per VLAN tag, 20 for the IPIP outer header (options are refused)."""
    return 4 * encap_vlan_num(w) + (20 if w & ENC_TUN else 0)


@njit(cache=True, nogil=True, inline="always")
def vlan_word(tci0, tci1):
    """The K_VLAN word: encap[0].id (outer tag's TCI) << 16 | encap[1].id."""
    return (tci0 << 16) | tci1


@njit(cache=True, nogil=True, inline="always")
def vlan_tci(w, i):
    """The TCI of tag i (0: outer) of a K_VLAN word."""
    return (w >> 16) & 0xFFFF if i == 0 else w & 0xFFFF


@njit(cache=True, nogil=True, inline="always")
def ports_word(src_port, dst_port):
    """A ports word (K_PORTS, V_NAT_PORTS): src_port << 16 | dst_port, as ld32 reads them off the wire."""
    return (src_port << 16) | dst_port


@njit(cache=True, nogil=True, inline="always")
def ports_src(w):
    """src_port of a ports word."""
    return w >> 16


@njit(cache=True, nogil=True, inline="always")
def ports_dst(w):
    """dst_port of a ports word."""
    return w & 0xFFFF


@njit(cache=True, nogil=True)
def nat_addrs_word(saddr, daddr):
    """The V_NAT_ADDRS value (an int64, so a saddr >= 2**31 makes it negative): saddr << 32 | daddr."""
    return ((np.int64(saddr) & 0xFFFFFFFF) << 32) | (np.int64(daddr) & 0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def nat_saddr(w):
    """The new IPv4 source of a V_NAT_ADDRS word."""
    return (w >> 32) & 0xFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def nat_daddr(w):
    """The new IPv4 destination of a V_NAT_ADDRS word."""
    return w & 0xFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def out_word(oifidx, mtu):
    """The V_OUT word: out.ifidx << 32 | mtu."""
    return (oifidx << 32) | mtu


@njit(cache=True, nogil=True, inline="always")
def out_ifidx(w):
    """out.ifidx of a V_OUT word."""
    return w >> 32


@njit(cache=True, nogil=True, inline="always")
def out_mtu(w):
    """tuple.mtu of a V_OUT word."""
    return w & 0xFFFFFFFF


@njit(cache=True, nogil=True)
def flags_word(nat_flags, dir_, xmit_type_, encap=False, tun_ttl=0, tun_tos=1, tun_df=False):
    """The V_FLAGS word of a new entry: its nf_flow_flags, dir, xmit type and, for an entry whose
    reverse tuple is encapsulated (encap), XMIT_ENCAP and the tunnel parms its transmit uses."""
    w = nat_flags | (dir_ << X_DIR_SHIFT) | (xmit_type_ << X_TYPE_SHIFT)
    if encap:
        w |= XMIT_ENCAP | (XMIT_TUN_DF if tun_df else 0)
        w |= (tun_ttl & 0xFF) << X_TTL_SHIFT | (tun_tos & 0xFF) << X_TOS_SHIFT
    return w


@njit(cache=True, nogil=True, inline="always")
def xmit_dir(w):
    """enum flow_offload_tuple_dir of a V_FLAGS word."""
    return (w >> X_DIR_SHIFT) & 1


@njit(cache=True, nogil=True, inline="always")
def xmit_type(w):
    """enum flow_offload_xmit_type of a V_FLAGS word."""
    return (w >> X_TYPE_SHIFT) & 7


@njit(cache=True, nogil=True, inline="always")
def xmit_has_encap(w):
    """True when a V_FLAGS word pushes the reverse tuple's encapsulation."""
    return (w & XMIT_ENCAP) != 0


@njit(cache=True, nogil=True, inline="always")
def xmit_tun_ttl(w):
    """The tunnel's ttl of a V_FLAGS word (0: inherit)."""
    return (w >> X_TTL_SHIFT) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def xmit_tun_tos(w):
    """The tunnel's tos of a V_FLAGS word (bit 0 set: inherit)."""
    return (w >> X_TOS_SHIFT) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def xmit_l2(w):
    """What of a V_FLAGS word decides the link-layer header (xmit type, encapsulation), the flags and
    the direction left out: two entries with equal xmit_l2, equal neighbour and equal reverse
    encapsulation (same_encap) share one header."""
    return (w >> X_TYPE_SHIFT) & 0xF


@njit(cache=True, nogil=True, inline="always")
def tun_addr_hash(saddr, daddr):
    """The K_ENCAP word of an IPIP key under tunnel_key="hash": the v6 patch's encap id,
    __ipv4_addr_hash(saddr, daddr) = jhash_1word(saddr, daddr) (include/linux/jhash.h, unseeded, as
    there). Deviation: v6 stored it in the u16 encap.id; the K_ENCAP word keeps all 32 bits.
    Arguments and result are ints < 2**32 (int64 arithmetic, masked: no overflow)."""
    iv = (daddr + JHASH_INITVAL + (1 << 2)) & 0xFFFFFFFF  # jhash_1word: __jhash_nwords(a, 0, 0, iv + 4)
    return jhash_final((saddr + iv) & 0xFFFFFFFF, iv, iv)


@njit(cache=True, nogil=True, inline="always")
def encap_xfrm(sa):
    """The encap word of a packet ESP input decrypted with SA index sa (0 is no encapsulation)."""
    return sa + 1


@njit(cache=True, nogil=True, inline="always")
def encap_sa(w):
    """The SA index of an encap word, -1 for none."""
    return w - 1


@njit(cache=True, nogil=True, inline="always")
def flow_index_record(h, e):
    """The index record of entry e with hash h: hash_tag(h) << 32 | e + 1."""
    return (hash_tag(h) << 32) | (e + 1)


@njit(cache=True, nogil=True, inline="always")
def hash_tag(h):
    """The tag that the index record of an entry with hash h carries."""
    return h >> 1


@njit(cache=True, nogil=True, inline="always")
def record_tag(rec):
    """The tag of an index record."""
    return rec >> 32


@njit(cache=True, nogil=True, inline="always")
def record_entry(rec):
    """The entry of an index record (neither IDX_EMPTY nor IDX_TOMBSTONE)."""
    return (rec & 0xFFFFFFFF) - 1


class FlowtableViews(NamedTuple):
    """What the compiled hook reads: a Flowtable's arrays and scalars (rebuilt when it grows).

    index        int64[icap]        probe records, icap a power of two
    key          uint32[cap, 16]    key words + the hot value word (K_*, V_FLAGS); row stride 128 B
    val          int64[cap, 8]      timeout, counters, IPv4 NAT values, MACs, out (V_*); the same rows + 64 B
    nat6         uint8[cap, 32]     IPv6 NAT addresses
    mask         icap - 1
    max_probes   probe bound (inserts guarantee every entry sits within it)
    timeout_tcp_ns, timeout_udp_ns  offload timeouts (nf_flowtable_{tcp,udp}_timeout)
    counter      1 when the flowtable has the `counter` flag, else 0
    seed         the hash seed (flow_offload_hash)
    tun_hash     1: tunnel_key="hash" (the outer pair hashed into K_ENCAP), 0: perfect match (K_TUN_*)
    """

    index: np.ndarray
    key: np.ndarray
    val: np.ndarray
    nat6: np.ndarray
    mask: int
    max_probes: int
    timeout_tcp_ns: int
    timeout_udp_ns: int
    counter: int
    seed: int
    tun_hash: int


@njit(cache=True, nogil=True, inline="always")
def _mix32(h, w):
    # h, w < 2**32 and the multiplier < 2**31: the product stays below 2**63. It must: numba's
    # int64 arithmetic may assume no signed overflow (LLVM nsw), so a wrapping hash miscompiles.
    h = ((h ^ w) * 0x6A09E667) & 0xFFFFFFFF
    return h ^ (h >> 15)


@njit(cache=True, nogil=True, inline="always")
def flow_offload_hash(k, koff, seed, tun_hash):
    """32-bit hash of the key words k[koff : koff + 15] (uint32); the role of Linux's jhash over
    offsetof(__hash). seed is the table's random 32-bit seed (Linux seeds its jhash at random too, so
    that nobody can compute colliding tuples offline); tun_hash 1 leaves K_TUN_* out (tunnel_key
    "hash": the outer pair is in K_ENCAP). Returns an int64 in [0, 2**32).

    No Linux counterpart for the function itself: xor-multiply-shift in four lanes of three words
    (a short dependency chain), lanes merged, then murmur3's fmix32 so that the low bits (the home
    slot) depend on every key bit. Same value with the JIT off. An IPv4 key goes to
    flow_offload_hash_ipv4 over its meaningful words (the other six are zero by construction).
    """
    ts, td = _tun_words(k, koff, tun_hash)
    x = flow_encap_mix(np.int64(k[koff + K_PROTO]), np.int64(k[koff + K_VLAN]), ts, td)
    if proto_l3(k[koff + K_PROTO]) == 4:
        return flow_offload_hash_ipv4(np.int64(k[koff + K_IIFIDX]), np.int64(k[koff + K_PROTO]),
                                      np.int64(k[koff + K_SADDR]), np.int64(k[koff + K_DADDR]),
                                      np.int64(k[koff + K_PORTS]), np.int64(k[koff + K_ENCAP]), x, seed)  # fmt: skip
    a, b = np.int64(0x2545F491) ^ seed, np.int64(0x9E3779B9) ^ seed
    c, d = np.int64(0x7F4A7C15) ^ seed, np.int64(0x1B873593) ^ seed
    for w in range(0, 12, 4):
        a = _mix32(a, np.int64(k[koff + w]))
        b = _mix32(b, np.int64(k[koff + w + 1]))
        c = _mix32(c, np.int64(k[koff + w + 2]))
        d = _mix32(d, np.int64(k[koff + w + 3]))
    return _hash_final(a ^ (x & 0xFFFFFFFF), b, c, d)


@njit(cache=True, nogil=True, inline="always")
def _tun_words(k, koff, tun_hash):
    if tun_hash:
        return np.int64(0), np.int64(0)
    return np.int64(k[koff + K_TUN_SADDR]), np.int64(k[koff + K_TUN_DADDR])


@njit(cache=True, nogil=True, inline="always")
def flow_encap_mix(proto, vlan, tun_saddr, tun_daddr):
    """The term the encapsulation words add to a key's hash: 0 for a key without ENC_* bits (so a
    plain key pays one predicted branch), else the three words multiplied apart (int64 < 2**63)."""
    if proto_encap(proto) == 0:
        return np.int64(0)
    return (vlan * 0x5851F42D) ^ (tun_saddr * 0x2545F491) ^ ((tun_daddr ^ (tun_daddr >> 13)) * 0x6C078965)


@njit(cache=True, nogil=True, inline="always")
def _hash_final(a, b, c, d):
    h = _mix32(_mix32(a, b), _mix32(c, d))
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True, inline="always")
def flow_offload_hash_ipv4(iifidx, proto, saddr, daddr, ports, encap, x, seed):
    """flow_offload_hash of an IPv4 key given as its six meaningful words (int64 each, < 2**32) and
    flow_encap_mix's term x of its encapsulation words: the same value, without building the key row
    (the compiled hook hashes straight from the header fields)."""
    # Four independent 32x31-bit products (each < 2**63: no signed overflow), so the chain is one
    # multiply deep before the final mix instead of four (hook 1 flow 46 -> 42 ns/pkt; mean probe
    # run 1.31 at load 0.38 with 100000 flows, as for a random hash).
    a = ((saddr ^ seed) * 0x6A09E667) ^ ((daddr ^ (seed >> 3)) * 0x1B873593)
    a ^= ((ports ^ (seed >> 5)) * 0x2545F491) ^ (((iifidx ^ (proto << 20) ^ encap) & 0xFFFFFFFF) * 0x7F4A7C15)
    a ^= x
    h = (a ^ (a >> 29)) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True, inline="always")
def flow_key_equal(key, e, k, koff, tun_hash):
    """True when entry e's key words equal k[koff : koff + 15] (memcmp up to __hash); tun_hash 1
    leaves K_TUN_* out. Between two IPv4 keys the six zero address words are equal by construction
    and are skipped."""
    if key[e, K_PROTO] != k[koff + K_PROTO]:
        return False
    ts, td = _tun_words(k, koff, tun_hash)
    if proto_l3(key[e, K_PROTO]) == 4:
        k4 = (np.int64(k[koff + K_IIFIDX]), np.int64(k[koff + K_PROTO]), np.int64(k[koff + K_SADDR]),
              np.int64(k[koff + K_DADDR]), np.int64(k[koff + K_PORTS]), np.int64(k[koff + K_ENCAP]),
              np.int64(k[koff + K_VLAN]), ts, td)  # fmt: skip
        return flow_key_equal_ipv4(key, e, k4, tun_hash)
    for w in range(12):
        if key[e, w] != k[koff + w]:
            return False
    return key[e, K_VLAN] == k[koff + K_VLAN] and _tun_equal(key, e, ts, td, tun_hash)


@njit(cache=True, nogil=True, inline="always")
def _tun_equal(key, e, ts, td, tun_hash):
    return tun_hash != 0 or (key[e, K_TUN_SADDR] == ts and key[e, K_TUN_DADDR] == td)


@njit(cache=True, nogil=True, inline="always")
def flow_key_equal_ipv4(key, e, k4, tun_hash):
    """flow_key_equal for an IPv4 key given as its words k4 = (iifidx, proto, saddr, daddr, ports,
    encap, vlan, tun_saddr, tun_daddr), int64 each. The encapsulation words are compared when the
    proto word (compared first) has ENC_* bits; a plain key has zeros there by construction."""
    iifidx, proto, saddr, daddr, ports, encap, vlan, ts, td = k4
    if not (key[e, K_PORTS] == ports and key[e, K_SADDR] == saddr and key[e, K_DADDR] == daddr
            and key[e, K_PROTO] == proto and key[e, K_IIFIDX] == iifidx and key[e, K_ENCAP] == encap):  # fmt: skip
        return False
    if proto_encap(proto) == 0:
        return True
    return key[e, K_VLAN] == vlan and _tun_equal(key, e, ts, td, tun_hash)


@njit(cache=True, nogil=True, inline="always")
def flow_index_walk(index, mask, max_probes, h, match, arg):
    """The probe run of hash h: the slot of the first record with h's tag whose entry e satisfies
    match(e, arg), -1 when an empty slot or max_probes come first. Tombstones carry no tag (they
    are skipped). The one probe loop: flow_offload_probe, its IPv4 and tag-only forms and
    flow_index_remove differ only in match (a compile-time constant, inlined)."""
    tag = hash_tag(h)
    slot = h & mask
    for _ in range(max_probes):
        rec = index[slot]
        if rec == IDX_EMPTY:
            return -1
        if record_tag(rec) == tag and match(record_entry(rec), arg):
            return slot
        slot = (slot + 1) & mask
    return -1


@njit(cache=True, nogil=True, inline="always")
def _entry_of(index, slot):
    return record_entry(index[slot]) if slot >= 0 else -1


@njit(cache=True, nogil=True, inline="always")
def _match_key(e, arg):
    key, k, koff, tun_hash = arg
    return flow_key_equal(key, e, k, koff, tun_hash)


@njit(cache=True, nogil=True, inline="always")
def _match_key_ipv4(e, arg):
    key, k4, tun_hash = arg
    return flow_key_equal_ipv4(key, e, k4, tun_hash)


@njit(cache=True, nogil=True, inline="always")
def _match_any(e, arg):
    return True


@njit(cache=True, nogil=True, inline="always")
def _match_entry(e, arg):
    return e == arg


@njit(cache=True, nogil=True, inline="always")
def flow_offload_probe(index, key, mask, max_probes, k, koff, h, tun_hash):
    """Find the entry whose key equals k[koff:koff+15] (hash h; tun_hash as flow_key_equal); -1 when
    absent. Tombstones are skipped.

    Linux: nf_flow_table_core.c › flow_offload_lookup (rhashtable_lookup; the TEARDOWN check is the
    caller's, so that the hook can tell a torn-down entry from a miss).
    """
    return _entry_of(index, flow_index_walk(index, mask, max_probes, h, _match_key, (key, k, koff, tun_hash)))


@njit(cache=True, nogil=True, inline="always")
def flow_offload_probe_ipv4(index, key, mask, max_probes, k4, h, tun_hash):
    """flow_offload_probe for an IPv4 key given as its six meaningful words k4 (as
    flow_key_equal_ipv4): the same entry, compared straight from the header fields."""
    return _entry_of(index, flow_index_walk(index, mask, max_probes, h, _match_key_ipv4, (key, k4, tun_hash)))


@njit(cache=True, nogil=True, inline="always")
def flow_offload_probe_tag(index, mask, max_probes, h):
    """The first entry on h's probe run whose record carries h's tag (-1: none): the entry the probe
    will most likely compare, to prefetch. Reads the index only (its home line, usually)."""
    return _entry_of(index, flow_index_walk(index, mask, max_probes, h, _match_any, 0))


@njit(cache=True, nogil=True)
def flow_index_insert(index, mask, max_probes, h, e):
    """Put entry e (hash h) in the first empty or tombstone slot within max_probes of its home.

    Returns 1 when it took an empty slot, 2 for a tombstone, 0 when no slot was free (the owner
    rebuilds or grows the index). No Linux counterpart (rhashtable grows by itself).
    """
    slot = h & mask
    for _ in range(max_probes):
        rec = index[slot]
        if rec == IDX_EMPTY or rec == IDX_TOMBSTONE:
            index[slot] = flow_index_record(h, e)
            return 1 if rec == IDX_EMPTY else 2
        slot = (slot + 1) & mask
    return 0


@njit(cache=True, nogil=True)
def flow_index_remove(index, mask, max_probes, h, e):
    """Take entry e (hash h) out of the index; returns the change in its tombstones (0 when e is
    not there).

    Its slot becomes a tombstone, so that the probe runs through it go on (1), unless the next slot
    is empty: then no run goes through it, and it is emptied, with the tombstones just before it,
    which no run needs any more either (0 or less). So entries coming and going at the end of their
    runs, the common case at the index's low load, leave no tombstones to probe past and rebuild away.
    """
    slot = flow_index_walk(index, mask, max_probes, h, _match_entry, e)
    if slot < 0:
        return 0
    return flow_index_remove_at(index, mask, slot)


@njit(cache=True, nogil=True, inline="always")
def flow_index_remove_at(index, mask, slot):
    """flow_index_remove of the record at slot, which the caller found there: the same slots emptied
    or tombstoned, the same change in tombstones returned."""
    if index[(slot + 1) & mask] != IDX_EMPTY:
        index[slot] = IDX_TOMBSTONE
        return 1
    index[slot] = IDX_EMPTY
    n = 0
    slot = (slot - 1) & mask
    while index[slot] == IDX_TOMBSTONE:  # ends: the slot just emptied at the latest
        index[slot] = IDX_EMPTY
        n -= 1
        slot = (slot - 1) & mask
    return n


@njit(cache=True, nogil=True)
def flow_index_build(index, key, used, mask, max_probes, seed, tun_hash):
    """Rebuild the index from scratch over the entries flagged in used (bool[cap]).

    Returns the number of entries that found no slot within max_probes (0 on success).
    """
    index[:] = IDX_EMPTY
    failed = 0
    for e in range(used.shape[0]):
        if used[e]:
            h = flow_offload_hash(key[e], 0, seed, tun_hash)
            if flow_index_insert(index, mask, max_probes, h, e) == 0:
                failed += 1
    return failed

"""include/net/netfilter/nf_flow_table.h: the entry layout, the tuple hash and the index probe.

`struct flow_offload_tuple` puts the key first and closes it with `struct {} __hash`; here one entry is
one 64-byte row of `key` (uint32[cap, 16]): words 0..11 are the key (what the hash and the compare
cover, `KEY`), words 12..15 the hot value a hit needs first (flags, dir/xmit/vlan, oifidx, mtu). A
second 64-byte row of `val` (int64[cap, 8]) holds the timeout, the counters, the IPv4 NAT values and
the cached MACs, so an IPv4 hit touches two cache lines of its entry and one 8-byte probe record.
The two rows of an entry are the halves of one ENTRY_SIZE-aligned 128-byte block (`key` and `val`
are strided views of one buffer, core.py › flow_entry_rows): both lines sit in one page and one DRAM
row, and neither straddles a line boundary.
(The feasibility prototype measured one line per entry plus 16-byte probe records at about 2x a
plain SoA table with 65536 flows; our key is 48 bytes, not 13, so the value spills to a second line.)

Values are stored in wire order as the big-endian loads in `packet.csum` return them (`ld32`), so
the hit path compares and rewrites without byte swaps. IPv4 addresses sit in the first of four words.

The scalar helpers here (`flow_offload_hash`, `flow_offload_probe`) are @njit and serve both the
compiled hook and the Python owner (`core.Flowtable`): one hash, one probe, two callers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

# struct flow_offload_tuple, key part (uint32 words of `key`)
K_IIFIDX = 0  # int iifidx
K_PROTO = 1  # l3proto << 8 | l4proto (l3proto 4 or 6, as the brief's tuple; Linux stores AF_INET/6)
K_SADDR = 2  # 4 words: src_v6, or src_v4 in word 0 and zeros after
K_DADDR = 6  # 4 words
K_PORTS = 10  # src_port << 16 | dst_port
K_ENCAP = 11  # encap id: 0, IPIP outer address hash or ESP SPI (later issues)
FLOW_KEY_WORDS = 12
KEY = ("iifidx", "proto", "saddr", "daddr", "ports", "encap")  # what the hash and the compare cover
# ---- __hash ----: hot value words of `key`
V_FLAGS = 12  # enum nf_flow_flags bits (1 << NF_FLOW_*)
V_XMIT = 13  # dir (bits 0-3) | xmit_type << 4 (bits 4-6) | has out-VLAN (bit 7) | VLAN TCI << 16
V_OIFIDX = 14  # out.ifidx
V_MTU = 15  # tuple.mtu (L3)
KEY_ROW = 16

# `val` (int64[cap, 8])
V_TIMEOUT = 0  # absolute expiry, ns of packet time (flow->timeout)
V_PACKETS = 1  # per-direction counters (nf_conn_acct, with the flowtable `counter` flag)
V_BYTES = 2
V_NAT_SADDR = 3  # IPv4 source after NAT: the opposite tuple's daddr (nf_flow_snat_ip, ORIGINAL)
V_NAT_DADDR = 4  # IPv4 destination after NAT: the opposite tuple's saddr
V_NAT_PORTS = 5  # new sport << 16 | new dport: the opposite tuple's dport, sport
V_H_DEST = 6  # out.h_dest as a 48-bit big-endian int
V_H_SOURCE = 7  # out.h_source
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
XMIT_VLAN = 1 << 7

# index records: int64 = (tag << 32) | (entry + 1); tag = 31 bits of the hash
IDX_EMPTY = 0
IDX_TOMBSTONE = -1

HZ_NS = 1_000_000_000  # flow_offload_refresh writes only when the timeout moves by more than HZ


# ---- packed words: each is built and taken apart here only (kernels, owner and listing alike) ----
@njit(cache=True, nogil=True, inline="always")
def flow_proto(l3proto, l4proto):
    """The K_PROTO word: l3proto (4 or 6) << 8 | l4proto."""
    return (l3proto << 8) | l4proto


@njit(cache=True, nogil=True, inline="always")
def proto_l3(w):
    """l3proto (4 or 6) of a K_PROTO word."""
    return w >> 8


@njit(cache=True, nogil=True, inline="always")
def proto_l4(w):
    """l4proto of a K_PROTO word."""
    return w & 0xFF


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


@njit(cache=True, nogil=True, inline="always")
def xmit_word(dir_, xmit_type, vlan):
    """The V_XMIT word: dir (bits 0-3) | xmit_type << 4 (bits 4-6) | has out-VLAN (bit 7) | VLAN TCI
    << 16; vlan < 0 for none."""
    w = dir_ | (xmit_type << 4)
    if vlan >= 0:
        w |= XMIT_VLAN | ((vlan & 0xFFFF) << 16)
    return w


@njit(cache=True, nogil=True, inline="always")
def xmit_dir(w):
    """enum flow_offload_tuple_dir of a V_XMIT word."""
    return w & 0xF


@njit(cache=True, nogil=True, inline="always")
def xmit_type(w):
    """enum flow_offload_xmit_type of a V_XMIT word."""
    return (w >> 4) & 7


@njit(cache=True, nogil=True, inline="always")
def xmit_has_vlan(w):
    """True when a V_XMIT word pushes an 802.1Q tag."""
    return (w & XMIT_VLAN) != 0


@njit(cache=True, nogil=True, inline="always")
def xmit_vlan(w):
    """The out-VLAN TCI of a V_XMIT word, -1 for none."""
    return np.int64(w >> 16) if w & XMIT_VLAN else np.int64(-1)  # int64 both: uint64 | int64 is float64


@njit(cache=True, nogil=True, inline="always")
def xmit_l2(w):
    """What of a V_XMIT word decides the link-layer header (xmit type, VLAN), the direction left out:
    two entries with equal xmit_l2 (and neighbour) share one header."""
    return w >> 4


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
    key          uint32[cap, 16]    key words + hot value words (K_*, V_FLAGS..V_MTU); row stride 128 B
    val          int64[cap, 8]      timeout, counters, IPv4 NAT values, MACs (V_*); the same rows + 64 B
    nat6         uint8[cap, 32]     IPv6 NAT addresses
    mask         icap - 1
    max_probes   probe bound (inserts guarantee every entry sits within it)
    timeout_tcp_ns, timeout_udp_ns  offload timeouts (nf_flowtable_{tcp,udp}_timeout)
    counter      1 when the flowtable has the `counter` flag, else 0
    seed         the hash seed (flow_offload_hash)
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


@njit(cache=True, nogil=True, inline="always")
def _mix32(h, w):
    # h, w < 2**32 and the multiplier < 2**31: the product stays below 2**63. It must: numba's
    # int64 arithmetic may assume no signed overflow (LLVM nsw), so a wrapping hash miscompiles.
    h = ((h ^ w) * 0x6A09E667) & 0xFFFFFFFF
    return h ^ (h >> 15)


@njit(cache=True, nogil=True, inline="always")
def flow_offload_hash(k, koff, seed):
    """32-bit hash of the key words k[koff : koff + 12] (uint32); the role of Linux's jhash over
    offsetof(__hash). seed is the table's random 32-bit seed (Linux seeds its jhash at random too, so
    that nobody can compute colliding tuples offline). Returns an int64 in [0, 2**32).

    No Linux counterpart for the function itself: xor-multiply-shift in four lanes of three words
    (a short dependency chain), lanes merged, then murmur3's fmix32 so that the low bits (the home
    slot) depend on every key bit. Same value with the JIT off. An IPv4 key goes to
    flow_offload_hash_ipv4 over its six meaningful words (the other six are zero by construction).
    """
    if proto_l3(k[koff + K_PROTO]) == 4:
        return flow_offload_hash_ipv4(np.int64(k[koff + K_IIFIDX]), np.int64(k[koff + K_PROTO]),
                                      np.int64(k[koff + K_SADDR]), np.int64(k[koff + K_DADDR]),
                                      np.int64(k[koff + K_PORTS]), np.int64(k[koff + K_ENCAP]), seed)  # fmt: skip
    a, b = np.int64(0x2545F491) ^ seed, np.int64(0x9E3779B9) ^ seed
    c, d = np.int64(0x7F4A7C15) ^ seed, np.int64(0x1B873593) ^ seed
    for w in range(0, FLOW_KEY_WORDS, 4):
        a = _mix32(a, np.int64(k[koff + w]))
        b = _mix32(b, np.int64(k[koff + w + 1]))
        c = _mix32(c, np.int64(k[koff + w + 2]))
        d = _mix32(d, np.int64(k[koff + w + 3]))
    return _hash_final(a, b, c, d)


@njit(cache=True, nogil=True, inline="always")
def _hash_final(a, b, c, d):
    h = _mix32(_mix32(a, b), _mix32(c, d))
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True, inline="always")
def flow_offload_hash_ipv4(iifidx, proto, saddr, daddr, ports, encap, seed):
    """flow_offload_hash of an IPv4 key given as its six meaningful words (int64 each, < 2**32):
    the same value, without building the key row (the compiled hook hashes straight from the
    header fields)."""
    # Four independent 32x31-bit products (each < 2**63: no signed overflow), so the chain is one
    # multiply deep before the final mix instead of four (hook 1 flow 46 -> 42 ns/pkt; mean probe
    # run 1.31 at load 0.38 with 100000 flows, as for a random hash).
    a = ((saddr ^ seed) * 0x6A09E667) ^ ((daddr ^ (seed >> 3)) * 0x1B873593)
    a ^= ((ports ^ (seed >> 5)) * 0x2545F491) ^ (((iifidx ^ (proto << 20) ^ encap) & 0xFFFFFFFF) * 0x7F4A7C15)
    h = (a ^ (a >> 29)) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True, inline="always")
def flow_key_equal(key, e, k, koff):
    """True when entry e's key words equal k[koff : koff + 12] (memcmp up to __hash). Between two
    IPv4 keys the six zero address words are equal by construction and are skipped."""
    if key[e, K_PROTO] != k[koff + K_PROTO]:
        return False
    if proto_l3(key[e, K_PROTO]) == 4:
        return (key[e, K_PORTS] == k[koff + K_PORTS] and key[e, K_SADDR] == k[koff + K_SADDR]
                and key[e, K_DADDR] == k[koff + K_DADDR] and key[e, K_IIFIDX] == k[koff + K_IIFIDX]
                and key[e, K_ENCAP] == k[koff + K_ENCAP])  # fmt: skip
    for w in range(FLOW_KEY_WORDS):
        if key[e, w] != k[koff + w]:
            return False
    return True


@njit(cache=True, nogil=True, inline="always")
def flow_key_equal_ipv4(key, e, k4):
    """flow_key_equal for an IPv4 key given as its six meaningful words (as flow_offload_hash_ipv4):
    k4 = (iifidx, proto, saddr, daddr, ports, encap), int64 each."""
    iifidx, proto, saddr, daddr, ports, encap = k4
    return (key[e, K_PORTS] == ports and key[e, K_SADDR] == saddr and key[e, K_DADDR] == daddr
            and key[e, K_PROTO] == proto and key[e, K_IIFIDX] == iifidx and key[e, K_ENCAP] == encap)  # fmt: skip


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
    key, k, koff = arg
    return flow_key_equal(key, e, k, koff)


@njit(cache=True, nogil=True, inline="always")
def _match_key_ipv4(e, arg):
    key, k4 = arg
    return flow_key_equal_ipv4(key, e, k4)


@njit(cache=True, nogil=True, inline="always")
def _match_any(e, arg):
    return True


@njit(cache=True, nogil=True, inline="always")
def _match_entry(e, arg):
    return e == arg


@njit(cache=True, nogil=True, inline="always")
def flow_offload_probe(index, key, mask, max_probes, k, koff, h):
    """Find the entry whose key equals k[koff:koff+12] (hash h); -1 when absent. Tombstones are
    skipped.

    Linux: nf_flow_table_core.c › flow_offload_lookup (rhashtable_lookup; the TEARDOWN check is the
    caller's, so that the hook can tell a torn-down entry from a miss).
    """
    return _entry_of(index, flow_index_walk(index, mask, max_probes, h, _match_key, (key, k, koff)))


@njit(cache=True, nogil=True, inline="always")
def flow_offload_probe_ipv4(index, key, mask, max_probes, k4, h):
    """flow_offload_probe for an IPv4 key given as its six meaningful words k4 (as
    flow_key_equal_ipv4): the same entry, compared straight from the header fields."""
    return _entry_of(index, flow_index_walk(index, mask, max_probes, h, _match_key_ipv4, (key, k4)))


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
    """Tombstone the slot holding entry e (hash h); returns 1 when found."""
    slot = flow_index_walk(index, mask, max_probes, h, _match_entry, e)
    if slot < 0:
        return 0
    index[slot] = IDX_TOMBSTONE
    return 1


@njit(cache=True, nogil=True)
def flow_index_build(index, key, used, mask, max_probes, seed):
    """Rebuild the index from scratch over the entries flagged in used (bool[cap]).

    Returns the number of entries that found no slot within max_probes (0 on success).
    """
    index[:] = IDX_EMPTY
    failed = 0
    for e in range(used.shape[0]):
        if used[e]:
            h = flow_offload_hash(key[e], 0, seed)
            if flow_index_insert(index, mask, max_probes, h, e) == 0:
                failed += 1
    return failed

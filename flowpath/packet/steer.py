"""Flow steering: which worker (CPU) a packet belongs to, the same in replay, in memory and live.

Linux: net/core/flow_dissector.c › __skb_get_hash_symmetric (a hash both directions of a connection
share) and net/core/dev.c › get_rps_cpu (hash -> CPU); net/packet/af_packet.c › fanout_demux_hash.
Linux's symmetric hash is seeded at boot, so nobody outside the kernel can predict it; flowpath's is
fixed, so that

- `replay --workers N` steers captured packets deterministically,
- NAT picks ports whose reply tuple steers to the worker that owns the connection (netfilter/nat.py),
- the live gateway's PACKET_FANOUT_CBPF program (ports/fanout.py) computes it in the kernel.

The hash, in 32-bit arithmetic (every step a classic BPF instruction can do):

    h = (l4proto << 16) ^ sport ^ dport             TCP, UDP, UDP-Lite, SCTP, DCCP (not a fragment)
        (l4proto << 16) ^ id                        ICMP echo / echo reply, ICMPv6 echo request / reply
        fold(saddr) ^ fold(daddr) ^ (l4proto << 16)  anything else, and every IPv4 fragment
        SPI                                         ESP (not a fragment): one worker owns each SA
    flow_mix(h) = ((h * 0x9E3779B1) mod 2^32) ^ (that >> 16);  cpu = flow_mix(h) % nr_cpus

fold() of an IPv4 address is the address, of an IPv6 address the XOR of its four 32-bit words. XOR makes
the hash symmetric: both directions of a connection steer to one CPU. Where there are ports, the
addresses are left out, so that NAT which keeps the ports (masquerade and SNAT keep the source port
unless it clashes; DNAT to another address keeps both) keeps the CPU too: a connection's replies reach
the worker of its first packet, and NAT chooses its ports as Linux does, with one worker or many.
Only a mapping that must change a port is steered (netfilter/nat.py). Non-IP frames (ARP) and
truncated headers steer to CPU 0. IP-in-IP (protocol 4 or 41, outer header not a fragment) is hashed on
its inner header, one level deep: a decapsulated flow reaches the CPU its other, unencapsulated
direction steers to, so the flowtable entry of both is on one worker. ESP cannot be looked into: after
decryption, a packet whose inner hash names another CPU is handed to that CPU (flowpath/workers.py).
Up to two VLAN tags (802.1Q, 802.1ad) in the frame's bytes are skipped.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.packet.csum import ld16, ld32

FLOW_MIX_MUL = 0x9E3779B1  # 2^32 / golden ratio (Knuth's multiplicative hash)
_PORTS_PROTOS = (6, 17, 33, 132, 136)  # TCP, UDP, DCCP, SCTP, UDP-Lite: sport, dport first
IPPROTO_ESP = 50
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
_ECHO_V4 = (0, 8)
_ECHO_V6 = (128, 129)


@njit(cache=True, nogil=True, inline="always")
def flow_mix(h):
    """The hash's finaliser: a multiply spreads the XOR's bits, the shift folds the high half down."""
    h = (h * FLOW_MIX_MUL) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True)
def flow_hash_words(saddr_fold, daddr_fold, l4proto, p):
    """The symmetric hash of the module docstring: of the protocol and the port word p (p >= 0), or
    of the folded addresses and the protocol (p < 0: no ports)."""
    if p >= 0:
        return flow_mix(((l4proto << 16) ^ p) & 0xFFFFFFFF)
    return flow_mix((saddr_fold ^ daddr_fold ^ (l4proto << 16)) & 0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _port_word(b, l4, end, proto, echo_a, echo_b):
    """The port word for an L4 header at l4: sport ^ dport, an echo id, or -1 (none, or cut short)."""
    for q in _PORTS_PROTOS:
        if proto == q:
            return ld16(b, l4) ^ ld16(b, l4 + 2) if l4 + 4 <= end else -1
    if proto == 1 or proto == 58:
        if l4 + 6 <= end and (b[l4] == echo_a or b[l4] == echo_b):
            return ld16(b, l4 + 4)
    return -1


@njit(cache=True, nogil=True)
def flow_hash_frame(b, off, n):
    """The steering hash of the Ethernet frame b[off:off + n]; -1 for non-IP or a cut-short header."""
    end = off + n
    if n < 14:
        return -1
    et, l3 = ld16(b, off + 12), off + 14
    for _ in range(2):
        if (et == 0x8100 or et == 0x88A8) and l3 + 4 <= end:
            et, l3 = ld16(b, l3 + 2), l3 + 4
    for level in range(2):  # the outer header, then (IPIP, IPv6-in-IP) the inner one
        if et == 0x0800:
            if l3 + 20 > end:
                return -1
            proto = np.int64(b[l3 + 9])
            s, d = ld32(b, l3 + 12), ld32(b, l3 + 16)
            l4 = l3 + (b[l3] & 15) * 4
            if ld16(b, l3 + 6) & 0x3FFF:  # MF or an offset: fragments carry no ports
                return flow_hash_words(s, d, proto, -1)
            echo_a, echo_b = 0, 8
        elif et == 0x86DD:
            if l3 + 40 > end:
                return -1
            proto = np.int64(b[l3 + 6])
            s = ld32(b, l3 + 8) ^ ld32(b, l3 + 12) ^ ld32(b, l3 + 16) ^ ld32(b, l3 + 20)
            d = ld32(b, l3 + 24) ^ ld32(b, l3 + 28) ^ ld32(b, l3 + 32) ^ ld32(b, l3 + 36)
            l4 = l3 + 40
            echo_a, echo_b = 128, 129
        else:
            return -1
        if level == 0 and (proto == IPPROTO_IPIP or proto == IPPROTO_IPV6):
            et, l3 = (0x0800 if proto == IPPROTO_IPIP else 0x86DD), l4
            continue
        if proto == IPPROTO_ESP:
            return flow_mix(ld32(b, l4)) if l4 + 4 <= end else -1
        return flow_hash_words(s, d, proto, _port_word(b, l4, end, proto, echo_a, echo_b))
    return -1


@njit(cache=True, nogil=True)
def flow_steer_frame(b, off, n, nr_cpus):
    """The CPU the Ethernet frame b[off:off + n] steers to (non-IP or cut short: CPU 0)."""
    h = flow_hash_frame(b, off, n)
    return 0 if h < 0 else h % nr_cpus


@njit(cache=True, nogil=True)
def flow_steer_batch(data, head, length, n, nr_cpus, out):
    """out[i] = the CPU of packet i of a batch's columns (PacketBatch.data/head/len), for i < n."""
    for i in range(n):
        out[i] = flow_steer_frame(data[i], np.int64(head[i]), np.int64(length[i]), nr_cpus)


def fold_addr(addr: int, l3: int) -> int:
    """fold() of the module docstring for an address held as an int (l3 4 or 6)."""
    if l3 == 4:
        return addr & 0xFFFFFFFF
    return (addr ^ (addr >> 32) ^ (addr >> 64) ^ (addr >> 96)) & 0xFFFFFFFF


def flow_steer_tuple(l3: int, l4proto: int, saddr: int, daddr: int, p: int, nr_cpus: int) -> int:
    """The CPU a packet with these header fields steers to (p: port_word's); for the control plane,
    e.g. NAT choosing a port whose replies reach the connection's worker."""
    if nr_cpus <= 1:
        return 0
    return int(flow_hash_words(fold_addr(saddr, l3), fold_addr(daddr, l3), l4proto, p)) % nr_cpus


@njit(cache=True, nogil=True)
def port_word(l4proto, sport, dport, icmp_type):
    """The port word of a conntrack tuple's fields (an ICMP echo id in sport), -1 for none. Compiled:
    NAT's port choice (flowpath/netfilter/nf_nat_core.py) asks it per candidate."""
    for q in _PORTS_PROTOS:
        if l4proto == q:
            return sport ^ dport
    for t in _ECHO_V4:
        if l4proto == 1 and icmp_type == t:
            return sport
    for t in _ECHO_V6:
        if l4proto == 58 and icmp_type == t:
            return sport
    return -1


def spi_cpu(spi: int, nr_cpus: int) -> int:
    """The CPU every ESP packet carrying `spi` steers to: the worker that owns the inbound SA."""
    return int(flow_mix(spi & 0xFFFFFFFF)) % nr_cpus if nr_cpus > 1 else 0

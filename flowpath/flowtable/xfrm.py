"""IPsec on the flowtable fast path: ESP input at early ingress and XMIT_XFRM output, in bulks per SA.

Linux: nf_flow_table_ip.c › nf_flow_xmit_xfrm (an offloaded flow whose cached route is an xfrm bundle
is sent through xfrm_output, one skb at a time) and the out-of-tree flowtable xfrm-input work of the
bulking RFC (the flowtable bulk-forwarding test notes: "adding new tunnel tuple ... l4proto=50
spi:..."), where ESP to a local SA is decrypted at ingress and the inner packet is looked up in the
flowtable. Mainline cannot do the latter: decrypted traffic always takes the classic path.

Input. A *tunnel tuple* (input device, outer addresses, ESP or ESP-in-UDP ports, SPI) -> SA is added
once the classic path has decrypted a packet of that SA on a flowtable device (so PREROUTING and
INPUT accepted it, as an established flow is accepted before it is offloaded). At ingress,
`nf_flow_xfrm_input` looks every packet up in the tunnel tuples, decrypts the hits in bulks per SA
(esp_batch.esp_decrypt_kernel: replay window, ICV, padding, lifetimes) and writes the key's encap word
`encap[i] = SA index + 1`, so that the flowtable lookup that follows only matches entries offloaded for
traffic from that SA. Those entries were added after the packet that created them passed the `fwd`
policy check with that SA in its secpath: a decrypted packet never skips the policy check, it hits an
entry whose check covered the same selector and secpath. A miss goes to the classic path with its
secpath (flowpath.inet.dev.xfrm_rcv_decrypted), as Linux's xfrm_input re-receives the inner packet.

Output. After the hook, hits whose entry has FLOW_OFFLOAD_XMIT_XFRM are encrypted in place
(esp_batch.esp_encrypt_kernel: the outer header goes into the headroom, in front of the inner packet;
the link-layer header the bulk stage wrote moves with it), one bulk per SA in batch order. Sequence
numbers must follow the order packets leave in, or the far end's replay window drops them: hits after
the batch's first slow-path packet are parked and encrypted between the slow path's packets, so an
SA shared by both paths numbers its packets in batch order.
Deviations: the outer packet does not traverse LOCAL_OUT and POSTROUTING (Linux's xfrm_output_resume
runs them); it leaves with the cached outer route and MACs. On the way in, ESP of a known tunnel tuple
skips PREROUTING and INPUT (the classic path ran them for the SA's first packet). ESP that reaches the
classic path within the same batch (an outer fragment, say) is checked against a replay window the
fast path already moved on: with a batch larger than the window it can be refused as too old.
"""

from __future__ import annotations

import secrets

import numpy as np
from numba import njit

from flowpath.flowtable.core import FlowTuple, flow_entry_rows
from flowpath.flowtable.ip import FLOW_FORWARD
from flowpath.flowtable.key import (
    FLOW_OFFLOAD_XMIT_XFRM,
    K_DADDR,
    K_ENCAP,
    K_IIFIDX,
    K_PORTS,
    K_PROTO,
    K_SADDR,
    K_TUN_DADDR,
    K_TUN_SADDR,
    K_VLAN,
    KEY_ROW,
    V_XMIT,
    encap_vlan_num,
    encap_xfrm,
    flow_index_build,
    flow_offload_hash,
    flow_offload_probe,
    flow_proto,
    ports_dst,
    xmit_has_encap,
    xmit_type,
)
from flowpath.packet.counters import TX_BYTES, TX_PACKETS
from flowpath.packet.csum import ld16, ld32
from flowpath.packet.layout import (
    ETH_HLEN,
    ETH_P_IP,
    ETH_P_IPV6,
    IP6H,
    IP_MF,
    IP_OFFSET,
    IPH,
    IPPROTO_AH,
    IPPROTO_DSTOPTS,
    IPPROTO_ESP,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_MH,
    IPPROTO_ROUTING,
    IPPROTO_UDP,
    UDPH,
    VLAN,
)
from flowpath.packet.reason import IS_SLOW, N_REASONS, Reason
from flowpath.xfrm.esp_batch import (
    esp_decrypt_kernel,
    esp_encrypt_kernel,
    esp_scratch,
    xfrm_state_wants_check,
)
from flowpath.xfrm.state import XfrmStateTable

XFRM_NO_STATE = int(Reason.XFRM_NO_STATE)
XFRM_PENDING = 254  # not a Reason: an XMIT_XFRM hit waiting for the slow packets before it (park)
assert N_REASONS < XFRM_PENDING
_IS_SLOW = IS_SLOW
MAX_PROBES = 32
IPDEFTTL = 64  # the outer header's TTL (sysctl ip_default_ttl; the classic path uses the same)


@njit(cache=True, nogil=True, inline="always")
def xfrm_want_check(sa_bulks, t, sa):
    """After a bulk of SA sa: flag it for xfrm_state_check_expire when xfrm_state_wants_check says so;
    the last slot says that some SA is flagged (the caller's fast test)."""
    if xfrm_state_wants_check(t, sa):
        sa_bulks[sa] += 1
        sa_bulks[sa_bulks.shape[0] - 1] += 1


@njit(cache=True, nogil=True, inline="always")
def xfrm_bulk_gather(psa, i, hi, bulk, idx):
    """The bulk of SA psa[i]: packets i..hi-1 of that SA (just i with bulk 0) into idx, in batch order,
    each marked -2 (taken) in psa. Returns how many."""
    sa, m = psa[i], 0
    for j in range(i, hi if bulk else i + 1):
        if psa[j] == sa:
            idx[m] = j
            m += 1
            psa[j] = -2
    return m


class XfrmInputTable:
    """The tunnel tuples: (iif, l3proto, l4proto ESP/UDP, outer saddr, daddr, UDP ports, SPI) -> SA.

    Rows use the flowtable's key layout (flowtable/key.py, SPI in the encap word), so the flowtable's
    hash and probe serve here too. Few rows (one per inbound SA and device): rebuilt on each add.
    """

    def __init__(self, capacity: int = 16, seed: int | None = None):
        self.seed = secrets.randbits(32) if seed is None else seed & 0xFFFFFFFF
        # the flowtable's own row layout, so that its hash, probe and index build serve unchanged
        self.key = flow_entry_rows(capacity)[0]
        self.sa = np.full(capacity, -1, np.int32)
        self.used = np.zeros(capacity, np.bool_)
        self.index = np.zeros(2 * capacity, np.int64)
        self.ports = np.zeros(0, np.int64)  # local UDP ports of the ESP-in-UDP tuples
        self.devs = np.zeros(1, np.bool_)  # devices with a tunnel tuple, by ifindex
        self.count = 0
        self._rows: dict[FlowTuple, int] = {}

    def add(self, t: FlowTuple, sa: int) -> bool:
        """Add (or re-point) a tunnel tuple; False when it was there already for this SA."""
        e = self._rows.get(t)
        if e is not None:
            if self.sa[e] == sa:
                return False
            self.sa[e] = sa
            return True
        if self.count == self.key.shape[0]:
            key = flow_entry_rows(2 * self.count)[0]
            key[: self.count] = self.key
            self.key = key
            for name in ("sa", "used"):
                old = getattr(self, name)
                new = np.full((2 * old.shape[0],) + old.shape[1:], -1 if name == "sa" else 0, old.dtype)
                new[: old.shape[0]] = old
                setattr(self, name, new)
        e = self.count
        self.key[e] = t.words()
        self.sa[e], self.used[e] = sa, True
        self._rows[t] = e
        self.count += 1
        if t.iifidx >= self.devs.shape[0]:
            self.devs = np.concatenate([self.devs, np.zeros(t.iifidx + 1 - self.devs.shape[0], np.bool_)])
        self.devs[t.iifidx] = True
        if t.l4proto == IPPROTO_UDP and t.dport not in self.ports:
            self.ports = np.append(self.ports, t.dport)
        icap = 2 * self.key.shape[0]
        while True:
            index = np.zeros(icap, np.int64)
            if flow_index_build(index, self.key, self.used, icap - 1, MAX_PROBES, self.seed, 0) == 0:
                break
            icap *= 2
        self.index = index
        return True

    @property
    def cols(self) -> tuple:
        """(index, key, sa, seed, ports, devs): nf_flow_xfrm_input's table arguments as one plain tuple."""
        return (self.index, self.key, self.sa, self.seed, self.ports, self.devs)

    def lookup(self, t: FlowTuple) -> int:
        """The SA index of a tunnel tuple, or -1."""
        e = self._rows.get(t)
        return -1 if e is None else int(self.sa[e])


class XfrmScratch:
    """Per-batch-capacity work arrays of the two stages (allocated once per capacity)."""

    def __init__(self, capacity: int):
        self.psa = np.zeros(capacity, np.int32)
        self.idx = np.zeros(capacity, np.int32)
        self.nhoff = np.zeros(capacity, np.uint16)
        self.kr = np.zeros(KEY_ROW, np.uint32)
        self.scr = esp_scratch()

    def cols(self, sa_bulks: np.ndarray) -> tuple:
        """(psa, idx, nhoff, kr, scr, sa_bulks): the stages' `xs` argument as one plain tuple."""
        return (self.psa, self.idx, self.nhoff, self.kr, self.scr, sa_bulks)


TUN_KEY, TUN_NOT_ESP, TUN_CLASSIC = 1, 0, -1  # nf_flow_xfrm_tunnel_key's results


@njit(cache=True, nogil=True)
def nf_flow_xfrm_tunnel_key(b, h, ln, iifidx, tports, kr):
    """The tunnel tuple of the frame at b[h:h+ln] into kr (uint32[16]).

    Returns TUN_KEY when kr holds it; TUN_NOT_ESP when the frame is no ESP (nor ESP-in-UDP to one of
    the ports tports, int64[]): IKE's non-ESP marker, NAT-T keepalives, other traffic; TUN_CLASSIC when
    it may be ESP that only the classic path can take (IPv4 options or fragments, IPv6 extension
    headers, anything short): ESP input then leaves the rest of the poll's ESP to the classic path too,
    so that every SA's packets reach its replay window in arrival order."""
    if ln < ETH_HLEN:
        return TUN_NOT_ESP
    et = ld16(b, h + 12)
    nh = h + ETH_HLEN
    end = h + ln
    if et == ETH_P_IP:
        if ln < ETH_HLEN + IPH.size or b[nh] != 0x45 or ld16(b, nh + IPH.frag_off) & (IP_MF | IP_OFFSET):
            return TUN_CLASSIC
        end = min(end, nh + ld16(b, nh + IPH.tot_len))
        l4, th = np.int64(b[nh + IPH.protocol]), nh + IPH.size
        kr[K_SADDR], kr[K_DADDR] = ld32(b, nh + IPH.saddr), ld32(b, nh + IPH.daddr)
        for w in range(1, 4):
            kr[K_SADDR + w] = 0
            kr[K_DADDR + w] = 0
        l3 = 4
    elif et == ETH_P_IPV6:
        if ln < ETH_HLEN + IP6H.size:
            return TUN_CLASSIC
        end = min(end, nh + IP6H.size + ld16(b, nh + IP6H.payload_len))
        l4, th = np.int64(b[nh + IP6H.nexthdr]), nh + IP6H.size
        for w in range(4):
            kr[K_SADDR + w] = ld32(b, nh + IP6H.saddr + 4 * w)
            kr[K_DADDR + w] = ld32(b, nh + IP6H.daddr + 4 * w)
        l3 = 6
    else:
        return TUN_NOT_ESP
    if l4 == IPPROTO_ESP:
        if th + 8 > end:
            return TUN_CLASSIC
        ports, spi = 0, ld32(b, th)
    elif l4 == IPPROTO_UDP:
        if th + UDPH.size > end:
            return TUN_CLASSIC
        ports = ld32(b, th)
        dport, known = ports_dst(ports), False
        for p in tports:  # NAT-T tunnels' local ports (4500): other UDP is not looked up
            known |= p == dport
        if not known:
            return TUN_NOT_ESP
        if th + UDPH.size + 8 > end:
            return TUN_NOT_ESP  # a NAT-T keepalive (one 0xFF byte) or IKE: no SA's sequence number
        spi = ld32(b, th + UDPH.size)
    elif l3 == 6 and (l4 == IPPROTO_HOPOPTS or l4 == IPPROTO_ROUTING or l4 == IPPROTO_FRAGMENT
                      or l4 == IPPROTO_DSTOPTS or l4 == IPPROTO_AH or l4 == IPPROTO_MH):  # fmt: skip
        return TUN_CLASSIC  # ESP may follow the extension headers
    else:
        return TUN_NOT_ESP
    if spi == 0:  # RFC 3948 non-ESP marker (IKE); SPI 0 is reserved for ESP too (RFC 4303 §2.1)
        return TUN_NOT_ESP
    kr[K_IIFIDX] = iifidx
    kr[K_PROTO] = flow_proto(l3, l4)
    kr[K_PORTS] = ports
    kr[K_ENCAP] = spi
    kr[K_VLAN], kr[K_TUN_SADDR], kr[K_TUN_DADDR] = 0, 0, 0  # ESP input takes untagged frames only
    return TUN_KEY


@njit(cache=True, nogil=True)
def nf_flow_xfrm_input(cols, n, tun, tcols, bulk, xs):
    """ESP input at early ingress over packets 0..n-1 (those still FLOW_FORWARD).

    cols   a PacketBatch's columns; tun an XfrmInputTable's cols (index, key, sa, seed, ports, devs)
    tcols  the SAD columns (Xfrm.cols, XfrmStateTable as a plain tuple)
    bulk   1: one bulk per SA, 0: one per packet (`--no-bulk`)
    xs     XfrmScratch.cols: psa, idx int32[cap], nhoff uint16[cap], kr uint32[16], scr uint8[SCRATCH]
           scratch; sa_bulks int64[nsa] in/out: +1 per bulk after which the SA wants its lifetime check
           (xfrm_state_wants_check; the caller runs xfrm_state_check_expire and clears it)
    Decrypted packets keep FLOW_FORWARD with head/len framing link-layer header + inner packet and
    encap = SA index + 1; failures get their XFRM_* drop reason. Returns the number decrypted.
    From the first packet that may be ESP but goes to the classic path (nf_flow_xfrm_tunnel_key's
    TUN_CLASSIC, an unknown tunnel tuple, a dead SA), the poll's later ESP goes there too: a replay
    window sees its SA's packets in arrival order whether the flowtable is on or not.
    """
    data, head, length, iif, _, verdict, _, encap, _ = cols
    tindex, tkey, tsa, tseed, tports, tdevs = tun
    psa, idx, nhoff, kr, scr, sa_bulks = xs
    t = XfrmStateTable(*tcols)
    flat, slot = data.reshape(-1), np.int64(data.shape[1])  # row views would cost a refcount each
    mask = tindex.shape[0] - 1
    hits = 0
    stop = False
    for i in range(n):
        psa[i] = -1
        if verdict[i] != FLOW_FORWARD:
            continue
        encap[i] = 0
        if stop:
            continue
        x = iif[i]
        if x < 0 or x >= tdevs.shape[0] or not tdevs[x]:  # no tunnel on this device: bytes not read
            continue
        k = nf_flow_xfrm_tunnel_key(flat, i * slot + np.int64(head[i]), np.int64(length[i]), np.int64(x), tports, kr)
        if k == TUN_NOT_ESP:
            continue
        e = -1 if k == TUN_CLASSIC else flow_offload_probe(tindex, tkey, mask, MAX_PROBES, kr, 0,
                                                           flow_offload_hash(kr, 0, tseed, 0), 0)  # fmt: skip
        if e < 0 or t.dead[tsa[e]]:  # a dead SA: the classic path counts XFRM_NO_STATE
            stop = True
            continue
        sa = tsa[e]
        psa[i] = sa
        nhoff[i] = ETH_HLEN
        hits += 1
    if hits == 0:
        return 0
    done = 0
    for i in range(n):  # one bulk per SA, in order of first appearance; batch order inside
        sa = psa[i]
        if sa < 0:
            continue
        m = xfrm_bulk_gather(psa, i, n, bulk, idx)
        esp_decrypt_kernel(data, head, length, verdict, nhoff, idx[:m], t, sa, scr)
        xfrm_want_check(sa_bulks, t, sa)
        for j in range(m):
            k = idx[j]
            if verdict[k] == FLOW_FORWARD:
                encap[k] = encap_xfrm(sa)
                done += 1
    return done


@njit(cache=True, nogil=True)
def nf_flow_xfrm_output(cols, lo, hi, take, dev_ok, fx, tcols, bulk, xs):
    """Encrypt, in place, the packets lo..hi-1 with verdict `take` (FLOW_FORWARD, or XFRM_PENDING for
    parked ones) whose input device is in dev_ok and whose entry has FLOW_OFFLOAD_XMIT_XFRM: one bulk
    per SA (bulk 1) or per packet (bulk 0, `--no-bulk`), each in batch order; the outer TTL is IPDEFTTL.

    cols a PacketBatch's columns; fx (key, xfrm_sa): the flowtable's key rows and SA column; tcols the
    SAD columns (Xfrm.cols); xs as nf_flow_xfrm_input (kr unused).
    Taken packets end with FLOW_FORWARD, or the drop reason of a refusal (SA expired, sequence
    overflow, no room; XFRM_NO_STATE for a parked packet whose flow was deleted meanwhile), and
    psa == -2. Returns the number refused.
    """
    data, head, length, iif, _, verdict, flow, _, _ = cols
    key, xfrm_sa = fx
    psa, idx, nhoff, _, scr, sa_bulks = xs
    t = XfrmStateTable(*tcols)
    hits = bad = 0
    for i in range(lo, hi):
        psa[i] = -1
        if verdict[i] != take or not dev_ok[iif[i]]:
            continue
        e = flow[i]
        x = key[e, V_XMIT]
        if xmit_type(x) != FLOW_OFFLOAD_XMIT_XFRM:
            continue
        if xfrm_sa[e] < 0:  # parked, and the flow was deleted by a GC run in between
            verdict[i], psa[i] = XFRM_NO_STATE, -2
            bad += 1
            continue
        psa[i] = xfrm_sa[e]
        # the header the bulk stage wrote: Ethernet and the reverse tuple's VLAN tags
        nhoff[i] = ETH_HLEN + (VLAN.size * encap_vlan_num(key[e ^ 1, K_PROTO]) if xmit_has_encap(x) else 0)
        verdict[i] = FLOW_FORWARD
        hits += 1
    if hits == 0:
        return bad
    for i in range(lo, hi):
        sa = psa[i]
        if sa < 0:
            continue
        m = xfrm_bulk_gather(psa, i, hi, bulk, idx)
        bad += esp_encrypt_kernel(data, head, length, verdict, nhoff, idx[:m], t, sa, IPDEFTTL, scr)
        xfrm_want_check(sa_bulks, t, sa)
    return bad


@njit(cache=True, nogil=True)
def nf_flow_xfrm_first_slow(verdict, n):
    """Index of the batch's first packet bound for the slow path (n when none)."""
    for i in range(n):
        v = verdict[i]
        if _IS_SLOW[v]:
            return i
    return n


@njit(cache=True, nogil=True)
def nf_flow_xfrm_park(verdict, flow, lo, n, key):
    """Park the XMIT_XFRM hits lo..n-1 (verdict XFRM_PENDING): they are encrypted between the slow
    path's packets, in batch order (nf_flow_xfrm_flush), so that a slow packet earlier in the batch
    takes the lower sequence number of a shared SA, as it leaves first. Returns how many."""
    parked = 0
    for i in range(lo, n):
        if verdict[i] == FLOW_FORWARD and xmit_type(key[flow[i], V_XMIT]) == FLOW_OFFLOAD_XMIT_XFRM:
            verdict[i] = XFRM_PENDING
            parked += 1
    return parked


@njit(cache=True, nogil=True)
def nf_flow_xfrm_flush(cols, lo, hi, dev_ok, fx, tcols, bulk, xs, acct):
    """Encrypt the parked packets lo..hi-1 of one flowtable (its devices: dev_ok; fx, tcols, bulk, xs as
    nf_flow_xfrm_output) and count them as account_batch counts hits and drops into acct (reasons,
    ifc: Stats.cols). Returns the number transmitted."""
    nf_flow_xfrm_output(cols, lo, hi, XFRM_PENDING, dev_ok, fx, tcols, bulk, xs)
    _, _, length, _, oif, verdict, _, _, _ = cols
    psa = xs[0]
    reasons, ifc = acct
    hits = 0
    nif = ifc.shape[0]
    for i in range(lo, hi):
        if psa[i] != -2:
            continue
        v = verdict[i]
        reasons[v] += 1
        if v == FLOW_FORWARD:
            hits += 1
            o = oif[i]
            if 0 <= o < nif:
                ifc[o, TX_PACKETS] += 1
                ifc[o, TX_BYTES] += length[i]
    return hits

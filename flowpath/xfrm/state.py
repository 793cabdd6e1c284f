"""The SAD: xfrm states, their table columns for the kernels, lookup, lifetimes and ACQUIRE.

Linux: net/xfrm/xfrm_state.c (xfrm_state_add, xfrm_state_lookup, xfrm_state_find, xfrm_state_look_at,
km_query, xfrm_state_check_expire). A state's configuration lives in its `XfrmState`; everything a
kernel reads or updates per packet (sequence numbers, replay window, lifetime counters, stats, EVP
contexts) lives in the `XfrmStateTable` columns at `state.index`, so both paths share one copy.

Per-CPU SAs (RFC 9611, Linux 6.13 `pcpu-num`): an outbound SA may be pinned to one CPU, a worker
here (`net.cpu`); xfrm_state_find gives CPU C its own SA, else the unpinned one, never another CPU's.
A policy with XFRM_POLICY_CPU_ACQUIRE asks for an SA per CPU: when C has none, the unpinned SA carries
the packet (the "fallback") and an ACQUIRE for C goes to the key managers, once per template and CPU
while its larval state lives (net.core.xfrm_acq_expires, 30 s). Inbound lookup is by SPI only.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from flowpath.packet.layout import IPPROTO_ESP
from flowpath.xfrm import evp
from flowpath.xfrm.replay import SEQ32_MAX, XFRMA_REPLAY_ESN_MAX

AF_INET, AF_INET6 = 2, 10
XFRM_MODE_TUNNEL = 1
XFRM_STATE_NOECN, XFRM_STATE_DECAP_DSCP, XFRM_STATE_NOPMTUDISC, XFRM_STATE_ESN = 1, 2, 4, 128
XFRM_STATE_AF_UNSPEC = 32
UDP_ENCAP_ESPINUDP = 2
XFRM_INF = (1 << 63) - 1  # Linux prints (2^64-1) as "(INF)"; int64 here so kernels never mix signs
UINT_MAX = 0xFFFFFFFF  # the pcpu_num of an SA pinned to no CPU (Linux: xfrm_state_alloc)
# struct xfrm_userpolicy_info flags (include/uapi/linux/xfrm.h); here because xfrm_state_find reads them
XFRM_POLICY_LOCALOK, XFRM_POLICY_ICMP, XFRM_POLICY_CPU_ACQUIRE = 1, 2, 4
XFRM_ACQ_EXPIRES = 30  # seconds a larval state lives: net.core.xfrm_acq_expires (sysctl_acq_expires)
KM_LOG_MAX = 1024  # acquires kept for `ctl ip xfrm monitor` and --dump-xfrm (the counters count them all)

# stats columns (struct xfrm_stats + the LINUX_MIB_XFRMIN* counters we distinguish)
XS_REPLAY_WINDOW, XS_REPLAY, XS_INTEGRITY_FAILED, XS_BAD_PADDING, XS_TRUNCATED, XS_SEQ_OVERFLOW = range(6)
XS_EXPIRED, XS_IN_PACKETS, XS_OUT_PACKETS = 6, 7, 8
XS_N = 9


class XfrmStateTable(NamedTuple):
    """Per-SA columns for the kernels (N = capacity); index = XfrmState.index.

    spi uint32[N] host order; alg int64[N] XFRM_AEAD_*; salt uint8[N, 4]; family int64[N] outer
    family; saddr, daddr uint8[N, 16] outer addresses (IPv4 in the first 4 bytes); flags int64[N];
    encap_sport, encap_dport int64[N] (0 = no NAT-T); window int64[N] replay window (packets);
    ctx_enc, ctx_dec int64[N] EVP_CIPHER_CTX addresses; oseq int64[N] last sent sequence number;
    replay_top int64[N], replay_bmp uint8[N, 4096] replay window; bytes, packets int64[N] current
    lifetime; hard_bytes, hard_packets int64[N] limits; dead uint8[N] (hard expired or overflowed);
    stats int64[N, XS_N]; check_packets, check_bytes int64[N]: the next packet/byte count at which the
    compiled path hands the SA to xfrm_state_check_expire (first use, then the next soft or hard limit).
    """

    spi: np.ndarray
    alg: np.ndarray
    salt: np.ndarray
    family: np.ndarray
    saddr: np.ndarray
    daddr: np.ndarray
    flags: np.ndarray
    encap_sport: np.ndarray
    encap_dport: np.ndarray
    window: np.ndarray
    ctx_enc: np.ndarray
    ctx_dec: np.ndarray
    oseq: np.ndarray
    replay_top: np.ndarray
    replay_bmp: np.ndarray
    bytes: np.ndarray
    packets: np.ndarray
    hard_bytes: np.ndarray
    hard_packets: np.ndarray
    dead: np.ndarray
    stats: np.ndarray
    check_packets: np.ndarray
    check_bytes: np.ndarray


def xfrm_state_table(cap: int) -> XfrmStateTable:
    i8 = np.int64
    return XfrmStateTable(
        np.zeros(cap, np.uint32), np.zeros(cap, i8), np.zeros((cap, 4), np.uint8), np.zeros(cap, i8),
        np.zeros((cap, 16), np.uint8), np.zeros((cap, 16), np.uint8), np.zeros(cap, i8),
        np.zeros(cap, i8), np.zeros(cap, i8), np.zeros(cap, i8), np.zeros(cap, i8), np.zeros(cap, i8),
        np.zeros(cap, i8), np.zeros(cap, i8), np.zeros((cap, XFRMA_REPLAY_ESN_MAX), np.uint8),
        np.zeros(cap, i8), np.zeros(cap, i8), np.full(cap, XFRM_INF, i8), np.full(cap, XFRM_INF, i8),
        np.zeros(cap, np.uint8), np.zeros((cap, XS_N), i8), np.ones(cap, i8), np.full(cap, XFRM_INF, i8),
    )  # fmt: skip


@dataclass
class XfrmLifetimeCfg:
    """struct xfrm_lifetime_cfg: soft/hard limits in bytes, packets and seconds since add / first use."""

    soft_byte_limit: int = XFRM_INF
    hard_byte_limit: int = XFRM_INF
    soft_packet_limit: int = XFRM_INF
    hard_packet_limit: int = XFRM_INF
    soft_add_expires_seconds: int = 0
    hard_add_expires_seconds: int = 0
    soft_use_expires_seconds: int = 0
    hard_use_expires_seconds: int = 0


@dataclass
class XfrmState:
    """struct xfrm_state (the configured part): id (daddr, spi, proto), props, aead, lifetimes."""

    family: int  # outer family
    saddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    daddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    spi: int
    reqid: int = 0
    proto: int = IPPROTO_ESP
    mode: int = XFRM_MODE_TUNNEL
    alg: int = evp.XFRM_AEAD_GCM
    alg_name: str = "rfc4106(gcm(aes))"
    key: bytes = b""  # cipher key without the salt
    salt: bytes = b""
    icv_truncbits: int = 128
    replay_window: int = 0
    flags: int = 0
    encap_type: int = 0
    encap_sport: int = 0
    encap_dport: int = 0
    encap_oa: str = "0.0.0.0"
    lft: XfrmLifetimeCfg = field(default_factory=XfrmLifetimeCfg)
    pcpu_num: int = UINT_MAX  # `pcpu-num C`: used only by CPU C (XFRMA_SA_PCPU)
    index: int = -1
    add_time_ns: int = -1  # -1: set by the first lifetime check (config has no packet clock)
    use_time_ns: int = 0
    soft_expired: bool = False
    owner: object = None  # the Xfrm whose table holds this state's columns
    _aead: object = None

    @property
    def tab(self) -> XfrmStateTable:
        return self.owner.tab

    @property
    def esn(self) -> bool:
        return bool(self.flags & XFRM_STATE_ESN)

    @property
    def icv_len(self) -> int:
        return self.icv_truncbits // 8

    def aead(self):
        """The `cryptography` AEAD object (created once)."""
        if self._aead is None:
            self._aead = evp.aead_new(self.alg, self.key)
        return self._aead


class Flowi(NamedTuple):
    """struct flowi as xfrm_state_find reads it: the packet's selector fields, for the larval state's
    selector (__xfrm4_init_tempsel). sport/dport: ports, or ICMP type/code; oif: the output device's
    name ("" when none)."""

    family: int
    saddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    daddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    proto: int
    sport: int
    dport: int
    oif: str = ""


@dataclass
class XfrmAcqState:
    """A larval state (km.state XFRM_STATE_ACQ): an ACQUIRE for this template (and CPU) is pending.

    Linux: xfrm_state_find inserts it after km_query, with hard_add_expires_seconds = sysctl_acq_expires;
    xfrm_state_add of a matching SA (same addresses, reqid, mode, proto, pcpu_num) deletes it.
    """

    daddr: ipaddress.IPv4Address | ipaddress.IPv6Address
    saddr: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    reqid: int
    mode: int
    proto: int
    spi: int
    pcpu_num: int
    expires_ns: int


@dataclass
class XfrmAcquire:
    """An XFRM_MSG_ACQUIRE (xfrm_user.c › build_acquire): the template's SA is wanted for this flow.

    seq: xfrm_get_acqseq; cpu: the CPU (worker) whose lookup raised it; pcpu_num: XFRMA_SA_PCPU (the
    CPU the SA is wanted for, UINT_MAX: none); sel: the larval state's selector; pol, tmpl: the policy
    and template (build_acquire copies the policy and all its templates).
    """

    seq: int
    cpu: int
    pcpu_num: int
    sel: Flowi | None
    pol: object
    tmpl: object
    now_ns: int


@dataclass
class XfrmExpire:
    """An XFRM_MSG_EXPIRE event: `hard` False for a soft expiry (rekey), True when the SA ends."""

    state: XfrmState
    hard: bool
    reason: str
    now_ns: int


class Xfrm:
    """The netns xfrm context: SAD, SPD, expire events. `net.xfrm` in Linux.

    states: the SAD, XfrmState in insertion order; slots: every state ever added, by index (its row
    of `tab`), deleted ones included: a row is never given to another SA, so a flowtable entry, a
    tunnel tuple or a packet of this poll that names a deleted SA's index finds it dead, not a
    stranger (Linux holds a reference instead). policies: see policy.py; events: XfrmExpire list the
    control plane drains (Linux sends them on NETLINK_XFRM).
    acq: the larval states (pending ACQUIREs); km: the key managers' callbacks, each called with every
    XfrmAcquire (flowpath.xfrm.km.xfrm_register_km); acquires: the last KM_LOG_MAX of them;
    acquire_count: ACQUIREs raised per CPU (all of them); sysctl_acq_expires: seconds a larval lives.
    """

    def __init__(self, capacity: int = 64):
        self.states: list[XfrmState] = []
        self.slots: list[XfrmState] = []
        self.policies: list = []
        self.policy_idx_generator = 0  # xfrm_gen_index: policy indexes stay unique across deletes
        self.events: list[XfrmExpire] = []
        self.acq: list[XfrmAcqState] = []
        self.km: list[Callable[[XfrmAcquire], None]] = []
        self.acquires: deque[XfrmAcquire] = deque(maxlen=KM_LOG_MAX)
        self.acquire_count: dict[int, int] = {}
        self.acqseq = 0
        self.sysctl_acq_expires = XFRM_ACQ_EXPIRES
        self.tab = xfrm_state_table(capacity)
        self._byid: dict[tuple[bytes, int, int], XfrmState] = {}
        self.stats_policy_block = 0  # LINUX_MIB_XFRMOUTPOLBLOCK / XFRMINNOPOLS

    @property
    def tab(self) -> XfrmStateTable:
        return self._tab

    @tab.setter
    def tab(self, t: XfrmStateTable) -> None:
        self._tab = t
        # a plain tuple crosses into numba in C (a NamedTuple is typed in Python, ~1 us per call)
        self.cols = tuple(t)

    def _grow(self) -> None:
        old = self.tab
        new = xfrm_state_table(2 * len(old.spi))
        for a, b in zip(old, new, strict=True):
            b[: len(a)] = a
        self.tab = new


def xfrm_state_add(xfrm: Xfrm, x: XfrmState, now_ns: int = -1) -> XfrmState:
    """Insert a state; ValueError when (daddr, spi, proto) exists (Linux: -EEXIST)."""
    key = (x.daddr.packed, x.spi, x.proto)
    if key in xfrm._byid:
        raise ValueError("File exists")
    if len(xfrm.slots) >= len(xfrm.tab.spi):
        xfrm._grow()
    x.index, x.add_time_ns, x.owner = len(xfrm.slots), now_ns, xfrm
    t, i = xfrm.tab, x.index
    t.spi[i], t.alg[i], t.family[i], t.flags[i] = x.spi, x.alg, x.family, x.flags
    t.salt[i] = np.frombuffer(x.salt, np.uint8)
    t.saddr[i] = 0
    t.daddr[i] = 0
    t.saddr[i, : len(x.saddr.packed)] = np.frombuffer(x.saddr.packed, np.uint8)
    t.daddr[i, : len(x.daddr.packed)] = np.frombuffer(x.daddr.packed, np.uint8)
    t.encap_sport[i], t.encap_dport[i] = (x.encap_sport, x.encap_dport) if x.encap_type else (0, 0)
    t.window[i] = x.replay_window
    for col in (
        t.ctx_enc,
        t.ctx_dec,
        t.oseq,
        t.replay_top,
        t.replay_bmp,
        t.bytes,
        t.packets,
        t.dead,
        t.stats,
    ):
        col[i] = 0
    t.hard_bytes[i], t.hard_packets[i] = x.lft.hard_byte_limit, x.lft.hard_packet_limit
    t.check_packets[i], t.check_bytes[i] = 1, XFRM_INF  # the first use sets use_time
    xfrm.states.append(x)
    xfrm.slots.append(x)
    xfrm._byid[key] = x
    # Linux: __find_acq_core(..., x->pcpu_num, ...) finds the larval state this SA answers; deleted
    xfrm.acq[:] = [
        a for a in xfrm.acq if not (_tmpl_match(a, x) and (a.reqid, a.pcpu_num) == (x.reqid, x.pcpu_num))
    ]
    return x


def xfrm_state_update(xfrm: Xfrm, x: XfrmState, new: XfrmState) -> None:
    """`ip xfrm state update` of the existing SA x: what Linux's xfrm_state_update changes of a
    valid state, its lifetime limits (and NAT-T ports); keys, algorithm and replay state stay
    (Linux ignores them there too). A soft-expired SA is young again (km.dying = 0)."""
    x.lft, x.soft_expired = new.lft, False
    t, i = xfrm.tab, x.index
    t.hard_bytes[i], t.hard_packets[i] = new.lft.hard_byte_limit, new.lft.hard_packet_limit
    t.check_packets[i] = t.packets[i] + 1  # the next packet checks the new limits
    if x.encap_type and new.encap_type:
        x.encap_sport, x.encap_dport = new.encap_sport, new.encap_dport
        t.encap_sport[i], t.encap_dport[i] = new.encap_sport, new.encap_dport


def xfrm_state_ctx(xfrm: Xfrm, x: XfrmState) -> tuple[int, int]:
    """Create the SA's EVP contexts on first use (0, 0 when EVP is not available)."""
    t, i = xfrm.tab, x.index
    if t.ctx_enc[i] == 0 and evp.evp_load():
        t.ctx_enc[i] = evp.evp_ctx_new(x.alg, x.key, True)
        t.ctx_dec[i] = evp.evp_ctx_new(x.alg, x.key, False)
    return int(t.ctx_enc[i]), int(t.ctx_dec[i])


def xfrm_state_lookup(xfrm: Xfrm, daddr, spi: int, proto: int = IPPROTO_ESP) -> XfrmState | None:
    """Linux: xfrm_state.c › xfrm_state_lookup (by daddr, SPI, proto). daddr: address or packed bytes."""
    packed = daddr if isinstance(daddr, (bytes, bytearray)) else ipaddress.ip_address(daddr).packed
    x = xfrm._byid.get((bytes(packed), spi, proto))
    if x is None or xfrm.tab.dead[x.index]:
        return None
    return x


def _tmpl_match(tmpl, x) -> bool:
    """The template test of xfrm_state_find's scan: addresses (saddr None: any), proto, mode, reqid
    and SPI (0 = any). Deviation: a template's reqid 0 matches any SA (Linux wants it equal)."""
    return (
        x.daddr == tmpl.daddr
        and (tmpl.saddr is None or x.saddr is None or x.saddr == tmpl.saddr)
        and x.proto == tmpl.proto
        and x.mode == tmpl.mode
        and (tmpl.reqid == 0 or x.reqid == tmpl.reqid)
        and (tmpl.spi == 0 or x.spi == tmpl.spi)
    )


def xfrm_state_look_at(x: XfrmState, best: XfrmState | None, pcpu_id: int) -> XfrmState | None:
    """The better of `best` and the valid state x for CPU pcpu_id (Linux: xfrm_state.c ›
    xfrm_state_look_at, XFRM_STATE_VALID branch). An SA pinned to another CPU is never used here; one
    pinned to this CPU beats an unpinned one; then one not dying (soft-expired) beats one that is,
    then the newer (Linux: curlft.add_time; here the row, as rows are never reused)."""
    if x.pcpu_num != UINT_MAX and x.pcpu_num != pcpu_id:
        return best
    if (
        best is None
        or (best.pcpu_num == UINT_MAX and x.pcpu_num == pcpu_id)
        or best.soft_expired > x.soft_expired
        or (best.soft_expired == x.soft_expired and best.index < x.index)
    ):
        return x
    return best


def xfrm_state_find(xfrm: Xfrm, tmpl, now_ns: int = 0, *, pol=None, fl: Flowi | None = None, cpu: int = 0,
                    acquire: bool = True) -> XfrmState | None:  # fmt: skip
    """The outbound SA CPU `cpu` uses for a policy template, or None (the caller drops).

    Linux: xfrm_state.c › xfrm_state_find. The states are visited newest first (the bydst chain:
    inserts go to its head) through xfrm_state_look_at, so a rekey's new SA takes over at once. With
    XFRM_POLICY_CPU_ACQUIRE in pol.flags only an SA pinned to `cpu` is the answer as found; otherwise
    the best is. When there is no answer, an ACQUIRE is raised (km_query) unless a larval state for
    the template is pending (for `cpu`, or for any CPU when no SA was found at all; Linux asks "none
    found yet" in chain order), and the SA found unpinned, if any, carries the packet meanwhile (the
    "fallback"). acquire=False (a control-plane query: the flowtable offload's) raises nothing, nor
    does a call without `pol`.
    Deviations: while a larval state is pending Linux's code answers -EAGAIN (a drop), so its
    fallback carries only the packet that raised the ACQUIRE, though its comment says the fallback is
    to be used "while the CPU-specific SA acquire is handled"; here it carries every packet until the
    CPU's SA comes. Linux raises nothing and drops when no key manager listens (km_is_alive); flowpath
    always records the ACQUIRE (`ctl ip xfrm monitor`), as if `ip xfrm monitor` were listening. The
    policy's state cache (a Linux speed-up) is not modelled; mark and if_id are not either.
    """
    best = None
    for x in reversed(xfrm.states):
        if _tmpl_match(tmpl, x) and not xfrm.tab.dead[x.index]:
            best = xfrm_state_look_at(x, best, cpu)
    cpu_acquire = pol is not None and pol.flags & XFRM_POLICY_CPU_ACQUIRE
    if best is not None and (not cpu_acquire or best.pcpu_num == cpu):
        return best
    if pol is None or not acquire:
        return best
    xfrm_acq_expire(xfrm, now_ns)
    pending = any(_tmpl_match(tmpl, a) and (a.pcpu_num == cpu or best is None) for a in xfrm.acq)
    if not pending:
        pcpu_num = cpu if cpu_acquire and best is not None else UINT_MAX
        xfrm.acq.append(XfrmAcqState(tmpl.daddr, tmpl.saddr, tmpl.reqid, tmpl.mode, tmpl.proto, tmpl.spi,
                                     pcpu_num, now_ns + xfrm.sysctl_acq_expires * 1_000_000_000))  # fmt: skip
        km_query(xfrm, XfrmAcquire(0, cpu, pcpu_num, fl, pol, tmpl, now_ns))
    return best


def km_query(xfrm: Xfrm, acq: XfrmAcquire) -> None:
    """Send an ACQUIRE to every key manager (Linux: xfrm_state.c › km_query; xfrm_user's manager
    multicasts it on XFRMNLGRP_ACQUIRE), count it for the CPU that raised it and keep it in the log."""
    xfrm.acqseq = xfrm.acqseq % UINT_MAX + 1  # xfrm_get_acqseq: 1, 2, ..., never 0
    acq.seq = xfrm.acqseq
    xfrm.acquire_count[acq.cpu] = xfrm.acquire_count.get(acq.cpu, 0) + 1
    xfrm.acquires.append(acq)
    for km in list(xfrm.km):  # a manager runs on the classic path, between two packets
        km(acq)


def xfrm_acq_expire(xfrm: Xfrm, now_ns: int) -> None:
    """Drop the larval states whose time is up (Linux: xfrm_timer_handler deletes an expired
    XFRM_STATE_ACQ state), so that the next packet raises a new ACQUIRE."""
    if xfrm.acq:
        xfrm.acq[:] = [a for a in xfrm.acq if a.expires_ns > now_ns]


def xfrm_state_check_expire(xfrm: Xfrm, x: XfrmState, now_ns: int) -> bool:
    """True while the SA may be used; queues soft/hard XfrmExpire events as limits pass.

    Linux: xfrm_state.c › xfrm_state_check_expire (bytes/packets) and xfrm_timer_handler (seconds).
    """
    t, i, lft = xfrm.tab, x.index, x.lft
    if t.dead[i]:
        return False
    if x.add_time_ns < 0:
        x.add_time_ns = now_ns
    if x.use_time_ns == 0 and t.packets[i]:
        x.use_time_ns = now_ns
    age_s = (now_ns - x.add_time_ns) // 1_000_000_000
    use_s = (now_ns - x.use_time_ns) // 1_000_000_000 if x.use_time_ns else 0
    hard = (
        ("seq overflow" if not x.esn and t.oseq[i] >= SEQ32_MAX else "")
        or ("bytes" if t.bytes[i] >= lft.hard_byte_limit else "")
        or ("packets" if t.packets[i] >= lft.hard_packet_limit else "")
        or ("add" if lft.hard_add_expires_seconds and age_s >= lft.hard_add_expires_seconds else "")
        or (
            "use"
            if lft.hard_use_expires_seconds and x.use_time_ns and use_s >= lft.hard_use_expires_seconds
            else ""
        )
    )
    if hard:
        xfrm_state_delete_dead(xfrm, x, hard, now_ns)
        return False
    if not x.soft_expired:
        soft = (
            ("bytes" if t.bytes[i] >= lft.soft_byte_limit else "")
            or ("packets" if t.packets[i] >= lft.soft_packet_limit else "")
            or ("add" if lft.soft_add_expires_seconds and age_s >= lft.soft_add_expires_seconds else "")
            or (
                "use"
                if lft.soft_use_expires_seconds and x.use_time_ns and use_s >= lft.soft_use_expires_seconds
                else ""
            )
        )
        if soft:
            x.soft_expired = True
            xfrm.events.append(XfrmExpire(x, False, soft, now_ns))
    if x.use_time_ns:
        soft_p = XFRM_INF if x.soft_expired else lft.soft_packet_limit
        soft_b = XFRM_INF if x.soft_expired else lft.soft_byte_limit
        t.check_packets[i] = min(soft_p, lft.hard_packet_limit)
        t.check_bytes[i] = min(soft_b, lft.hard_byte_limit)
    return True


def xfrm_state_delete_dead(xfrm: Xfrm, x: XfrmState, why: str, now_ns: int) -> None:
    """Mark the SA dead (XFRM_STATE_EXPIRED) and queue the hard expire event once."""
    if not xfrm.tab.dead[x.index]:
        xfrm.tab.dead[x.index] = 1
        xfrm.tab.stats[x.index, XS_EXPIRED] += 1
        xfrm.events.append(XfrmExpire(x, True, why, now_ns))


def xfrm_state_delete(xfrm: Xfrm, x: XfrmState) -> None:
    """Take a state out of the SAD: dead for the kernels (its row stays, see Xfrm), EVP contexts freed.

    Linux: xfrm_state.c › __xfrm_state_delete (km.state = XFRM_STATE_DEAD, unhashed). Flows offloaded
    through it are the caller's to tear down (the Worker's xfrm_modify).
    """
    t, i = xfrm.tab, x.index
    evp.evp_ctx_free(int(t.ctx_enc[i]))
    evp.evp_ctx_free(int(t.ctx_dec[i]))
    t.ctx_enc[i] = t.ctx_dec[i] = 0
    t.dead[i] = 1
    xfrm.states.remove(x)
    xfrm._byid.pop((x.daddr.packed, x.spi, x.proto), None)


def xfrm_state_flush(xfrm: Xfrm) -> None:
    """Delete every state, larval ones included (Linux: xfrm_state_flush)."""
    for x in list(xfrm.states):
        xfrm_state_delete(xfrm, x)
    xfrm.acq.clear()


def xfrm_timer(xfrm: Xfrm, now_ns: int) -> None:
    """Run the lifetime checks of every state (Linux: one hrtimer per state; here the GC tick)."""
    for x in xfrm.states:
        xfrm_state_check_expire(xfrm, x, now_ns)
    xfrm_acq_expire(xfrm, now_ns)

"""The SPD: xfrm policies, selectors, templates, lookup and the inbound policy check.

Linux: net/xfrm/xfrm_policy.c (xfrm_policy_insert, xfrm_policy_lookup_bytype, xfrm_selector_match,
__xfrm_policy_check, xfrm_state_ok). Policies are kept in one list per Xfrm, ordered by priority
(lower value first) and then by insertion, which is the order Linux's inexact list gives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from flowpath.packet.layout import IPPROTO_ESP
from flowpath.xfrm.state import AF_INET, AF_INET6, XFRM_MODE_TUNNEL, XFRM_POLICY_CPU_ACQUIRE, Xfrm, XfrmState

XFRM_POLICY_IN, XFRM_POLICY_OUT, XFRM_POLICY_FWD = 0, 1, 2
XFRM_POLICY_ALLOW, XFRM_POLICY_BLOCK = 0, 1
XFRM_DIR_NAMES = ("in", "out", "fwd")
XFRM_POLICY_FLAGS = XFRM_POLICY_CPU_ACQUIRE  # the flags modelled (LOCALOK and ICMP are not)

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class XfrmSelector:
    """struct xfrm_selector: prefixes, upper-layer protocol and ports (0 = any)."""

    family: int
    saddr: Net
    daddr: Net
    proto: int = 0
    sport: int = 0
    dport: int = 0


@dataclass
class XfrmTmpl:
    """struct xfrm_tmpl: which SA a matching packet must go through (or have come through)."""

    family: int
    saddr: Addr | None
    daddr: Addr
    proto: int = IPPROTO_ESP
    spi: int = 0
    reqid: int = 0
    mode: int = XFRM_MODE_TUNNEL
    optional: bool = False  # `level use`


@dataclass
class XfrmPolicy:
    """struct xfrm_policy: selector, direction, priority, action, flags and templates.

    flags: XFRM_POLICY_CPU_ACQUIRE (4) makes xfrm_state_find want an SA per CPU (`flag 0x4`)."""

    sel: XfrmSelector
    dir: int
    priority: int = 0
    action: int = XFRM_POLICY_ALLOW
    tmpls: list[XfrmTmpl] = field(default_factory=list)
    flags: int = 0
    index: int = 0
    hits: int = 0


def _addr(a) -> Addr:
    if isinstance(a, (bytes, bytearray)):
        return ipaddress.ip_address(bytes(a))
    return ipaddress.ip_address(a)


def xfrm_selector_match(sel: XfrmSelector, family: int, saddr: Addr, daddr: Addr, proto: int, sport: int,
                        dport: int) -> bool:  # fmt: skip
    """Linux: xfrm_policy.c › xfrm_selector_match (__xfrm4/6_selector_match)."""
    return (
        sel.family == family
        and saddr in sel.saddr
        and daddr in sel.daddr
        and (sel.proto == 0 or sel.proto == proto)
        and (sel.sport == 0 or sel.sport == sport)
        and (sel.dport == 0 or sel.dport == dport)
    )


def xfrm_policy_insert(xfrm: Xfrm, pol: XfrmPolicy, excl: bool = True) -> XfrmPolicy:
    """Insert by priority after equal priorities. A policy with the same selector and dir is -EEXIST
    (ValueError) for `add` (excl, and only at the same priority here); `update` (excl=False) replaces
    it, whatever its priority, and the new one keeps its index.

    Linux: xfrm_policy.c › xfrm_policy_insert (excl=0 for XFRM_MSG_UPDPOLICY: the old policy is
    unlinked and its index reused).
    """
    old = None
    for p in xfrm.policies:
        if p.dir == pol.dir and p.sel == pol.sel and (not excl or p.priority == pol.priority):
            if excl:
                raise ValueError("File exists")
            old = p
    if old is not None:
        xfrm.policies.remove(old)
    pos = len(xfrm.policies)
    for k, p in enumerate(xfrm.policies):
        if p.priority > pol.priority:
            pos = k
            break
    if old is not None:
        pol.index = old.index
    else:
        xfrm.policy_idx_generator += 1  # Linux: index = (++idx_generator << 3) | dir
        pol.index = (xfrm.policy_idx_generator << 3) | pol.dir
    xfrm.policies.insert(pos, pol)
    return pol


def xfrm_lookup(xfrm: Xfrm, family: int, saddr, daddr, l4proto: int, sport: int, dport: int,
                dir: int, count: bool = True) -> XfrmPolicy | None:  # fmt: skip
    """The first policy of `dir` (lowest priority value) whose selector matches; None when none does.
    count=False leaves the policy's use counter alone (a control-plane query, not a packet).

    Linux: xfrm_policy.c › xfrm_policy_lookup_bytype. The caller drops on `action block`
    (XfrmOutPolBlock) and resolves the templates with xfrm_state_find on `allow`.
    """
    s, d = _addr(saddr), _addr(daddr)
    for p in xfrm.policies:
        if p.dir == dir and xfrm_selector_match(p.sel, family, s, d, l4proto, sport, dport):
            p.hits += count
            return p
    return None


def xfrm_state_ok(t: XfrmTmpl, x: XfrmState) -> bool:
    """Linux: xfrm_policy.c › xfrm_state_ok: the SA a packet came through satisfies the template."""
    return (
        x.proto == t.proto
        and (t.spi == 0 or x.spi == t.spi)
        and (t.reqid == 0 or x.reqid == t.reqid)
        and x.mode == t.mode
        and x.daddr == t.daddr
        and (t.saddr is None or x.saddr == t.saddr)
    )


def xfrm_policy_check(xfrm: Xfrm, dir: int, family: int, saddr, daddr, l4proto: int, sport: int, dport: int,
                      sp: list[XfrmState]) -> bool:  # fmt: skip
    """May a received packet (inner headers given) pass, having been decrypted by the SAs `sp`?

    Linux: xfrm_policy.c › __xfrm_policy_check. No policy: allowed only when nothing was decrypted
    in tunnel mode (secpath_has_nontransport). A block policy refuses. An allow policy needs each
    template matched, in order, by the secpath; an unmatched tunnel-mode SA is refused as well.
    """
    ok = xfrm_policy_allows(xfrm_lookup(xfrm, family, saddr, daddr, l4proto, sport, dport, dir), sp)
    if not ok:
        xfrm.stats_policy_block += 1
    return ok


def xfrm_policy_allows(pol: XfrmPolicy | None, sp: list[XfrmState]) -> bool:
    """The verdict of __xfrm_policy_check once the policy is found (None: no policy matched)."""
    if pol is None:
        return not any(x.mode == XFRM_MODE_TUNNEL for x in sp)
    if pol.action == XFRM_POLICY_BLOCK:
        return False
    k = 0
    for t in pol.tmpls:
        if k < len(sp) and xfrm_state_ok(t, sp[k]):
            k += 1
        elif not t.optional:
            return False
    return not any(x.mode == XFRM_MODE_TUNNEL for x in sp[k:])


def xfrm_policy_delete(xfrm: Xfrm, sel: XfrmSelector, dir: int) -> XfrmPolicy:
    """Remove the policy with this selector and direction; KeyError when there is none (-ENOENT)."""
    for k, p in enumerate(xfrm.policies):
        if p.dir == dir and p.sel == sel:
            return xfrm.policies.pop(k)
    raise KeyError("No such file or directory")


def family_of(a: Addr | Net) -> int:
    return AF_INET if a.version == 4 else AF_INET6

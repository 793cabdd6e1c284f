"""`ip xfrm state` and `ip xfrm policy` listings, and the ACQUIRE events as `ip xfrm monitor` shows them.

Linux: iproute2 ip/ipxfrm.c (xfrm_xfrma_print, xfrm_selector_print, xfrm_lifetime_print) and
ip/xfrm_state.c › xfrm_state_print, ip/xfrm_policy.c › xfrm_policy_print, ip/xfrm_monitor.c ›
xfrm_acquire_print. Same words, same order, tab-indented lines; `-s` adds the lifetime and
statistics blocks.
"""

from __future__ import annotations

from flowpath.xfrm.policy import XFRM_DIR_NAMES, XFRM_POLICY_BLOCK, XfrmPolicy
from flowpath.xfrm.replay import XFRM_REPLAY_LEGACY_MAX
from flowpath.xfrm.state import (
    AF_INET,
    UINT_MAX,
    XFRM_INF,
    XFRM_POLICY_ICMP,
    XFRM_POLICY_LOCALOK,
    XFRM_STATE_AF_UNSPEC,
    XFRM_STATE_DECAP_DSCP,
    XFRM_STATE_ESN,
    XFRM_STATE_NOECN,
    XFRM_STATE_NOPMTUDISC,
    XS_INTEGRITY_FAILED,
    XS_REPLAY,
    XS_REPLAY_WINDOW,
    Xfrm,
    XfrmAcquire,
    XfrmState,
)

_FLAG_NAMES = ((XFRM_STATE_NOECN, "noecn"), (XFRM_STATE_DECAP_DSCP, "decap-dscp"),
               (XFRM_STATE_NOPMTUDISC, "nopmtudisc"), (XFRM_STATE_AF_UNSPEC, "af-unspec"), (XFRM_STATE_ESN, "esn"))  # fmt: skip
_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp", 47: "gre"}


def _inf(v: int) -> str:
    return "(INF)" if v >= XFRM_INF else str(v)


def xfrm_state_print(xfrm: Xfrm, x: XfrmState, stats: bool = False) -> str:
    t, i = xfrm.tab, x.index
    lines = [f"src {x.saddr} dst {x.daddr}", f"\tproto esp spi 0x{x.spi:08x} reqid {x.reqid} mode tunnel"]
    flags = " ".join(name for bit, name in _FLAG_NAMES if x.flags & bit)
    esn_ctx = x.esn or x.replay_window > XFRM_REPLAY_LEGACY_MAX  # sent as XFRMA_REPLAY_ESN_VAL (replay.py)
    lines.append(f"\treplay-window {0 if esn_ctx else x.replay_window}" + (f" flag {flags}" if flags else ""))
    lines.append(f"\taead {x.alg_name} 0x{(x.key + x.salt).hex()} {x.icv_truncbits}")
    if x.encap_type:
        lines.append(f"\tencap type espinudp sport {x.encap_sport} dport {x.encap_dport} addr {x.encap_oa}")
    top, oseq = int(t.replay_top[i]), int(t.oseq[i])
    if esn_ctx:
        w = x.replay_window
        lines.append("\tanti-replay esn context:")
        lines.append(f"\t seq-hi 0x{top >> 32:x}, seq 0x{top & 0xFFFFFFFF:x}, oseq-hi 0x{oseq >> 32:x}, "
                     f"oseq 0x{oseq & 0xFFFFFFFF:x}")  # fmt: skip
        lines.append(f"\t replay_window {w}, bitmap-length {(w + 31) // 32}")
        lines.append("\t " + " ".join(f"{b:08x}" for b in _bitmap_words(xfrm, x)))
    else:
        bmp = _bitmap_words(xfrm, x)
        lines.append(
            f"\tanti-replay context: seq 0x{top:x}, oseq 0x{oseq:x}, bitmap 0x{bmp[0] if bmp else 0:08x}"
        )
    if x.pcpu_num != UINT_MAX:
        lines.append(f"\tpcpu-num {x.pcpu_num}")  # XFRMA_SA_PCPU, last of xfrm_xfrma_print's attributes
    any_ = "0.0.0.0/0" if x.family == AF_INET else "::/0"
    lines.append(f"\tsel src {any_} dst {any_}")  # state selectors are not modelled: the wildcard
    if stats:
        lft = x.lft
        lines += [
            "\tlifetime config:",
            f"\t  limit: soft {_inf(lft.soft_byte_limit)}(bytes), hard {_inf(lft.hard_byte_limit)}(bytes)",
            f"\t  limit: soft {_inf(lft.soft_packet_limit)}(packets), hard {_inf(lft.hard_packet_limit)}(packets)",
            f"\t  expire add: soft {lft.soft_add_expires_seconds}(sec), hard {lft.hard_add_expires_seconds}(sec)",
            f"\t  expire use: soft {lft.soft_use_expires_seconds}(sec), hard {lft.hard_use_expires_seconds}(sec)",
            "\tlifetime current:",
            f"\t  {int(t.bytes[i])}(bytes), {int(t.packets[i])}(packets)",
            "\tstats:",
            f"\t  replay-window {int(t.stats[i, XS_REPLAY_WINDOW])} replay {int(t.stats[i, XS_REPLAY])} "
            f"failed {int(t.stats[i, XS_INTEGRITY_FAILED])}",
        ]
    return "\n".join(lines)


def _bitmap_words(xfrm: Xfrm, x: XfrmState) -> list[int]:
    """The window as Linux's u32 words: bit k of word k//32 is sequence number (top - k) seen."""
    w, i = x.replay_window, x.index
    top = int(xfrm.tab.replay_top[i])
    words = [0] * max(1, (w + 31) // 32)
    for k in range(min(w, top)):
        if xfrm.tab.replay_bmp[i, (top - k) % w]:
            words[k // 32] |= 1 << (k % 32)
    return words


def xfrm_state_list(xfrm: Xfrm, stats: bool = False) -> str:
    """`ip [-s] xfrm state` for every state, in insertion order."""
    return "".join(xfrm_state_print(xfrm, x, stats) + "\n" for x in xfrm.states)


def xfrm_policy_print(p: XfrmPolicy, stats: bool = False) -> str:
    s = p.sel
    head = f"src {s.saddr} dst {s.daddr} "
    if s.proto:
        head += f"proto {_PROTO_NAMES.get(s.proto, s.proto)} "
    if s.sport:
        head += f"sport {s.sport} "
    if s.dport:
        head += f"dport {s.dport} "
    lines = [head]
    action = "action block " if p.action == XFRM_POLICY_BLOCK else ""
    lines.append(f"\tdir {XFRM_DIR_NAMES[p.dir]} {action}priority {p.priority} " + _policy_flags(p.flags))
    if stats:
        lines.append(f"\tindex {p.index} hits {p.hits}")
    for t in p.tmpls:
        lines.append(f"\ttmpl src {t.saddr if t.saddr is not None else '0.0.0.0'} dst {t.daddr}")
        spi = f"spi 0x{t.spi:08x} " if t.spi else ""
        level = " level use" if t.optional else ""
        lines.append(f"\t\tproto esp {spi}reqid {t.reqid} mode tunnel{level}")
    return "\n".join(lines)


def xfrm_policy_list(xfrm: Xfrm, stats: bool = False) -> str:
    """`ip [-s] xfrm policy`: Linux lists newest first within the SPD dump; we list in lookup order."""
    return "".join(xfrm_policy_print(p, stats) + "\n" for p in xfrm.policies)


def _policy_flags(flags: int) -> str:
    """iproute2 xfrm_policy_info_print: "flag", the named flags, then what is left in hex (flag 4 for
    XFRM_POLICY_CPU_ACQUIRE, which has no name there)."""
    if not flags:
        return ""
    words = []
    for bit, name in ((XFRM_POLICY_LOCALOK, "localok"), (XFRM_POLICY_ICMP, "icmp")):
        if flags & bit:
            words.append(name)
            flags &= ~bit
    return "flag " + " ".join(words + ([f"{flags:x}"] if flags else []))


def _any(family: int) -> str:
    return "0.0.0.0" if family == AF_INET else "::"


def xfrm_acquire_print(acq: XfrmAcquire) -> str:
    """One ACQUIRE as `ip xfrm monitor` prints it (iproute2 xfrm_monitor.c › xfrm_acquire_print over
    build_acquire's message): the larval state's selector (the packet's, /32 or /128, both ports
    always), the policy with its templates, XFRMA_SA_PCPU, then an empty line."""
    fl, pol = acq.sel, acq.pol
    lines = ["acquire proto esp " + (f"spi 0x{acq.tmpl.spi:08x} " if acq.tmpl.spi else "")]
    if fl is not None:
        plen = 32 if fl.family == AF_INET else 128
        sel = f"  sel src {fl.saddr}/{plen} dst {fl.daddr}/{plen} "
        if fl.proto:
            sel += f"proto {_PROTO_NAMES.get(fl.proto, fl.proto)} "
        if fl.proto in (1, 58):  # ICMP: type and code sit in the selector's ports
            sel += f"type {fl.sport} code {fl.dport} "
        elif fl.proto == 47:  # GRE: the key
            sel += f"key {(fl.sport << 16) + fl.dport} "
        else:
            sel += f"sport {fl.sport} dport {fl.dport} "
        lines.append(sel + (f"dev {fl.oif} " if fl.oif else ""))
    s = pol.sel
    head = f"  policy src {s.saddr} dst {s.daddr} "
    if s.proto:
        head += f"proto {_PROTO_NAMES.get(s.proto, s.proto)} "
    head += (f"sport {s.sport} " if s.sport else "") + (f"dport {s.dport} " if s.dport else "")
    action = "action block " if pol.action == XFRM_POLICY_BLOCK else ""
    lines += [head, f"    \tdir {XFRM_DIR_NAMES[pol.dir]} {action}priority {pol.priority} ptype main "
                    + _policy_flags(pol.flags)]  # fmt: skip
    for t in pol.tmpls:
        lines.append(f"    \ttmpl src {t.saddr if t.saddr is not None else _any(t.family)} dst {t.daddr}")
        spi = f"spi 0x{t.spi:08x} " if t.spi else ""
        lines.append(f"    \t\tproto esp {spi}reqid {t.reqid} mode tunnel")
        if t.optional:
            lines.append("    \t\tlevel use ")
    if acq.pcpu_num != UINT_MAX:
        lines.append(f"\tpcpu-num {acq.pcpu_num}")
    return "\n".join(lines) + "\n\n"


def xfrm_monitor(xfrm: Xfrm) -> str:
    """`ip xfrm monitor acquire` since start: the ACQUIREs kept (the last KM_LOG_MAX), oldest first."""
    return "".join(xfrm_acquire_print(a) for a in xfrm.acquires)

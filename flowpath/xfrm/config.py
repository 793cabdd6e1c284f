"""`xfrm state ...` and `xfrm policy ...` lines of an ip-batch network file or of `flowpath ctl ip xfrm`.

Linux: iproute2 ip/xfrm_state.c (xfrm_state_modify, xfrm_state_get_or_delete, xfrm_state_list_or_deleteall)
and ip/xfrm_policy.c (the same for policies), which turn the words into XFRM_MSG_NEWSA / DELSA /
NEWPOLICY / DELPOLICY; the kernel's checks (verify_newsa_info, verify_replay, verify_newpolicy_info)
are done here too, so a bad line fails with file:line:col.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Callable

from flowpath.errors import ConfigError
from flowpath.packet.layout import IPPROTO_ESP
from flowpath.xfrm import evp
from flowpath.xfrm.policy import (
    XFRM_DIR_NAMES,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_BLOCK,
    XFRM_POLICY_FLAGS,
    XfrmPolicy,
    XfrmSelector,
    XfrmTmpl,
    family_of,
    xfrm_policy_insert,
)
from flowpath.xfrm.replay import XFRMA_REPLAY_ESN_MAX
from flowpath.xfrm.state import (
    UDP_ENCAP_ESPINUDP,
    UINT_MAX,
    XFRM_MODE_TUNNEL,
    XFRM_STATE_AF_UNSPEC,
    XFRM_STATE_DECAP_DSCP,
    XFRM_STATE_ESN,
    XFRM_STATE_NOECN,
    XFRM_STATE_NOPMTUDISC,
    Xfrm,
    XfrmLifetimeCfg,
    XfrmState,
    xfrm_state_add,
    xfrm_state_delete,
    xfrm_state_flush,
    xfrm_state_lookup,
    xfrm_state_update,
)

AEAD_ALGS = {"rfc4106(gcm(aes))": evp.XFRM_AEAD_GCM, "rfc7539esp(chacha20,poly1305)": evp.XFRM_AEAD_CHACHA}
STATE_FLAGS = {"noecn": XFRM_STATE_NOECN, "decap-dscp": XFRM_STATE_DECAP_DSCP, "nopmtudisc": XFRM_STATE_NOPMTUDISC,
               "esn": XFRM_STATE_ESN, "af-unspec": XFRM_STATE_AF_UNSPEC}  # fmt: skip
UPSPEC_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132, "dccp": 33, "gre": 47,
                 "esp": 50, "ah": 51}  # fmt: skip
POLICY_FLAG_NAMES = {"localok": 1, "icmp": 2}  # iproute2 ip/xfrm_policy.c › xfrm_policy_flag_parse
LIMITS = {"byte-soft": "soft_byte_limit", "byte-hard": "hard_byte_limit", "packet-soft": "soft_packet_limit",
          "packet-hard": "hard_packet_limit", "time-soft": "soft_add_expires_seconds",
          "time-hard": "hard_add_expires_seconds", "time-use-soft": "soft_use_expires_seconds",
          "time-use-hard": "hard_use_expires_seconds"}  # fmt: skip


class _Words:
    """The line's tokens with their columns; `err` raises ConfigError at a token."""

    def __init__(self, tokens: list[str], cols: list[int], path, line: int, source: str | None):
        self.t = [w.strip("'\"") for w in tokens]
        self.cols, self.path, self.line, self.source, self.k = cols, path, line, source, 0

    def err(self, msg: str, k: int | None = None, after: bool = False) -> ConfigError:
        """ConfigError at token k (default: the next one); `after` points just past it (missing word)."""
        k = min(self.k if k is None else k, len(self.t) - 1)
        col = self.cols[k] if 0 <= k < len(self.cols) else 1
        length = len(self.t[k]) if 0 <= k < len(self.t) else 1
        if after:
            col, length = col + length + 1, 1
        return ConfigError(self.path, self.line, col, msg, source=self.source, length=length)

    def more(self) -> bool:
        return self.k < len(self.t)

    def next(self, what: str) -> str:
        if self.k >= len(self.t):
            self.k = len(self.t)
            raise self.err(f"{what} expected", len(self.t) - 1, after=True)
        self.k += 1
        return self.t[self.k - 1]

    def num(self, what: str, lo: int = 0, hi: int = 0xFFFFFFFF) -> int:
        w = self.next(what)
        try:
            v = int(w, 0)
        except ValueError:
            raise self.err(f'"{w}" is not a valid {what}', self.k - 1) from None
        if not lo <= v <= hi:
            raise self.err(f"{what} {v} out of range {lo}..{hi}", self.k - 1)
        return v

    def addr(self, what: str):
        w = self.next(what)
        try:
            return ipaddress.ip_address(w)
        except ValueError:
            raise self.err(f'"{w}" is not a valid {what}', self.k - 1) from None

    def prefix(self, what: str):
        w = self.next(what)
        try:
            return ipaddress.ip_network(w, strict=False)
        except ValueError:
            raise self.err(f'"{w}" is not a valid {what}', self.k - 1) from None


def _xfrm_of(net) -> Xfrm:
    if isinstance(net, Xfrm):
        return net
    x = getattr(net, "xfrm", None)
    if x is None:
        x = Xfrm()
        net.xfrm = x
    return x


# ip/xfrm_state.c › do_xfrm_state and ip/xfrm_policy.c › do_xfrm_policy try the verbs in this order,
# each as iproute2's matches() (any prefix: "del" is delete, "deleteall" is not); aliases after "|"
STATE_VERBS = ("add", "update", "allocspi", "delete", "deleteall|delall", "list|show|lst", "get", "flush",
               "count")  # fmt: skip
POLICY_VERBS = ("add", "update", "delete", "deleteall|delall", "list|show|lst", "get", "flush", "count",
                "set", "setdefault", "getdefault")  # fmt: skip
SHOW_VERBS = ("list", "get")  # what xfrm_select answers; the rest change the SAD or SPD


def _matches(word: str, full: str) -> bool:
    """iproute2 lib/utils.c › matches: `word` is a non-empty prefix of `full`."""
    return 0 < len(word) <= len(full) and full.startswith(word)


def _head(w: _Words) -> tuple[str, str]:
    """The object (state or policy) and the verb's canonical name, after an optional "xfrm"."""
    if w.more() and w.t[0] == "xfrm":
        w.k = 1
    word = w.next("state or policy")
    obj = "state" if _matches(word, "state") else "policy" if _matches(word, "policy") else None
    if obj is None:
        raise w.err(f'"xfrm {word}" is not supported (state or policy)', w.k - 1)
    word = w.next(f"{obj} command")
    verbs = STATE_VERBS if obj == "state" else POLICY_VERBS
    verb = next((v.split("|")[0] for v in verbs if any(_matches(word, a) for a in v.split("|"))), None)
    if verb is None:
        raise w.err(f'"xfrm {obj} {word}" is unknown (try {", ".join(v.split("|")[0] for v in verbs)})',
                    w.k - 1)  # fmt: skip
    return obj, verb


def xfrm_verb(tokens: list[str]) -> tuple[str, str] | None:
    """(object, verb) of an `xfrm ...` line, or None when its words name none (the parsers say why)."""
    try:
        return _head(_Words(list(tokens), [1] * len(tokens), "", 1, None))
    except ConfigError:
        return None


def xfrm_config_line(
    tokens: list[str], path, line: int, cols: list[int], net, source: str | None = None
) -> None:
    """Apply one `xfrm state|policy add|update|delete|deleteall|flush ...` line (a leading "xfrm" is
    optional), as `ip xfrm` would.

    `net` is an Xfrm or an object whose `.xfrm` is one (created when missing). Raises ConfigError
    with the column of the offending token. Listings (list, get) are xfrm_select's.
    """
    w = _Words(tokens, cols, path, line, source)
    obj, verb = _head(w)
    xfrm = _xfrm_of(net)
    if obj == "state" and verb in ("add", "update"):
        _state_add(w, xfrm, update=verb == "update")
    elif obj == "state" and verb == "delete":
        xfrm_state_delete(xfrm, _state_get(w, xfrm))
    elif obj == "state" and verb == "deleteall":
        match = _state_filter(w)
        for x in [x for x in xfrm.states if match(x)]:
            xfrm_state_delete(xfrm, x)
    elif obj == "state" and verb == "flush":
        if w.more():
            _state_filter(w, ("proto",))
        xfrm_state_flush(xfrm)
    elif obj == "policy" and verb in ("add", "update"):
        _policy_add(w, xfrm, excl=verb == "add")
    elif obj == "policy" and verb == "delete":
        xfrm.policies.remove(_policy_get(w, xfrm))
    elif obj == "policy" and verb == "deleteall":
        match = _policy_filter(w)
        xfrm.policies[:] = [p for p in xfrm.policies if not match(p)]
    elif obj == "policy" and verb == "flush":
        if w.more():
            raise w.err(f'"{w.t[w.k]}" is not supported after flush', w.k)
        xfrm.policies.clear()
    else:
        where = " in a network file" if verb in SHOW_VERBS else ""
        raise w.err(f'"xfrm {obj} {verb}" is not supported{where}', w.k - 1)


def xfrm_select(
    tokens: list[str], path, line: int, cols: list[int], xfrm: Xfrm, source: str | None = None
) -> tuple[str, list]:
    """`xfrm state|policy list|get ...`: ("state", [XfrmState]) or ("policy", [XfrmPolicy]) of the
    SAD or SPD entries the filter words select (ip/xfrm_state.c › xfrm_state_filter_match,
    ip/xfrm_policy.c › xfrm_policy_filter_match: the words given must match, the others are free).
    `get` names one entry, as `delete` does. ConfigError as xfrm_config_line."""
    w = _Words(tokens, cols, path, line, source)
    obj, verb = _head(w)
    if verb not in SHOW_VERBS:
        raise w.err(f'"xfrm {obj} {verb}" changes the {"SAD" if obj == "state" else "SPD"}: not a listing',
                    w.k - 1)  # fmt: skip
    if obj == "state":
        if verb == "get":
            return obj, [_state_get(w, xfrm)]
        match = _state_filter(w)
        return obj, [x for x in xfrm.states if match(x)]
    if verb == "get":
        return obj, [_policy_get(w, xfrm)]
    match = _policy_filter(w)
    return obj, [p for p in xfrm.policies if match(p)]


STATE_ID_WORDS = ("src", "dst", "proto", "spi")


def _state_id(w: _Words, allowed: tuple[str, ...]) -> dict:
    """ID [mode MODE] [reqid REQID] words (ID := [src ADDR] [dst ADDR] [proto esp] [spi SPI]), those of
    `allowed` only: XfrmState field -> (value, token index)."""
    want: dict = {}
    while w.more():
        kw = w.next("keyword")
        at = w.k - 1
        if kw not in allowed:
            raise w.err(f'unknown keyword "{kw}" (expected {", ".join(allowed)})', at)
        if kw in ("src", "dst"):
            want[kw[0] + "addr"] = (w.addr(f"{kw} address"), at)
        elif kw == "proto":
            p = w.next("proto")
            if p != "esp":
                raise w.err(f'proto "{p}" is not supported (esp only)', w.k - 1)
        elif kw == "spi":
            want["spi"] = (w.num("spi", 1), w.k - 1)
        elif kw == "reqid":
            want["reqid"] = (w.num("reqid"), at)
        elif kw == "mode":
            m = w.next("mode")
            if m not in ("transport", "tunnel", "beet", "ro", "in_trigger"):
                raise w.err(f'"{m}" is not a valid mode', w.k - 1)
            want["mode"] = (XFRM_MODE_TUNNEL if m == "tunnel" else -1, at)  # only tunnel mode is modelled
    return want


def _state_filter(w: _Words, allowed=(*STATE_ID_WORDS, "mode", "reqid")) -> Callable[[XfrmState], bool]:
    want = _state_id(w, allowed)
    return lambda x: all(getattr(x, k) == v for k, (v, _) in want.items())


def _state_get(w: _Words, xfrm: Xfrm) -> XfrmState:
    """The ID of delete and get: dst and spi name one state (a src given must match too).

    Linux: xfrm_user.c › xfrm_user_state_lookup (xfrm_state_lookup by daddr, spi and proto)."""
    want = _state_id(w, STATE_ID_WORDS)
    for field, word in (("daddr", "dst"), ("spi", "spi")):
        if field not in want:
            raise w.err(f'"{word}" is missing (dst and spi name the state)', len(w.t) - 1, after=True)
    x = xfrm_state_lookup(xfrm, want["daddr"][0], want["spi"][0])
    if x is None or ("saddr" in want and x.saddr != want["saddr"][0]):
        raise w.err("RTNETLINK answers: No such process", want["spi"][1])
    return x


POLICY_FILTER_WORDS = ("src", "dst", "proto", "sport", "dport", "dir", "priority", "action", "index", "flag")


def _policy_filter(w: _Words) -> Callable[[XfrmPolicy], bool]:
    """[SELECTOR] [dir DIR] [index INDEX] [action ACTION] [priority PRIORITY] [flag FLAG] words of
    deleteall and list: a predicate over XfrmPolicy (the selector's words compare with the policy's selector)."""
    want: list[tuple[Callable, object]] = []
    while w.more():
        kw = w.next("keyword")
        if kw not in POLICY_FILTER_WORDS:
            raise w.err(f'unknown keyword "{kw}" (expected {", ".join(POLICY_FILTER_WORDS)})', w.k - 1)
        if kw in ("src", "dst"):
            want.append((lambda p, f=kw[0] + "addr": getattr(p.sel, f), w.prefix(f"{kw} prefix")))
        elif kw == "proto":
            name = w.next("proto")
            want.append((lambda p: p.sel.proto, UPSPEC_PROTOS.get(name) or _int(w, name, "proto", 255)))
        elif kw in ("sport", "dport"):
            want.append((lambda p, f=kw: getattr(p.sel, f), w.num(kw, 0, 65535)))
        elif kw == "dir":
            want.append((lambda p: p.dir, _dir(w)))
        elif kw == "action":
            a = w.next("action")
            if a not in ("allow", "block"):
                raise w.err(f'"{a}" is not a valid action (allow, block)', w.k - 1)
            want.append((lambda p: p.action, XFRM_POLICY_BLOCK if a == "block" else XFRM_POLICY_ALLOW))
        elif kw == "flag":  # iproute2 xfrm_policy_filter_match: any of the flags given
            f = _policy_flag(w)
            want.append((lambda p, f=f: bool(p.flags & f), True))
        else:
            want.append((lambda p, f=kw: getattr(p, f), w.num(kw)))
    return lambda p: all(get(p) == v for get, v in want)


def _dir(w: _Words) -> int:
    d = w.next("dir")
    if d not in XFRM_DIR_NAMES:
        raise w.err(f'"{d}" is not a valid dir (in, out, fwd)', w.k - 1)
    return XFRM_DIR_NAMES.index(d)


def _policy_get(w: _Words, xfrm: Xfrm) -> XfrmPolicy:
    """`{ SELECTOR | index INDEX } dir DIR` of delete and get: the one policy they name.

    Linux: xfrm_user.c › xfrm_get_policy (xfrm_policy_byid or xfrm_policy_bysel_ctx)."""
    first = w.k
    if w.more() and w.t[w.k] == "index":
        w.k += 1
        index = w.num("index")
        if w.next("dir") != "dir":
            raise w.err('"dir" expected', w.k - 1)
        d = _dir(w)
        if w.more():
            raise w.err(f'unknown keyword "{w.t[w.k]}"', w.k)
        found = [p for p in xfrm.policies if p.index == index and p.dir == d]
    else:
        pol = _policy(w, need_dir=True)
        found = [p for p in xfrm.policies if p.dir == pol.dir and p.sel == pol.sel]
    if not found:
        raise w.err("RTNETLINK answers: No such file or directory", min(first, len(w.t) - 1))
    return found[0]


def _state_add(w: _Words, xfrm: Xfrm, update: bool = False) -> None:
    vals: dict = {"lft": XfrmLifetimeCfg(), "flags": 0}
    first = w.k
    while w.more():
        kw = w.next("keyword")
        at = w.k - 1
        if kw in ("src", "dst"):
            vals[kw] = (w.addr(f"{kw} address"), w.k - 1)
        elif kw == "proto":
            p = w.next("proto")
            if p != "esp":
                raise w.err(f'proto "{p}" is not supported (esp only)', w.k - 1)
        elif kw == "spi":
            vals["spi"] = w.num("spi", 1)
        elif kw == "reqid":
            vals["reqid"] = w.num("reqid")
        elif kw == "mode":
            m = w.next("mode")
            if m != "tunnel":
                raise w.err(f'mode "{m}" is not supported (tunnel only)', w.k - 1)
        elif kw == "aead":
            _aead(w, vals)
        elif kw in ("enc", "auth", "auth-trunc", "comp"):
            raise w.err(f'"{kw}" algorithms are not supported: use aead', at)
        elif kw == "replay-window":
            vals["replay_window"] = (w.num("replay-window", 0, XFRMA_REPLAY_ESN_MAX), w.k - 1)
        elif kw == "flag":
            while w.more() and w.t[w.k] in STATE_FLAGS:
                vals["flags"] |= STATE_FLAGS[w.next("flag")]
            if w.k == at + 1:
                raise w.err(f'"{w.t[w.k] if w.more() else ""}" is not a valid flag', min(w.k, len(w.t) - 1))
        elif kw == "encap":
            if w.next("encap type") != "espinudp":
                raise w.err("encap type must be espinudp", w.k - 1)
            vals["encap"] = (w.num("sport", 1, 65535), w.num("dport", 1, 65535), str(w.addr("oa")))
        elif kw == "limit":
            lim = w.next("limit")
            if lim not in LIMITS:
                raise w.err(f'"{lim}" is not a valid limit', w.k - 1)
            setattr(vals["lft"], LIMITS[lim], w.num(lim, 0, (1 << 63) - 1))
        elif kw == "pcpu-num":
            vals["pcpu_num"] = _pcpu_num(w)
        else:
            raise w.err(f'unknown keyword "{kw}"', at)
    for need in ("src", "dst", "spi", "aead"):
        if need not in vals:
            raise w.err(f'"{need}" is missing', max(first - 1, 0))
    (saddr, _), (daddr, dk) = vals["src"], vals["dst"]
    if saddr.version != daddr.version:
        raise w.err("src and dst are of different families", dk)
    window, _ = vals.get("replay_window", (0, first))
    alg, name, key, salt, icv = vals["aead"]
    enc = vals.get("encap")
    x = XfrmState(family_of(daddr), saddr, daddr, vals["spi"], reqid=vals.get("reqid", 0), alg=alg, alg_name=name,
                  key=key, salt=salt, icv_truncbits=icv, replay_window=window, flags=vals["flags"],
                  encap_type=UDP_ENCAP_ESPINUDP if enc else 0, encap_sport=enc[0] if enc else 0,
                  encap_dport=enc[1] if enc else 0, encap_oa=enc[2] if enc else "0.0.0.0", lft=vals["lft"],
                  pcpu_num=vals.get("pcpu_num", UINT_MAX))  # fmt: skip
    if update:
        old = xfrm._byid.get((daddr.packed, x.spi, x.proto))
        if old is None:
            raise w.err("No such process", dk)  # Linux: xfrm_state_update -ESRCH
        xfrm_state_update(xfrm, old, x)  # Linux keeps the SA's pcpu_num (checked above, not copied)
        return
    try:
        xfrm_state_add(xfrm, x)
    except ValueError as e:
        raise w.err(str(e), dk) from None


def _pcpu_num(w: _Words) -> int:
    """`pcpu-num CPUNUM`: iproute2 reads a u32 (get_u32, any base) and sends none for 0xffffffff;
    the kernel refuses a CPU it does not have (xfrm_user.c › xfrm_state_construct: -ERANGE)."""
    n = w.num("pcpu-num")
    ncpu = os.cpu_count() or 1  # num_possible_cpus(): a worker is one CPU, so workers <= CPUs
    if n != UINT_MAX and n >= ncpu:
        raise w.err(f"pCPU number too big: {n} (this machine has CPUs 0..{ncpu - 1})", w.k - 1)
    return n


def _aead(w: _Words, vals: dict) -> None:
    name = w.next("aead algorithm")
    if name not in AEAD_ALGS:
        raise w.err(f'aead "{name}" is not supported ({", ".join(AEAD_ALGS)})', w.k - 1)
    kw = w.next("key")
    try:
        raw = bytes.fromhex(kw[2:]) if kw.startswith("0x") else kw.encode()
    except ValueError:
        raise w.err(f'"{kw}" is not a valid key', w.k - 1) from None
    ok = (20, 36) if AEAD_ALGS[name] == evp.XFRM_AEAD_GCM else (36,)
    if len(raw) not in ok:
        sizes = " or ".join(str(8 * n) for n in ok)
        raise w.err(
            f"{name} needs a {sizes}-bit key (cipher key plus 32-bit salt), got {8 * len(raw)}", w.k - 1
        )
    icv = w.num("ICV length in bits", 0, 1024)
    if icv != 128:
        raise w.err(f"ICV length {icv} is not supported (128 only)", w.k - 1)
    vals["aead"] = (AEAD_ALGS[name], name, raw[:-4], raw[-4:], icv)


def _policy(w: _Words, need_dir: bool) -> XfrmPolicy:
    sel: dict = {}
    pol: dict = {"priority": 0, "action": XFRM_POLICY_ALLOW, "tmpls": [], "flags": 0}
    first = w.k
    while w.more():
        kw = w.next("keyword")
        at = w.k - 1
        if kw in ("src", "dst"):
            sel[kw] = (w.prefix(f"{kw} prefix"), at + 1)
        elif kw == "proto":
            p = w.next("proto")
            sel["proto"] = UPSPEC_PROTOS.get(p) or _int(w, p, "proto", 255)
        elif kw in ("sport", "dport"):
            sel[kw] = w.num(kw, 0, 65535)
        elif kw == "dir":
            pol["dir"] = _dir(w)
        elif kw == "priority":
            pol["priority"] = w.num("priority")
        elif kw == "action":
            a = w.next("action")
            if a not in ("allow", "block"):
                raise w.err(f'"{a}" is not a valid action (allow, block)', w.k - 1)
            pol["action"] = XFRM_POLICY_BLOCK if a == "block" else XFRM_POLICY_ALLOW
        elif kw == "tmpl":
            pol["tmpls"].append(_tmpl(w))
        elif kw == "flag":
            pol["flags"] = _policy_flag(w)
        elif kw in ("ptype", "index", "dev", "mark", "if_id", "limit"):
            raise w.err(f'"{kw}" is not supported in policies', at)
        else:
            raise w.err(f'unknown keyword "{kw}"', at)
    if "dir" not in pol:
        raise w.err('"dir" is missing', max(first - 1, 0))
    if ("sport" in sel or "dport" in sel) and sel.get("proto") not in (6, 17, 132, 33):
        raise w.err("sport/dport need proto tcp, udp, sctp or dccp", first)
    any4 = ipaddress.ip_network("0.0.0.0/0")
    s, sk = sel.get("src", (None, first))
    d, dk = sel.get("dst", (None, first))
    fam_net = s or d or any4
    s = s or ipaddress.ip_network("0.0.0.0/0" if fam_net.version == 4 else "::/0")
    d = d or ipaddress.ip_network("0.0.0.0/0" if fam_net.version == 4 else "::/0")
    if s.version != d.version:
        raise w.err("src and dst are of different families", dk)
    xs = XfrmSelector(family_of(s), s, d, sel.get("proto", 0), sel.get("sport", 0), sel.get("dport", 0))
    return XfrmPolicy(xs, pol["dir"], pol["priority"], pol["action"], pol["tmpls"], flags=pol["flags"])


def _policy_flag(w: _Words) -> int:
    """`flag FLAG-LIST`: a hex number (0x.., the whole u8) or the names localok and icmp, as
    iproute2's xfrm_policy_flag_parse reads it. Only XFRM_POLICY_CPU_ACQUIRE (0x4, which iproute2
    has no name for) is modelled; the others are refused rather than ignored."""
    word = w.next("flag")
    if word in POLICY_FLAG_NAMES:
        raise w.err(f'flag "{word}" is not supported (0x4, XFRM_POLICY_CPU_ACQUIRE, only)', w.k - 1)
    if not (word.startswith("0x") and len(word) > 2):
        raise w.err(f'"{word}" is not a valid flag (a hex number as ip xfrm takes it: flag 0x4 is '
                    "XFRM_POLICY_CPU_ACQUIRE)", w.k - 1)  # fmt: skip
    try:
        flags = int(word, 16)
    except ValueError:
        raise w.err(f'"{word}" is not a valid flag (hex, 0x0..0xff)', w.k - 1) from None
    if flags > 0xFF:
        raise w.err(f"flag {word} out of range 0x0..0xff", w.k - 1)
    if flags & ~XFRM_POLICY_FLAGS:
        raise w.err(f"flag {word} is not supported (0x4, XFRM_POLICY_CPU_ACQUIRE, only)", w.k - 1)
    return flags


def _int(w: _Words, s: str, what: str, hi: int) -> int:
    try:
        v = int(s, 0)
    except ValueError:
        raise w.err(f'"{s}" is not a valid {what}', w.k - 1) from None
    if not 0 <= v <= hi:
        raise w.err(f"{what} {v} out of range 0..{hi}", w.k - 1)
    return v


def _tmpl(w: _Words) -> XfrmTmpl:
    """tmpl src A dst B proto esp [spi SPI] [reqid N] mode tunnel [level required|use]."""
    vals: dict = {}
    at = w.k - 1
    while w.more() and w.t[w.k] in ("src", "dst", "proto", "spi", "reqid", "mode", "level"):
        kw = w.next("keyword")
        if kw in ("src", "dst"):
            vals[kw] = w.addr(f"tmpl {kw} address")
        elif kw == "proto":
            if w.next("proto") != "esp":
                raise w.err("tmpl proto must be esp", w.k - 1)
        elif kw in ("spi", "reqid"):
            vals[kw] = w.num(kw)
        elif kw == "mode":
            if w.next("mode") != "tunnel":
                raise w.err("tmpl mode must be tunnel", w.k - 1)
        else:
            lv = w.next("level")
            if lv not in ("required", "use"):
                raise w.err(f'"{lv}" is not a valid level', w.k - 1)
            vals["optional"] = lv == "use"
    if "dst" not in vals:
        raise w.err("tmpl needs src and dst (tunnel mode)", at)
    saddr, daddr = vals.get("src"), vals["dst"]
    if saddr is not None and saddr.version != daddr.version:
        raise w.err("tmpl src and dst are of different families", at)
    return XfrmTmpl(family_of(daddr), saddr, daddr, IPPROTO_ESP, vals.get("spi", 0), vals.get("reqid", 0),
                    XFRM_MODE_TUNNEL, vals.get("optional", False))  # fmt: skip


def _policy_add(w: _Words, xfrm: Xfrm, excl: bool = True) -> None:
    """`policy add` (excl: an existing selector+dir is an error) or `policy update` (replaces it)."""
    start = w.k
    pol = _policy(w, need_dir=True)
    try:
        xfrm_policy_insert(xfrm, pol, excl)
    except ValueError as e:
        raise w.err(str(e), start) from None

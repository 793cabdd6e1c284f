"""`xfrm state add ...` and `xfrm policy add ...` lines of an ip-batch network file.

Linux: iproute2 ip/xfrm_state.c (xfrm_state_modify) and ip/xfrm_policy.c (xfrm_policy_modify), which
turn the words into XFRM_MSG_NEWSA / XFRM_MSG_NEWPOLICY; the kernel's checks (verify_newsa_info,
verify_replay, verify_newpolicy_info) are done here too, so a bad line fails with file:line:col.
"""

from __future__ import annotations

import ipaddress

from flowpath.errors import ConfigError
from flowpath.packet.layout import IPPROTO_ESP
from flowpath.xfrm import evp
from flowpath.xfrm.policy import (
    XFRM_DIR_NAMES,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_BLOCK,
    XfrmPolicy,
    XfrmSelector,
    XfrmTmpl,
    family_of,
    xfrm_policy_delete,
    xfrm_policy_insert,
)
from flowpath.xfrm.replay import XFRMA_REPLAY_ESN_MAX
from flowpath.xfrm.state import (
    UDP_ENCAP_ESPINUDP,
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
    xfrm_state_flush,
)

AEAD_ALGS = {"rfc4106(gcm(aes))": evp.XFRM_AEAD_GCM, "rfc7539esp(chacha20,poly1305)": evp.XFRM_AEAD_CHACHA}
STATE_FLAGS = {"noecn": XFRM_STATE_NOECN, "decap-dscp": XFRM_STATE_DECAP_DSCP, "nopmtudisc": XFRM_STATE_NOPMTUDISC,
               "esn": XFRM_STATE_ESN, "af-unspec": XFRM_STATE_AF_UNSPEC}  # fmt: skip
UPSPEC_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132, "dccp": 33, "gre": 47,
                 "esp": 50, "ah": 51}  # fmt: skip
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


def xfrm_config_line(
    tokens: list[str], path, line: int, cols: list[int], net, source: str | None = None
) -> None:
    """Apply one `xfrm state|policy add|delete|flush ...` line (a leading "xfrm" is optional).

    `net` is an Xfrm or an object whose `.xfrm` is one (created when missing). Raises ConfigError
    with the column of the offending token.
    """
    w = _Words(tokens, cols, path, line, source)
    if w.more() and w.t[0] == "xfrm":
        w.k = 1
    obj = w.next("state or policy")
    verb = w.next("add, delete or flush")
    xfrm = _xfrm_of(net)
    if obj == "state" and verb in ("add", "update"):
        _state_add(w, xfrm)
    elif obj == "state" and verb == "flush":
        xfrm_state_flush(xfrm)
    elif obj == "policy" and verb in ("add", "update"):
        _policy_add(w, xfrm)
    elif obj == "policy" and verb == "delete":
        pol = _policy(w, need_dir=True)
        try:
            xfrm_policy_delete(xfrm, pol.sel, pol.dir)
        except KeyError as e:
            raise w.err(str(e), 0) from None
    elif obj == "policy" and verb == "flush":
        xfrm.policies.clear()
    elif obj in ("state", "policy"):
        raise w.err(f'"xfrm {obj} {verb}" is not supported', w.k - 1)
    else:
        raise w.err(f'"xfrm {obj}" is not supported', w.k - 2)


def _state_add(w: _Words, xfrm: Xfrm) -> None:
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
                  encap_dport=enc[1] if enc else 0, encap_oa=enc[2] if enc else "0.0.0.0", lft=vals["lft"])  # fmt: skip
    try:
        xfrm_state_add(xfrm, x)
    except ValueError as e:
        raise w.err(str(e), dk) from None


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
    pol: dict = {"priority": 0, "action": XFRM_POLICY_ALLOW, "tmpls": []}
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
            d = w.next("dir")
            if d not in XFRM_DIR_NAMES:
                raise w.err(f'"{d}" is not a valid dir (in, out, fwd)', w.k - 1)
            pol["dir"] = XFRM_DIR_NAMES.index(d)
        elif kw == "priority":
            pol["priority"] = w.num("priority")
        elif kw == "action":
            a = w.next("action")
            if a not in ("allow", "block"):
                raise w.err(f'"{a}" is not a valid action (allow, block)', w.k - 1)
            pol["action"] = XFRM_POLICY_BLOCK if a == "block" else XFRM_POLICY_ALLOW
        elif kw == "tmpl":
            pol["tmpls"].append(_tmpl(w))
        elif kw in ("ptype", "index", "dev", "mark", "if_id", "flag", "limit"):
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
    return XfrmPolicy(xs, pol["dir"], pol["priority"], pol["action"], pol["tmpls"])


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


def _policy_add(w: _Words, xfrm: Xfrm) -> None:
    start = w.k
    pol = _policy(w, need_dir=True)
    try:
        xfrm_policy_insert(xfrm, pol)
    except ValueError as e:
        raise w.err(str(e), start) from None

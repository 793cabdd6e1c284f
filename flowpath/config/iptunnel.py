"""IP tunnel lines: `link add NAME type ipip|ip6tnl ...` and `tunnel add|delete NAME mode ...`.

Linux: iproute2 ip/link_iptnl.c › iptunnel_parse_opt, ip/link_ip6tnl.c › ip6tunnel_parse_opt,
ip/iptunnel.c and ip/ip6tunnel.c › parse_args (the ioctl syntax; `mode ipip6|ip6ip6` or `-6` makes an
ip6tnl device, as ip/tunnel.c's dispatch does). The parameters become a flowpath.net IpTunnel.

Deviations: TOS names from rt_dsfield (`AF11`, ...) are not known, only numbers; what configures no
modelled state is refused with its token: GRE keys and flags, fwmark, FOU/GUE encapsulation,
`external`, 6rd and ISATAP, `dscp inherit`, MPLS modes.
"""

from __future__ import annotations

from flowpath.config.ipargs import IpCmd, Token
from flowpath.net.ip_tunnel import DEFAULT_TNL_HOP_LIMIT, IpTunnel
from flowpath.net.link import KIND_IP6TNL, KIND_IPIP
from flowpath.net.model import Network

# mode words (iptunnel_parse_opt, ip6tunnel_parse_opt and the ioctl parse_args) -> (family, IpTunnel.mode)
_MODES = {
    "ipip": (4, "ipip"), "ipv4/ipv4": (4, "ipip"), "ip4ip4": (4, "ipip"), "any/ipv4": (4, "any"),
    "ip6ip6": (6, "ip6ip6"), "ipv6/ipv6": (6, "ip6ip6"), "ipip6": (6, "ipip6"), "ip4ip6": (6, "ipip6"),
    "ip/ipv6": (6, "ipip6"), "ipv4/ipv6": (6, "ipip6"), "any/ipv6": (6, "any"),
}  # fmt: skip
_UNSUPPORTED = ("key", "ikey", "okey", "seq", "iseq", "oseq", "csum", "icsum", "ocsum", "fwmark", "encap",
                "encap-sport", "encap-dport", "encap-csum", "encap-remcsum", "external", "6rd-prefix",
                "6rd-relay_prefix", "6rd-reset", "isatap", "dscp", "allow-localremote", "ignore-df",
                "erspan", "prl-default")  # fmt: skip


def _mode(cmd: IpCmd, tok: Token, family: int | None) -> tuple[int, str]:
    """A `mode` word; `any` is ipip's unless the line is IPv6 (`type ip6tnl`, `-6`)."""
    if tok.text == "any":
        return (family or 4), "any"
    if tok.text not in _MODES:
        if tok.text in ("gre", "sit", "vti", "isatap", "ip6gre", "vti6", "mplsip", "mpls/ipv4", "ip6ip"):
            raise cmd.error(tok, f'unsupported tunnel mode "{tok.text}" (ipip, ipip6, ip6ip6, any)')
        raise cmd.error(tok, f'Cannot guess tunnel mode "{tok.text}"')
    mode = _MODES[tok.text]
    if family is not None and mode[0] != family:
        raise cmd.error(tok, f'mode "{tok.text}" is not an IPv{family}-outer tunnel mode')
    return mode


def _tos(cmd: IpCmd, tok: Token, family: int) -> int:
    """`tos N|inherit` (rtnl_dsfield_a2n and ip6tnl's get_u8 read hexadecimal, with or without 0x)."""
    if tok.text == "inherit":
        return 1
    text = tok.text[2:] if tok.text[:2].lower() == "0x" else tok.text
    try:
        value = int(text, 16)
    except ValueError:
        raise cmd.error(tok, f'bad TOS value "{tok.text}"') from None
    if not 0 <= value <= 255:
        raise cmd.error(tok, f'bad TOS value "{tok.text}"')
    # bit 0 means inherit to ipip (ip_tunnel_xmit); ip6tnl keeps inherit in a flag, and its ECN
    # bits are overwritten by ip6_tnl's INET_ECN_encapsulate, so they carry nothing
    return value & ~3 if family == 6 else value


def parse_tunnel_args(
    net: Network, cmd: IpCmd, family: int | None, ioctl: bool
) -> tuple[IpTunnel, Token | None]:
    """The parameters of one tunnel from the rest of the line; returns (IpTunnel, the device-name token
    of the ioctl syntax, or None). `family` is the outer family (None: from `mode`, IPv4 by default)."""
    mode = None
    local = remote = 0
    local_tok = remote_tok = None
    ttl = tos = None
    pmtudisc, nopmtu_tok, link, encap_limit, name_tok, flowlabel = True, None, 0, None, None, None
    while cmd.more():
        tok = cmd.take()
        word = tok.text
        if word == "mode":
            mode_tok = cmd.arg(tok)
            family, mode = _mode(cmd, mode_tok, family)
            cmd.at["type"] = mode_tok
        elif word in ("remote", "local"):
            val = cmd.arg(tok)
            cmd.at[word] = val
            if word == "remote":
                remote_tok = val
            else:
                local_tok = val
        elif word == "dev" or (not ioctl and len(word) > 1 and "dev".startswith(word)):
            val = cmd.arg(tok)
            cmd.at["link"] = val
            link = cmd.device(val, net).ifindex
        elif word in ("ttl", "hoplimit", "hlim"):
            val = cmd.arg(tok)
            ttl = 0 if val.text == "inherit" else cmd.uint(val, "TTL", 255)
        elif word in ("tos", "tclass", "tc", "dsfield") or (len(word) > 2 and "dsfield".startswith(word)):
            tos_tok = cmd.arg(tok)
            tos = tos_tok
        elif word in ("pmtudisc", "nopmtudisc"):
            pmtudisc = word == "pmtudisc"
            nopmtu_tok = None if pmtudisc else tok
        elif word == "encaplimit":
            val = cmd.arg(tok)
            encap_limit = -1 if val.text == "none" else cmd.uint(val, "encaplimit", 255)
            cmd.at["encaplimit"] = val
        elif word in ("flowlabel", "fl"):
            flowlabel = _flowlabel(cmd, cmd.arg(tok))
            cmd.at["flowlabel"] = tok
        elif word in ("noencap",) or (
            word == "encap" and cmd.peek() is not None and cmd.peek().text == "none"
        ):
            if word == "encap":
                cmd.take()
        elif word in _UNSUPPORTED:
            raise cmd.error(tok, f'unsupported tunnel option "{word}"')
        elif ioctl and name_tok is None:
            name_tok = cmd.arg(tok) if word == "name" else tok
        else:
            raise cmd.unknown(tok)
    family = family or 4
    if mode is None:
        if ioctl and family == 4:
            raise cmd.error(cmd.at["verb"], "cannot determine tunnel mode (ipip, ipip6, ip6ip6)")
        # link_ip6tnl.c starts from proto 0 ("any"), ip6tunnel.c from IPPROTO_IPV6; ipip is ipip
        mode = "ipip" if family == 4 else ("ip6ip6" if ioctl else "any")
    if local_tok is not None:
        local = 0 if local_tok.text == "any" else cmd.address(local_tok, family)[1]
    if remote_tok is not None:
        remote = 0 if remote_tok.text == "any" else cmd.address(remote_tok, family)[1]
    if ttl is None:
        ttl = 0 if family == 4 else DEFAULT_TNL_HOP_LIMIT
    if family == 4 and ttl and nopmtu_tok is not None:
        raise cmd.error(nopmtu_tok, "ttl != 0 and nopmtudisc are incompatible")
    if family == 6 and nopmtu_tok is not None:
        raise cmd.error(nopmtu_tok, "nopmtudisc is for ipip tunnels (ip6tnl sends no fragments' DF)")
    if family == 4 and encap_limit is not None:
        raise cmd.error(cmd.at["encaplimit"], "encaplimit is for ip6tnl tunnels")
    if family == 4 and flowlabel is not None:
        raise cmd.error(cmd.at["flowlabel"], "flowlabel is for ip6tnl tunnels")
    p = IpTunnel(
        mode, family, local, remote, ttl, 0 if tos is None else _tos(cmd, tos, family), pmtudisc, link
    )
    if encap_limit is not None:
        p.encap_limit = encap_limit
    if flowlabel is not None:
        p.flowlabel = flowlabel
    return p, name_tok


def _flowlabel(cmd: IpCmd, tok: Token) -> int:
    """`flowlabel N|inherit` (link_ip6tnl.c: get_u32 base 16, at most IPV6_FLOWLABEL_MASK); -1 is
    inherit (IP6_TNL_F_USE_ORIG_FLOWLABEL)."""
    if tok.text == "inherit":
        return -1
    text = tok.text[2:] if tok.text[:2].lower() == "0x" else tok.text
    try:
        value = int(text, 16)
    except ValueError:
        raise cmd.error(tok, f'invalid flowlabel "{tok.text}"') from None
    if not 0 <= value <= 0xFFFFF:
        raise cmd.error(tok, f'invalid flowlabel "{tok.text}"')
    return value


def parse_ipip(net: Network, cmd: IpCmd, req: dict) -> None:
    """`type ipip [mode ipip|any] [remote ADDR] [local ADDR] [ttl T|inherit] [tos T|inherit]
    [pmtudisc|nopmtudisc] [dev PHYS]` (link_iptnl.c)."""
    req["tunnel"], _ = parse_tunnel_args(net, cmd, 4, ioctl=False)


def parse_ip6tnl(net: Network, cmd: IpCmd, req: dict) -> None:
    """`type ip6tnl [mode ipip6|ip6ip6|any] [remote ADDR] [local ADDR] [hoplimit H|inherit]
    [encaplimit E|none] [tclass T|inherit] [flowlabel F|inherit] [dev PHYS]` (link_ip6tnl.c)."""
    req["tunnel"], _ = parse_tunnel_args(net, cmd, 6, ioctl=False)


def tunnel_add(net: Network, cmd: IpCmd) -> None:
    """`tunnel add [name] NAME mode ipip|ipip6|ip6ip6|any ...` (iptunnel.c / ip6tunnel.c › do_add)."""
    p, name_tok = parse_tunnel_args(net, cmd, 6 if cmd.family == 6 else None, ioctl=True)
    if name_tok is None:
        raise cmd.error(cmd.at["verb"], 'tunnel add needs a device name ("name NAME")')
    cmd.at["name"] = name_tok
    kind = KIND_IPIP if p.family == 4 else KIND_IP6TNL
    cmd.rtnl(lambda: net.link_add(cmd.ifname(name_tok), kind, tunnel=p), name_tok)


def tunnel_del(net: Network, cmd: IpCmd) -> None:
    """`tunnel delete [name] NAME`: only a tunnel device (SIOCDELTUNNEL goes to the tunnel driver)."""
    if not cmd.more():
        raise cmd.error(cmd.at["verb"], 'tunnel delete needs a device name ("name NAME")')
    tok = cmd.take()
    if tok.text == "name":
        tok = cmd.arg(tok)
    while cmd.more():  # iproute2 parses the whole parameter list; only the name matters
        extra = cmd.take()
        if extra.text in ("mode", "remote", "local", "dev", "ttl", "tos"):
            cmd.arg(extra)
        else:
            raise cmd.unknown(extra)
    link = cmd.device(tok, net)
    if not link.is_tunnel:
        raise cmd.error(tok, f'"{tok.text}" is not a tunnel device ({link.kind})')
    cmd.rtnl(lambda: net.link_del(link), tok)

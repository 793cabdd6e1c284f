"""`ip -batch` files: one `ip` command per line, without the leading `ip`, into a Network.

Linux: iproute2 ip/ip.c (batch, the object table), ip/iplink.c, ip/ipaddress.c (ipaddr_modify),
ip/iproute.c (iproute_modify), ip/ipneigh.c (ipneigh_modify); the lexer and argument parsers
(lib/utils.c) are in ipargs.py.
Lines run in order against the model, as `ip -batch` runs them against the kernel; the first failure
raises ConfigError with the file, line and column of the token at fault. Commands: `link add|set|delete`,
`addr add|delete`, `route add|replace|delete`, `neigh add|replace|change|delete`, `tunnel add|delete`.

Extension point: `OBJECTS` maps each object name (in iproute2's order, which decides what an
abbreviation means) to its handler; None means "unsupported". `LINK_TYPES` maps `link add ... type KIND`
to a parser of the kind's arguments. A later module registers e.g. `OBJECTS["l2tp"] = do_ipl2tp`;
a handler gets the Network and an IpCmd cursor over the line's tokens (after the object word).

Deviations: `-4`, `-6` and `-f inet|inet6` are accepted in front of a line (real `ip -batch` accepts
options only on its own command line); keywords must be spelled out (iproute2 takes any prefix of many,
so `ip link add a` means `address`); `ip neigh add` needs `lladdr`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from flowpath.config.ipargs import IpCmd, Token, matches, read_commands
from flowpath.config.iptunnel import parse_ip6tnl, parse_ipip, tunnel_add, tunnel_del
from flowpath.errors import ConfigError, warn_if_others_can_read
from flowpath.net.fib import (
    PROTO_NAMES,
    RT_TABLE_DEFAULT,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTN_BLACKHOLE,
    RTN_PROHIBIT,
    RTN_UNICAST,
    RTN_UNREACHABLE,
    FibAlias,
)
from flowpath.net.inetdev import (
    ADDR_ALL,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_SITE,
    RT_SCOPE_UNIVERSE,
    inet_mask,
)
from flowpath.net.link import KIND_DUMMY, KIND_ETHER, KIND_IP6TNL, KIND_IPIP, KIND_VETH, KIND_VLAN
from flowpath.net.model import Network
from flowpath.net.neighbour import NUD_NAMES, NUD_PERMANENT, Neighbour
from flowpath.packet.layout import ETH_P_8021AD, ETH_P_8021Q

Handler = Callable[[Network, IpCmd], None]


def _subcommand(cmd: IpCmd, obj: Token, verbs: tuple[str, ...], supported: dict[str, Handler]) -> None:
    """Dispatch `OBJECT VERB ...` on the first verb `VERB` abbreviates, in iproute2's order."""
    if not cmd.more():
        raise cmd.error(obj, f'missing command after "{obj.text}"')
    tok = cmd.take()
    verb = next((v for v in verbs if matches(tok.text, v)), None)
    if verb is None:
        raise cmd.error(tok, f'unknown command "{tok.text}" for "{obj.text}"')
    if verb not in supported:
        raise cmd.error(tok, f'unsupported command "{obj.text} {verb}"')
    cmd.at["verb"] = tok
    supported[verb](cmd.net, cmd)


# ---- link (ip/iplink.c) ----

KindParser = Callable[[Network, IpCmd, dict], None]


def _parse_veth(net: Network, cmd: IpCmd, req: dict) -> None:
    """`type veth [peer [name] P [address MAC] [mtu N]]` (ip/link_veth.c)."""
    if not cmd.more():
        return
    tok = cmd.take()
    if tok.text != "peer":
        raise cmd.unknown(tok)
    while cmd.more():
        tok = cmd.take()
        if tok.text == "address":
            cmd.at["peer_address"] = val = cmd.arg(tok)
            req["peer_address"] = cmd.hwaddr(val)
        elif tok.text == "mtu":
            cmd.at["peer_mtu"] = val = cmd.arg(tok)
            req["peer_mtu"] = cmd.uint(val, "mtu")
        else:
            if tok.text == "name":
                tok = cmd.arg(tok)
            if "peer" in req:
                raise cmd.unknown(tok)
            cmd.at["peer"] = tok
            req["peer"] = cmd.ifname(tok)


VLAN_PROTOCOLS = {"802.1q": ETH_P_8021Q, "802.1ad": ETH_P_8021AD}


def _parse_vlan(net: Network, cmd: IpCmd, req: dict) -> None:
    """`type vlan [protocol 802.1Q|802.1ad] id VID [link PARENT]` (ip/iplink_vlan.c)."""
    while cmd.more():
        tok = cmd.take()
        if tok.text == "id":
            cmd.at["id"] = val = cmd.arg(tok)
            req["vlan_id"] = cmd.uint(val, "vlan id", 4095)
        elif tok.text == "link":
            cmd.at["link"] = val = cmd.arg(tok)
            req["parent"] = cmd.device(val, net).ifindex
        elif tok.text == "protocol":
            val = cmd.arg(tok)
            if val.text.lower() not in VLAN_PROTOCOLS:  # ip/iplink_vlan.c › ll_proto_a2n
                raise cmd.error(val, f'unsupported vlan protocol "{val.text}"')
            req["vlan_proto"] = VLAN_PROTOCOLS[val.text.lower()]
        else:
            raise cmd.unknown(tok)
    if "vlan_id" not in req:
        raise cmd.error(cmd.at["type"], 'vlan needs "id VID"')


def _parse_no_args(net: Network, cmd: IpCmd, req: dict) -> None:
    if cmd.more():
        raise cmd.unknown(cmd.take())


# `link add ... type KIND`: the kinds the model knows. Later: "gre", ...
LINK_TYPES: dict[str, tuple[str, KindParser]] = {
    "dummy": (KIND_DUMMY, _parse_no_args),
    "veth": (KIND_VETH, _parse_veth),
    "vlan": (KIND_VLAN, _parse_vlan),
    "ipip": (KIND_IPIP, parse_ipip),
    "ip6tnl": (KIND_IP6TNL, parse_ip6tnl),
}


def _parse_link_common(net: Network, cmd: IpCmd, req: dict, adding: bool) -> Token | None:
    """The words `link add` and `link set` share; returns the bare device-name token (or `dev NAME`)."""
    name_tok = None
    while cmd.more():
        tok = cmd.take()
        word = tok.text
        if word in ("up", "down"):
            req["up"] = word == "up"
        elif word == "mtu":
            cmd.at["mtu"] = val = cmd.arg(tok)
            req["mtu"] = cmd.uint(val, "mtu")
        elif word == "address":
            cmd.at["address"] = val = cmd.arg(tok)
            req["address"] = cmd.hwaddr(val)
        elif word == "name" and not adding:
            cmd.at["name"] = val = cmd.arg(tok)
            req["name"] = cmd.ifname(val)
        elif adding and word == "link":
            cmd.at["link"] = val = cmd.arg(tok)
            req["parent"] = cmd.device(val, net).ifindex
        elif adding and word == "type":
            cmd.at["type"] = val = cmd.arg(tok)
            if val.text not in LINK_TYPES:
                raise cmd.error(val, f'unsupported link type "{val.text}"')
            kind, parse_kind = LINK_TYPES[val.text]
            req["kind"] = kind
            parse_kind(net, cmd, req)
        elif word in ("dev", "name"):
            if name_tok is not None:
                raise cmd.error(tok, f'duplicate "{word}"')
            name_tok = cmd.arg(tok)
        elif name_tok is None:
            name_tok = tok
        else:
            raise cmd.unknown(tok)
    return name_tok


def _link_add(net: Network, cmd: IpCmd) -> None:
    """`link add [link PARENT] [name] NAME [address MAC] [mtu N] [up] [type KIND ARGS]`."""
    req: dict = {}
    name_tok = _parse_link_common(net, cmd, req, adding=True)
    if name_tok is None:
        raise cmd.error(cmd.at["verb"], 'link add needs a device name ("name NAME")')
    cmd.at["name"] = cmd.at["dev"] = name_tok
    up = req.pop("up", None)
    req.setdefault("kind", KIND_ETHER)
    if net.kernel_link is not None:
        _port_from_kernel(net, cmd, name_tok, req)
    if req["kind"] != KIND_VLAN and "parent" in req:
        raise cmd.error(cmd.at["link"], f'"link" is only for vlan, not {req["kind"]}')
    link = cmd.rtnl(lambda: net.link_add(cmd.ifname(name_tok), **req), name_tok)
    if up:
        cmd.rtnl(lambda: net.link_set(link, up=True), name_tok)


def _port_from_kernel(net: Network, cmd: IpCmd, name_tok: Token, req: dict) -> None:
    """`flowpath run`: a `link add NAME` is the port on the kernel interface NAME; what the line leaves
    out (address, mtu) is the kernel interface's."""
    if req["kind"] in (KIND_VLAN, KIND_DUMMY, KIND_IPIP, KIND_IP6TNL):  # on a port, or inside flowpath only
        return
    if req["kind"] != KIND_ETHER:
        raise cmd.error(cmd.at["type"], f'type {req["kind"]}: a port of `flowpath run` is an existing kernel '
                        f'interface; write "link add NAME" with the interface\'s name')  # fmt: skip
    kl = net.kernel_link(name_tok.text)
    if kl is None:
        raise cmd.error(name_tok, f'no interface "{name_tok.text}" in this network namespace (a port of '
                        "`flowpath run` is an existing kernel interface)")  # fmt: skip
    req.setdefault("address", kl.mac)
    req.setdefault("mtu", kl.mtu)
    net.link_origin[name_tok.text] = lambda msg, tok=name_tok: cmd.error(tok, msg)


def _link_set(net: Network, cmd: IpCmd) -> None:
    """`link set [dev] NAME [up|down] [mtu N] [address MAC] [name NEW]`."""
    req: dict = {}
    name_tok = _parse_link_common(net, cmd, req, adding=False)
    if name_tok is None:
        raise cmd.error(cmd.at["verb"], 'link set needs a device ("dev NAME")')
    cmd.at["dev"] = name_tok
    link = cmd.device(name_tok, net)
    cmd.rtnl(lambda: net.link_set(link, **req), name_tok)


def _link_del(net: Network, cmd: IpCmd) -> None:
    """`link delete [dev] NAME`."""
    if not cmd.more():
        raise cmd.error(cmd.at["verb"], 'link delete needs a device ("dev NAME")')
    tok = cmd.take()
    if tok.text == "dev":
        tok = cmd.arg(tok)
    if cmd.more():
        raise cmd.unknown(cmd.take())
    cmd.at["dev"] = tok
    link = cmd.device(tok, net)
    cmd.rtnl(lambda: net.link_del(link), tok)


def do_iplink(net: Network, cmd: IpCmd) -> None:
    _subcommand(cmd, cmd.at["object"], ("add", "set", "change", "replace", "delete", "show", "list"),
                {"add": _link_add, "set": _link_set, "change": _link_set, "delete": _link_del})  # fmt: skip


def do_iptunnel(net: Network, cmd: IpCmd) -> None:
    """`tunnel add|delete` (ip/iptunnel.c › do_iptunnel; the parameters: flowpath.config.iptunnel)."""
    _subcommand(cmd, cmd.at["object"], ("add", "change", "delete", "show", "list", "prl", "6rd"),
                {"add": tunnel_add, "delete": tunnel_del})  # fmt: skip


# ---- address (ip/ipaddress.c › ipaddr_modify) ----

SCOPES = {"global": RT_SCOPE_UNIVERSE, "universe": RT_SCOPE_UNIVERSE, "site": RT_SCOPE_SITE,
          "link": RT_SCOPE_LINK, "host": RT_SCOPE_HOST}  # fmt: skip


def _scope(cmd: IpCmd, tok: Token) -> int:
    return SCOPES[tok.text] if tok.text in SCOPES else cmd.uint(tok, "scope", 255)


def _addr_modify(net: Network, cmd: IpCmd, verb: str) -> None:
    """`addr add [local] ADDR[/PLEN] [brd ADDR|+|-] [scope S] [label L] dev NAME [noprefixroute]
    [metric N] [nodad] [valid_lft forever] [preferred_lft forever]`; `addr delete ADDR[/PLEN] dev NAME`
    (no /PLEN: any prefix length, iproute2's "wildcard deletion")."""
    local_tok = brd_tok = dev_tok = None
    req: dict = {}
    while cmd.more():
        tok = cmd.take()
        word = tok.text
        if word in ("broadcast", "brd"):
            brd_tok = cmd.at["broadcast"] = cmd.arg(tok)
        elif word == "scope":
            cmd.at["scope"] = val = cmd.arg(tok)
            req["scope"] = _scope(cmd, val)
        elif word == "dev":
            dev_tok = cmd.arg(tok)
        elif word == "label":
            cmd.arg(tok)  # Deviation: labels are accepted and not kept
        elif word in ("metric", "priority", "preference"):
            req["metric"] = cmd.uint(cmd.arg(tok), "metric")
        elif word == "noprefixroute":
            req["noprefixroute"] = True
        elif word in ("nodad", "optimistic"):
            pass  # no DAD is modelled
        elif word in ("valid_lft", "preferred_lft"):
            val = cmd.arg(tok)
            if val.text != "forever":
                raise cmd.error(val, f'unsupported {word} "{val.text}" (only "forever")')
        elif word in ("peer", "remote", "anycast", "home", "mngtmpaddr", "autojoin"):
            raise cmd.error(tok, f'unsupported address option "{word}"')
        else:
            if word == "local":
                tok = cmd.arg(tok)
            if local_tok is not None:
                raise cmd.unknown(tok)
            local_tok = tok
    if local_tok is None:
        raise cmd.error(cmd.at["verb"], "addr add needs an address")
    if dev_tok is None:
        raise cmd.error(cmd.at["verb"], 'Not enough information: "dev" argument is required')
    cmd.at["address"] = cmd.at["dst"] = local_tok
    cmd.at["dev"] = dev_tok
    family, addr, plen = cmd.prefix(local_tok)
    link = cmd.device(dev_tok, net)
    if verb == "delete":
        wildcard = family == 4 and "/" not in local_tok.text
        cmd.rtnl(lambda: net.addr_del(link, family, addr, None if wildcard else plen), local_tok)
        return
    if brd_tok is not None:
        if family != 4:
            raise cmd.error(brd_tok, "Broadcast can be set only for IPv4 addresses")
        mask = inet_mask(4, plen)
        if brd_tok.text == "+":
            req["broadcast"] = (addr & mask) | (ADDR_ALL[4] ^ mask) if plen < 31 else None
        elif brd_tok.text == "-":
            req["broadcast"] = addr & mask if plen < 31 else None
        else:
            req["broadcast"] = cmd.address(brd_tok, 4)[1]
    cmd.rtnl(lambda: net.addr_add(link, family, addr, plen, **req), local_tok)


def do_ipaddr(net: Network, cmd: IpCmd) -> None:
    verbs = ("add", "change", "replace", "delete", "list", "show", "flush", "save", "restore")
    _subcommand(cmd, cmd.at["object"], verbs, {
        "add": lambda n, c: _addr_modify(n, c, "add"),
        "delete": lambda n, c: _addr_modify(n, c, "delete"),
    })  # fmt: skip


# ---- route (ip/iproute.c › iproute_modify) ----

ROUTE_TYPES = {"unicast": RTN_UNICAST, "blackhole": RTN_BLACKHOLE, "unreachable": RTN_UNREACHABLE,
               "prohibit": RTN_PROHIBIT}  # fmt: skip
_UNSUPPORTED_ROUTE_TYPES = ("local", "broadcast", "anycast", "multicast", "throw", "nat", "xresolve")
TABLES = {"main": RT_TABLE_MAIN, "local": RT_TABLE_LOCAL, "default": RT_TABLE_DEFAULT}
PROTOS = {name: num for num, name in PROTO_NAMES.items()}


def _route_modify(net: Network, cmd: IpCmd, verb: str) -> None:
    """`route add|replace|delete [TYPE] PREFIX|default [via [inet|inet6] GW] [dev NAME] [metric N]
    [mtu [lock] N] [src ADDR] [table ID] [proto P] [scope S] [onlink] [pref P]`."""
    fa = FibAlias(0, 0, 0)
    dst_tok = gw_tok = src_tok = dev_tok = None
    gw_family = None  # `via inet|inet6 GW`
    given: set[str] = set()  # what `route delete` must match (iproute2 leaves the rest unspecified)
    while cmd.more():
        tok = cmd.take()
        word = tok.text
        if word == "via":
            gw_tok = cmd.at["gateway"] = cmd.arg(tok)
            if gw_tok.text in ("inet", "inet6"):
                gw_family = 4 if gw_tok.text == "inet" else 6
                gw_tok = cmd.at["gateway"] = cmd.arg(gw_tok)
        elif word in ("dev", "oif"):
            dev_tok = cmd.at["dev"] = cmd.arg(tok)
        elif word == "src":
            src_tok = cmd.at["src"] = cmd.arg(tok)
        elif word in ("metric", "priority", "preference"):
            fa.metric = cmd.uint(cmd.arg(tok), "metric")
            given.add("metric")
        elif word == "mtu":
            val = cmd.arg(tok)
            if val.text == "lock":
                fa.mtu_lock, val = True, cmd.arg(val)
            fa.mtu = cmd.uint(val, "mtu")
            given.add("mtu")
        elif word == "table":
            val = cmd.arg(tok)
            fa.table = TABLES[val.text] if val.text in TABLES else cmd.uint(val, "table id")
            if fa.table == 0:
                raise cmd.error(val, 'invalid table id "0"')
        elif word == "proto":
            val = cmd.arg(tok)
            fa.protocol = PROTOS[val.text] if val.text in PROTOS else cmd.uint(val, "protocol", 255)
            given.add("proto")
        elif word == "scope":
            fa.scope = _scope(cmd, cmd.arg(tok))
            given.add("scope")
        elif word == "onlink":
            fa.onlink = True
        elif word == "pref":
            val = cmd.arg(tok)
            if val.text not in ("low", "medium", "high"):
                raise cmd.error(val, f'invalid pref "{val.text}"')
        elif dst_tok is not None:
            raise cmd.unknown(tok)  # iproute2: 'either "to" is duplicate, or "X" is a garbage'

        else:
            if word == "to":
                tok = cmd.arg(tok)
            if tok.text in _UNSUPPORTED_ROUTE_TYPES:
                raise cmd.error(tok, f'unsupported route type "{tok.text}"')
            if tok.text in ROUTE_TYPES:
                fa.type = ROUTE_TYPES[tok.text]
                given.add("type")
                tok = cmd.arg(tok)
            dst_tok = cmd.at["dst"] = tok
    if dst_tok is None:
        raise cmd.error(cmd.at["verb"], "route needs a destination prefix or default")
    family, fa.prefix, fa.prefixlen = cmd.prefix(dst_tok, default_ok=True)
    if gw_tok is not None:
        # A gateway of the other family (RFC 5549, `via inet6` on an IPv4 route) is not modelled.
        if family and gw_family and gw_family != family:
            raise cmd.error(gw_tok, f"IPv{gw_family} gateway on an IPv{family} route is not supported")
        family, fa.gateway = cmd.address(gw_tok, family or gw_family)
    family = family or 4  # iproute2: `default` with no other hint is IPv4
    fa.family = family
    if src_tok is not None:
        fa.prefsrc = cmd.address(src_tok, family)[1]
    if dev_tok is not None:
        fa.oif = cmd.device(dev_tok, net).ifindex
    if verb == "delete":
        cmd.rtnl(lambda: net.route_del(fa, given), dst_tok)
        return
    if "scope" not in given and fa.type == RTN_UNICAST and fa.gateway is None and family == 4:
        fa.scope = RT_SCOPE_LINK  # iproute2 gives a route without gateway scope link
    cmd.rtnl(lambda: net.route_add(fa, verb == "replace"), dst_tok)


def do_iproute(net: Network, cmd: IpCmd) -> None:
    verbs = (
        "add",
        "change",
        "replace",
        "prepend",
        "append",
        "test",
        "delete",
        "list",
        "show",
        "flush",
        "get",
    )
    _subcommand(cmd, cmd.at["object"], verbs, {
        "add": lambda n, c: _route_modify(n, c, "add"),
        "replace": lambda n, c: _route_modify(n, c, "replace"),
        "delete": lambda n, c: _route_modify(n, c, "delete"),
    })  # fmt: skip


# ---- neighbour (ip/ipneigh.c › ipneigh_modify) ----


# ip/ipneigh.c › nud_state_a2n: the order decides abbreviations ("perm", "s")
_NUD_ORDER = ("permanent", "reachable", "noarp", "stale", "none", "incomplete", "delay", "probe", "failed")


def _neigh_modify(net: Network, cmd: IpCmd, verb: str) -> None:
    """`neigh add|replace|change ADDR lladdr MAC dev NAME [nud permanent|reachable|stale|delay|probe|noarp]`,
    `neigh delete ADDR dev NAME`; `change` needs the entry to exist (ipneigh_modify: NLM_F_REPLACE only)."""
    dst_tok = ll_tok = dev_tok = None
    state = NUD_PERMANENT
    while cmd.more():
        tok = cmd.take()
        word = tok.text
        if word == "lladdr":
            ll_tok = cmd.at["lladdr"] = cmd.arg(tok)
        elif word == "dev":
            dev_tok = cmd.at["dev"] = cmd.arg(tok)
        elif word == "nud":
            val = cmd.arg(tok)
            name = next((n for n in _NUD_ORDER if matches(val.text, n)), None)
            if name not in NUD_NAMES:
                raise cmd.error(val, f'unsupported nud state "{val.text}"')
            state = NUD_NAMES[name]
        elif word in ("router", "proxy", "extern_learn", "use", "managed"):
            raise cmd.error(tok, f'unsupported neighbour option "{word}"')
        else:
            if word == "to":
                tok = cmd.arg(tok)
            if dst_tok is not None:
                raise cmd.unknown(tok)
            dst_tok = cmd.at["dst"] = tok
    if dst_tok is None:
        raise cmd.error(cmd.at["verb"], "neigh needs an address")
    if dev_tok is None:
        raise cmd.error(cmd.at["verb"], 'Device and destination are required arguments ("dev NAME")')
    family, addr = cmd.address(dst_tok)
    link = cmd.device(dev_tok, net)
    if verb == "delete":
        cmd.rtnl(lambda: net.neigh_del(family, addr, link.ifindex), dst_tok)
        return
    if ll_tok is None:
        raise cmd.error(cmd.at["verb"], 'neigh needs "lladdr MAC"')
    n = Neighbour(family, addr, link.ifindex, cmd.hwaddr(ll_tok), state)
    cmd.rtnl(lambda: net.neigh_add(n, verb in ("replace", "change"), verb != "change"), dst_tok)


def do_ipneigh(net: Network, cmd: IpCmd) -> None:
    verbs = ("add", "change", "replace", "delete", "list", "show", "flush", "get")
    _subcommand(cmd, cmd.at["object"], verbs, {
        "add": lambda n, c: _neigh_modify(n, c, "add"),
        "replace": lambda n, c: _neigh_modify(n, c, "replace"),
        "change": lambda n, c: _neigh_modify(n, c, "change"),
        "delete": lambda n, c: _neigh_modify(n, c, "delete"),
    })  # fmt: skip


# ip/ip.c › cmds[]: iproute2's order decides abbreviations ("a" is address, "r" route, "n" neighbor,
# "l" link, "t" tunnel, "x" xfrm). None: not modelled yet.
def do_xfrm(net: Network, cmd: IpCmd) -> None:
    """`xfrm state|policy ...`: handed to flowpath.xfrm, which keeps the SAD and SPD in `net.xfrm`."""
    from flowpath.xfrm.config import xfrm_config_line

    toks = cmd.tokens[cmd.pos :]
    if not toks:
        raise cmd.error(cmd.at["object"], "xfrm: expected state or policy")
    first = toks[0]
    xfrm_config_line([t.text for t in toks], cmd.path, first.line, [t.col for t in toks], net, first.source)
    cmd.pos = len(cmd.tokens)


OBJECTS: dict[str, Handler | None] = {
    "address": do_ipaddr, "addrlabel": None, "maddress": None, "route": do_iproute, "rule": None,
    "neighbor": do_ipneigh, "neighbour": do_ipneigh, "ntable": None, "link": do_iplink, "l2tp": None,
    "fou": None, "ila": None, "macsec": None, "tunnel": do_iptunnel, "tuntap": None, "token": None,
    "tcpmetrics": None, "monitor": None, "xfrm": do_xfrm, "mroute": None, "mrule": None, "netns": None,
    "netconf": None, "vrf": None, "sr": None, "nexthop": None, "mptcp": None, "ioam": None, "stats": None,
}  # fmt: skip

_FAMILY_OPTS = {"-4": 4, "-6": 6, "-f": None, "-family": None}


def run_command(net: Network, path: str, tokens: list[Token]) -> None:
    """Apply one batch command (ip/ip.c › do_cmd) to `net`."""
    cmd = IpCmd(net, path, tokens)
    tok = cmd.take()
    while tok.text.startswith("-"):
        if tok.text not in _FAMILY_OPTS:
            raise cmd.error(tok, f'unsupported option "{tok.text}" (only -4, -6, -f inet|inet6)')
        family = _FAMILY_OPTS[tok.text]
        if family is None:
            val = cmd.arg(tok)
            family = {"inet": 4, "inet6": 6}.get(val.text)
            if family is None:
                raise cmd.error(val, f'unsupported family "{val.text}"')
        cmd.family = family
        tok = cmd.arg(tok)
    obj = next((name for name in OBJECTS if matches(tok.text, name)), None)
    if obj is None:
        raise cmd.error(tok, f'Object "{tok.text}" is unknown')
    handler = OBJECTS[obj]
    if handler is None:
        raise cmd.error(tok, f'unsupported object "{obj}"')
    cmd.at["object"] = tok
    handler(net, cmd)


def parse_network(text: str, path: str = "<stdin>", kernel_link=None) -> Network:
    """Build a Network from the text of an `ip -batch` file; ConfigError on the first bad line.

    kernel_link  `flowpath run`: name -> the kernel interface (its .mac, .mtu) or None; each
                 `link add` must then name one (Network.kernel_link)
    """
    net = Network()
    net.kernel_link = kernel_link
    for tokens in read_commands(text):
        run_command(net, str(path), tokens)
    return net


def load_network(path: str | Path, kernel_link=None) -> Network:
    """Read and apply an `ip -batch` file (kernel_link: see parse_network)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(str(path), 1, 1, f"cannot read network file: {e.strerror}") from None
    net = parse_network(text, str(path), kernel_link)
    if any(x.key for x in getattr(getattr(net, "xfrm", None), "states", ())):
        warn_if_others_can_read(path, "xfrm keys")
    return net


__all__ = [
    "LINK_TYPES", "OBJECTS", "IpCmd", "Token", "load_network", "parse_network", "read_commands", "run_command",
]  # fmt: skip

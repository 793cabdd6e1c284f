"""IP tunnel devices in the network file: parameters, MTU, listing, errors, the receive lookup.

Linux: net/ipv4/ip_tunnel.c (ip_tunnel_lookup, ip_tunnel_bind_dev, ip_tunnel_find), net/ipv6/ip6_tunnel.c
(ip6_tnl_dev_init_gen's MTU with the encapsulation limit option); iproute2 ip/link_iptnl.c and
ip/link_ip6tnl.c for the syntax and the `ip -d link show` words.
"""

from __future__ import annotations

import ipaddress

import pytest

from flowpath.config.ipbatch import parse_network
from flowpath.errors import ConfigError
from flowpath.net.ip_tunnel import ip_tunnel_lookup

BASE = """\
link add eth0 address 02:00:00:00:00:01
link add eth1 address 02:00:00:00:00:02 mtu 9000
link set eth0 up
link set eth1 up
addr add 192.168.0.1/24 dev eth0
addr add 198.51.100.1/24 dev eth1
"""


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_network(text, "gw.ip")
    return err.value


def test_ipip_mtu_is_route_device_mtu_minus_20():
    """ip_tunnel_bind_dev: the device of the route to `remote` (eth1, 9000) less the outer header; no
    route: ETH_DATA_LEN - 20; `dev PHYS`: that device's."""
    net = parse_network(
        BASE
        + "link add tun0 type ipip local 198.51.100.1 remote 198.51.100.2\n"
        + "link add tun1 type ipip remote 203.0.113.9\n"
        + "link add tun2 type ipip remote 203.0.113.10 dev eth0\n"
    )
    assert [net.link_by_name(n).mtu for n in ("tun0", "tun1", "tun2")] == [8980, 1480, 1480]
    tun0 = net.link_by_name("tun0")
    assert tun0.address == b"" and tun0.noarp and not tun0.up
    assert tun0.tunnel.local == ip4("198.51.100.1") and tun0.tunnel.remote == ip4("198.51.100.2")
    assert tun0.tunnel.ttl == 0 and tun0.tunnel.tos == 0 and tun0.tunnel.pmtudisc


def test_ip6tnl_mtu_counts_the_encapsulation_limit_option():
    """ip6_tnl_dev_init_gen: 1500 - 40 - 8 (encaplimit 4, the default), 1460 with `encaplimit none`."""
    net = parse_network(
        BASE
        + "link add t6 type ip6tnl mode ipip6 local 2001:db8::1 remote 2001:db8::2\n"
        + "link add t7 type ip6tnl mode ip6ip6 local 2001:db8::1 remote 2001:db8::3 encaplimit none\n"
    )
    assert net.link_by_name("t6").mtu == 1452 and net.link_by_name("t7").mtu == 1460
    assert net.link_by_name("t6").tunnel.ttl == 64  # DEFAULT_TNL_HOP_LIMIT, not inherit


def test_ip_d_link_show_prints_the_tunnel_parameters():
    """iproute2 iptunnel_print_opt / ip6tunnel_print_opt words, after the link/ipip line."""
    net = parse_network(
        BASE
        + "link add tun0 type ipip local 198.51.100.1 remote 198.51.100.2\n"
        + "tunnel add tun2 mode ipip local 198.51.100.1 remote 198.51.100.3 tos inherit nopmtudisc dev eth0\n"
        + "link add tun3 type ipip remote 203.0.113.9 ttl 64 tos 10\n"
        + "tunnel add t7 mode ip6ip6 remote 2001:db8::3 local 2001:db8::1 hoplimit 10 tclass inherit\n"
        + "link add t8 type ip6tnl remote 2001:db8::4 local 2001:db8::1 flowlabel BEEF tclass 0x28\n"
        + "link add t9 type ip6tnl remote 2001:db8::5 local 2001:db8::1 flowlabel inherit encaplimit none\n"
        + "link set tun0 up\n"
    )
    out = net.show_link(details=True)
    assert (
        "4: tun0@NONE: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 8980 state UNKNOWN\n"
        "    link/ipip 198.51.100.1 peer 198.51.100.2\n"
        "    ipip ipip remote 198.51.100.2 local 198.51.100.1 ttl inherit pmtudisc\n"
        "5: tun2@eth0: <POINTOPOINT,NOARP> mtu 1480 state DOWN\n"
        "    link/ipip 198.51.100.1 peer 198.51.100.3\n"
        "    ipip ipip remote 198.51.100.3 local 198.51.100.1 dev eth0 ttl inherit tos inherit nopmtudisc\n"
        "6: tun3@NONE: <POINTOPOINT,NOARP> mtu 1480 state DOWN\n"
        "    link/ipip 0.0.0.0 peer 203.0.113.9\n"
        "    ipip ipip remote 203.0.113.9 local any ttl 64 tos 0x10 pmtudisc\n"
        "7: t7@NONE: <POINTOPOINT,NOARP> mtu 1452 state DOWN\n"
        "    link/tunnel6 2001:db8::1 peer 2001:db8::3\n"
        "    ip6tnl ip6ip6 remote 2001:db8::3 local 2001:db8::1 hoplimit 10 encaplimit 4 tclass inherit "
        "flowlabel 0x00000\n"
    ) in out
    assert (
        "    ip6tnl any remote 2001:db8::4 local 2001:db8::1 hoplimit 64 encaplimit 4 tclass 0x28 flowlabel 0x0beef\n"
        in out
    )
    assert (
        "    ip6tnl any remote 2001:db8::5 local 2001:db8::1 hoplimit 64 encaplimit none tclass 0x00 flowlabel inherit\n"
        in out
    )
    assert "    ipip" not in net.show_link()  # without -d, no details


def test_routes_and_addresses_through_a_tunnel():
    net = parse_network(
        BASE
        + "link add tun0 type ipip local 198.51.100.1 remote 198.51.100.2\n"
        + "link set tun0 up\naddr add 10.255.0.1/30 dev tun0\nroute add 10.2.0.0/16 dev tun0\n"
    )
    tun0 = net.link_by_name("tun0")
    fib = net.fib_lookup(4, ip4("10.2.3.4"))
    assert fib.oif == tun0.ifindex and fib.gateway is None and fib.mtu == 8980
    assert net.is_local(4, ip4("10.255.0.1"))
    assert not net.addrs(tun0.ifindex, 6)  # no EUI-64 link-local on a device without a MAC


@pytest.mark.parametrize(
    "line,token,msg",
    [
        ("link add t0 type ipip remote 1.2.3.400", "1.2.3.400", 'inet address is expected rather than "1.2.3.400"'),
        ("link add t0 type ipip remote 1.2.3.4 ttl 300", "300", 'TTL "300" out of range'),
        ("link add t0 type ipip remote 1.2.3.4 tos zz", "zz", 'bad TOS value "zz"'),
        ("link add t0 type ipip remote 1.2.3.4 dev eth9", "eth9", 'Cannot find device "eth9"'),
        ("link add t0 type ipip ttl 3 nopmtudisc", "nopmtudisc", "ttl != 0 and nopmtudisc are incompatible"),
        ("link add t0 type ipip remote 1.2.3.4 key 5", "key", 'unsupported tunnel option "key"'),
        ("link add t0 type ipip mode ip6ip6", "ip6ip6", 'mode "ip6ip6" is not an IPv4-outer tunnel mode'),
        ("link add t0 type ipip", "t0", "File exists"),  # tunl0's parameters
        ("link add t0 type ip6tnl remote 10.0.0.1", "10.0.0.1", 'inet6 address is expected rather than "10.0.0.1"'),
        ("link add t0 type ip6tnl remote 2001:db8::9 flowlabel 0x100000", "0x100000", 'invalid flowlabel "0x100000"'),
        ("link add t0 type ip6tnl remote 2001:db8::9 flowlabel xyz", "xyz", 'invalid flowlabel "xyz"'),
        ("link add t0 type ipip remote 1.2.3.4 flowlabel 5", "flowlabel", "flowlabel is for ip6tnl tunnels"),
        ("link add t0 type ipip remote 1.2.3.4 bogus", "bogus", 'unknown keyword "bogus"'),
        ("tunnel add t0 remote 1.2.3.4", "add", "cannot determine tunnel mode (ipip, ipip6, ip6ip6)"),
        ("tunnel add mode ipip remote 1.2.3.4", "add", 'tunnel add needs a device name ("name NAME")'),
        ("tunnel add t0 mode sit remote 1.2.3.4", "sit", 'unsupported tunnel mode "sit" (ipip, ipip6, ip6ip6, any)'),
        ("tunnel delete eth0", "eth0", '"eth0" is not a tunnel device (ether)'),
        ("link set t1 address 02:00:00:00:00:09", "02:00:00:00:00:09",
         "Operation not supported: a tunnel device has no link-layer address"),
        ("link set t1 mtu 65510", "65510", "mtu greater than device maximum"),
        ("link add t2 type ipip local 198.51.100.1 remote 198.51.100.2", "t2", "File exists"),
    ],
)  # fmt: skip
def test_error_position(line, token, msg):
    """ConfigError at file:line:col of the token at fault, with iproute2's or the kernel's text."""
    prefix = BASE + "link add t1 type ipip local 198.51.100.1 remote 198.51.100.2\n"
    err = _error(prefix + line + "\n")
    lineno, col = prefix.count("\n") + 1, line.index(f" {token}") + 2
    assert (err.path, err.line, err.col, err.msg) == ("gw.ip", lineno, col, msg)
    assert str(err).startswith(f"gw.ip:{lineno}:{col}: Error: {msg}")


def test_tunnel_delete_removes_the_device_and_its_routes():
    net = parse_network(
        BASE
        + "tunnel add tun0 mode ipip local 198.51.100.1 remote 198.51.100.2\nlink set tun0 up\n"
        + "route add 10.2.0.0/16 dev tun0\ntunnel del tun0\n"
    )
    with pytest.raises(KeyError):
        net.link_by_name("tun0")
    assert net.fib_lookup(4, ip4("10.2.0.1")) is None


LOOKUP = (
    BASE
    + "link add exact type ipip local 198.51.100.1 remote 198.51.100.2\n"
    + "link add anylocal type ipip remote 198.51.100.2\n"
    + "link add anyremote type ipip local 198.51.100.1\n"
    + "link add bound type ipip local 198.51.100.1 remote 198.51.100.5 dev eth0\n"
    + "link add unbound type ipip local 198.51.100.1 remote 198.51.100.5\n"
    + "link add dn type ipip local 198.51.100.1 remote 198.51.100.7\n"
    + "".join(f"link set {n} up\n" for n in ("exact", "anylocal", "anyremote", "bound", "unbound"))
)


@pytest.mark.parametrize(
    "saddr,daddr,iif,expect",
    [
        ("198.51.100.2", "198.51.100.1", "eth1", "exact"),  # both ends
        ("198.51.100.2", "198.51.100.9", "eth1", "anylocal"),  # remote, any local
        ("198.51.100.3", "198.51.100.1", "eth1", "anyremote"),  # local, any remote
        ("198.51.100.5", "198.51.100.1", "eth0", "bound"),  # the one bound to the receiving device
        # otherwise the last exact match of the chain, newest first: the oldest device
        ("198.51.100.5", "198.51.100.1", "eth1", "bound"),
        ("198.51.100.7", "198.51.100.1", "eth1", "anyremote"),  # a device that is down is skipped
        ("198.51.100.8", "198.51.100.9", "eth1", None),
    ],
)
def test_ip_tunnel_lookup_exact_then_wildcard(saddr, daddr, iif, expect):
    """ip_tunnel_lookup: exact, then remote with any local, then local with any remote; only up
    devices; within a step the tunnel bound to the receiving device (parms.link) wins."""
    net = parse_network(LOOKUP)
    dev = ip_tunnel_lookup(net, 4, ip4(saddr), ip4(daddr), net.link_by_name(iif).ifindex)
    assert (dev.name if dev is not None else None) == expect


def test_ip6_tunnel_lookup():
    net = parse_network(
        BASE + "link add t6 type ip6tnl mode ipip6 local 2001:db8::1 remote 2001:db8::2\nlink set t6 up\n"
    )
    a = lambda s: int(ipaddress.IPv6Address(s))  # noqa: E731
    assert ip_tunnel_lookup(net, 6, a("2001:db8::2"), a("2001:db8::1"), 2).name == "t6"
    assert ip_tunnel_lookup(net, 6, a("2001:db8::3"), a("2001:db8::1"), 2) is None
    assert ip_tunnel_lookup(net, 4, ip4("198.51.100.2"), ip4("198.51.100.1"), 2) is None


def test_ip6_tunnel_lookup_takes_local_only_before_remote_only():
    """ip6_tnl_lookup's wildcard steps run the other way round from ip_tunnel_lookup's: after the exact
    match, a tunnel with our local end and any remote, then one with the remote and any local."""
    a = lambda s: int(ipaddress.IPv6Address(s))  # noqa: E731
    text = BASE + (
        "link add tr type ip6tnl remote 2001:db8::2\nlink set tr up\n"
        "link add tl type ip6tnl local 2001:db8::1\nlink set tl up\n"
        "link add tx type ip6tnl local 2001:db8::1 remote 2001:db8::2\nlink set tx up\n"
    )
    net = parse_network(text)
    assert ip_tunnel_lookup(net, 6, a("2001:db8::2"), a("2001:db8::1"), 2).name == "tx"
    assert ip_tunnel_lookup(net, 6, a("2001:db8::2"), a("2001:db8::7"), 2).name == "tr"
    net.link_del(net.link_by_name("tx"))
    assert ip_tunnel_lookup(net, 6, a("2001:db8::2"), a("2001:db8::1"), 2).name == "tl"
    v4 = parse_network(BASE + "link add r4 type ipip remote 198.51.100.2\nlink set r4 up\n"
                       "link add l4 type ipip local 198.51.100.1\nlink set l4 up\n")  # fmt: skip
    assert ip_tunnel_lookup(v4, 4, ip4("198.51.100.2"), ip4("198.51.100.1"), 2).name == "r4"

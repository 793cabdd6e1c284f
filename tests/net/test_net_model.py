"""The network model on realistic batch files; expected values are what Linux 6.18 answered for the
same files in a namespace (the root test re-checks them live against the kernel)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest

from flowpath.config.ipbatch import load_network, parse_network
from flowpath.errors import ConfigError
from flowpath.net import (
    RTN_BLACKHOLE,
    RTN_BROADCAST,
    RTN_LOCAL,
    RTN_PROHIBIT,
    RTN_UNICAST,
    RTN_UNREACHABLE,
)
from flowpath.net.link import default_hwaddr

DATA = Path(__file__).parents[1] / "data" / "net"


def ip(text: str) -> int:
    return int(ip_address(text))


def fam(text: str) -> int:
    return 6 if ":" in text else 4


def route(net, dst: str) -> tuple:
    """(type, dev, via, src, mtu) of a lookup, in text."""
    res = net.fib_lookup(fam(dst), ip(dst))
    if res is None:
        return None
    dev = net.links[res.oif].name if res.oif else None
    via = None if res.gateway is None else str(ip_address(res.gateway))
    src = None if res.prefsrc is None else str(ip_address(res.prefsrc))
    return res.type, dev, via, src, res.mtu


@pytest.fixture(scope="module")
def nat():
    return load_network(DATA / "nat_gateway.ip")


@pytest.fixture(scope="module")
def router():
    return load_network(DATA / "dualstack_router.ip")


def test_loopback_is_created_first_and_up():
    """lo: ifindex 1, MTU 65536, up, 127.0.0.1/8 and ::1/128 (devinet.c / addrconf.c › init_loopback)."""
    net = parse_network("")
    lo = net.link_by_name("lo")
    assert (lo.ifindex, lo.kind, lo.mtu, lo.up, lo.address) == (1, "loopback", 65536, True, bytes(6))
    assert [(a.address, a.prefixlen) for a in net.addrs(1, 4)] == [(ip("127.0.0.1"), 8)]
    assert [(a.address, a.prefixlen) for a in net.addrs(1, 6)] == [(1, 128)]
    assert net.is_local(4, ip("127.3.2.1")) and net.is_local(6, 1)
    assert route(net, "127.9.9.9") == (RTN_LOCAL, "lo", None, "127.0.0.1", 65536)
    with pytest.raises(KeyError):
        net.link_by_name("eth0")


def test_nat_gateway_links(nat):
    """ifindexes follow creation order; links without `type` are Ethernet-like ports."""
    wan, lan = nat.link_by_name("wan"), nat.link_by_name("lan")
    assert (wan.ifindex, wan.kind, wan.address.hex(":"), wan.mtu, wan.up) == (
        2,
        "ether",
        "02:00:00:00:00:0a",
        1500,
        True,
    )
    assert (lan.ifindex, lan.address.hex(":")) == (3, "02:00:00:00:00:0b")
    assert list(nat.links) == [1, 2, 3]


@pytest.mark.parametrize(
    "dst,want",
    [
        ("8.8.8.8", (RTN_UNICAST, "wan", "203.0.113.1", "203.0.113.2", 1500)),
        ("10.10.3.4", (RTN_UNICAST, "lan", "192.168.1.254", "192.168.1.1", 1500)),
        ("10.9.9.9", (RTN_BLACKHOLE, None, None, None, 0)),
        ("192.168.1.77", (RTN_UNICAST, "lan", None, "192.168.1.1", 1500)),
        ("203.0.113.255", (RTN_BROADCAST, "wan", None, "203.0.113.2", 1500)),
        ("203.0.113.2", (RTN_LOCAL, "wan", None, "203.0.113.2", 1500)),
        ("192.168.1.0", (RTN_UNICAST, "lan", None, "192.168.1.1", 1500)),
    ],
)
def test_nat_gateway_routes(nat, dst, want):
    """fib_lookup: the more specific 10.10/16 beats the 10/8 blackhole; no subnet-zero broadcast (6.x)."""
    assert route(nat, dst) == want


def test_nat_gateway_neighbours_and_sources(nat):
    wan, lan = nat.link_by_name("wan").ifindex, nat.link_by_name("lan").ifindex
    assert nat.neigh_lookup(4, ip("203.0.113.1"), wan) == bytes.fromhex("02005e000101")
    assert nat.neigh_lookup(4, ip("203.0.113.1"), lan) is None
    assert nat.neigh_lookup(4, ip("192.168.1.254"), lan) == bytes.fromhex("0200000001fe")
    assert nat.inet_select_addr(wan, 4, ip("203.0.113.1")) == ip("203.0.113.2")
    assert nat.inet_select_addr(lan, 4, 0) == ip("192.168.1.1")
    assert nat.is_local(4, ip("203.0.113.2")) and not nat.is_local(4, ip("203.0.113.1"))


def test_nat_gateway_listings(nat):
    """`ip route`, `ip neigh` and `ip addr` text, as iproute2 prints it (without trailing blanks)."""
    assert nat.show_route(4) == (
        "default via 203.0.113.1 dev wan\n"
        "blackhole 10.0.0.0/8\n"
        "10.10.0.0/16 via 192.168.1.254 dev lan metric 20\n"
        "192.168.1.0/24 dev lan proto kernel scope link src 192.168.1.1\n"
        "203.0.113.0/24 dev wan proto kernel scope link src 203.0.113.2\n"
    )
    assert nat.show_neigh() == (
        "203.0.113.1 dev wan lladdr 02:00:5e:00:01:01 PERMANENT\n"
        "192.168.1.254 dev lan lladdr 02:00:00:00:01:fe PERMANENT\n"
    )
    addr = nat.show_addr()
    assert "    inet 203.0.113.2/24 brd 203.0.113.255 scope global wan\n" in addr
    assert "    inet6 fe80::ff:fe00:a/64 scope link\n" in addr
    assert nat.show_link().splitlines()[2] == "2: wan: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP"


@pytest.mark.parametrize(
    "dst,want",
    [
        ("10.20.1.1", (RTN_UNICAST, "dn0", "192.0.2.20", "192.0.2.1", 1500)),  # metric 100 beats 200
        ("10.20.30.5", (RTN_UNICAST, "dn1", "172.16.0.30", "172.16.0.1", 1400)),  # longer prefix, route mtu
        ("10.40.0.1", (RTN_UNICAST, "dn1", None, "192.0.2.1", 9000)),  # src from the route, mtu from dn1
        ("10.50.0.1", (RTN_UNICAST, "dn0", "192.0.2.9", "192.0.2.1", 1500)),
        ("10.60.0.1", (RTN_UNICAST, "dn0", "192.0.2.60", "172.16.0.1", 1300)),
        ("192.0.2.200", (RTN_UNICAST, "dn0", None, "192.0.2.129", 1500)),  # the /25's own source
        ("192.0.2.2", (RTN_LOCAL, "dn0", None, "192.0.2.1", 1500)),  # secondary: primary as source
        ("10.66.0.1", (RTN_UNREACHABLE, None, None, None, 0)),
        ("10.67.0.1", (RTN_PROHIBIT, None, None, None, 0)),
        ("1.1.1.1", (RTN_UNICAST, "up0", "198.51.100.1", "198.51.100.2", 1500)),
        ("2001:4860::8888", (RTN_UNICAST, "up0", "2001:db8:ffff::1", "2001:db8:ffff::2", 1500)),
        ("2001:db8:20::1", (RTN_UNICAST, "dn1", "2001:db8:11::20", "2001:db8:12::1", 9000)),
        ("2001:db8:30::1", (RTN_UNICAST, "dn1", "fe80::30", "2001:db8:12::1", 9000)),
        ("2001:db8:40::1", (RTN_UNICAST, "dn0", None, "2001:db8:10::1", 1280)),
        ("2001:db8:50::1", (RTN_UNICAST, "dn1", "2001:db8:12::50", "2001:db8:10::1", 9000)),
        ("2001:db8:10::1", (RTN_LOCAL, "dn0", None, "2001:db8:10::1", 1500)),
        ("fe80::1", (RTN_UNICAST, "up0", None, "fe80::ff:fe00:2", 1500)),
        ("2001:db8:666::1", (RTN_BLACKHOLE, None, None, None, 0)),
        ("2001:db8:667::1", (RTN_UNREACHABLE, None, None, None, 0)),
    ],
)
def test_dualstack_router_routes(router, dst, want):
    """LPM with metric tie-break, route mtu/src, link-local gateways, IPv6 reject routes."""
    assert route(router, dst) == want


def test_dualstack_router_addresses(router):
    """devinet.c › __inet_insert_ifa (secondary after primaries); addrconf's EUI-64 link-local."""
    dn0 = router.link_by_name("dn0").ifindex
    v4 = [(str(ip_address(a.address)), a.prefixlen, a.secondary) for a in router.addrs(dn0, 4)]
    assert v4 == [("192.0.2.1", 24, False), ("192.0.2.129", 25, False), ("192.0.2.2", 24, True)]
    v6 = [str(ip_address(a.address)) for a in router.addrs(dn0, 6)]
    assert v6 == ["2001:db8:10::1", "fe80::ff:fe00:1000"]
    assert router.inet_select_addr(dn0, 4, ip("192.0.2.200")) == ip("192.0.2.1")
    assert router.inet_select_addr(dn0, 6, ip("fe80::99")) == ip("fe80::ff:fe00:1000")
    assert router.neigh_lookup(6, ip("fe80::30"), router.link_by_name("dn1").ifindex) == bytes.fromhex(
        "020000003030"
    )


def test_dualstack_ipv6_listing(router):
    lines = router.show_route(6).splitlines()
    assert lines[-1] == "default via 2001:db8:ffff::1 dev up0 metric 1024 pref medium"
    assert "2001:db8:20::/48 via 2001:db8:11::20 dev dn1 metric 50 pref medium" in lines
    assert "2001:db8:40::/48 dev dn0 metric 1024 mtu 1280 pref medium" in lines
    assert "blackhole 2001:db8:666::/48 dev lo metric 1024 pref medium" in lines
    assert lines.index(
        "2001:db8:20::/48 via 2001:db8:11::20 dev dn1 metric 50 pref medium"
    ) + 1 == lines.index("2001:db8:20::/48 via 2001:db8:10::20 dev dn0 metric 100 pref medium")


def test_vlan_subinterfaces():
    """vlan_newlink: the VLAN takes its parent's MAC and MTU; its routes use the VLAN's ifindex."""
    net = load_network(DATA / "vlan_trunk.ip")
    trunk, v10, v20 = (net.link_by_name(n) for n in ("trunk0", "trunk0.10", "trunk0.20"))
    assert (v10.ifindex, v10.kind, v10.vlan_id, v10.parent, v10.address) == (3, "vlan", 10, 2, trunk.address)
    assert (v20.vlan_id, v20.mtu, v20.up) == (20, 1496, True)
    assert route(net, "8.8.8.8") == (RTN_UNICAST, "trunk0.10", "10.0.10.254", "10.0.10.1", 1500)
    assert route(net, "10.100.1.1") == (RTN_UNICAST, "trunk0.20", "10.0.20.100", "10.0.20.1", 1496)
    assert "3: trunk0.10@trunk0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP" in net.show_link()
    net.link_set(trunk, up=False)  # vlan_device_event NETDEV_DOWN takes the VLANs down too
    assert not v10.up and not v20.up
    assert route(net, "8.8.8.8") is None
    net.link_set(trunk, up=True)  # NETDEV_UP on the parent puts all its VLANs up again
    assert v10.up and v20.up
    assert route(net, "10.0.10.9") == (RTN_UNICAST, "trunk0.10", None, "10.0.10.1", 1500)


def test_veth_peer_takes_the_lower_ifindex():
    """veth_newlink registers the peer first; each end names the other."""
    net = load_network(DATA / "veth_pair.ip")
    vin, vout = net.link_by_name("vin"), net.link_by_name("vout")
    assert (vout.ifindex, vin.ifindex, vin.peer, vout.peer) == (2, 3, "vout", "vin")
    assert route(net, "100.65.1.1") == (RTN_UNICAST, "vin", "100.64.0.0", "100.64.0.1", 1500)
    net.link_set(vout, name="vx")
    assert vin.peer == "vx" and net.link_by_name("vx") is vout
    assert "3: vin@vx:" in net.show_link()


def test_link_down_flushes_routes_and_ipv6_but_keeps_ipv4_addresses(router):
    """fib_disable_ip + addrconf_ifdown (keep_addr_on_down=0) + neigh_ifdown, then NETDEV_UP again."""
    net = load_network(DATA / "dualstack_router.ip")
    dn0 = net.link_by_name("dn0")
    net.link_set(dn0, up=False)
    assert route(net, "10.20.1.1") == (RTN_UNICAST, "dn1", "172.16.0.20", "172.16.0.1", 9000)  # the backup
    assert route(net, "192.0.2.1") == (RTN_LOCAL, "dn0", None, "192.0.2.1", 1500)  # local route stays
    assert len(net.addrs(dn0.ifindex, 4)) == 3 and net.addrs(dn0.ifindex, 6) == []
    assert net.neigh_lookup(4, ip("192.0.2.20"), dn0.ifindex) is None
    net.link_set(dn0, up=True)
    assert route(net, "192.0.2.77")[1] == "dn0"  # the connected route is back
    assert route(net, "10.20.1.1")[1] == "dn1"  # the static one is not
    assert [str(ip_address(a.address)) for a in net.addrs(dn0.ifindex, 6)] == ["fe80::ff:fe00:1000"]


def test_abbreviations_family_options_and_replace():
    """ip.c's object order makes `a` address, `r` route, `n` neighbor, `l` link; verbs abbreviate too."""
    net = parse_network(
        "l a p0 type dummy\nl s p0 up\na a 192.0.2.1/24 dev p0\na a 2001:db8::1/64 dev p0\n"
        "-6 r a blackhole default\n-4 ro add unreachable default metric 9\n"
        "r add 10.0.0.0/8 via 192.0.2.9\nr replace 10.0.0.0/8 via 192.0.2.8\n"
        "n a 192.0.2.8 lladdr 2:0:0:0:0:8 dev p0 nud stale\nneighbour replace 192.0.2.8 lladdr 02:00:00:00:00:09 dev p0\n"
        "-f inet6 route add 2001:db8:9::/48 via 2001:db8::9 table main proto static\n"
    )
    assert route(net, "2001:db9::1")[0] == RTN_BLACKHOLE
    assert route(net, "8.8.8.8")[0] == RTN_UNREACHABLE
    assert route(net, "10.1.2.3")[2] == "192.0.2.8"
    assert net.neigh_lookup(4, ip("192.0.2.8"), 2) == bytes.fromhex("020000000009")
    assert "2001:db8:9::/48 via 2001:db8::9 dev p0 proto static metric 1024 pref medium" in net.show_route(6)


def test_default_mac_and_mtu():
    """Without `address`, a link gets 02:00 + its ifindex (32-bit big-endian); MTU 1500."""
    net = parse_network("link add p0\nlink add p1 mtu 9000 type dummy\n")
    assert net.link_by_name("p0").address == bytes.fromhex("020000000002") == default_hwaddr(2)
    assert net.link_by_name("p1").mtu == 9000
    assert default_hwaddr(300) == bytes.fromhex("02000000012c")


def test_inet_select_addr_falls_back_to_other_links():
    """devinet.c › inet_select_addr: no address on the device, so the first global one elsewhere."""
    net = parse_network("link add a0 type dummy\nlink add b0 type dummy\naddr add 198.51.100.1/24 dev b0\n")
    assert net.inet_select_addr(net.link_by_name("a0").ifindex, 4, ip("8.8.8.8")) == ip("198.51.100.1")
    assert net.inet_select_addr(1, 4, 0) == ip("198.51.100.1")  # lo's 127.0.0.1 is host scope


def test_route_delete_takes_the_first_match():
    """fib_table_delete: the first route of the prefix (metric order) matching what is given; ip6_route_del."""
    net = parse_network(
        "link add p0 type dummy\nlink set p0 up\naddr add 192.0.2.1/24 dev p0\naddr add 2001:db8::1/64 dev p0\n"
        "route add default via 192.0.2.9 metric 10\nroute add default via 192.0.2.8 metric 20\n"
        "route add blackhole default metric 30\nroute del default metric 20\n"
        "route del default\nroute add ::/0 via 2001:db8::9\nroute delete ::/0 via 2001:db8::9\n"
        "route del 192.0.2.0/24 dev p0\n"
    )
    assert route(net, "8.8.8.8")[0] == RTN_BLACKHOLE
    assert route(net, "2001:db9::1") is None
    assert route(net, "192.0.2.7")[0] == RTN_BLACKHOLE  # the connected route went too


def test_neigh_delete():
    """neigh_delete: the entry goes; a second delete is ENOENT."""
    text = "link add p0 type dummy\nlink set p0 up\nneigh add 192.0.2.9 lladdr 02:00:00:00:00:09 dev p0\n"
    net = parse_network(text + "neigh del 192.0.2.9 dev p0\n")
    assert net.neigh_lookup(4, ip("192.0.2.9"), 2) is None
    with pytest.raises(ConfigError, match="No such file or directory"):
        parse_network(text + "neigh del 192.0.2.9 dev p0\nneigh del 192.0.2.9 dev p0\n")


def test_link_delete_takes_peer_vlans_and_routes():
    """NETDEV_UNREGISTER: a veth takes its peer, a port its VLANs; their routes and sources go."""
    net = parse_network(
        "link add p0\nlink add link p0 name p0.7 type vlan id 7\nlink add va type veth peer name vb\n"
        "link set p0 up\nlink set va up\nlink set vb up\naddr add 192.0.2.1/24 dev p0.7\n"
        "addr add 198.51.100.1/24 dev va\nroute add 10.0.0.0/8 dev va src 192.0.2.1\n"
        "link del p0\nlink del dev vb\n"
    )
    assert list(net.links) == [1]
    assert route(net, "10.1.1.1") is None and not net.is_local(4, ip("192.0.2.1"))
    with pytest.raises(ConfigError, match="Operation not supported"):
        parse_network("link del lo\n")


def test_addr_delete_like_linux():
    """__inet_del_ifa: a primary takes its secondaries (promote_secondaries=0); the last address takes
    the link's IPv4 routes and ARP entries (fib_disable_ip); IPv6 keeps a prefix route still in use."""
    net = parse_network(
        "link add p0 type dummy\nlink set p0 up\naddr add 192.0.2.1/24 dev p0\naddr add 192.0.2.2/24 dev p0\n"
        "addr add 198.51.100.1/24 dev p0\nroute add 10.0.0.0/8 via 192.0.2.9\n"
        "addr add 2001:db8::1/64 dev p0\naddr add 2001:db8::2/64 dev p0\n"
        "neigh add 198.51.100.9 lladdr 02:00:00:00:00:09 dev p0\n"
        "addr del 192.0.2.1/24 dev p0\naddr del 2001:db8::1/64 dev p0\n"
    )
    assert [str(ip_address(a.address)) for a in net.addrs(2, 4)] == ["198.51.100.1"]
    assert route(net, "192.0.2.2") is None and route(net, "10.1.1.1")[2] == "192.0.2.9"
    assert route(net, "2001:db8::7")[1] == "p0"
    parse_network_text = "addr del 198.51.100.1 dev p0\n"  # wildcard: any prefix length
    net2 = parse_network(
        "link add p0 type dummy\nlink set p0 up\naddr add 198.51.100.1/24 dev p0\nroute add 10.0.0.0/8 via 198.51.100.9\n"
        "neigh add 198.51.100.9 lladdr 02:00:00:00:00:09 dev p0\n" + parse_network_text
    )
    assert net2.addrs(2, 4) == [] and route(net2, "10.1.1.1") is None
    assert net2.neigh_lookup(4, ip("198.51.100.9"), 2) is None

"""Bad batch lines raise ConfigError at the exact file:line:col of the token at fault.

Messages are iproute2's or the kernel's own (net/ipv4/fib_semantics.c, net/ipv6/route.c), so a user
reads what `ip -batch` would have told them; the root test checks the kernel's texts themselves.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.config.ipbatch import load_network, parse_network
from flowpath.errors import ConfigError

BASE = "link add eth0 type dummy\nlink set eth0 up\naddr add 192.0.2.1/24 dev eth0\naddr add 2001:db8::1/64 dev eth0\n"


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_network(text, "gw.ip")
    return err.value


@pytest.mark.parametrize(
    "line,col,length,msg",
    [
        ("addr add 10.0.0.1/24 dev eth9", 26, 4, 'Cannot find device "eth9"'),
        ("addr add 10.0.0.300/24 dev eth0", 10, 10, 'address is expected rather than "10.0.0.300"'),
        ("route add 10.0.0.0/33 dev eth0", 20, 2, "prefix length 33 too long for IPv4 (at most 32)"),
        ("route add 2001:db8:1::/129 dev eth0", 24, 3, "prefix length 129 too long for IPv6 (at most 128)"),
        ("route add 10.0.0.0/8 via 198.51.100.1", 26, 12, "Nexthop has invalid gateway"),
        ("route add 192.0.2.0/24 dev eth0", 11, 12, "File exists"),
        ("route add 10.0.0.1/8 dev eth0", 11, 10, "Invalid prefix for given prefix length"),
        ("route add 10.0.0.0/8 dev eth0 bogus", 31, 5, 'unknown keyword "bogus"'),
        ("route add 10.0.0.0/8 dev", 22, 3, 'missing argument after "dev"'),
        ("route add 10.0.0.0/8 dev eth0 src 10.9.9.9", 35, 8, "Invalid prefsrc address"),
        ("route add 2001:db8:5::/64 via 2001:db8:7::1", 31, 13, "No route to host"),
        ("route add 2001:db8:5::/64 via fe80::1", 31, 7, "Egress device not specified"),
        ("route add 2001:db8:5::/64 via 2001:db8::1", 31, 11, "Gateway can not be a local address"),
        (
            "route add 10.0.0.0/8 via 2001:db8::9",
            26,
            11,
            'inet address is expected rather than "2001:db8::9"',
        ),
        ("route add local 10.0.0.0/8 dev eth0", 11, 5, 'unsupported route type "local"'),
        ("addr add 192.0.2.1/24 dev eth0", 10, 12, "ipv4: Address already assigned"),
        ("addr add 2001:db8::1/64 dev eth0", 10, 14, "ipv6: address already assigned"),
        ("addr add 192.0.2.7/24", 6, 3, 'Not enough information: "dev" argument is required'),
        ("link add eth0 type dummy", 10, 4, "File exists"),
        ("link add t0 type gre remote 1.2.3.4", 18, 3, 'unsupported link type "gre"'),
        ("link set eth0 mtu 40", 19, 2, "mtu less than device minimum"),
        ("link set eth0 address 01:00:00:00:00:01", 23, 17, "Cannot assign requested address"),
        ("link set eth1 up", 10, 4, 'Cannot find device "eth1"'),
        (
            "tunnel add t0 mode gre remote 1.2.3.4",
            20,
            3,
            'unsupported tunnel mode "gre" (ipip, ipip6, ip6ip6, any)',
        ),
        ("mroute show", 1, 6, 'unsupported object "mroute"'),
        ("xfrm state add src 1.1.1.1 dst zzz proto esp", 32, 3, '"zzz" is not a valid dst address'),
        ("frobnicate", 1, 10, 'Object "frobnicate" is unknown'),
        ("route del 10.0.0.0/8", 11, 10, "No such process"),
        ("route del 192.0.2.0/24 via 192.0.2.7", 11, 12, "No such process"),
        ("addr del 192.0.2.1/25 dev eth0", 10, 12, "Cannot assign requested address"),
        ("addr flush dev eth0", 6, 5, 'unsupported command "addr flush"'),
        (
            "neigh add 192.0.2.9 lladdr 02:00:00:00:00:zz dev eth0",
            28,
            17,
            '"02:00:00:00:00:zz" is invalid lladdr',
        ),
        ("neigh add 192.0.2.9 dev eth0", 7, 3, 'neigh needs "lladdr MAC"'),
        ("neigh change 192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0", 14, 9, "No such file or directory"),
        (
            "neigh add 192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0 nud bogus",
            59,
            5,
            'unsupported nud state "bogus"',
        ),
        ("-6 route add 10.0.0.0/8 dev eth0", 14, 8, 'inet6 address is expected rather than "10.0.0.0"'),
        ("-s route show", 1, 2, 'unsupported option "-s" (only -4, -6, -f inet|inet6)'),
    ],
)
def test_error_position(line, col, length, msg):
    """The caret points at the token that makes the line fail (line 5: after the four setup lines)."""
    err = _error(BASE + line + "\n")
    assert (err.path, err.line, err.col, err.length, err.msg) == ("gw.ip", 5, col, length, msg)
    assert err.source == line


def test_error_on_a_continued_line_names_the_physical_line():
    """lib/utils.c › getcmdline joins `\\`-continued lines; the error still points into the right one."""
    text = BASE + "# a comment\n\nroute add 10.0.0.0/8 \\\n    via 192.0.2.9 \\\n    metric x\n"
    err = _error(text)
    assert (err.line, err.col, err.msg) == (9, 12, 'invalid metric "x"')
    assert err.source == "    metric x"


def test_error_prints_like_nft():
    """erec_print's shape: file:line:col: Error: msg, the source line, a caret under the token."""
    err = _error(BASE + "route add 10.0.0.0/8 via 198.51.100.1\n")
    assert str(err) == (
        "gw.ip:5:26: Error: Nexthop has invalid gateway\n"
        "route add 10.0.0.0/8 via 198.51.100.1\n"
        "                         ^^^^^^^^^^^^"
    )


def test_routes_need_the_link_up_as_on_linux():
    """Links start down (rtnl_newlink); a route on a down device is refused (fib_check_nh_nongw)."""
    err = _error("link add eth0 type dummy\naddr add 192.0.2.1/24 dev eth0\nroute add 10.0.0.0/8 dev eth0\n")
    assert (err.line, err.col, err.msg) == (3, 26, "Device for nexthop is not up")
    err = _error(
        "link add eth0 type dummy\naddr add 192.0.2.1/24 dev eth0\nroute add 10.0.0.0/8 via 192.0.2.9\n"
    )
    assert (err.line, err.col, err.msg) == (3, 26, "Nexthop has invalid gateway")


def test_vlan_on_a_down_parent_cannot_go_up():
    """net/8021q/vlan_dev.c › vlan_dev_open: ENETDOWN while the lower device is down."""
    err = _error("link add p0\nlink add link p0 name p0.5 type vlan id 5\nlink set p0.5 up\n")
    assert (err.line, err.col, err.msg) == (3, 10, "Network is down")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_network(tmp_path / "nope.ip")
    assert err.value.path.endswith("nope.ip") and "cannot read" in err.value.msg


_WORDS = [
    "link", "l", "addr", "a", "route", "r", "neigh", "n", "add", "set", "replace", "del", "show", "dev", "eth0",
    "eth1", "lo", "up", "down", "mtu", "1500", "0", "99999999999", "address", "02:00:00:00:00:01", "name", "type",
    "dummy", "veth", "vlan", "ipip", "peer", "link", "id", "10", "via", "192.0.2.9", "10.0.0.0/8", "default",
    "2001:db8::/64", "fe80::1", "blackhole", "unreachable", "prohibit", "metric", "src", "table", "main", "local",
    "proto", "static", "scope", "host", "onlink", "lock", "brd", "+", "-", "lladdr", "nud", "perm", "to", "-6", "-4",
    "-f", "inet6", "\\", "#", '"q w"', "1.2.3.4/33", "::/129", "x", "", "tunnel", "xfrm", "noprefixroute", "label",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_WORDS), max_size=9).map(" ".join), max_size=6))
def test_any_input_is_a_network_or_a_config_error(lines):
    """Token soup after a valid prefix: a Network or a ConfigError with a position, never a crash."""
    text = BASE + "\n".join(lines) + "\n"
    try:
        parse_network(text, "fuzz.ip")
    except ConfigError as err:
        assert err.line >= 1 and err.col >= 1 and err.msg
        assert str(err).startswith(f"fuzz.ip:{err.line}:{err.col}: Error: ")

"""The independent oracle: the same batch files run by the real `ip -batch` in a fresh namespace.

Linux itself decides ifindexes, kernel routes, source addresses and `ip route get` answers; flowpath's
model must give the same. Needs root and iproute2; `type dummy` becomes `type ifb` where the kernel has
no dummy driver (both are NOARP Ethernet devices with carrier), and links are given flowpath's MACs so
IPv6 link-local addresses (EUI-64) agree.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from flowpath.config.ipbatch import read_commands, run_command
from flowpath.errors import ConfigError
from flowpath.net import RTN_BROADCAST, RTN_LOCAL, Network, load_network, parse_network
from flowpath.net.fib import REJECT_TYPES, RT_TABLE_LOCAL
from flowpath.net.inetdev import format_addr
from flowpath.net.link import format_hwaddr

DATA = Path(__file__).parents[1] / "data" / "net"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2",
    ),
]


def _ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns():
    name = f"fpnet-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode:
        pytest.skip("cannot create a network namespace")
    try:
        for key in ("all", "default"):  # veth is not NOARP: without this, IPv6 addresses stay tentative
            subprocess.run(
                ["ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"],
                capture_output=True,
            )
        _ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


_KINDS: dict[str, bool] = {}


def _kind_ok(ns: str, kind: str) -> bool:
    if kind not in _KINDS:
        extra = ["peer", "name", "fpprobe1"] if kind == "veth" else []
        ok = _ip(ns, "link", "add", "fpprobe0", "type", kind, *extra, check=False).returncode == 0
        _ip(ns, "link", "del", "fpprobe0", check=False)
        _KINDS[kind] = ok
    return _KINDS[kind]


def _linux_batch(ns: str, text: str) -> str:
    """The batch for the kernel: flowpath's MACs spelled out, dummy (or no type) as a driver it has."""
    dummy = "dummy" if _kind_ok(ns, "dummy") else "ifb"
    net, out = Network(), []
    for tokens in read_commands(text):
        words = [t.text for t in tokens]
        if words[:2] == ["link", "add"]:
            if "type" not in words:
                words += ["type", dummy]
            elif words[words.index("type") + 1] == "dummy":
                words[words.index("type") + 1] = dummy
            elif words[words.index("type") + 1] == "vlan" and not _kind_ok(ns, "vlan"):
                pytest.skip("kernel without 8021q")
        if words[0] in ("addr", "a", "address") and ":" in words[2]:
            words.append("nodad")  # Linux ends even a skipped DAD in a work item: a race with `src`
        before = set(net.links)
        try:
            run_command(net, "<oracle>", tokens)
        except ConfigError:  # the line the kernel must refuse too
            out.append(" ".join(words))
            break
        new = [net.links[i] for i in sorted(set(net.links) - before)]
        if words[:2] == ["link", "add"] and new:
            named = new[-1]  # a veth's peer is registered first
            if "address" not in words[: words.index("type")]:
                words[2:2] = ["address", format_hwaddr(named.address)]
            if "peer" in words and "address" not in words[words.index("peer") :]:
                words += ["address", format_hwaddr(new[0].address)]
        out.append(" ".join(words))
    return "\n".join(out) + "\n"


def _load_both(ns: str, path: Path, tmp_path: Path) -> Network:
    net = load_network(path)
    batch = tmp_path / "linux.ip"
    batch.write_text(_linux_batch(ns, path.read_text()))
    done = _ip(ns, "-batch", str(batch), check=False)
    assert done.returncode == 0, done.stderr
    return net


def _probes(net: Network, family: int, rng: random.Random) -> list[int]:
    bits = 32 if family == 4 else 128
    out: set[int] = set()
    for table in net.tables[family].values():
        for fa in table:
            span = 1 << (bits - fa.prefixlen)
            out |= {fa.prefix, fa.prefix + span - 1, fa.prefix + rng.randrange(span)}
            if fa.gateway is not None:
                out.add(fa.gateway)
    for ifas in net._addrs[family].values():
        out |= {a.address for a in ifas} | {a.address ^ 1 for a in ifas}
    out |= {rng.getrandbits(bits) for _ in range(20)}

    def skip(a: int) -> bool:
        if family == 4:
            return a >> 24 == 0 or a >> 28 >= 0xE
        return a >> 120 == 0xFF or a <= 1 or a >> 96 == 0xFFFF

    return sorted(a for a in out if not skip(a))


def _route_get_expected(net: Network, family: int, addr: int) -> dict | None:
    res = net.fib_lookup(family, addr)
    if res is None or res.type in REJECT_TYPES:
        return None
    want = {"dev": "lo" if res.type == RTN_LOCAL else net.links[res.oif].name}
    if res.type in (RTN_LOCAL, RTN_BROADCAST):
        want["type"] = str(res.type)
    if res.gateway is not None:
        want["gateway"] = format_addr(family, res.gateway)
    want["prefsrc"] = format_addr(family, res.prefsrc)
    return want


def _check_route_get(ns: str, net: Network, seed: int) -> int:
    rng = random.Random(seed)
    checked = 0
    for family in (4, 6):
        for addr in _probes(net, family, rng):
            text = format_addr(family, addr)
            got = _ip(ns, "-j", f"-{family}", "route", "get", text, check=False)
            want = _route_get_expected(net, family, addr)
            if want is None:
                assert got.returncode != 0, f"{text}: Linux routes it: {got.stdout}"
            else:
                assert got.returncode == 0, f"{text}: Linux: {got.stderr}, flowpath: {want}"
                entry = json.loads(got.stdout)[0]
                seen = {k: entry[k] for k in ("dev", "type", "gateway", "prefsrc") if k in entry}
                assert seen == want, text
            checked += 1
    return checked


def _route_show(ns: str, family: int, table: str) -> str:
    text = _ip(ns, f"-{family}", "route", "show", "table", table).stdout
    # Deviation: the IPv6 local table's multicast ff00::/8 routes are not modelled.
    lines = [line.rstrip() for line in text.splitlines() if not line.startswith("multicast ")]
    return "".join(line + "\n" for line in lines)


def _check_listings(ns: str, net: Network) -> None:
    for family in (4, 6):
        assert net.show_route(family) == _route_show(ns, family, "main")
        assert net.show_route(family, RT_TABLE_LOCAL) == _route_show(ns, family, "local")
    links = json.loads(_ip(ns, "-j", "addr", "show").stdout)
    assert [(ln["ifindex"], ln["ifname"]) for ln in links] == [(i, ln.name) for i, ln in net.links.items()]
    for ln in links:
        link = net.links[ln["ifindex"]]
        assert (ln["mtu"], "UP" in ln["flags"]) == (link.mtu, link.up), link.name
        assert ln["address"] == format_hwaddr(link.address), link.name
        want = [
            (f, format_addr(f, a.address), a.prefixlen, a.secondary)
            for f in (4, 6)
            for a in net.addrs(link.ifindex, f)
        ]
        got = [
            (4 if a["family"] == "inet" else 6, a["local"], a["prefixlen"], a.get("secondary", False))
            for a in ln["addr_info"]
        ]
        assert got == want, link.name
    neigh = json.loads(_ip(ns, "-j", "neigh", "show").stdout)
    got = {(n["dst"], n["dev"], n["lladdr"], n["state"][0]) for n in neigh}
    want = {(w[0], w[2], w[4], w[5]) for w in (line.split() for line in net.show_neigh().splitlines())}
    assert got == want


@pytest.mark.parametrize("name", ["nat_gateway", "dualstack_router", "veth_pair", "vlan_trunk"])
def test_batch_file_matches_linux(netns, tmp_path, name):
    """Every table, address and `ip route get` answer equals the kernel's for the same file."""
    net = _load_both(netns, DATA / f"{name}.ip", tmp_path)
    _check_listings(netns, net)
    assert _check_route_get(netns, net, seed=len(name)) > 20


def test_link_down_flushes_like_linux(netns, tmp_path):
    """NETDEV_DOWN: routes through the link go, IPv4 addresses stay, IPv6 ones and neighbours go."""
    text = (DATA / "dualstack_router.ip").read_text() + "link set dn0 down\nlink set dn0 up\n"
    path = tmp_path / "flap.ip"
    path.write_text(text)
    net = _load_both(netns, path, tmp_path)
    _check_listings(netns, net)
    _check_route_get(netns, net, seed=7)


ERROR_CASES = [
    ("link add e0 type dummy\nlink set e0 up\nroute add 10.0.0.0/8 via 192.0.2.1\n", 3),
    ("link add e0 type dummy\nlink set e0 up\naddr add 192.0.2.1/24 dev e0\n"
     "route add 10.0.0.0/8 via 192.0.2.9\nroute add 10.0.0.0/8 via 192.0.2.8\n", 5),
    ("link add e0 type dummy\naddr add 192.0.2.1/24 dev e0\nroute add 10.0.0.0/8 via 192.0.2.9\n", 3),
    ("link add e0 type dummy\nroute add 10.0.0.0/8 dev e0\n", 2),
    ("link add e0 type dummy\nlink set e0 up\nroute add 10.0.0.1/8 dev e0\n", 3),
    ("link add e0 type dummy\nlink set e0 up\nroute add 10.0.0.0/8 dev e0 src 10.0.0.1\n", 3),
    ("link add e0 type dummy\nlink set e0 up\naddr add 2001:db8::1/64 dev e0\n"
     "route add 2001:db8:1::/64 via 2001:db8:2::1\n", 4),
    ("link add e0 type dummy\nlink set e0 up\naddr add 2001:db8::1/64 dev e0\n"
     "route add 2001:db8:1::/64 via 2001:db8::1\n", 4),
    ("link add e0 type dummy\nlink set e0 up\nroute add 2001:db8:1::/64 via fe80::1\n", 3),
    ("link add e0 type dummy\naddr add 192.0.2.1/24 dev e0\naddr add 192.0.2.1/24 dev e0\n", 3),
    ("link add e0 type dummy\nlink add e0 type dummy\n", 2),
    ("link add e0 type dummy\nlink set e0 up\nneigh add 192.0.2.9 lladdr 02:00:00:00:00:09 dev e0\n"
     "neigh add 192.0.2.9 lladdr 02:00:00:00:00:0a dev e0\n", 4),
    ("link add e0 type dummy\nlink set e0 up\naddr add 192.0.2.1/24 dev e0\n"
     "route add 10.0.0.0/8 via 192.0.2.255\n", 4),
    ("link add e0 type dummy\nroute add blackhole 10.0.0.0/8 dev e0\n", 2),
]  # fmt: skip


def _kernel_text(stderr: str) -> str:
    line = next(ln for ln in stderr.splitlines() if not ln.startswith("Command failed"))
    for head in ("Error: ", "RTNETLINK answers: "):
        line = line.removeprefix(head)
    return line.rstrip(".")


@pytest.mark.parametrize("text,line", ERROR_CASES)
def test_refusals_match_linux(netns, tmp_path, text, line):
    """A request the kernel refuses fails on the same line, with the kernel's own message."""
    with pytest.raises(ConfigError) as err:
        parse_network(text, "case.ip")
    assert err.value.line == line
    batch = tmp_path / "case.ip"
    batch.write_text(_linux_batch(netns, text))
    done = _ip(netns, "-batch", str(batch), check=False)
    assert done.returncode != 0
    if "Command failed" in done.stderr:  # `ip neigh` exits at once instead (ipneigh.c: exit(2))
        assert f"{batch}:{line}" in done.stderr
    assert err.value.msg == _kernel_text(done.stderr)

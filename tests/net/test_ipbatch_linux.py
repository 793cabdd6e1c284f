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

from flowpath.config.ipbatch import load_network, parse_network, read_commands, run_command
from flowpath.errors import ConfigError
from flowpath.net import RTN_BROADCAST, RTN_LOCAL, Network
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

    racy_ll = any(link.kind == "veth" for link in net.links.values())  # see _canon

    def skip(a: int) -> bool:
        if family == 4:
            return a >> 24 == 0 or a >> 28 >= 0xE
        if racy_ll and a >> 118 == 0xFE80 >> 6:
            return True
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
    return _canon("".join(line + "\n" for line in lines))


def _canon(text: str) -> str:
    """Routes of one prefix and metric in a fixed order. Two veth ends get their IPv6 link-local
    routes from linkwatch (NETDEV_CHANGE), whose order between the two ends is a race in Linux."""
    lines = text.splitlines()

    def key(line: str) -> tuple:
        words = line.split()
        metric = words[words.index("metric") + 1] if "metric" in words else "0"
        return (words[0], metric) if words[0] == "fe80::/64" else (line, "")

    out, i = [], 0
    while i < len(lines):
        j = i
        while j < len(lines) and key(lines[j]) == key(lines[i]):
            j += 1
        out += sorted(lines[i:j])
        i = j
    return "".join(line + "\n" for line in out)


def _check_listings(ns: str, net: Network) -> None:
    for family in (4, 6):
        assert _canon(net.show_route(family)) == _route_show(ns, family, "main")
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


def _random_route(rng: random.Random, v4_nets: list, v6_nets: list, locals_: dict) -> str:
    family = 6 if v6_nets and rng.random() < 0.35 else 4
    bits, nets = (32, v4_nets) if family == 4 else (128, v6_nets)
    plen = rng.choice([0, 8, 12, 16, 20, 24, 28, 32] if family == 4 else [0, 32, 48, 56, 64, 96, 128])
    if rng.random() < 0.5 and nets:  # nest inside a connected prefix now and then
        base, blen = rng.choice(nets)
        dst = base | rng.getrandbits(bits - blen) if blen < bits else base
    else:
        dst = rng.getrandbits(bits)
    dst = dst >> (bits - plen) << (bits - plen) if plen < bits else dst
    if family == 6 and 32 <= plen < 96 and rng.random() < 0.8:
        dst = dst & ((1 << (bits - 32)) - 1) | (0x20010DB8 << 96)
    text = ("default" if family == 4 else "::/0") if plen == 0 else f"{format_addr(family, dst)}/{plen}"
    metric = rng.choice(["", " metric 10", " metric 100", " metric 1024"])
    src = f" src {rng.choice(locals_[family])}" if locals_[family] and rng.random() < 0.15 else ""
    kind = rng.random()
    if kind < 0.15:
        return f"route add {rng.choice(['blackhole', 'unreachable', 'prohibit'])} {text}{metric}"
    if kind < 0.4 or not nets:
        return f"route add {text} dev p{rng.randrange(3)}{metric}{src}"
    if kind < 0.45 and family == 4:
        return f"route add {text} via {format_addr(4, rng.getrandbits(32))} dev p{rng.randrange(3)} onlink"
    base, blen = rng.choice(nets)
    gw = base | rng.getrandbits(bits - blen) if blen < bits else base
    extra = rng.choice(["", "", f" mtu {rng.choice([1300, 1400])}", f" dev p{rng.randrange(3)}"])
    return f"route add {text} via {format_addr(family, gw)}{metric}{extra}{src}"


def _random_batch(rng: random.Random) -> str:
    """Three ports with random addresses and a mix of routes, some of which the kernel must refuse."""
    lines, v4_nets, v6_nets = [], [], []
    for i in range(3):
        lines += [f"link add p{i} mtu {rng.choice([1280, 1500, 9000])} type dummy", f"link set p{i} up"]
    for i in range(3):
        for _ in range(rng.randint(1, 3)):
            plen = rng.choice([16, 24, 24, 25, 29, 30, 31, 32])
            addr = rng.choice([0x0A000000, 0xAC100000, 0xC0A80000]) | rng.getrandbits(16)
            if rng.random() < 0.3 and v4_nets:  # a second address inside an existing prefix
                addr = v4_nets[-1][0] | rng.getrandbits(32 - v4_nets[-1][1]) if v4_nets[-1][1] < 32 else addr
            v4_nets.append((addr & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF), plen))
            lines.append(f"addr add {format_addr(4, addr)}/{plen} dev p{i}")
        for _ in range(rng.randint(0, 2)):
            plen = rng.choice([48, 64, 64, 120, 128])
            addr = (0x20010DB8 << 96) | rng.getrandbits(20) << 76 | rng.getrandbits(12)
            v6_nets.append((addr >> (128 - plen) << (128 - plen), plen))
            lines.append(f"addr add {format_addr(6, addr)}/{plen} dev p{i} nodad")
    locals_ = {4: [], 6: []}
    for line in lines:
        if line.startswith("addr add"):
            a = line.split()[2].split("/")[0]
            locals_[6 if ":" in a else 4].append(a)
    flap = rng.randrange(3) if rng.random() < 0.5 else None
    doomed = rng.randrange(3) if rng.random() < 0.3 else None  # `link del` near the end
    for n in range(30):
        if flap is not None and n == 10:
            lines.append(f"link set p{flap} down")
        if flap is not None and n == 20:
            lines.append(f"link set p{flap} up")
        if n in (5, 15, 25) and rng.random() < 0.5:  # delete an address, or miss one (EADDRNOTAVAIL)
            victim = rng.choice([ln for ln in lines if ln.startswith("addr add")]).split()
            plen = (
                victim[2]
                if rng.random() < 0.8
                else victim[2].split("/")[0] + ("/32" if ":" not in victim[2] else "/128")
            )
            lines.append(f"addr del {plen} dev {victim[4]}")
        if doomed is not None and n == 26:
            lines.append(f"link del p{doomed}")
        line = _random_route(rng, v4_nets, v6_nets, locals_)
        lines.append(line)
        if rng.random() < 0.2:  # delete it again, or a near miss of it (ESRCH)
            words = line.split()[2:]
            words = (
                words[1:]
                if words[0] in ("blackhole", "unreachable", "prohibit") and rng.random() < 0.5
                else words
            )
            keep = [
                w
                for i, w in enumerate(words)
                if w not in ("mtu", "src", "onlink") and words[i - 1] not in ("mtu", "src")
            ]
            if rng.random() < 0.3:
                keep += ["metric", rng.choice(["10", "100"])]
            lines.append("route del " + " ".join(keep))
    seen = set()
    for i in range(3):
        for _ in range(
            rng.randint(0, 2) if i != doomed else 0
        ):  # unique addresses: `ip neigh` exits on any error
            nets = rng.choice([v4_nets, v6_nets]) or v4_nets
            base, blen = rng.choice(nets)
            bits = 32 if nets is v4_nets else 128
            addr = base | rng.getrandbits(bits - blen) if blen < bits else base
            if (addr, i) in seen:
                continue
            seen.add((addr, i))
            mac = ":".join(f"{b:02x}" for b in [2, 0x42, *rng.randbytes(4)])
            nud = rng.choice(["", " nud permanent", " nud reachable", " nud stale"])
            lines.append(f"neigh add {format_addr(4 if bits == 32 else 6, addr)} lladdr {mac} dev p{i}{nud}")
            if rng.random() < 0.2:
                lines.append(f"neigh del {format_addr(4 if bits == 32 else 6, addr)} dev p{i}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(10))
def test_random_networks_match_linux(netns, tmp_path, seed):
    """Random addresses and routes: the same lines fail (ip -force), and what stands routes alike."""
    text = _random_batch(random.Random(seed))
    net, failed = Network(), []
    for tokens in read_commands(text):
        try:
            run_command(net, "r.ip", tokens)
        except ConfigError:
            failed.append(tokens[0].line)
    batch = tmp_path / "r.ip"
    batch.write_text(_linux_batch(netns, "".join(ln + "\n" for ln in text.splitlines()[:6])) + "".join(
        ln + "\n" for ln in text.splitlines()[6:]))  # fmt: skip
    done = _ip(netns, "-force", "-batch", str(batch), check=False)
    kernel_failed = [
        int(ln.rsplit(":", 1)[1]) for ln in done.stderr.splitlines() if ln.startswith("Command failed")
    ]
    assert failed == kernel_failed, done.stderr
    _check_listings(netns, net)
    _check_route_get(netns, net, seed)

"""The link rows the compiled path reads per ifindex follow every `ip link` change.

Linux: struct net_device's flags (include/uapi/linux/if.h › IFF_UP, IFF_LOOPBACK, IFF_NOARP,
IFF_LOWER_UP from netif_carrier_ok), mtu and dev_addr; net/8021q's vlan_dev_priv (vlan_id, real_dev).
"""

from __future__ import annotations

from flowpath.config.ipbatch import parse_network
from flowpath.net import link as L

NET = """link add trunk address 02:00:00:00:00:01
link add trunk.10 link trunk type vlan id 10
link add va type veth peer name vb
link add t0 type ipip remote 192.0.2.2 local 192.0.2.1
link set trunk up
"""


def _expected(net, link):
    flags = (L.IFF_UP if link.up else 0) | (L.IFF_LOOPBACK if link.is_loopback else 0)
    flags |= (L.IFF_NOARP if link.noarp else 0) | (L.IFF_LOWER_UP if net.carrier(link) else 0)
    return [flags, link.mtu, int.from_bytes(link.address, "big"), L.LINK_KIND_CODES[link.kind], link.parent or 0,
            link.vlan_id or 0, link.vlan_proto if link.kind == "vlan" else 0, 0]  # fmt: skip


def _assert_rows(net):
    lk, genid = net.link_views()
    assert genid == net.link_genid
    for ifindex in range(lk.shape[0]):
        link = net.links.get(ifindex)
        assert list(lk[ifindex]) == (_expected(net, link) if link else [0] * L.LK_COLS), ifindex


def test_link_rows_follow_changes():
    net = parse_network(NET)
    _assert_rows(net)
    lk, genid = net.link_views()
    trunk, vlan = net.link_by_name("trunk"), net.link_by_name("trunk.10")
    assert (
        lk[vlan.ifindex, L.LK_KIND] == L.LINK_KIND_CODES["vlan"]
        and lk[vlan.ifindex, L.LK_PARENT] == trunk.ifindex
    )
    assert lk[trunk.ifindex, L.LK_ADDR] == 0x020000000001 and lk[trunk.ifindex, L.LK_FLAGS] & L.IFF_UP
    assert net.link_views()[0] is lk  # cached while nothing changes
    steps = [
        lambda: net.link_set(vlan, up=False),
        lambda: net.link_set(vlan, up=True),
        lambda: net.link_set(trunk, mtu=1400),  # the VLAN shrinks with it
        lambda: net.link_set(trunk, address=bytes.fromhex("020000000009")),
        lambda: net.link_set(net.link_by_name("va"), up=True),  # vb has no carrier until it is up
        lambda: net.link_set(net.link_by_name("vb"), up=True),
        lambda: net.link_set(trunk, up=False),  # the VLAN goes down too
        lambda: net.link_del(net.link_by_name("va")),  # vb goes with it
    ]
    for step in steps:
        old = net.link_views()[0].copy()
        step()
        lk, genid2 = net.link_views()
        assert genid2 != genid and not (
            lk.shape == old.shape and (lk == old).all()
        )  # each step changes a row
        genid = genid2
        _assert_rows(net)

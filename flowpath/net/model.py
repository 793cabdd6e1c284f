"""The network model: links, addresses, routes and neighbours of one network namespace.

Linux: net/core/rtnetlink.c (the requests `ip` sends: do_setlink, inet_rtm_newaddr, inet6_rtm_newaddr,
inet_rtm_newroute, inet6_rtm_newroute, neigh_add) and the notifier chain that keeps routes in step with
links and addresses (net/ipv4/fib_frontend.c › fib_add_ifaddr, fib_netdev_event; net/ipv6/addrconf.c ›
addrconf_notify, addrconf_ifdown). Requests the kernel refuses raise RtnlError with the kernel's text.
Families are 4 and 6 (the IP version); addresses are ints.
"""

from __future__ import annotations

from collections.abc import Callable

from flowpath.net import fib_frontend, route, show
from flowpath.net.fib import (
    IP6_RT_PRIO_ADDRCONF,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTN_LOCAL,
    RTN_UNICAST,
    RTPROT_KERNEL,
    FibAlias,
    FibResult,
    FibTable,
)
from flowpath.net.fib_table import (
    FibViews,
    addr6_words,
    fib4_lookup,
    fib4_lookup_match,
    fib6_lookup,
    fib6_lookup_match,
)
from flowpath.net.inetdev import (
    IPV6_ADDR_SCOPE_LINKLOCAL,
    LINK_LOCAL_PREFIX,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    IfAddr,
    addrconf_ifid_eui48,
    inet_ifa_match,
    inet_mask,
    inet_select_addr,
    inet_select_addr_any_dst,
    ipv6_addr_src_scope,
    ipv6_dev_get_saddr,
)
from flowpath.net.ip_tunnel import IpTunnel, ip_tunnel_bind_dev, ip_tunnel_find, is_fallback_parms
from flowpath.net.link import (
    ETH_DATA_LEN,
    ETH_MAX_MTU,
    ETH_MIN_MTU,
    KIND_ETHER,
    KIND_LOOPBACK,
    KIND_VETH,
    KIND_VLAN,
    LOOPBACK_MTU,
    TUNNEL_KINDS,
    VLAN_N_VID,
    Link,
    default_hwaddr,
    is_valid_ether_addr,
    link_views,
)
from flowpath.net.neighbour import NUD_VALID, Neighbour, NeighTable
from flowpath.net.rtnetlink import RtnlError
from flowpath.packet.layout import ETH_P_8021Q

INADDR_LOOPBACK = 0x7F000001
IN6ADDR_LOOPBACK = 1
IFNAMSIZ = 16
NO_LLADDR = "Operation not supported: a tunnel device has no link-layer address"


def _ipv6_ifa_rank(addr: int) -> int:
    """Order of an IPv6 address in its link's list: global, then host, then link scope (IFA_* values)."""
    if addr == IN6ADDR_LOOPBACK:
        return 0x10
    return 0x20 if ipv6_addr_src_scope(addr) == IPV6_ADDR_SCOPE_LINKLOCAL else 0


class Network:
    """One namespace's links, addresses, routing tables (local and main) and neighbours.

    `links` maps ifindex to Link in creation order. Lookups (`fib_lookup`, `neigh_lookup`, `is_local`) are
    what the datapath calls per packet; the `*_add`/`link_set` requests are what `ip -batch` lines do.
    """

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self._by_name: dict[str, Link] = {}
        self._ifindex_next = 1
        self._addrs: dict[int, dict[int, list[IfAddr]]] = {4: {}, 6: {}}
        self.tables: dict[int, dict[int, FibTable]] = {
            f: {RT_TABLE_LOCAL: FibTable(f, RT_TABLE_LOCAL), RT_TABLE_MAIN: FibTable(f, RT_TABLE_MAIN)}
            for f in (4, 6)
        }
        # the compiled lookup's views of local + main (flowpath.net.fib_table), per family
        self._fib = {
            f: FibViews(f, [self.tables[f][RT_TABLE_LOCAL], self.tables[f][RT_TABLE_MAIN]]) for f in (4, 6)
        }
        self._fib_views: tuple | None = None
        self.neigh = NeighTable()
        self.link_genid = 0  # bumped on every change of a link the link views mirror
        self._link_views: tuple | None = None
        # `flowpath run`: the kernel interfaces behind the ports (config.ipbatch.parse_network), and for
        # each port's `link add` line an error maker at its name (a check made later points there)
        self.kernel_link = None
        self.link_origin: dict[str, Callable[[str], Exception]] = {}
        self.dev_addr_genid = 0  # bumped on every address change; invalidates cached nexthop sources
        self._saddr6_cache: dict[tuple[int, int], int | None] = {}
        self._saddr6_genid = 0
        lo = self._new_link("lo", KIND_LOOPBACK, bytes(6), LOOPBACK_MTU)
        self.link_set(lo, up=True)

    # ---- links (net/core/dev.c, rtnetlink.c › rtnl_newlink / do_setlink) ----

    def link_by_name(self, name: str) -> Link:
        """Link called `name`; KeyError if none (Linux: __dev_get_by_name)."""
        return self._by_name[name]

    def _new_link(self, name: str, kind: str, address: bytes | None, mtu: int | None, **kw) -> Link:
        ifindex = self._ifindex_next
        self._ifindex_next += 1
        address = default_hwaddr(ifindex) if address is None else address  # b"": a tunnel's (none)
        link = Link(ifindex, name, kind, address, mtu or ETH_DATA_LEN, **kw)
        self.link_genid += 1
        self.links[ifindex] = link
        self._by_name[name] = link
        for family in (4, 6):
            self._addrs[family][ifindex] = []
        return link

    def link_add(
        self,
        name: str,
        kind: str = KIND_ETHER,
        address: bytes | None = None,
        mtu: int | None = None,
        parent: int | None = None,
        vlan_id: int | None = None,
        vlan_proto: int = ETH_P_8021Q,
        peer: str | None = None,
        peer_address: bytes | None = None,
        peer_mtu: int | None = None,
        tunnel: IpTunnel | None = None,
    ) -> Link:
        """`ip link add`. A new link is down. Returns it (for veth, the named end, not the peer)."""
        if name in self._by_name:
            raise RtnlError("File exists", "name")
        if kind in TUNNEL_KINDS:
            return self._tunnel_add(name, kind, address, mtu, tunnel)
        for arg, value in (("address", address), ("peer_address", peer_address)):
            if value is not None and not is_valid_ether_addr(value):
                raise RtnlError("Cannot assign requested address", arg)
        for arg, value in (("mtu", mtu), ("peer_mtu", peer_mtu)):
            if value is not None and kind != KIND_LOOPBACK:
                self._check_mtu(value, arg)
        if kind == KIND_VLAN:
            return self._vlan_add(name, address, mtu, parent, vlan_id, vlan_proto)
        if kind == KIND_VETH:
            # Linux: drivers/net/veth.c › veth_newlink registers the peer first, so it takes the lower ifindex.
            peer = peer or self._free_name("veth%d")
            if peer == name or peer in self._by_name:
                raise RtnlError("File exists", "peer")
            self._new_link(peer, KIND_VETH, peer_address, peer_mtu, peer=name)
            return self._new_link(name, KIND_VETH, address, mtu, peer=peer)
        return self._new_link(name, kind, address, mtu)

    def _vlan_add(self, name, address, mtu, parent, vlan_id, vlan_proto=ETH_P_8021Q) -> Link:
        """Linux: net/8021q/vlan_netlink.c › vlan_newlink: the VLAN takes its parent's MAC and MTU."""
        if parent is None:
            raise RtnlError("link is required for vlan", "type")
        if vlan_id is None or not 0 <= vlan_id < VLAN_N_VID:
            raise RtnlError("Invalid VLAN id", "id")
        real = self.links[parent]
        if real.kind == KIND_LOOPBACK:
            raise RtnlError("Operation not supported", "link")
        if any(ln.parent == parent and ln.vlan_id == vlan_id and ln.vlan_proto == vlan_proto
               for ln in self.links.values()):  # fmt: skip
            raise RtnlError("File exists", "id")
        if mtu is not None and mtu > real.mtu:
            raise RtnlError("Numerical result out of range", "mtu")
        return self._new_link(name, KIND_VLAN, address or real.address, mtu or real.mtu, parent=parent,
                              vlan_id=vlan_id, vlan_proto=vlan_proto)  # fmt: skip

    def _tunnel_add(self, name, kind, address, mtu, p: IpTunnel | None) -> Link:
        """Linux: ip_tunnel.c › ip_tunnel_newlink, ip6_tunnel.c › ip6_tnl_newlink: EEXIST when a tunnel
        of the kind has the same ends and device; the MTU from ip_tunnel_bind_dev unless given (then
        clamped to the device's range)."""
        if p is None or p.family != (4 if kind == "ipip" else 6):
            raise RtnlError("Invalid argument", "type")
        if address is not None:
            # Deviation: Linux takes IFLA_ADDRESS's first 4 (16) bytes as the local address; refused here.
            raise RtnlError(NO_LLADDR, "address")
        if p.link and p.link not in self.links:
            raise RtnlError("No such device", "dev")
        if is_fallback_parms(p) or ip_tunnel_find(self.links.values(), lambda d: d.kind, p, kind):
            raise RtnlError("File exists", "name")
        if mtu is None:
            mtu = ip_tunnel_bind_dev(self, p)
        else:
            self._check_mtu(mtu)
            mtu = min(max(mtu, p.min_mtu), p.max_mtu)
        return self._new_link(name, kind, b"", mtu, tunnel=p)

    def _free_name(self, pattern: str) -> str:
        n = 0
        while pattern % n in self._by_name:
            n += 1
        return pattern % n

    @staticmethod
    def _check_mtu(mtu: int, arg: str = "mtu") -> None:
        if mtu < ETH_MIN_MTU:
            raise RtnlError("mtu less than device minimum", arg)
        if mtu > ETH_MAX_MTU:
            raise RtnlError("mtu greater than device maximum", arg)

    def link_set(
        self,
        link: Link,
        up: bool | None = None,
        mtu: int | None = None,
        address: bytes | None = None,
        name: str | None = None,
    ) -> None:
        """`ip link set`: name, then address, then MTU, then the up/down flag (do_setlink's order)."""
        if name is not None and name != link.name:
            if name in self._by_name:
                raise RtnlError("File exists", "name")
            del self._by_name[link.name]
            if link.peer is not None:
                self._by_name[link.peer].peer = name
            link.name = name
            self._by_name[name] = link
        if address is not None:
            if link.is_tunnel:
                raise RtnlError(NO_LLADDR, "address")
            if not is_valid_ether_addr(address):
                raise RtnlError("Cannot assign requested address", "address")
            link.address = address
            self.link_genid += 1
        if mtu is not None:
            self._dev_set_mtu(link, mtu)
        if up is True and not link.up:
            self._dev_open(link)
        elif up is False and link.up:
            self._dev_close(link)

    def _dev_set_mtu(self, link: Link, mtu: int) -> None:
        if link.kind != KIND_LOOPBACK:
            self._check_mtu(mtu)
        if link.is_tunnel:  # ip_tunnel.c › __ip_tunnel_change_mtu (strict), ip6_tunnel.c › ip6_tnl_change_mtu
            if mtu > link.tunnel.max_mtu:
                raise RtnlError("mtu greater than device maximum", "mtu")
            if link.tunnel.family == 6 and link.tunnel.mode != "ipip6" and mtu < link.tunnel.min_mtu:
                raise RtnlError("mtu less than device minimum", "mtu")
        if link.kind == KIND_VLAN and mtu > self.links[link.parent].mtu:
            raise RtnlError("Numerical result out of range", "mtu")
        link.mtu = mtu
        self.link_genid += 1
        # Linux: net/8021q/vlan.c › vlan_device_event NETDEV_CHANGEMTU shrinks VLANs above the new MTU.
        # Deviation: IPv6 is not disabled below 1280 (addrconf_notify NETDEV_CHANGEMTU).
        for child in self.links.values():
            if child.parent == link.ifindex and child.mtu > mtu:
                child.mtu = mtu

    def _dev_open(self, link: Link) -> None:
        """dev_open + NETDEV_UP: routes of the link's addresses appear (fib_add_ifaddr, addrconf_notify)."""
        if link.kind == KIND_VLAN and not self.links[link.parent].up:
            raise RtnlError("Network is down", "dev")  # net/8021q/vlan_dev.c › vlan_dev_open
        link.up = True
        self.link_genid += 1
        if link.is_loopback:
            # Linux: devinet.c › inetdev_event and addrconf.c › init_loopback configure lo when it goes up.
            if not any(a.address == INADDR_LOOPBACK for a in self._addrs[4][link.ifindex]):
                self.addr_add(link, 4, INADDR_LOOPBACK, 8)
            if not self._addrs[6][link.ifindex]:
                self.addr_add(link, 6, IN6ADDR_LOOPBACK, 128)
        for ifa in list(self._addrs[4][link.ifindex]):
            fib_frontend.fib_add_ifaddr(self, ifa)
        if self.carrier(link):
            self._addrconf_link_ready(link)
        if link.kind == KIND_VETH:
            peer = self._by_name[link.peer]
            if peer.up:  # the peer gains carrier: its NETDEV_CHANGE comes after our NETDEV_UP
                self._addrconf_link_ready(peer)
        # net/8021q/vlan.c › vlan_device_event NETDEV_UP: "Put all VLANs for this dev in the up state too"
        for child in list(self.links.values()):
            if child.kind == KIND_VLAN and child.parent == link.ifindex and not child.up:
                self._dev_open(child)

    def carrier(self, link: Link) -> bool:
        """netif_carrier_ok: a veth end has carrier when its peer is up, a VLAN when its parent has;
        ports, dummies and lo always (Deviation: a port's cable is never pulled)."""
        if link.kind == KIND_VETH:
            return self._by_name[link.peer].up
        if link.kind == KIND_VLAN:
            parent = self.links[link.parent]
            return parent.up and self.carrier(parent)
        return True

    def _addrconf_link_ready(self, link: Link) -> None:
        """addrconf_notify NETDEV_UP/CHANGE once addrconf_link_ready: the EUI-64 link-local address
        (addrconf_addr_gen) and the prefix routes of the link's addresses."""
        # Deviation: ip6tnl devices get no link-local address (Linux: addrconf_ifid_ip6tnl); ipip
        # devices get none in Linux either (ipv6_generate_eui64 has no ARPHRD_TUNNEL case).
        if not link.is_loopback and not link.is_tunnel:
            lladdr = LINK_LOCAL_PREFIX | addrconf_ifid_eui48(link.address)
            if not any(a.address == lladdr for a in self._addrs[6][link.ifindex]):
                self.addr_add(link, 6, lladdr, 64)
        for ifa in self._addrs[6][link.ifindex]:
            self._addrconf_prefix_route(ifa)

    def _dev_close(self, link: Link) -> None:
        """dev_close + NETDEV_DOWN: routes through the link go (fib_sync_down_dev, then fib_flush);
        IPv4 keeps its addresses and their local routes; IPv6 drops its addresses (keep_addr_on_down=0);
        the neighbours go (neigh_ifdown); VLANs on the link go down with it."""
        for child in self.links.values():
            if child.parent == link.ifindex and child.up:
                self._dev_close(child)
        link.up = False
        self.link_genid += 1
        ifindex = link.ifindex
        self._addrs[6][ifindex] = []
        self.dev_addr_genid += 1
        for table in self.tables[4].values():
            table.remove(
                lambda fa: fa.oif == ifindex and not (fa.type == RTN_LOCAL and fa.table == RT_TABLE_LOCAL)
            )
        for table in self.tables[6].values():
            table.remove(lambda fa: fa.oif == ifindex)
        self.neigh.flush_dev(ifindex)

    def link_del(self, link: Link) -> None:
        """`ip link del`: dev_close, then NETDEV_UNREGISTER. A veth takes its peer along, a device its
        VLANs. Every route through the devices goes, local ones too (fib_disable_ip with force), and so
        do IPv4 routes elsewhere whose source was one of their addresses (fib_sync_down_addr); IPv6
        routes elsewhere only lose such a source (rt6_remove_prefsrc)."""
        if link.is_loopback:
            raise RtnlError("Operation not supported", "dev")
        victims = [link]
        for victim in victims:  # grows while walked: VLANs of VLANs, a veth's peer
            if victim.kind == KIND_VETH and self._by_name[victim.peer] not in victims:
                victims.append(self._by_name[victim.peer])
            victims += [c for c in self.links.values() if c.parent == victim.ifindex and c not in victims]
        for victim in victims:
            if victim.up:
                self._dev_close(victim)
        gone = {4: set(), 6: set()}
        for victim in victims:
            ifindex = victim.ifindex
            for family in (4, 6):
                gone[family] |= {a.address for a in self._addrs[family].pop(ifindex)}
                for table in self.tables[family].values():
                    table.remove(lambda fa, ifindex=ifindex: fa.oif == ifindex)
            self.neigh.flush_dev(ifindex)
            del self.links[ifindex], self._by_name[victim.name]
            self.link_genid += 1
        self.dev_addr_genid += 1
        gone4 = {a for a in gone[4] if not self.is_local(4, a)}
        for table in self.tables[4].values():
            table.remove(lambda fa: fa.prefsrc in gone4)
        for table in self.tables[6].values():
            for fa in table:
                if fa.prefsrc in gone[6]:
                    fa.prefsrc = None
                    table.touch()

    # ---- addresses (devinet.c › __inet_insert_ifa, addrconf.c › inet6_addr_add) ----

    def addrs(self, ifindex: int, family: int) -> list[IfAddr]:
        """The link's addresses of a family, in kernel order (IPv4: primaries first)."""
        return self._addrs[family].get(ifindex, [])

    def addr_add(
        self,
        link: Link,
        family: int,
        address: int,
        prefixlen: int,
        broadcast: int | None = None,
        scope: int | None = None,
        noprefixroute: bool = False,
        metric: int = 0,
    ) -> IfAddr:
        """`ip addr add`. The local route appears at once, the prefix route when the link is up."""
        if scope is None:
            scope = self._default_scope(family, address)
        ifa = IfAddr(family, address, prefixlen, link.ifindex, broadcast, scope, False, noprefixroute, metric)
        ifas = self._addrs[family][link.ifindex]
        if family == 4:
            self._inet_insert_ifa(ifa, ifas)
            self.dev_addr_genid += 1
            fib_frontend.fib_add_ifaddr(self, ifa)
            return ifa
        if any(a.address == address for a in ifas):
            raise RtnlError("ipv6: address already assigned", "address")
        rank = _ipv6_ifa_rank(address)
        pos = next((i for i, a in enumerate(ifas) if _ipv6_ifa_rank(a.address) >= rank), len(ifas))
        ifas.insert(pos, ifa)  # ipv6_link_dev_addr: by scope, the newest first within one scope
        self.dev_addr_genid += 1
        local = FibAlias(6, address, 128, RTN_LOCAL, RT_TABLE_LOCAL, 0, link.ifindex, protocol=RTPROT_KERNEL)
        self.tables[6][RT_TABLE_LOCAL].insert(local, excl=False)
        if link.up:
            self._addrconf_prefix_route(ifa)
        return ifa

    def addr_del(self, link: Link, family: int, address: int, prefixlen: int | None) -> None:
        """`ip addr del` (prefixlen None: any). IPv4 deletes a primary's secondaries with it
        (promote_secondaries=0) and, with the link's last address, every IPv4 route through it and its
        ARP entries (fib_inetaddr_event NETDEV_DOWN, fib_disable_ip). Linux: devinet.c › __inet_del_ifa;
        addrconf.c › inet6_addr_del, ipv6_del_addr."""
        ifas = self._addrs[family][link.ifindex]
        ifa = next(
            (a for a in ifas if a.address == address and prefixlen in (None, a.prefixlen)),
            None,
        )
        if ifa is None:
            raise RtnlError("Cannot assign requested address", "address")
        self.dev_addr_genid += 1
        if family == 6:
            self._ipv6_del_addr(link, ifa)
            return
        if not ifa.secondary:
            for sec in [a for a in ifas if a.secondary and a.prefixlen == ifa.prefixlen]:
                if inet_ifa_match(sec.address, ifa):
                    ifas.remove(sec)
                    fib_frontend.fib_del_ifaddr(self, sec)
        ifas.remove(ifa)
        fib_frontend.fib_del_ifaddr(self, ifa)
        if not ifas:  # "Last address was deleted from this interface. Disable IP."
            for table in self.tables[4].values():
                table.remove(lambda fa: fa.oif == link.ifindex)
            self.neigh.flush_dev(link.ifindex, family=4)

    def _ipv6_del_addr(self, link: Link, ifa: IfAddr) -> None:
        """The local route goes; the prefix route too unless another address of the link shares it
        (check_cleanup_prefix_route); routes elsewhere lose the address as source (rt6_remove_prefsrc)."""
        ifas = self._addrs[6][link.ifindex]
        ifas.remove(ifa)
        local, main = self.tables[6][RT_TABLE_LOCAL], self.tables[6][RT_TABLE_MAIN]
        if not any(a.address == ifa.address for ifas2 in self._addrs[6].values() for a in ifas2):
            local.remove(
                lambda fa: fa.type == RTN_LOCAL and fa.prefix == ifa.address and fa.oif == link.ifindex
            )
        prefix = ifa.address & inet_mask(6, ifa.prefixlen)
        shared = any(
            a.prefixlen == ifa.prefixlen and a.address & inet_mask(6, a.prefixlen) == prefix for a in ifas
        )
        if not shared and not ifa.noprefixroute:
            victim = next(
                (
                    fa
                    for fa in main.find(prefix, ifa.prefixlen)
                    if fa.oif == link.ifindex and fa.protocol == RTPROT_KERNEL
                ),
                None,
            )
            main.remove(lambda fa: fa is victim)
        for table in self.tables[6].values():
            for fa in table:
                if fa.prefsrc == ifa.address:
                    fa.prefsrc = None
                    table.touch()

    @staticmethod
    def _default_scope(family: int, address: int) -> int:
        """iproute2 ipaddress.c › default_scope: host for loopback addresses, link for fe80::/10."""
        if family == 4:
            return RT_SCOPE_HOST if address >> 24 == 127 else RT_SCOPE_UNIVERSE
        if address == IN6ADDR_LOOPBACK:
            return RT_SCOPE_HOST
        return (
            RT_SCOPE_LINK if ipv6_addr_src_scope(address) == IPV6_ADDR_SCOPE_LINKLOCAL else RT_SCOPE_UNIVERSE
        )

    @staticmethod
    def _inet_insert_ifa(ifa: IfAddr, ifas: list[IfAddr]) -> None:
        """Linux: devinet.c › __inet_insert_ifa: a second address of a prefix is secondary and goes last;
        a primary goes after the primaries of a scope at least as wide."""
        last_primary = 0
        for i, old in enumerate(ifas):
            if not old.secondary and ifa.scope <= old.scope:
                last_primary = i + 1
            if old.prefixlen == ifa.prefixlen and inet_ifa_match(old.address, ifa):
                if old.address == ifa.address:
                    raise RtnlError("ipv4: Address already assigned", "address")
                if old.scope != ifa.scope:
                    raise RtnlError("ipv4: Invalid scope value", "scope")
                ifa.secondary = True
        ifas.insert(len(ifas) if ifa.secondary else last_primary, ifa)

    def _addrconf_prefix_route(self, ifa: IfAddr) -> None:
        """Linux: net/ipv6/addrconf.c › addrconf_prefix_route (metric 256 unless the address sets one)."""
        if ifa.noprefixroute or ifa.address == IN6ADDR_LOOPBACK:  # init_loopback adds no prefix route
            return
        prefix = ifa.address & inet_mask(6, ifa.prefixlen)
        fa = FibAlias(
            6, prefix, ifa.prefixlen, RTN_UNICAST, RT_TABLE_MAIN, ifa.metric or IP6_RT_PRIO_ADDRCONF
        )
        fa.oif, fa.protocol = ifa.ifindex, RTPROT_KERNEL
        self.tables[6][RT_TABLE_MAIN].insert(fa, excl=False)

    def is_local(self, family: int, addr: int) -> bool:
        """An address of this host (Linux: inet_addr_type == RTN_LOCAL; ipv6_chk_addr)."""
        fa = self._fib_table_lookup(family, addr)
        return fa is not None and fa.type == RTN_LOCAL

    def inet_select_addr(self, ifindex: int, family: int, dst: int) -> int | None:
        """Source address Linux would use from `ifindex` towards `dst` (masquerade, ICMP errors).

        IPv4: devinet.c › inet_select_addr with RT_SCOPE_UNIVERSE (what masquerade passes, with the next
        hop as `dst`). IPv6: addrconf.c › ipv6_dev_get_saddr (RFC 6724).
        """
        if family == 4:
            return inet_select_addr(self._addrs[4], ifindex, dst, RT_SCOPE_UNIVERSE)
        return ipv6_dev_get_saddr(self._addrs[6], ifindex, dst)

    def masq_addr4_any_dst(self, ifindex: int) -> int | None:
        """The IPv4 address masquerade picks on `ifindex` whatever the next hop, or None when it
        depends on it (inetdev.py › inet_select_addr_any_dst): what the classic lane may use."""
        return inet_select_addr_any_dst(self._addrs[4], ifindex, RT_SCOPE_UNIVERSE)

    # ---- routes and neighbours (route.py holds the kernel's checks) ----

    def route_add(self, fa: FibAlias, replace: bool = False) -> FibAlias:
        """`ip route add|replace`: validate the nexthop as the kernel does, then insert. Returns the route."""
        return route.route_add(self, fa, replace)

    def route_del(self, fa: FibAlias, given: set[str] = frozenset()) -> FibAlias:
        """`ip route del`: remove the first route of the prefix that matches what is given; see route.py."""
        return route.route_del(self, fa, given)

    def fib_lookup(self, family: int, daddr: int) -> FibResult | None:
        """Route for `daddr`, or None if unreachable.

        Linux: IPv4 with no policy rules collapses the local table into main (fib_trie.c, "FIB
        Local/MAIN table collapse"): one longest-prefix match over both, local first for equal
        prefixes. IPv6 asks the local table, then main (fib6_rules: rules 0 and 32766).
        The lookup is flowpath.net.fib_table's compiled one, the classic lane's.
        """
        fa = self._fib_table_lookup(family, daddr)
        return None if fa is None else route.fib_result(self, fa, daddr)

    def _fib_table_lookup(
        self, family: int, daddr: int, scope: int = 0, oif: int = 0, table: int = 0
    ) -> FibAlias | None:
        """The matched route (see fib_lookup); only routes of `scope` or wider, through `oif`, in
        `table` (0: any), when given: the filters of fib_table_lookup's check_leaf."""
        views, fas = self._fib[family].current()
        if family == 4:
            if scope or oif or table:
                row = fib4_lookup_match(views, daddr, table, scope, oif)
            else:
                row = fib4_lookup(views, daddr)
        elif scope or oif or table:
            row = fib6_lookup_match(views, *addr6_words(daddr), table, scope, oif)
        else:
            row = fib6_lookup(views, *addr6_words(daddr))
        return fas[row] if row >= 0 else None

    def fib_views(self) -> tuple:
        """What the compiled classic path's route lookups take (fib_table.fib_lookup4 / fib_lookup6):
        (fib4, fib6, genid), genid moving with every route change. The same arrays until a change."""
        fv = self._fib_views
        f4, f6 = self._fib[4], self._fib[6]
        genid = f4.genid + f6.genid  # each only grows
        if fv is None or fv[2] != genid or fv[0] is not f4.views or fv[1] is not f6.views:
            fv = self._fib_views = (f4.get(), f6.get(), genid)
        return fv

    def link_views(self) -> tuple:
        """The link rows the compiled path reads (flowpath.net.link: LK_*, indexed by ifindex) and
        their generation: (lk, link_genid)."""
        lv = self._link_views
        if lv is None or lv[1] != self.link_genid:
            lv = self._link_views = (link_views(self.links, self.carrier), self.link_genid)
        return lv

    def neigh_views(self) -> tuple:
        """The neighbour table's compiled views (flowpath.net.neigh_table)."""
        return self.neigh.views()

    def neigh_add(self, n: Neighbour, replace: bool = False, create: bool = True) -> None:
        """`ip neigh add|replace|change`. Linux: net/core/neighbour.c › neigh_add (EEXIST without
        NLM_F_REPLACE; ENOENT without NLM_F_CREATE, as `change` sends)."""
        if not self.neigh.add(n, replace, create):
            if create:
                raise RtnlError("File exists", "dst")
            raise RtnlError("No such file or directory", "dst")

    def neigh_del(self, family: int, addr: int, ifindex: int) -> None:
        """`ip neigh del`. Linux: neighbour.c › neigh_delete (ENOENT when there is no entry)."""
        if not self.neigh.remove(family, addr, ifindex):
            raise RtnlError("No such file or directory", "dst")

    def neigh_lookup(self, family: int, addr: int, ifindex: int) -> bytes | None:
        """The 6-byte MAC of a neighbour on `ifindex` whose address is usable (NUD_VALID: not while
        INCOMPLETE or FAILED), or None. Linux: neighbour.c › neigh_lookup."""
        n = self.neigh.neigh_lookup(family, addr, ifindex)
        return n.ha if n is not None and n.nud_state & NUD_VALID else None

    # ---- listings (`ip link`, `ip addr`, `ip route`, `ip neigh`) ----

    def show_link(self, details: bool = False) -> str:
        """`ip [-d] link show`."""
        return show.show_link(self, details)

    def show_addr(self) -> str:
        return show.show_addr(self)

    def show_route(self, family: int = 4, table: int | str = RT_TABLE_MAIN) -> str:
        """`ip [-6] route show [table main|local|all|N]`."""
        return show.show_route(self, family, table)

    def show_neigh(self) -> str:
        return show.show_neigh(self)

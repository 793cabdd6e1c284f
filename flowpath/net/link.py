"""Network devices: the few `struct net_device` fields the datapath reads.

Linux: net/core/dev.c (ifindex allocation, dev_change_flags, dev_set_mtu, dev_change_name), with the
per-kind defaults of drivers/net/{loopback,dummy,veth}.c, net/8021q/vlan_netlink.c and the IP tunnels
(net/ipv4/ipip.c › ipip_tunnel_setup, net/ipv6/ip6_tunnel.c › ip6_tnl_dev_setup: no link-layer header,
IFF_NOARP; their parameters are flowpath.net.ip_tunnel's IpTunnel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from flowpath.net.ip_tunnel import IpTunnel
from flowpath.packet.layout import ETH_ALEN, ETH_P_8021Q

# Link kinds (`ip link add ... type KIND`); "ether" is a port with no `type`, a physical NIC's stand-in.
KIND_LOOPBACK = "loopback"
KIND_ETHER = "ether"
KIND_DUMMY = "dummy"
KIND_VETH = "veth"
KIND_VLAN = "vlan"
KIND_IPIP = "ipip"
KIND_IP6TNL = "ip6tnl"
TUNNEL_KINDS = (KIND_IPIP, KIND_IP6TNL)
LINK_KINDS = (KIND_ETHER, KIND_DUMMY, KIND_VETH, KIND_VLAN, KIND_IPIP, KIND_IP6TNL)

LOOPBACK_MTU = 65536  # drivers/net/loopback.c › loopback_setup
ETH_DATA_LEN = 1500  # include/uapi/linux/if_ether.h: the default MTU of every Ethernet-like device
ETH_MIN_MTU = 68  # include/uapi/linux/if_ether.h
# Deviation: Linux caps most drivers at ETH_DATA_LEN or a driver maximum; ports here take jumbo frames.
ETH_MAX_MTU = 65535
VLAN_N_VID = 4096

# ---- link views: lk int64[max ifindex + 1, LK_COLS], one row per ifindex (zeros: no such link) ----
LK_FLAGS = 0  # IFF_* below
LK_MTU = 1
LK_ADDR = 2  # the MAC as a 48-bit big-endian int (as the flowtable's V_H_SOURCE), 0 for a tunnel
LK_KIND = 3  # LINK_KIND_* below
LK_PARENT = 4  # the lower device's ifindex (VLAN), else 0
LK_VLAN_ID = 5
LK_VLAN_PROTO = 6  # the VLAN's TPID (ETH_P_8021Q or ETH_P_8021AD)
LK_COLS = 8
# include/uapi/linux/if.h › enum net_device_flags (the ones the datapath reads)
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000  # netif_carrier_ok
# LK_KIND values: what the compiled path needs to tell apart (No Linux counterpart: rtnl_link_ops)
LINK_KIND_CODES = {KIND_LOOPBACK: 1, KIND_ETHER: 2, KIND_DUMMY: 3, KIND_VETH: 4, KIND_VLAN: 5,
                   KIND_IPIP: 6, KIND_IP6TNL: 7}  # fmt: skip
_ETHER, _DUMMY, _VETH = LINK_KIND_CODES[KIND_ETHER], LINK_KIND_CODES[KIND_DUMMY], LINK_KIND_CODES[KIND_VETH]


@njit(cache=True, nogil=True, inline="always")
def link_lane_ok(lk, ifx):
    """A device the compiled classic lane receives on or transmits from, by its row of link_views:
    up, and Ethernet-like (not a tunnel, a VLAN or the loopback, whose frames the Python path builds)."""
    kind = lk[ifx, LK_KIND]
    return lk[ifx, LK_FLAGS] & IFF_UP and (kind == _ETHER or kind == _DUMMY or kind == _VETH)


@dataclass(slots=True)
class Link:
    """One network device. `up` is the administrative state (IFF_UP); `address` the 6-byte MAC.

    `parent` is the lower device's ifindex (VLAN), `peer` the other end's name (veth), `tunnel` the
    parameters of an ipip or ip6tnl device, whose `address` is b"" (no link-layer address: its frames
    are IP packets, encapsulated on the way out).
    """

    ifindex: int
    name: str
    kind: str
    address: bytes
    mtu: int
    up: bool = False
    vlan_id: int | None = None
    vlan_proto: int = ETH_P_8021Q  # the VLAN's TPID: 802.1Q, or 802.1ad for a QinQ service tag
    parent: int | None = None
    peer: str | None = None
    tunnel: IpTunnel | None = None

    @property
    def is_loopback(self) -> bool:
        return self.kind == KIND_LOOPBACK

    @property
    def noarp(self) -> bool:
        """IFF_NOARP: loopback, dummy and tunnels resolve no neighbours (drivers/net/dummy.c ›
        dummy_setup, ipip.c › ipip_tunnel_setup, ip6_tunnel.c › ip6_tnl_dev_setup)."""
        return self.kind in (KIND_LOOPBACK, KIND_DUMMY, KIND_IPIP, KIND_IP6TNL)

    @property
    def is_tunnel(self) -> bool:
        return self.tunnel is not None


def default_hwaddr(ifindex: int) -> bytes:
    """The MAC a link gets when `address` is not given: 02:00 + the ifindex as 32-bit big-endian.

    Deviation: Linux draws a random locally administered address (eth_hw_addr_random); a fixed one keeps
    captures and tests reproducible. The 02 prefix is the same locally-administered unicast bit.
    """
    return b"\x02\x00" + ifindex.to_bytes(4, "big")


def parse_hwaddr(text: str) -> bytes:
    """Parse `aa:bb:cc:dd:ee:ff` (one or two hex digits per octet, as ll_addr_a2n's sscanf %x). ValueError if bad."""
    parts = text.split(":")
    if len(parts) != ETH_ALEN or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(text)
    return bytes(int(p, 16) for p in parts)


def format_hwaddr(address: bytes) -> str:
    return ":".join(f"{b:02x}" for b in address)


def is_valid_ether_addr(address: bytes) -> bool:
    """Linux: include/linux/etherdevice.h › is_valid_ether_addr (not multicast, not all zeros)."""
    return not (address[0] & 1) and any(address)


def link_views(links: dict[int, Link], carrier: Callable[[Link], bool]) -> np.ndarray:
    """The link rows (LK_*) the compiled path reads per ifindex: int64[max ifindex + 1, LK_COLS].
    `carrier` is the network's netif_carrier_ok. Rebuilt whole on any link change (a few links)."""
    lk = np.zeros((max(links, default=0) + 1, LK_COLS), np.int64)
    for ifindex, link in links.items():
        flags = (IFF_UP if link.up else 0) | (IFF_LOOPBACK if link.is_loopback else 0)
        flags |= (IFF_NOARP if link.noarp else 0) | (IFF_LOWER_UP if carrier(link) else 0)
        lk[ifindex] = (flags, link.mtu, int.from_bytes(link.address, "big"), LINK_KIND_CODES.get(link.kind, 0),
                       link.parent or 0, link.vlan_id or 0, link.vlan_proto if link.kind == KIND_VLAN else 0, 0)  # fmt: skip
    return lk
